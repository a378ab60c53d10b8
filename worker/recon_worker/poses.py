"""Poses by structure from motion: a folder of photos without a transforms file, posed with pycolmap.

SIFT features (only inside the object masks when masks are known, so a static backdrop cannot pin
the cameras in place), exhaustive or sequential matching, incremental mapping, one shared camera
(`SIMPLE_RADIAL`: focal, principal point, one radial coefficient; COLMAP takes the focal length's
prior from EXIF when the photos carry it). The result is converted to the capture convention:
COLMAP's world-to-camera (OpenCV axes: looks down +Z, +Y down) becomes camera-to-world with OpenGL
axes (looks down -Z, +Y up), centred on the object's sparse points and scaled so that the cameras sit
`CAMERA_DISTANCE` units from it on average. The radial coefficient is written as `camera_model:
OPENCV`, `k1`, so `capture_forms` undistorts the photos like any distorted capture.

Photos under a `test/` folder are held out for the quality report (`transforms_test.json`). Photos
that do not register are listed by name; fewer than `min_registered` of them registered fails with
`PosesUnrecoverable` (exit 2) before any GPU is used.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recon_worker.errors import PosesUnrecoverable

log = logging.getLogger("recon_worker.poses")

CAMERA_DISTANCE = 4.0  # mean camera-to-object distance after normalisation, world units
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])  # flips the camera's Y and Z axes
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
HELD_OUT_FOLDER = "test"
MAX_LISTED = 20  # unregistered photos named in an error message


@dataclass(frozen=True)
class SfmOptions:
    matching: Literal["exhaustive", "sequential"] = "exhaustive"
    min_registered: float = 0.8  # share of the photos that must register
    max_image_size: int = 1600  # photos are downscaled to this longest side for feature extraction
    max_features: int = 8192
    # SIFT's contrast threshold; below COLMAP's 0.0067 so that low-contrast objects (a white cow with a
    # few patches) still give enough features at small sizes. Wrong matches are filtered geometrically.
    peak_threshold: float = 0.002
    # -1: all cores. Only 1 gives the same cameras on every run: with more, they still differed by up to
    # 0.003 in a camera matrix (test_poses_sfm's turntable; extraction and mapping both take `threads`).
    threads: int = -1
    seed: int = 0  # the mapper's and the geometric verification's RANSAC


@dataclass
class PoseResult:
    """Recovered cameras in the capture convention (see the module's docstring)."""

    names: list[str]  # every photo, relative to the capture root
    c2w: dict[str, np.ndarray]  # registered photo -> [4, 4] camera-to-world, OpenGL axes
    camera: dict[str, Any]  # fl_x, fl_y, cx, cy, w, h, camera_model, k1
    points: np.ndarray = field(repr=False)  # [P, 3] sparse points, normalised world coordinates
    reprojection_error: float = 0.0  # mean, pixels
    seconds: float = 0.0

    @property
    def unregistered(self) -> list[str]:
        return [n for n in self.names if n not in self.c2w]

    @property
    def share(self) -> float:
        return len(self.c2w) / max(1, len(self.names))


def list_photos(root: Path, exclude: Sequence[str] = ()) -> list[str]:
    """Image files under `root` (relative POSIX paths, sorted), without the `exclude`d top folders/files."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not rel.startswith(tuple(exclude)):
            found.append(rel)
    return found


def exif_focal(path: Path) -> float | None:
    """The 35 mm-equivalent focal length from a photo's EXIF, when it has one (mm)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif().get_ifd(0x8769)  # the Exif sub-IFD
    except (OSError, ValueError):
        return None
    value = exif.get(0xA405) or exif.get(0x920A)  # FocalLengthIn35mmFilm, else FocalLength
    return float(value) if value else None


def _world_to_capture(rec: Any) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Camera-to-world (OpenGL axes) per registered image id, and the points, before normalisation."""
    c2w: dict[int, np.ndarray] = {}
    for image_id, image in rec.images.items():
        if not image.has_pose:
            continue
        w2c = np.eye(4)
        w2c[:3] = np.asarray(image.cam_from_world().matrix(), dtype=np.float64)
        c2w[image_id] = np.linalg.inv(w2c) @ OPENCV_TO_OPENGL
    points = np.array([p.xyz for p in rec.points3D.values()], dtype=np.float64).reshape(-1, 3)
    return c2w, points


def normalise(c2w: Mapping[str, np.ndarray], points: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Centre on the points' median (the object, when features were masked) and scale cameras to
    CAMERA_DISTANCE on average; rotation is kept (COLMAP's world has no meaningful 'up')."""
    centres = np.stack([m[:3, 3] for m in c2w.values()])
    centre = np.median(points, axis=0) if len(points) else centres.mean(axis=0)
    scale = CAMERA_DISTANCE / max(1e-9, float(np.linalg.norm(centres - centre, axis=1).mean()))
    out = {}
    for name, m in c2w.items():
        n = m.copy()
        n[:3, 3] = (m[:3, 3] - centre) * scale
        out[name] = n
    return out, (points - centre) * scale


def estimate_poses(
    root: Path,
    names: Sequence[str],
    workdir: Path,
    masks: Mapping[str, np.ndarray] | None = None,
    options: SfmOptions | None = None,
    progress: Callable[[float], None] | None = None,
) -> PoseResult:
    """Pose the photos `names` (relative to `root`); raise PosesUnrecoverable when too few register."""
    import pycolmap
    from PIL import Image

    options = options or SfmOptions()
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "database.db"
    database.unlink(missing_ok=True)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "SIMPLE_RADIAL"
    if masks:
        # COLMAP reads <mask_path>/<image name>.png and extracts no feature where it is 0.
        mask_dir = workdir / "masks"
        for name, mask in masks.items():
            (mask_dir / f"{name}.png").parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(((np.asarray(mask) > 127) * 255).astype(np.uint8)).save(mask_dir / f"{name}.png")
        reader.mask_path = str(mask_dir)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = options.max_image_size
    extraction.num_threads = options.threads
    extraction.sift.max_num_features = options.max_features
    extraction.sift.peak_threshold = options.peak_threshold
    cpu = pycolmap.Device.cpu
    pycolmap.extract_features(
        database,
        root,
        image_names=list(names),
        camera_mode=pycolmap.CameraMode.SINGLE,
        reader_options=reader,
        extraction_options=extraction,
        device=cpu,
    )
    if progress:
        progress(0.3)
    # Geometric verification's RANSAC is unseeded by default (random_seed -1): its inlier matches, and so
    # the cameras, changed from run to run (by up to 0.03 in a camera matrix) whatever the thread count.
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = options.seed
    if options.matching == "sequential":
        pycolmap.match_sequential(database, verification_options=verification, device=cpu)
    else:
        pycolmap.match_exhaustive(database, verification_options=verification, device=cpu)
    if progress:
        progress(0.5)
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = options.threads
    mapping.random_seed = options.seed
    mapping.multiple_models = False
    models = pycolmap.incremental_mapping(database, root, workdir / "sparse", options=mapping)
    if progress:
        progress(0.95)
    best = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    seconds = round(time.monotonic() - started, 3)
    if best is None or best.num_reg_images() == 0:
        raise PosesUnrecoverable(
            f"structure from motion registered 0 of {len(names)} photos (too little texture or overlap?)"
        )
    by_id, points = _world_to_capture(best)
    c2w_raw = {best.images[i].name: m for i, m in by_id.items()}
    c2w, points = normalise(c2w_raw, points)
    camera = next(iter(best.cameras.values()))
    f, cx, cy, k = (float(v) for v in camera.params)  # SIMPLE_RADIAL: f, cx, cy, k
    result = PoseResult(
        names=list(names),
        c2w=c2w,
        camera={
            "fl_x": f,
            "fl_y": f,
            "cx": cx,
            "cy": cy,
            "w": int(camera.width),
            "h": int(camera.height),
            "camera_model": "OPENCV",
            "k1": k,
            "k2": 0.0,
            "p1": 0.0,
            "p2": 0.0,
        },
        points=points,
        reprojection_error=float(best.compute_mean_reprojection_error()),
        seconds=seconds,
    )
    log.info(
        "structure from motion: %d of %d photos registered, %d points, %.2f px mean reprojection error, %.1f s",
        len(c2w),
        len(names),
        len(points),
        result.reprojection_error,
        seconds,
    )
    require_registered(result, options.min_registered)
    return result


def require_registered(result: PoseResult, min_share: float) -> None:
    if result.share >= min_share:
        return
    missing = result.unregistered
    listed = ", ".join(missing[:MAX_LISTED]) + (
        f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
    )
    raise PosesUnrecoverable(
        f"structure from motion registered {len(result.c2w)} of {len(result.names)} photos "
        f"({result.share:.0%}, below the required {min_share:.0%}); not registered: {listed}"
    )


def write_transforms(
    root: Path,
    result: PoseResult,
    mask_paths: Mapping[str, str] | None = None,
    transforms_file: str = "transforms.json",
) -> list[Path]:
    """transforms.json (or train/test split files when photos are held out under test/) for the
    registered photos; returns the files written."""
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for name in result.names:
        if name not in result.c2w:
            continue
        frame: dict[str, Any] = {"file_path": name, "transform_matrix": result.c2w[name].tolist()}
        if mask_paths and name in mask_paths:
            frame["mask_path"] = mask_paths[name]
        splits["test" if name.startswith(f"{HELD_OUT_FOLDER}/") else "train"].append(frame)
    meta = {**result.camera, "recon_poses": {"source": "pycolmap", "reprojection_error": result.reprojection_error}}
    written = []
    if splits["test"]:
        for split, frames in splits.items():
            path = root / f"transforms_{split}.json"
            path.write_text(json.dumps({**meta, "frames": frames}, indent=1))
            written.append(path)
    else:
        path = root / transforms_file
        path.write_text(json.dumps({**meta, "frames": splits["train"]}, indent=1))
        written.append(path)
    return written
