"""A real node: the kubelet and kube-proxy (built like the control plane, same version) over containerd
and CNI.

Pods run as containers of real images (loaded with `ctr images import`, no registry), with cgroups,
memory limits, probes, evictions, a pod network (cni.py) and Services (kubeproxy.py). Settings that
matter on these machines (docs/local-cluster.md): `failCgroupV1: false` (cgroup v1 hosts),
`cgroupDriver: cgroupfs`, `failSwapOn: false`, the node IP is the pod bridge's gateway (the kubelet
refuses a loopback node IP; the API server reaches the kubelet there for `kubectl logs`), no cluster DNS.
The cluster makes the pod network before its API server (which listens on the gateway), and removes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from localcluster import binaries, cni
from localcluster.containerd import Containerd, unmount_under
from localcluster.kubeconfig import write_cert_kubeconfig
from localcluster.kubeproxy import KubeProxy
from localcluster.pki import PKI
from localcluster.processes import ManagedProcess

NODE_BINARIES = ("kubelet", "kube-proxy", "containerd", "ctr", "containerd-shim-runc-v2", "pause")


@dataclass
class RealNode:
    """One kubelet node; `images` are Docker image references loaded into its containerd at start."""

    name: str
    state_dir: Path
    logs_dir: Path
    run_dir: Path
    port: int
    healthz_port: int
    network: cni.BridgeNetwork
    proxy_ports: tuple[int, int]  # kube-proxy's healthz and metrics, on 127.0.0.1
    images: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        prefix = f"node-{self.name}"
        root = binaries.cache_dir() / f"realnode-containerd-{binaries.versions()['CONTAINERD_VERSION']}"
        self.containerd = Containerd(
            self.state_dir / "containerd", self.logs_dir, self.run_dir, f"{prefix}-containerd", root=root
        )
        kubelet = f"{prefix}-kubelet"
        self.kubelet = ManagedProcess(kubelet, self.run_dir / f"{kubelet}.pid", self.logs_dir / f"{kubelet}.log")
        proxy = f"{prefix}-kube-proxy"
        self.proxy = KubeProxy(self.name, self.state_dir / "kube-proxy", self.logs_dir, self.run_dir, proxy)

    def start(self, pki: PKI, server: str) -> None:
        missing = [name for name in NODE_BINARIES if not (binaries.bin_dir() / name).is_file()]
        if missing:
            where = binaries.bin_dir()
            raise binaries.MissingBinaryError(f"missing {', '.join(missing)} in {where}: run tools/k8s/build.sh")
        if os.geteuid() != 0:
            raise PermissionError("a real kubelet node needs root (cgroups, mounts, network namespaces)")
        conf_dir = cni.write_config(self.state_dir / "cni" / "net.d", self.state_dir / "cni" / "ipam", self.network)
        node_ip = str(self.network.gateway)
        self.containerd.start(conf_dir.parent, cni.CNI_BIN_DIR)
        self.containerd.import_pause()
        for image in self.images:
            started = time.monotonic()
            imported = self.containerd.import_docker_image(image)
            took = f"imported in {time.monotonic() - started:.0f} s" if imported else "already in the image cache"
            print(f"localcluster: {image} {took}", file=sys.stderr)
        for stale in self.containerd.prune_stale_images():
            print(f"localcluster: {stale} deleted from the image cache (Docker no longer holds it)", file=sys.stderr)

        identity = f"system:node:{self.name}"
        client = pki.issue(f"kubelet-{self.name}", identity, ("system:nodes",))
        sans = (f"IP:{node_ip}", "IP:127.0.0.1", "DNS:localhost", f"DNS:{self.name}")
        serving = pki.issue(f"kubelet-{self.name}-serving", identity, ("system:nodes",), sans, server=True)
        kubeconfig = self.state_dir / "kubelet.kubeconfig"
        write_cert_kubeconfig(kubeconfig, server, pki.ca.cert, client.cert, client.key, identity)
        config = self.state_dir / "kubelet-config.json"
        config.write_text(json.dumps(self.kubelet_config(node_ip, pki.ca.cert, serving.cert, serving.key), indent=2))
        self.kubelet.start([
            str(binaries.binary("kubelet")),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.state_dir / 'kubelet'}",
            f"--cert-dir={self.state_dir / 'kubelet-pki'}",
            f"--hostname-override={self.name}",
            f"--node-ip={node_ip}",
            "--v=1",
        ])  # fmt: skip
        proxy = pki.issue(f"kube-proxy-{self.name}", "system:kube-proxy")  # bound to system:node-proxier
        proxy_kubeconfig = self.state_dir / "kube-proxy.kubeconfig"
        write_cert_kubeconfig(proxy_kubeconfig, server, pki.ca.cert, proxy.cert, proxy.key, "system:kube-proxy")
        self.proxy.start(proxy_kubeconfig, str(self.network.subnet), node_ip, *self.proxy_ports)

    def kubelet_config(self, node_ip: str, ca: Path, cert: Path, key: Path) -> dict[str, object]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # these hosts run cgroup v1; kubelet >= 1.35 refuses it otherwise
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "containerRuntimeEndpoint": self.containerd.endpoint,
            "address": node_ip,
            "port": self.port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "tlsCertFile": str(cert),
            "tlsPrivateKeyFile": str(key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca)},
            },
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(self.state_dir / "pod-logs"),
            "resolvConf": "",  # no DNS: pods reach addresses, never names
            "maxPods": 30,
            "serializeImagePulls": False,
            # Real evictions for a pod over its limits, not for the shared machine's free disk.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "evictionPressureTransitionPeriod": "5s",
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "housekeepingInterval": "2s",
            "volumeStatsAggPeriod": "5s",  # emptyDir usage, which sizeLimit evictions compare
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
        }

    def running(self) -> bool:
        return self.kubelet.running() and self.containerd.process.running() and self.proxy.process.running()

    def stop(self) -> None:
        """Kubelet first (it would restart what containerd stops), then every container, then containerd;
        kube-proxy and its iptables rules last."""
        self.kubelet.stop(grace=10.0)
        self.containerd.stop()
        unmount_under(self.state_dir)  # the kubelet's secret and projected-token tmpfs mounts
        remove_kubelet_iptables()
        self.proxy.stop()


# What the kubelet writes into the machine's iptables and leaves behind: (table, chain, chains that jump to it).
KUBELET_CHAINS = (
    ("filter", "KUBE-FIREWALL", ("INPUT", "OUTPUT")),
    ("filter", "KUBE-KUBELET-CANARY", ()),
    ("nat", "KUBE-KUBELET-CANARY", ()),
    ("mangle", "KUBE-KUBELET-CANARY", ()),
    ("mangle", "KUBE-IPTABLES-HINT", ()),
)


def remove_kubelet_iptables() -> None:
    """Delete the kubelet's own chains (its firewall for 127.0.0.0/8, canaries, a hint); absent is fine."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table, chain, callers in KUBELET_CHAINS:
            commands = [["-D", caller, "-j", chain] for caller in callers] + [["-F", chain], ["-X", chain]]
            for command in commands:
                subprocess.run([tool, "-w", "-t", table, *command], capture_output=True, check=False)
