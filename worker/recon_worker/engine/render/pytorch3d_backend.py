"""PyTorch3D's rasterizer: the CPU (and portable, BSD-licensed) backend.

Its CPU rasterizer is slow (~1 s for forward and backward of 4 views at 128² with ~1k faces on two
cores), so the CPU path of the engine uses small meshes and few views per step. It rasterizes hard
(one face per pixel, no blur: the cheapest setting) and gets silhouette gradients the way nvdiffrast's
`antialias` does: where a covered pixel meets an uncovered one, the covering triangle's edge is
intersected with the segment between the two pixel centres, and the pixel on the wrong side of the
edge is blended by the distance to the midpoint. That blend weight depends on the edge's vertices,
which is what moves the silhouette.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recon_worker.engine.render.base import Raster


@dataclass
class Pytorch3dRaster:
    pix_to_face: torch.Tensor  # [B, H, W] packed face index (b * F + f), -1 where none
    bary: torch.Tensor  # [B, H, W, 3] perspective-correct barycentrics of the covering face
    faces_per_mesh: int

    @property
    def mask(self) -> torch.Tensor:
        return (self.pix_to_face >= 0)[..., None]

    @property
    def triangle_id(self) -> torch.Tensor:
        return torch.where(self.pix_to_face >= 0, self.pix_to_face % self.faces_per_mesh, -1)


class Pytorch3dRenderer:
    name = "pytorch3d"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    def rasterize(self, pos_clip: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> Pytorch3dRaster:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes

        height, width = resolution
        w = pos_clip[..., 3:4]
        ndc = pos_clip[..., :3] / w
        # PyTorch3D's NDC: +X left, +Y up (row 0 at +Y), the shorter image side spanning [-1, 1];
        # its z is the view depth (positive in front), which also drives perspective-correct barycentrics.
        aspect_x = max(width / height, 1.0)
        aspect_y = max(height / width, 1.0)
        verts = torch.stack([-ndc[..., 0] * aspect_x, -ndc[..., 1] * aspect_y, w[..., 0]], dim=-1)  # [B, V, 3]
        faces = tri.long()
        meshes = Meshes(verts=list(verts), faces=[faces] * verts.shape[0])
        pix_to_face, _, bary, _ = rasterize_meshes(
            meshes,
            image_size=(height, width),
            blur_radius=0.0,
            faces_per_pixel=1,
            perspective_correct=True,
            cull_backfaces=False,
        )
        return Pytorch3dRaster(pix_to_face[..., 0], bary[..., 0, :], int(faces.shape[0]))

    def interpolate(self, attr: torch.Tensor, raster: Raster, tri: torch.Tensor) -> torch.Tensor:
        assert isinstance(raster, Pytorch3dRaster)
        batch = raster.pix_to_face.shape[0]
        tri = tri.long()
        # [B * F, 3, C]: per-corner attributes of every face of every batch entry (packed indexing).
        face_attr = attr[tri].repeat(batch, 1, 1) if attr.dim() == 2 else attr[:, tri].reshape(-1, 3, attr.shape[-1])
        corner = face_attr[raster.pix_to_face.clamp(min=0)]  # [B, H, W, 3, C]
        return (raster.bary[..., :, None] * corner).sum(dim=-2)

    def texture(self, tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        batch = uv.shape[0]
        # grid_sample's y = -1 is row 0 (the image top), i.e. v = 1.
        grid = torch.stack([uv[..., 0] * 2 - 1, (1 - uv[..., 1]) * 2 - 1], dim=-1)
        image = tex.permute(2, 0, 1)[None].expand(batch, -1, -1, -1)
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.permute(0, 2, 3, 1)

    def antialias(
        self,
        foreground: torch.Tensor,
        background: torch.Tensor,
        raster: Raster,
        pos_clip: torch.Tensor,
        tri: torch.Tensor,
    ) -> torch.Tensor:
        assert isinstance(raster, Pytorch3dRaster)
        mask = raster.mask
        image = torch.where(mask, foreground, background.expand_as(foreground))
        height, width = mask.shape[1:3]
        # Pixel coordinates of the vertices (pixel centres at half-integers): [B, V, 2] as (x, y).
        screen = (pos_clip[..., :2] / pos_clip[..., 3:4] + 1) * 0.5 * pos_clip.new_tensor([width, height])
        tid = raster.triangle_id
        tri_l = tri.long()
        neighbors = _face_neighbors(tri_l)  # [F, 3]: the face across edge (i, i + 1), -1 on a border
        corners_all = screen[:, tri_l]  # [B, F, 3, 2]
        e1, e2 = corners_all[:, :, 1] - corners_all[:, :, 0], corners_all[:, :, 2] - corners_all[:, :, 0]
        facing = (e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]) > 0  # [B, F] screen-space winding
        delta = torch.zeros_like(image)
        for axis in (1, 2):  # vertical pairs (rows), then horizontal pairs (columns)
            covered = tid >= 0
            a = covered.narrow(axis, 0, covered.shape[axis] - 1)
            b = covered.narrow(axis, 1, covered.shape[axis] - 1)
            for inside_first in (True, False):
                pairs = (a & ~b) if inside_first else (~a & b)
                bi, yi, xi = torch.nonzero(pairs, as_tuple=True)
                if bi.numel() == 0:
                    continue
                # p: the covered pixel, q: its uncovered neighbour.
                step = 1 if inside_first else 0
                py, px = (yi + (0 if inside_first else 1), xi) if axis == 1 else (yi, xi + (0 if inside_first else 1))
                qy, qx = (yi + step, xi) if axis == 1 else (yi, xi + step)
                cp = torch.stack([px, py], dim=-1).to(screen.dtype) + 0.5
                cq = torch.stack([qx, qy], dim=-1).to(screen.dtype) + 0.5
                s = _silhouette_crossing(tid[bi, py, px], bi, corners_all, neighbors, facing, cp, cq)
                fg_p = image[bi, py, px]
                bg_q = image[bi, qy, qx]
                # Edge beyond the midpoint: q is partly covered by p's triangle; before it: p is partly bare.
                grow = (s - 0.5).clamp(min=0)[:, None]
                shrink = (0.5 - s).clamp(min=0)[:, None]
                delta = delta.index_put((bi, qy, qx), grow * (fg_p - bg_q), accumulate=True)
                delta = delta.index_put((bi, py, px), shrink * (bg_q - fg_p), accumulate=True)
        return image + delta


def _silhouette_crossing(
    face: torch.Tensor,
    batch: torch.Tensor,
    corners_all: torch.Tensor,
    neighbors: torch.Tensor,
    facing: torch.Tensor,
    cp: torch.Tensor,
    cq: torch.Tensor,
    max_steps: int = 4,
) -> torch.Tensor:
    """Fraction [N] along cp -> cq where the segment crosses a silhouette edge, 0.5 (no blend) if none.

    Only silhouette edges (the face across is missing or turned away) blend, as in nvdiffrast. Small
    triangles often let the segment leave through an inner edge first: then walk on to the face across.
    """
    result = torch.full_like(cp[:, 0], 0.5)
    done = torch.zeros_like(face, dtype=torch.bool)
    for _ in range(max_steps):
        s, edge = _exit_fraction(corners_all[batch, face], cp, cq)
        across = neighbors[face, edge]
        silhouette = (across < 0) | (facing[batch, across.clamp(min=0)] != facing[batch, face])
        hit = ~done & silhouette
        result = torch.where(hit, s, result)
        done = done | silhouette | (s >= 1)
        if bool(done.all()):
            break
        face = torch.where(done, face, across.clamp(min=0))
    return result


def _face_neighbors(tri: torch.Tensor) -> torch.Tensor:
    """[F, 3] index of the face sharing edge (tri[:, i], tri[:, i + 1]), -1 where no other face does."""
    num_faces = tri.shape[0]
    edges = torch.stack([tri, tri.roll(-1, dims=1)], dim=-1).reshape(-1, 2).sort(dim=-1).values  # [3F, 2]
    _, inverse = torch.unique(edges, dim=0, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    slot = torch.arange(3 * num_faces, device=tri.device)
    neighbors = torch.full((3 * num_faces,), -1, dtype=torch.long, device=tri.device)
    same = inverse[order[1:]] == inverse[order[:-1]]  # consecutive half-edges on one edge: a pair
    first, second = order[:-1][same], order[1:][same]
    neighbors[first] = slot[second] // 3
    neighbors[second] = slot[first] // 3
    return neighbors.reshape(num_faces, 3)


def _exit_fraction(corners: torch.Tensor, cp: torch.Tensor, cq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction s in [0, 1] along cp -> cq where the segment leaves the triangle `corners` [N, 3, 2],
    and through which edge i (from corner i to corner i + 1)."""

    def edge_fn(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (b[:, 0] - a[:, 0]) * (x[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (x[:, 0] - a[:, 0])

    best = torch.ones_like(cp[:, 0])
    best_edge = torch.zeros_like(cp[:, 0], dtype=torch.long)
    for i in range(3):
        a, b, c = corners[:, i], corners[:, (i + 1) % 3], corners[:, (i + 2) % 3]
        side = torch.sign(edge_fn(a, b, c))  # the triangle's side of edge (a, b)
        ep, eq = edge_fn(a, b, cp) * side, edge_fn(a, b, cq) * side
        crossing = (ep > 0) & (eq <= 0)
        s = ep / (ep - eq).where(crossing, torch.ones_like(ep))
        better = crossing & (s < best)
        best = torch.where(better, s, best)
        best_edge = torch.where(better, i, best_edge)
    return best.clamp(0, 1), best_edge
