"""Capture validation: every reason a capture cannot be reconstructed, found before any GPU work.

`check_capture` reads a capture folder on local disk (after fetch) and returns every problem it finds,
each naming its file and frame, e.g. "frame 17: images/r_17.png is not a PNG or JPEG (first bytes
3c 68 74 6d)". It never stops at the first failing frame. `check_listing` applies the size limits to
an object listing before anything is downloaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recon_worker.capture import resolve_image_path
from recon_worker.errors import InputsInvalid
from recon_worker.storage import StoredObject

SPLIT_FILES = ("transforms_train.json", "transforms_test.json")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
ORTHONORMAL_TOLERANCE = 1e-3  # max |R^T R - I| entry; exported poses are float32, so far below this
MAX_LISTED_PROBLEMS = 50  # in one error message; the rest are counted


class CaptureLimits(BaseModel):
    """Bounds on what a worker accepts; the pixel bound guards against decompression bombs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_file_bytes: int = Field(default=20 * 1000**2, gt=0, description="Largest image file, bytes.")
    max_total_bytes: int = Field(default=2 * 1000**3, gt=0, description="Whole capture, bytes.")
    max_pixels: int = Field(default=50_000_000, gt=0, description="Largest image, width x height.")
    min_views: int = Field(default=8, ge=1, description="Fewest frames (all splits together).")


@dataclass(frozen=True)
class Problem:
    where: str  # "transforms.json", "frame 3", "transforms_test.json frame 2"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class CaptureReport:
    problems: list[Problem]
    frames: int
    resolution: tuple[int, int] | None  # (width, height) shared by all images

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            width, height = self.resolution or (0, 0)
            return f"capture OK: {self.frames} frames of {width}x{height}"
        lines = [f"capture invalid: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems[:MAX_LISTED_PROBLEMS]]
        if len(self.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED_PROBLEMS} more")
        return "\n".join(lines)


class CaptureInvalid(InputsInvalid):
    def __init__(self, report: CaptureReport) -> None:
        super().__init__(report.summary())
        self.report = report


def check_listing(objects: Sequence[StoredObject], limits: CaptureLimits) -> list[Problem]:
    """Size limits from a listing, so an oversized capture is refused before it is downloaded."""
    problems = []
    total = sum(o.size for o in objects)
    if total > limits.max_total_bytes:
        problems.append(Problem("capture", f"is {total:,} bytes, above the limit of {limits.max_total_bytes:,}"))
    image_suffixes = {".png", ".jpg", ".jpeg"}
    for obj in objects:
        if PurePosixPath(obj.key).suffix.lower() in image_suffixes and obj.size > limits.max_file_bytes:
            problems.append(Problem(obj.key, f"is {obj.size:,} bytes, above the limit of {limits.max_file_bytes:,}"))
    return problems


def unsafe_path_reason(file_path: str) -> str | None:
    """Why an image path could escape the capture folder, or None when it stays inside."""
    if "://" in file_path or file_path.startswith("//"):
        return "is a URL; image paths must be relative to the capture folder"
    if file_path.startswith(("/", "\\")) or (len(file_path) > 1 and file_path[1] == ":"):
        return "is absolute; image paths must be relative to the capture folder"
    if ".." in PurePosixPath(file_path.replace("\\", "/")).parts:
        return "contains '..'; image paths must stay inside the capture folder"
    return None


def intrinsics_problems(meta: dict[str, Any]) -> list[str]:
    """`camera_angle_x`, or `fl_x` (and optional `fl_y`) with `cx`, `cy`, `w`, `h`: finite and positive."""

    def bad(key: str) -> bool:
        value = meta.get(key)
        return not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value)

    if "fl_x" in meta:
        missing = [k for k in ("fl_x", "cx", "cy", "w", "h") if k not in meta]
        if missing:
            return [f"fl_x is given without {', '.join(missing)}"]
        invalid = [k for k in ("fl_x", "fl_y", "cx", "cy", "w", "h") if k in meta and bad(k)]
        if invalid:
            return [f"{', '.join(invalid)} must be finite numbers"]
        if meta["fl_x"] <= 0 or meta.get("fl_y", 1) <= 0 or meta["w"] <= 0 or meta["h"] <= 0:
            return ["fl_x, fl_y, w and h must be positive"]
        return []
    if "camera_angle_x" in meta:
        if bad("camera_angle_x") or not 0 < meta["camera_angle_x"] < math.pi:
            return [f"camera_angle_x must be a number in (0, pi) radians, not {meta['camera_angle_x']!r}"]
        return []
    return ["no intrinsics: expected camera_angle_x, or fl_x/fl_y with cx, cy, w and h"]


def pose_problem(matrix: Any) -> str | None:
    """Why `transform_matrix` is not a finite 4x4 rigid camera-to-world transform, or None."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        return "transform_matrix is not a 4x4 matrix of numbers"
    if m.shape != (4, 4):
        return f"transform_matrix has shape {list(m.shape)}, expected 4x4"
    if not np.isfinite(m).all():
        return "transform_matrix holds NaN or infinite values"
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        return f"transform_matrix's last row is {m[3].tolist()}, expected [0, 0, 0, 1]"
    rotation = m[:3, :3]
    error = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if error > ORTHONORMAL_TOLERANCE:
        return f"transform_matrix's rotation is not orthonormal (|RᵀR - I| up to {error:.3g})"
    if np.linalg.det(rotation) < 0:
        return "transform_matrix's rotation is a reflection (determinant -1)"
    return None


@dataclass(frozen=True)
class _ImageFacts:
    size: tuple[int, int]
    has_alpha: bool


def _inspect_image(path: Path, rel: str, limits: CaptureLimits) -> tuple[_ImageFacts | None, str | None]:
    """Read one image file: magic bytes, limits, full decode. Returns (facts, None) or (None, problem)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return None, f"{rel} does not exist"
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        return None, f"{rel} is {size:,} bytes, above the limit of {limits.max_file_bytes:,}"
    with path.open("rb") as f:
        head = f.read(8)
    if not head.startswith((PNG_MAGIC, JPEG_MAGIC)):
        return None, f"{rel} is not a PNG or JPEG (first bytes {head[:4].hex(' ') or 'none: empty file'})"
    try:
        with Image.open(path) as im:
            width, height = im.size
            # Check the header's size before decoding, so a tiny file claiming 100k x 100k is never expanded.
            if width * height > limits.max_pixels:
                return None, f"{rel} is {width}x{height} pixels, above the limit of {limits.max_pixels:,}"
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            if has_alpha:
                low, _high = im.convert("RGBA").getchannel("A").getextrema()
                if low == 255:
                    return None, f"{rel} has an alpha channel that is fully opaque: it masks nothing"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return None, f"{rel} does not decode: {exc}"
    return _ImageFacts((width, height), has_alpha), None


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _load_transforms(path: Path, name: str, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        problems.append(Problem(name, "does not exist in the capture folder"))
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append(Problem(name, f"is not valid JSON: {exc}"))
        return None
    if not isinstance(doc, dict):
        problems.append(Problem(name, "must be a JSON object"))
        return None
    if not isinstance(doc.get("frames"), list) or not doc["frames"]:
        problems.append(Problem(name, "has no 'frames' list (or it is empty)"))
        return None
    return doc


def check_capture(
    root: Path, transforms_file: str = "transforms.json", limits: CaptureLimits | None = None
) -> CaptureReport:
    """Every problem of the capture folder `root`, in file and frame order."""
    limits = limits or CaptureLimits()
    problems: list[Problem] = []
    train, test = root / SPLIT_FILES[0], root / SPLIT_FILES[1]
    # Same file choice as `capture.load_capture`: train/test splits win over the main file.
    sources = [train] if train.exists() else [root / transforms_file]
    if test.exists():
        sources.append(test)

    frames = 0
    total_bytes = 0
    resolutions: dict[tuple[int, int], str] = {}  # size -> first frame seen with it
    intrinsics_checked = False
    for source in sources:
        doc = _load_transforms(source, source.name, problems)
        if doc is None:
            continue
        if not intrinsics_checked:
            problems += [Problem(source.name, m) for m in intrinsics_problems(doc)]
            intrinsics_checked = True
        prefix = "" if source == sources[0] and len(sources) == 1 else f"{source.name} "
        for index, raw in enumerate(doc["frames"]):
            where = f"{prefix}frame {index}"
            frames += 1
            if not isinstance(raw, dict):
                problems.append(Problem(where, "is not a JSON object"))
                continue
            if (reason := pose_problem(raw.get("transform_matrix"))) is not None:
                problems.append(Problem(where, reason))
            file_path = raw.get("file_path")
            if not isinstance(file_path, str) or not file_path:
                problems.append(Problem(where, "has no file_path"))
                continue
            if (reason := unsafe_path_reason(file_path)) is not None:
                problems.append(Problem(where, f"file_path {file_path!r} {reason}"))
                continue
            rel = resolve_image_path(root, file_path)
            facts, reason = _inspect_image(root / rel, rel, limits)
            if reason is not None or facts is None:
                problems.append(Problem(where, reason or "unreadable"))
                continue
            total_bytes += (root / rel).stat().st_size
            resolutions.setdefault(facts.size, where)
            if len(resolutions) > 1 and facts.size != next(iter(resolutions)):
                first_size, first_where = next(iter(resolutions.items()))
                problems.append(Problem(where, f"{rel} is {_wxh(facts.size)}, but {first_where} is {_wxh(first_size)}"))
            mask_path = raw.get("mask_path")
            if mask_path is not None:
                if not isinstance(mask_path, str) or (reason := unsafe_path_reason(mask_path)) is not None:
                    problems.append(Problem(where, f"mask_path {mask_path!r} {reason or 'must be a string'}"))
                    continue
                mask_rel = resolve_image_path(root, mask_path)
                mask, reason = _inspect_image(root / mask_rel, mask_rel, limits)
                if reason is not None or mask is None:
                    problems.append(Problem(where, f"mask {reason}"))
                elif mask.size != facts.size:
                    problems.append(
                        Problem(where, f"mask {mask_rel} is {_wxh(mask.size)}, its image {rel} is {_wxh(facts.size)}")
                    )
            elif not facts.has_alpha:
                problems.append(Problem(where, f"{rel} has no object mask: give it an alpha channel or a mask_path"))

    if frames and frames < limits.min_views:
        problems.append(Problem("capture", f"has {frames} views; at least {limits.min_views} are needed"))
    if total_bytes > limits.max_total_bytes:
        limit = limits.max_total_bytes
        problems.append(Problem("capture", f"images total {total_bytes:,} bytes, above the limit of {limit:,}"))
    resolution = next(iter(resolutions)) if len(resolutions) == 1 else None
    return CaptureReport(problems, frames, resolution)


def require_valid_capture(
    root: Path, transforms_file: str = "transforms.json", limits: CaptureLimits | None = None
) -> CaptureReport:
    """`check_capture`, raising CaptureInvalid (exit 2, reason InputsInvalid) listing every problem."""
    report = check_capture(root, transforms_file, limits)
    if not report.ok:
        raise CaptureInvalid(report)
    return report
