"""kwok fake nodes on the local control plane: scale tests schedule onto nodes where nothing runs."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from kubernetes import client

from localcluster import Cluster, binaries
from localcluster.kube import raw, wait_for, wait_job_finished
from localcluster.kwok import KwokNodes, pod_placement, start_kwok

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def kwok_nodes(cluster: Cluster) -> Iterator[KwokNodes]:
    if binaries.missing(("kwok",)):
        pytest.skip(f"kwok missing in {binaries.bin_dir()}: build it with tools/k8s/build.sh")
    nodes = start_kwok(cluster, nodes=3)
    yield nodes
    nodes.stop()


def test_kwok_nodes_are_ready_and_tainted(kwok_nodes: KwokNodes, core: client.CoreV1Api) -> None:
    assert len(kwok_nodes.names) == 3
    for name in kwok_nodes.names:
        node = raw(core.read_node, name)
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        assert any(t["key"] == "kwok.x-k8s.io/node" for t in node["spec"]["taints"])


def test_parallel_job_completes_on_kwok_nodes(
    kwok_nodes: KwokNodes, namespace: str, api: client.ApiClient, core: client.CoreV1Api
) -> None:
    # The command does not exist here: on kwok nodes nothing runs, kwok's stages complete the pods.
    pod_spec = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "recon-worker", "command": ["/not/run/on/kwok"]}],
        **pod_placement(),
    }
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "fanout"},
        "spec": {"parallelism": 3, "completions": 6, "backoffLimit": 0, "template": {"spec": pod_spec}},
    }
    raw(client.BatchV1Api(api).create_namespaced_job, namespace, manifest)
    finished = wait_job_finished(api, namespace, "fanout", timeout=120)
    assert finished["status"].get("succeeded") == 6, finished["status"]
    pods = raw(core.list_namespaced_pod, namespace, label_selector="job-name=fanout")["items"]
    assert {p["spec"]["nodeName"] for p in pods} <= set(kwok_nodes.names)
    assert all(p["status"]["phase"] == "Succeeded" for p in pods)


def test_ordinary_pods_stay_off_kwok_nodes(kwok_nodes: KwokNodes, namespace: str, core: client.CoreV1Api) -> None:
    pod = {
        "metadata": {"name": "real"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "local/python", "command": [sys.executable, "-c", "pass"]}],
        },
    }
    raw(core.create_namespaced_pod, namespace, pod)

    def scheduled() -> str | None:
        node = raw(core.read_namespaced_pod, "real", namespace)["spec"].get("nodeName")
        return str(node) if node else None

    assert wait_for("pod real to be scheduled", scheduled, 60) == "local-node"
