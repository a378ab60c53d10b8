"""Lens distortion: camera models, undistortion onto a pinhole camera, the capture rewritten around it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon_worker.capture import Intrinsics, load_capture
from recon_worker.capture_checks import check_capture
from recon_worker.capture_forms import prepare_capture
from recon_worker.distortion import Lens, UnknownCameraModel, distort_image, lens_from_meta, undistort_image
from recon_worker.errors import InputsInvalid
from tests.unit.worker.captures import edit_transforms, write_capture

OPENCV = {"camera_model": "OPENCV", "k1": -0.25, "k2": 0.06, "p1": 0.002, "p2": -0.001}
FISHEYE = {"camera_model": "OPENCV_FISHEYE", "k1": 0.05, "k2": -0.01, "k3": 0.002, "k4": 0.0}


def checkerboard(size: int, cells: int = 8) -> np.ndarray:
    """[size, size, 3] uint8 smooth-ish test pattern (a blurred checkerboard, so resampling is fair)."""
    from scipy.ndimage import gaussian_filter

    ys, xs = np.mgrid[0:size, 0:size]
    board = (((xs * cells // size) + (ys * cells // size)) % 2).astype(np.float64)
    board = gaussian_filter(board, 1.5)
    return np.repeat((board * 200 + 30).astype(np.uint8)[..., None], 3, axis=-1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_lens_from_meta_reads_frame_keys_over_the_files() -> None:
    lens = lens_from_meta({"k1": 0.1}, {"camera_model": "OPENCV", "k2": 0.2})
    assert lens == Lens("OPENCV", (0.1, 0.2, 0.0, 0.0, 0.0)) and lens.distorted
    assert not lens_from_meta({}, {}).distorted
    assert lens_from_meta({"camera_model": "SIMPLE_PINHOLE"}).model == "PINHOLE"


def test_unknown_camera_model_is_named() -> None:
    with pytest.raises(UnknownCameraModel, match="'RADIAL_FISHEYE'"):
        lens_from_meta({"camera_model": "RADIAL_FISHEYE"})
    with pytest.raises(ValueError, match="k1 of camera_model OPENCV"):
        lens_from_meta({"camera_model": "OPENCV", "k1": "strong"})


@pytest.mark.parametrize("coefficients", [OPENCV, FISHEYE], ids=["opencv", "fisheye"])
def test_undistort_inverts_distort(coefficients: dict) -> None:
    size = 128
    k = Intrinsics(110.0, 112.0, 63.0, 65.5, size, size)
    lens = lens_from_meta(coefficients)
    pinhole = checkerboard(size)
    distorted = distort_image(pinhole, k, lens, k)
    restored = undistort_image(distorted, k, lens, k)
    inner = (slice(16, -16), slice(16, -16))  # the border loses pixels that left the distorted frame
    assert psnr(distorted[inner], pinhole[inner]) < 22  # the distortion is strong enough to matter
    assert psnr(restored[inner], pinhole[inner]) > 30


def _distort_capture(root: Path, coefficients: dict, per_frame: bool = False) -> None:
    """Apply `coefficients` to every image of a capture written by `write_capture` and declare them."""
    doc = json.loads((root / "transforms.json").read_text())
    size = Image.open(root / doc["frames"][0]["file_path"]).size[0]
    focal = 0.5 * size / np.tan(0.5 * doc["camera_angle_x"])
    k = Intrinsics(focal, focal, size / 2, size / 2, size, size)
    lens = lens_from_meta(coefficients)
    for frame in doc["frames"]:
        path = root / frame["file_path"]
        pixels = np.asarray(Image.open(path).convert("RGBA"))
        Image.fromarray(distort_image(pixels, k, lens, k)).save(path)
        if per_frame:
            frame.update(coefficients, fl_x=focal, fl_y=focal, cx=size / 2, cy=size / 2, w=size, h=size)
    if not per_frame:
        doc.update(coefficients)
    (root / "transforms.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("per_frame", [False, True], ids=["global", "per-frame"])
def test_prepare_capture_undistorts_images_and_rewrites_transforms(tmp_path: Path, per_frame: bool) -> None:
    clean = write_capture(tmp_path / "clean", views=8, size=96)
    distorted = write_capture(tmp_path / "distorted", views=8, size=96)
    _distort_capture(distorted, OPENCV, per_frame)

    form = prepare_capture(distorted)

    assert form.camera_models == ["OPENCV"] and len(form.resampled) == 8
    assert "resampled onto one pinhole camera: 8 image(s)" in form.explain()
    doc = json.loads((distorted / "transforms.json").read_text())
    assert not any(k in doc for k in ("camera_model", "k1", "camera_angle_x"))
    assert not any(k in f for f in doc["frames"] for k in ("camera_model", "k1", "fl_x"))
    assert check_capture(distorted).ok
    a, b = load_capture(clean), load_capture(distorted)
    assert a.intrinsics.width == b.intrinsics.width and abs(a.intrinsics.fx - b.intrinsics.fx) < 1e-6
    before, after = a.load_images("train"), b.load_images("train")
    # The sphere's silhouette (alpha) is back where the pinhole camera sees it.
    iou = (
        np.logical_and(before[..., 3] > 0.5, after[..., 3] > 0.5).sum()
        / np.logical_or(before[..., 3] > 0.5, after[..., 3] > 0.5).sum()
    )
    assert iou > 0.97


def test_per_frame_intrinsics_are_resampled_onto_the_shared_camera(tmp_path: Path) -> None:
    root = write_capture(tmp_path / "c", views=8, size=64)
    doc = json.loads((root / "transforms.json").read_text())
    # Frame 0 is stored at twice the resolution: same camera, other pixels.
    frame = doc["frames"][0]
    image = Image.open(root / frame["file_path"]).resize((128, 128), Image.Resampling.BICUBIC)
    image.save(root / frame["file_path"])
    focal = 0.5 * 128 / np.tan(0.5 * doc["camera_angle_x"])
    frame.update(fl_x=focal, fl_y=focal, cx=64, cy=64, w=128, h=128)
    (root / "transforms.json").write_text(json.dumps(doc))
    assert not check_capture(root).ok  # two resolutions: the engine could not read it as it is

    form = prepare_capture(root)

    assert form.per_frame_intrinsics and form.resampled == ["images/r_0.png"]
    assert check_capture(root).ok
    assert load_capture(root).load_images("train").shape == (8, 64, 64, 4)


def test_unknown_camera_model_in_a_frame_is_an_input_error(tmp_path: Path) -> None:
    root = write_capture(tmp_path / "c", views=8, size=32)
    edit_transforms(root, lambda d: d["frames"][3].update(camera_model="FOV", omega=0.1))
    with pytest.raises(InputsInvalid, match=r"transforms\.json frame 3: camera_model 'FOV' is not supported"):
        prepare_capture(root)


def test_applied_transform_is_checked_and_kept(tmp_path: Path) -> None:
    root = write_capture(tmp_path / "c", views=8, size=32)
    edit_transforms(root, lambda d: d.update(applied_transform=np.eye(4)[:3].tolist(), **OPENCV))
    form = prepare_capture(root)
    assert form.applied_transform == np.eye(4)[:3].tolist()
    assert json.loads((root / "transforms.json").read_text())["applied_transform"] == np.eye(4)[:3].tolist()
    edit_transforms(root, lambda d: d.update(applied_transform=[[1, 0], [0, 1]]))
    with pytest.raises(InputsInvalid, match="applied_transform must be a finite 3x4 or 4x4"):
        prepare_capture(root)


def test_a_canonical_capture_is_left_alone(tmp_path: Path) -> None:
    root = write_capture(tmp_path / "c", views=8, size=32)
    before = (root / "transforms.json").read_text()
    form = prepare_capture(root)
    assert form.resampled == [] and (root / "transforms.json").read_text() == before
