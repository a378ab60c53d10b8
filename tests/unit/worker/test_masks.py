"""Mask providers: alpha, files, a static backdrop (clean plate or recovered), and an ONNX matting model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from recon_worker.errors import InputsInvalid
from recon_worker.masks import AlphaMasks, BackdropMasks, FileMasks, ModelMasks, clean_mask, mask_iou

SIZE = 64
BACKDROP_RGB = (40, 160, 70)


def backdrop(seed: int = 3) -> np.ndarray:
    """[SIZE, SIZE, 3] uint8 textured backdrop: a colour ramp with noise, the same for every photo."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, SIZE)[None, :, None]
    rgb = np.array(BACKDROP_RGB) * (0.7 + 0.6 * ramp) + rng.normal(0, 3, (SIZE, SIZE, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def photos(root: Path, views: int = 10) -> tuple[list[Path], list[np.ndarray]]:
    """A turntable: an ellipse that turns (its shape and shading change) over the same backdrop."""
    root.mkdir(parents=True, exist_ok=True)
    paths, truths = [], []
    for i in range(views):
        picture = Image.fromarray(backdrop())
        mask = Image.new("L", (SIZE, SIZE), 0)
        half = 10 + 10 * abs(np.cos(np.pi * i / views))
        box = [32 - half, 18, 32 + half, 50]
        ImageDraw.Draw(picture).ellipse(box, fill=(200, 60 + 15 * i, 200 - 10 * i))
        ImageDraw.Draw(mask).ellipse(box, fill=255)
        paths.append(root / f"p{i}.jpg")
        picture.save(paths[-1], quality=95, subsampling=0)  # 4:4:4, no colour bleed
        truths.append(np.asarray(mask) > 127)
    return paths, truths


def test_alpha_and_file_masks_read_what_is_given(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(rgba[..., 3]).save(tmp_path / "m.png")
    (alpha,) = AlphaMasks().masks([tmp_path / "a.png"])
    (mask,) = FileMasks([tmp_path / "m.png"]).masks([tmp_path / "a.png"])
    assert alpha.sum() == mask.sum() == 16 * 255


def test_backdrop_masks_with_a_clean_plate(tmp_path: Path) -> None:
    paths, truths = photos(tmp_path)
    Image.fromarray(backdrop()).save(tmp_path / "backdrop.jpg", quality=95)
    masks = list(BackdropMasks(plate=tmp_path / "backdrop.jpg").masks(paths))
    assert min(mask_iou(m, t) for m, t in zip(masks, truths, strict=True)) > 0.95


def test_a_low_contrast_object_is_kept_over_its_plate(tmp_path: Path) -> None:
    """An object 18 units off the backdrop in each channel (within the photos' agreement tolerance of 20)
    is still the object: a hull carves away every pixel one view misses (masks.BackdropMasks.threshold)."""
    plate = backdrop()
    Image.fromarray(plate).save(tmp_path / "backdrop.png")
    picture = plate.astype(np.int16)
    truth = np.zeros((SIZE, SIZE), bool)
    truth[16:48, 20:44] = True
    picture[truth] += 18
    Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(tmp_path / "p.png")
    (mask,) = BackdropMasks(plate=tmp_path / "backdrop.png").masks([tmp_path / "p.png"])
    assert mask_iou(mask, truth) > 0.95


def test_backdrop_masks_recover_the_backdrop_from_the_photos(tmp_path: Path) -> None:
    paths, truths = photos(tmp_path)
    masks = list(BackdropMasks().masks(paths))
    ious = [mask_iou(m, t) for m, t in zip(masks, truths, strict=True)]
    assert min(ious) > 0.85, ious


def test_backdrop_needs_enough_photos_and_a_matching_plate(tmp_path: Path) -> None:
    paths, _ = photos(tmp_path, views=3)
    with pytest.raises(InputsInvalid, match="at least 4 photos"):
        list(BackdropMasks().masks(paths))
    Image.new("RGB", (10, 10)).save(tmp_path / "backdrop.png")
    with pytest.raises(InputsInvalid, match=r"backdrop\.png is not the size"):
        list(BackdropMasks(plate=tmp_path / "backdrop.png").masks(paths))


def test_clean_mask_drops_specks_and_fills_holes() -> None:
    raw = np.zeros((40, 40), bool)
    raw[10:30, 10:30] = True
    raw[18:22, 18:22] = False  # a hole
    raw[2, 2] = True  # a speck
    cleaned = clean_mask(raw) > 0
    assert cleaned[20, 20] and not cleaned[2, 2]


def test_clean_mask_keeps_a_through_hole_open() -> None:
    """A hole of 4 % of the object (bob's handle is 0.8-5.6 % of its silhouette) is the backdrop seen
    through it and stays open; one of 0.25 % (the object matching the backdrop by chance) is filled."""
    raw = np.zeros((240, 240), bool)
    raw[20:220, 20:220] = True  # 40,000 pixels
    raw[100:140, 100:140] = False  # 1,600 (4 %): a through-hole
    raw[40:47, 40:47] = False  # 49 (0.13 %), wider than the closing reaches: the backdrop's colour by chance
    cleaned = clean_mask(raw) > 0
    assert not cleaned[103:137, 103:137].any() and cleaned[40:47, 40:47].all()  # (the closing rounds corners)


def colour_distance_model(path: Path, colour: tuple[int, int, int], threshold: float = 0.2) -> Path:
    """A real ONNX graph: alpha = sigmoid(40 * (max_c |x - colour| - threshold)), any image size."""
    import onnx
    from onnx import TensorProto, helper

    c = np.array(colour, np.float32).reshape(1, 3, 1, 1) / 255.0
    nodes = [
        helper.make_node("Sub", ["x", "colour"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["dist"]),
        helper.make_node("ReduceMax", ["dist"], ["d"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["d", "threshold"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["alpha"]),
    ]
    graph = helper.make_graph(
        nodes,
        "colour-distance-matte",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("alpha", TensorProto.FLOAT, [1, 1, "H", "W"])],
        initializer=[
            helper.make_tensor("colour", TensorProto.FLOAT, c.shape, c.ravel().tolist()),
            helper.make_tensor("threshold", TensorProto.FLOAT, [], [threshold]),
            helper.make_tensor("gain", TensorProto.FLOAT, [], [40.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_model_masks_run_an_onnx_file(tmp_path: Path) -> None:
    paths, truths = [], []
    for i in range(3):
        picture = Image.new("RGB", (48, 40), BACKDROP_RGB)
        mask = Image.new("L", (48, 40), 0)
        box = [8 + 4 * i, 8, 30 + 4 * i, 32]
        ImageDraw.Draw(picture).rectangle(box, fill=(220, 30, 30))
        ImageDraw.Draw(mask).rectangle(box, fill=255)
        paths.append(tmp_path / f"p{i}.png")
        picture.save(paths[-1])
        truths.append(np.asarray(mask) > 127)
    model = colour_distance_model(tmp_path / "matte.onnx", BACKDROP_RGB)
    masks = list(ModelMasks(model).masks(paths))
    assert [m.shape for m in masks] == [(40, 48)] * 3
    assert min(mask_iou(m, t) for m, t in zip(masks, truths, strict=True)) > 0.98


def test_model_masks_name_a_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(InputsInvalid, match="does not exist"):
        list(ModelMasks(tmp_path / "absent.onnx").masks([]))
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(InputsInvalid, match=r"bad\.onnx is not a loadable ONNX model"):
        list(ModelMasks(tmp_path / "bad.onnx").masks([]))
