"""A capture: posed, masked views of one object, in the NeRF-synthetic / Instant-NGP convention.

Conventions: `c2w` is the 4x4 camera-to-world matrix of each frame, OpenGL camera axes (the camera looks
down its -Z axis, +Y up, +X right), world units as in the file. Intrinsics are in pixels of the images
as stored. Images are RGBA; alpha is the object mask.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

Split = Literal["train", "test"]

# Files the synthetic renderer writes next to the capture for geometric metrics (optional).
GROUND_TRUTH_NAMES = ("ground_truth.obj", "ground_truth.ply")
# A posed, masked capture of the same views to judge the result by (`engine.reference`), never an input.
REFERENCE_FOLDER = "reference"
TRAIN_FILE, TEST_FILE = "transforms_train.json", "transforms_test.json"


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


@dataclass(frozen=True)
class Frame:
    image: str  # path relative to the capture root, with extension
    c2w: np.ndarray = field(repr=False)  # [4, 4] float64, camera-to-world, OpenGL axes
    split: Split = "train"
    mask: str | None = None  # separate mask image (nerfstudio's `mask_path`), replacing the image's alpha


@dataclass
class Capture:
    root: Path
    intrinsics: Intrinsics
    frames: list[Frame]
    ground_truth: Path | None = None

    def indices(self, split: Split) -> list[int]:
        return [i for i, f in enumerate(self.frames) if f.split == split]

    def poses(self, split: Split) -> np.ndarray:
        """[N, 4, 4] camera-to-world matrices of one split."""
        return (
            np.stack([self.frames[i].c2w for i in self.indices(split)]) if self.indices(split) else np.zeros((0, 4, 4))
        )

    def load_view(self, index: int) -> np.ndarray:
        """[H, W, 4] uint8 RGBA of frame `index` as stored (alpha is the mask), decoded now, not kept."""
        from PIL import Image

        frame = self.frames[index]
        with Image.open(self.root / frame.image) as im:
            rgba = np.array(im.convert("RGBA"), dtype=np.uint8)
        if frame.mask is not None:
            with Image.open(self.root / frame.mask) as m:
                rgba[..., 3] = np.asarray(m.convert("L"), dtype=np.uint8)
        return rgba

    def iter_views(self, split: Split, batch: int) -> Iterator[tuple[list[int], np.ndarray]]:
        """Frame indices and [B, H, W, 4] uint8 RGBA of one split, `batch` views at a time (streamed)."""
        indices = self.indices(split)
        for start in range(0, len(indices), batch):
            chunk = indices[start : start + batch]
            yield chunk, np.stack([self.load_view(i) for i in chunk])

    def load_images(self, split: Split, dtype: type[np.generic] = np.float32) -> np.ndarray:
        """[N, H, W, 4] RGBA of one split (alpha is the mask): uint8 as stored, or floats in [0, 1].

        The result is allocated once and filled view by view, so the peak is the result plus one view;
        uint8 is a quarter of float32, so callers that stream batches should ask for it.
        """
        indices = self.indices(split)
        k = self.intrinsics
        out = np.empty((len(indices), k.height, k.width, 4), dtype=dtype)
        for n, i in enumerate(indices):
            out[n] = self.load_view(i)
            if np.issubdtype(out.dtype, np.floating):
                out[n] /= 255.0
        return out

    def load_masks(self, split: Split) -> np.ndarray:
        """[N, H, W] uint8 object masks (alpha) of one split, 255 inside the object."""
        indices = self.indices(split)
        k = self.intrinsics
        out = np.empty((len(indices), k.height, k.width), dtype=np.uint8)
        for n, i in enumerate(indices):
            out[n] = self.load_view(i)[..., 3]
        return out


def intrinsics_from_meta(meta: dict, width: int, height: int) -> Intrinsics:
    """Pinhole intrinsics from a transforms file's top-level keys, for images of the given size."""
    if "fl_x" in meta:
        fx = float(meta["fl_x"])
        fy = float(meta.get("fl_y", fx))
        cx = float(meta.get("cx", width / 2))
        cy = float(meta.get("cy", height / 2))
        # Intrinsics given for another resolution are rescaled to the images as stored.
        sx = width / float(meta.get("w", width))
        sy = height / float(meta.get("h", height))
        return Intrinsics(fx * sx, fy * sy, cx * sx, cy * sy, width, height)
    fx = 0.5 * width / math.tan(0.5 * float(meta["camera_angle_x"]))
    fy = 0.5 * height / math.tan(0.5 * float(meta["camera_angle_y"])) if "camera_angle_y" in meta else fx
    return Intrinsics(fx, fy, width / 2, height / 2, width, height)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG")


def resolve_image_path(root: Path, file_path: str, exists: Callable[[str], bool] | None = None) -> str:
    """NeRF-synthetic files often omit the extension ("./train/r_0"); find the file that exists.

    `exists` tells whether a relative path exists (default: in the folder `root`); an object listing's keys
    answer it before anything is downloaded.
    """
    present = exists or (lambda rel: (root / rel).exists())
    rel = file_path[2:] if file_path.startswith("./") else file_path
    if PurePosixPath(rel).suffix and present(rel):
        return rel
    for ext in IMAGE_EXTENSIONS:
        if present(rel + ext):
            return rel + ext
    return rel


def transforms_sources(root: Path, transforms_file: str, exists: Callable[[str], bool] | None = None) -> list[str]:
    """The transforms files a capture is read from, in order: the train/test splits win over the main file."""
    present = exists or (lambda rel: (root / rel).exists())
    sources = [TRAIN_FILE] if present(TRAIN_FILE) else [transforms_file]
    return [*sources, TEST_FILE] if present(TEST_FILE) else sources


def load_capture(root: Path, transforms_file: str = "transforms.json") -> Capture:
    """Read a capture folder without validating it (see the capture checks for that).

    `transforms_train.json` / `transforms_test.json` next to the main file are honoured as splits; a
    capture with only one file is all training views.
    """
    from PIL import Image

    root = Path(root)
    sources: list[tuple[Path, Split]] = [
        (root / name, "test" if name == TEST_FILE else "train") for name in transforms_sources(root, transforms_file)
    ]

    frames: list[Frame] = []
    meta: dict = {}
    for path, split in sources:
        doc = json.loads(path.read_text())
        meta = meta or doc
        for raw in doc["frames"]:
            mask = resolve_image_path(root, raw["mask_path"]) if raw.get("mask_path") else None
            c2w = np.asarray(raw["transform_matrix"], float)
            frames.append(Frame(resolve_image_path(root, raw["file_path"]), c2w, split, mask))

    with Image.open(root / frames[0].image) as first:
        width, height = first.size
    gt = next((root / n for n in GROUND_TRUTH_NAMES if (root / n).exists()), None)
    return Capture(root, intrinsics_from_meta(meta, width, height), frames, gt)
