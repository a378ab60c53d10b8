"""The fetch stage's transfers: which objects of the input prefix are downloaded, and in which order.

The transforms files first; then only what they reference (images, masks), the ground truth, a clean
plate of the backdrop and a reference capture (`reference/`, views to judge the result by), after the
keys and the listing's sizes passed their checks. A folder of photos with no transforms file (poses to
be estimated) is fetched whole: every file may be a photo.
`recon-worker validate` fetches through this too, so it
judges exactly the copy that `local` and `run` would reconstruct from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from recon_worker.capture import REFERENCE_FOLDER
from recon_worker.capture_checks import (
    CaptureInvalid,
    CaptureLimits,
    CaptureReport,
    Problem,
    check_listing,
    key_problems,
    referenced_objects,
    transforms_objects,
)
from recon_worker.errors import InputsInvalid
from recon_worker.masks import CLEAN_PLATE_NAMES
from recon_worker.storage import FileStore, Store, StoredObject


def fetch_capture(
    store: Store,
    dest: Path,
    transforms_file: str,
    limits: CaptureLimits,
    before_batch: Callable[[], None] = lambda: None,
    progress: Callable[[float], None] = lambda fraction: None,
) -> list[StoredObject]:
    """Download the capture under `store` into `dest`; returns the objects fetched.

    Raises CaptureInvalid (exit 2) when a key or the listing's sizes are refused, before their download.
    `before_batch` runs between transfer batches (cancellation), `progress` gets the fraction done.
    """
    if isinstance(store, FileStore):
        # A listing holds regular files only: a transforms "file" that is a folder or a FIFO would make
        # the capture look like a folder of photos. Name it instead (reading a FIFO would block).
        named = store.root / transforms_file
        if (named.exists() or named.is_symlink()) and not named.is_file():
            raise CaptureInvalid(CaptureReport([Problem(transforms_file, "is not a regular file")], 0, None))
    objects = store.list_objects()
    if not objects:
        raise InputsInvalid(f"{store.uri} holds no files: expected a capture with {transforms_file}")
    first = transforms_objects(objects, transforms_file)
    _refuse(first, limits)
    store.download(first, dest)
    if first:
        extras = [o for o in objects if o.key in CLEAN_PLATE_NAMES or o.key.startswith(f"{REFERENCE_FOLDER}/")]
        wanted = sorted({*referenced_objects(dest, objects, transforms_file), *extras}, key=lambda o: o.key)
    else:
        wanted = list(objects)
    _refuse(wanted, limits)
    fetched = {o.key for o in first}
    rest = [o for o in wanted if o.key not in fetched]
    # Batches big enough to keep the transfer manager's threads busy, small enough for ~20 progress
    # updates and prompt cancellation on large captures.
    batch = max(32, math.ceil(len(rest) / 20))
    for start in range(0, len(rest), batch):
        before_batch()
        store.download(rest[start : start + batch], dest)
        progress(min(len(rest), start + batch) / len(rest))
    return wanted


def _refuse(objects: list[StoredObject], limits: CaptureLimits) -> None:
    problems = key_problems(objects) + check_listing(objects, limits)
    if problems:
        raise CaptureInvalid(CaptureReport(problems, 0, None))
