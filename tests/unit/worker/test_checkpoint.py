"""Stage checkpoints: save, find, restore, reject stale ones (on a file:// store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon_worker.checkpoint import Checkpoints, run_key, staging_prefix
from recon_worker.errors import TransientError
from recon_worker.storage import FileStore
from recon_worker.task import TaskDocument

TASK = {
    "apiVersion": "recon.dev/v1alpha1",
    "input": {"uri": "s3://in-bucket/cap/"},
    "output": {"uri": "s3://out-bucket/res/"},
}


def task(**extra: object) -> TaskDocument:
    return TaskDocument.model_validate({**TASK, **extra})


def stage_folder(root: Path, name: str) -> Path:
    (root / name / "sub").mkdir(parents=True)
    (root / name / "mesh.ply").write_bytes(b"ply " + name.encode())
    (root / name / "sub" / "grid.npy").write_bytes(b"\x93NUMPY")
    return root / name


def test_run_key_depends_on_input_and_settings() -> None:
    base = run_key(task(), "fp1")
    assert base == run_key(task(), "fp1")
    assert base != run_key(task(), "fp2")
    assert base != run_key(task(quality={"refinement": {"iterations": 3}}), "fp1")
    assert base != run_key(task(gates={"enforce": True}), "fp1")


def test_staging_prefix_is_the_uid_or_the_local_run_key() -> None:
    job = {"namespace": "ns", "name": "chair", "uid": "0b1c-uid"}
    assert staging_prefix(task(job=job), "k" * 64) == ".recon-staging/0b1c-uid/"
    assert staging_prefix(task(), "abcdef0123456789" + "0" * 48) == ".recon-staging/local-abcdef0123456789/"


def test_save_then_restore_in_order(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    checkpoints = Checkpoints(store, ".recon-staging/u/checkpoints/", "key1")
    work = tmp_path / "work"
    for name in ("reconstruct", "refine"):
        checkpoints.save(name, stage_folder(work, name))
    assert checkpoints.completed(["reconstruct", "refine", "texture"]) == ["reconstruct", "refine"]
    # Only a complete prefix of the stage order counts.
    assert checkpoints.completed(["texture", "reconstruct"]) == []
    restored = tmp_path / "retry"
    checkpoints.restore("refine", restored / "refine")
    assert (restored / "refine" / "mesh.ply").read_bytes() == b"ply refine"
    assert (restored / "refine" / "sub" / "grid.npy").exists()
    assert sorted(p.name for p in restored.iterdir()) == ["refine"]  # no leftovers of the download


def test_a_stage_without_its_marker_is_not_complete(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    checkpoints = Checkpoints(store, "cp/", "key1")
    checkpoints.save("reconstruct", stage_folder(tmp_path, "reconstruct"))
    store.delete("cp/reconstruct/checkpoint.json")  # as if the pod died before writing it
    assert checkpoints.completed(["reconstruct"]) == []


def test_checkpoints_of_another_run_key_are_ignored(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    Checkpoints(store, "cp/", "old-key").save("reconstruct", stage_folder(tmp_path, "reconstruct"))
    assert Checkpoints(store, "cp/", "new-key").completed(["reconstruct"]) == []


def test_corrupt_checkpoint_file_is_detected(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    checkpoints = Checkpoints(store, "cp/", "k")
    checkpoints.save("reconstruct", stage_folder(tmp_path, "reconstruct"))
    (tmp_path / "out" / "cp" / "reconstruct" / "files" / "mesh.ply").write_bytes(b"ply XXXXXXXXXXX")
    with pytest.raises(TransientError, match="does not match its sha256"):
        checkpoints.restore("reconstruct", tmp_path / "again")


def test_clear_removes_every_checkpoint(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out")
    checkpoints = Checkpoints(store, ".recon-staging/u/checkpoints/", "k")
    checkpoints.save("reconstruct", stage_folder(tmp_path, "reconstruct"))
    assert checkpoints.clear() == 3
    assert not (tmp_path / "out" / ".recon-staging").exists()
