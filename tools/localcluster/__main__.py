"""python -m localcluster up|down|status [--state-dir DIR] [--gpus N] ..."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from localcluster.binaries import MissingBinaryError
from localcluster.controlplane import (
    DEFAULT_CRD_DIR,
    DEFAULT_STATE_DIR,
    Cluster,
    ClusterConfig,
    ClusterError,
    NodeConfig,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description="Local Kubernetes control plane.")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: <repo>/.cluster")
    parser.add_argument("--crd-dir", type=Path, default=DEFAULT_CRD_DIR, help="CRD YAMLs to install (default: crds/)")
    parser.add_argument("--node-name", default="local-node")
    parser.add_argument("--no-node", action="store_true", help="start no node agent")
    parser.add_argument("--gpus", type=int, default=1, help="nvidia.com/gpu capacity of the node (default 1)")
    parser.add_argument("--cpu", default="2")
    parser.add_argument("--memory", default="24Gi")
    parser.add_argument("--label", action="append", default=[], help="node label key=value, repeatable")
    parser.add_argument("--kueue", action="store_true", help="also run Kueue (build it with tools/k8s/build.sh)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    nodes = [] if args.no_node else [
        NodeConfig(
            name=args.node_name, cpu=args.cpu, memory=args.memory, gpus=args.gpus,
            labels=dict(label.split("=", 1) for label in args.label),
        )
    ]  # fmt: skip
    cluster = Cluster(
        ClusterConfig(
            state_dir=args.state_dir, crd_dir=args.crd_dir, nodes=nodes, timeout=args.timeout, kueue=args.kueue
        )
    )
    if args.command == "up":
        try:
            cluster.up()
        except (ClusterError, MissingBinaryError, TimeoutError, RuntimeError) as err:
            print(f"localcluster up failed: {err}", file=sys.stderr)
            return 1
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    if args.command == "down":
        cluster.down()
        print(f"localcluster: stopped ({cluster.state_dir})", file=sys.stderr)
        return 0
    status = cluster.status()
    if not status:
        print(f"no cluster in {cluster.state_dir}")
        return 1
    for name, running in status.items():
        print(f"{name:32} {'running' if running else 'stopped'}")
    if all(status.values()):
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
