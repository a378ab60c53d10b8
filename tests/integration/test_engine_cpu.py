"""The whole engine on the CPU: synthesize a draft capture of spot, run reconstruct -> export, check the result.

This is the CPU path that CI exercises (PyTorch3D rasterizer, draft preset). Quality bounds are a little
looser than the draft target (24 dB); nothing here is timed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trimesh

from recon_worker.capture import load_capture
from recon_worker.engine import stages
from recon_worker.engine.metrics import QualityMetrics
from recon_worker.engine.report import Report
from recon_worker.engine.synth import SynthOptions, synthesize
from recon_worker.pipeline import ENGINE_STAGES
from recon_worker.presets import resolve_quality
from recon_worker.stage import StageContext
from recon_worker.task import Gates
from tests.conftest import MESHES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Workdir of one CPU run of the five engine stages on a 24 + 3 view, 128^2 capture of spot."""
    capture_dir = tmp_path_factory.mktemp("capture")
    synthesize(MESHES / "spot" / "spot.obj", capture_dir, SynthOptions(views=24, test_views=3, resolution=128))
    workdir = tmp_path_factory.mktemp("work")
    ctx = StageContext(
        capture=load_capture(capture_dir),
        settings=resolve_quality("draft"),
        gates=Gates(min_psnr=22, min_mask_iou=0.9),
        workdir=workdir,
        device="cpu",
        renderer="pytorch3d",
        export_formats=("glb", "obj", "ply"),
    )
    for stage in ENGINE_STAGES:  # fetch and publish belong to the runtime
        getattr(stages, stage)(ctx)
        ctx.stage_seconds[stage] = 1.0  # placeholder timings: this test measures quality, not speed
    return workdir


def test_cpu_draft_result_is_valid_and_good_enough(engine_run: Path) -> None:
    metrics = QualityMetrics.model_validate_json((engine_run / "validate" / "metrics.json").read_text())
    assert metrics.watertight and metrics.manifold, metrics.checks.problems()
    assert metrics.checks.components == 1 and metrics.checks.inconsistent_edges == 0
    assert metrics.faces <= resolve_quality("draft").export.target_faces
    assert metrics.renderer == "pytorch3d" and metrics.view_split == "test" and len(metrics.views) == 3
    assert metrics.psnr is not None and metrics.psnr >= 22.0, metrics.views
    assert metrics.mask_iou is not None and metrics.mask_iou >= 0.9, metrics.views
    assert metrics.chamfer_l1 is not None and metrics.fscore is not None  # synth writes the ground truth
    assert metrics.gates.passed, metrics.gates.failures


def test_cpu_draft_export_is_complete(engine_run: Path) -> None:
    out = engine_run / "export"
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"mesh.glb", "mesh.obj", "mesh.mtl", "texture.png", "mesh.ply", "report.json", "report.html"} <= names
    assert {f"previews/turntable_{i:02d}.png" for i in range(8)} <= names
    glb = trimesh.load(out / "mesh.glb", force="mesh", process=False)
    assert glb.visual.uv is not None and glb.visual.material.baseColorTexture is not None
    report = Report.model_validate_json((out / "report.json").read_text())
    assert report.metrics.faces == len(glb.faces)
    # export times itself until the report is written (report.html cannot time the publish after it)
    assert set(report.stage_seconds) == {"reconstruct", "refine", "texture", "validate", "export"}
    assert json.loads((out / "report.json").read_text())["software"]["pytorch3d"]
