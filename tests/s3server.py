"""A real S3 server for tests: moto's server mode in a subprocess, spoken to over HTTP on 127.0.0.1
(or on a real node's bridge gateway, where that node's pods reach it: `host`).

Tests never patch boto3 in-process; they talk to this server exactly as the worker talks to MinIO.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# moto accepts any credentials; these make boto3 sign requests as it would against a real store.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset endpoint)."""
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_s3_server(log_dir: Path, port: int | None = None, timeout: float = 30.0, host: str = "127.0.0.1") -> S3Server:
    """Start `moto_server` on `host` (127.0.0.1, or an address of a network the test made) and wait
    until it answers."""
    port = port or free_port(host)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"moto-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    endpoint = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with code {process.returncode}; see {log_path}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return S3Server(endpoint, process, log_path)
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"moto server did not answer on {endpoint} within {timeout:.0f} s; see {log_path}")
