"""Atomic publish: stage the export folder, copy it into the output prefix, write manifest.json last.

Order, under the output URI:
1. delete an older `manifest.json` (a re-run must never pair an old manifest with new files);
2. upload every file of the export folder to `.recon-staging/<run id>/outputs/` (sha256 of each), unless
   the export stage's checkpoint already holds exactly these files: then they are copied from there;
3. server-side copy each staged file to its final key;
4. write `manifest.json` (files with size and sha256, metrics, versions, input fingerprint);
5. delete the staged copies;
6. delete the files an older manifest listed that the new one does not (a re-run with fewer export
   formats or previews must not leave the old ones beside the new result). Only files a manifest
   listed are ever deleted: anything else under the output prefix is not the worker's to remove.
A reader that finds `manifest.json` therefore finds a complete result; a run that fails or is
cancelled before step 4 leaves no manifest. An enforced quality gate that failed stops before step 1.
Stale files stay readable until step 6, so a reader holding the old manifest never loses a file it
was told about while the new result is written (it may lose them after).
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from recon_worker import __version__
from recon_worker.errors import QualityGateFailed
from recon_worker.presets import QualitySettings
from recon_worker.storage import Store, StoredObject, UploadedFile
from recon_worker.task import Gates, ResourceRef, key_problem

MANIFEST = "manifest.json"
MANIFEST_API_VERSION = "recon.dev/v1alpha1"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ManifestFile(_Model):
    name: str  # relative to the output prefix
    uri: str
    size: int
    sha256: str


class InputRecord(_Model):
    uri: str
    transforms_file: str
    fingerprint: str  # sha256 over the capture's sorted (key, size, etag)
    objects: int
    bytes: int


class Manifest(_Model):
    api_version: str = Field(default=MANIFEST_API_VERSION, alias="apiVersion")
    kind: str = "ReconstructionManifest"
    created_at: datetime
    job: ResourceRef | None
    input: InputRecord
    settings: QualitySettings
    files: list[ManifestFile]
    metrics: dict[str, Any]
    resumed_stages: list[str]
    stage_seconds: dict[str, float]
    software: dict[str, str]


def input_fingerprint(objects: Sequence[StoredObject]) -> str:
    """sha256 over the sorted (key, size, etag) lines of a capture listing: changes when any file does."""
    digest = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.key):
        digest.update(f"{obj.key}\t{obj.size}\t{obj.etag}\n".encode())
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions that shape the result, read from package metadata (importing torch here is not needed)."""
    versions = {"recon-worker": __version__, "python": platform.python_version()}
    for dist in ("torch", "easypytorch3d", "diffrp-nvdiffrast", "trimesh", "xatlas", "numpy", "boto3"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def check_gates(metrics: Mapping[str, Any], gates: Gates) -> None:
    """Raise QualityGateFailed when a gate failed and either the task or the validate stage enforces it."""
    verdict = metrics.get("gates") or {}
    if verdict.get("passed", True):
        return
    if gates.enforce or verdict.get("enforced", False):
        failures = verdict.get("failures") or ["(the validate stage gave no detail)"]
        raise QualityGateFailed("quality gates failed, nothing was published: " + "; ".join(map(str, failures)))


def publish_outputs(
    store: Store,
    export_dir: Path,
    staging: str,
    build_manifest: Callable[[list[ManifestFile]], Manifest],
    check_cancelled: Callable[[], None] = lambda: None,
    progress: Callable[[float], None] = lambda fraction: None,
    staged: Mapping[str, UploadedFile] | None = None,
) -> Manifest:
    """Publish every file under `export_dir` atomically (see the module doc); returns the manifest written.

    `staged` (name in the export folder -> its copy in the store, e.g. the export stage's checkpoint) spares
    the upload when it holds exactly the export folder's files; otherwise they are uploaded to staging.
    """
    files = {p.relative_to(export_dir).as_posix(): p for p in sorted(export_dir.rglob("*")) if p.is_file()}
    if not files:
        raise RuntimeError(f"the export stage wrote nothing into {export_dir}")
    if MANIFEST in files:
        raise RuntimeError(f"the export stage must not write {MANIFEST}: the publisher writes it last")
    staged_prefix = f"{staging}outputs/"
    previous = _listed_files(store)
    store.delete(MANIFEST)
    reuse = staged is not None and {n: p.stat().st_size for n, p in files.items()} == {
        n: u.size for n, u in staged.items()
    }
    if staged is not None and reuse:
        sources = dict(staged)
    else:
        uploaded = store.upload({staged_prefix + name: path for name, path in files.items()})
        sources = {u.key.removeprefix(staged_prefix): u for u in uploaded}
    progress(0.5)
    check_cancelled()
    entries = []
    for i, (name, item) in enumerate(sorted(sources.items())):
        store.copy(item.key, name)
        entries.append(ManifestFile(name=name, uri=store.uri_of(name), size=item.size, sha256=item.sha256))
        progress(0.5 + 0.45 * (i + 1) / len(sources))
    check_cancelled()
    manifest = build_manifest(entries)
    store.put_bytes(MANIFEST, json.dumps(manifest.model_dump(mode="json", by_alias=True), indent=2).encode())
    if not reuse:
        store.delete_prefix(staged_prefix)
    store.delete_keys(sorted(previous - {entry.name for entry in entries}))
    progress(1.0)
    return manifest


def _listed_files(store: Store) -> set[str]:
    """Names of the files the output's current manifest lists (none when it is missing or unreadable).

    A name that could reach outside the output prefix, or name the manifest or the staging area, is never
    returned: the manifest is read back from storage that others may write.
    """
    try:
        document = json.loads(store.get_bytes(MANIFEST) or b"{}")
        names = {f["name"] for f in document.get("files", []) if isinstance(f, dict) and isinstance(f.get("name"), str)}
    except (ValueError, AttributeError, TypeError, RecursionError):
        return set()
    return {
        n for n in names if n and n != MANIFEST and not n.startswith((".recon-staging", "/")) and key_problem(n) is None
    }


def now() -> datetime:
    return datetime.now(UTC)
