"""The real node's kube-proxy (built like the kubelet, same version): Services work inside pods.

A pod's in-cluster client (the operator's, the worker's status reports) talks to the `kubernetes`
Service, 10.96.0.1:443; kube-proxy's iptables rules turn that into the API server's endpoint, which is
the pod bridge's gateway (the cluster binds the API server there, controlplane.py). Settings that
matter on these machines (docs/local-cluster.md): no conntrack sysctls (`maxPerCore: 0`), no
`route_localnet` (`localhostNodePorts: false`), NodePorts on the gateway address only.

Its rules live in the machine's own iptables (chains KUBE-*), so one kube-proxy runs here at a time:
`start` refuses while another one of ours runs, and `stop` removes the rules (`kube-proxy --cleanup`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from localcluster import binaries
from localcluster.processes import ManagedProcess


class KubeProxyError(RuntimeError):
    """kube-proxy could not be started: another one runs here, or iptables is missing."""


def running_kube_proxies() -> list[int]:
    """Pids of processes that run this cache's kube-proxy binary."""
    target = str(binaries.bin_dir() / "kube-proxy")
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str((proc / "exe").readlink()) == target:
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


class KubeProxy:
    """kube-proxy for node `node`, with state (kubeconfig, configuration) in `directory`."""

    def __init__(self, node: str, directory: Path, logs_dir: Path, run_dir: Path, name: str) -> None:
        self.node = node
        self.directory = directory
        self.config_file = directory / "kube-proxy-config.json"
        self.process = ManagedProcess(name, run_dir / f"{name}.pid", logs_dir / f"{name}.log")

    def config(
        self, kubeconfig: Path, cluster_cidr: str, node_ip: str, healthz: int, metrics: int
    ) -> dict[str, object]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.node,
            "mode": "iptables",
            "clusterCIDR": cluster_cidr,
            "bindAddress": node_ip,
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            "metricsBindAddress": f"127.0.0.1:{metrics}",
            "nodePortAddresses": [f"{node_ip}/32"],
            "iptables": {"localhostNodePorts": False, "syncPeriod": "10s", "minSyncPeriod": "0s"},
            "conntrack": {"maxPerCore": 0},  # leave the machine's conntrack sysctls as they are
        }

    def start(self, kubeconfig: Path, cluster_cidr: str, node_ip: str, healthz: int, metrics: int) -> None:
        others = running_kube_proxies()
        if others:
            raise KubeProxyError(
                f"kube-proxy already runs here (pid {', '.join(map(str, others))}): its iptables rules are the "
                "machine's, so one real-node cluster at a time; stop the other one first"
            )
        for tool in ("iptables", "iptables-restore", "ip6tables"):
            if shutil.which(tool) is None:
                raise KubeProxyError(f"kube-proxy needs {tool}: apt-get install iptables")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            json.dumps(self.config(kubeconfig, cluster_cidr, node_ip, healthz, metrics), indent=2)
        )
        self.process.start([str(binaries.binary("kube-proxy")), f"--config={self.config_file}", "--v=1"])

    def stop(self) -> None:
        """Stop it, then remove every rule it wrote (KUBE-* chains in the machine's iptables)."""
        was_started = self.config_file.exists()
        self.process.stop(grace=10.0)
        if was_started:
            subprocess.run(
                [str(binaries.binary("kube-proxy")), "--cleanup", f"--config={self.config_file}"],
                capture_output=True,
                timeout=60,
                check=False,
            )
