"""Refinement: optimise the coarse mesh's vertices and a per-vertex appearance against the training views.

Representation and why:

- Geometry is the coarse mesh (decimated to `max_faces` by `engine.decimation`: valid, or re-meshed) plus
  per-vertex offsets, regularised by a uniform Laplacian whose weight decays over the run: cheap on
  both backends, keeps the mesh closed and manifold (the topology never changes), and measured enough
  to pull the hull into concavities.
- Appearance is a per-vertex base colour plus a per-vertex linear function of the viewing direction
  (degree-1 spherical harmonics), so broad view-dependent shading (highlights) has somewhere to go
  other than into the geometry. The texture stage bakes the final texture from the photos.
- Silhouettes drive geometry at full strength (antialiased coverage against the masks); the colour
  loss reaches vertex positions only through a `geometry_color_weight` gradient scale and a robust
  (Charbonnier) penalty, so highlights that the appearance model cannot explain do not dent the surface.
- A random background colour per step makes the coverage unambiguous for white or black objects.

Per-step work stays on the device (no host syncs): the loss is read back only a few times a run.
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
from recon_worker.presets import RefinementSettings
from recon_worker.stage import StageContext

REFINED_MESH, APPEARANCE = "refined.ply", "appearance.pt"
VIEWS_PER_LOAD = 8  # views decoded and resized at a time when building the training set


@dataclass
class TrainingViews:
    images: torch.Tensor  # [N, H, W, 4] straight-alpha RGBA in [0, 1], at the refinement resolution
    cameras: Cameras  # N cameras at that resolution

    @classmethod
    def from_capture(cls, capture: Capture, longest_side: int, device: torch.device) -> TrainingViews:
        k = capture.intrinsics
        intrinsics = scaled_intrinsics(k, min(longest_side, max(k.height, k.width)))
        size = (intrinsics.height, intrinsics.width)
        batches = []
        # Views stream in as uint8 and only the (possibly smaller) refinement copy is kept as floats.
        for _, stored in capture.iter_views("train", VIEWS_PER_LOAD):
            images = torch.as_tensor(stored, device=device).float() / 255  # [B, H, W, 4]
            if tuple(images.shape[1:3]) != size:
                # Premultiplied area resampling, then back to straight alpha.
                premult = torch.cat([images[..., :3] * images[..., 3:], images[..., 3:]], dim=-1).permute(0, 3, 1, 2)
                small = F.interpolate(premult, size=size, mode="area").permute(0, 2, 3, 1)
                alpha = small[..., 3:]
                images = torch.cat([small[..., :3] / alpha.clamp(min=1e-4), alpha], dim=-1).clamp(0, 1)
            batches.append(images)
        images = torch.cat(batches) if batches else torch.zeros((0, *size, 4), device=device)
        return cls(images.contiguous(), make_cameras(intrinsics, capture.poses("train"), device=device))


@dataclass
class RefineResult:
    verts: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3]
    colors: np.ndarray  # [V, 3] base (view-independent) colour
    view_dependence: np.ndarray  # [V, 3, 3] colour change per unit of viewing direction (x, y, z)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (iteration, total loss) samples
    decimation: dict[str, object] = field(default_factory=dict)  # Decimation.summary() of the coarse mesh
    seconds: float = 0.0


def read_mesh(path: Path) -> trimesh.Trimesh:
    """One triangle mesh from a file written by an earlier stage (vertex order kept)."""
    mesh = trimesh.load(path, process=False)
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"{path}: expected a triangle mesh, got {type(mesh).__name__}")
    return mesh


def uniform_laplacian(faces: torch.Tensor, num_verts: int) -> torch.Tensor:
    """Sparse [V, V] L = I - D^-1 A over the mesh's edges: (L v)_i = v_i - mean of i's neighbours."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).long()
    edges = torch.cat([edges, edges.flip(1)])
    edges = torch.unique(edges, dim=0)
    degree = torch.zeros(num_verts, device=faces.device).index_add_(
        0, edges[:, 0], torch.ones(len(edges), device=faces.device)
    )
    values = -1.0 / degree[edges[:, 0]].clamp(min=1)
    diag = torch.arange(num_verts, device=faces.device)
    index = torch.cat([edges.T, torch.stack([diag, diag])], dim=1)
    values = torch.cat([values, torch.ones(num_verts, device=faces.device)])
    return torch.sparse_coo_tensor(index, values, (num_verts, num_verts), check_invariants=False).coalesce()


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
    laplacian = uniform_laplacian(faces, num_verts)
    edge_len = float(np.asarray(mesh.edges_unique_length).mean())
    diag = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))

    offsets = torch.zeros_like(verts0, requires_grad=True)
    colors = torch.full((num_verts, 3), 0.5, device=device, requires_grad=True)
    view_dep = torch.zeros((num_verts, 3, 3), device=device, requires_grad=True)
    iterations = settings.iterations
    optimizer = torch.optim.Adam(
        [
            {"params": [offsets], "lr": settings.position_lr * diag},
            {"params": [colors], "lr": 0.03},
            {"params": [view_dep], "lr": 0.01},
        ],
        betas=(0.9, 0.99),
        fused=device.type == "cuda",  # one kernel for all three groups instead of a few per tensor
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(it / max(iterations, 1), 1.0)))
    )
    generator = torch.Generator().manual_seed(seed)
    num_views = len(views.cameras)
    batch = min(settings.batch_views, num_views)
    resolution = views.cameras.resolution
    losses: list[tuple[int, float]] = []
    record_every = max(iterations // 10, 1)
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
        index = view_index[it]
        mvp, centers = mvp_all[index], centers_all[index]
        target = views.images[index]  # [B, H, W, 4]

        verts = verts0 + offsets
        # Same positions, but the colour loss' gradient reaches them scaled by `geometry_color_weight`.
        verts_for_color = verts.detach() + scale * (verts - verts.detach())
        pos_clip = to_clip(mvp, verts)
        raster = renderer.rasterize(to_clip(mvp, verts_for_color), faces, resolution)
        view_dirs = F.normalize(verts.detach()[None] - centers[:, None], dim=-1)  # [B, V, 3]
        vertex_rgb = colors[None] + torch.einsum("vcj,bvj->bvc", view_dep, view_dirs)  # [B, V, 3]
        rgb = renderer.interpolate(vertex_rgb, raster, faces)
        background = backgrounds[it]
        fg = torch.cat([rgb, torch.ones_like(rgb[..., :1])], dim=-1)
        bg = torch.cat([background, zero])
        out = renderer.antialias(fg, bg, raster, pos_clip, faces)  # [B, H, W, 4]

        target_rgb = target[..., :3] * target[..., 3:] + background * (1 - target[..., 3:])
        mask_loss = (out[..., 3] - target[..., 3]).abs().mean()
        color_loss = charbonnier(out[..., :3] - target_rgb).mean()
        smooth = laplacian @ verts
        laplacian_loss = (smooth * smooth).sum(-1).mean() / (edge_len * edge_len)
        # Laplacian weight decays from 10x to 1x its base: stiff while the hull moves, softer for detail.
        lap_weight = settings.laplacian_weight * (1 + 9 * (1 - it / max(iterations, 1)) ** 2)
        loss = (
            settings.mask_weight * mask_loss
            + color_loss
            + lap_weight * laplacian_loss
            + 0.01 * (view_dep * view_dep).mean()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if it % record_every == 0 or it == iterations - 1:
            losses.append((it, float(loss.detach())))
        progress((it + 1) / iterations)

    final = (verts0 + offsets).detach()
    return RefineResult(
        verts=final.cpu().numpy().astype(np.float64),
        faces=faces.cpu().numpy().astype(np.int64),
        colors=colors.detach().clamp(0, 1).cpu().numpy(),
        view_dependence=view_dep.detach().cpu().numpy(),
        losses=losses,
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
    torch.save(
        {"colors": torch.from_numpy(result.colors), "view_dependence": torch.from_numpy(result.view_dependence)},
        out / APPEARANCE,
    )
    info = {
        "renderer": renderer.name,
        "device": str(renderer.device),
        "iterations": settings.iterations,
        "renderResolution": list(views.cameras.resolution),
        "batchViews": settings.batch_views,
        "faces": len(result.faces),
        "decimation": result.decimation,
        "losses": result.losses,
        "seconds": result.seconds,
    }
    (out / "info.json").write_text(json.dumps(info, indent=2))
    ctx.log.info("refine: %d iterations on %s in %.1f s", settings.iterations, renderer.name, result.seconds)
