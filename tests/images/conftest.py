"""The two images, run as containers by the Docker engine (`make images` builds them).

Skipped, with the reason, only when no Docker engine answers here; under RECON_REQUIRE_CLUSTER (CI)
that is a failure. A missing image is built with tools/images.sh (minutes from cold caches).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

REGISTRY = os.environ.get("REGISTRY", "ghcr.io/recon-dev")
VERSION = os.environ.get("VERSION", "0.1.0")
Docker = Callable[..., subprocess.CompletedProcess[str]]


def _unavailable(message: str) -> None:
    if os.environ.get("RECON_REQUIRE_CLUSTER"):
        pytest.fail(message + " (RECON_REQUIRE_CLUSTER is set)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker() -> Docker:
    """`docker(*args, check=True, timeout=600)` against an engine that answers."""
    executable = shutil.which("docker")
    if executable is None:
        _unavailable("no docker command: `make images` installs Debian's docker.io and starts it")
    assert executable is not None
    info = subprocess.run([executable, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        reason = info.stderr.strip()[-200:]
        _unavailable(f"the Docker engine does not answer (docker info: {reason}); `make images` starts it")

    def run(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([executable, *args], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result

    return run


def _image(docker: Docker, name: str) -> str:
    tag = f"{REGISTRY}/recon-{name}:{VERSION}"
    if docker("image", "inspect", tag, check=False).returncode != 0:
        build = subprocess.run([str(REPO / "tools" / "images.sh")], capture_output=True, text=True, timeout=3600)
        assert build.returncode == 0, f"tools/images.sh failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    return tag


@pytest.fixture(scope="session")
def worker_image(docker: Docker) -> str:
    return _image(docker, "worker")


@pytest.fixture(scope="session")
def operator_image(docker: Docker) -> str:
    return _image(docker, "operator")


@contextlib.contextmanager
def operator_container(
    docker: Docker, image: str, kubeconfig: Path, tmp_path: Path, settings: dict[str, str]
) -> Iterator[str]:
    """The operator image run as the chart runs it (uid 10001, read-only root filesystem, /tmp a tmpfs,
    no capabilities), on the host network (the API and S3 servers listen on 127.0.0.1 here)."""
    mounted = tmp_path / "operator-kubeconfig"
    mounted.write_text(kubeconfig.read_text())
    mounted.chmod(0o644)  # read by the container's uid 10001
    name = f"recon-operator-test-{secrets.token_hex(3)}"
    env = [
        arg
        for key, value in {"KUBECONFIG": "/etc/recon/kubeconfig", **settings}.items()
        for arg in ("-e", f"{key}={value}")
    ]
    docker(
        "run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,size=64m",
        "--user", "10001:10001", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{mounted}:/etc/recon/kubeconfig:ro", *env, image,
    )  # fmt: skip
    try:
        yield name
    finally:
        logs = docker("logs", name, check=False)
        docker("rm", "-f", name, check=False)
        print(f"--- operator container logs ---\n{logs.stdout[-3000:]}\n{logs.stderr[-6000:]}")


# The local control plane of the integration suite (tools/localcluster), for the operator image.
from tests.integration.conftest import api, cluster, core, namespace  # noqa: E402

__all__ = ["api", "cluster", "core", "namespace"]
