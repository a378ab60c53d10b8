"""A real local Kubernetes control plane for tests and the demo (no containers, no Docker).

    from localcluster import Cluster, ClusterConfig
    cluster = Cluster(ClusterConfig(state_dir=tmp))
    cluster.up()      # etcd, kube-apiserver, kube-controller-manager, kube-scheduler, node agent, CRDs
    ...               # cluster.kubeconfig, cluster.api_client(), cluster.diagnostics()
    cluster.down()

Command line: `python -m localcluster up|down|status` (with tools/ on PYTHONPATH).
"""

from localcluster.binaries import MissingBinaryError
from localcluster.controlplane import Cluster, ClusterConfig, ClusterError, NodeConfig

__all__ = ["Cluster", "ClusterConfig", "ClusterError", "MissingBinaryError", "NodeConfig"]
