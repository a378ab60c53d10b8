"""The capture-form fields of spec.input: passed to the worker's task, and preflight of photo folders
(no transforms file, poses to estimate) against a real S3 server and real local folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recon_operator.phases import Reason
from recon_operator.preflight import PreflightError, preflight
from recon_operator.spec import ReconstructionJobSpec
from recon_operator.storage import StoreAccess
from recon_operator.task import input_document
from tests.s3server import S3Server
from tests.unit.operator.test_preflight import access


def spec(inp: str, out: str, **extra: Any) -> ReconstructionJobSpec:
    return ReconstructionJobSpec.model_validate({"input": {"uri": inp, **extra}, "output": {"uri": out}})


def test_input_document_carries_the_capture_form() -> None:
    doc = input_document(spec("s3://c/x/", "s3://r/x/", poses="estimate", masks="model", maskModel="/m/a.onnx"))
    assert doc == {
        "uri": "s3://c/x/",
        "transformsFile": "transforms.json",
        "poses": "estimate",
        "masks": "model",
        "maskModel": "/m/a.onnx",
        "minRegistered": 0.8,
        "matching": "exhaustive",
    }


@pytest.fixture
def photo_buckets(s3: S3Server) -> S3Server:
    client = s3.client()
    client.create_bucket(Bucket="captures")
    client.create_bucket(Bucket="results")
    client.put_object(Bucket="captures", Key="mug/IMG_0001.JPG", Body=b"\xff\xd8\xff")
    client.put_object(Bucket="captures", Key="empty/readme.txt", Body=b"nothing")
    return s3


def test_a_photo_folder_passes_preflight_when_poses_are_estimated(photo_buckets: S3Server) -> None:
    # The operator runs the CPU poses Job first when preflight says the photos need posing.
    assert preflight(spec("s3://captures/mug/", "s3://results/mug/"), access(photo_buckets)) is True  # auto
    assert preflight(spec("s3://captures/mug/", "s3://results/mug/", poses="estimate"), access(photo_buckets))
    with pytest.raises(PreflightError, match=r"transforms\.json"):
        preflight(spec("s3://captures/mug/", "s3://results/mug/", poses="given"), access(photo_buckets))


def test_a_folder_without_transforms_or_photos_is_named(photo_buckets: S3Server) -> None:
    with pytest.raises(PreflightError) as caught:
        preflight(spec("s3://captures/empty/", "s3://results/e/"), access(photo_buckets))
    assert caught.value.reason == Reason.INPUTS_INVALID
    assert "transforms.json" in caught.value.message and "no PNG or JPEG photos" in caught.value.message


def test_local_photo_folder(tmp_path: Path) -> None:
    (tmp_path / "cap" / "train").mkdir(parents=True)
    (tmp_path / "cap" / "train" / "a.png").write_bytes(b"\x89PNG")
    assert preflight(
        spec((tmp_path / "cap").as_uri() + "/", (tmp_path / "out").as_uri() + "/", poses="estimate"), StoreAccess()
    )
