"""Object storage for captures and results: `s3://` (boto3) and `file://` behind one small interface.

A `Store` is rooted at a URI (a bucket prefix or a folder); keys are '/'-separated and relative to that
root. S3 traffic goes through botocore's retry modes (backoff on throttling, 5xx and dropped connections)
and boto3's transfer manager (parallel transfers, multipart above a threshold): no hand-written loops.

Failures become typed errors naming the bucket and key (see `errors.py` and docs/worker.md):
missing bucket or object -> InputsInvalid (exit 2); access denied or no credentials -> AccessDenied
(exit 2: retrying does not grant a permission, so fail fast); network, throttling and 5xx errors still
failing after the retries -> StorageUnavailable (transient).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from recon_worker.errors import AccessDenied, InputsInvalid, TransientError, WorkerError
from recon_worker.task import StorageSpec

MiB = 1024 * 1024
# Called with the bytes moved since the last call, from transfer threads (progress bars add them up).
OnBytes = Callable[[int], None]


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the store's root
    size: int  # bytes
    etag: str  # S3 ETag; for files, mtime and size (both change when a file is replaced)


@dataclass(frozen=True)
class UploadedFile:
    key: str
    size: int
    sha256: str  # hex, of the bytes uploaded


@dataclass(frozen=True)
class StorageOptions:
    """Client tuning; the defaults suit a worker pod. Environment: RECON_S3_MAX_ATTEMPTS, RECON_S3_RETRY_MODE."""

    retry_mode: Literal["standard", "adaptive"] = "adaptive"  # adaptive also rate-limits the client when throttled
    max_attempts: int = 8  # per request, first try included
    max_concurrency: int = 8  # parallel transfers (and parts of one multipart transfer)
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB
    connect_timeout: float = 10.0  # seconds
    read_timeout: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> StorageOptions:
        mode = environ.get("RECON_S3_RETRY_MODE", cls.retry_mode)
        if mode not in ("standard", "adaptive"):
            raise ValueError(f"RECON_S3_RETRY_MODE must be standard or adaptive, not {mode!r}")
        retry_mode: Literal["standard", "adaptive"] = "standard" if mode == "standard" else "adaptive"
        return cls(retry_mode=retry_mode, max_attempts=int(environ.get("RECON_S3_MAX_ATTEMPTS", cls.max_attempts)))


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _join(prefix: str, key: str) -> str:
    return f"{prefix}{key}" if prefix else key


def _check_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not key or key.startswith("/") or ".." in parts:
        raise ValueError(f"storage key {key!r} must be relative and stay under the store's root")
    return key


class Store(ABC):
    """Files under one root URI."""

    uri: str  # ends with '/'

    def uri_of(self, key: str) -> str:
        return self.uri + key

    @abstractmethod
    def list_objects(self, prefix: str = "") -> list[StoredObject]:
        """Every object under `prefix` (recursively), sorted by key; raises InputsInvalid if the root is missing."""

    @abstractmethod
    def download(self, objects: Sequence[StoredObject], dest: Path, on_bytes: OnBytes | None = None) -> None:
        """Fetch each object to dest/<key>, in parallel, checking each file against its listed size."""

    @abstractmethod
    def upload(self, files: Mapping[str, Path], on_bytes: OnBytes | None = None) -> list[UploadedFile]:
        """Upload local files (key -> path) in parallel; returns each key with its size and sha256."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes | None:
        """The object's content, or None when it does not exist."""

    @abstractmethod
    def copy(self, src_key: str, dst_key: str) -> None:
        """Copy within the store (server-side on S3)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many."""

    def delete(self, key: str) -> None:
        self.delete_keys([key])

    @abstractmethod
    def delete_keys(self, keys: Sequence[str]) -> None:
        """Delete exactly these keys (missing ones are fine)."""


# --- S3 ----------------------------------------------------------------------------------------------

_ACCESS_CODES = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}


def s3_error(exc: Exception, *, action: str, uri: str, bucket: str) -> WorkerError:
    """Map a boto3/botocore exception to a typed worker error naming what failed."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, WorkerError):
        return exc
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(
            f"cannot {action} {uri}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or give the pod an identity)",
            reason="NoCredentials",
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        detail = error.get("Message") or code
        if code == "NoSuchBucket":
            return InputsInvalid(f"cannot {action} {uri}: bucket {bucket!r} does not exist")
        if code in _MISSING_KEY_CODES:
            return InputsInvalid(f"cannot {action} {uri}: no such object")
        if code in _ACCESS_CODES or status == 403:
            return AccessDenied(f"cannot {action} {uri}: access denied with the configured credentials ({detail})")
        return TransientError(f"cannot {action} {uri}: {code or status} {detail} (after retries)")
    return TransientError(f"cannot {action} {uri}: {type(exc).__name__}: {exc} (after retries)")


def s3_client(storage: StorageSpec, options: StorageOptions, credentials: Mapping[str, str] | None = None) -> Any:
    """A boto3 S3 client: endpoint and region from the task, else boto3's usual environment and config.

    `credentials` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optionally AWS_SESSION_TOKEN, as in a
    credentials Secret) replace boto3's own credential chain.
    """
    import boto3
    from botocore.config import Config

    endpoint = storage.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        # total_max_attempts counts the first try; botocore's own "max_attempts" key counts only retries.
        retries={"mode": options.retry_mode, "total_max_attempts": options.max_attempts},
        # S3-compatible servers (MinIO, Ceph, moto) rarely serve virtual-hosted bucket names.
        s3={"addressing_style": "path"} if endpoint else {},
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        max_pool_connections=max(10, options.max_concurrency * 2),
    )
    session = (
        boto3.session.Session(
            aws_access_key_id=credentials.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=credentials.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
        )
        if credentials
        else boto3.session.Session()
    )
    return session.client("s3", endpoint_url=endpoint, region_name=storage.region, config=config)


def _subscribers(on_bytes: OnBytes | None) -> list[Any] | None:
    """s3transfer subscribers that report progress to `on_bytes`."""
    if on_bytes is None:
        return None
    from s3transfer.subscribers import BaseSubscriber

    report = on_bytes

    class _Progress(BaseSubscriber):
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            report(bytes_transferred)

    return [_Progress()]


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, client: Any, options: StorageOptions) -> None:
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}"
        self.client = client
        self.transfer_config = TransferConfig(
            multipart_threshold=options.multipart_threshold,
            multipart_chunksize=options.multipart_chunksize,
            max_concurrency=options.max_concurrency,
        )

    def _error(self, exc: Exception, action: str, key: str = "") -> WorkerError:
        return s3_error(exc, action=action, uri=self.uri_of(key), bucket=self.bucket)

    def _wait(self, futures: Sequence[tuple[str, Future[Any]]], action: str) -> None:
        errors = []
        for key, future in futures:
            try:
                future.result()
            except Exception as exc:
                errors.append(self._error(exc, action, key))
        if errors:
            # The first error decides the exit; the message names how many others failed alike.
            first = errors[0]
            if len(errors) > 1:
                first.message += f" (and {len(errors) - 1} more objects failed)"
                first.args = (first.message,)
            raise first

    def list_objects(self, prefix: str = "") -> list[StoredObject]:
        objects = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=_join(self.prefix, prefix)):
                for item in page.get("Contents", []):
                    if item["Key"].endswith("/"):  # folder placeholder objects some tools create
                        continue
                    key = item["Key"][len(self.prefix) :]
                    objects.append(StoredObject(key, int(item["Size"]), str(item.get("ETag", "")).strip('"')))
        except Exception as exc:
            raise self._error(exc, "list", prefix) from exc
        return sorted(objects, key=lambda o: o.key)

    def download(self, objects: Sequence[StoredObject], dest: Path, on_bytes: OnBytes | None = None) -> None:
        from boto3.s3.transfer import create_transfer_manager

        futures = []
        subs = _subscribers(on_bytes)
        with create_transfer_manager(self.client, self.transfer_config) as manager:
            for obj in objects:
                target = dest / _check_key(obj.key)
                target.parent.mkdir(parents=True, exist_ok=True)
                key = _join(self.prefix, obj.key)
                futures.append((obj.key, manager.download(self.bucket, key, str(target), subscribers=subs)))
            self._wait(futures, "download")
        for obj in objects:
            size = (dest / obj.key).stat().st_size
            if size != obj.size:
                raise TransientError(
                    f"{self.uri_of(obj.key)} changed during download: listed {obj.size} bytes, got {size}",
                    reason="InputChanged",
                )

    def upload(self, files: Mapping[str, Path], on_bytes: OnBytes | None = None) -> list[UploadedFile]:
        from boto3.s3.transfer import create_transfer_manager

        uploaded = [UploadedFile(_check_key(key), path.stat().st_size, sha256_of(path)) for key, path in files.items()]
        futures = []
        subs = _subscribers(on_bytes)
        with create_transfer_manager(self.client, self.transfer_config) as manager:
            for key, path in files.items():
                futures.append((key, manager.upload(str(path), self.bucket, _join(self.prefix, key), subscribers=subs)))
            self._wait(futures, "upload to")
        return uploaded

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=_join(self.prefix, _check_key(key)), Body=data)
        except Exception as exc:
            raise self._error(exc, "write", key) from exc

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=_join(self.prefix, _check_key(key)))
            return bytes(response["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING_KEY_CODES:
                return None
            raise self._error(exc, "read", key) from exc
        except Exception as exc:
            raise self._error(exc, "read", key) from exc

    def copy(self, src_key: str, dst_key: str) -> None:
        source = {"Bucket": self.bucket, "Key": _join(self.prefix, _check_key(src_key))}
        try:
            # The managed copy switches to multipart UploadPartCopy above the threshold (needed beyond 5 GB).
            self.client.copy(source, self.bucket, _join(self.prefix, _check_key(dst_key)), Config=self.transfer_config)
        except Exception as exc:
            raise self._error(exc, f"copy {self.uri_of(src_key)} to", dst_key) from exc

    def delete_prefix(self, prefix: str) -> int:
        keys = [o.key for o in self.list_objects(prefix)]
        self.delete_keys(keys)
        return len(keys)

    def delete_keys(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": _join(self.prefix, k)} for k in keys[start : start + 1000]]
            try:
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except Exception as exc:
                raise self._error(exc, "delete", keys[start]) from exc
            if response.get("Errors"):
                err = response["Errors"][0]
                fake = {"Error": {"Code": err.get("Code"), "Message": err.get("Message")}, "ResponseMetadata": {}}
                from botocore.exceptions import ClientError

                raise self._error(ClientError(fake, "DeleteObjects"), "delete", err.get("Key", "")[len(self.prefix) :])


# --- local files ---------------------------------------------------------------------------------


def _file_error(exc: OSError, action: str, path: Path) -> WorkerError:
    if isinstance(exc, PermissionError):
        return AccessDenied(f"cannot {action} {path}: permission denied")
    if isinstance(exc, FileNotFoundError):
        return InputsInvalid(f"cannot {action} {path}: no such file or directory")
    return TransientError(f"cannot {action} {path}: {exc}")


class FileStore(Store):
    """A local folder (file:// URIs); writes go through a temporary file and a rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.as_uri().rstrip("/") + "/"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def list_objects(self, prefix: str = "") -> list[StoredObject]:
        if not self.root.is_dir():
            raise InputsInvalid(f"{self.uri} is not a directory")
        base = self.root / prefix if prefix else self.root
        objects = []
        try:
            for path in base.rglob("*") if base.is_dir() else []:
                if path.is_file():
                    stat = path.stat()
                    key = path.relative_to(self.root).as_posix()
                    objects.append(StoredObject(key, stat.st_size, f"{stat.st_mtime_ns:x}-{stat.st_size:x}"))
        except OSError as exc:
            raise _file_error(exc, "list", base) from exc
        return sorted(objects, key=lambda o: o.key)

    def download(self, objects: Sequence[StoredObject], dest: Path, on_bytes: OnBytes | None = None) -> None:
        for obj in objects:
            target = dest / _check_key(obj.key)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(self._path(obj.key), target)
            except OSError as exc:
                raise _file_error(exc, "read", self._path(obj.key)) from exc
            if target.stat().st_size != obj.size:
                raise TransientError(f"{self._path(obj.key)} changed while being copied", reason="InputChanged")
            if on_bytes is not None:
                on_bytes(obj.size)

    def _write(self, key: str, write: Any) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _file_error(exc, "write", path) from exc

    def upload(self, files: Mapping[str, Path], on_bytes: OnBytes | None = None) -> list[UploadedFile]:
        uploaded = []
        for key, source in files.items():
            self._write(key, lambda tmp, source=source: shutil.copyfile(source, tmp))
            uploaded.append(UploadedFile(key, source.stat().st_size, sha256_of(source)))
            if on_bytes is not None:
                on_bytes(uploaded[-1].size)
        return uploaded

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda tmp: tmp.write_bytes(data))

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _file_error(exc, "read", self._path(key)) from exc

    def copy(self, src_key: str, dst_key: str) -> None:
        self._write(dst_key, lambda tmp: shutil.copyfile(self._path(src_key), tmp))

    def delete_prefix(self, prefix: str) -> int:
        if not self.root.is_dir():
            return 0
        keys = [o.key for o in self.list_objects(prefix)]
        self.delete_keys(keys)
        if prefix:
            # Folders are implicit on S3; here, remove the ones the deletion left empty.
            folder = self.root / prefix.rstrip("/")
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            for parent in folder.parents:
                if parent == self.root or not parent.is_relative_to(self.root) or any(parent.iterdir()):
                    break
                parent.rmdir()
        return len(keys)

    def delete_keys(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self._path(key).unlink(missing_ok=True)
            except OSError as exc:
                raise _file_error(exc, "delete", self._path(key)) from exc


def open_store(
    uri: str,
    storage: StorageSpec | None = None,
    options: StorageOptions | None = None,
    credentials: Mapping[str, str] | None = None,
) -> Store:
    """A store rooted at `s3://bucket/prefix/` or `file:///abs/path/` (`credentials`: see `s3_client`)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        options = options or StorageOptions.from_env()
        client = s3_client(storage or StorageSpec.model_validate({}), options, credentials)
        return S3Store(parsed.netloc, parsed.path, client, options)
    if parsed.scheme == "file":
        return FileStore(Path(unquote(parsed.path)))  # file:// paths are percent-encoded (Path.as_uri)
    raise ValueError(f"{uri!r}: expected s3://bucket/prefix/ or file:///abs/path/")
