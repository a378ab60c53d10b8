"""The real node's pod network: one Linux bridge and host-local addresses on a subnet of its own.

Debian's containernetworking-plugins (`bridge`, `host-local` in /usr/lib/cni). The bridge holds the
subnet's first address (the gateway) and pods get routes to that subnet and to the Service range (through
the gateway, where kube-proxy's rules turn a Service address into an endpoint on the gateway) only: no
default route and no masquerading, so a pod reaches its own subnet and the cluster's Services, and
nothing else. The cluster binds what pods talk to (API server, S3 server) on the gateway address.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

CNI_BIN_DIR = Path("/usr/lib/cni")
PLUGINS = ("bridge", "host-local", "loopback")


class CniError(RuntimeError):
    """The CNI plugins are missing or the bridge could not be set up."""


@dataclass(frozen=True)
class BridgeNetwork:
    name: str  # CNI network name and bridge interface name (<= 15 characters)
    subnet: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network | None = None  # routed to the gateway when set (kube-proxy)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return next(self.subnet.hosts())

    def routes(self) -> list[dict[str, str]]:
        routes = [{"dst": str(self.subnet)}]
        if self.service_cidr is not None:
            routes.append({"dst": str(self.service_cidr), "gw": str(self.gateway)})
        return routes

    def conflist(self, ipam_dir: Path) -> dict[str, object]:
        return {
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.name,
                    "isGateway": True,  # the bridge gets the gateway address: the node reaches its pods
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.subnet), "gateway": str(self.gateway)}]],
                        "routes": self.routes(),
                        "dataDir": str(ipam_dir),
                    },
                }
            ],
        }


def check_plugins(bin_dir: Path = CNI_BIN_DIR) -> None:
    missing = [name for name in PLUGINS if not (bin_dir / name).is_file()]
    if missing:
        raise CniError(
            f"CNI plugins {', '.join(missing)} missing in {bin_dir}: apt-get install containernetworking-plugins"
        )


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    nets = []
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            nets.append(ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).network)
    return nets


def choose_network(service_cidr: ipaddress.IPv4Network | None = None) -> BridgeNetwork:
    """A /24 in 10.200.0.0/16 that no interface here uses, and a bridge name of its own."""
    used = _used_networks()
    for _ in range(200):
        subnet = ipaddress.IPv4Network(f"10.200.{secrets.randbelow(256)}.0/24")
        if not any(subnet.overlaps(net) for net in used):
            return BridgeNetwork(name=f"recon{secrets.token_hex(4)}", subnet=subnet, service_cidr=service_cidr)
    raise CniError("no free /24 in 10.200.0.0/16 for the node's pod network")


def write_config(conf_dir: Path, ipam_dir: Path, network: BridgeNetwork) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    ipam_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / f"10-{network.name}.conflist"
    path.write_text(json.dumps(network.conflist(ipam_dir), indent=2) + "\n")
    return path


def create_bridge(network: BridgeNetwork) -> None:
    """Make the bridge with the gateway address now (the plugin would on the first pod): the node's IP.

    The kubelet refuses a loopback node IP, and the API server must reach the kubelet at the node's IP
    (logs, exec): the gateway is on this machine, inside the node's own subnet.
    """
    prefix = f"{network.gateway}/{network.subnet.prefixlen}"
    for argv in (
        ["ip", "link", "add", "name", network.name, "type", "bridge"],
        ["ip", "addr", "add", prefix, "dev", network.name],
        ["ip", "link", "set", network.name, "up"],
    ):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            remove_bridge(network)
            raise CniError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def remove_bridge(network: BridgeNetwork) -> None:
    """Delete the bridge the plugin made (once every pod is gone); absent is fine."""
    subprocess.run(["ip", "link", "delete", network.name], capture_output=True, check=False)


def remove_pod_namespaces(network: BridgeNetwork, netns_dir: Path = Path("/var/run/netns")) -> list[str]:
    """Delete the network namespaces of pods that had an address on `network` (containerd names them
    cni-<uuid>; a sandbox killed with its containerd, not torn down through the CRI, leaves its own).
    Returns their names."""
    removed = []
    for netns in sorted(netns_dir.glob("cni-*")) if netns_dir.is_dir() else []:
        shown = subprocess.run(["ip", "-n", netns.name, "-4", "-o", "addr", "show"], capture_output=True, text=True)
        fields = [line.split() for line in shown.stdout.splitlines()]
        addresses = [ipaddress.IPv4Interface(f[f.index("inet") + 1]).ip for f in fields if "inet" in f]
        if any(address in network.subnet for address in addresses):
            subprocess.run(["ip", "netns", "delete", netns.name], capture_output=True, check=False)
            removed.append(netns.name)
    return removed
