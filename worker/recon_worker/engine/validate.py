"""The validate stage: is the textured mesh sound, how well does it explain the views it never saw?

Steps: load `texture/` (already decimated to `targetFaces` by the texture stage, so every figure
describes the mesh that `export` writes) -> repair -> validity checks -> render the held-out views on
a white background and compare (PSNR, SSIM, mask IoU) -> geometric metrics against the ground truth
when the capture has one -> the held-out views of a reference capture, when the capture has one
(`engine.reference`) -> quality gates -> turntable previews.

Writes `validate/metrics.json` (`QualityMetrics`), `validate/mesh/` (the validated mesh as the
stages hand it on, `engine.stagemesh`: rewritten after repairs, the texture stage's files copied
when nothing needed repair), `validate/info.json` (seconds per step) and `validate/previews/*.png`. Gates are judged
here and enforced by the runtime before publishing (`recon_worker.publish.check_gates`), so a
failed run still reports why.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from PIL import Image

from recon_worker.capture import REFERENCE_FOLDER, Capture, Intrinsics, Split
from recon_worker.engine.cameras import make_cameras, scaled_intrinsics
from recon_worker.engine.export import load_mesh, texture_image, uv_of
from recon_worker.engine.meshcheck import MeshChecks, check_mesh, repair_mesh
from recon_worker.engine.metrics import (
    FSCORE_THRESHOLD,
    GateResult,
    QualityMetrics,
    ReferenceMetrics,
    ViewMetrics,
    error_map,
    geometry_metrics,
    over_white,
    view_metrics,
)
from recon_worker.engine.reference import align_to_reference, find_reference, load_reference
from recon_worker.engine.render import Renderer, get_renderer
from recon_worker.engine.rendering import render_mesh
from recon_worker.engine.stagemesh import FILES, write_stage_mesh
from recon_worker.engine.texture import load_textured_mesh
from recon_worker.stage import StageContext, StepClock
from recon_worker.task import Gates

TURNTABLE_VIEWS = 8
TURNTABLE_ELEVATION_DEG = 20.0
# Longest side of turntable previews, pixels. PyTorch3D rasterizes naively on the CPU (cost ~ pixels x
# faces: ~4 s for one 384^2 view of 6k faces on two cores), so CPU previews are small.
PREVIEW_SIDE = {"cuda": 384, "cpu": 128}
COMPARISONS = 6  # held-out views saved as capture | render | error previews
# Visibility of the ground truth (the labelled "visible GT" figures): training views used and the
# longest side of their depth maps. On the CPU, PyTorch3D's rasterizer costs pixels x faces.
VISIBILITY_VIEWS = {"cuda": 100, "cpu": 8}
VISIBILITY_SIDE = {"cuda": 512, "cpu": 64}
_RENDER_BATCH = 4  # views per rasterizer call (bounds memory at 512^2 on the CPU)
_DECODE_THREADS = 8  # threads decoding held-out views ahead of the renderer


# --------------------------------------------------------------------------------------------------
# Decisions (pure)


def evaluate_gates(
    gates: Gates, psnr: float | None, mask_iou: float | None, checks: MeshChecks, has_views: bool
) -> GateResult:
    """Which of the task's quality gates fail, with messages that name the figure and the bound."""
    failures = []
    if gates.min_psnr is not None:
        if psnr is None:
            failures.append(f"PSNR could not be measured (no views to compare), gate minPSNR {gates.min_psnr:g} dB")
        elif psnr < gates.min_psnr:
            failures.append(f"PSNR {psnr:.2f} dB is below the gate minPSNR {gates.min_psnr:g} dB")
    if gates.min_mask_iou is not None:
        if mask_iou is None or not has_views:
            failures.append(f"mask IoU could not be measured (no views), gate minMaskIoU {gates.min_mask_iou:g}")
        elif mask_iou < gates.min_mask_iou:
            failures.append(f"mask IoU {mask_iou:.4f} is below the gate minMaskIoU {gates.min_mask_iou:g}")
    if gates.require_watertight and not (checks.watertight and checks.manifold):
        failures.append("the mesh is not watertight and manifold: " + "; ".join(checks.problems()))
    return GateResult(passed=not failures, enforced=gates.enforce, failures=failures)


def turntable_poses(
    center: np.ndarray, distance: float, up: np.ndarray, views: int, elevation_deg: float
) -> np.ndarray:
    """[views, 4, 4] camera-to-world poses (OpenGL axes) circling `center` about `up`, looking at it."""
    up = up / np.linalg.norm(up)
    side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    front = np.cross(side, up)
    poses = []
    elevation = math.radians(elevation_deg)
    for k in range(views):
        azimuth = 2 * math.pi * k / views
        direction = (
            math.cos(elevation) * (math.cos(azimuth) * front + math.sin(azimuth) * side) + math.sin(elevation) * up
        )
        eye = center + distance * direction
        z = (eye - center) / np.linalg.norm(eye - center)  # the camera looks down -z
        x = np.cross(up, z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        pose = np.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
        poses.append(pose)
    return np.stack(poses)


def capture_up(capture: Capture) -> np.ndarray:
    """World 'up' of a capture: the mean of its cameras' up axes (object-centred captures keep them upright)."""
    up = np.mean([f.c2w[:3, 1] for f in capture.frames], axis=0)
    norm = float(np.linalg.norm(up))
    return up / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])


# --------------------------------------------------------------------------------------------------
# Rendering


@dataclass
class MeshTensors:
    """A textured mesh as the renderer takes it: welded geometry, UVs per face corner.

    A textured mesh file splits its vertices wherever UVs are cut (every vertex, in the per-face
    atlas). The geometry is welded again here, because the renderers' antialiasing finds silhouette
    edges from the triangles' shared vertices: on split vertices every edge looked like a silhouette
    and was blended as one. Measured on spot (CPU, the ground-truth mesh at 5.9k faces, a 640² texture,
    held-out PSNR): the per-face atlas 31.9 -> 36.6 dB, xatlas 36.2 -> 36.6; the error had been along
    the triangle edges. The high preset's meshes (60k faces) take the per-face atlas."""

    verts: torch.Tensor  # [V, 3] float32, welded
    faces: torch.Tensor  # [F, 3] int64 into verts
    uv: torch.Tensor  # [T, 2] float32, v up (OBJ convention)
    uv_faces: torch.Tensor  # [F, 3] int64 into uv
    texture: torch.Tensor  # [Ht, Wt, 3] float32 in [0, 1], row 0 = top of the image

    @classmethod
    def of(cls, mesh: trimesh.Trimesh, device: torch.device | str) -> MeshTensors:
        tex = np.asarray(texture_image(mesh), dtype=np.float32) / 255.0
        corners = np.asarray(mesh.faces, dtype=np.int64)
        welded, index = np.unique(np.asarray(mesh.vertices, dtype=np.float64), axis=0, return_inverse=True)
        return cls(
            verts=torch.as_tensor(welded, dtype=torch.float32, device=device),
            faces=torch.as_tensor(index.ravel()[corners], dtype=torch.int64, device=device),
            uv=torch.as_tensor(uv_of(mesh), dtype=torch.float32, device=device),
            uv_faces=torch.as_tensor(corners, dtype=torch.int64, device=device),
            texture=torch.as_tensor(tex, device=device),
        )


def render_views(
    renderer: Renderer, mesh: MeshTensors, intrinsics: Intrinsics, poses: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """RGB over white [N, H, W, 3] and coverage [N, H, W] of `mesh` seen from `poses` [N, 4, 4]."""
    rgb, alpha = render_on_device(renderer, mesh, intrinsics, poses)
    return rgb.cpu().numpy(), alpha.cpu().numpy()


def render_on_device(
    renderer: Renderer, mesh: MeshTensors, intrinsics: Intrinsics, poses: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """`render_views`, left on the renderer's device as tensors."""
    rgbs, alphas = [], []
    with torch.no_grad():
        for start in range(0, len(poses), _RENDER_BATCH):
            cameras = make_cameras(intrinsics, poses[start : start + _RENDER_BATCH], device=renderer.device)
            out = render_mesh(
                renderer, mesh.verts, mesh.faces, cameras, uv=mesh.uv, uv_faces=mesh.uv_faces, texture=mesh.texture
            )
            rgbs.append(out.rgb.clamp(0, 1))
            alphas.append(out.alpha[..., 0])
    if not rgbs:
        empty = (0, intrinsics.height, intrinsics.width)
        return torch.zeros((*empty, 3), device=renderer.device), torch.zeros(empty, device=renderer.device)
    return torch.cat(rgbs), torch.cat(alphas)


def compare_views(
    renderer: Renderer,
    tensors: MeshTensors,
    capture: Capture,
    previews: Path,
    prefix: str,
    check_cancelled: Callable[[], None] = lambda: None,
) -> tuple[Split, list[ViewMetrics]]:
    """Render `tensors` at `capture`'s held-out views (its training views when it has none) and compare;
    the first COMPARISONS views are saved as `<prefix>_NN.png` (capture | render | error)."""
    split: Split = "test" if capture.indices("test") else "train"
    indices = capture.indices(split)
    views: list[ViewMetrics] = []
    if not indices:
        return split, views
    compared = np.linspace(0, len(indices) - 1, min(COMPARISONS, len(indices))).round().astype(int).tolist()
    poses = capture.poses(split)
    # Streamed a batch at a time: memory holds one batch of views, whatever their number.
    # Figures are computed on the renderer's device; only the compared views come back as pictures.
    loaded = prefetched_views(capture, indices, _RENDER_BATCH)
    for start, stored in zip(range(0, len(indices), _RENDER_BATCH), loaded, strict=True):
        chunk = indices[start : start + _RENDER_BATCH]
        rgb_t, alpha_t = render_on_device(renderer, tensors, capture.intrinsics, poses[start : start + _RENDER_BATCH])
        check_cancelled()
        names = [capture.frames[i].image for i in chunk]
        views += view_metrics(names, rgb_t, alpha_t, stored, device=str(renderer.device))
        for b in range(len(chunk)):
            if start + b in compared:
                target = over_white(stored[b].astype(np.float32) / 255.0)
                rgb = rgb_t[b].cpu().numpy()
                error = error_map(rgb, target).astype(np.float32) / 255.0
                strip = np.concatenate([target, rgb, error], axis=1)
                name = f"{prefix}_{compared.index(start + b):02d}.png"
                to_png(strip).save(previews / name, compress_level=1)
    return split, views


def reference_metrics(
    renderer: Renderer,
    tensors: MeshTensors,
    capture: Capture,
    reference: Capture,
    previews: Path,
    check_cancelled: Callable[[], None] = lambda: None,
) -> ReferenceMetrics:
    """The mesh, moved into the reference's world by the similarity of the cameras both captures have,
    compared with the reference's held-out views (`engine.reference`)."""
    similarity = align_to_reference(capture, reference)
    moved = similarity.apply(tensors.verts.double().cpu().numpy())
    aligned = dataclasses.replace(tensors, verts=torch.as_tensor(moved, dtype=torch.float32, device=renderer.device))
    split, views = compare_views(renderer, aligned, reference, previews, "reference", check_cancelled)
    mean = lambda values: float(np.mean(values)) if values else None  # noqa: E731
    return ReferenceMetrics(
        psnr=mean([v.psnr for v in views]),
        ssim=mean([v.ssim for v in views]),
        mask_iou=mean([v.mask_iou for v in views]),
        view_split=split,
        matched_frames=similarity.matched,
        scale=similarity.scale,
        centre_error=similarity.pose_error.centre_rms,
        rotation_error_deg=similarity.pose_error.rotation_deg,
        views=views,
    )


def prefetched_views(capture: Capture, indices: list[int], batch: int) -> Iterator[np.ndarray]:
    """[B, H, W, 4] uint8 views of `indices`, a batch at a time, decoded by a few threads ahead of use.

    PNG decoding releases the GIL, so threads overlap it with the GPU work; at most two batches are
    decoded ahead (memory: three batches of views, whatever their number).
    """
    workers = max(1, min(_DECODE_THREADS, os.cpu_count() or 1))
    chunks = [indices[start : start + batch] for start in range(0, len(indices), batch)]
    with ThreadPoolExecutor(workers) as pool:
        pending = [[pool.submit(capture.load_view, i) for i in chunk] for chunk in chunks[:2]]
        for k in range(len(chunks)):
            if k + 2 < len(chunks):
                pending.append([pool.submit(capture.load_view, i) for i in chunks[k + 2]])
            yield np.stack([future.result() for future in pending[k]])
            pending[k] = []


def to_png(image: np.ndarray) -> Image.Image:
    """[H, W, 3] float in [0, 1] -> 8-bit RGB image."""
    return Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def decimation_notes(workdir: Path) -> list[str]:
    """What refine's and texture's decimations did (from their info.json), for the report's repairs list."""
    notes = []
    for stage in ("refine", "texture"):
        info = workdir / stage / "info.json"
        if not info.exists():
            continue
        decimation = json.loads(info.read_text()).get("decimation") or {}
        if decimation.get("method") not in (None, "none"):
            notes.append(f"{stage} decimation ({decimation['method']}): " + "; ".join(decimation.get("notes", [])))
    return notes


def ground_truth_visibility(
    renderer: Renderer, capture: Capture, ground_truth: trimesh.Trimesh
) -> Callable[[np.ndarray], np.ndarray]:
    """A function telling which points of `ground_truth`'s surface at least one training view sees.

    Depth maps of the ground truth from up to VISIBILITY_VIEWS training views (evenly spread), at
    VISIBILITY_SIDE; a point is seen when it projects inside a view no farther than that view's
    depth plus a tolerance (the F-score threshold plus two pixels' footprint at its depth).
    """
    kind = "cuda" if renderer.device.type == "cuda" else "cpu"
    indices = capture.indices("train")
    chosen = np.linspace(0, len(indices) - 1, min(VISIBILITY_VIEWS[kind], len(indices))).round().astype(int)
    intrinsics = scaled_intrinsics(capture.intrinsics, VISIBILITY_SIDE[kind])
    poses = capture.poses("train")[np.unique(chosen)]
    device = renderer.device
    verts = torch.as_tensor(np.asarray(ground_truth.vertices), dtype=torch.float32, device=device)
    faces = torch.as_tensor(np.asarray(ground_truth.faces), dtype=torch.int32, device=device)
    diagonal = float(np.linalg.norm(ground_truth.bounds[1] - ground_truth.bounds[0]))
    tolerance = FSCORE_THRESHOLD * diagonal
    pixel = 2.0 / max(intrinsics.fx, intrinsics.fy)  # two pixels' footprint per unit of depth

    def visible(points: np.ndarray) -> np.ndarray:
        query = torch.as_tensor(points, dtype=torch.float32, device=device)
        seen = torch.zeros(len(points), dtype=torch.bool, device=device)
        with torch.no_grad():
            for start in range(0, len(poses), _RENDER_BATCH):
                cams = make_cameras(intrinsics, poses[start : start + _RENDER_BATCH], device=device)
                pos_clip = cams.to_clip(verts)
                raster = renderer.rasterize(pos_clip, faces, cams.resolution)
                depth_map = renderer.interpolate(pos_clip[..., 3:4].contiguous(), raster, faces)
                depth_map = torch.where(raster.mask, depth_map, torch.full_like(depth_map, math.inf))
                clip = cams.to_clip(query)  # [B, P, 4]
                depth = clip[..., 3]
                grid = (clip[..., :2] / clip[..., 3:4].clamp(min=1e-6))[:, :, None]  # [B, P, 1, 2]
                nearest = F.grid_sample(depth_map.permute(0, 3, 1, 2), grid, mode="nearest", align_corners=False)
                inside = (grid[:, :, 0].abs() <= 1).all(-1) & (depth > 0)
                front = depth <= nearest[:, 0, :, 0] + tolerance + pixel * depth
                seen |= (inside & front).any(dim=0)
        return seen.cpu().numpy()

    return visible


# --------------------------------------------------------------------------------------------------
# The stage


def run_validate(ctx: StageContext) -> QualityMetrics:
    out_dir = ctx.stage_dir("validate")
    previews = out_dir / "previews"
    previews.mkdir(exist_ok=True)
    capture = ctx.capture

    clock = StepClock()

    textured = load_textured_mesh(ctx.workdir / "texture")
    texture_image(textured)  # fails early, naming what is missing
    mesh, repairs = repair_mesh(textured)
    bound = ctx.settings.export.target_faces
    notes = [f"{len(mesh.faces)} faces exceed targetFaces {bound}"] if len(mesh.faces) > bound else []
    notes += decimation_notes(ctx.workdir)
    checks = check_mesh(mesh, repairs=repairs + notes)
    ctx.log.info("validate: %d faces, %s", checks.faces, "; ".join(checks.problems()) or "valid")
    clock.lap("load, repair and check")
    shutil.rmtree(out_dir / "mesh", ignore_errors=True)  # a resumed run's older files must not be read
    if repairs:
        write_stage_mesh(out_dir / "mesh", mesh, texture_image(mesh))  # read back by export only
    else:
        # Nothing repaired: the texture stage's files are the validated mesh (re-encoding its mesh and
        # PNG cost 0.7-0.9 s of validate's 3-3.8 s at 20k faces on the H200).
        (out_dir / "mesh").mkdir(exist_ok=True)
        for name in FILES:
            shutil.copyfile(ctx.workdir / "texture" / name, out_dir / "mesh" / name)
    clock.lap("write mesh")
    ctx.progress(0.2)

    renderer = get_renderer(ctx.device, ctx.renderer)
    tensors = MeshTensors.of(mesh, renderer.device)
    split, views = compare_views(renderer, tensors, capture, previews, "heldout", ctx.check_cancelled)
    clock.lap("held-out views")
    ctx.progress(0.6)

    geometry = None
    if capture.ground_truth is not None:
        truth = load_mesh(capture.ground_truth)
        visible = ground_truth_visibility(renderer, capture, truth) if capture.indices("train") else None
        geometry = geometry_metrics(mesh, truth, device=str(renderer.device), visible=visible)
    clock.lap("geometry against the ground truth")
    reference = None
    if (folder := find_reference(capture.root)) is not None:
        reference = reference_metrics(renderer, tensors, capture, load_reference(folder), previews, ctx.check_cancelled)
        ctx.log.info(
            "validate: against %s/ (%d frames aligned, scale %.4g): PSNR %.2f dB, mask IoU %.4f",
            REFERENCE_FOLDER,
            reference.matched_frames,
            reference.scale,
            reference.psnr or float("nan"),
            reference.mask_iou or float("nan"),
        )
    clock.lap("reference views")
    ctx.progress(0.8)

    center = mesh.bounds.mean(axis=0)
    distance = float(np.mean([np.linalg.norm(f.c2w[:3, 3] - center) for f in capture.frames]))
    poses = turntable_poses(center, distance, capture_up(capture), TURNTABLE_VIEWS, TURNTABLE_ELEVATION_DEG)
    side = PREVIEW_SIDE["cuda" if renderer.device.type == "cuda" else "cpu"]
    turntable, _ = render_views(renderer, tensors, scaled_intrinsics(capture.intrinsics, side), poses)
    for k, image in enumerate(turntable):
        to_png(image).save(previews / f"turntable_{k:02d}.png", compress_level=1)
    clock.lap("turntable")

    mean = lambda values: float(np.mean(values)) if values else None  # noqa: E731
    psnr, mask_iou = mean([v.psnr for v in views]), mean([v.mask_iou for v in views])
    metrics = QualityMetrics(
        psnr=psnr,
        ssim=mean([v.ssim for v in views]),
        mask_iou=mask_iou,
        chamfer_l1=geometry.chamfer_l1 if geometry else None,
        fscore=geometry.fscore if geometry else None,
        normal_consistency=geometry.normal_consistency if geometry else None,
        faces=checks.faces,
        vertices=checks.vertices,
        watertight=checks.watertight,
        manifold=checks.manifold,
        renderer=renderer.name,
        view_split=split,
        checks=checks,
        gates=evaluate_gates(ctx.gates, psnr, mask_iou, checks, bool(views)),
        views=views,
        geometry=geometry,
        reference=reference,
    )
    (out_dir / "metrics.json").write_text(metrics.model_dump_json(by_alias=True, indent=2))
    (out_dir / "info.json").write_text(json.dumps({"renderer": renderer.name, "stepSeconds": clock.seconds}, indent=2))
    ctx.progress(1.0)
    return metrics
