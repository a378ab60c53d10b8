"""A local control plane whose node is a real kubelet over containerd and CNI (tools/localcluster/kubelet.py),
running the images `make images` built. Skipped with the reason when Docker, root or the node's binaries
are missing; under RECON_REQUIRE_CLUSTER (CI) that is a failure.

Module-scoped: kube-proxy's rules are the machine's own, so one real-node cluster runs at a time
(tests/realnode/e2e starts its own for its module)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from kubernetes import client

from localcluster import Cluster, ClusterConfig, NodeConfig, binaries
from localcluster.kubelet import NODE_BINARIES
from tests.images.conftest import docker, operator_image, worker_image
from tests.integration.conftest import namespace

# Fixtures used here as they are: the images, and the integration suite's namespaces (on this cluster).
__all__ = ["docker", "namespace", "operator_image", "worker_image"]


def _unavailable(message: str) -> None:
    if os.environ.get("RECON_REQUIRE_CLUSTER"):
        pytest.fail(message + " (RECON_REQUIRE_CLUSTER is set)", pytrace=False)
    pytest.skip(message)


def check_real_node_prerequisites() -> None:
    """Skip (fail under RECON_REQUIRE_CLUSTER) when this machine cannot run a real node."""
    missing = binaries.missing((*binaries.CONTROL_PLANE, "helm", *NODE_BINARIES))
    if missing:
        _unavailable(f"missing {', '.join(missing)} in {binaries.bin_dir()}: run tools/k8s/build.sh")
    if os.geteuid() != 0:
        _unavailable("a real kubelet node needs root")


@pytest.fixture(scope="module")
def cluster(operator_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    check_real_node_prerequisites()
    node = NodeConfig(name="real-node", gpus=0, runtime="kubelet", images=[operator_image])
    local = Cluster(ClusterConfig(state_dir=tmp_path_factory.mktemp("realcluster"), nodes=[node], timeout=180))
    try:
        local.up()
    except Exception as err:
        local.down()
        pytest.fail(f"local cluster with a real node did not start: {err}\n{local.diagnostics(60)}", pytrace=False)
    yield local
    local.down()


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> client.ApiClient:
    api_client: client.ApiClient = cluster.api_client()
    return api_client


@pytest.fixture(scope="module")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)
