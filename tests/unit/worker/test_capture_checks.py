"""Capture validation: one test per kind of bad input, each asserting the message names frame and problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from recon_worker.capture import load_capture
from recon_worker.capture_checks import (
    CaptureInvalid,
    CaptureLimits,
    check_capture,
    check_listing,
    require_valid_capture,
)
from recon_worker.storage import StoredObject
from tests.unit.worker.captures import edit_transforms, sphere_image, write_capture


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    return write_capture(tmp_path / "capture", views=8, size=24)


def problems_of(root: Path, **limits: Any) -> list[str]:
    return [str(p) for p in check_capture(root, limits=CaptureLimits(**limits)).problems]


def set_frame(index: int, **values: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["frames"][index].update(values)

    return edit


def test_valid_capture_passes_and_loads(capture: Path) -> None:
    report = require_valid_capture(capture)
    assert report.ok and report.frames == 8 and report.resolution == (24, 24)
    assert "8 frames of 24x24" in report.summary()
    assert len(load_capture(capture).frames) == 8


def test_transforms_not_json(capture: Path) -> None:
    (capture / "transforms.json").write_text("{'frames': [")
    assert problems_of(capture) == [
        "transforms.json: is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2"
        " (char 1)"
    ]


def test_transforms_missing(tmp_path: Path) -> None:
    tmp_path.joinpath("images").mkdir()
    assert problems_of(tmp_path) == ["transforms.json: does not exist in the capture folder"]


def test_no_frames(capture: Path) -> None:
    edit_transforms(capture, lambda doc: doc.update(frames=[]))
    assert problems_of(capture) == ["transforms.json: has no 'frames' list (or it is empty)"]


def test_missing_intrinsics(capture: Path) -> None:
    edit_transforms(capture, lambda doc: doc.pop("camera_angle_x"))
    assert problems_of(capture) == [
        "transforms.json: no intrinsics: expected camera_angle_x, or fl_x/fl_y with cx, cy, w and h"
    ]


def test_focal_length_without_principal_point(capture: Path) -> None:
    edit_transforms(capture, lambda doc: (doc.pop("camera_angle_x"), doc.update(fl_x=30.0, w=24)))
    assert problems_of(capture) == ["transforms.json: fl_x is given without cx, cy, h"]


def test_full_pinhole_intrinsics_pass(capture: Path) -> None:
    edit_transforms(
        capture, lambda doc: (doc.pop("camera_angle_x"), doc.update(fl_x=30, fl_y=30, cx=12, cy=12, w=24, h=24))
    )
    assert problems_of(capture) == []


def test_non_finite_pose(capture: Path) -> None:
    matrix = np.eye(4).tolist()
    matrix[0][3] = float("nan")
    edit_transforms(capture, set_frame(3, transform_matrix=matrix))
    assert problems_of(capture) == ["frame 3: transform_matrix holds NaN or infinite values"]


def test_pose_of_wrong_shape(capture: Path) -> None:
    edit_transforms(capture, set_frame(2, transform_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]))
    assert problems_of(capture) == ["frame 2: transform_matrix has shape [3, 3], expected 4x4"]


def test_pose_not_orthonormal(capture: Path) -> None:
    matrix = np.eye(4)
    matrix[:3, :3] *= 2.0  # a scaled rotation
    edit_transforms(capture, set_frame(5, transform_matrix=matrix.tolist()))
    assert problems_of(capture) == ["frame 5: transform_matrix's rotation is not orthonormal (|RᵀR - I| up to 3)"]


def test_pose_reflection(capture: Path) -> None:
    matrix = np.diag([1.0, 1.0, -1.0, 1.0])
    edit_transforms(capture, set_frame(1, transform_matrix=matrix.tolist()))
    assert problems_of(capture) == ["frame 1: transform_matrix's rotation is a reflection (determinant -1)"]


@pytest.mark.parametrize(
    ("file_path", "reason"),
    [
        ("../outside.png", "contains '..'; image paths must stay inside the capture folder"),
        ("images/../../etc/passwd", "contains '..'; image paths must stay inside the capture folder"),
        ("/etc/passwd", "is absolute; image paths must be relative to the capture folder"),
        ("https://example.com/r_0.png", "is a URL; image paths must be relative to the capture folder"),
        ("s3://bucket/r_0.png", "is a URL; image paths must be relative to the capture folder"),
    ],
)
def test_image_path_escaping_the_capture(capture: Path, file_path: str, reason: str) -> None:
    edit_transforms(capture, set_frame(4, file_path=file_path))
    assert problems_of(capture) == [f"frame 4: file_path {file_path!r} {reason}"]


def test_missing_image(capture: Path) -> None:
    (capture / "images" / "r_6.png").unlink()
    assert problems_of(capture) == ["frame 6: images/r_6.png does not exist"]


def test_image_that_is_not_png_or_jpeg(capture: Path) -> None:
    (capture / "images" / "r_7.png").write_text("<html>Access denied</html>")
    assert problems_of(capture) == ["frame 7: images/r_7.png is not a PNG or JPEG (first bytes 3c 68 74 6d)"]


def test_truncated_png_does_not_decode(capture: Path) -> None:
    path = capture / "images" / "r_2.png"
    path.write_bytes(path.read_bytes()[:60])
    [problem] = problems_of(capture)
    assert problem.startswith("frame 2: images/r_2.png does not decode:")


def test_image_file_too_large(capture: Path) -> None:
    size = (capture / "images" / "r_0.png").stat().st_size
    problems = problems_of(capture, max_file_bytes=size - 1)
    assert f"frame 0: images/r_0.png is {size:,} bytes, above the limit of {size - 1:,}" in problems


def test_decompression_bomb_refused_before_decoding(capture: Path) -> None:
    # A 4000x4000 single-colour PNG is a few kB on disk but 16 M pixels once decoded.
    Image.new("RGBA", (4000, 4000), (0, 0, 0, 0)).save(capture / "images" / "r_3.png", optimize=True)
    problems = problems_of(capture, max_pixels=1_000_000)
    assert "frame 3: images/r_3.png is 4000x4000 pixels, above the limit of 1,000,000" in problems


def test_images_of_different_resolutions(capture: Path) -> None:
    sphere_image(32, (10, 10, 10)).save(capture / "images" / "r_5.png")
    assert problems_of(capture) == ["frame 5: images/r_5.png is 32x32, but frame 0 is 24x24"]


def test_image_without_mask(capture: Path) -> None:
    sphere_image(24, (10, 10, 10), mode="RGB").save(capture / "images" / "r_1.png")
    assert problems_of(capture) == [
        "frame 1: images/r_1.png has no object mask: give it an alpha channel or a mask_path"
    ]


def test_fully_opaque_alpha_masks_nothing(capture: Path) -> None:
    Image.new("RGBA", (24, 24), (9, 9, 9, 255)).save(capture / "images" / "r_0.png")
    assert problems_of(capture) == [
        "frame 0: images/r_0.png has an alpha channel that is fully opaque: it masks nothing"
    ]


def test_separate_mask_files_are_accepted_and_loaded(capture: Path) -> None:
    (capture / "masks").mkdir()
    for i in range(8):
        image = sphere_image(24, (200, 100, 40))
        image.convert("RGB").save(capture / "images" / f"r_{i}.jpg", quality=95)
        image.getchannel("A").save(capture / "masks" / f"r_{i}.png")
        edit_transforms(capture, set_frame(i, file_path=f"images/r_{i}.jpg", mask_path=f"masks/r_{i}.png"))
    assert problems_of(capture) == []
    alpha = load_capture(capture).load_images("train")[..., 3]
    assert alpha.max() == 1.0 and alpha.min() == 0.0


def test_mask_of_wrong_size(capture: Path) -> None:
    (capture / "masks").mkdir()
    Image.new("L", (12, 12), 255).save(capture / "masks" / "m.png")
    edit_transforms(capture, set_frame(2, mask_path="masks/m.png"))
    assert problems_of(capture) == ["frame 2: mask masks/m.png is 12x12, its image images/r_2.png is 24x24"]


def test_too_few_views(tmp_path: Path) -> None:
    root = write_capture(tmp_path, views=5, size=16)
    assert problems_of(root) == ["capture: has 5 views; at least 8 are needed"]
    assert problems_of(root, min_views=5) == []


def test_every_failing_frame_is_listed(capture: Path) -> None:
    for i in (1, 4, 6):
        (capture / "images" / f"r_{i}.png").write_bytes(b"GIF89a....")
    edit_transforms(capture, set_frame(2, file_path="../x.png"))
    with pytest.raises(CaptureInvalid) as error:
        require_valid_capture(capture)
    message = error.value.message
    assert message.startswith("capture invalid: 4 problem(s)")
    for where in ("frame 1: images/r_1.png is not", "frame 2: file_path '../x.png'", "frame 4:", "frame 6:"):
        assert where in message
    assert error.value.exit_code == 2 and error.value.reason == "InputsInvalid"


def test_split_files_name_their_frames(capture: Path) -> None:
    doc = json.loads((capture / "transforms.json").read_text())
    train = {**doc, "frames": doc["frames"][:6]}
    test = {**doc, "frames": doc["frames"][6:]}
    (capture / "transforms_train.json").write_text(json.dumps(train))
    (capture / "transforms_test.json").write_text(json.dumps(test))
    (capture / "images" / "r_7.png").unlink()
    assert problems_of(capture) == ["transforms_test.json frame 1: images/r_7.png does not exist"]
    assert load_capture(capture).indices("test") == [6, 7]


def test_listing_limits_refuse_oversized_captures_before_download() -> None:
    objects = [StoredObject("transforms.json", 900, "e"), StoredObject("images/r_0.png", 30_000_000, "e")]
    problems = [str(p) for p in check_listing(objects, CaptureLimits(max_total_bytes=10_000_000))]
    assert problems == [
        "capture: is 30,000,900 bytes, above the limit of 10,000,000",
        "images/r_0.png: is 30,000,000 bytes, above the limit of 20,000,000",
    ]
