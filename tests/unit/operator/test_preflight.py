"""Preflight against a real S3 server (moto over HTTP) and real local folders."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from recon_operator.phases import Reason
from recon_operator.preflight import PROBE_PREFIX, PreflightError, credentials_from_secret, preflight
from recon_operator.spec import ReconstructionJobSpec
from recon_operator.storage import StoreAccess, object_exists, parse_location
from tests.s3server import TEST_CREDENTIALS, S3Server, free_port


def spec(inp: str, out: str, **extra: Any) -> ReconstructionJobSpec:
    return ReconstructionJobSpec.model_validate({"input": {"uri": inp, **extra}, "output": {"uri": out}})


def access(s3: S3Server) -> StoreAccess:
    creds = tuple((k, v) for k, v in TEST_CREDENTIALS.items() if k.startswith("AWS_") and "REGION" not in k)
    return StoreAccess(endpoint=s3.endpoint, credentials=creds, timeout_s=5)


@pytest.fixture
def buckets(s3: S3Server) -> S3Server:
    client = s3.client()
    client.create_bucket(Bucket="captures")
    client.create_bucket(Bucket="results")
    client.put_object(Bucket="captures", Key="bunny/transforms.json", Body=b"{}")
    return s3


def test_s3_inputs_present_and_output_writable(buckets: S3Server) -> None:
    # A transforms file: posed already, no poses Job.
    assert preflight(spec("s3://captures/bunny/", "s3://results/bunny/"), access(buckets)) is False
    leftovers = buckets.client().list_objects_v2(Bucket="results").get("Contents", [])
    assert not [o for o in leftovers if PROBE_PREFIX in o["Key"]]  # the probe is cleaned up


def test_missing_transforms_file_is_inputs_invalid_and_named(buckets: S3Server) -> None:
    with pytest.raises(PreflightError) as caught:
        preflight(
            spec("s3://captures/bunny/", "s3://results/x/", transformsFile="transforms_train.json"), access(buckets)
        )
    assert caught.value.reason == Reason.INPUTS_INVALID
    assert "s3://captures/bunny/transforms_train.json" in caught.value.message


def test_missing_output_bucket_is_inputs_invalid(buckets: S3Server) -> None:
    with pytest.raises(PreflightError) as caught:
        preflight(spec("s3://captures/bunny/", "s3://no-such-bucket/x/"), access(buckets))
    assert caught.value.reason == Reason.INPUTS_INVALID
    assert "s3://no-such-bucket/x/" in caught.value.message


def test_unreachable_store_is_storage_unreachable() -> None:
    dead = StoreAccess(
        endpoint=f"http://127.0.0.1:{free_port()}",
        credentials=(("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")),
        timeout_s=1,
    )
    with pytest.raises(PreflightError) as caught:
        preflight(spec("s3://captures/bunny/", "s3://results/bunny/"), dead)
    assert caught.value.reason == Reason.STORAGE_UNREACHABLE
    assert dead.endpoint is not None and dead.endpoint in caught.value.message


def test_local_folders(tmp_path: Path) -> None:
    capture = tmp_path / "capture"
    capture.mkdir()
    (capture / "transforms.json").write_text("{}")
    out = tmp_path / "out" / "nested"
    preflight(spec(f"file://{capture}/", f"file://{out}/"), StoreAccess())
    assert out.is_dir() and not list(out.iterdir())


def test_local_missing_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(PreflightError) as caught:
        preflight(spec(f"file://{tmp_path}/", f"file://{tmp_path}/out/"), StoreAccess())
    assert caught.value.reason == Reason.INPUTS_INVALID
    assert str(tmp_path / "transforms.json") in caught.value.message


def test_manifest_check(buckets: S3Server, tmp_path: Path) -> None:
    assert not object_exists(access(buckets), "s3://results/bunny/manifest.json")
    buckets.client().put_object(Bucket="results", Key="bunny/manifest.json", Body=b"{}")
    assert object_exists(access(buckets), "s3://results/bunny/manifest.json")
    (tmp_path / "manifest.json").write_text("{}")
    assert object_exists(StoreAccess(), f"file://{tmp_path}/manifest.json")


def test_locations_split_for_their_client() -> None:
    s3 = parse_location("s3://results/jobs/bunny/")
    assert (s3.scheme, s3.bucket, s3.prefix) == ("s3", "results", "jobs/bunny/")
    assert s3.child("manifest.json") == "s3://results/jobs/bunny/manifest.json"
    assert parse_location("s3://results").prefix == ""
    local = parse_location("file:///data/out%20put/")
    assert (local.scheme, str(local.path)) == ("file", "/data/out put")


def test_credentials_come_from_the_secret_and_missing_keys_are_named() -> None:
    secret = SimpleNamespace(data={"AWS_ACCESS_KEY_ID": b64("id"), "AWS_SECRET_ACCESS_KEY": b64("key")})
    assert credentials_from_secret(secret, "ns", "s3") == (
        ("AWS_ACCESS_KEY_ID", "id"),
        ("AWS_SECRET_ACCESS_KEY", "key"),
    )
    with pytest.raises(PreflightError, match=r"Secret ns/s3 .* has no key AWS_SECRET_ACCESS_KEY"):
        credentials_from_secret(SimpleNamespace(data={"AWS_ACCESS_KEY_ID": b64("id")}), "ns", "s3")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
