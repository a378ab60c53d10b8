"""Capture validation: one test per kind of bad input, each asserting the message names frame and problem."""

from __future__ import annotations

import json
import os
import zlib
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
        image = sphere_image(24, (200, 60 + 20 * i, 40))
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


# Captures that passed these checks once and then failed in the engine, or published garbage (issue 11).


@pytest.mark.parametrize(("value", "shown"), [(0, "0"), (-0.5, "-0.5"), ("0.6", "'0.6'"), (4.0, "4.0"), (True, "True")])
def test_camera_angle_y_is_validated(capture: Path, value: Any, shown: str) -> None:
    edit_transforms(capture, lambda doc: doc.update(camera_angle_y=value))
    assert problems_of(capture) == [f"transforms.json: camera_angle_y must be a number in (0, pi) radians, not {shown}"]


def test_principal_point_outside_the_image(capture: Path) -> None:
    edit_transforms(capture, lambda doc: (doc.pop("camera_angle_x"), doc.update(fl_x=30, cx=12, cy=900, w=24, h=24)))
    assert problems_of(capture) == [
        "transforms.json: the principal point (cx, cy) = (12, 900) lies outside the 24x24 image"
    ]


def test_empty_alpha_mask(capture: Path) -> None:
    Image.new("RGBA", (24, 24), (9, 9, 9, 0)).save(capture / "images" / "r_2.png")
    assert problems_of(capture) == [
        "frame 2: images/r_2.png's alpha channel is empty (highest value 0): no pixel belongs to the object"
    ]


def test_empty_mask_file(capture: Path) -> None:
    (capture / "masks").mkdir()
    Image.new("L", (24, 24), 0).save(capture / "masks" / "m.png")
    edit_transforms(capture, set_frame(4, mask_path="masks/m.png"))
    assert problems_of(capture) == [
        "frame 4: masks/m.png's mask is empty (highest value 0): no pixel belongs to the object"
    ]


def test_alpha_254_everywhere_masks_nothing(capture: Path) -> None:
    image = sphere_image(24, (9, 9, 9))
    image.putalpha(254)
    image.save(capture / "images" / "r_6.png")
    assert problems_of(capture) == [
        "frame 6: images/r_6.png's alpha channel covers the whole image (lowest value 254): it masks nothing"
    ]


def test_identical_frames_are_refused(tmp_path: Path) -> None:
    root = write_capture(tmp_path, views=16, size=16)
    for i in range(1, 16):
        (root / "images" / f"r_{i}.png").write_bytes((root / "images" / "r_0.png").read_bytes())
    problems = problems_of(root)
    assert len(problems) == 15
    assert problems[0] == "frame 1: images/r_1.png is identical to frame 0's images/r_0.png (a copy, a link?)"


def test_an_image_linked_to_another_view(capture: Path) -> None:
    (capture / "images" / "r_5.png").unlink()
    (capture / "images" / "r_5.png").symlink_to("r_3.png")
    assert problems_of(capture) == [
        "frame 5: images/r_5.png is identical to frame 3's images/r_3.png (a copy, a link?)"
    ]


def test_all_cameras_at_one_point(capture: Path) -> None:
    def same_place(doc: dict[str, Any]) -> None:
        for frame in doc["frames"]:
            frame["transform_matrix"][0][3], frame["transform_matrix"][1][3], frame["transform_matrix"][2][3] = 1, 2, 3

    edit_transforms(capture, same_place)
    assert problems_of(capture) == ["capture: all 8 cameras are at one point (1, 2, 3): views must differ"]


def test_cameras_facing_away(capture: Path) -> None:
    def turn(frame: dict[str, Any]) -> None:
        m = np.asarray(frame["transform_matrix"])
        m[:3, 0] *= -1  # turning around the camera's own Y axis by 180 degrees flips X and Z
        m[:3, 2] *= -1
        frame["transform_matrix"] = m.tolist()

    edit_transforms(capture, lambda doc: [turn(f) for f in doc["frames"]])
    [problem] = problems_of(capture)
    assert problem.startswith("capture: 8 camera(s) face away from (")
    assert problem.endswith(
        "where the views converge: frame 0, frame 1, frame 2, frame 3, frame 4, frame 5, frame 6, frame 7"
    )


def test_one_camera_facing_away(capture: Path) -> None:
    doc = json.loads((capture / "transforms.json").read_text())
    m = np.asarray(doc["frames"][3]["transform_matrix"])
    m[:3, 0] *= -1
    m[:3, 2] *= -1
    edit_transforms(capture, set_frame(3, transform_matrix=m.tolist()))
    [problem] = problems_of(capture)
    assert problem.startswith("capture: 1 camera(s) face away from (") and problem.endswith("converge: frame 3")


def test_deeply_nested_json(capture: Path) -> None:
    (capture / "transforms.json").write_text("[" * 100_000 + "]" * 100_000)
    assert problems_of(capture) == ["transforms.json: is not valid JSON: nested too deeply"]


def test_numbers_of_thousands_of_digits(capture: Path) -> None:
    text = (capture / "transforms.json").read_text().replace('"camera_angle_x": 0.8', '"camera_angle_x": ' + "7" * 5000)
    (capture / "transforms.json").write_text(text)
    assert problems_of(capture) == [
        "transforms.json: is not valid JSON: a number of 5,000 digits (at most 64 are read)"
    ]


def test_transforms_file_that_is_a_folder(capture: Path) -> None:
    (capture / "transforms.json").unlink()
    (capture / "transforms.json").mkdir()
    assert problems_of(capture) == ["transforms.json: is not a regular file"]


def test_transforms_file_that_is_a_fifo(capture: Path) -> None:
    (capture / "transforms.json").unlink()
    os.mkfifo(capture / "transforms.json")
    assert problems_of(capture) == ["transforms.json: is not a regular file"]  # and does not block


def test_image_that_is_a_fifo(capture: Path) -> None:
    (capture / "images" / "r_1.png").unlink()
    os.mkfifo(capture / "images" / "r_1.png")
    assert problems_of(capture) == ["frame 1: images/r_1.png is not a regular file"]


def test_control_characters_in_names_are_escaped(capture: Path) -> None:
    edit_transforms(capture, set_frame(2, file_path="images/\x1b[2J\rr_2.png"))
    assert problems_of(capture) == ["frame 2: images/\\x1b[2J\\x0dr_2.png does not exist"]


def test_too_many_views_refused_before_reading_images(tmp_path: Path) -> None:
    root = write_capture(tmp_path, views=12, size=16)
    (root / "images" / "r_0.png").write_bytes(b"not read")
    limits = CaptureLimits.for_memory(1 * 2**30, max_views=10)
    assert problems_of(root, **limits.model_dump()) == [
        "capture: has 12 views, above the limit of 10, derived from 1.0 GiB of memory"
    ]


def test_total_decoded_pixels_limit(capture: Path) -> None:
    assert problems_of(capture, max_total_pixels=8 * 24 * 24 - 1) == [
        "capture: decodes to 4,608 pixels, above the limit of 4,607"
    ]


def test_limits_follow_the_memory_and_the_device() -> None:
    small, large = CaptureLimits.for_memory(4 * 2**30), CaptureLimits.for_memory(64 * 2**30)
    assert small.max_views < large.max_views and small.max_total_pixels < large.max_total_pixels
    # Issue 11: 18 views of 2048² ran in 3.7 GB on a GPU and must pass in a 16 GiB pod; 18 of 7000² died.
    assert CaptureLimits.for_memory(16 * 2**30, "cuda").max_total_pixels >= 18 * 2048**2
    assert CaptureLimits.for_memory(16 * 2**30, "cuda").max_total_pixels < 18 * 7000**2
    # On the CPU every render and raster is host memory too: fewer pixels fit.
    assert CaptureLimits.for_memory(16 * 2**30, "cpu").max_total_pixels < small.max_total_pixels * 4


def test_18_views_of_7000_squared_are_refused_from_their_headers(tmp_path: Path) -> None:
    # Each file is a 16x16 PNG whose header claims 7000x7000 (under the 50 MP per-image limit): decoding
    # one would fail, so refusing them with the limit shows it is checked before any heavy work.
    root = write_capture(tmp_path, views=18, size=16)
    for i in range(18):
        png = bytearray((root / "images" / f"r_{i}.png").read_bytes())
        png[16:24] = (7000).to_bytes(4, "big") * 2  # IHDR width and height
        png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
        (root / "images" / f"r_{i}.png").write_bytes(bytes(png))
    limits = CaptureLimits.for_memory(16 * 2**30, "cuda")
    assert limits.max_total_pixels < 18 * 7000**2
    assert problems_of(root, **limits.model_dump()) == [
        f"capture: decodes to {18 * 7000**2:,} pixels, above the limit of {limits.max_total_pixels:,},"
        " derived from 16.0 GiB of memory"
    ]
