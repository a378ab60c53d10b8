"""The validate and export stages on a tiny capture rendered from the spot mesh itself (CPU, PyTorch3D).

The capture's views are unlit renders of spot by the engine's own renderer, so a correct validate
stage must find the mesh it is given (spot, unchanged) nearly perfect: this pins down that cameras,
image rows, UVs and the white background all line up between capture, rendering and metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from recon_worker.capture import load_capture
from recon_worker.engine.cameras import make_cameras
from recon_worker.engine.export import load_result_mesh, run_export, texture_image
from recon_worker.engine.meshcheck import check_mesh
from recon_worker.engine.metrics import QualityMetrics
from recon_worker.engine.render import get_renderer
from recon_worker.engine.rendering import render_mesh
from recon_worker.engine.report import Report
from recon_worker.engine.stagemesh import write_stage_mesh
from recon_worker.engine.synth import fibonacci_sphere, look_at
from recon_worker.engine.validate import (
    MeshTensors,
    evaluate_gates,
    run_validate,
    turntable_poses,
)
from recon_worker.presets import resolve_quality
from recon_worker.stage import StageContext
from recon_worker.task import Gates
from tests.conftest import MESHES

SIZE = 64
CAMERA_ANGLE_X = 0.69


def write_capture(root: Path, mesh: trimesh.Trimesh, train: int = 4, test: int = 3) -> None:
    """A NeRF-synthetic capture of `mesh` (unlit texture, straight alpha) with spot as ground truth."""
    renderer = get_renderer("cpu", "pytorch3d")
    tensors = MeshTensors.of(mesh, "cpu")
    focal = 0.5 * SIZE / np.tan(0.5 * CAMERA_ANGLE_X)
    from recon_worker.capture import Intrinsics

    intrinsics = Intrinsics(focal, focal, SIZE / 2, SIZE / 2, SIZE, SIZE)
    for split, count, offset in (("train", train, 0.0), ("test", test, 0.37)):
        (root / split).mkdir(parents=True)
        poses = np.stack([look_at(p * 3.0) for p in fibonacci_sphere(count, offset)])
        with torch.no_grad():
            out = render_mesh(
                renderer, tensors.verts, tensors.faces, make_cameras(intrinsics, poses), uv=tensors.uv,
                uv_faces=tensors.uv_faces, texture=tensors.texture, background=(0.0, 0.0, 0.0),
            )  # fmt: skip
        alpha = out.alpha.clamp(0, 1)
        # Straight alpha: un-premultiply the colour composited over black.
        rgb = torch.where(alpha > 0, out.rgb / alpha.clamp_min(1e-6), torch.zeros_like(out.rgb)).clamp(0, 1)
        frames = []
        for i, rgba in enumerate(torch.cat([rgb, alpha], dim=-1).numpy()):
            Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA").save(root / split / f"r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": poses[i].tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}))
    trimesh.Trimesh(mesh.vertices, mesh.faces).export(root / "ground_truth.obj")


@pytest.fixture(scope="module")
def spot() -> trimesh.Trimesh:
    return load_result_mesh(MESHES / "spot")


@pytest.fixture(scope="module")
def capture_dir(spot: trimesh.Trimesh, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("capture")
    write_capture(root, spot)
    return root


def stage_context(
    capture_dir: Path, workdir: Path, gates: Gates, formats: tuple[str, ...], device: str = "cpu"
) -> StageContext:
    # What the texture stage leaves (engine.stagemesh): spot's mesh and texture.
    spot = load_result_mesh(MESHES / "spot")
    write_stage_mesh(workdir / "texture", spot, texture_image(spot))
    return StageContext(
        capture=load_capture(capture_dir),
        settings=resolve_quality("draft"),
        gates=gates,
        workdir=workdir,
        device=device,
        renderer="auto",  # PyTorch3D on the CPU, nvdiffrast on CUDA
        export_formats=formats,
        stage_seconds={"fetch": 0.1, "reconstruct": 1.0, "refine": 2.0, "texture": 0.5, "validate": 3.0},
        resumed_stages=["reconstruct"],
    )


CUDA = pytest.param(
    "cuda",
    marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_validate_and_export_a_perfect_mesh(capture_dir: Path, tmp_path: Path, device: str) -> None:
    gates = Gates(min_psnr=30, min_mask_iou=0.95, enforce=True)
    ctx = stage_context(capture_dir, tmp_path, gates, ("glb", "obj", "ply"), device)
    metrics = run_validate(ctx)

    assert metrics.view_split == "test" and len(metrics.views) == 3
    assert metrics.psnr is not None and metrics.psnr > 35, metrics.views
    assert metrics.mask_iou is not None and metrics.mask_iou > 0.98
    assert metrics.ssim is not None and metrics.ssim > 0.97
    assert metrics.chamfer_l1 is not None and metrics.chamfer_l1 < 1e-3 and metrics.fscore == 1.0
    assert metrics.watertight and metrics.manifold and metrics.checks.valid
    assert metrics.faces == 5856 and metrics.renderer == ("nvdiffrast" if device == "cuda" else "pytorch3d")
    assert metrics.gates.passed and metrics.gates.enforced and metrics.gates.failures == []

    on_disk = json.loads((tmp_path / "validate" / "metrics.json").read_text())
    assert {"psnr", "ssim", "maskIoU", "chamferL1", "fScore", "normalConsistency", "faces", "vertices"} <= set(on_disk)
    assert {"watertight", "manifold", "checks", "gates"} <= set(on_disk)
    assert QualityMetrics.model_validate(on_disk) == metrics
    previews = sorted(p.name for p in (tmp_path / "validate" / "previews").iterdir())
    assert previews == [f"heldout_{i:02d}.png" for i in range(3)] + [f"turntable_{i:02d}.png" for i in range(8)]
    # Every turntable view shows the object, centred.
    for name in previews[3:]:
        image = np.asarray(Image.open(tmp_path / "validate" / "previews" / name))
        ys, xs = np.nonzero(image.min(axis=-1) < 250)
        assert len(ys) > 0.05 * image.shape[0] * image.shape[1]
        assert abs(xs.mean() / image.shape[1] - 0.5) < 0.15 and abs(ys.mean() / image.shape[0] - 0.5) < 0.15

    written = run_export(ctx)
    out = tmp_path / "export"
    assert {p.relative_to(out).as_posix() for p in written} >= {
        "mesh.glb", "mesh.obj", "mesh.mtl", "texture.png", "mesh.ply", "report.json", "report.html",
        "previews/turntable_00.png", "previews/heldout_00.png",
    }  # fmt: skip
    report = Report.model_validate_json((out / "report.json").read_text())
    assert report.metrics == metrics and report.renderer == metrics.renderer and report.device == device
    # The report times export too (until the report is written), on top of the earlier stages' 6.6 s.
    assert report.stage_seconds["refine"] == 2.0 and report.stage_seconds["export"] >= 0
    assert report.total_seconds == pytest.approx(6.6 + report.stage_seconds["export"])
    assert report.resumed_stages == ["reconstruct"]
    export_steps = report.stage_details["export"]["stepSeconds"]
    assert list(export_steps) == ["load", "meshes", "previews", "GPU telemetry"]
    assert sum(export_steps.values()) <= report.stage_seconds["export"] + 1e-3
    assert next(iter(report.stage_details["validate"]["stepSeconds"])) == "load, repair and check"
    assert (report.gpu.name is None) == (device == "cpu")
    if device == "cuda":
        assert report.gpu.peak_memory_allocated_gb is not None and report.gpu.peak_memory_allocated_gb > 0
    assert report.software["torch"] and report.software["pytorch3d"] and report.software["trimesh"]
    assert report.capture.test_views == 3 and report.capture.ground_truth
    glb = trimesh.load(out / "mesh.glb", force="mesh", process=False)
    assert len(glb.faces) == 5856 and glb.visual.uv is not None
    assert check_mesh(glb).valid


def test_failed_gates_are_recorded_and_reported_not_raised(capture_dir: Path, tmp_path: Path) -> None:
    # A validate stage that judged a gate failed (not enforced): export still writes, the report says so.
    ctx = stage_context(capture_dir, tmp_path, Gates(min_psnr=99), ("glb",))
    spot = load_result_mesh(tmp_path / "texture")
    write_stage_mesh(tmp_path / "validate" / "mesh", spot, texture_image(spot))
    checks = check_mesh(spot)
    gates = evaluate_gates(ctx.gates, 40.0, 0.99, checks, True)
    assert not gates.passed and not gates.enforced
    assert gates.failures == ["PSNR 40.00 dB is below the gate minPSNR 99 dB"]
    metrics = QualityMetrics(
        psnr=40.0, ssim=0.99, mask_iou=0.99, faces=checks.faces, vertices=checks.vertices, watertight=True,
        manifold=True, renderer="pytorch3d", checks=checks, gates=gates,
    )  # fmt: skip
    (tmp_path / "validate" / "metrics.json").write_text(metrics.model_dump_json(by_alias=True))
    run_export(ctx)
    page = (tmp_path / "export" / "report.html").read_text()
    assert "quality gates failed" in page and "below the gate minPSNR 99 dB" in page
    assert sorted(p.name for p in (tmp_path / "export").glob("mesh.*")) == ["mesh.glb"]


def test_gates_name_the_figure_and_the_bound() -> None:
    valid = check_mesh(trimesh.creation.box())
    gates = Gates(min_psnr=30, min_mask_iou=0.9)
    assert evaluate_gates(gates, 31.0, 0.95, valid, True).passed
    failed = evaluate_gates(gates, 28.5, 0.85, valid, True)
    assert failed.failures == [
        "PSNR 28.50 dB is below the gate minPSNR 30 dB",
        "mask IoU 0.8500 is below the gate minMaskIoU 0.9",
    ]
    holed = trimesh.creation.box()
    holed.update_faces(np.arange(1, 12))
    broken = evaluate_gates(Gates(), None, None, check_mesh(holed), False)
    assert broken.failures == ["the mesh is not watertight and manifold: 3 boundary edges (holes)"]
    assert evaluate_gates(Gates(require_watertight=False), None, None, check_mesh(holed), False).passed
    unmeasured = evaluate_gates(Gates(min_psnr=20), None, None, valid, False)
    assert "PSNR could not be measured" in unmeasured.failures[0]


def test_turntable_cameras_look_at_the_centre_from_the_given_distance() -> None:
    center = np.array([0.5, -1.0, 2.0])
    poses = turntable_poses(center, 3.0, np.array([0.0, 1.0, 0.0]), 8, 20.0)
    assert poses.shape == (8, 4, 4)
    for pose in poses:
        eye = pose[:3, 3]
        assert np.linalg.norm(eye - center) == pytest.approx(3.0)
        forward = -pose[:3, 2]  # OpenGL: the camera looks down -Z
        assert np.allclose(forward, (center - eye) / 3.0)
        assert np.allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3))
        assert pose[:3, 1][1] > 0.9  # upright


def test_decimation_fallbacks_reach_the_reported_repairs(tmp_path: Path) -> None:
    import json

    from recon_worker.engine.validate import decimation_notes

    (tmp_path / "refine").mkdir()
    (tmp_path / "texture").mkdir()
    fallback = {"method": "remesh", "notes": ["quadric decimation of the coarse mesh to 20000 faces failed (x)"]}
    (tmp_path / "refine" / "info.json").write_text(json.dumps({"decimation": fallback}))
    (tmp_path / "texture" / "info.json").write_text(json.dumps({"decimation": {"method": "none", "notes": []}}))
    assert decimation_notes(tmp_path) == [
        "refine decimation (remesh): quadric decimation of the coarse mesh to 20000 faces failed (x)"
    ]


def test_prefetched_views_arrive_in_order_a_batch_at_a_time(capture_dir: Path) -> None:
    from recon_worker.engine.validate import prefetched_views

    capture = load_capture(capture_dir)
    indices = capture.indices("train") + capture.indices("test")  # 7 views: batches of 3, 3, 1
    batches = list(prefetched_views(capture, indices, 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    expected = np.stack([capture.load_view(i) for i in indices])
    np.testing.assert_array_equal(np.concatenate(batches), expected)


def test_a_mesh_split_along_every_uv_seam_renders_like_the_welded_mesh(tmp_path: Path) -> None:
    # The per-face atlas splits every vertex. Rendered as split, every triangle edge looked like a
    # silhouette to the antialiasing and was blended as one (spot lost 4.7 dB of held-out PSNR that way).
    from recon_worker.capture import Intrinsics
    from recon_worker.engine.texture import face_atlas, load_textured_mesh, write_textured_mesh

    color = np.array([0.8, 0.3, 0.2])
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    write_textured_mesh(tmp_path, face_atlas(sphere, 128), np.broadcast_to(color, (128, 128, 3)).copy())
    tensors = MeshTensors.of(load_textured_mesh(tmp_path), "cpu")
    assert len(tensors.verts) == len(sphere.vertices)  # welded again; the UVs stay per face corner
    assert len(tensors.uv) == 3 * len(sphere.faces)

    renderer = get_renderer("cpu", "pytorch3d")
    focal = 0.5 * SIZE / np.tan(0.5 * CAMERA_ANGLE_X)
    cameras = make_cameras(
        Intrinsics(focal, focal, SIZE / 2, SIZE / 2, SIZE, SIZE),
        np.stack([look_at(p * 2.0) for p in fibonacci_sphere(3, 0.2)]),
    )
    with torch.no_grad():
        textured = render_mesh(
            renderer, tensors.verts, tensors.faces, cameras, uv=tensors.uv, uv_faces=tensors.uv_faces,
            texture=tensors.texture,
        )  # fmt: skip
        plain = render_mesh(
            renderer, torch.as_tensor(sphere.vertices, dtype=torch.float32), torch.as_tensor(sphere.faces), cameras,
            vertex_colors=torch.as_tensor(np.broadcast_to(color, sphere.vertices.shape).copy(), dtype=torch.float32),
        )  # fmt: skip
    assert torch.allclose(textured.alpha, plain.alpha, atol=1e-4)
    assert float((textured.rgb - plain.rgb).abs().max()) < 0.01  # the texture is 8-bit
