"""The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, node agents.

Real binaries on 127.0.0.1 with free ports, real TLS and RBAC. With a real kubelet node (kubelet.py)
the cluster first makes that node's pod network (a bridge on a subnet of its own, cni.py) and the API
server listens on the bridge's gateway address instead: pods reach it there, through the `kubernetes`
Service (kube-proxy), and nothing else of this machine. Everything lives in one state folder:

    <state>/kubeconfig          admin identity (system:masters), what tests and `kubectl` use
    <state>/cluster.json        ports and components, for `status` / `down` from another process
    <state>/pki/                CA, serving and client certificates, ServiceAccount signing keys
    <state>/etcd/               etcd data
    <state>/logs/<name>.log     one log per component
    <state>/run/<name>.pid      "<pid> <start time>" of each component
    <state>/nodes/<node>/pods/  per-pod folders of each node agent (volumes, logs, kubeconfig)
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import shutil
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localcluster import binaries, cni
from localcluster.kubeconfig import write_cert_kubeconfig
from localcluster.kubelet import RealNode
from localcluster.kubeproxy import running_kube_proxies
from localcluster.pki import APISERVER_SANS, PKI
from localcluster.processes import ManagedProcess, tail

DEFAULT_STATE_DIR = binaries.REPO_ROOT / ".cluster"
DEFAULT_CRD_DIR = binaries.REPO_ROOT / "crds"
MARKER = ".localcluster"  # only a folder holding this file is ever wiped by `up`
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
TOOLS_DIR = str(binaries.REPO_ROOT / "tools")


class ClusterError(RuntimeError):
    """The cluster could not be started or is not in the expected state."""


@dataclass
class NodeConfig:
    """A node served by the node agent (nodeagent.py): pods bound to it run as local processes."""

    name: str = "local-node"
    cpu: str = "2"
    memory: str = "24Gi"
    gpus: int = 1
    # What its GPUs are advertised as: nvidia.com/gpu, or a MIG profile (nvidia.com/mig-1g.10gb).
    gpu_resource: str = "nvidia.com/gpu"
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[str] = field(default_factory=list)  # "key=value:Effect"
    # "agent": the process-based node agent (nodeagent.py); "kubelet": a real kubelet over containerd
    # (kubelet.py), running `images` (Docker image references, loaded into its containerd).
    runtime: str = "agent"
    images: list[str] = field(default_factory=list)


@dataclass
class ClusterConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    crd_dir: Path | None = DEFAULT_CRD_DIR
    nodes: list[NodeConfig] = field(default_factory=lambda: [NodeConfig()])
    timeout: float = 120.0  # seconds for each component to become ready
    kueue: bool = False  # also start Kueue (kueue.py): its CRDs, webhooks, certificates and controller
    kueue_job_concurrency: int | None = None  # Kueue's Job reconciler workers (None: kueue.CONCURRENCY's)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """Handle on one local cluster (running or not) in `config.state_dir`."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self.state_dir = self.config.state_dir.resolve()
        self.pki_dir = self.state_dir / "pki"
        self.logs_dir = self.state_dir / "logs"
        self.run_dir = self.state_dir / "run"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.info_file = self.state_dir / "cluster.json"
        self.ports: dict[str, int] = {}
        self.processes: dict[str, ManagedProcess] = {}
        self.real_nodes: dict[str, RealNode] = {}
        # The real node's pod network; the API server listens on its gateway when there is one.
        self.pod_network: cni.BridgeNetwork | None = None
        if self.info_file.exists():
            self._load_info()

    # ---- queries --------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the API server listens on (and S3 servers for pods should): 127.0.0.1, or the
        real node's bridge gateway."""
        return "127.0.0.1" if self.pod_network is None else str(self.pod_network.gateway)

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.ports['apiserver']}"

    def process(self, name: str) -> ManagedProcess:
        if name not in self.processes:
            self.processes[name] = ManagedProcess(name, self.run_dir / f"{name}.pid", self.logs_dir / f"{name}.log")
        return self.processes[name]

    def status(self) -> dict[str, bool]:
        """Component name -> running."""
        return {name: proc.running() for name, proc in self.processes.items()}

    def running(self) -> bool:
        return any(self.status().values())

    def diagnostics(self, lines: int = 25) -> str:
        """The last log lines of every component: what a failing test prints."""
        parts = [f"local cluster state: {self.state_dir} (logs in {self.logs_dir})"]
        for log in sorted(self.logs_dir.glob("*.log")):
            parts.append(f"--- {log.name} (last {lines} lines)\n{tail(log, lines)}")
        return "\n".join(parts)

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient for the admin identity."""
        from kubernetes import config as kube_config

        new_client: Any = kube_config.new_client_from_config
        return new_client(config_file=str(self.kubeconfig))

    # ---- lifecycle --------------------------------------------------------------------------------

    def up(self) -> None:
        """Start everything and wait until it is ready; on failure, stop what started and raise."""
        missing = binaries.missing()
        if missing:
            raise binaries.MissingBinaryError(
                f"missing {', '.join(missing)} in {binaries.bin_dir()}: build them with tools/k8s/build.sh"
            )
        if self.running():
            raise ClusterError(f"a cluster is already running in {self.state_dir}: run `down` first")
        self._reset_state_dir()
        try:
            self._start()
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop node agents and kwok first (they stop their pods' processes), then the control plane."""
        for node in self.real_nodes.values():
            node.stop()
        order = ["kwok", "kueue", "node-", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
        names = sorted(self.processes, key=lambda n: next(i for i, p in enumerate([*order, ""]) if n.startswith(p)))
        for name in names:
            self.processes[name].stop(grace=15.0 if name.startswith("node-") else 10.0)
        if self.pod_network is not None:  # once every pod is gone
            cni.remove_pod_namespaces(self.pod_network)
            cni.remove_bridge(self.pod_network)

    # ---- start-up steps -------------------------------------------------------------------------

    def _reset_state_dir(self) -> None:
        if self.state_dir.exists() and any(self.state_dir.iterdir()):
            if not (self.state_dir / MARKER).exists():
                raise ClusterError(
                    f"{self.state_dir} is not empty and was not made by localcluster; refusing to wipe it"
                )
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / MARKER).write_text("created by tools/localcluster; `up` wipes this folder\n")
        self.processes = {}

    def _make_pod_network(self) -> None:
        """For a real node: its bridge and subnet, before the API server that listens on its gateway."""
        real = [node.name for node in self.config.nodes if node.runtime == "kubelet"]
        if not real:
            return
        if len(real) > 1:
            raise ClusterError(f"one real kubelet node per cluster (got {', '.join(real)}): they share one bridge")
        if os.geteuid() != 0:
            raise PermissionError("a real kubelet node needs root (cgroups, mounts, network namespaces)")
        others = running_kube_proxies()
        if others:
            raise ClusterError(
                f"another real-node cluster runs here (kube-proxy pid {', '.join(map(str, others))}): kube-proxy's "
                "iptables rules and the node's image cache are the machine's, so one at a time"
            )
        cni.check_plugins()
        network = cni.choose_network(ipaddress.IPv4Network(SERVICE_CIDR))
        cni.create_bridge(network)
        self.pod_network = network

    def _start(self) -> None:
        started = time.monotonic()
        pki = PKI(self.pki_dir)
        pki.create_ca()
        self.ports = {
            name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")
        }
        self._make_pod_network()
        self.save_info()
        sans = APISERVER_SANS if self.pod_network is None else (*APISERVER_SANS, f"IP:{self.host}")
        apiserver_cert = pki.issue("apiserver", "kube-apiserver", sans=sans, server=True)
        # The apiserver's identity towards node agents (kubectl logs goes apiserver -> node).
        pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
        # A separate CA for the aggregation layer's front proxy, as kubeadm sets up; without it the
        # controller-manager and scheduler log an error for the missing requestheader CA every second.
        front_proxy = PKI(self.pki_dir / "front-proxy")
        front_proxy.create_ca()
        front_proxy.issue("front-proxy-client", "front-proxy-client")
        sa = pki.service_account_keys()
        for name, cn, orgs in (
            ("admin", "recon-admin", ("system:masters",)),
            ("controller-manager", "system:kube-controller-manager", ()),
            ("scheduler", "system:kube-scheduler", ()),
        ):
            pair = pki.issue(name, cn, orgs)
            write_cert_kubeconfig(self._kubeconfig_for(name), self.server, pki.ca.cert, pair.cert, pair.key, cn)

        self._start_etcd()
        self._wait("etcd", lambda: _http_ok(f"http://127.0.0.1:{self.ports['etcd']}/health", None), "/health")
        self._start_apiserver(pki, apiserver_cert.cert, apiserver_cert.key, sa.cert, sa.key)
        ca_context = ssl.create_default_context(cafile=str(pki.ca.cert))
        self._wait("kube-apiserver", lambda: _http_ok(f"{self.server}/readyz", ca_context), "/readyz")
        self._start_controller_manager(pki, sa.key)
        self._start_scheduler()
        insecure = ssl._create_unverified_context()  # they serve self-signed certs from --cert-dir
        for name, port in (
            ("kube-controller-manager", "controller-manager"),
            ("kube-scheduler", "scheduler"),
        ):
            url = f"https://127.0.0.1:{self.ports[port]}/healthz"
            self._wait(name, functools.partial(_http_ok, url, insecure), "/healthz")

        from localcluster import kube  # needs the kubernetes client: imported once the binaries run

        api = self.api_client()
        if self.config.crd_dir is not None:
            kube.install_crds(api, sorted(self.config.crd_dir.glob("*.yaml")), self.config.timeout)
        for node in self.config.nodes:
            if node.runtime == "kubelet":
                self._start_real_node(pki, node)
            else:
                self._start_node_agent(pki, node)
        for node in self.config.nodes:
            agent = f"node-{node.name}-kubelet" if node.runtime == "kubelet" else f"node-{node.name}"
            alive = functools.partial(self._check_alive, agent)
            kube.wait_node_ready(api, node.name, self.config.timeout, alive)
        # Pods can only be created once the ServiceAccount controller made `default` accounts.
        kube.wait_service_account(api, "default", "default", self.config.timeout)
        if self.config.kueue:
            from localcluster.kueue import start_kueue

            start_kueue(self)
        self.save_info()
        print(
            f"localcluster: up in {time.monotonic() - started:.1f}s, kubeconfig {self.kubeconfig}",
            file=sys.stderr,
        )

    def _kubeconfig_for(self, name: str) -> Path:
        return self.kubeconfig if name == "admin" else self.pki_dir / f"{name}.kubeconfig"

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        self.process("etcd").start([
            str(binaries.binary("etcd")),
            "--name=local",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            "--unsafe-no-fsync",  # throwaway data: skipping fsync makes writes fast on CI disks
            "--log-level=warn",
        ])  # fmt: skip

    def _start_apiserver(self, pki: PKI, cert: Path, key: Path, sa_pub: Path, sa_key: Path) -> None:
        front_proxy = self.pki_dir / "front-proxy"
        self.process("kube-apiserver").start([
            str(binaries.binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",  # the `kubernetes` Service's endpoint
            f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={cert}",
            f"--tls-private-key-file={key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={self.pki_dir / 'apiserver-generated'}",
            f"--requestheader-client-ca-file={front_proxy / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={front_proxy / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={front_proxy / 'front-proxy-client.key'}",
            f"--kubelet-client-certificate={self.pki_dir / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={self.pki_dir / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
        ])  # fmt: skip

    def _start_controller_manager(self, pki: PKI, sa_key: Path) -> None:
        kubeconfig = self._kubeconfig_for("controller-manager")
        self.process("kube-controller-manager").start([
            str(binaries.binary("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['controller-manager']}",
            f"--cert-dir={self.pki_dir / 'controller-manager-generated'}",
            "--leader-elect=false",  # one instance: leader election would only delay start-up
            "--controllers=*",  # all default controllers: job, garbage collector, namespace, SA, ttl...
            "--use-service-account-credentials=true",  # each controller under its own RBAC identity
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            "--cluster-name=recon-local",
            "--profiling=false",
        ])  # fmt: skip

    def _start_scheduler(self) -> None:
        kubeconfig = self._kubeconfig_for("scheduler")
        self.process("kube-scheduler").start([
            str(binaries.binary("kube-scheduler")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['scheduler']}",
            f"--cert-dir={self.pki_dir / 'scheduler-generated'}",
            "--leader-elect=false",
            "--profiling=false",
        ])  # fmt: skip

    def _start_real_node(self, pki: PKI, node: NodeConfig) -> None:
        assert self.pod_network is not None  # made by _make_pod_network
        real = RealNode(
            name=node.name,
            state_dir=self.state_dir / "nodes" / node.name,
            logs_dir=self.logs_dir,
            run_dir=self.run_dir,
            port=free_port(),
            healthz_port=free_port(),
            network=self.pod_network,
            proxy_ports=(free_port(), free_port()),
            images=list(node.images),
        )
        self.real_nodes[node.name] = real
        for process in (real.containerd.process, real.kubelet, real.proxy.process):
            self.processes[process.name] = process
        real.start(pki, self.server)

    def _start_node_agent(self, pki: PKI, node: NodeConfig) -> None:
        # The agent authenticates as the node (system:node:<name>), so the Node authorizer and the
        # NodeRestriction admission plugin limit it exactly as they limit a kubelet.
        pair = pki.issue(f"node-{node.name}", f"system:node:{node.name}", ("system:nodes",))
        sans = ("IP:127.0.0.1", "DNS:localhost", f"DNS:{node.name}")
        serving = pki.issue(
            f"node-{node.name}-serving", f"system:node:{node.name}", ("system:nodes",), sans, server=True
        )
        kubeconfig = self.pki_dir / f"node-{node.name}.kubeconfig"
        write_cert_kubeconfig(kubeconfig, self.server, pki.ca.cert, pair.cert, pair.key, f"system:node:{node.name}")
        argv = [
            sys.executable, "-m", "localcluster.nodeagent",
            f"--kubeconfig={kubeconfig}",
            f"--name={node.name}",
            f"--state-dir={self.state_dir / 'nodes' / node.name}",
            f"--cpu={node.cpu}",
            f"--memory={node.memory}",
            f"--gpus={node.gpus}",
            f"--gpu-resource={node.gpu_resource}",
            f"--pods={node.pods}",
            f"--serving-cert={serving.cert}",
            f"--serving-key={serving.key}",
            f"--client-ca={pki.ca.cert}",
        ]  # fmt: skip
        argv += [f"--label={key}={value}" for key, value in node.labels.items()]
        argv += [f"--taint={taint}" for taint in node.taints]
        self.process(f"node-{node.name}").start(argv, env=python_env())
        self.save_info()

    # ---- helpers ----------------------------------------------------------------------------------

    def _check_alive(self, name: str) -> None:
        proc = self.process(name)
        if not proc.running():
            raise ClusterError(f"{proc.describe_exit()}")

    def _wait(self, name: str, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.config.timeout
        while True:
            proc = self.process(name)
            if not proc.running():
                code = proc.exit_code()
                raise ClusterError(
                    f"{name} exited with code {code} before {what}; last log lines ({proc.log_file}):\n"
                    f"{tail(proc.log_file)}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{name} not ready ({what}) after {self.config.timeout:.0f}s; last log lines "
                    f"({proc.log_file}):\n{tail(proc.log_file)}"
                )
            time.sleep(0.2)

    def save_info(self) -> None:
        info = {
            "ports": self.ports,
            "components": sorted(self.processes),
            "nodes": [asdict(node) for node in self.config.nodes],
            "kueue": self.config.kueue,
            "podNetwork": None if self.pod_network is None else {
                "name": self.pod_network.name, "subnet": str(self.pod_network.subnet),
                "serviceCIDR": str(self.pod_network.service_cidr),
            },
        }  # fmt: skip
        self.info_file.write_text(json.dumps(info, indent=2) + "\n")

    def _load_info(self) -> None:
        info = json.loads(self.info_file.read_text())
        self.ports = info["ports"]
        network = info.get("podNetwork")
        if network:
            self.pod_network = cni.BridgeNetwork(
                network["name"], ipaddress.IPv4Network(network["subnet"]), ipaddress.IPv4Network(network["serviceCIDR"])
            )
        for name in info["components"]:
            self.process(name)


def python_env() -> dict[str, str]:
    """Environment for Python children: `localcluster` importable from tools/."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (TOOLS_DIR, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
