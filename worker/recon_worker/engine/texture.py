"""Texture: UV-unwrap the refined mesh (xatlas) and bake a texture map from the training photos.

Baking is projective, so it costs a handful of rasterizations whichever backend runs it:

1. rasterize the mesh in UV space: each texel gets its surface point and normal;
2. for each view, a depth map of the mesh says which texels the camera sees; those texels sample the
   photo (bilinear) with a weight favouring frontal views (cos^4 of the viewing angle);
3. per texel, samples brighter than the weighted median by more than `HIGHLIGHT_MARGIN` are dropped
   (specular highlights are additive brightening seen from a few directions), the rest averaged;
4. texels no view saw, and the gutter around every chart, are filled by dilation from their
   neighbours, so bilinear lookups and mip-maps near seams never reach the empty background.

Files (see stages.py): `textured.obj` + `textured.mtl` + `texture.png`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from recon_worker.capture import Capture
from recon_worker.engine.cameras import make_cameras
from recon_worker.engine.render.base import Renderer
from recon_worker.stage import StageContext

HIGHLIGHT_MARGIN = 0.08  # luminance above the texel's weighted median that marks a highlight
TEXTURE_NAME, MESH_NAME, MATERIAL_NAME = "texture.png", "textured.obj", "textured.mtl"


@dataclass
class UnwrappedMesh:
    verts: np.ndarray  # [V', 3] float64, split along UV seams
    faces: np.ndarray  # [F, 3] int64 into verts and uv
    uv: np.ndarray  # [V', 2] in [0, 1], v up
    source_index: np.ndarray  # [V'] index of each vertex in the welded input mesh


def unwrap(mesh: trimesh.Trimesh, texture_size: int) -> UnwrappedMesh:
    """xatlas charts packed for a `texture_size`² map, with a few texels of gutter between charts."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32))
    chart_options = xatlas.ChartOptions()
    chart_options.max_iterations = 1  # the default 4 costs seconds on 50k faces for little atlas gain
    pack_options = xatlas.PackOptions()
    pack_options.resolution = texture_size
    pack_options.padding = max(2, texture_size // 256)
    pack_options.bilinear = True
    atlas.generate(chart_options, pack_options)
    vmapping, indices, uvs = atlas[0]
    return UnwrappedMesh(
        verts=np.asarray(mesh.vertices, np.float64)[vmapping],
        faces=np.asarray(indices, np.int64),
        uv=np.asarray(uvs, np.float64),
        source_index=np.asarray(vmapping, np.int64),
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
    covered = raster.mask[0, ..., 0]  # [T, T]
    points = renderer.interpolate(verts, raster, faces)[0][covered]  # [P, 3]
    texel_normals = renderer.interpolate(torch.tensor(normals, dtype=torch.float32, device=device), raster, faces)
    texel_normals = F.normalize(texel_normals[0][covered], dim=-1)  # [P, 3]

    images = capture.load_images("train", np.uint8)  # [N, H, W, 4]; each batch becomes floats on the device
    poses = capture.poses("train")
    k = capture.intrinsics
    colors, weights = [], []
    for start in range(0, len(images), views_per_batch):
        cams = make_cameras(k, poses[start : start + views_per_batch], device=device)
        photo = torch.as_tensor(images[start : start + views_per_batch], device=device).float() / 255  # [B, H, W, 4]
        pos_clip = cams.to_clip(verts)
        view_raster = renderer.rasterize(pos_clip, faces, cams.resolution)
        depth_map = renderer.interpolate(pos_clip[..., 3:4].contiguous(), view_raster, faces)  # [B, H, W, 1]
        depth_map = torch.where(view_raster.mask, depth_map, torch.full_like(depth_map, math.inf))
        clip = cams.to_clip(points)  # [B, P, 4]
        depth = clip[..., 3]
        grid = (clip[..., :2] / clip[..., 3:4].clamp(min=1e-6))[:, :, None]  # [B, P, 1, 2] in [-1, 1]
        seen_depth = F.grid_sample(depth_map.permute(0, 3, 1, 2), grid, mode="nearest", align_corners=False)[:, 0, :, 0]
        sample = F.grid_sample(photo.permute(0, 3, 1, 2), grid, mode="bilinear", align_corners=False)[
            ..., 0
        ]  # [B, 4, P]
        to_camera = F.normalize(cams.centers[:, None] - points[None], dim=-1)  # [B, P, 3]
        cos = (to_camera * texel_normals[None]).sum(-1)
        inside = (grid[:, :, 0].abs() <= 1).all(-1)
        visible = inside & (depth <= seen_depth * 1.004 + 1e-4) & (cos > 0.1) & (sample[:, 3] > 0.9)
        colors.append(sample[:, :3].permute(0, 2, 1))  # [B, P, 3]
        weights.append(torch.where(visible, cos.clamp(min=0) ** 4, torch.zeros_like(cos)))
    color = torch.cat(colors).permute(1, 0, 2)  # [P, N, 3]
    weight = torch.cat(weights).T  # [P, N]

    # Highlight rejection: drop samples much brighter than the texel's weighted median luminance.
    luma = color @ torch.tensor([0.299, 0.587, 0.114], device=device)  # [P, N]
    sorted_luma, order = torch.sort(luma, dim=1)
    cum = torch.cumsum(torch.gather(weight, 1, order), dim=1)
    half = 0.5 * cum[:, -1:]
    median_pos = torch.searchsorted(cum.contiguous(), half.contiguous()).clamp(max=luma.shape[1] - 1)
    median = torch.gather(sorted_luma, 1, median_pos)  # [P, 1]
    weight = torch.where(luma > median + HIGHLIGHT_MARGIN, torch.zeros_like(weight), weight)
    total = weight.sum(dim=1, keepdim=True)
    baked = (color * weight[..., None]).sum(dim=1) / total.clamp(min=1e-8)  # [P, 3]
    seen = total[:, 0] > 0

    texture = torch.zeros((texture_size, texture_size, 3), device=device)
    filled = torch.zeros((texture_size, texture_size), dtype=torch.bool, device=device)
    rows, cols = torch.nonzero(covered, as_tuple=True)
    texture[rows[seen], cols[seen]] = baked[seen]
    filled[rows[seen], cols[seen]] = True
    texture, filled = dilate(texture, filled, max(8, texture_size // 32))
    if not bool(filled.all()):
        mean = baked[seen].mean(dim=0) if bool(seen.any()) else torch.full((3,), 0.5, device=device)
        texture = torch.where(filled[..., None], texture, mean)
    return texture.clamp(0, 1).cpu().numpy()


def write_textured_mesh(folder: Path, unwrapped: UnwrappedMesh, texture: np.ndarray) -> Path:
    """Write textured.obj + textured.mtl + texture.png into `folder`; returns the OBJ's path."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.round(texture * 255).astype(np.uint8), "RGB")
    image.save(folder / TEXTURE_NAME)
    material = trimesh.visual.material.SimpleMaterial(image=image, name="textured")
    visual = trimesh.visual.TextureVisuals(uv=unwrapped.uv, material=material)
    mesh = trimesh.Trimesh(unwrapped.verts, unwrapped.faces, visual=visual, process=False)
    text, files = trimesh.exchange.obj.export_obj(
        mesh, include_normals=False, return_texture=True, mtl_name=MATERIAL_NAME
    )
    (folder / MESH_NAME).write_text(text)
    for name, data in files.items():
        if name.endswith(".mtl"):
            # trimesh names the image after the material; point the MTL at our file name instead.
            mtl = data.decode() if isinstance(data, bytes) else str(data)
            lines = [f"map_Kd {TEXTURE_NAME}" if line.startswith("map_Kd") else line for line in mtl.splitlines()]
            (folder / MATERIAL_NAME).write_text("\n".join(lines) + "\n")
    return folder / MESH_NAME


def load_textured_mesh(folder: Path) -> trimesh.Trimesh:
    """The texture stage's result as a trimesh with TextureVisuals (UVs + image).

    Vertices are split along UV seams, as in every textured file; for topology checks (watertight,
    manifold) weld them first: `mesh.copy().merge_vertices(merge_tex=True, merge_norm=True)`.
    """
    loaded = trimesh.load(Path(folder) / MESH_NAME, process=False, maintain_order=True)
    if not isinstance(loaded, trimesh.Trimesh):
        raise ValueError(f"{folder / MESH_NAME}: expected one textured mesh, got {type(loaded).__name__}")
    return loaded


def texture_mesh(
    mesh: trimesh.Trimesh, capture: Capture, renderer: Renderer, texture_size: int, folder: Path
) -> dict[str, float]:
    """Unwrap, bake and write; returns timings (seconds) for the report."""
    start = time.perf_counter()
    unwrapped = unwrap(mesh, texture_size)
    unwrap_s = time.perf_counter() - start
    normals = np.asarray(mesh.vertex_normals)[unwrapped.source_index]
    texture = bake_texture(unwrapped, normals, capture, renderer, texture_size)
    bake_s = time.perf_counter() - start - unwrap_s
    write_textured_mesh(folder, unwrapped, texture)
    return {
        "unwrapSeconds": unwrap_s,
        "bakeSeconds": bake_s,
        "writeSeconds": time.perf_counter() - start - unwrap_s - bake_s,
    }


def run_texture(ctx: StageContext) -> None:
    """The `texture` stage: `refine/refined.ply` in; textured.obj/.mtl + texture.png out."""
    from recon_worker.engine.refine import REFINED_MESH, read_mesh
    from recon_worker.engine.render import get_renderer

    size = ctx.settings.refinement.texture_size
    mesh = read_mesh(ctx.workdir / "refine" / REFINED_MESH)
    renderer = get_renderer(ctx.device, ctx.renderer)
    ctx.check_cancelled()
    out = ctx.stage_dir("texture")
    timings = texture_mesh(mesh, ctx.capture, renderer, size, out)
    info = {"renderer": renderer.name, "textureSize": size, **timings}
    (out / "info.json").write_text(json.dumps(info, indent=2))
    ctx.progress(1.0)
