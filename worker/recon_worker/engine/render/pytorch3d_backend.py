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
from recon_worker.engine.render.edge_antialias import SilhouetteCompositor


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
        self._composite = SilhouetteCompositor()

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
        return self._composite(foreground, background, raster.mask, raster.triangle_id, pos_clip, tri)
