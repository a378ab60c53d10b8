"""Captures up, results down: the worker's own storage layer, with progress and checksums.

Credentials: boto3's usual chain (AWS_* variables, ~/.aws, an instance role), or the keys of a
Secret in the job's namespace (`--credentials-secret`, the same Secret the worker then uses).
Endpoint: `--endpoint`, else AWS_ENDPOINT_URL(_S3), else AWS.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from recon_kubectl.progress import BytesBar
from recon_worker.errors import WorkerError
from recon_worker.publish import MANIFEST, Manifest
from recon_worker.storage import Store, StoredObject, open_store
from recon_worker.task import StorageSpec


class TransferError(RuntimeError):
    """An upload or download that failed, or a file whose checksum does not match (exit 1)."""


@dataclass(frozen=True)
class StorageAccess:
    endpoint: str | None = None
    region: str | None = None
    credentials: Mapping[str, str] | None = None

    def store(self, uri: str) -> Store:
        try:
            return open_store(
                uri, StorageSpec(endpoint=self.endpoint, region=self.region), credentials=self.credentials
            )
        except ValueError as exc:
            raise TransferError(str(exc)) from None


def upload_capture(folder: Path, uri: str, access: StorageAccess, *, quiet: bool = False) -> int:
    """Upload every file under `folder` to `uri` in parallel; returns the bytes uploaded."""
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    total = sum(p.stat().st_size for p in files.values())
    progress = BytesBar(f"uploading {len(files)} files to {uri}", total, quiet=quiet)
    try:
        access.store(uri).upload(files, on_bytes=progress.add)
    except WorkerError as exc:
        raise TransferError(exc.message) from None
    finally:
        progress.close()
    return total


def read_manifest(uri: str, access: StorageAccess) -> Manifest | None:
    """The published manifest.json under the output `uri`, or None when nothing is published yet."""
    try:
        data = access.store(uri).get_bytes(MANIFEST)
    except WorkerError as exc:
        raise TransferError(exc.message) from None
    if data is None:
        return None
    try:
        return Manifest.model_validate(json.loads(data))
    except ValueError as exc:
        raise TransferError(f"{uri}{MANIFEST} is not a recon-operator manifest: {exc}") from None


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch_outputs(uri: str, dest: Path, access: StorageAccess, *, quiet: bool = False) -> Manifest:
    """Download every file the manifest lists into `dest`, each checked against its size and sha256.

    Files are downloaded into a temporary folder beside `dest` and moved into place only when every
    checksum matched, so `dest` never holds a partial or corrupted result.
    """
    manifest = read_manifest(uri, access)
    if manifest is None:
        raise TransferError(f"nothing is published at {uri} yet (no {MANIFEST})")
    dest.mkdir(parents=True, exist_ok=True)
    objects = [StoredObject(f.name, f.size, "") for f in manifest.files]
    progress = BytesBar(f"downloading {len(objects)} files", sum(o.size for o in objects), quiet=quiet)
    with tempfile.TemporaryDirectory(prefix=".recon-fetch-", dir=dest) as tmp:
        staging = Path(tmp)
        try:
            access.store(uri).download(objects, staging, on_bytes=progress.add)
        except WorkerError as exc:
            raise TransferError(exc.message) from None
        finally:
            progress.close()
        bad = [f.name for f in manifest.files if sha256_file(staging / f.name) != f.sha256]
        if bad:
            raise TransferError(
                f"checksum mismatch against {uri}{MANIFEST}: {', '.join(bad)} (nothing was written to {dest})"
            )
        (staging / MANIFEST).write_text(json.dumps(manifest.model_dump(mode="json", by_alias=True), indent=2))
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                target = dest / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, target)
    return manifest
