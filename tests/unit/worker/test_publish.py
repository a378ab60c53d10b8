"""Atomic publish, the manifest, quality gates and the input fingerprint (on a file:// store)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from recon_worker.errors import QualityGateFailed
from recon_worker.presets import resolve_quality
from recon_worker.publish import (
    MANIFEST,
    InputRecord,
    Manifest,
    ManifestFile,
    check_gates,
    input_fingerprint,
    now,
    publish_outputs,
    software_versions,
)
from recon_worker.stage import Cancelled
from recon_worker.storage import FileStore, StoredObject
from recon_worker.task import Gates


def export_folder(root: Path) -> Path:
    (root / "previews").mkdir(parents=True)
    (root / "mesh.glb").write_bytes(b"glTF" + bytes(100))
    (root / "report.json").write_text('{"psnr": 30}')
    (root / "previews" / "view_0.png").write_bytes(b"\x89PNG")
    return root


def manifest_for(files: list[ManifestFile]) -> Manifest:
    record = InputRecord(
        uri="s3://in/cap/", transforms_file="transforms.json", fingerprint="f" * 64, objects=3, bytes=9
    )
    return Manifest(
        created_at=now(),
        job=None,
        input=record,
        settings=resolve_quality("draft"),
        files=files,
        metrics={"psnr": 30.0},
        resumed_stages=[],
        stage_seconds={"fetch": 0.1},
        software=software_versions(),
    )


def test_publish_copies_every_file_and_writes_the_manifest_last(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    store.put_bytes(MANIFEST, b'{"old": true}')
    manifest = publish_outputs(store, export_folder(tmp_path / "export"), ".recon-staging/u/", manifest_for)
    names = sorted(o.key for o in store.list_objects())
    assert names == ["manifest.json", "mesh.glb", "previews/view_0.png", "report.json"]  # staging cleaned
    written = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert written["kind"] == "ReconstructionManifest" and written["software"]["recon-worker"]
    for entry in written["files"]:
        content = (tmp_path / "out" / entry["name"]).read_bytes()
        assert entry["size"] == len(content) and entry["sha256"] == hashlib.sha256(content).hexdigest()
        assert entry["uri"] == store.uri_of(entry["name"])
    assert [f.name for f in manifest.files] == ["mesh.glb", "previews/view_0.png", "report.json"]


def test_cancel_before_the_manifest_leaves_none(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    store.put_bytes(MANIFEST, b'{"old": true}')

    def cancel() -> None:
        raise Cancelled("stopped by SIGTERM")

    with pytest.raises(Cancelled):
        publish_outputs(store, export_folder(tmp_path / "export"), ".recon-staging/u/", manifest_for, cancel)
    assert store.get_bytes(MANIFEST) is None  # the old manifest went first, no new one was written


def test_export_may_not_write_the_manifest_itself(tmp_path: Path) -> None:
    folder = export_folder(tmp_path / "export")
    (folder / MANIFEST).write_text("{}")
    with pytest.raises(RuntimeError, match=r"must not write manifest\.json"):
        publish_outputs(FileStore(tmp_path / "out"), folder, ".recon-staging/u/", manifest_for)


def test_enforced_failed_gate_raises_with_the_failures() -> None:
    metrics = {"gates": {"passed": False, "enforced": False, "failures": ["psnr 18.2 < minPSNR 24"]}}
    check_gates(metrics, Gates.model_validate({}))  # not enforced: degrades only
    with pytest.raises(QualityGateFailed, match=r"nothing was published: psnr 18\.2 < minPSNR 24") as error:
        check_gates(metrics, Gates.model_validate({"enforce": True}))
    assert (error.value.exit_code, error.value.reason) == (2, "QualityGateFailed")
    with pytest.raises(QualityGateFailed):
        check_gates({"gates": {**metrics["gates"], "enforced": True}}, Gates.model_validate({}))
    check_gates({"gates": {"passed": True, "enforced": True, "failures": []}}, Gates.model_validate({"enforce": True}))


def test_input_fingerprint_changes_with_any_object_and_ignores_order() -> None:
    a = [StoredObject("transforms.json", 10, "e1"), StoredObject("images/r_0.png", 99, "e2")]
    assert input_fingerprint(a) == input_fingerprint(list(reversed(a)))
    assert input_fingerprint(a) != input_fingerprint([a[0], StoredObject("images/r_0.png", 99, "e3")])
    assert input_fingerprint(a) != input_fingerprint(a[:1])


def test_publish_copies_from_a_matching_staged_copy_without_uploading_again(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    folder = export_folder(tmp_path / "export")
    files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    uploaded = store.upload({f"cp/export/files/{name}": path for name, path in files.items()})
    staged = {u.key.removeprefix("cp/export/files/"): u for u in uploaded}
    manifest = publish_outputs(store, folder, ".recon-staging/u/", manifest_for, staged=staged)
    assert not (tmp_path / "out" / ".recon-staging").exists()  # nothing was uploaded to staging
    assert (tmp_path / "out" / "cp" / "export" / "files" / "mesh.glb").exists()  # the caller's copy stays
    for entry in manifest.files:
        content = (tmp_path / "out" / entry.name).read_bytes()
        assert entry.sha256 == hashlib.sha256(content).hexdigest() == staged[entry.name].sha256


def test_a_staged_copy_that_differs_from_the_export_folder_is_not_used(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    folder = export_folder(tmp_path / "export")
    [only] = store.upload({"cp/mesh.glb": folder / "mesh.glb"})
    manifest = publish_outputs(store, folder, ".recon-staging/u/", manifest_for, staged={"mesh.glb": only})
    assert [f.name for f in manifest.files] == ["mesh.glb", "previews/view_0.png", "report.json"]
    assert (tmp_path / "out" / "report.json").read_text() == '{"psnr": 30}'


def test_republishing_removes_the_files_only_the_old_manifest_listed(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    publish_outputs(store, export_folder(tmp_path / "first"), ".recon-staging/a/", manifest_for)
    store.put_bytes("notes.txt", b"the user's own file")  # never listed by a manifest: kept
    second = export_folder(tmp_path / "second")
    (second / "previews" / "view_0.png").unlink()
    (second / "mesh.obj").write_text("v 0 0 0\n")
    publish_outputs(store, second, ".recon-staging/b/", manifest_for)
    names = sorted(o.key for o in store.list_objects())
    assert names == ["manifest.json", "mesh.glb", "mesh.obj", "notes.txt", "report.json"]


def test_a_tampered_old_manifest_cannot_delete_outside_the_result(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    store.put_bytes("keep/a.txt", b"x")
    files = [
        {"name": n} for n in ("../outside.txt", "keep//a.txt", "/etc/passwd", ".recon-staging/x/y", "keep/./a.txt")
    ]
    store.put_bytes(MANIFEST, json.dumps({"files": files}).encode())
    (tmp_path / "outside.txt").write_text("not ours")
    publish_outputs(store, export_folder(tmp_path / "export"), ".recon-staging/u/", manifest_for)
    assert (tmp_path / "outside.txt").exists() and (tmp_path / "out" / "keep" / "a.txt").exists()
