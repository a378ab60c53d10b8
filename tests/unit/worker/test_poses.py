"""Poses by structure from motion: the registered-share rule, normalisation, and a textureless capture
that pycolmap cannot pose failing fast with PosesUnrecoverable."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from recon_worker.capture_forms import FormChoice, describe_capture, prepare_capture
from recon_worker.errors import ExitCode, PosesUnrecoverable
from recon_worker.poses import (
    CAMERA_DISTANCE,
    PoseResult,
    SfmOptions,
    list_photos,
    normalise,
    require_registered,
    write_transforms,
)


def result(registered: int, total: int) -> PoseResult:
    names = [f"train/p{i:02d}.jpg" for i in range(total)]
    return PoseResult(names, {n: np.eye(4) for n in names[:registered]}, {}, np.zeros((0, 3)))


def test_too_few_registered_photos_fail_naming_the_count_and_the_photos() -> None:
    require_registered(result(8, 10), 0.8)
    with pytest.raises(PosesUnrecoverable) as caught:
        require_registered(result(3, 25), 0.8)
    assert caught.value.reason == "PosesUnrecoverable" and caught.value.exit_code == ExitCode.INVALID
    assert "registered 3 of 25 photos (12%, below the required 80%)" in caught.value.message
    assert "train/p03.jpg" in caught.value.message and "and 2 more" in caught.value.message


def test_normalise_centres_on_the_points_and_scales_the_cameras() -> None:
    c2w = {}
    for i in range(4):
        m = np.eye(4)
        m[:3, 3] = [10 + 2 * math.cos(i), 5.0, 3 + 2 * math.sin(i)]
        c2w[str(i)] = m
    points = np.array([[10.0, 5.0, 3.0], [10.1, 5.0, 3.0], [9.9, 5.0, 3.0]])
    out, pts = normalise(c2w, points)
    distances = [np.linalg.norm(m[:3, 3]) for m in out.values()]
    assert np.allclose(np.mean(distances), CAMERA_DISTANCE) and np.allclose(np.median(pts, axis=0), 0)
    assert np.allclose(out["0"][:3, :3], np.eye(3))  # rotations are kept


def test_write_transforms_holds_out_test_photos(tmp_path: Path) -> None:
    r = result(3, 3)
    r.names.append("test/q.jpg")
    r.c2w["test/q.jpg"] = np.eye(4)
    r.camera.update(fl_x=100.0, fl_y=100.0, cx=32.0, cy=32.0, w=64, h=64)
    write_transforms(tmp_path, r, {"test/q.jpg": "_prepared/masks/test/q.png"})
    train = json.loads((tmp_path / "transforms_train.json").read_text())
    test = json.loads((tmp_path / "transforms_test.json").read_text())
    assert len(train["frames"]) == 3 and test["frames"][0]["mask_path"] == "_prepared/masks/test/q.png"
    assert train["fl_x"] == 100.0


def textureless_photos(root: Path, views: int = 12, size: int = 160) -> None:
    """A matte grey ball on a plain backdrop, turning: nothing for SIFT to hold on to."""
    (root / "train").mkdir(parents=True)
    for i in range(views):
        picture = Image.new("RGB", (size, size), (235, 235, 235))
        ImageDraw.Draw(picture).ellipse([50, 50, 110, 110], fill=(120, 120, 120))
        picture.save(root / "train" / f"p{i:02d}.jpg", quality=95)


def test_a_textureless_object_fails_fast_with_poses_unrecoverable(tmp_path: Path) -> None:
    root = tmp_path / "capture"
    textureless_photos(root)
    assert describe_capture(root, "transforms.json").poses == "estimate"
    with pytest.raises(PosesUnrecoverable, match=r"registered \d+ of 12 photos"):
        prepare_capture(root, choice=FormChoice(sfm=SfmOptions(threads=1)), workdir=tmp_path / "sfm")
    assert not (root / "transforms.json").exists()


def test_list_photos_skips_prepared_files_and_the_clean_plate(tmp_path: Path) -> None:
    for rel in ("a.jpg", "sub/b.PNG", "_prepared/masks/a.png", "backdrop.jpg", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert list_photos(tmp_path, exclude=("_prepared", "backdrop.jpg")) == ["a.jpg", "sub/b.PNG"]
