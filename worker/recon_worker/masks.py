"""Mask providers: where each image's object mask comes from, behind one interface.

- `alpha`: images are RGBA cut-outs (renders, matting done beforehand). Needs an alpha channel.
- `files`: masks were made elsewhere (nerfstudio `mask_path`, a segmentation tool): one file per frame.
- `backdrop`: a turntable or studio capture, the camera fixed and the backdrop the same in every photo.
  Needs 4 or more photos; best with `backdrop.png`/`backdrop.jpg` in the capture, a photo of the empty
  backdrop (a clean plate). No model.
- `model`: cluttered or changing backgrounds that a classical rule cannot separate. Needs an ONNX
  matting model file mounted into the pod (the worker never downloads one).

A mask is [H, W] uint8, 255 the object, 0 the background (soft values in between for mattes).

The `backdrop` rule needs no model. With a clean plate, a pixel is the object where it differs from the
plate. Without one, the backdrop is recovered from the photos themselves: a backdrop pixel has the
same colour in most photos while the turning object does not, so each pixel's backdrop colour is the
colour most photos agree on; where fewer than half agree (the object covers it in most photos) the
backdrop is inpainted from its surroundings, which suits smooth backdrops and is rough on busy ones
(photograph a clean plate then). Specks are removed, gaps closed, small holes filled (large ones are the
backdrop seen through the object and stay open) and small regions dropped.

The `model` provider runs an ONNX model through onnxruntime on the CPU: input `[1, 3, H, W]` float32
RGB in [0, 1] (resized to the model's size when it has a fixed one), output `[1, 1, H, W]` (or
`[1, H, W]`) alpha in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from recon_worker.errors import InputsInvalid

MaskSource = Literal["alpha", "files", "backdrop", "model"]
CLEAN_PLATE_NAMES = ("backdrop.png", "backdrop.jpg", "backdrop.jpeg")


class MaskProvider(Protocol):
    """Masks for a list of images, in order ([H, W] uint8 each, 255 the object)."""

    @property
    def name(self) -> MaskSource: ...

    def masks(self, images: Sequence[Path]) -> Iterator[np.ndarray]: ...


def _rgb(path: Path) -> np.ndarray:
    """[H, W, 3] uint8."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class AlphaMasks:
    name: MaskSource = "alpha"

    def masks(self, images: Sequence[Path]) -> Iterator[np.ndarray]:
        from PIL import Image

        for path in images:
            with Image.open(path) as im:
                yield np.asarray(im.convert("RGBA"))[..., 3].copy()


@dataclass(frozen=True)
class FileMasks:
    """Masks from files, one per image in the same order (grey levels; any colour image is converted)."""

    files: Sequence[Path]
    name: MaskSource = "files"

    def masks(self, images: Sequence[Path]) -> Iterator[np.ndarray]:
        from PIL import Image

        if len(self.files) != len(images):
            raise ValueError(f"{len(self.files)} mask files for {len(images)} images")
        for path in self.files:
            with Image.open(path) as im:
                yield np.asarray(im.convert("L")).copy()


def clean_mask(object_pixels: np.ndarray, speck: int = 1, keep: float = 0.05, hole: float = 0.005) -> np.ndarray:
    """[H, W] bool -> uint8 mask: specks opened away, gaps closed, regions smaller than `keep` of the
    largest dropped (a body and its limbs stay, noise does not), and holes smaller than `hole` of the
    mask's area filled (where the object happens to match the backdrop) while larger ones stay open:
    they are the backdrop seen through the object (bob's handle, a cup's), which a filled silhouette would
    stop the hull from carving. Measured on 320² turntables: spot's false holes are at most 0.38 % of
    its area, bob's handle 0.8-5.6 %."""
    from scipy import ndimage

    mask = ndimage.binary_opening(object_pixels, iterations=speck) if speck else object_pixels
    mask = ndimage.binary_closing(mask, iterations=2, border_value=0)
    labels, sizes = _regions(mask)
    if len(sizes) > 1:
        mask = np.isin(labels, np.flatnonzero(sizes >= keep * sizes.max()) + 1)
    labels, sizes = _regions(ndimage.binary_fill_holes(mask) & ~mask)
    if len(sizes):
        small = np.flatnonzero(sizes < hole * max(1, int(np.count_nonzero(mask)))) + 1
        mask = mask | np.isin(labels, small)
    return (np.asarray(mask) * 255).astype(np.uint8)


def _regions(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected regions of `pixels` [H, W] bool: their labels (1..n, 0 outside) and sizes [n] in pixels."""
    from scipy import ndimage

    labels, count = ndimage.label(pixels)
    return labels, np.bincount(labels.ravel(), minlength=count + 1)[1:]


def recurring_backdrop(stack: np.ndarray, tolerance: float, min_share: float) -> tuple[np.ndarray, np.ndarray]:
    """The colour most views agree on at each pixel, and where enough of them agree.

    stack: [N, H, W, 3] float32. Returns the backdrop [H, W, 3] and `known` [H, W] bool (at least
    `min_share` of the views within `tolerance` of the chosen colour, max over channels).
    """
    n, height = stack.shape[0], stack.shape[1]
    backdrop = np.zeros(stack.shape[1:], np.float32)
    known = np.zeros(stack.shape[1:3], bool)
    rows = max(1, int(2_000_000 // max(1, n * n * stack.shape[2])))  # bound the [N, N, rows, W] block
    for top in range(0, height, rows):
        block = stack[:, top : top + rows]  # [N, r, W, 3]
        close = (np.abs(block[:, None] - block[None]).max(axis=-1) <= tolerance).sum(axis=1)  # [N, r, W]
        best = close.argmax(axis=0)  # [r, W]: the view whose colour most views share
        backdrop[top : top + rows] = np.take_along_axis(block, best[None, ..., None], axis=0)[0]
        known[top : top + rows] = close.max(axis=0) >= max(2, min_share * n)
    return backdrop, known


def inpaint(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """[H, W, 3] float32 with the `hole` [H, W] bool filled from its surroundings (OpenCV Telea)."""
    import cv2

    if not hole.any():
        return image
    filled = cv2.inpaint(np.clip(image, 0, 255).astype(np.uint8), hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    return filled.astype(np.float32)


@dataclass(frozen=True)
class BackdropMasks:
    """A static backdrop: from a clean plate when one is given, else recovered from the photos."""

    plate: Path | None = None
    tolerance: float = 20.0  # 0-255 units, max over channels: how close photos must be to agree on the backdrop
    min_share: float = 0.5  # of the views that must agree on a pixel's backdrop colour
    # 0-255 units, max over channels: a pixel further than this from the backdrop is the object. Lower than
    # `tolerance` on purpose: the hull intersects the silhouettes, so an object pixel missed in one view
    # carves the object out of every view, while a backdrop pixel taken for the object is carved away by
    # the others. Measured on spot's turntable (24 photos, 320^2, clean plate; docs/benchmarks.md): at 20
    # the masks missed 0.8 % of the object's pixels (mostly at its edge, where JPEG's colour subsampling
    # blends it with the backdrop), the hull gained two false tunnels and held-out PSNR was 23.3 dB; at 15
    # they miss 0.35 % (1.5 % extra), mask IoU is unchanged (0.981) and PSNR is 26.5 dB.
    threshold: float = 15.0
    name: MaskSource = "backdrop"

    def masks(self, images: Sequence[Path]) -> Iterator[np.ndarray]:
        stack = np.stack([_rgb(p).astype(np.float32) for p in images])  # [N, H, W, 3]
        if self.plate is not None:
            backdrop = _rgb(self.plate).astype(np.float32)
            if backdrop.shape != stack.shape[1:]:
                raise InputsInvalid(f"clean plate {self.plate.name} is not the size of the photos")
            known = np.ones(stack.shape[1:3], bool)
        else:
            if len(images) < 4:
                raise InputsInvalid(f"the backdrop mask provider needs at least 4 photos, not {len(images)}")
            backdrop, known = recurring_backdrop(stack, self.tolerance, self.min_share)
            if not known.any():
                raise InputsInvalid("the backdrop mask provider found no backdrop shared by the photos")
            backdrop = inpaint(backdrop, ~known)
        for view in stack:
            differs = np.abs(view - backdrop).max(axis=-1) > self.threshold
            yield clean_mask(differs)


@dataclass
class ModelMasks:
    """A matting model from an ONNX file (mounted into the pod; this worker never downloads one)."""

    path: Path
    name: MaskSource = "model"

    def _session(self) -> Any:
        import onnxruntime

        if not self.path.is_file():
            raise InputsInvalid(f"mask model {self.path} does not exist (mount the ONNX file into the pod)")
        try:
            return onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise InputsInvalid(f"mask model {self.path} is not a loadable ONNX model: {exc}") from None

    def masks(self, images: Sequence[Path]) -> Iterator[np.ndarray]:
        from PIL import Image

        session = self._session()
        inp = session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise InputsInvalid(f"mask model {self.path.name}: input {inp.name} must be [1, 3, H, W], not {shape}")
        fixed = isinstance(shape[2], int) and isinstance(shape[3], int)
        for path in images:
            rgb = _rgb(path)
            height, width = rgb.shape[:2]
            if fixed:
                rgb = np.asarray(Image.fromarray(rgb).resize((shape[3], shape[2]), Image.Resampling.BILINEAR))
            x = (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]  # [1, 3, H, W]
            out = np.asarray(session.run(None, {inp.name: x})[0], dtype=np.float32)
            alpha = out.reshape(out.shape[-2:])  # [1, 1, H, W] or [1, H, W] -> [H, W]
            mask = (np.clip(alpha, 0, 1) * 255 + 0.5).astype(np.uint8)
            if mask.shape != (height, width):
                mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.BILINEAR))
            yield mask


def clean_plate(root: Path) -> Path | None:
    return next((root / n for n in CLEAN_PLATE_NAMES if (root / n).is_file()), None)


def mask_iou(mask: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two masks ([H, W], object where > 127 / True)."""
    a = np.asarray(mask) > 127
    b = truth if truth.dtype == bool else np.asarray(truth) > 127
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
