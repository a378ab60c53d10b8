"""Preflight: before a GPU is spent, check that the capture is readable and the output prefix writable.

Failures carry a typed reason: `InputsInvalid` (the user must fix the spec, the Secret or the data; no
retry) or `StorageUnreachable` (the store did not answer; retried with backoff).
"""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from recon_operator.phases import Reason
from recon_operator.spec import ReconstructionJobSpec
from recon_operator.storage import Location, StoreAccess, error_code, parse_location

PROBE_PREFIX = ".recon-preflight-"
# Codes meaning "this request will keep failing until someone changes something".
_REFUSALS = {
    "403": "access denied",
    "AccessDenied": "access denied",
    "InvalidAccessKeyId": "the access key is not known to the store",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "NoSuchBucket": "the bucket does not exist",
    "404": "it does not exist",
    "NoSuchKey": "it does not exist",
    "NotFound": "it does not exist",
}


class PreflightError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _client_failure(exc: Exception, what: str, access: StoreAccess) -> PreflightError:
    """A boto3 failure as a typed preflight error naming the object and what went wrong."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in _REFUSALS:
            return PreflightError(Reason.INPUTS_INVALID, f"{what}: {_REFUSALS[code]} ({code})")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if 400 <= int(status or 0) < 500:
            return PreflightError(Reason.INPUTS_INVALID, f"{what}: refused by the store ({code or status})")
    where = access.endpoint or "AWS S3"
    if isinstance(exc, EndpointConnectionError):
        return PreflightError(Reason.STORAGE_UNREACHABLE, f"{what}: cannot connect to {where}")
    return PreflightError(Reason.STORAGE_UNREACHABLE, f"{what}: {where} did not answer ({exc})")


PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


def _has_photos(access: StoreAccess, inp: Location) -> bool:
    """Whether the input holds at least one image (a photo folder to pose by structure from motion)."""
    if inp.scheme == "file":
        return inp.path.is_dir() and any(p.suffix.lower() in PHOTO_SUFFIXES for p in inp.path.rglob("*"))
    pages = access.client().get_paginator("list_objects_v2").paginate(Bucket=inp.bucket, Prefix=inp.prefix)
    return any(o["Key"].lower().endswith(PHOTO_SUFFIXES) for page in pages for o in page.get("Contents", []))


def _check_photos(access: StoreAccess, inp: Location) -> bool:
    """Poses to estimate: no transforms file is needed, photos are."""
    try:
        found = _has_photos(access, inp)
    except (ClientError, BotoCoreError) as exc:
        raise _client_failure(exc, f"input {inp.uri}", access) from None
    if not found:
        raise PreflightError(Reason.INPUTS_INVALID, f"input {inp.uri} holds no PNG or JPEG photos to pose")
    return True


def _check_input(spec: ReconstructionJobSpec, access: StoreAccess, inp: Location) -> bool:
    """Raise unless the capture is there; True when its photos are to be posed by structure from motion."""
    if spec.input.poses == "estimate":
        return _check_photos(access, inp)
    try:
        _check_transforms(spec, access, inp)
        return False
    except PreflightError as missing:
        if spec.input.poses != "auto" or missing.reason != Reason.INPUTS_INVALID:
            raise
        # auto: a folder of photos without a transforms file is posed by structure from motion.
        try:
            return _check_photos(access, inp)
        except PreflightError as no_photos:
            raise PreflightError(no_photos.reason, f"{missing.message}, and {no_photos.message}") from None


def _check_transforms(spec: ReconstructionJobSpec, access: StoreAccess, inp: Location) -> None:
    name = spec.input.transforms_file
    if inp.scheme == "file":
        transforms = inp.path / name
        if not inp.path.is_dir():
            raise PreflightError(Reason.INPUTS_INVALID, f"input folder {inp.path} does not exist")
        if not transforms.is_file():
            raise PreflightError(Reason.INPUTS_INVALID, f"input {transforms} does not exist")
        if not os.access(transforms, os.R_OK):
            raise PreflightError(Reason.INPUTS_INVALID, f"input {transforms} is not readable")
        return
    try:
        access.client().head_object(Bucket=inp.bucket, Key=inp.prefix + name)
    except (ClientError, BotoCoreError) as exc:
        raise _client_failure(exc, f"input {inp.child(name)}", access) from None


def _check_output(access: StoreAccess, out: Location) -> None:
    probe = PROBE_PREFIX + uuid.uuid4().hex[:12]
    if out.scheme == "file":
        try:
            out.path.mkdir(parents=True, exist_ok=True)
            target = out.path / probe
            target.write_bytes(b"recon-operator preflight probe\n")
            target.unlink()
        except OSError as exc:
            raise PreflightError(Reason.INPUTS_INVALID, f"output {out.path} is not writable: {exc.strerror}") from None
        return
    client = access.client()
    try:
        client.put_object(Bucket=out.bucket, Key=out.prefix + probe, Body=b"recon-operator preflight probe\n")
        client.delete_object(Bucket=out.bucket, Key=out.prefix + probe)
    except (ClientError, BotoCoreError) as exc:
        raise _client_failure(exc, f"output {out.uri} is not writable (probe {out.child(probe)})", access) from None


def preflight(spec: ReconstructionJobSpec, access: StoreAccess) -> bool:
    """Raise PreflightError unless the capture is readable and the output prefix writable.

    Returns whether the capture is a folder of photos to pose (`spec.input.poses` estimate, or auto without
    a transforms file): the operator then runs the CPU poses Job before the worker Job.
    """
    needs_poses = _check_input(spec, access, parse_location(spec.input.uri))
    _check_output(access, parse_location(spec.output.uri))
    return needs_poses


def credentials_from_secret(secret: Any, namespace: str, name: str) -> tuple[tuple[str, str], ...]:
    """AWS_* pairs from a core/v1 Secret (client object); InputsInvalid names the missing key."""
    data = dict(secret.data or {}) if secret is not None else {}
    pairs = []
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if key in data:
            pairs.append((key, base64.b64decode(data[key]).decode()))
        elif key != "AWS_SESSION_TOKEN":
            raise PreflightError(
                Reason.INPUTS_INVALID, f"Secret {namespace}/{name} (spec.storage.credentialsSecret) has no key {key}"
            )
    return tuple(pairs)
