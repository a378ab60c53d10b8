"""Reference views: judge a mesh by posed, masked views of the same object that were not its input.

A capture whose poses were estimated (photos posed by structure from motion) lives in a world of its
own: SfM cannot know the rig's rotation, position or scale. Its held-out figures compare the mesh
with its own photos (JPEG, masks from a provider, over white), so they mix the mesh's error with the
yardstick's: on a 320² turntable those photos are 29.6 dB from the exact renders before anything is
reconstructed. When posed, masked views of the same shoot exist (a benchmark's renders, a calibrated
rig's capture, an earlier scan of the object), they are the fair yardstick: put that capture in the
canonical form under `reference/` in the capture folder, and validate also renders the mesh at the
reference's held-out views, after the similarity that maps this capture's camera centres onto the
reference's (`engine.pose_error.umeyama`, over the frames both have), and reports the figures as
`reference` in validate/metrics.json and report.json.

Frames are matched by image path without its extension and without the worker's `_prepared/` folder
(`train/r_0.jpg`, a photo, is `train/r_0.png` of the reference). The alignment and the matching are
pure (this module); the rendering is the validate stage's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from recon_worker.capture import REFERENCE_FOLDER, Capture, load_capture, transforms_sources
from recon_worker.engine.pose_error import PoseError, pose_error, umeyama
from recon_worker.errors import InputsInvalid

MIN_MATCHED = 3  # frames both captures have: a similarity needs three non-collinear camera centres
PREPARED_PREFIX = "_prepared/"  # capture_forms.PREPARED_FOLDER (resampled images), not imported: no cycle
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE")


@dataclass(frozen=True)
class Similarity:
    """x_reference = scale * rotation @ x_capture + translation."""

    scale: float
    rotation: np.ndarray  # [3, 3]
    translation: np.ndarray  # [3]
    matched: int  # frames the similarity was fitted on
    pose_error: PoseError  # of this capture's cameras against the reference's, after the similarity

    def apply(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] capture-world points -> reference-world points."""
        return np.asarray(self.scale * points @ self.rotation.T + self.translation)


def frame_key(image: str) -> str:
    """The name a frame is matched by: its path without extension or the worker's prepared folder."""
    return PurePosixPath(image.removeprefix(PREPARED_PREFIX)).with_suffix("").as_posix()


def find_reference(root: Path) -> Path | None:
    """The reference capture folder inside a capture, when there is one."""
    folder = root / REFERENCE_FOLDER
    return folder if folder.is_dir() else None


def load_reference(folder: Path) -> Capture:
    """Read and check a reference capture: posed, pinhole, masked (alpha or mask_path) views.

    Raises InputsInvalid naming the file and what is wrong.
    """
    where = f"{REFERENCE_FOLDER}/"
    sources = transforms_sources(folder, "transforms.json")
    if not any((folder / s).is_file() for s in sources):
        raise InputsInvalid(
            f"{where} holds no transforms.json (or transforms_train.json): a reference is a posed capture"
        )
    for source in sources:
        try:
            doc = json.loads((folder / source).read_text())
        except (OSError, ValueError) as exc:
            raise InputsInvalid(f"{where}{source} is not readable JSON: {exc}") from None
        model = doc.get("camera_model", "PINHOLE") if isinstance(doc, dict) else None
        if model not in PINHOLE_MODELS:
            raise InputsInvalid(
                f"{where}{source}: camera_model {model!r}; a reference must be undistorted pinhole views"
            )
    try:
        reference = load_capture(folder)
    except (OSError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputsInvalid(f"{where} is not a readable posed capture: {exc!r}") from None
    for frame in reference.frames:
        if not (folder / frame.image).is_file():
            raise InputsInvalid(f"{where}{frame.image}: listed in the reference's transforms but missing")
    return reference


def align_to_reference(capture: Capture, reference: Capture) -> Similarity:
    """The similarity from `capture`'s world to `reference`'s, fitted on the camera centres of the frames
    both have. Raises InputsInvalid when fewer than MIN_MATCHED frames match."""
    theirs = {frame_key(f.image): f.c2w for f in reference.frames}
    pairs = [(f.c2w, theirs[frame_key(f.image)]) for f in capture.frames if frame_key(f.image) in theirs]
    if len(pairs) < MIN_MATCHED:
        example = frame_key(capture.frames[0].image) if capture.frames else "(no frames)"
        raise InputsInvalid(
            f"{REFERENCE_FOLDER}/: {len(pairs)} of its {len(reference.frames)} frames match this capture's "
            f"(matched by image path without extension, e.g. {example}); at least {MIN_MATCHED} are needed "
            "to align the two"
        )
    ours, truth = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    scale, rotation, translation = umeyama(ours[:, :3, 3], truth[:, :3, 3])
    return Similarity(scale, rotation, translation, len(pairs), pose_error(ours, truth))
