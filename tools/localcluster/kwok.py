"""Fake nodes for scale tests: kwok (sigs.k8s.io/kwok) against the local cluster.

kwok manages only nodes labelled KWOK_LABEL, and pods bound to them; nothing runs. Those nodes carry
the KWOK_TAINT so ordinary pods never land there: a pod meant for them sets the selector and
toleration from `pod_placement()`. The node agent only runs pods bound to its own node, so neither
takes the other's pods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import binaries
from localcluster.controlplane import Cluster
from localcluster.kube import node_ready, raw, wait_for

KWOK_LABEL = ("localcluster.recon.dev/kwok", "true")
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
STAGES = Path(__file__).with_name("kwok-stages.yaml")


def pod_placement() -> dict[str, Any]:
    """Pod spec fields that send a pod to the kwok nodes (merge into `spec`)."""
    return {
        "nodeSelector": {KWOK_LABEL[0]: KWOK_LABEL[1]},
        "tolerations": [{"key": KWOK_TAINT["key"], "operator": "Exists", "effect": KWOK_TAINT["effect"]}],
    }


@dataclass
class KwokNodes:
    cluster: Cluster
    names: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Stop kwok and remove its nodes."""
        self.cluster.process("kwok").stop()
        del self.cluster.processes["kwok"]
        self.cluster.save_info()
        core = client.CoreV1Api(self.cluster.api_client())
        for name in self.names:
            try:
                core.delete_node(name)
            except ApiException as err:
                if err.status != 404:
                    raise


def start_kwok(
    cluster: Cluster,
    nodes: int = 3,
    prefix: str = "kwok-node",
    capacity: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> KwokNodes:
    """Start kwok and create `nodes` fake nodes; returns once all are Ready."""
    capacity = capacity or {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"}
    kwok = cluster.process("kwok")
    kwok.start([
        str(binaries.binary("kwok")),
        f"--kubeconfig={cluster.kubeconfig}",
        f"--config={STAGES}",
        f"--manage-nodes-with-label-selector={KWOK_LABEL[0]}={KWOK_LABEL[1]}",
        "--node-lease-duration-seconds=40",
        "--cidr=10.244.0.0/16",
        "--node-ip=127.0.0.2",
    ])  # fmt: skip
    cluster.save_info()  # so `down` from another process stops kwok too
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    handle = KwokNodes(cluster)
    for index in range(nodes):
        name = f"{prefix}-{index}"
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {KWOK_LABEL[0]: KWOK_LABEL[1], "kubernetes.io/hostname": name, "type": "kwok"},
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {"taints": [KWOK_TAINT]},
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        try:
            raw(core.create_node, node)
        except ApiException as err:
            if err.status != 409:
                raise
        handle.names.append(name)

    def all_ready() -> bool:
        if not kwok.running():
            raise RuntimeError(kwok.describe_exit())
        return all(node_ready(api, name) for name in handle.names)

    wait_for(f"{nodes} kwok nodes to be Ready", all_ready, timeout)
    return handle
