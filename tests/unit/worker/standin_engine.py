"""A minimal engine for the runtime's tests: real files in the engine's file contract, at no cost.

The runtime (fetch, checkpoints, publish, status, cancellation) is tested against this module
(selected with RECON_ENGINE=tests.unit.worker.standin_engine) so that its tests take seconds; the real
engine is exercised by one end-to-end test and by the engine's own tests. Each stage writes what the
contract in `recon_worker/stage.py` asks for: a real triangle mesh (trimesh icosphere scaled to the
capture's silhouettes), a texture, `validate/metrics.json` from the mesh, and the export files.

Knobs (environment): RECON_STANDIN_STEP_SECONDS slows each refinement iteration (cancellation tests);
RECON_STANDIN_FAIL_GATE=1 makes the validate stage report a failed gate.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import trimesh
from PIL import Image

from recon_worker.stage import StageContext


def _load(ctx: StageContext, stage: str) -> trimesh.Trimesh:
    mesh = trimesh.load(ctx.workdir / stage / "mesh.ply", force="mesh")
    assert isinstance(mesh, trimesh.Trimesh)
    return mesh


def reconstruct(ctx: StageContext) -> None:
    # The silhouettes' mean coverage sets the radius: a sphere covering fraction c of an image whose
    # half-width spans tan(fov / 2) * d subtends r = sqrt(c / pi) * 2 * tan(fov / 2) * d / 2.
    alpha = ctx.capture.load_images("train")[..., 3]  # [N, H, W]
    coverage = float((alpha > 0.5).mean())
    half_fov = np.arctan(0.5 * ctx.capture.intrinsics.width / ctx.capture.intrinsics.fx)
    distance = float(np.linalg.norm(ctx.capture.poses("train")[:, :3, 3], axis=1).mean())
    radius = np.sqrt(coverage / np.pi) * 2 * np.tan(half_fov) * distance / 2
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=max(radius, 1e-3))
    ctx.progress(1.0)
    mesh.export(ctx.stage_dir("reconstruct") / "mesh.ply")


def refine(ctx: StageContext) -> None:
    mesh = _load(ctx, "reconstruct")
    steps = ctx.settings.refinement.iterations
    step_seconds = float(os.environ.get("RECON_STANDIN_STEP_SECONDS", "0"))
    for step in range(steps):
        ctx.check_cancelled()
        time.sleep(step_seconds)
        ctx.progress((step + 1) / steps)
    mesh.export(ctx.stage_dir("refine") / "mesh.ply")


def texture(ctx: StageContext) -> None:
    mesh = _load(ctx, "refine")
    images = ctx.capture.load_images("train")  # [N, H, W, 4]
    inside = images[..., 3] > 0.5
    colour = (images[..., :3][inside].mean(axis=0) * 255).astype(np.uint8)
    size = 64
    Image.new("RGB", (size, size), tuple(int(c) for c in colour)).save(ctx.stage_dir("texture") / "texture.png")
    mesh.export(ctx.stage_dir("texture") / "mesh.ply")


def validate(ctx: StageContext) -> None:
    mesh = _load(ctx, "texture")
    failures = []
    if ctx.gates.require_watertight and not mesh.is_watertight:
        failures.append("mesh is not watertight")
    if os.environ.get("RECON_STANDIN_FAIL_GATE"):
        failures.append(f"maskIoU 0.10 is below minMaskIoU {ctx.gates.min_mask_iou or 0.9}")
    metrics = {
        "faces": len(mesh.faces),
        "vertices": len(mesh.vertices),
        "watertight": bool(mesh.is_watertight),
        "manifold": bool(mesh.is_winding_consistent),
        "psnr": None,
        "ssim": None,
        "maskIoU": None,
        "chamferL1": None,
        "fScore": None,
        "gates": {"passed": not failures, "enforced": ctx.gates.enforce, "failures": failures},
    }
    (ctx.stage_dir("validate") / "metrics.json").write_text(json.dumps(metrics))


def export(ctx: StageContext) -> None:
    mesh = _load(ctx, "texture")
    out = ctx.stage_dir("export")
    (out / "previews").mkdir(exist_ok=True)
    for fmt in ("glb", "obj", "ply"):
        mesh.export(out / f"mesh.{fmt}")
    Image.open(ctx.workdir / "texture" / "texture.png").save(out / "texture.png")
    Image.open(ctx.workdir / "texture" / "texture.png").save(out / "previews" / "turntable_000.png")
    metrics = json.loads((ctx.workdir / "validate" / "metrics.json").read_text())
    report = {"metrics": metrics, "stageSeconds": ctx.stage_seconds, "resumedStages": ctx.resumed_stages}
    (out / "report.json").write_text(json.dumps(report))
    (out / "report.html").write_text(f"<html><body><pre>{json.dumps(report)}</pre></body></html>")
