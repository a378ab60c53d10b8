"""One function that renders a mesh with any backend: what refine, validate and previews share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from recon_worker.engine.cameras import Cameras
from recon_worker.engine.render.base import Raster, Renderer


@dataclass
class RenderOut:
    rgb: torch.Tensor  # [B, H, W, 3] composited over the background, antialiased edges
    alpha: torch.Tensor  # [B, H, W, 1] antialiased coverage in [0, 1] (differentiable w.r.t. vertices)
    mask: torch.Tensor  # [B, H, W, 1] bool, hard coverage of pixel centres
    raster: Raster
    pos_clip: torch.Tensor  # [B, V, 4]


def render_mesh(
    renderer: Renderer,
    verts: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    resolution: tuple[int, int] | None = None,
    *,
    vertex_colors: torch.Tensor | None = None,
    uv: torch.Tensor | None = None,
    uv_faces: torch.Tensor | None = None,
    texture: torch.Tensor | None = None,
    background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
) -> RenderOut:
    """Render `verts` [V, 3] / `faces` [F, 3] from every camera, coloured one of three ways.

    - `vertex_colors` [V, 3] (or [B, V, 3]): interpolated per pixel;
    - `uv` [T, 2] + `texture` [Ht, Wt, 3]: a texture map; `uv_faces` [F, 3] indexes `uv` per face corner
      (defaults to `faces`, i.e. one UV per vertex), so seams need no duplicated geometry;
    - neither: plain white (a silhouette render).

    `resolution` (H, W) defaults to the cameras' own; the cameras' intrinsics must match it.
    """
    resolution = resolution or cameras.resolution
    tri = faces.to(device=renderer.device, dtype=torch.int32)
    pos_clip = cameras.to_clip(verts)
    raster = renderer.rasterize(pos_clip, tri, resolution)
    if texture is not None:
        if uv is None:
            raise ValueError("render_mesh: a texture needs uv coordinates")
        uv_tri = tri if uv_faces is None else uv_faces.to(device=renderer.device, dtype=torch.int32)
        pixel_uv = renderer.interpolate(uv, raster, uv_tri)  # [B, H, W, 2]
        color = renderer.texture(texture, pixel_uv)
    elif vertex_colors is not None:
        color = renderer.interpolate(vertex_colors, raster, tri)
    else:
        color = torch.ones((*raster.mask.shape[:3], 3), device=renderer.device)
    bg = torch.as_tensor(background, dtype=color.dtype, device=color.device)
    # One antialiasing pass for colour and coverage together: [B, H, W, 4].
    fg = torch.cat([color, torch.ones_like(color[..., :1])], dim=-1)
    bg4 = torch.cat([bg, torch.zeros_like(bg[..., :1])], dim=-1)
    out = renderer.antialias(fg, bg4, raster, pos_clip, tri)
    return RenderOut(
        rgb=out[..., :3], alpha=out[..., 3:4].clamp(0, 1), mask=raster.mask, raster=raster, pos_clip=pos_clip
    )
