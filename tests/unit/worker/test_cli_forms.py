"""`recon-worker validate` explains the capture form it detected: distorted, RGB with a backdrop, photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from recon_worker.cli import main
from tests.unit.worker.captures import edit_transforms, write_capture


def test_validate_explains_a_distorted_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_capture(tmp_path, views=8, size=32)
    edit_transforms(tmp_path, lambda d: d.update(camera_model="OPENCV", k1=-0.1))
    assert main(["validate", "--input", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "camera model(s): OPENCV" in out and "resampled onto one pinhole camera: 8 image(s)" in out
    assert json.loads((tmp_path / "transforms.json").read_text())["camera_model"] == "OPENCV"  # untouched


def test_validate_masks_rgb_images_by_their_backdrop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_capture(tmp_path, views=8, size=32)
    for path in sorted((tmp_path / "images").glob("*.png")):
        rgba = Image.open(path).convert("RGBA")
        flat = Image.new("RGB", rgba.size, (20, 120, 200))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.save(path)
    # A clean plate: the object sits still in every view of this fixture, so the backdrop cannot be
    # recovered from the photos themselves (and the plate must be fetched beside the transforms file).
    Image.new("RGB", flat.size, (20, 120, 200)).save(tmp_path / "backdrop.png")
    assert main(["validate", "--input", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "masks: backdrop" in out and "capture OK: 8 frames" in out


def test_validate_describes_photos_to_pose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "train").mkdir()
    for i in range(9):
        Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(tmp_path / "train" / f"p{i}.jpg")
    Image.new("RGB", (16, 16)).save(tmp_path / "backdrop.jpg")
    assert main(["validate", "--input", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "poses: estimate" in out and "9 photo(s) and a clean plate to pose by structure from motion" in out


def test_validate_names_an_unknown_camera_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_capture(tmp_path, views=8, size=16)
    edit_transforms(tmp_path, lambda d: d.update(camera_model="THIN_PRISM_FISHEYE"))
    assert main(["validate", "--input", str(tmp_path)]) == 2
    assert "camera_model 'THIN_PRISM_FISHEYE' is not supported" in capsys.readouterr().err


def test_a_reference_capture_is_fetched_and_never_posed_as_photos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recon_worker.capture_checks import CaptureLimits
    from recon_worker.fetch import fetch_capture
    from recon_worker.storage import FileStore

    # Posed: the transforms' images, and the reference/ folder beside them (nothing else of the prefix).
    posed = write_capture(tmp_path / "posed", views=8, size=16)
    write_capture(posed / "reference", views=8, size=16)
    (posed / "notes.txt").write_text("not part of the capture")
    fetched = {o.key for o in fetch_capture(FileStore(posed), tmp_path / "copy", "transforms.json", CaptureLimits())}
    assert {"reference/transforms.json", "reference/images/r_0.png"} <= fetched and "notes.txt" not in fetched
    assert main(["validate", "--input", str(posed)]) == 0
    assert "reference views: reference/ (8 frames)" in capsys.readouterr().out
    edit_transforms(posed / "reference", lambda d: d.update(camera_model="OPENCV", k1=0.1))
    assert main(["validate", "--input", str(posed)]) == 2  # refused before any engine work
    assert "reference/transforms.json: camera_model 'OPENCV'" in capsys.readouterr().err
    # Photos: the reference's images are not photos to pose.
    photos = tmp_path / "photos"
    (photos / "train").mkdir(parents=True)
    for i in range(9):
        Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(photos / "train" / f"p{i}.jpg")
    write_capture(photos / "reference", views=8, size=16)
    assert main(["validate", "--input", str(photos)]) == 0
    assert "9 photo(s) to pose by structure from motion" in capsys.readouterr().out
