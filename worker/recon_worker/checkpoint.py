"""Stage checkpoints: a finished stage's folder saved under the output's staging prefix, for resuming.

Layout, under the output URI (see docs/worker.md):

    .recon-staging/<run id>/checkpoints/<stage>/files/...        the stage folder, as the stage wrote it
    .recon-staging/<run id>/checkpoints/<stage>/checkpoint.json   written last: run key, files, sizes, sha256

The run id is the CR's uid (a retried pod of the same ReconstructionJob finds its predecessor's work) or,
in local mode, `local-` plus the run key. The run key hashes the input fingerprint and the settings, so a
checkpoint of another capture or other settings is never resumed from. A stage counts as saved only
once its `checkpoint.json` exists, so a pod killed mid-upload leaves nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from recon_worker import __version__
from recon_worker.errors import TransientError
from recon_worker.stage import StageName
from recon_worker.storage import Store, StoredObject, UploadedFile, sha256_of
from recon_worker.task import TaskDocument

log = logging.getLogger("recon_worker.checkpoint")

STAGING_ROOT = ".recon-staging/"
MARKER = "checkpoint.json"


class CheckpointFile(BaseModel):
    name: str  # relative to the stage folder
    size: int
    sha256: str


class CheckpointMarker(BaseModel):
    stage: str
    run_key: str
    worker_version: str
    files: list[CheckpointFile]


def run_key(task: TaskDocument, input_fingerprint: str) -> str:
    """What a stage's result depends on: the capture's content, the settings, the gates, the worker version."""
    material = json.dumps(
        {
            "input": input_fingerprint,
            "transformsFile": task.input.transforms_file,
            # How the capture is read (poses, masks, SfM settings) changes every stage's result.
            "form": task.input.model_dump(mode="json", by_alias=True, exclude={"uri", "transforms_file"}),
            "quality": task.quality.model_dump(mode="json", by_alias=True),
            "gates": task.gates.model_dump(mode="json", by_alias=True),
            "worker": __version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def staging_prefix(task: TaskDocument, key: str) -> str:
    """`.recon-staging/<uid>/`, or `.recon-staging/local-<run key>/` without a ReconstructionJob."""
    run_id = task.job.uid if task.job else f"local-{key[:16]}"
    return f"{STAGING_ROOT}{run_id}/"


@dataclass
class Checkpoints:
    store: Store  # the output store
    prefix: str  # ".recon-staging/<run id>/checkpoints/"
    key: str  # run_key(...)

    def _marker(self, stage: StageName) -> CheckpointMarker | None:
        data = self.store.get_bytes(f"{self.prefix}{stage}/{MARKER}")
        if data is None:
            return None
        try:
            marker = CheckpointMarker.model_validate_json(data)
        except ValidationError:
            log.warning("ignoring the unreadable checkpoint of stage %s", stage)
            return None
        if marker.run_key != self.key:
            log.info("ignoring the checkpoint of stage %s: it was made for another input or settings", stage)
            return None
        return marker

    def completed(self, stages: Sequence[StageName]) -> list[StageName]:
        """The longest run of `stages`, from the first, that has a valid checkpoint."""
        done: list[StageName] = []
        for stage in stages:
            if self._marker(stage) is None:
                break
            done.append(stage)
        return done

    def save(self, stage: StageName, folder: Path) -> None:
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        uploaded = self.store.upload({f"{self.prefix}{stage}/files/{name}": path for name, path in files.items()})
        entries = [
            CheckpointFile(name=u.key.removeprefix(f"{self.prefix}{stage}/files/"), size=u.size, sha256=u.sha256)
            for u in uploaded
        ]
        marker = CheckpointMarker(stage=stage, run_key=self.key, worker_version=__version__, files=entries)
        self.store.put_bytes(f"{self.prefix}{stage}/{MARKER}", marker.model_dump_json(indent=1).encode())

    def stored_files(self, stage: StageName) -> dict[str, UploadedFile] | None:
        """A saved stage's files (name in the stage folder -> its copy in the store), or None if not saved."""
        marker = self._marker(stage)
        if marker is None:
            return None
        base = f"{self.prefix}{stage}/files/"
        return {f.name: UploadedFile(base + f.name, f.size, f.sha256) for f in marker.files}

    def restore(self, stage: StageName, folder: Path) -> None:
        """Download a stage's folder and check every file against the checkpoint's sha256."""
        marker = self._marker(stage)
        if marker is None:
            raise TransientError(f"the checkpoint of stage {stage} disappeared while resuming", reason="CheckpointLost")
        base = f"{self.prefix}{stage}/files/"
        staging = folder.parent / f".{folder.name}.restore"
        objects = [StoredObject(base + f.name, f.size, "") for f in marker.files]
        self.store.download(objects, staging)
        for f in marker.files:
            if sha256_of(staging / base / f.name) != f.sha256:
                raise TransientError(
                    f"checkpoint file {self.store.uri_of(base + f.name)} does not match its sha256",
                    reason="CheckpointCorrupt",
                )
        folder.mkdir(parents=True, exist_ok=True)
        if (staging / base).is_dir():
            _merge_into(staging / base, folder)
        shutil.rmtree(staging, ignore_errors=True)

    def clear(self) -> int:
        return self.store.delete_prefix(self.prefix)


def _merge_into(source: Path, dest: Path) -> None:
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.replace(target)
