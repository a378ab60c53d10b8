"""A local control plane whose node is a real kubelet over containerd and CNI (tools/localcluster/kubelet.py),
running the images `make images` built. Skipped with the reason when Docker, root or the node's binaries
are missing; under RECON_REQUIRE_CLUSTER (CI) that is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from localcluster import Cluster, ClusterConfig, NodeConfig, binaries
from localcluster.kubelet import NODE_BINARIES
from tests.images.conftest import docker, operator_image, worker_image
from tests.integration.conftest import api, core, namespace

# Fixtures used here as they are: the images, and the integration suite's clients (on this cluster).
__all__ = ["api", "core", "docker", "namespace", "operator_image", "worker_image"]


def _unavailable(message: str) -> None:
    if os.environ.get("RECON_REQUIRE_CLUSTER"):
        pytest.fail(message + " (RECON_REQUIRE_CLUSTER is set)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def cluster(operator_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = binaries.missing() + [n for n in NODE_BINARIES if not (binaries.bin_dir() / n).is_file()]
    if missing:
        _unavailable(f"missing {', '.join(missing)} in {binaries.bin_dir()}: run tools/k8s/build.sh")
    if os.geteuid() != 0:
        _unavailable("a real kubelet node needs root")
    node = NodeConfig(name="real-node", gpus=0, runtime="kubelet", images=[operator_image])
    local = Cluster(ClusterConfig(state_dir=tmp_path_factory.mktemp("realcluster"), nodes=[node], timeout=180))
    try:
        local.up()
    except Exception as err:
        local.down()
        pytest.fail(f"local cluster with a real node did not start: {err}\n{local.diagnostics(60)}", pytrace=False)
    yield local
    local.down()
