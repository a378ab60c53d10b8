"""The operator image, run as the chart runs it (uid 10001, read-only root filesystem, /tmp on a tmpfs,
no capabilities) against the local control plane: it answers liveness and metrics, and reconciles a
ReconstructionJob to Succeeded. The worker is the integration suite's stand-in, run by the node agent."""

from __future__ import annotations

import json
import secrets
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster import Cluster
from localcluster.kube import wait_for
from tests.images.conftest import Docker
from tests.integration.test_operator_lifecycle import STAND_IN, apply, store, wait_phase
from tests.s3server import S3Server, free_port

pytestmark = [pytest.mark.images, pytest.mark.cluster, pytest.mark.slow]
__all__ = ["store"]  # a fixture of the integration suite, used here as is


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except OSError as exc:
        return 0, str(exc)


@pytest.fixture
def operator_container(
    docker: Docker, operator_image: str, cluster: Cluster, s3_server: S3Server, namespace: str, tmp_path: Path
) -> Iterator[dict[str, int]]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(cluster.kubeconfig.read_text())
    kubeconfig.chmod(0o644)  # read by the container's uid 10001
    ports = {"metrics": free_port(), "liveness": free_port()}
    settings = {
        "KUBECONFIG": "/etc/recon/kubeconfig",
        "RECON_OPERATOR_NAMESPACES": namespace,
        "RECON_OPERATOR_METRICS_PORT": str(ports["metrics"]),
        "RECON_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{ports['liveness']}/healthz",
        "RECON_OPERATOR_S3_ENDPOINT": s3_server.endpoint,
        "RECON_OPERATOR_WORKER_COMMAND": json.dumps([sys.executable, "-c", STAND_IN]),
        "RECON_OPERATOR_DEFAULT_CPU": "50m",
        "RECON_OPERATOR_DEFAULT_MEMORY": "64Mi",
        "RECON_OPERATOR_RECONCILE_INTERVAL_S": "1",
    }
    name = f"recon-operator-test-{secrets.token_hex(3)}"
    env = [arg for key, value in settings.items() for arg in ("-e", f"{key}={value}")]
    # Host networking: the API server and the S3 server listen on 127.0.0.1 here.
    docker(
        "run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,size=64m",
        "--user", "10001:10001", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{kubeconfig}:/etc/recon/kubeconfig:ro", *env, operator_image,
    )  # fmt: skip
    try:
        yield ports
    finally:
        logs = docker("logs", name, check=False)
        docker("rm", "-f", name, check=False)
        print(f"--- operator container logs ---\n{logs.stdout[-3000:]}\n{logs.stderr[-6000:]}")


def test_operator_image_answers_probes_and_reconciles_a_job(
    operator_container: dict[str, int], store: S3Server, api: client.ApiClient, namespace: str
) -> None:
    liveness = f"http://127.0.0.1:{operator_container['liveness']}/healthz"
    wait_for("the operator's liveness endpoint", lambda: fetch(liveness)[0] == 200, timeout=60)
    custom = client.CustomObjectsApi(api)
    apply(custom, store, namespace, "in-image", {"sleep": 1})
    status = wait_phase(custom, namespace, "in-image", "Succeeded", timeout=120)
    assert status["jobName"].startswith("in-image")
    code, metrics = fetch(f"http://127.0.0.1:{operator_container['metrics']}/metrics")
    assert code == 200, metrics
    assert 'recon_jobs{phase="Succeeded"} 1.0' in metrics, metrics[-2000:]
    assert "recon_time_to_job_seconds_count 1.0" in metrics
