"""A capture of several separate objects keeps all of them, valid, through every stage after refine.

The scene: a cup, a torus and a ball side by side (a tea set in miniature). Before issue 10's fix the
validate stage's repair kept the largest piece only and validity demanded one component, so the
exported mesh was the cup alone (mask IoU about 0.5 here, as the tea set's 0.27 on the H200).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from recon_worker.capture import load_capture
from recon_worker.engine.decimation import decimate
from recon_worker.engine.export import load_mesh
from recon_worker.engine.meshcheck import check_mesh
from recon_worker.engine.reconstruct import get_reconstructor
from recon_worker.engine.reconstruct.views import SilhouetteViews
from recon_worker.engine.refine import REFINED_MESH
from recon_worker.engine.texture import run_texture
from recon_worker.engine.validate import run_validate
from recon_worker.presets import resolve_quality
from recon_worker.stage import StageContext
from recon_worker.task import Gates
from tests.unit.engine.hard_shapes import cup_mesh, textured_scene, torus_mesh, write_capture

pytestmark = pytest.mark.slow


def three_objects() -> trimesh.Trimesh:
    cup = cup_mesh(24)
    cup.apply_scale(1 / 1.4)
    torus = torus_mesh().apply_scale(0.5).apply_translation((1.6, 0.3, 0.0))
    ball = trimesh.creation.icosphere(3, radius=0.35).apply_translation((-0.2, 0.3, 1.5))
    return trimesh.util.concatenate([cup, torus, ball])


@pytest.fixture(scope="module")
def scene_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_capture(tmp_path_factory.mktemp("scene"), textured_scene(three_objects()), views=24, size=72)


def test_every_object_is_reconstructed_decimated_textured_and_validated(scene_capture: Path, tmp_path: Path) -> None:
    capture = load_capture(scene_capture)
    coarse = get_reconstructor("visual-hull")(SilhouetteViews.from_capture(capture, "cpu"), 56)
    assert check_mesh(coarse).components == 3

    decimation = decimate(coarse, 1500, what="the coarse mesh")
    checks = check_mesh(decimation.mesh)
    assert checks.valid and checks.components == 3 and checks.faces <= 1500, checks.problems()

    # The texture and validate stages on the decimated hull (refine only moves vertices).
    (tmp_path / "refine").mkdir()
    decimation.mesh.export(tmp_path / "refine" / REFINED_MESH)
    ctx = StageContext(
        capture=capture,
        settings=resolve_quality("draft", {"refinement": {"textureSize": 256}, "export": {"targetFaces": 1200}}),
        gates=Gates(min_mask_iou=0.9, enforce=True),
        workdir=tmp_path,
        device="cpu",
        renderer="pytorch3d",
        export_formats=("obj",),
    )
    run_texture(ctx)
    metrics = run_validate(ctx)
    assert metrics.checks.valid and metrics.checks.components == 3, metrics.checks.problems()
    assert metrics.faces <= 1200 and metrics.watertight and metrics.manifold
    assert metrics.mask_iou is not None and metrics.mask_iou > 0.9, metrics.mask_iou  # measured 0.95
    assert metrics.gates.passed, metrics.gates.failures
    # Every object is where the ground truth has it: each of its pieces is near the result.
    truth = load_mesh(scene_capture / "ground_truth.obj")
    result = load_mesh(tmp_path / "validate" / "mesh" / "mesh.obj")
    tree = cKDTree(trimesh.sample.sample_surface(result, 20_000, seed=0)[0])
    for piece in truth.split(only_watertight=False):
        near, _ = tree.query(piece.vertices)
        assert np.median(near) < 0.05 * float(np.linalg.norm(truth.extents)), np.median(near)
