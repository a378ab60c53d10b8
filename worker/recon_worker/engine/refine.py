"""Refinement: optimise the coarse mesh's vertices and a per-vertex appearance against the training views.

Representation and why:

- Geometry is the coarse mesh (decimated to `max_faces` by `engine.decimation`: valid, or re-meshed) plus
  per-vertex offsets, regularised by a uniform Laplacian whose weight decays over the run: cheap on
  both backends, keeps the mesh closed and manifold (the topology never changes), and measured enough
  to pull the hull into concavities.
- Appearance (`engine.shading`, setting `appearance`): `shaded` (default) is per-vertex albedo times one
  learned second-order spherical-harmonic lighting of the (differentiable) vertex normal, plus a
  per-vertex gloss strength times a few global lobes around the mirror direction of the *detached*
  normal: shading can turn the surface, highlights cannot. `free` is the earlier per-vertex colour plus
  a per-vertex linear function of the viewing direction, which can paint any picture on a false
  surface. The texture stage bakes the final texture from the photos either way.
- Silhouettes drive geometry at full strength (antialiased coverage against the masks); the colour
  loss reaches vertex positions only through a `geometry_color_weight` gradient scale and a robust
  (Charbonnier) penalty, so highlights that the appearance model cannot explain do not dent the surface.
- A random background colour per step makes the coverage unambiguous for white or black objects.

Per-step work stays on the device (no host syncs; the edge buffer of `SilhouetteCompositor.static`
too): the loss is read back once, at the end. Views are kept as uint8 and converted per batch. An
optional coarse-to-fine schedule (`coarse_fraction`) renders the first steps at half resolution.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from recon_worker.capture import Capture
from recon_worker.engine.cameras import Cameras, make_cameras, scaled_intrinsics
from recon_worker.engine.decimation import decimate
from recon_worker.engine.render.base import Renderer
from recon_worker.engine.shading import FreeAppearance, ShadedAppearance, vertex_normals
from recon_worker.presets import RefinementSettings
from recon_worker.stage import StageContext

REFINED_MESH, APPEARANCE = "refined.ply", "appearance.pt"
VIEWS_PER_LOAD = 8  # views decoded and resized at a time when building the training set


@dataclass
class TrainingViews:
    """The training photos at the refinement resolution, kept as uint8 (a quarter of float32's memory)
    and converted per batch. Colour is stored premultiplied by alpha, so compositing over a background
    and downsampling (coarse-to-fine) are both linear and commute."""

    images: torch.Tensor  # [N, H, W, 4] uint8: premultiplied RGB and alpha
    cameras: Cameras  # N cameras at that resolution

    @classmethod
    def from_capture(cls, capture: Capture, longest_side: int, device: torch.device) -> TrainingViews:
        k = capture.intrinsics
        intrinsics = scaled_intrinsics(k, min(longest_side, max(k.height, k.width)))
        size = (intrinsics.height, intrinsics.width)
        out = torch.empty((len(capture.indices("train")), *size, 4), dtype=torch.uint8, device=device)
        filled = 0
        for _, stored in capture.iter_views("train", VIEWS_PER_LOAD):
            out[filled : filled + len(stored)] = _premultiplied(torch.as_tensor(stored, device=device), size)
            filled += len(stored)
        return cls(out[:filled], make_cameras(intrinsics, capture.poses("train"), device=device))

    def target(self, index: torch.Tensor, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB [B, H, W, 3] of views `index` composited over `background` [3], and alpha [B, H, W]."""
        batch = self.images[index].float() / 255
        alpha = batch[..., 3]
        return batch[..., :3] + background * (1 - alpha[..., None]), alpha

    def halved(self) -> TrainingViews | None:
        """The same views at half the resolution (2x2 area average), or None for an odd size.

        The cameras' clip-space matrices do not change: pixel centres of the halved image are exactly the
        centres of the 2x2 blocks, so only the rasterizer's resolution does.
        """
        height, width = self.cameras.resolution
        if height % 2 or width % 2 or min(height, width) < 64:
            return None
        small = torch.empty(
            (len(self.images), height // 2, width // 2, 4), dtype=torch.uint8, device=self.images.device
        )
        for start in range(0, len(self.images), VIEWS_PER_LOAD):
            chunk = self.images[start : start + VIEWS_PER_LOAD].permute(0, 3, 1, 2).float()
            small[start : start + VIEWS_PER_LOAD] = F.avg_pool2d(chunk, 2).round().permute(0, 2, 3, 1).to(torch.uint8)
        cams = self.cameras
        return TrainingViews(small, Cameras(cams.c2w, cams.proj, (height // 2, width // 2)))


def _premultiplied(stored: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 straight-alpha RGBA [B, H, W, 4] -> uint8 premultiplied RGBA at `size` (area resampling)."""
    images = stored.float() / 255
    premult = torch.cat([images[..., :3] * images[..., 3:], images[..., 3:]], dim=-1)
    if tuple(premult.shape[1:3]) != size:
        premult = F.interpolate(premult.permute(0, 3, 1, 2), size=size, mode="area").permute(0, 2, 3, 1)
    return (premult * 255).round().clamp(0, 255).to(torch.uint8)


@dataclass
class RefineResult:
    verts: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3]
    colors: np.ndarray  # [V, 3] base (view-independent) colour: the albedo of the shaded model
    appearance: dict[str, torch.Tensor] = field(default_factory=dict)  # the appearance model's fitted state
    losses: list[tuple[int, float]] = field(default_factory=list)  # (iteration, total loss) samples
    decimation: dict[str, object] = field(default_factory=dict)  # Decimation.summary() of the coarse mesh
    seconds: float = 0.0


def read_mesh(path: Path) -> trimesh.Trimesh:
    """One triangle mesh from a file written by an earlier stage (vertex order kept)."""
    mesh = trimesh.load(path, process=False)
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"{path}: expected a triangle mesh, got {type(mesh).__name__}")
    return mesh


@dataclass
class Neighbours:
    """A mesh's vertex adjacency as a fixed edge table: the uniform Laplacian is one gather and one
    segment sum (`index_add_`), two kernels forward and two backward, where a sparse COO matrix product
    cost a few more and a coalesce."""

    src: torch.Tensor  # [E] directed edges i -> j, both directions of every mesh edge
    dst: torch.Tensor  # [E]
    inv_degree: torch.Tensor  # [V, 1]

    @classmethod
    def from_faces(cls, faces: torch.Tensor, num_verts: int) -> Neighbours:
        edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).long()
        edges = torch.unique(torch.cat([edges, edges.flip(1)]), dim=0)
        degree = torch.zeros(num_verts, device=faces.device).index_add_(
            0, edges[:, 0], torch.ones(len(edges), device=faces.device)
        )
        return cls(edges[:, 0].contiguous(), edges[:, 1].contiguous(), (1 / degree.clamp(min=1))[:, None])

    def laplacian(self, x: torch.Tensor) -> torch.Tensor:
        """(L x)_i = x_i - mean of x over i's neighbours, for x [V, C]."""
        return x - torch.zeros_like(x).index_add_(0, self.src, x.index_select(0, self.dst)) * self.inv_degree


def to_clip(mvp: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
    """World positions [V, 3] -> clip positions [B, V, 4] under world-to-clip matrices `mvp` [B, 4, 4]."""
    return torch.einsum("bij,vj->bvi", mvp, torch.cat([verts, torch.ones_like(verts[:, :1])], dim=-1))


def charbonnier(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt(x * x + eps * eps) - eps


def refine_mesh(
    mesh: trimesh.Trimesh,
    views: TrainingViews,
    renderer: Renderer,
    settings: RefinementSettings,
    *,
    progress: Callable[[float], None] = lambda fraction: None,
    check_cancelled: Callable[[], None] = lambda: None,
    seed: int = 0,
) -> RefineResult:
    """Optimise `mesh` (closed, world coordinates) against `views`; see the module docstring."""
    start = time.perf_counter()
    device = renderer.device
    decimation = decimate(mesh, settings.max_faces, what="the coarse mesh")
    mesh = decimation.mesh
    verts0 = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    faces = torch.tensor(np.asarray(mesh.faces), dtype=torch.int32, device=device)
    num_verts = verts0.shape[0]
    neighbours = Neighbours.from_faces(faces, num_verts)
    edge_len = float(np.asarray(mesh.edges_unique_length).mean())
    diag = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))

    offsets = torch.zeros_like(verts0, requires_grad=True)
    appearance: ShadedAppearance | FreeAppearance = (
        ShadedAppearance(num_verts, device) if settings.appearance == "shaded" else FreeAppearance(num_verts, device)
    )
    iterations = settings.iterations
    optimizer = torch.optim.Adam(
        [{"params": [offsets], "lr": settings.position_lr * diag}, *appearance.param_groups()],
        betas=(0.9, 0.99),
        fused=device.type == "cuda",  # one kernel for every parameter group instead of a few per tensor
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(it / max(iterations, 1), 1.0)))
    )
    generator = torch.Generator().manual_seed(seed)
    num_views = len(views.cameras)
    batch = min(settings.batch_views, num_views)
    # Coarse to fine: the first `coarse_fraction` of the steps render at half the resolution.
    coarse = views.halved() if settings.coarse_fraction > 0 else None
    coarse_steps = round(settings.coarse_fraction * iterations) if coarse is not None else 0
    record_every = max(iterations // 10, 1)
    recorded = list(range(0, iterations, record_every)) + ([iterations - 1] if (iterations - 1) % record_every else [])
    loss_log = torch.zeros(len(recorded), device=device)  # filled on the device, read once at the end
    scale = settings.geometry_color_weight
    # Everything random is drawn up front and moved to the device once: no host-to-device copy (an
    # implicit sync on CUDA) inside the loop. Views are visited in shuffled epochs.
    epochs = -(-iterations * batch // num_views) + 1
    schedule_views = torch.cat([torch.randperm(num_views, generator=generator) for _ in range(epochs)])
    view_index = schedule_views[: iterations * batch].reshape(iterations, batch).to(device)  # [I, B]
    backgrounds = torch.rand((iterations, 3), generator=generator).to(device)  # [I, 3]
    mvp_all = views.cameras.mvp  # [N, 4, 4], inverted once
    centers_all = views.cameras.centers  # [N, 3]
    zero = torch.zeros(1, device=device)

    for it in range(iterations):
        check_cancelled()
        stage_views = coarse if coarse is not None and it < coarse_steps else views
        index = view_index[it]
        mvp, centers = mvp_all[index], centers_all[index]
        background = backgrounds[it]
        target_rgb, target_alpha = stage_views.target(index, background)

        verts = verts0 + offsets
        # Same positions, but the colour loss' gradient reaches them scaled by `geometry_color_weight`
        # (clip space is linear in the positions, so one projection serves both).
        pos_clip = to_clip(mvp, verts)
        pos_color = pos_clip.detach() + scale * (pos_clip - pos_clip.detach())
        verts_for_color = verts.detach() + scale * (verts - verts.detach())
        raster = renderer.rasterize(pos_color, faces, stage_views.cameras.resolution)
        view_dirs = F.normalize(verts.detach()[None] - centers[:, None], dim=-1)  # [B, V, 3]
        vertex_rgb = appearance(vertex_normals(verts_for_color, faces), view_dirs)  # [B, V, 3]
        rgb = renderer.interpolate(vertex_rgb, raster, faces)
        fg = torch.cat([rgb, torch.ones_like(rgb[..., :1])], dim=-1)
        bg = torch.cat([background, zero])
        out = renderer.antialias(fg, bg, raster, pos_clip, faces)  # [B, H, W, 4]

        mask_loss = (out[..., 3] - target_alpha).abs().mean()
        color_loss = charbonnier(out[..., :3] - target_rgb).mean()
        smooth = neighbours.laplacian(verts)
        laplacian_loss = (smooth * smooth).sum(-1).mean() / (edge_len * edge_len)
        # Laplacian weight decays from 10x to 1x its base: stiff while the hull moves, softer for detail.
        lap_weight = settings.laplacian_weight * (1 + 9 * (1 - it / max(iterations, 1)) ** 2)
        loss = (
            settings.mask_weight * mask_loss
            + color_loss
            + lap_weight * laplacian_loss
            + 0.01 * appearance.regulariser()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if it % record_every == 0 or it == iterations - 1:
            loss_log[recorded.index(it)] = loss.detach()
        progress((it + 1) / iterations)

    final = (verts0 + offsets).detach()
    state = appearance.state()
    return RefineResult(
        verts=final.cpu().numpy().astype(np.float64),
        faces=faces.cpu().numpy().astype(np.int64),
        colors=state["colors"].numpy(),
        appearance=state,
        losses=list(zip(recorded, loss_log.tolist(), strict=True)),
        decimation=decimation.summary(),
        seconds=time.perf_counter() - start,
    )


def run_refine(ctx: StageContext) -> None:
    """The `refine` stage: `reconstruct/coarse.ply` in; `refine/refined.ply` + `appearance.pt` out."""
    from recon_worker.engine.reconstruct.stage import COARSE_MESH
    from recon_worker.engine.render import get_renderer

    settings = ctx.settings.refinement
    coarse = read_mesh(ctx.workdir / "reconstruct" / COARSE_MESH)
    renderer = get_renderer(ctx.device, ctx.renderer)
    views = TrainingViews.from_capture(ctx.capture, settings.render_resolution, renderer.device)
    result = refine_mesh(coarse, views, renderer, settings, progress=ctx.progress, check_cancelled=ctx.check_cancelled)
    out = ctx.stage_dir("refine")
    trimesh.Trimesh(result.verts, result.faces, process=False).export(out / REFINED_MESH)
    torch.save({"model": settings.appearance, **result.appearance}, out / APPEARANCE)
    info = {
        "renderer": renderer.name,
        "device": str(renderer.device),
        "iterations": settings.iterations,
        "renderResolution": list(views.cameras.resolution),
        "batchViews": settings.batch_views,
        "appearance": settings.appearance,
        "coarseFraction": settings.coarse_fraction,
        "faces": len(result.faces),
        "decimation": result.decimation,
        "losses": result.losses,
        "seconds": result.seconds,
    }
    (out / "info.json").write_text(json.dumps(info, indent=2))
    ctx.log.info("refine: %d iterations on %s in %.1f s", settings.iterations, renderer.name, result.seconds)
