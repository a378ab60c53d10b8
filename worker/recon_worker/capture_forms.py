"""Capture forms: bring a fetched capture as people have it into the canonical form the engine reads.

The engine reads one form: a `transforms.json` (or train/test split files) with shared pinhole
intrinsics, a camera-to-world pose per frame, and an object mask per image (alpha or `mask_path`).
Captures arrive in others:

- **nerfstudio / COLMAP**: per-frame `fl_x`/`fl_y`/`cx`/`cy`/`w`/`h`, lens distortion (`camera_model`
  `OPENCV` or `OPENCV_FISHEYE` with its coefficients, globally or per frame), `applied_transform`.
  Every frame whose camera differs from the shared pinhole one is resampled once onto it
  (`recon_worker.distortion`), its mask with it, and the transforms are rewritten without the
  per-frame keys.
- **RGB without masks**: a mask provider (`recon_worker.masks`) writes a mask per image.
- **photos without poses**: structure from motion (`recon_worker.poses`) writes the transforms file.

`prepare_capture` edits the fetched copy in place (the input itself is never touched) and returns a
`CaptureForm` that says what it found and did, which `recon-worker validate` prints.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recon_worker.capture import REFERENCE_FOLDER, Intrinsics, intrinsics_from_meta, resolve_image_path
from recon_worker.distortion import COEFFICIENTS, Lens, UnknownCameraModel, lens_from_meta, undistort_image
from recon_worker.errors import InputsInvalid
from recon_worker.masks import (
    CLEAN_PLATE_NAMES,
    AlphaMasks,
    BackdropMasks,
    MaskProvider,
    ModelMasks,
    clean_plate,
)
from recon_worker.poses import SfmOptions, estimate_poses, list_photos, write_transforms

SPLIT_FILES = ("transforms_train.json", "transforms_test.json")
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
LENS_KEYS = ("camera_model", *sorted({k for keys in COEFFICIENTS.values() for k in keys}))
PREPARED_FOLDER = "_prepared"  # resampled images and written masks, inside the fetched capture
POSES_WEIGHT = 25.0  # progress weight of stage `poses` (SfM on the CPU) against the other stages
INTRINSICS_TOLERANCE = 1e-6  # pixels: cameras closer than this are the same camera
# Files of a photo folder that are not photos to pose: the worker's own, the clean plate, a reference capture.
NOT_PHOTOS = (PREPARED_FOLDER, f"{REFERENCE_FOLDER}/", *CLEAN_PLATE_NAMES)


@dataclass
class CaptureForm:
    """What a capture looked like on arrival, and what was done to bring it into the canonical form."""

    poses: str = "given"  # given | estimate (before structure from motion) | estimated (after)
    masks: str = "alpha"  # alpha | files | backdrop | model
    camera_models: list[str] = field(default_factory=list)
    per_frame_intrinsics: bool = False
    resampled: list[str] = field(default_factory=list)  # images undistorted or re-projected
    applied_transform: list[list[float]] | None = None  # nerfstudio's, [3, 4] or [4, 4]
    notes: list[str] = field(default_factory=list)

    def explain(self) -> str:
        lines = [f"poses: {self.poses}", f"masks: {self.masks}"]
        models = ", ".join(self.camera_models) or "PINHOLE"
        lines.append(f"camera model(s): {models}" + ("; per-frame intrinsics" if self.per_frame_intrinsics else ""))
        if self.resampled:
            lines.append(f"resampled onto one pinhole camera: {len(self.resampled)} image(s)")
        if self.applied_transform is not None:
            lines.append("applied_transform: kept (the mesh is in the frame of the transform matrices)")
        lines += self.notes
        # Indented without a dash: the checks list their problems as "  - ..." below it.
        return "capture form:\n" + "\n".join(f"  {line}" for line in lines)


def transforms_sources(root: Path, transforms_file: str) -> list[Path]:
    """The transforms files a capture is read from, in the order `capture.load_capture` reads them."""
    train, test = root / SPLIT_FILES[0], root / SPLIT_FILES[1]
    sources = [train] if train.exists() else [root / transforms_file]
    if test.exists():
        sources.append(test)
    return [s for s in sources if s.is_file()]


def _read_documents(sources: list[Path]) -> list[dict[str, Any]] | None:
    """The parsed transforms files, or None when any is unreadable (the capture checks then say why)."""
    docs = []
    for source in sources:
        try:
            doc = json.loads(source.read_text())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
            return None
        if not all(isinstance(f, dict) and isinstance(f.get("file_path"), str) for f in doc["frames"]):
            return None
        docs.append(doc)
    return docs


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError):
        return None


def _frame_camera(top: dict[str, Any], frame: dict[str, Any], size: tuple[int, int]) -> Intrinsics:
    """A frame's pinhole intrinsics: its own keys over the file's top-level ones."""
    merged = {k: v for k, v in top.items() if k in INTRINSIC_KEYS}
    if any(k in frame for k in ("fl_x", "fl_y")):
        merged = {k: v for k, v in merged.items() if not k.startswith("camera_angle")}
    merged.update({k: v for k, v in frame.items() if k in INTRINSIC_KEYS})
    return intrinsics_from_meta(merged, *size)


def _same_camera(a: Intrinsics, b: Intrinsics) -> bool:
    if (a.width, a.height) != (b.width, b.height):
        return False
    pairs = zip((a.fx, a.fy, a.cx, a.cy), (b.fx, b.fy, b.cx, b.cy), strict=True)
    return all(abs(x - y) <= INTRINSICS_TOLERANCE for x, y in pairs)


def _check_applied_transform(value: Any, where: str) -> list[list[float]]:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputsInvalid(f"{where}: applied_transform is not a matrix of numbers") from None
    if m.shape not in ((3, 4), (4, 4)) or not np.isfinite(m).all():
        raise InputsInvalid(f"{where}: applied_transform must be a finite 3x4 or 4x4 matrix, not {list(m.shape)}")
    return m.tolist()


def _read_pixels(path: Path) -> tuple[np.ndarray, str]:
    from PIL import Image

    with Image.open(path) as im:
        mode = "RGBA" if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info else "RGB"
        return np.asarray(im.convert(mode)), mode


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _prepared_name(rel: str) -> str:
    return f"{PREPARED_FOLDER}/{Path(rel).with_suffix('.png').as_posix()}"


def undistort_capture(root: Path, transforms_file: str, form: CaptureForm) -> None:
    """Resample every frame whose camera is not the shared pinhole one onto it; rewrite the transforms.

    The shared camera has the most common image size, and the file's top-level intrinsics (without
    distortion) at that size, else those of the first frame of that size. Masks are resampled with their
    images; pixels that fall outside the source image become black and, in alpha or masks, background.
    """
    sources = transforms_sources(root, transforms_file)
    docs = _read_documents(sources)
    if not docs or not docs[0]["frames"]:
        return  # nothing readable: the capture checks report it
    per_frame = any(k in f for d in docs for f in d["frames"] for k in INTRINSIC_KEYS)
    lens_keys = any(k in f for d in docs for f in (d, *d["frames"]) for k in LENS_KEYS)
    # Pass 1: each frame's lens and camera (frames whose image is unreadable are the checks' to report).
    cameras: list[tuple[dict[str, Any], str, Lens, Intrinsics]] = []
    models: set[str] = set()
    for source, doc in zip(sources, docs, strict=True):
        if "applied_transform" in doc:
            form.applied_transform = _check_applied_transform(doc["applied_transform"], source.name)
        for index, frame in enumerate(doc["frames"]):
            where = f"{source.name} frame {index}"
            try:
                lens = lens_from_meta(frame, doc)
            except (UnknownCameraModel, ValueError) as exc:
                raise InputsInvalid(f"{where}: {exc}") from None
            models.add(lens.model)
            rel = resolve_image_path(root, frame["file_path"])
            size = _image_size(root / rel)
            if size is None:
                continue
            try:
                camera = _frame_camera(doc, frame, size)
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                if per_frame:
                    raise InputsInvalid(f"{where}: its intrinsics are incomplete or not numbers") from None
                return  # no usable top-level intrinsics: the capture checks say why
            cameras.append((frame, rel, lens, camera))
    form.camera_models = sorted(models)
    form.per_frame_intrinsics = per_frame
    if not cameras or not (per_frame or lens_keys):
        return
    sizes = Counter((c.width, c.height) for *_, c in cameras)
    size = sizes.most_common(1)[0][0]
    top = docs[0]
    if any(k in top for k in ("fl_x", "camera_angle_x")):
        target = _frame_camera(top, {}, size)
    else:
        target = next(c for *_, c in cameras if (c.width, c.height) == size)
    # Pass 2: resample what differs, drop the per-frame keys, write the shared camera at the top.
    for frame, rel, lens, camera in cameras:
        if lens.distorted or not _same_camera(camera, target):
            _resample_frame(root, frame, rel, camera, lens, target)
            form.resampled.append(rel)
    shared = {"fl_x": target.fx, "fl_y": target.fy, "cx": target.cx, "cy": target.cy}
    shared |= {"w": target.width, "h": target.height}
    for source, doc in zip(sources, docs, strict=True):
        for key in (*INTRINSIC_KEYS, *LENS_KEYS):
            doc.pop(key, None)
            for frame in doc["frames"]:
                frame.pop(key, None)
        source.write_text(json.dumps({**shared, **doc}, indent=1))


def _resample_frame(
    root: Path, frame: dict[str, Any], rel: str, camera: Intrinsics, lens: Lens, target: Intrinsics
) -> None:
    pixels, _mode = _read_pixels(root / rel)
    out = _prepared_name(rel)
    _write_png(root / out, undistort_image(pixels, camera, lens, target))
    frame["file_path"] = out
    if isinstance(frame.get("mask_path"), str):
        mask_rel = resolve_image_path(root, frame["mask_path"])
        from PIL import Image

        with Image.open(root / mask_rel) as m:
            mask = np.asarray(m.convert("L"))
        mask_out = f"{PREPARED_FOLDER}/masks/{Path(mask_rel).with_suffix('.png').as_posix()}"
        _write_png(root / mask_out, undistort_image(mask, camera, lens, target))
        frame["mask_path"] = mask_out


@dataclass(frozen=True)
class FormChoice:
    """What the task says about the capture's form (`spec.input`); `auto` decides from the files."""

    poses: Literal["auto", "given", "estimate"] = "auto"
    masks: Literal["auto", "alpha", "files", "backdrop", "model"] = "auto"
    mask_model: Path | None = None  # ONNX file for masks: model
    sfm: SfmOptions = field(default_factory=SfmOptions)


def form_choice(spec: Any) -> FormChoice:
    """The choice from a task's `input` (recon_worker.task.InputSpec)."""
    return FormChoice(
        poses=spec.poses,
        masks=spec.masks,
        mask_model=Path(spec.mask_model) if spec.mask_model else None,
        sfm=SfmOptions(matching=spec.matching, min_registered=spec.min_registered),
    )


def _has_alpha(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    except (OSError, ValueError):
        return False


def mask_provider(choice: FormChoice, root: Path) -> MaskProvider:
    if choice.masks == "model":
        if choice.mask_model is None:
            raise InputsInvalid("masks: model needs the path of an ONNX matting model (input.maskModel)")
        return ModelMasks(choice.mask_model)
    if choice.masks == "alpha":
        return AlphaMasks()
    return BackdropMasks(plate=clean_plate(root))


def _write_masks(root: Path, names: Sequence[str], masks: Sequence[np.ndarray]) -> dict[str, str]:
    written = {}
    for name, mask in zip(names, masks, strict=True):
        rel = f"{PREPARED_FOLDER}/masks/{Path(name).with_suffix('.png').as_posix()}"
        _write_png(root / rel, mask)
        written[name] = rel
    return written


def _estimate(
    root: Path,
    transforms_file: str,
    choice: FormChoice,
    workdir: Path,
    form: CaptureForm,
    progress: Callable[[float], None] | None = None,
) -> None:
    names = list_photos(root, exclude=NOT_PHOTOS)
    alpha = bool(names) and all(_has_alpha(root / n) for n in names)
    if choice.masks == "files":
        raise InputsInvalid("masks: files needs a transforms file with mask_path; photos without poses have none")
    provider = mask_provider(
        choice if choice.masks != "auto" else FormChoice(masks="alpha" if alpha else "backdrop"), root
    )
    masks = list(provider.masks([root / n for n in names]))
    form.masks = provider.name
    if progress:
        progress(0.1)
    result = estimate_poses(root, names, workdir, dict(zip(names, masks, strict=True)), choice.sfm, progress)
    mask_paths = None if provider.name == "alpha" else _write_masks(root, names, masks)
    write_transforms(root, result, mask_paths, transforms_file)
    form.poses = "estimated"
    form.notes.append(
        f"structure from motion: {len(result.c2w)} of {len(result.names)} photos registered "
        f"({result.share:.0%}), {len(result.points)} points, {result.reprojection_error:.2f} px mean reprojection "
        f"error, {result.seconds:.1f} s"
    )
    if result.unregistered:
        form.notes.append("not registered: " + ", ".join(result.unregistered))


def _mask_given_frames(root: Path, transforms_file: str, choice: FormChoice, form: CaptureForm) -> None:
    """Masks for a posed capture: given ones are kept; a backdrop or model provider writes mask_path."""
    sources = transforms_sources(root, transforms_file)
    docs = _read_documents(sources)
    if not docs:
        return
    frames = [f for d in docs for f in d["frames"]]
    rels = [resolve_image_path(root, f["file_path"]) for f in frames]
    if choice.masks == "auto":
        if any("mask_path" in f for f in frames):
            form.masks = "files"
        elif any(_has_alpha(root / r) for r in rels):
            form.masks = "alpha"
        else:
            form.masks = "backdrop"
    else:
        form.masks = choice.masks
    if form.masks in ("alpha", "files"):
        return  # read by the capture loader; the capture checks say what is missing
    if not rels or any(_image_size(root / r) is None for r in rels):
        return  # no frames, or missing or undecodable images: the capture checks name them
    provider = mask_provider(FormChoice(masks=form.masks, mask_model=choice.mask_model), root)  # type: ignore[arg-type]
    written = _write_masks(root, rels, list(provider.masks([root / r for r in rels])))
    for frame, rel in zip(frames, rels, strict=True):
        frame["mask_path"] = written[rel]
    for source, doc in zip(sources, docs, strict=True):
        source.write_text(json.dumps(doc, indent=1))


def detect_poses(root: Path, transforms_file: str, choice: FormChoice) -> str:
    """`given` or `estimate`: what `auto` means for this folder (a transforms file, else photos)."""
    if choice.poses != "auto":
        return choice.poses
    return "given" if transforms_sources(root, transforms_file) else "estimate"


def describe_capture(root: Path, transforms_file: str, choice: FormChoice | None = None) -> CaptureForm:
    """What `prepare_capture` would find, without changing anything (no resampling, masks or SfM)."""
    choice = choice or FormChoice()
    form = CaptureForm(poses=detect_poses(root, transforms_file, choice))
    if form.poses == "estimate":
        photos = list_photos(root, exclude=NOT_PHOTOS)
        alpha = bool(photos) and all(_has_alpha(root / n) for n in photos)
        form.masks = choice.masks if choice.masks != "auto" else ("alpha" if alpha else "backdrop")
        plate = " and a clean plate" if clean_plate(root) else ""
        form.notes.append(f"{len(photos)} photo(s){plate} to pose by structure from motion when the job runs")
        return form
    docs = _read_documents(transforms_sources(root, transforms_file)) or []
    frames = [f for d in docs for f in d["frames"]]
    models: set[str] = set()
    for doc in docs:
        for frame in doc["frames"]:
            try:
                models.add(lens_from_meta(frame, doc).model)
            except ValueError as exc:
                form.notes.append(f"lens: {exc}")
    form.camera_models = sorted(models)
    form.per_frame_intrinsics = any(k in f for f in frames for k in INTRINSIC_KEYS)
    if choice.masks != "auto":
        form.masks = choice.masks
    elif any("mask_path" in f for f in frames):
        form.masks = "files"
    elif any(_has_alpha(root / resolve_image_path(root, f["file_path"])) for f in frames):
        form.masks = "alpha"
    else:
        form.masks = "backdrop"
    return form


def needs_poses(root: Path, transforms_file: str, choice: FormChoice) -> bool:
    """Whether the capture's poses are to be estimated (and there are photos to estimate them from)."""
    photos = list_photos(root, exclude=NOT_PHOTOS)
    return detect_poses(root, transforms_file, choice) == "estimate" and bool(photos)


def estimate_capture_poses(
    root: Path,
    transforms_file: str,
    choice: FormChoice,
    workdir: Path,
    progress: Callable[[float], None] | None = None,
) -> CaptureForm:
    """Stage `poses`: masks for the photos, then structure from motion; writes the transforms file(s)
    and the masks into `root`. Raises PosesUnrecoverable when too few photos register."""
    form = CaptureForm()
    _estimate(root, transforms_file, choice, workdir, form, progress)
    return form


def copy_poses(root: Path, dest: Path) -> list[Path]:
    """The files structure from motion wrote into `root` (transforms, masks), copied under `dest`."""
    written = []
    for path in [*sorted(root.glob("transforms*.json")), *sorted((root / PREPARED_FOLDER / "masks").rglob("*"))]:
        if path.is_file():
            target = dest / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            written.append(target)
    return written


def prepare_capture(
    root: Path,
    transforms_file: str = "transforms.json",
    choice: FormChoice | None = None,
    workdir: Path | None = None,
    *,
    poses_ready: bool = False,
) -> CaptureForm:
    """Bring the fetched capture at `root` into the canonical form, in place; say what was done.

    Order: poses (structure from motion, masks first so that it sees only the object; skipped when
    `poses_ready`, i.e. `estimate_capture_poses` already ran), lens undistortion, then masks for posed
    captures that have none.
    """
    choice = choice or FormChoice()
    form = CaptureForm()
    poses = "given" if poses_ready else detect_poses(root, transforms_file, choice)
    if poses_ready:
        form.poses = "estimated"
    if poses == "estimate":
        if not list_photos(root, exclude=NOT_PHOTOS):
            return form  # nothing to pose: the capture checks report the missing transforms file
        _estimate(root, transforms_file, choice, workdir or root.parent / "sfm", form)
    elif not transforms_sources(root, transforms_file):
        raise InputsInvalid(
            f"input.poses is given but the capture has no {transforms_file} (or transforms_train.json); "
            "set input.poses to estimate to pose plain photos by structure from motion"
        )
    undistort_capture(root, transforms_file, form)
    if poses == "given" and not poses_ready:
        _mask_given_frames(root, transforms_file, choice, form)
    elif poses_ready:
        form.masks = choice.masks if choice.masks != "auto" else "(as for structure from motion)"
    if (root / REFERENCE_FOLDER).is_dir():
        # Read and checked now, so that a bad reference fails before any engine work, not in validate.
        from recon_worker.engine.reference import load_reference

        reference = load_reference(root / REFERENCE_FOLDER)
        form.notes.append(
            f"reference views: {REFERENCE_FOLDER}/ ({len(reference.frames)} frames), scored by validate as well"
        )
    return form
