"""The worker's S3 store against the moto server over real HTTP: transfers, checksums and error mapping."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import threading
import urllib.parse
from pathlib import Path

import pytest

from recon_worker.errors import AccessDenied, InputsInvalid, TransientError
from recon_worker.storage import MiB, S3Store, StorageOptions, open_store
from recon_worker.task import StorageSpec
from tests.s3server import S3Server, free_port


def store(s3: S3Server, uri: str, **options: object) -> S3Store:
    opened = open_store(uri, StorageSpec(endpoint=s3.endpoint), StorageOptions(**options))  # type: ignore[arg-type]
    assert isinstance(opened, S3Store)
    return opened


def deny_writes(s3: S3Server, bucket: str) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
        ],
    }
    s3.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def test_upload_list_download_copy_delete(s3: S3Server, tmp_path: Path) -> None:
    s3.client().create_bucket(Bucket="data")
    files = {}
    for i in range(12):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(1000 + i))
        files[f"images/f{i}.bin"] = path
    bucket = store(s3, "s3://data/captures/one/")
    uploaded = bucket.upload(files)
    assert [u.sha256 for u in uploaded] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in files.values()]
    listing = bucket.list_objects()
    assert [(o.key, o.size) for o in listing] == sorted((k, p.stat().st_size) for k, p in files.items())
    bucket.download(listing, tmp_path / "down")
    for key, path in files.items():
        assert (tmp_path / "down" / key).read_bytes() == path.read_bytes()
    bucket.copy("images/f0.bin", "copied/f0.bin")
    assert bucket.get_bytes("copied/f0.bin") == files["images/f0.bin"].read_bytes()
    assert bucket.get_bytes("missing") is None
    assert bucket.delete_prefix("images/") == 12
    assert [o.key for o in bucket.list_objects()] == ["copied/f0.bin"]


def test_large_files_go_multipart(s3: S3Server, tmp_path: Path) -> None:
    s3.client().create_bucket(Bucket="big")
    path = tmp_path / "mesh.glb"
    path.write_bytes(os.urandom(11 * MiB))
    bucket = store(s3, "s3://big/out/", multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    [uploaded] = bucket.upload({"mesh.glb": path})
    etag = s3.client().head_object(Bucket="big", Key="out/mesh.glb")["ETag"]
    assert etag.strip('"').endswith("-3")  # three parts
    assert uploaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    bucket.copy("mesh.glb", "published/mesh.glb")  # multipart copy above the threshold
    bucket.download(bucket.list_objects("published/"), tmp_path / "back")
    assert hashlib.sha256((tmp_path / "back" / "published" / "mesh.glb").read_bytes()).hexdigest() == uploaded.sha256


def test_missing_bucket_is_invalid_input_naming_it(s3: S3Server) -> None:
    with pytest.raises(
        InputsInvalid, match=r"cannot list s3://no-such-bucket/cap/: bucket 'no-such-bucket' does not exist"
    ):
        store(s3, "s3://no-such-bucket/cap/").list_objects()


def test_object_deleted_between_listing_and_download(s3: S3Server, tmp_path: Path) -> None:
    client = s3.client()
    client.create_bucket(Bucket="inputs")
    for key in ("cap/a.png", "cap/b.png"):
        client.put_object(Bucket="inputs", Key=key, Body=b"x" * 10)
    bucket = store(s3, "s3://inputs/cap/")
    listing = bucket.list_objects()
    client.delete_object(Bucket="inputs", Key="cap/b.png")
    with pytest.raises(InputsInvalid, match=r"cannot download s3://inputs/cap/b\.png: no such object"):
        bucket.download(listing, tmp_path)


def test_denied_write_fails_fast_as_access_denied(s3: S3Server, tmp_path: Path) -> None:
    s3.client().create_bucket(Bucket="locked")
    deny_writes(s3, "locked")
    bucket = store(s3, "s3://locked/res/")
    with pytest.raises(AccessDenied, match=r"cannot write s3://locked/res/manifest\.json: access denied") as error:
        bucket.put_bytes("manifest.json", b"{}")
    assert error.value.exit_code == 2
    path = tmp_path / "f"
    path.write_bytes(b"1")
    with pytest.raises(AccessDenied, match=r"cannot upload to s3://locked/res/mesh\.glb"):
        bucket.upload({"mesh.glb": path})


def test_unreachable_endpoint_is_transient_after_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    bucket = open_store(
        "s3://gone/x/", StorageSpec(endpoint=endpoint), StorageOptions(max_attempts=2, connect_timeout=1)
    )
    with pytest.raises(TransientError, match=r"cannot list s3://gone/x/: EndpointConnectionError") as error:
        bucket.list_objects()
    assert error.value.exit_code == 1 and error.value.reason == "StorageUnavailable"


def test_missing_credentials_are_access_denied(s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(AccessDenied, match="no S3 credentials") as error:
        store(s3, "s3://any/x/").list_objects()
    assert error.value.reason == "NoCredentials"


class FlakyFrontend:
    """An HTTP front of the moto server that answers 503 SlowDown to the first `failures` requests.

    A real server on a real socket, so botocore's own retry logic is what gets exercised.
    """

    def __init__(self, backend: str, failures: int) -> None:
        self.failures, self.seen = failures, 0
        target = urllib.parse.urlsplit(backend)
        frontend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                frontend.seen += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if frontend.seen <= frontend.failures:
                    error = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                connection.request(self.command, self.path, body=body, headers=dict(self.headers))
                response = connection.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_one

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_throttling_and_5xx_are_retried_with_backoff(s3: S3Server) -> None:
    s3.client().create_bucket(Bucket="flaky")
    s3.client().put_object(Bucket="flaky", Key="cap/transforms.json", Body=b"{}")
    frontend = FlakyFrontend(s3.endpoint, failures=2)
    try:
        storage = StorageSpec(endpoint=frontend.endpoint)
        listing = open_store("s3://flaky/cap/", storage, StorageOptions(max_attempts=4)).list_objects()
        assert [o.key for o in listing] == ["transforms.json"] and frontend.seen == 3
        frontend.failures, frontend.seen = 100, 0
        with pytest.raises(TransientError, match=r"cannot list s3://flaky/cap/: SlowDown .* \(after retries\)"):
            open_store("s3://flaky/cap/", storage, StorageOptions(max_attempts=3)).list_objects()
        assert frontend.seen == 3  # every attempt reached the server, then the worker gave up
    finally:
        frontend.close()
