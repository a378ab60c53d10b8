"""The real node's pod network and kube-proxy settings: what a pod may reach, and what of the machine
they leave alone (tests/realnode runs them for real)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from localcluster.cni import BridgeNetwork
from localcluster.controlplane import SERVICE_CIDR
from localcluster.kubeproxy import KubeProxy


def test_pods_route_to_their_subnet_and_the_service_range_only() -> None:
    network = BridgeNetwork("recon0", ipaddress.IPv4Network("10.200.7.0/24"), ipaddress.IPv4Network(SERVICE_CIDR))
    (plugin,) = network.conflist(Path("/ipam"))["plugins"]
    assert plugin["ipam"]["routes"] == [
        {"dst": "10.200.7.0/24"},
        {"dst": "10.96.0.0/16", "gw": "10.200.7.1"},  # the Service range, through the gateway (kube-proxy)
    ]
    assert not any(route["dst"] == "0.0.0.0/0" for route in plugin["ipam"]["routes"]), "no default route"
    assert plugin["isDefaultGateway"] is False and plugin["ipMasq"] is False
    without = BridgeNetwork("recon1", ipaddress.IPv4Network("10.200.8.0/24"))
    assert without.routes() == [{"dst": "10.200.8.0/24"}]


def test_kube_proxy_serves_node_ports_on_the_gateway_only_and_leaves_sysctls_alone(tmp_path: Path) -> None:
    proxy = KubeProxy("real-node", tmp_path, tmp_path, tmp_path, "node-real-node-kube-proxy")
    config = proxy.config(tmp_path / "kubeconfig", "10.200.7.0/24", "10.200.7.1", 10256, 10249)
    assert config["nodePortAddresses"] == ["10.200.7.1/32"]
    assert config["iptables"]["localhostNodePorts"] is False  # no route_localnet
    assert config["conntrack"] == {"maxPerCore": 0}  # the machine's conntrack sysctls stay as they are
    assert config["healthzBindAddress"] == "127.0.0.1:10256" and config["metricsBindAddress"] == "127.0.0.1:10249"
    assert config["clusterCIDR"] == "10.200.7.0/24" and config["hostnameOverride"] == "real-node"


def test_the_node_image_cache_drops_what_docker_rebuilt_or_removed_and_keeps_the_rest() -> None:
    from localcluster.containerd import SANDBOX_IMAGE, stale_images

    targets = {
        "ghcr.io/recon-dev/recon-worker:0.1.0": "sha256:m-old-worker",
        "sha256:old-worker": "sha256:m-old-worker",
        "ghcr.io/recon-dev/recon-operator:0.1.0": "sha256:m-operator",
        "sha256:operator": "sha256:m-operator",
        "recon-operator:gone": "sha256:m-gone",
        "sha256:gone": "sha256:m-gone",
        SANDBOX_IMAGE: "sha256:m-pause",
        "sha256:pause": "sha256:m-pause",
    }
    docker_ids = {
        "ghcr.io/recon-dev/recon-worker:0.1.0": "sha256:new-worker",  # rebuilt since it was imported
        "ghcr.io/recon-dev/recon-operator:0.1.0": "sha256:operator",  # the same image
        "recon-operator:gone": None,  # Docker holds it no more
    }
    stale = stale_images(targets, docker_ids, keep=(SANDBOX_IMAGE,))
    assert sorted(stale) == sorted(
        ["ghcr.io/recon-dev/recon-worker:0.1.0", "sha256:old-worker", "recon-operator:gone", "sha256:gone"]
    )
    # A worker tagged twice (0.1.0 and layered) keeps its content while one name still points at it.
    twice = {"a:1": "sha256:m", "a:2": "sha256:m", "sha256:id": "sha256:m"}
    assert stale_images(twice, {"a:1": None, "a:2": "sha256:id"}) == ["a:1"]
