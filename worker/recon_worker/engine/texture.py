"""Texture: decimate to the export bound, UV-unwrap, and bake a texture map from the training photos.

The refined mesh is first decimated to `export.targetFaces` (`engine.decimation`: valid, or re-meshed
with a logged fallback), so the mesh textured here is the one validate measures and export writes:
nothing downstream decimates again or re-bakes.

Unwrapping: xatlas charts up to `XATLAS_MAX_FACES` faces, handed over in pieces that its threads chart at
once (20k faces: 0.4-0.6 s on a 16-core host, 1 s on 2 cores; in one piece 2-4 s; xatlas on 215k
faces took 105-204 s); above, a per-face atlas: faces in Morton order of their centroids, two per
square cell, so neighbouring cells hold neighbouring surface. It is O(faces) and instant; at that many
faces a face covers about as many texels as it covers pixels in a view, so the charts gain nothing.

Baking is projective and streams the views (memory: the atlas plus one batch of views, whatever the
number of views), in two passes over the training views:

1. rasterize the mesh in UV space: each texel gets its triangle, and the texels in a one-texel ring
   around each triangle get it too (`grow_triangles`); every one of them gets the surface point and
   normal at its barycentric coordinates, clamped into its triangle. A lookup at a triangle's edge
   reads texels up to a texel away: they show that triangle's own surface, not a colour dilated from
   whatever lies next to it in the atlas (in the per-face atlas that is another face). Measured on
   spot (CPU, ground-truth mesh at 5.9k faces, 640², 32 views of 160², held-out PSNR): the per-face
   atlas 36.21 -> 36.58 dB, xatlas 36.63 -> 36.64;
2. for each view, a depth map of the mesh says which texels the camera sees; those texels sample the
   photo (bilinear) with a weight favouring frontal views (cos^4 of the viewing angle);
   pass 1 builds each texel's weighted histogram of sample luminance (`LUMA_BINS` bins), whose
   weighted median marks highlights: samples brighter than it by more than `HIGHLIGHT_MARGIN` are
   dropped (specular highlights are additive brightening seen from a few directions); pass 2 averages
   the rest;
3. texels no view saw, and the gutter around every chart, are filled by dilation from their
   neighbours, so bilinear lookups and mip-maps near seams never reach the empty background.

Files (see stages.py): `mesh.npz` + `texture.png` (`engine.stagemesh`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from PIL import Image

from recon_worker.capture import Capture
from recon_worker.engine.cameras import make_cameras
from recon_worker.engine.decimation import decimate
from recon_worker.engine.objfile import textured
from recon_worker.engine.render.base import Renderer
from recon_worker.engine.stagemesh import read_stage_mesh, write_stage_mesh
from recon_worker.stage import StageContext

HIGHLIGHT_MARGIN = 0.08  # luminance above the texel's weighted median that marks a highlight
LUMA_BINS = 32  # histogram bins over [0, 1] for the weighted median (1/32 < HIGHLIGHT_MARGIN)
XATLAS_MAX_FACES = 25_000  # above this, the per-face atlas
XATLAS_PIECE_FACES = 2_500  # faces per mesh handed to xatlas: its threads chart separate meshes at once
# Decoded training views kept between the bake's two passes, at most this many bytes (uint8 RGBA) per
# device type: 100 views of 800² are 256 MB; on the CPU the views are decoded twice (RAM is the limit).
VIEW_CACHE_BYTES = {"cuda": 2 << 30}


@dataclass
class UnwrappedMesh:
    verts: np.ndarray  # [V', 3] float64, split along UV seams
    faces: np.ndarray  # [F, 3] int64 into verts and uv
    uv: np.ndarray  # [V', 2] in [0, 1], v up
    source_index: np.ndarray  # [V'] index of each vertex in the welded input mesh


def unwrap(mesh: trimesh.Trimesh, texture_size: int) -> UnwrappedMesh:
    """UVs for a `texture_size`² map: xatlas charts, or the per-face atlas above XATLAS_MAX_FACES."""
    if len(mesh.faces) > XATLAS_MAX_FACES:
        return face_atlas(mesh, texture_size)
    return xatlas_unwrap(mesh, texture_size)


def xatlas_unwrap(mesh: trimesh.Trimesh, texture_size: int) -> UnwrappedMesh:
    """xatlas charts packed for a `texture_size`² map, with a few texels of gutter between charts.

    The mesh goes to xatlas as pieces of about `XATLAS_PIECE_FACES` faces (consecutive in Morton order
    of the face centres, so each piece is a compact patch of surface): xatlas computes the charts of
    separate meshes on its worker threads and packs them into one atlas, where one mesh is charted on
    one thread. A piece's border becomes a seam, a few more among the hundreds of chart borders.
    """
    import xatlas

    faces = np.asarray(mesh.faces, np.int64)
    verts = np.asarray(mesh.vertices, np.float64)
    pieces = np.array_split(
        morton_order(np.asarray(mesh.triangles_center)), max(1, round(len(faces) / XATLAS_PIECE_FACES))
    )
    atlas = xatlas.Atlas()
    piece_verts = []
    for piece in pieces:
        used, local = np.unique(faces[piece], return_inverse=True)
        piece_verts.append(used)
        atlas.add_mesh(verts[used].astype(np.float32), local.reshape(-1, 3).astype(np.uint32))
    chart_options = xatlas.ChartOptions()
    chart_options.max_iterations = 1  # the default 4 costs seconds on 50k faces for little atlas gain
    pack_options = xatlas.PackOptions()
    pack_options.resolution = texture_size
    pack_options.padding = max(2, texture_size // 256)
    pack_options.bilinear = True
    atlas.generate(chart_options, pack_options)
    source, out_faces, uvs = [], [], []
    start = 0
    for index, used in enumerate(piece_verts):
        vmapping, indices, uv = atlas[index]
        source.append(used[np.asarray(vmapping, np.int64)])
        out_faces.append(np.asarray(indices, np.int64) + start)
        uvs.append(np.asarray(uv, np.float64))
        start += len(vmapping)
    source_index = np.concatenate(source)
    # Faces come back piece by piece: put them back in the input's order (face i stays face i, as in
    # the per-face atlas).
    order = np.argsort(np.concatenate(pieces), kind="stable")
    return UnwrappedMesh(
        verts=verts[source_index],
        faces=np.concatenate(out_faces)[order],
        uv=np.concatenate(uvs),
        source_index=source_index,
    )


def morton_order(points: np.ndarray) -> np.ndarray:
    """Indices sorting `points` [N, 3] along a Z-order curve (nearby points, nearby ranks)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    cells = ((points - lo) / np.maximum(hi - lo, 1e-12) * 1023).astype(np.int64)  # 10 bits per axis
    code = np.zeros(len(points), dtype=np.int64)
    for bit in range(10):
        for axis in range(3):
            code |= ((cells[:, axis] >> bit) & 1) << (3 * bit + axis)
    return np.argsort(code, kind="stable")


def face_atlas(mesh: trimesh.Trimesh, texture_size: int) -> UnwrappedMesh:
    """One right triangle per face, two faces per square cell, cells in Morton order of the faces.

    A cell's two triangles sit on either side of its diagonal, two texels apart, and a texel from the
    cell's border, so the texel ring the bake gives each triangle is its own. O(faces), vectorised.
    """
    faces = np.asarray(mesh.faces, np.int64)
    count = len(faces)
    order = morton_order(np.asarray(mesh.triangles_center))
    per_side = max(1, math.ceil(math.sqrt((count + 1) // 2)))
    cell = texture_size / per_side  # texels
    # A texel of space on every side of a triangle: the bake's ring (`grow_triangles`) around each
    # triangle is its own, two texels from the next cell's and from its partner across the diagonal.
    margin = min(1.0, cell / 6)
    rank = np.empty(count, dtype=np.int64)
    rank[order] = np.arange(count)
    slot, upper = rank // 2, rank % 2 == 0
    x0 = (slot % per_side) * cell
    y0 = (slot // per_side) * cell
    lo, hi = margin, cell - margin - math.sqrt(2) * margin  # hypotenuses at x + y = cell -/+ sqrt(2) margin
    # Texel coordinates (x right, y down) of each face's three corners: [F, 3, 2].
    upper_xy = np.stack([[lo, lo], [hi, lo], [lo, hi]])
    lower_xy = np.stack([[cell - lo, cell - lo], [cell - hi, cell - lo], [cell - lo, cell - hi]])
    corners = np.where(upper[:, None, None], upper_xy[None], lower_xy[None]) + np.stack([x0, y0], -1)[:, None]
    uv = np.stack([corners[..., 0] / texture_size, 1.0 - corners[..., 1] / texture_size], axis=-1)
    return UnwrappedMesh(
        verts=np.asarray(mesh.vertices, np.float64)[faces.ravel()],
        faces=np.arange(3 * count, dtype=np.int64).reshape(count, 3),
        uv=uv.reshape(-1, 2),
        source_index=faces.ravel(),
    )


def dilate(image: torch.Tensor, filled: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow `image` [H, W, C] from `filled` [H, W] texels into empty ones (mean of filled neighbours)."""
    kernel = torch.ones((1, 1, 3, 3), device=image.device)
    img = (image * filled[..., None]).permute(2, 0, 1)[:, None]  # [C, 1, H, W]
    mask = filled.float()[None, None]
    for _ in range(iterations):
        total = F.conv2d(img, kernel, padding=1)
        count = F.conv2d(mask, kernel, padding=1)
        grow = (mask == 0) & (count > 0)
        img = torch.where(grow, total / count.clamp(min=1), img)
        mask = torch.where(grow, torch.ones_like(mask), mask)
    return img[:, 0].permute(1, 2, 0), mask[0, 0] > 0


def grow_triangles(triangle: torch.Tensor) -> torch.Tensor:
    """`triangle` [T, T] (a texel's triangle, -1 for none) with each uncovered texel next to a covered one
    given that neighbour's triangle (edge neighbours first, then corners): a one-texel ring per triangle."""
    grown = triangle.clone()
    size_y, size_x = triangle.shape
    padded = torch.full((size_y + 2, size_x + 2), -1, dtype=triangle.dtype, device=triangle.device)
    padded[1:-1, 1:-1] = triangle
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
        neighbour = padded[1 + dy : 1 + dy + size_y, 1 + dx : 1 + dx + size_x]
        grown = torch.where((grown < 0) & (neighbour >= 0), neighbour, grown)
    return grown


def clamped_barycentrics(point: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Barycentric coordinates [P, 3] of 2-D points [P, 2] in triangles [P, 3, 2], negative ones set to 0 and
    the rest renormalised: a point outside its triangle gets a point of the triangle near it."""
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    q = point - corners[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = torch.where(det.abs() < 1e-20, torch.full_like(det, 1e-20), det)
    b1 = (q[:, 0] * e2[:, 1] - q[:, 1] * e2[:, 0]) / det
    b2 = (e1[:, 0] * q[:, 1] - e1[:, 1] * q[:, 0]) / det
    weights = torch.stack([1 - b1 - b2, b1, b2], dim=-1).clamp(min=0)
    return weights / weights.sum(dim=-1, keepdim=True).clamp(min=1e-12)


def bake_texture(
    unwrapped: UnwrappedMesh,
    normals: np.ndarray,
    capture: Capture,
    renderer: Renderer,
    texture_size: int,
    *,
    views_per_batch: int = 4,
) -> np.ndarray:
    """[T, T, 3] float texture (row 0 the top) of `unwrapped` from the capture's training photos.

    `normals` [V', 3] are the (smooth) vertex normals of `unwrapped.verts`.
    """
    device = renderer.device
    verts = torch.tensor(unwrapped.verts, dtype=torch.float32, device=device)
    faces = torch.tensor(unwrapped.faces, dtype=torch.int32, device=device)
    uv = torch.tensor(unwrapped.uv, dtype=torch.float32, device=device)
    # UV space as clip space: x = 2u - 1 and, image rows growing downwards, y = 1 - 2v.
    pos_uv = torch.stack(
        [2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1], torch.zeros_like(uv[:, 0]), torch.ones_like(uv[:, 0])], -1
    )
    raster = renderer.rasterize(pos_uv[None].contiguous(), faces, (texture_size, texture_size))
    triangle = grow_triangles(raster.triangle_id[0].long())  # [T, T], -1: no triangle
    covered = triangle >= 0
    rows, cols = torch.nonzero(covered, as_tuple=True)
    texel_uv = torch.stack([(cols.float() + 0.5) / texture_size, 1 - (rows.float() + 0.5) / texture_size], -1)
    corners = faces[triangle[covered]].long()  # [P, 3]
    weights = clamped_barycentrics(texel_uv, uv[corners])  # [P, 3]
    points = (weights[..., None] * verts[corners]).sum(dim=1)  # [P, 3]
    vertex_normals = torch.tensor(normals, dtype=torch.float32, device=device)
    texel_normals = F.normalize((weights[..., None] * vertex_normals[corners]).sum(dim=1), dim=-1)  # [P, 3]

    k = capture.intrinsics
    indices = capture.indices("train")
    luma_weights = torch.tensor([0.299, 0.587, 0.114], device=device)

    # Both passes read every view: decoded once and kept (uint8, on the device) when they fit in
    # VIEW_CACHE_BYTES, else decoded again in pass 2 (PNG decoding was most of the bake's time).
    view_bytes = k.height * k.width * 4 * len(indices)
    cache: dict[int, torch.Tensor] | None = {} if view_bytes <= VIEW_CACHE_BYTES.get(device.type, 0) else None

    def photos(start: int, chunk: list[int]) -> torch.Tensor:
        if cache is not None and start in cache:
            return cache[start]
        photo = torch.as_tensor(np.stack([capture.load_view(i) for i in chunk]), device=device)
        if cache is not None:
            cache[start] = photo
        return photo

    def samples() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per batch of views: colours [B, P, 3] of every texel and their weights [B, P] (0: unseen)."""
        for start in range(0, len(indices), views_per_batch):
            chunk = indices[start : start + views_per_batch]
            cams = make_cameras(k, np.stack([capture.frames[i].c2w for i in chunk]), device=device)
            photo = photos(start, chunk).float() / 255  # [B, H, W, 4]
            pos_clip = cams.to_clip(verts)
            view_raster = renderer.rasterize(pos_clip, faces, cams.resolution)
            depth_map = renderer.interpolate(pos_clip[..., 3:4].contiguous(), view_raster, faces)  # [B, H, W, 1]
            depth_map = torch.where(view_raster.mask, depth_map, torch.full_like(depth_map, math.inf))
            clip = cams.to_clip(points)  # [B, P, 4]
            depth = clip[..., 3]
            grid = (clip[..., :2] / clip[..., 3:4].clamp(min=1e-6))[:, :, None]  # [B, P, 1, 2] in [-1, 1]
            seen_depth = F.grid_sample(depth_map.permute(0, 3, 1, 2), grid, mode="nearest", align_corners=False)
            sample = F.grid_sample(photo.permute(0, 3, 1, 2), grid, mode="bilinear", align_corners=False)
            sample = sample[..., 0]  # [B, 4, P]
            to_camera = F.normalize(cams.centers[:, None] - points[None], dim=-1)  # [B, P, 3]
            cos = (to_camera * texel_normals[None]).sum(-1)
            inside = (grid[:, :, 0].abs() <= 1).all(-1)
            visible = inside & (depth <= seen_depth[:, 0, :, 0] * 1.004 + 1e-4) & (cos > 0.1) & (sample[:, 3] > 0.9)
            yield sample[:, :3].permute(0, 2, 1), torch.where(visible, cos.clamp(min=0) ** 4, torch.zeros_like(cos))

    # Pass 1: per texel, a weighted histogram of sample luminance -> its weighted median.
    histogram = torch.zeros((len(points), LUMA_BINS), device=device)  # [P, K]
    for color, weight in samples():
        bins = ((color @ luma_weights) * LUMA_BINS).long().clamp(0, LUMA_BINS - 1)  # [B, P]
        histogram.scatter_add_(1, bins.T, weight.T)
    cum = torch.cumsum(histogram, dim=1)
    median_bin = torch.searchsorted(cum, 0.5 * cum[:, -1:]).clamp(max=LUMA_BINS - 1)  # [P, 1]
    median = (median_bin[:, 0].float() + 0.5) / LUMA_BINS  # [P]
    del histogram, cum
    # Pass 2: the weighted mean of the samples that are not highlights.
    total = torch.zeros(len(points), device=device)
    accumulated = torch.zeros((len(points), 3), device=device)
    for color, weight in samples():
        keep = torch.where((color @ luma_weights) > median + HIGHLIGHT_MARGIN, torch.zeros_like(weight), weight)
        accumulated += (color * keep[..., None]).sum(dim=0)
        total += keep.sum(dim=0)
    if cache is not None:
        cache.clear()
    baked = accumulated / total.clamp(min=1e-8)[:, None]  # [P, 3]
    seen = total > 0

    texture = torch.zeros((texture_size, texture_size, 3), device=device)
    filled = torch.zeros((texture_size, texture_size), dtype=torch.bool, device=device)
    texture[rows[seen], cols[seen]] = baked[seen]
    filled[rows[seen], cols[seen]] = True
    texture, filled = dilate(texture, filled, max(8, texture_size // 32))
    if not bool(filled.all()):
        mean = baked[seen].mean(dim=0) if bool(seen.any()) else torch.full((3,), 0.5, device=device)
        texture = torch.where(filled[..., None], texture, mean)
    return texture.clamp(0, 1).cpu().numpy()


def write_textured_mesh(folder: Path, unwrapped: UnwrappedMesh, texture: np.ndarray) -> None:
    """Write the textured mesh into `folder` as the stages hand it on (`engine.stagemesh`)."""
    image = Image.fromarray(np.round(texture * 255).astype(np.uint8), "RGB")
    write_stage_mesh(folder, textured(unwrapped.verts, unwrapped.faces, unwrapped.uv, image), image)


def load_textured_mesh(folder: Path) -> trimesh.Trimesh:
    """The texture stage's result as a trimesh with TextureVisuals (UVs + image).

    Vertices are split along UV seams, as in every textured file; for topology checks (watertight,
    manifold) weld them first (`engine.meshcheck.welded`).
    """
    return read_stage_mesh(Path(folder))


def texture_mesh(
    mesh: trimesh.Trimesh,
    capture: Capture,
    renderer: Renderer,
    texture_size: int,
    folder: Path,
    *,
    max_faces: int | None = None,
) -> dict[str, object]:
    """Decimate to `max_faces` (when given), unwrap, bake and write; returns timings (seconds) and what was done."""
    start = time.perf_counter()
    summary: dict[str, object] = {}
    if max_faces is not None:
        decimation = decimate(mesh, max_faces, what="the refined mesh")
        mesh = decimation.mesh
        summary["decimation"] = decimation.summary()
    decimate_s = time.perf_counter() - start
    unwrapped = unwrap(mesh, texture_size)
    unwrap_s = time.perf_counter() - start - decimate_s
    normals = np.asarray(mesh.vertex_normals)[unwrapped.source_index]
    texture = bake_texture(unwrapped, normals, capture, renderer, texture_size)
    bake_s = time.perf_counter() - start - decimate_s - unwrap_s
    write_textured_mesh(folder, unwrapped, texture)
    return {
        "faces": len(unwrapped.faces),
        "unwrap": "per-face atlas" if len(mesh.faces) > XATLAS_MAX_FACES else "xatlas",
        **summary,
        "decimateSeconds": decimate_s,
        "unwrapSeconds": unwrap_s,
        "bakeSeconds": bake_s,
        "writeSeconds": time.perf_counter() - start - decimate_s - unwrap_s - bake_s,
    }


def run_texture(ctx: StageContext) -> None:
    """The `texture` stage: `refine/refined.ply` in; mesh.npz + texture.png out (<= targetFaces faces)."""
    from recon_worker.engine.refine import REFINED_MESH, read_mesh
    from recon_worker.engine.render import get_renderer

    size = ctx.settings.refinement.texture_size
    mesh = read_mesh(ctx.workdir / "refine" / REFINED_MESH)
    renderer = get_renderer(ctx.device, ctx.renderer)
    ctx.check_cancelled()
    out = ctx.stage_dir("texture")
    timings = texture_mesh(mesh, ctx.capture, renderer, size, out, max_faces=ctx.settings.export.target_faces)
    info = {"renderer": renderer.name, "textureSize": size, **timings}
    (out / "info.json").write_text(json.dumps(info, indent=2))
    ctx.progress(1.0)
