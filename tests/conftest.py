"""Fixtures shared by every test suite: the S3 server and paths to shared data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3server import TEST_CREDENTIALS, S3Server, start_s3_server

REPO = Path(__file__).resolve().parent.parent
# Public-domain textured meshes (spot, bob, blub) live beside the checkout in shared/data/meshes.
MESHES = Path(os.environ.get("RECON_MESHES", REPO.parent / "shared" / "data" / "meshes"))


@pytest.fixture(scope="session", autouse=True)
def no_cloud_metadata() -> Iterator[None]:
    """boto3 never asks the cloud's link-local metadata service for credentials: tests talk to 127.0.0.1."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A moto S3 server over real HTTP on 127.0.0.1, for the whole session."""
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """The S3 server, emptied before the test, with test credentials in the environment."""
    s3_server.reset()
    for key, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    yield s3_server
