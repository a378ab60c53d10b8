"""The real node: pods in real images, and the failures only a real kubelet produces, each mapped to
its typed reason on the ReconstructionJob by the operator (its image, run as the chart runs it)."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster import Cluster
from localcluster.kube import raw, wait_for
from tests.images.conftest import Docker, operator_container
from tests.integration.conftest import buckets
from tests.integration.reconstruction_jobs import wait_phase, wait_status
from tests.integration.test_operator_lifecycle import apply
from tests.s3server import S3Server, free_port

pytestmark = [pytest.mark.images, pytest.mark.cluster, pytest.mark.slow]
__all__ = ["buckets"]

# A registry on 127.0.0.1 that does not listen: the pull fails here, and nothing leaves the machine.
ABSENT_IMAGE = "127.0.0.1:9/recon/absent:0"

# The worker's stand-in, run in the operator image's Python: what it does depends on the resource's name.
BEHAVIOUR = textwrap.dedent(
    """
    import json, os, time
    name = json.loads(os.environ["RECON_TASK"])["job"]["name"]
    if name.startswith("oom"):
        hog = b"x" * (512 << 20)  # 512 MiB, written, against a 64 MiB limit
    if name.startswith("evict"):
        with open("/scratch/fill", "wb") as f:  # past the scratch volume's size limit, 1 MiB at a time
            for _ in range(64):
                f.write(b"x" * (1 << 20))
        time.sleep(300)
    """
)


def test_a_pod_runs_in_its_image_with_an_address_on_the_nodes_bridge(
    cluster: Cluster, core: client.CoreV1Api, namespace: str, operator_image: str
) -> None:
    pod = {
        "metadata": {"name": "hello"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": operator_image, "imagePullPolicy": "Never",
                            "command": ["python", "-c", "print('hello from', __import__('sys').version)"]}],
        },
    }  # fmt: skip
    raw(core.create_namespaced_pod, namespace, pod)

    def finished() -> dict | None:
        status = raw(core.read_namespaced_pod, "hello", namespace)["status"]
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for("pod hello finished", finished, timeout=120)
    assert status["phase"] == "Succeeded", json.dumps(status)
    network = cluster.real_nodes["real-node"].network
    assert network is not None and ipaddress.ip_address(status["podIP"]) in network.subnet
    assert "hello from 3.11" in core.read_namespaced_pod_log("hello", namespace)


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service(
    cluster: Cluster, core: client.CoreV1Api, namespace: str, operator_image: str
) -> None:
    """In-cluster config, as the operator and the worker use it: KUBERNETES_SERVICE_HOST (the Service's
    address, kube-proxy's rules), the ServiceAccount's token and CA. The API server is on the gateway."""
    script = (
        "import kubernetes as k; k.config.load_incluster_config(); "
        "print('server', k.client.Configuration.get_default_copy().host); "
        "print('version', k.client.VersionApi().get_code().git_version)"
    )
    pod = {
        "metadata": {"name": "in-cluster"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": operator_image, "imagePullPolicy": "Never",
                            "command": ["python", "-c", script]}],
        },
    }  # fmt: skip
    raw(core.create_namespaced_pod, namespace, pod)

    def finished() -> dict | None:
        status = raw(core.read_namespaced_pod, "in-cluster", namespace)["status"]
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = wait_for("pod in-cluster finished", finished, timeout=120)
    log = core.read_namespaced_pod_log("in-cluster", namespace)
    assert status["phase"] == "Succeeded", f"{json.dumps(status)}\n{log}"
    version = raw(client.VersionApi(core.api_client).get_code)["gitVersion"]
    assert f"version {version}" in log and "server https://10.96.0.1:443" in log, log


@pytest.fixture
def operator(
    docker: Docker, operator_image: str, cluster: Cluster, s3_server: S3Server, namespace: str, tmp_path: Path
) -> Iterator[None]:
    settings = {
        "RECON_OPERATOR_NAMESPACES": namespace,
        "RECON_OPERATOR_METRICS_PORT": str(free_port()),
        "RECON_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{free_port()}/healthz",
        "RECON_OPERATOR_S3_ENDPOINT": s3_server.endpoint,
        "RECON_OPERATOR_WORKER_IMAGE": operator_image,
        "RECON_OPERATOR_WORKER_COMMAND": json.dumps(["python", "-c", BEHAVIOUR]),
        "RECON_OPERATOR_DEFAULT_CPU": "100m",
        "RECON_OPERATOR_DEFAULT_MEMORY": "64Mi",
        "RECON_OPERATOR_SCRATCH_SIZE": "16Mi",
        "RECON_OPERATOR_RECONCILE_INTERVAL_S": "1",
        # The image-pull test names an image of a registry on 127.0.0.1 that does not listen.
        "RECON_OPERATOR_ALLOWED_IMAGE_PREFIXES": json.dumps([ABSENT_IMAGE.rpartition("/")[0] + "/"]),
    }
    with operator_container(docker, operator_image, cluster.kubeconfig, tmp_path, settings):
        yield


def test_a_worker_over_its_memory_limit_is_oom_killed(
    operator: None, buckets: S3Server, api: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api)
    apply(custom, buckets, namespace, "oom", {}, backoffLimit=0)
    status = wait_phase(custom, namespace, "oom", "Failed", timeout=180)
    assert status["reason"] == "OOMKilled", json.dumps(status)


def test_an_image_that_is_not_there_is_image_pull_failed(
    operator: None, buckets: S3Server, api: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api)
    apply(custom, buckets, namespace, "no-image", {}, image=ABSENT_IMAGE)
    status = wait_phase(custom, namespace, "no-image", "Failed", timeout=180)
    assert status["reason"] == "ImagePullFailed", json.dumps(status)


def test_a_worker_evicted_by_the_kubelet_is_evicted_on_the_resource(
    operator: None, buckets: S3Server, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    """Over its scratch volume's size limit, the kubelet evicts the pod. The kubelet marks that eviction
    with no DisruptionTarget condition (the pod's own doing), so the Job counts it: with backoffLimit 0
    the resource fails, typed Evicted, with the kubelet's message."""
    custom = client.CustomObjectsApi(api)
    apply(custom, buckets, namespace, "evict", {}, backoffLimit=0)
    status = wait_phase(custom, namespace, "evict", "Failed", timeout=180)
    assert status["reason"] == "Evicted", json.dumps(status)
    pods = raw(core.list_namespaced_pod, namespace, label_selector="batch.kubernetes.io/job-name=evict-1")["items"]
    (pod,) = pods
    assert pod["status"]["reason"] == "Evicted" and "scratch" in pod["status"]["message"], json.dumps(pod["status"])
    assert "scratch" in status["message"], status["message"]


def test_a_missing_runtime_class_is_reported_on_the_resource(
    operator: None, buckets: S3Server, api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    """The API server refuses the pod ("RuntimeClass ... not found"): the Job controller reports FailedCreate,
    and the operator puts it on the resource: Queued, reason Unschedulable, with the API server's words (an
    admin may still create the RuntimeClass, so it waits rather than fails)."""
    custom = client.CustomObjectsApi(api)
    apply(custom, buckets, namespace, "no-runtime", {}, scheduling={"runtimeClassName": "absent"})

    def refused() -> list[str]:
        events = raw(core.list_namespaced_event, namespace)["items"]
        return [e["message"] for e in events if e["reason"] == "FailedCreate" and "RuntimeClass" in e["message"]]

    messages = wait_for("the Job's FailedCreate event", refused, timeout=120)
    assert 'RuntimeClass "absent" not found' in messages[0]
    status = wait_status(custom, namespace, "no-runtime", lambda s: "RuntimeClass" in (s.get("message") or ""),
                         "the refusal in the resource's status", timeout=60)  # fmt: skip
    assert (status["phase"], status["reason"]) == ("Queued", "Unschedulable"), json.dumps(status)
    assert 'RuntimeClass "absent" not found' in status["message"], status["message"]
