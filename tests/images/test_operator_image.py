"""The operator image, run as the chart runs it (uid 10001, read-only root filesystem, /tmp on a tmpfs,
no capabilities) against the local control plane: it answers liveness and metrics, and reconciles a
ReconstructionJob to Succeeded. The worker is the integration suite's stand-in, run by the node agent."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster import Cluster
from localcluster.kube import wait_for
from tests.images.conftest import Docker, operator_container
from tests.integration.conftest import buckets
from tests.integration.reconstruction_jobs import wait_phase
from tests.integration.test_operator_lifecycle import STAND_IN, apply
from tests.s3server import S3Server, free_port

pytestmark = [pytest.mark.images, pytest.mark.cluster, pytest.mark.slow]
__all__ = ["buckets"]  # a fixture of the integration suite, used here as is


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except OSError as exc:
        return 0, str(exc)


@pytest.fixture
def operator_ports(
    docker: Docker, operator_image: str, cluster: Cluster, s3_server: S3Server, namespace: str, tmp_path: Path
) -> Iterator[dict[str, int]]:
    ports = {"metrics": free_port(), "liveness": free_port()}
    settings = {
        "RECON_OPERATOR_NAMESPACES": namespace,
        "RECON_OPERATOR_METRICS_PORT": str(ports["metrics"]),
        "RECON_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{ports['liveness']}/healthz",
        "RECON_OPERATOR_S3_ENDPOINT": s3_server.endpoint,
        "RECON_OPERATOR_WORKER_COMMAND": json.dumps([sys.executable, "-c", STAND_IN]),
        "RECON_OPERATOR_DEFAULT_CPU": "50m",
        "RECON_OPERATOR_DEFAULT_MEMORY": "64Mi",
        "RECON_OPERATOR_RECONCILE_INTERVAL_S": "1",
    }
    with operator_container(docker, operator_image, cluster.kubeconfig, tmp_path, settings):
        yield ports


def test_operator_image_answers_probes_and_reconciles_a_job(
    operator_ports: dict[str, int], buckets: S3Server, api: client.ApiClient, namespace: str
) -> None:
    liveness = f"http://127.0.0.1:{operator_ports['liveness']}/healthz"
    wait_for("the operator's liveness endpoint", lambda: fetch(liveness)[0] == 200, timeout=60)
    custom = client.CustomObjectsApi(api)
    apply(custom, buckets, namespace, "in-image", {"sleep": 1})
    status = wait_phase(custom, namespace, "in-image", "Succeeded", timeout=120)
    assert status["jobName"].startswith("in-image")
    code, metrics = fetch(f"http://127.0.0.1:{operator_ports['metrics']}/metrics")
    assert code == 200, metrics
    assert 'recon_jobs{phase="Succeeded"} 1.0' in metrics, metrics[-2000:]
    assert "recon_time_to_job_seconds_count 1.0" in metrics
