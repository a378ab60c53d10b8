"""The validate stage: is the textured mesh sound, how well does it explain the views it never saw?

Steps: load `texture/` (already decimated to `targetFaces` by the texture stage, so every figure
describes the mesh that `export` writes) -> repair -> validity checks -> render the held-out views on
a white background and compare (PSNR, SSIM, mask IoU) -> geometric metrics against the ground truth
when the capture has one -> quality gates -> turntable previews.

Writes `validate/metrics.json` (`QualityMetrics`), `validate/mesh/` (the validated mesh: mesh.obj,
mesh.mtl, texture.png) and `validate/previews/*.png`. Gates are judged here and enforced by the
runtime before publishing (`recon_worker.publish.check_gates`), so a failed run still reports why.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from recon_worker.capture import Capture, Intrinsics, Split
from recon_worker.engine.cameras import make_cameras, scaled_intrinsics
from recon_worker.engine.export import load_mesh, texture_image, uv_of, write_obj
from recon_worker.engine.meshcheck import MeshChecks, check_mesh, repair_mesh
from recon_worker.engine.metrics import (
    GateResult,
    QualityMetrics,
    ViewMetrics,
    error_map,
    geometry_metrics,
    over_white,
    view_metrics,
)
from recon_worker.engine.render import Renderer, get_renderer
from recon_worker.engine.rendering import render_mesh
from recon_worker.engine.texture import load_textured_mesh
from recon_worker.stage import StageContext
from recon_worker.task import Gates

TURNTABLE_VIEWS = 8
TURNTABLE_ELEVATION_DEG = 20.0
# Longest side of turntable previews, pixels. PyTorch3D rasterizes naively on the CPU (cost ~ pixels x
# faces: ~4 s for one 384^2 view of 6k faces on two cores), so CPU previews are small.
PREVIEW_SIDE = {"cuda": 384, "cpu": 128}
COMPARISONS = 6  # held-out views saved as capture | render | error previews
_RENDER_BATCH = 4  # views per rasterizer call (bounds memory at 512^2 on the CPU)


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
    verts: torch.Tensor  # [V, 3] float32
    faces: torch.Tensor  # [F, 3] int64
    uv: torch.Tensor  # [V, 2] float32, v up (OBJ convention)
    texture: torch.Tensor  # [Ht, Wt, 3] float32 in [0, 1], row 0 = top of the image

    @classmethod
    def of(cls, mesh: trimesh.Trimesh, device: torch.device | str) -> MeshTensors:
        tex = np.asarray(texture_image(mesh), dtype=np.float32) / 255.0
        return cls(
            verts=torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device),
            faces=torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64, device=device),
            uv=torch.as_tensor(uv_of(mesh), dtype=torch.float32, device=device),
            texture=torch.as_tensor(tex, device=device),
        )


def render_views(
    renderer: Renderer, mesh: MeshTensors, intrinsics: Intrinsics, poses: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """RGB over white [N, H, W, 3] and coverage [N, H, W] of `mesh` seen from `poses` [N, 4, 4]."""
    rgbs, alphas = [], []
    with torch.no_grad():
        for start in range(0, len(poses), _RENDER_BATCH):
            cameras = make_cameras(intrinsics, poses[start : start + _RENDER_BATCH], device=renderer.device)
            out = render_mesh(renderer, mesh.verts, mesh.faces, cameras, uv=mesh.uv, texture=mesh.texture)
            rgbs.append(out.rgb.clamp(0, 1).cpu().numpy())
            alphas.append(out.alpha[..., 0].cpu().numpy())
    empty = (0, intrinsics.height, intrinsics.width)
    rgb = np.concatenate(rgbs) if rgbs else np.zeros((*empty, 3), np.float32)
    return rgb, np.concatenate(alphas) if alphas else np.zeros(empty, np.float32)


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


# --------------------------------------------------------------------------------------------------
# The stage


def run_validate(ctx: StageContext) -> QualityMetrics:
    out_dir = ctx.stage_dir("validate")
    previews = out_dir / "previews"
    previews.mkdir(exist_ok=True)
    capture = ctx.capture

    textured = load_textured_mesh(ctx.workdir / "texture")
    texture_image(textured)  # fails early, naming what is missing
    mesh, repairs = repair_mesh(textured)
    bound = ctx.settings.export.target_faces
    notes = [f"{len(mesh.faces)} faces exceed targetFaces {bound}"] if len(mesh.faces) > bound else []
    notes += decimation_notes(ctx.workdir)
    checks = check_mesh(mesh, repairs=repairs + notes)
    ctx.log.info("validate: %d faces, %s", checks.faces, "; ".join(checks.problems()) or "valid")
    write_obj(mesh, out_dir / "mesh", png_compression=1)  # read back by export only
    ctx.progress(0.2)

    renderer = get_renderer(ctx.device, ctx.renderer)
    tensors = MeshTensors.of(mesh, renderer.device)
    split: Split = "test" if capture.indices("test") else "train"
    indices = capture.indices(split)
    views: list[ViewMetrics] = []
    if indices:
        compared = np.linspace(0, len(indices) - 1, min(COMPARISONS, len(indices))).round().astype(int).tolist()
        poses = capture.poses(split)
        # Streamed a batch at a time: memory holds one batch of views, whatever their number.
        for start in range(0, len(indices), _RENDER_BATCH):
            chunk = indices[start : start + _RENDER_BATCH]
            captured = np.stack([capture.load_view(i) for i in chunk]).astype(np.float32) / 255.0  # [B, H, W, 4]
            rgb, alpha = render_views(renderer, tensors, capture.intrinsics, poses[start : start + _RENDER_BATCH])
            ctx.check_cancelled()
            names = [capture.frames[i].image for i in chunk]
            views += view_metrics(names, rgb, alpha, captured, device=str(renderer.device))
            for b in range(len(chunk)):
                if start + b in compared:
                    target = over_white(captured[b])
                    error = error_map(rgb[b], target).astype(np.float32) / 255.0
                    strip = np.concatenate([target, rgb[b], error], axis=1)
                    to_png(strip).save(previews / f"heldout_{compared.index(start + b):02d}.png")
    ctx.progress(0.6)

    geometry = None
    if capture.ground_truth is not None:
        geometry = geometry_metrics(mesh, load_mesh(capture.ground_truth), device=str(renderer.device))
    ctx.progress(0.8)

    center = mesh.bounds.mean(axis=0)
    distance = float(np.mean([np.linalg.norm(f.c2w[:3, 3] - center) for f in capture.frames]))
    poses = turntable_poses(center, distance, capture_up(capture), TURNTABLE_VIEWS, TURNTABLE_ELEVATION_DEG)
    side = PREVIEW_SIDE["cuda" if renderer.device.type == "cuda" else "cpu"]
    turntable, _ = render_views(renderer, tensors, scaled_intrinsics(capture.intrinsics, side), poses)
    for k, image in enumerate(turntable):
        to_png(image).save(previews / f"turntable_{k:02d}.png")

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
    )
    (out_dir / "metrics.json").write_text(metrics.model_dump_json(by_alias=True, indent=2))
    ctx.progress(1.0)
    return metrics
