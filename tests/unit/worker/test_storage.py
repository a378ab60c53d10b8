"""The file:// store (the S3 store is tested against the moto server in tests/integration)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from recon_worker.errors import AccessDenied, InputsInvalid
from recon_worker.storage import FileStore, StorageOptions, open_store


def test_open_store_by_scheme(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri() + "/")
    assert isinstance(store, FileStore) and store.uri == tmp_path.as_uri() + "/"
    with pytest.raises(ValueError, match="expected s3://bucket/prefix/ or file:///abs/path/"):
        open_store("gs://bucket/x")


def test_roundtrip_with_sizes_and_sha256(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 1000)
    store = FileStore(tmp_path / "store")
    [uploaded] = store.upload({"a/b/c.bin": source})
    assert (uploaded.size, uploaded.sha256) == (1000, hashlib.sha256(b"x" * 1000).hexdigest())
    store.put_bytes("top.json", b"{}")
    listing = store.list_objects()
    assert [(o.key, o.size) for o in listing] == [("a/b/c.bin", 1000), ("top.json", 2)]
    store.download(listing, tmp_path / "dest")
    assert (tmp_path / "dest" / "a" / "b" / "c.bin").read_bytes() == b"x" * 1000
    store.copy("a/b/c.bin", "copy.bin")
    assert store.get_bytes("copy.bin") == b"x" * 1000 and store.get_bytes("nope") is None


def test_delete_prefix_removes_emptied_folders(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put_bytes(".recon-staging/uid/checkpoints/refine/files/mesh.ply", b"ply")
    store.put_bytes("mesh.glb", b"glb")
    assert store.delete_prefix(".recon-staging/uid/checkpoints/") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.glb"]


def test_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be relative and stay under"):
        FileStore(tmp_path).put_bytes("../outside", b"")


def test_missing_input_folder_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InputsInvalid, match=r"file://.*/nope/ is not a directory"):
        FileStore(tmp_path / "nope").list_objects()


def test_unwritable_output_is_access_denied(tmp_path: Path) -> None:
    root = tmp_path / "readonly"
    root.mkdir()
    root.chmod(0o500)
    try:
        probe = root / "probe"
        try:
            probe.write_bytes(b"")
            pytest.skip("running as a user that ignores file permissions (root)")
        except PermissionError:
            pass
        with pytest.raises(AccessDenied, match="permission denied"):
            FileStore(root).put_bytes("manifest.json", b"{}")
    finally:
        root.chmod(0o700)


def test_storage_options_from_env() -> None:
    options = StorageOptions.from_env({"RECON_S3_MAX_ATTEMPTS": "2", "RECON_S3_RETRY_MODE": "standard"})
    assert (options.max_attempts, options.retry_mode) == (2, "standard")
    with pytest.raises(ValueError, match="standard or adaptive"):
        StorageOptions.from_env({"RECON_S3_RETRY_MODE": "legacy"})
