"""Reference views: a mesh is judged by another capture's views after the similarity between the two rigs.

The reference is the capture itself in another world (turned, moved, scaled), as a rig posed by
structure from motion differs from the calibrated one: the aligned mesh must score there what it scores
on its own views, and a reference whose cameras disagree with the capture's must score worse.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from recon_worker.capture import REFERENCE_FOLDER, load_capture
from recon_worker.engine.export import load_result_mesh
from recon_worker.engine.reference import align_to_reference, frame_key, load_reference
from recon_worker.engine.validate import run_validate
from recon_worker.errors import InputsInvalid
from recon_worker.task import Gates
from tests.conftest import MESHES
from tests.unit.engine.test_validate import stage_context, write_capture

SCALE = 2.5
TURN = Rotation.from_euler("xyz", [30, -50, 100], degrees=True).as_matrix()
SHIFT = np.array([1.5, -0.7, 2.0])


def move_capture(root: Path, scale: float, turn: np.ndarray, shift: np.ndarray) -> None:
    """Rewrite the capture's poses into another world: x' = scale * turn @ x + shift (rotations stay rotations)."""
    for name in ("transforms_train.json", "transforms_test.json"):
        doc = json.loads((root / name).read_text())
        for frame in doc["frames"]:
            c2w = np.asarray(frame["transform_matrix"])
            c2w[:3, :3] = turn @ c2w[:3, :3]
            c2w[:3, 3] = scale * turn @ c2w[:3, 3] + shift
            frame["transform_matrix"] = c2w.tolist()
        (root / name).write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("capture")
    spot: trimesh.Trimesh = load_result_mesh(MESHES / "spot")
    write_capture(root, spot)
    (root / "ground_truth.obj").unlink()  # not needed here (and the reference has its own frame)
    shutil.copytree(root, root / REFERENCE_FOLDER, ignore=shutil.ignore_patterns(REFERENCE_FOLDER))
    move_capture(root / REFERENCE_FOLDER, SCALE, TURN, SHIFT)
    return root


def test_frames_match_by_path_without_extension_or_prepared_folder() -> None:
    assert frame_key("train/r_0.jpg") == frame_key("_prepared/train/r_0.png") == "train/r_0"
    assert frame_key("test/r_0.png") != frame_key("train/r_0.png")


def test_the_similarity_between_the_rigs_is_recovered(capture_dir: Path) -> None:
    similarity = align_to_reference(load_capture(capture_dir), load_reference(capture_dir / REFERENCE_FOLDER))
    assert similarity.matched == 7 and similarity.scale == pytest.approx(SCALE)
    assert np.allclose(similarity.rotation, TURN) and np.allclose(similarity.translation, SHIFT)
    assert similarity.pose_error.centre_rms < 1e-9 and similarity.pose_error.rotation_deg < 1e-4


def test_the_aligned_mesh_scores_on_the_reference_what_it_scores_on_its_own_views(
    capture_dir: Path, tmp_path: Path
) -> None:
    metrics = run_validate(stage_context(capture_dir, tmp_path / "ok", Gates(), ("glb",)))
    reference = metrics.reference
    assert reference is not None and reference.psnr is not None and metrics.psnr is not None
    assert [v.image for v in reference.views] == [v.image for v in metrics.views]
    assert reference.psnr == pytest.approx(metrics.psnr, abs=0.05)
    assert reference.mask_iou == pytest.approx(metrics.mask_iou, abs=0.002)
    assert (tmp_path / "ok" / "validate" / "previews" / "reference_00.png").is_file()

    # The same reference with its test cameras turned by 4 degrees: the rigs disagree, the score drops.
    bent = tmp_path / "bent"
    shutil.copytree(capture_dir, bent)
    doc = json.loads((bent / REFERENCE_FOLDER / "transforms_test.json").read_text())
    for frame in doc["frames"]:
        c2w = np.asarray(frame["transform_matrix"])
        c2w[:3, :3] = Rotation.from_euler("y", 4, degrees=True).as_matrix() @ c2w[:3, :3]
        frame["transform_matrix"] = c2w.tolist()
    (bent / REFERENCE_FOLDER / "transforms_test.json").write_text(json.dumps(doc))
    worse = run_validate(stage_context(bent, tmp_path / "bent-run", Gates(), ("glb",))).reference
    assert worse is not None and worse.psnr is not None and worse.psnr < reference.psnr - 5, worse.psnr


def test_a_reference_that_cannot_be_used_is_named(capture_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "c"
    shutil.copytree(capture_dir, root)
    ref = root / REFERENCE_FOLDER
    doc = json.loads((ref / "transforms_train.json").read_text())
    (ref / "transforms_train.json").write_text(json.dumps({**doc, "camera_model": "OPENCV", "k1": 0.1}))
    with pytest.raises(InputsInvalid, match=r"transforms_train\.json: camera_model 'OPENCV'"):
        load_reference(ref)
    (ref / "transforms_train.json").write_text(json.dumps(doc))
    (ref / "test" / "r_1.png").unlink()
    with pytest.raises(InputsInvalid, match=r"reference/test/r_1(\.png)?: listed .* but missing"):
        load_reference(ref)
    shutil.copyfile(ref / "test" / "r_0.png", ref / "test" / "r_1.png")  # every listed image there again
    for name in ("train", "test"):
        for image in (ref / name).glob("r_*.png"):
            image.rename(image.with_name(image.name.replace("r_", "view_")))
        moved = json.loads((ref / f"transforms_{name}.json").read_text())
        for frame in moved["frames"]:
            frame["file_path"] = frame["file_path"].replace("r_", "view_")
        (ref / f"transforms_{name}.json").write_text(json.dumps(moved))
    with pytest.raises(InputsInvalid, match="0 of its 7 frames match this capture's"):
        align_to_reference(load_capture(root), load_capture(ref))
    shutil.rmtree(ref)
    (ref / "images").mkdir(parents=True)
    with pytest.raises(InputsInvalid, match=r"reference/ holds no transforms\.json"):
        load_reference(ref)
