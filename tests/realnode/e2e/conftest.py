"""The end-to-end suite (tests/e2e) on a real kubelet node, with the images `make images` built.

A fresh local control plane whose node is a kubelet over containerd (tools/localcluster/kubelet.py),
with no CRD up front; both images loaded into the node's containerd (no registry); the S3 server on
the node's bridge gateway, where pods reach it (the API server listens there too, and pods reach it
through the `kubernetes` Service, kube-proxy); then `helm install` of the chart with the real images,
`pullPolicy: Never`. The tests themselves are tests/e2e's, unchanged.

Module-scoped: kube-proxy's rules are the machine's, so one real-node cluster runs at a time (the
other real-node tests start theirs after this module is done).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import Cluster, ClusterConfig, NodeConfig
from tests.conftest import REPO
from tests.e2e.conftest import Installed, install_on, jobs, namespace, upload_spot
from tests.images.conftest import REGISTRY, VERSION, docker, operator_image, worker_image
from tests.realnode.conftest import check_real_node_prerequisites

# tests/e2e's per-test fixtures, over this module's `installed` and `capture`.
__all__ = ["docker", "jobs", "namespace", "operator_image", "worker_image"]


def real_node_values(s3_endpoint: str) -> dict[str, object]:
    """Chart values for the real node: the loaded images, never pulled; small CPU workers; the S3 server."""
    never = {"tag": VERSION, "pullPolicy": "Never"}
    return {
        "image": {"repository": f"{REGISTRY}/recon-operator", **never},
        "operator": {"reconcileIntervalSeconds": 1, "preflightRetries": 2, "preflightBackoffSeconds": 1},
        "worker": {
            "image": {"repository": f"{REGISTRY}/recon-worker", **never},
            # The machine has 2 CPUs: the production defaults (4 CPU, 16Gi) would never schedule.
            "cpu": "1",
            "memory": "4Gi",
            "scratchSize": "2Gi",
            "tolerations": [],
            "s3": {"endpoint": s3_endpoint, "region": "us-east-1"},
        },
    }


@pytest.fixture(scope="module")
def installed(operator_image: str, worker_image: str) -> Iterator[Installed]:
    check_real_node_prerequisites()
    scratch = REPO / ".scratch"  # kept in the checkout (git-ignored): a failed run leaves its logs there
    scratch.mkdir(exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="e2e-real-", dir=scratch))
    node = NodeConfig(name="real-node", gpus=0, runtime="kubelet", images=[operator_image, worker_image])
    cluster = Cluster(ClusterConfig(state_dir=state / "cluster", crd_dir=None, nodes=[node], timeout=600))
    try:
        cluster.up()
    except Exception as err:
        cluster.down()
        pytest.fail(f"local cluster with a real node did not start: {err}\n{cluster.diagnostics(60)}", pytrace=False)
    try:
        with install_on(cluster, state, real_node_values, s3_host=cluster.host) as env:
            yield env
    finally:
        cluster.down()
        if not os.environ.get("RECON_KEEP_STATE"):
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def capture(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The e2e suite's tiny capture of spot, at s3://captures/spot/."""
    return upload_spot(installed, tmp_path_factory)
