"""Object-store access for the operator: where a URI points, and a boto3 client to reach it.

The operator only probes (preflight) and checks for the published manifest; it never reads captures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

MANIFEST = "manifest.json"
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Location:
    """An s3:// or file:// folder URI, split for the client that serves it."""

    uri: str
    scheme: str  # "s3" or "file"
    bucket: str  # "" for file://
    key: str  # object key (or key prefix) for s3://, absolute path for file://

    def child(self, name: str) -> str:
        """URI of `name` inside this folder."""
        return self.uri.rstrip("/") + "/" + name

    @property
    def path(self) -> Path:
        return Path(self.key)

    @property
    def prefix(self) -> str:
        """The key as a folder prefix: "" or ending in "/"."""
        return self.key.rstrip("/") + "/" if self.key.strip("/") else ""


def parse_location(uri: str) -> Location:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return Location(uri, "s3", parsed.netloc, parsed.path.lstrip("/"))
    if parsed.scheme == "file":
        return Location(uri, "file", "", unquote(parsed.path))
    raise ValueError(f"{uri!r} is neither s3:// nor file://")


@dataclass(frozen=True)
class StoreAccess:
    """How to reach the object store for one CR (credentials from its Secret, or the operator's own)."""

    endpoint: str | None = None
    region: str | None = None
    credentials: tuple[tuple[str, str], ...] = ()  # (AWS_* name, value) pairs; empty: ambient identity
    timeout_s: float = 20.0

    def client(self) -> Any:
        """A boto3 S3 client for this access, shared (they are thread-safe and costly to build)."""
        return _client(self)


@functools.lru_cache(maxsize=64)
def _client(access: StoreAccess) -> Any:
    creds = dict(access.credentials)
    return boto3.session.Session().client(
        "s3",
        endpoint_url=access.endpoint,
        region_name=access.region or "us-east-1",
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=creds.get("AWS_SESSION_TOKEN"),
        config=Config(
            connect_timeout=access.timeout_s,
            read_timeout=access.timeout_s,
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"} if access.endpoint else None,
        ),
    )


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def object_exists(access: StoreAccess, uri: str) -> bool:
    """Whether the object (or local file) at `uri` exists. Raises on an unreachable store or a refusal."""
    location = parse_location(uri)
    if location.scheme == "file":
        return location.path.is_file()
    try:
        access.client().head_object(Bucket=location.bucket, Key=location.key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def object_size(access: StoreAccess, uri: str) -> int | None:
    """Size in bytes of the object (or local file) at `uri`; None when it does not exist."""
    location = parse_location(uri)
    if location.scheme == "file":
        return location.path.stat().st_size if location.path.is_file() else None
    try:
        head = access.client().head_object(Bucket=location.bucket, Key=location.key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return int(head["ContentLength"])


def read_object(access: StoreAccess, uri: str, limit: int) -> bytes | None:
    """The first `limit` + 1 bytes of the object (or local file) at `uri`; None when it does not exist."""
    location = parse_location(uri)
    if location.scheme == "file":
        if not location.path.is_file():
            return None
        with location.path.open("rb") as handle:
            return handle.read(limit + 1)
    try:
        response = access.client().get_object(Bucket=location.bucket, Key=location.key, Range=f"bytes=0-{limit}")
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    data: bytes = response["Body"].read(limit + 1)
    return data
