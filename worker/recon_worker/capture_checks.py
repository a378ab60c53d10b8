"""Capture validation: every reason a capture cannot be reconstructed, found before any GPU work.

`check_capture` reads a capture folder on local disk (after fetch) and returns every problem it finds,
each naming its file and frame, e.g. "frame 17: images/r_17.png is not a PNG or JPEG (first bytes
3c 68 74 6d)". It never stops at the first failing frame. `check_listing` applies the size limits to
an object listing before anything is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recon_worker.capture import GROUND_TRUTH_NAMES, resolve_image_path, transforms_sources
from recon_worker.errors import InputsInvalid
from recon_worker.memory import memory_model, worker_memory_bytes
from recon_worker.names import printable
from recon_worker.storage import StoredObject
from recon_worker.task import key_problem

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
ORTHONORMAL_TOLERANCE = 1e-3  # max |R^T R - I| entry; exported poses are float32, so far below this
MAX_LISTED_PROBLEMS = 50  # in one error message; the rest are counted
MAX_TRANSFORMS_BYTES = 64 * 2**20  # a transforms file of 100k frames is ~50 MB
MAX_NUMBER_DIGITS = 64  # longer integer literals in a transforms file are refused, never parsed
MASK_THRESHOLD = 128  # alpha at or above this is the object

DEFAULT_MAX_VIEWS = 1000  # without any memory figure (see `memory.py`)
DEFAULT_MAX_TOTAL_PIXELS = 200_000_000


class CaptureLimits(BaseModel):
    """Bounds on what a worker accepts; the pixel bound guards against decompression bombs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_file_bytes: int = Field(default=20 * 1000**2, gt=0, description="Largest image file, bytes.")
    max_total_bytes: int = Field(default=2 * 1000**3, gt=0, description="Whole capture, bytes.")
    max_pixels: int = Field(default=50_000_000, gt=0, description="Largest image, width x height.")
    min_views: int = Field(default=8, ge=1, description="Fewest frames (all splits together).")
    max_views: int = Field(default=DEFAULT_MAX_VIEWS, ge=1, description="Most frames (all splits together).")
    max_total_pixels: int = Field(
        default=DEFAULT_MAX_TOTAL_PIXELS, gt=0, description="Decoded pixels of all views together (memory)."
    )
    memory_bytes: int | None = Field(
        default=None, description="The memory the two limits above were derived from (for messages)."
    )

    @classmethod
    def for_worker(cls, device: str = "cuda", **overrides: Any) -> CaptureLimits:
        """Limits for the memory this worker may use (`memory.worker_memory_bytes`) on `device` ("cuda" or
        "cpu"); the fixed defaults when nothing says how much memory there is."""
        memory = worker_memory_bytes()
        return cls.for_memory(memory, device, **overrides) if memory is not None else cls(**overrides)

    @classmethod
    def for_memory(cls, memory_bytes: int, device: str = "cuda", **overrides: Any) -> CaptureLimits:
        """Limits whose worst case fits in `memory_bytes` (the pod's memory) on `device`, see `memory_model`."""
        views, pixels = memory_model(memory_bytes, device)
        values: dict[str, Any] = {"max_views": views, "max_total_pixels": pixels, "memory_bytes": memory_bytes}
        return cls(**{**values, **overrides})

    def _derived(self) -> str:
        if self.memory_bytes is None:
            return ""
        return f", derived from {self.memory_bytes / 2**30:.1f} GiB of memory"


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
            limit = limits.max_file_bytes
            problems.append(
                Problem(printable(obj.key, quote=False), f"is {obj.size:,} bytes, above the limit of {limit:,}")
            )
    return problems


def transforms_objects(objects: Sequence[StoredObject], transforms_file: str) -> list[StoredObject]:
    """The transforms files among `objects`, to be fetched (and read) before anything else."""
    keys = {o.key for o in objects}
    names = set(transforms_sources(Path(), transforms_file, keys.__contains__))
    return [o for o in objects if o.key in names]


def referenced_objects(root: Path, objects: Sequence[StoredObject], transforms_file: str) -> list[StoredObject]:
    """The objects the capture uses: its transforms files (already in `root`), every image and mask they
    reference, and the ground truth; the rest of the prefix is never downloaded. Unreadable transforms select
    only themselves (the checks then say why)."""
    keys = {o.key for o in objects}
    wanted = set(transforms_sources(root, transforms_file, keys.__contains__)) | set(GROUND_TRUTH_NAMES)
    for name in transforms_sources(root, transforms_file, keys.__contains__):
        doc = _load_transforms(root / name, name, [])
        for raw in doc["frames"] if doc is not None else []:
            for field in ("file_path", "mask_path") if isinstance(raw, dict) else ():
                value = raw.get(field)
                if isinstance(value, str) and value and unsafe_path_reason(value) is None:
                    wanted.add(resolve_image_path(root, value, keys.__contains__))
    return [o for o in objects if o.key in wanted]


def key_problems(objects: Sequence[StoredObject]) -> list[Problem]:
    """Keys that do not name one file each (`task.key_problem`): refused before they are downloaded."""
    return [
        Problem(printable(o.key, quote=False), f"is not a usable object key: it {reason}")
        for o in objects
        if (reason := key_problem(o.key)) is not None
    ]


def unsafe_path_reason(file_path: str) -> str | None:
    """Why an image path could escape the capture folder, or None when it stays inside."""
    if "://" in file_path or file_path.startswith("//"):
        return "is a URL; image paths must be relative to the capture folder"
    if file_path.startswith(("/", "\\")) or (len(file_path) > 1 and file_path[1] == ":"):
        return "is absolute; image paths must be relative to the capture folder"
    if ".." in PurePosixPath(file_path.replace("\\", "/")).parts:
        return "contains '..'; image paths must stay inside the capture folder"
    return None


def _bad_number(value: Any) -> bool:
    return not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value)


def _angle_problem(meta: dict[str, Any], key: str) -> str | None:
    value = meta[key]
    if _bad_number(value) or not 0 < value < math.pi:
        return f"{key} must be a number in (0, pi) radians, not {value!r}"
    return None


def intrinsics_problems(meta: dict[str, Any]) -> list[str]:
    """`camera_angle_x` (and optional `camera_angle_y`), or `fl_x` (and optional `fl_y`) with `cx`, `cy`, `w`, `h`:
    finite and positive, the principal point inside the image."""
    if "fl_x" in meta:
        missing = [k for k in ("fl_x", "cx", "cy", "w", "h") if k not in meta]
        if missing:
            return [f"fl_x is given without {', '.join(missing)}"]
        invalid = [k for k in ("fl_x", "fl_y", "cx", "cy", "w", "h") if k in meta and _bad_number(meta[k])]
        if invalid:
            return [f"{', '.join(invalid)} must be finite numbers"]
        if meta["fl_x"] <= 0 or meta.get("fl_y", 1) <= 0 or meta["w"] <= 0 or meta["h"] <= 0:
            return ["fl_x, fl_y, w and h must be positive"]
        if not (0 <= meta["cx"] <= meta["w"] and 0 <= meta["cy"] <= meta["h"]):
            return [
                f"the principal point (cx, cy) = ({meta['cx']:g}, {meta['cy']:g}) lies outside the "
                f"{meta['w']:g}x{meta['h']:g} image"
            ]
        return []
    if "camera_angle_x" in meta:
        keys = ["camera_angle_x"] + (["camera_angle_y"] if "camera_angle_y" in meta else [])
        return [reason for key in keys if (reason := _angle_problem(meta, key)) is not None]
    return ["no intrinsics: expected camera_angle_x, or fl_x/fl_y with cx, cy, w and h"]


def pose_problem(matrix: Any) -> str | None:
    """Why `transform_matrix` is not a finite 4x4 rigid camera-to-world transform, or None."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError, RecursionError):
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
    digest: str  # sha256 of the file's bytes
    mask_range: tuple[int, int] | None  # (lowest, highest) mask value; None without an alpha channel


def _inspect_image(
    path: Path, rel: str, limits: CaptureLimits, *, is_mask: bool = False
) -> tuple[_ImageFacts | None, str | None]:
    """Read one image file: magic bytes, limits, full decode. Returns (facts, None) or (None, problem).

    The mask is read as `Capture.load_view` reads it: a mask file's grey level, an image's alpha channel.
    """
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        return None, f"{rel} does not exist"
    if not path.is_file():  # a folder, a FIFO or a device: reading it could block or fail
        return None, f"{rel} is not a regular file"
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        return None, f"{rel} is {size:,} bytes, above the limit of {limits.max_file_bytes:,}"
    data = path.read_bytes()
    if not data.startswith((PNG_MAGIC, JPEG_MAGIC)):
        return None, f"{rel} is not a PNG or JPEG (first bytes {data[:4].hex(' ') or 'none: empty file'})"
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            # Check the header's size before decoding, so a tiny file claiming 100k x 100k is never expanded.
            if width * height > limits.max_pixels:
                return None, f"{rel} is {width}x{height} pixels, above the limit of {limits.max_pixels:,}"
            im.load()
            has_alpha = is_mask or im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            mask_range: tuple[int, int] | None = None
            if has_alpha:
                channel = im.convert("L") if is_mask else im.convert("RGBA").getchannel("A")
                low, high = channel.getextrema()  # one band: (lowest, highest)
                mask_range = (int(low), int(high))  # type: ignore[arg-type]
    except UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        return None, f"{rel} does not decode: its header is not a readable PNG or JPEG"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return None, f"{rel} does not decode: {exc}"
    digest = hashlib.sha256(data).hexdigest()
    return _ImageFacts((width, height), has_alpha, digest, mask_range), None


def _mask_problem(rel: str, facts: _ImageFacts, what: str) -> str | None:
    """Why the object mask of one view masks nothing (no object, or no background), or None."""
    if facts.mask_range is None:
        return None
    low, high = facts.mask_range
    if high < MASK_THRESHOLD:
        return f"{rel}'s {what} is empty (highest value {high}): no pixel belongs to the object"
    if low >= MASK_THRESHOLD:  # no background pixel
        if low == 255:
            return f"{rel} has an {what} that is fully opaque: it masks nothing"
        return f"{rel}'s {what} covers the whole image (lowest value {low}): it masks nothing"
    return None


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number of {len(text.lstrip('-')):,} digits (at most {MAX_NUMBER_DIGITS} are read)")
    return int(text)


def _load_transforms(path: Path, name: str, problems: list[Problem]) -> dict[str, Any] | None:
    if not path.exists():
        problems.append(Problem(name, "does not exist in the capture folder"))
        return None
    if not path.is_file():  # a folder, or a FIFO that would block a reader forever
        problems.append(Problem(name, "is not a regular file"))
        return None
    if (size := path.stat().st_size) > MAX_TRANSFORMS_BYTES:
        problems.append(Problem(name, f"is {size:,} bytes, above the limit of {MAX_TRANSFORMS_BYTES:,}"))
        return None
    try:
        doc = json.loads(path.read_bytes(), parse_int=_bounded_int)
    except RecursionError:
        problems.append(Problem(name, "is not valid JSON: nested too deeply"))
        return None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        problems.append(Problem(name, f"is not valid JSON: {exc}"))
        return None
    if not isinstance(doc, dict):
        problems.append(Problem(name, "must be a JSON object"))
        return None
    if not isinstance(doc.get("frames"), list) or not doc["frames"]:
        problems.append(Problem(name, "has no 'frames' list (or it is empty)"))
        return None
    return doc


def _header_pixels(root: Path, docs: list[tuple[Path, dict[str, Any]]]) -> int:
    """Width x height summed over every frame's image, from the headers alone (unreadable ones count 0)."""
    from PIL import Image

    total = 0
    for _, doc in docs:
        for raw in doc["frames"]:
            file_path = raw.get("file_path") if isinstance(raw, dict) else None
            if not isinstance(file_path, str) or not file_path or unsafe_path_reason(file_path) is not None:
                continue
            path = root / resolve_image_path(root, file_path)
            if not path.is_file():
                continue
            try:
                with Image.open(path) as im:  # reads the header, decodes nothing
                    total += im.size[0] * im.size[1]
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                continue
    return total


@dataclass(frozen=True)
class FrameFacts:
    """What the per-frame checks learnt of one frame that passed them (input to the capture-wide checks)."""

    where: str
    image: str  # path relative to the capture root
    c2w: np.ndarray  # [4, 4]
    size: tuple[int, int]  # (width, height)
    digest: str  # sha256 of the image file


@dataclass
class CaptureFacts:
    frames: list[FrameFacts]
    declared_frames: int  # frames listed in the transforms files, good or bad
    decoded_pixels: int  # width x height summed over every readable image


CaptureCheck = Callable[[CaptureFacts, CaptureLimits], list[Problem]]


def duplicate_images(facts: CaptureFacts, limits: CaptureLimits) -> list[Problem]:
    """A view whose image is byte for byte another's (a copy or a link) cannot hold a second pose's evidence."""
    first: dict[str, FrameFacts] = {}
    problems = []
    for frame in facts.frames:
        earlier = first.setdefault(frame.digest, frame)
        if earlier is not frame:
            problems.append(
                Problem(
                    frame.where, f"{frame.image} is identical to {earlier.where}'s {earlier.image} (a copy, a link?)"
                )
            )
    return problems


def camera_layout(facts: CaptureFacts, limits: CaptureLimits) -> list[Problem]:
    """The cameras must stand apart and look at a common region: all at one point, or facing away from where
    the others look, no silhouette can be carved."""
    if len(facts.frames) < 2:
        return []
    centres = np.stack([f.c2w[:3, 3] for f in facts.frames])  # [N, 3]
    forward = np.stack([-f.c2w[:3, 2] for f in facts.frames])  # [N, 3] OpenGL cameras look down -Z
    scale = max(1.0, float(np.abs(centres).max()))
    if float(np.linalg.norm(centres - centres.mean(axis=0), axis=1).max()) <= 1e-6 * scale:
        where = ", ".join(f"{c:g}" for c in centres[0])
        return [Problem("capture", f"all {len(centres)} cameras are at one point ({where}): views must differ")]
    # The point nearest to every optical axis (least squares), where the views converge.
    projectors = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]  # [N, 3, 3]
    a, b = projectors.sum(axis=0), np.einsum("nij,nj->i", projectors, centres)
    if np.linalg.cond(a) > 1e6:  # (nearly) parallel axes: no point of convergence to test against
        return []
    target = np.linalg.solve(a, b)
    depth = np.einsum("ni,ni->n", target[None] - centres, forward)  # [N] distance in front of each camera
    away = [f.where for f, d in zip(facts.frames, depth, strict=True) if d <= 0]
    if not away:
        return []
    shown = ", ".join(away[:10]) + (f" and {len(away) - 10} more" if len(away) > 10 else "")
    point = ", ".join(f"{c:.3g}" for c in target)
    return [Problem("capture", f"{len(away)} camera(s) face away from ({point}), where the views converge: {shown}")]


def view_limits(facts: CaptureFacts, limits: CaptureLimits) -> list[Problem]:
    problems = []
    if facts.declared_frames > limits.max_views:
        problems.append(
            Problem(
                "capture",
                f"has {facts.declared_frames:,} views, above the limit of {limits.max_views:,}{limits._derived()}",
            )
        )
    if facts.decoded_pixels > limits.max_total_pixels:
        problems.append(
            Problem(
                "capture",
                f"decodes to {facts.decoded_pixels:,} pixels, above the limit of {limits.max_total_pixels:,}"
                f"{limits._derived()}",
            )
        )
    return problems


# Capture-wide checks, run after every frame was read; a new capture form appends its own.
CAPTURE_CHECKS: list[CaptureCheck] = [view_limits, duplicate_images, camera_layout]


def check_capture(
    root: Path, transforms_file: str = "transforms.json", limits: CaptureLimits | None = None
) -> CaptureReport:
    """Every problem of the capture folder `root`, in file and frame order, then the capture-wide ones."""
    limits = limits or CaptureLimits()
    problems: list[Problem] = []
    sources = [root / name for name in transforms_sources(root, transforms_file)]  # as `capture.load_capture`

    docs: list[tuple[Path, dict[str, Any]]] = []
    for source in sources:
        doc = _load_transforms(source, source.name, problems)
        if doc is not None:
            docs.append((source, doc))
    if docs:
        problems += [Problem(docs[0][0].name, m) for m in intrinsics_problems(docs[0][1])]
    declared = sum(len(doc["frames"]) for _, doc in docs)
    # The memory limits are checked before a single image is decoded: the count from the transforms
    # files, the pixels from the images' headers.
    early = CaptureFacts([], declared, 0 if declared > limits.max_views else _header_pixels(root, docs))
    if refused := view_limits(early, limits):
        return CaptureReport(problems + refused, declared, None)

    facts = CaptureFacts([], declared, 0)
    total_bytes = 0
    resolutions: dict[tuple[int, int], str] = {}  # size -> first frame seen with it
    for source, doc in docs:
        prefix = "" if source == sources[0] and len(sources) == 1 else f"{source.name} "
        for index, raw in enumerate(doc["frames"]):
            where = f"{prefix}frame {index}"
            if not isinstance(raw, dict):
                problems.append(Problem(where, "is not a JSON object"))
                continue
            pose_reason = pose_problem(raw.get("transform_matrix"))
            if pose_reason is not None:
                problems.append(Problem(where, pose_reason))
            file_path = raw.get("file_path")
            if not isinstance(file_path, str) or not file_path:
                problems.append(Problem(where, "has no file_path"))
                continue
            if (reason := unsafe_path_reason(file_path)) is not None:
                problems.append(Problem(where, f"file_path {printable(file_path)} {reason}"))
                continue
            rel = resolve_image_path(root, file_path)
            shown = printable(rel, quote=False)
            image, reason = _inspect_image(root / rel, shown, limits)
            if reason is not None or image is None:
                problems.append(Problem(where, reason or "unreadable"))
                continue
            total_bytes += (root / rel).stat().st_size
            facts.decoded_pixels += image.size[0] * image.size[1]
            resolutions.setdefault(image.size, where)
            if len(resolutions) > 1 and image.size != next(iter(resolutions)):
                first_size, first_where = next(iter(resolutions.items()))
                problems.append(
                    Problem(where, f"{shown} is {_wxh(image.size)}, but {first_where} is {_wxh(first_size)}")
                )
            mask_path = raw.get("mask_path")
            if mask_path is not None:
                if not isinstance(mask_path, str) or (reason := unsafe_path_reason(mask_path)) is not None:
                    problems.append(Problem(where, f"mask_path {printable(mask_path)} {reason or 'must be a string'}"))
                    continue
                mask_file = resolve_image_path(root, mask_path)
                mask_rel = printable(mask_file, quote=False)
                mask, reason = _inspect_image(root / mask_file, mask_rel, limits, is_mask=True)
                if reason is not None or mask is None:
                    problems.append(Problem(where, f"mask {reason}"))
                    continue
                if mask.size != image.size:
                    problems.append(
                        Problem(where, f"mask {mask_rel} is {_wxh(mask.size)}, its image {shown} is {_wxh(image.size)}")
                    )
                    continue
                if (reason := _mask_problem(mask_rel, mask, "mask")) is not None:
                    problems.append(Problem(where, reason))
                    continue
            elif not image.has_alpha:
                problems.append(Problem(where, f"{shown} has no object mask: give it an alpha channel or a mask_path"))
                continue
            elif (reason := _mask_problem(shown, image, "alpha channel")) is not None:
                problems.append(Problem(where, reason))
                continue
            if pose_reason is None:
                c2w = np.asarray(raw["transform_matrix"], dtype=np.float64)
                facts.frames.append(FrameFacts(where, shown, c2w, image.size, image.digest))

    if declared and declared < limits.min_views:
        problems.append(Problem("capture", f"has {declared} views; at least {limits.min_views} are needed"))
    if total_bytes > limits.max_total_bytes:
        limit = limits.max_total_bytes
        problems.append(Problem("capture", f"images total {total_bytes:,} bytes, above the limit of {limit:,}"))
    for check in CAPTURE_CHECKS:
        problems += check(facts, limits)
    resolution = next(iter(resolutions)) if len(resolutions) == 1 else None
    return CaptureReport(problems, declared, resolution)


def require_valid_capture(
    root: Path, transforms_file: str = "transforms.json", limits: CaptureLimits | None = None
) -> CaptureReport:
    """`check_capture`, raising CaptureInvalid (exit 2, reason InputsInvalid) listing every problem."""
    report = check_capture(root, transforms_file, limits)
    if not report.ok:
        raise CaptureInvalid(report)
    return report
