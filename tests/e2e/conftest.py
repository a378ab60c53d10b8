"""End-to-end: the chart installed with Helm, the operator running from its Deployment, real workers.

Three targets, same tests:
- **local** (default, CI): a fresh local control plane (tools/localcluster) with no CRD pre-installed,
  a moto S3 server, and `helm install` of charts/recon-operator with the local-node values
  (tools/localinstall.py): the node agent runs the Deployment's `recon-operator` process under the
  chart's ServiceAccount and each worker pod's `recon-worker run`.
- **real node** (tests/realnode/e2e, in `make test-images`): a local control plane whose node is a real
  kubelet over containerd, both images loaded into it, the chart installed with the real images.
- **external** (`make kind-e2e`, tools/kind-e2e.sh): a cluster that runs images. Set
  RECON_E2E_KUBECONFIG, RECON_E2E_S3_ENDPOINT (as this machine reaches the store),
  RECON_E2E_VALUES (a values file naming the images and the store as pods reach it) and optionally
  RECON_E2E_S3_ACCESS_KEY / RECON_E2E_S3_SECRET_KEY (default: moto's `testing`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localinstall import (
    GROUP,
    PLURAL,
    VERSION,
    LocalPorts,
    credentials_secret,
    install_chart,
    local_node_values,
    reconstruction_job,
    render_capture,
    upload_folder,
)

from localcluster import Cluster, ClusterConfig, NodeConfig, binaries
from localcluster.controlplane import free_port
from localcluster.kube import raw, wait_for, wait_service_account
from tests.conftest import REPO
from tests.s3server import TEST_CREDENTIALS, start_s3_server

RELEASE, SYSTEM_NAMESPACE = "recon-operator", "recon-system"
# Tiny and quick on 2 CPU cores: 8 training + 2 held-out views at 48 px, a 32³ grid, few steps.
VIEWS, TEST_VIEWS, RESOLUTION = 8, 2, 48
TINY_QUALITY: dict[str, Any] = {
    "preset": "draft",
    "reconstruction": {"resolution": 32},
    "refinement": {"iterations": 8, "renderResolution": 48, "textureSize": 256},
    "export": {"targetFaces": 2000},
}


@dataclass
class Installed:
    """The chart as installed, and handles to talk to it."""

    kubeconfig: Path
    api: client.ApiClient
    s3: Any  # boto3 S3 client, as this machine reaches the store
    credentials: dict[str, str]
    helm_output: str
    values: dict[str, Any]  # the chart values it was installed with
    local: Cluster | None = None  # the local control plane, None for an external cluster

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        result = subprocess.run([binaries.kubectl(), *args], capture_output=True, text=True, env=env, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


def _external() -> Installed:
    kubeconfig = Path(os.environ["RECON_E2E_KUBECONFIG"])
    values_file = Path(os.environ["RECON_E2E_VALUES"])
    credentials = {
        "AWS_ACCESS_KEY_ID": os.environ.get("RECON_E2E_S3_ACCESS_KEY", TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"]),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("RECON_E2E_S3_SECRET_KEY", TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]),
    }
    values = yaml.safe_load(values_file.read_text())
    out = install_chart(kubeconfig, RELEASE, SYSTEM_NAMESPACE, values, values_file.with_suffix(".rendered.yaml"))
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["RECON_E2E_S3_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
    )
    return Installed(kubeconfig, api, s3, credentials, out.stdout, values)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    if os.environ.get("RECON_E2E_KUBECONFIG"):
        env = _external()
        _make_buckets(env.s3)
        yield env
        return
    missing = binaries.missing((*binaries.CONTROL_PLANE, "helm"))
    if missing:
        message = f"local cluster binaries missing ({', '.join(missing)}); build them with tools/k8s/build.sh"
        if os.environ.get("RECON_REQUIRE_CLUSTER"):
            pytest.fail(message + " (RECON_REQUIRE_CLUSTER is set)", pytrace=False)
        pytest.skip(message)
    # Kept in the checkout (git-ignored) so a failed run leaves its logs where people look.
    scratch = REPO / ".scratch"
    scratch.mkdir(exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="e2e-", dir=scratch))
    # No CRD up front: Helm installs it from the chart, as on a user's cluster. No GPU: CPU workers.
    cluster = Cluster(ClusterConfig(state_dir=state / "cluster", crd_dir=None, nodes=[NodeConfig(gpus=0)]))
    cluster.up()
    try:
        ports = LocalPorts(free_port(), free_port())
        with install_on(
            cluster, state, lambda endpoint: local_node_values(endpoint, ports, reconcile_interval_s=1)
        ) as env:
            yield env
    finally:
        cluster.down()
        shutil.rmtree(state, ignore_errors=True)


@contextmanager
def install_on(
    cluster: Cluster, state: Path, values_for: Callable[[str], dict[str, Any]], s3_host: str = "127.0.0.1"
) -> Iterator[Installed]:
    """The S3 server on `s3_host` (where pods reach it), the buckets, and `helm install` of the chart with
    `values_for(the store's endpoint)`, on a local control plane that is up; the store stops afterwards."""
    s3_server = start_s3_server(state / "s3", host=s3_host)
    try:
        values = values_for(s3_server.endpoint)
        out = install_chart(cluster.kubeconfig, RELEASE, SYSTEM_NAMESPACE, values, state / "values.yaml")
        s3 = s3_server.client()
        _make_buckets(s3)
        yield Installed(
            cluster.kubeconfig, cluster.api_client(), s3, dict(TEST_CREDENTIALS), out.stdout, values, cluster
        )
    finally:
        s3_server.stop()


def _make_buckets(s3: Any) -> None:
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}  # an external store may keep them
    for bucket in {"captures", "results"} - existing:
        s3.create_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def capture(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny capture of spot, rendered once, at s3://captures/spot/."""
    return upload_spot(installed, tmp_path_factory)


def upload_spot(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Render the suite's tiny capture of spot and upload it to s3://captures/spot/; returns that URI."""
    folder = render_capture(tmp_path_factory.mktemp("capture") / "spot", VIEWS, TEST_VIEWS, RESOLUTION)
    upload_folder(installed.s3, folder, "captures", "spot")
    return "s3://captures/spot/"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, installed: Installed) -> Iterator[str]:
    """A fresh namespace with the S3 credentials Secret `s3`; deleted afterwards."""
    name = f"e2e-{request.node.name.removeprefix('test_')[:40].replace('_', '-').strip('-')}-{os.getpid() % 1000}"
    raw(installed.core.create_namespace, {"metadata": {"name": name}})
    wait_service_account(installed.api, name, "default", timeout=60)
    raw(installed.core.create_namespaced_secret, name, credentials_secret("s3", installed.credentials))
    yield name
    try:
        installed.core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


@dataclass
class Jobs:
    """Submit ReconstructionJobs in one namespace and watch them."""

    installed: Installed
    namespace: str
    capture: str

    def submit(self, name: str, quality: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
        body = reconstruction_job(
            name, spec.pop("input_uri", self.capture), f"s3://results/{self.namespace}/{name}/", "s3",
            quality or TINY_QUALITY, **spec,
        )  # fmt: skip
        created: dict[str, Any] = self.installed.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return created

    def get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.installed.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return obj

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.installed.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def wait(
        self, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 300
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.get(name).get("status") or {}
            return status if check(status) else None

        try:
            found: dict[str, Any] = wait_for(f"{self.namespace}/{name}: {what}", reached, timeout, interval=0.5)
        except Exception as exc:
            status = json.dumps(self.get(name).get("status"), indent=1)
            raise AssertionError(f"{exc}; last status: {status}\n{self.diagnostics()}") from None
        return found

    def wait_phase(self, name: str, phase: str, timeout: float = 300) -> dict[str, Any]:
        return self.wait(name, lambda s: s.get("phase") == phase, f"phase {phase}", timeout)

    def worker_jobs(self, name: str) -> list[Any]:
        return list(
            self.installed.batch.list_namespaced_job(self.namespace, label_selector=f"recon.dev/job={name}").items
        )

    def worker_pods(self, name: str) -> list[Any]:
        return list(
            self.installed.core.list_namespaced_pod(self.namespace, label_selector=f"recon.dev/job={name}").items
        )

    def running_pod(self, name: str) -> Any:
        def running() -> Any:
            pods = [
                p for p in self.worker_pods(name) if p.status.phase == "Running" and not p.metadata.deletion_timestamp
            ]
            return pods[0] if pods else None

        return wait_for(f"{self.namespace}/{name}: a running worker pod", running, 120, interval=0.5)

    def manifest(self, name: str) -> dict[str, Any]:
        body = self.installed.s3.get_object(Bucket="results", Key=f"{self.namespace}/{name}/manifest.json")["Body"]
        manifest: dict[str, Any] = json.loads(body.read())
        return manifest

    def events(self, name: str) -> list[str]:
        events = self.installed.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        return [f"{e.reason}: {e.message}" for e in events.items]

    def diagnostics(self) -> str:
        out = self.installed.kubectl("-n", self.namespace, "get", "rj,jobs,pods", "-o", "wide", check=False).stdout
        return out + "\n" + operator_logs(self.installed)[-4000:]


@pytest.fixture
def jobs(installed: Installed, namespace: str, capture: str) -> Jobs:
    return Jobs(installed, namespace, capture)


def operator_logs(installed: Installed) -> str:
    """The operator container's log (kubectl logs; the local node agent serves it too)."""
    result = installed.kubectl(
        "-n", SYSTEM_NAMESPACE, "logs", f"deploy/{RELEASE}", "--all-containers", "--tail=-1", check=False
    )
    return result.stdout + result.stderr


def operator_pod(installed: Installed) -> Any:
    def ready() -> Any:
        pods = installed.core.list_namespaced_pod(
            SYSTEM_NAMESPACE,
            label_selector="app.kubernetes.io/name=recon-operator,app.kubernetes.io/component=operator",
        ).items
        live = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        return live[0] if len(live) == 1 else None

    return wait_for("one running operator pod", ready, 120, interval=0.5)


def kill_worker(installed: Installed, pod: Any) -> None:
    """SIGKILL the worker: the process itself on a local node (agent or real), else a forced pod deletion."""
    if installed.local is None:
        installed.kubectl(
            "-n", pod.metadata.namespace, "delete", "pod", pod.metadata.name, "--grace-period=0", "--force"
        )
        return
    pid = _local_pod_pid(pod.metadata.name)
    os.kill(pid, 9)


def _local_pod_pid(pod_name: str) -> int:
    """A container's process on this machine (the node agent's, or in a real node's container, seen from the
    host's /proc): its environment holds HOSTNAME=<pod name>, as the kubelet and the node agent set it."""
    marker = f"HOSTNAME={pod_name}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in environ and b"recon-worker" in cmdline:
            return int(proc.name)
    raise AssertionError(f"no recon-worker process for pod {pod_name}")


def wait_until(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
    """Poll `check` until it is true; fail naming `what` after `timeout` seconds."""
    wait_for(what, lambda: True if check() else None, timeout, interval=0.5)
