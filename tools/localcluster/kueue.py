"""Kueue (sigs.k8s.io/kueue) as an optional component of the local cluster.

The controller is the binary tools/k8s/build.sh builds from the Go module proxy; its CRDs and webhook
manifests are read from the same module in the Go module cache (config/components), so nothing is
downloaded at run time. Kueue runs as a local process on 127.0.0.1, as the other components do:

- Webhooks and the conversion webhooks of its CRDs call it by `url:` (https://127.0.0.1:<port>/...)
  instead of through a Service (the local cluster has no Service network).
- Certificates: Kueue's internal certificate management (cert-controller) stays on, but it finds a
  valid serving certificate already in its Secret, issued here by a CA of its own (<state>/pki/kueue)
  for both the Service name it checks (kueue-webhook-service.kueue-system.svc) and 127.0.0.1 (what
  the API server dials). It keeps that certificate and only injects the CA into the five CRDs'
  conversion webhooks and the two webhook configurations, as it does in a real cluster.
  The same files sit in its certDir, where a real cluster mounts the Secret.
- Leader election is off (one instance), the visibility API server is off (it would bind 0.0.0.0),
  and only the batch/job integration is enabled. Fair sharing is on; reconciles run concurrently as in
  Kueue's sample configuration.

    from localcluster import kueue
    handle = kueue.start_kueue(cluster)   # CRDs, namespace, Secret, webhooks, config, the process
    handle.stop()
"""

from __future__ import annotations

import base64
import copy
import functools
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import binaries
from localcluster.controlplane import Cluster, ClusterError, free_port
from localcluster.kube import install_crds, raw, wait_for
from localcluster.kubeconfig import write_cert_kubeconfig
from localcluster.pki import PKI

NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"  # Kueue derives its certificate's DNS name and webhook names from it
SECRET = "kueue-webhook-server-cert"
CA_NAME = "kueue-ca"  # cert-controller checks its CA certificate against this DNS name
# The CRDs whose conversion webhook Kueue's certificate management injects (and waits for).
CONVERTED_CRDS = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")
# Webhooks of the API groups this cluster serves: Kueue's own types and batch/v1 Jobs. The others
# (Ray, Kubeflow, JobSet, pods, ...) belong to integrations that are not enabled.
WEBHOOK_GROUPS = frozenset({"batch", "kueue.x-k8s.io"})
FRAMEWORKS = ("batch/job",)
# Concurrent reconciles per kind, as Kueue's own sample configuration sets them.
CONCURRENCY = {
    "Job.batch": 5,
    "Pod": 5,
    "Workload.kueue.x-k8s.io": 5,
    "LocalQueue.kueue.x-k8s.io": 1,
    "Cohort.kueue.x-k8s.io": 1,
    "ClusterQueue.kueue.x-k8s.io": 1,
    "ResourceFlavor.kueue.x-k8s.io": 1,
}
CLIENT_QPS, CLIENT_BURST = 50, 100  # Kueue's API client rate limit (its sample config; the built-in default is 20/30)
OBJ = dict[str, Any]


class KueueError(ClusterError):
    """Kueue could not be set up or did not become ready."""


def module_dir(version: str | None = None) -> Path:
    """sigs.k8s.io/kueue@<version> in the Go module cache (filled by tools/k8s/build.sh)."""
    version = version or binaries.versions()["KUEUE_VERSION"]
    cache = os.environ.get("GOMODCACHE")
    if not cache and shutil.which("go"):
        cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    if not cache:
        cache = str(Path(os.environ.get("GOPATH") or Path.home() / "go") / "pkg" / "mod")
    path = Path(cache) / "sigs.k8s.io" / f"kueue@{version}"
    if not (path / "config" / "components" / "crd" / "bases").is_dir():
        raise binaries.MissingBinaryError(
            f"Kueue {version}'s module is not in the Go module cache ({path}): build it with tools/k8s/build.sh"
        )
    return path


def missing() -> list[str]:
    """What start_kueue needs and does not find (empty: ready to start)."""
    found = binaries.missing(("kueue",))
    try:
        module_dir()
    except binaries.MissingBinaryError:
        found.append(f"sigs.k8s.io/kueue@{binaries.versions()['KUEUE_VERSION']} module")
    return found


# ---- pure: the manifests -------------------------------------------------------------------------


def crd_documents(module: Path, base_url: str, ca_bundle: str) -> list[OBJ]:
    """Kueue's CRDs, the five converted ones with their conversion webhook pointing at `base_url`."""
    documents = []
    for path in sorted((module / "config" / "components" / "crd" / "bases").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc["spec"]["names"]["plural"] in CONVERTED_CRDS:
                doc["spec"]["conversion"] = {
                    "strategy": "Webhook",
                    "webhook": {
                        "clientConfig": {"url": f"{base_url}/convert", "caBundle": ca_bundle},
                        "conversionReviewVersions": ["v1"],
                    },
                }
            documents.append(doc)
    return documents


def webhook_configurations(module: Path, base_url: str, ca_bundle: str) -> list[OBJ]:
    """Kueue's mutating and validating webhook configurations, by url, named as its cert manager expects."""
    base = SERVICE.removesuffix("-webhook-service")
    result = []
    for doc in yaml.safe_load_all((module / "config" / "components" / "webhook" / "manifests.yaml").read_text()):
        if not doc:
            continue
        config = copy.deepcopy(doc)
        kind = "mutating" if doc["kind"] == "MutatingWebhookConfiguration" else "validating"
        config["metadata"] = {"name": f"{base}-{kind}-webhook-configuration"}
        webhooks = []
        for webhook in doc["webhooks"]:
            groups = {group for rule in webhook.get("rules") or [] for group in rule.get("apiGroups") or []}
            if not groups or not groups <= WEBHOOK_GROUPS:
                continue
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": f"{base_url}{path}", "caBundle": ca_bundle}
            webhooks.append(webhook)
        config["webhooks"] = webhooks
        result.append(config)
    return result


def configuration(
    webhook_port: int, health_port: int, metrics_port: int, cert_dir: Path, job_concurrency: int | None = None
) -> OBJ:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for one local instance; `job_concurrency`
    overrides the Job reconciler's workers (the operator benchmark compares)."""
    concurrency = {**CONCURRENCY, **({"Job.batch": job_concurrency} if job_concurrency else {})}
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE, "webhookSecretName": SECRET},
        "manageJobsWithoutQueueName": False,  # only Jobs labelled kueue.x-k8s.io/queue-name are queued
        "integrations": {"frameworks": list(FRAMEWORKS)},
        # The on-demand visibility API is an aggregated API server of its own on 0.0.0.0: not needed here.
        "featureGates": {"VisibilityOnDemand": False},
        # Kueue's sample config (config/components/manager): without it each controller reconciles one
        # object at a time (controller-runtime's default), and 500 queued Jobs wait minutes for their
        # Workloads and for unsuspension (docs/kueue.md, "Scale").
        "controller": {"groupKindConcurrency": concurrency},
        # Fair sharing between the ClusterQueues of a cohort (docs/kueue.md, "Fair sharing"): who borrows
        # unused quota and whose borrowed workloads are preempted first, by weighted share. Without a
        # cohort it changes nothing. Kueue's recommended strategies, in its order.
        "fairSharing": {"preemptionStrategies": ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]},
        "clientConnection": {"qps": CLIENT_QPS, "burst": CLIENT_BURST},
    }


# ---- acting: certificates, objects, the process --------------------------------------------------


@dataclass
class Kueue:
    """A started Kueue: its ports and process (a component of `cluster`, stopped with it)."""

    cluster: Cluster
    webhook_port: int
    health_port: int
    metrics_port: int

    @property
    def process_name(self) -> str:
        return "kueue"

    def ready(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.health_port}/readyz")

    def stop(self) -> None:
        if self.process_name in self.cluster.processes:
            self.cluster.process(self.process_name).stop()
            del self.cluster.processes[self.process_name]
            self.cluster.save_info()


def _issue_certificates(pki_dir: Path) -> tuple[PKI, Path, Path]:
    """A CA for Kueue (named CA_NAME, as cert-controller checks) and its serving certificate."""
    pki = PKI(pki_dir)
    pki.create_ca(sans=(f"DNS:{CA_NAME}",), rsa_pkcs1=True)
    dns = f"{SERVICE}.{NAMESPACE}.svc"
    serving = pki.issue("webhook", dns, sans=(f"DNS:{dns}", "IP:127.0.0.1"), server=True, days=3650)
    return pki, serving.cert, serving.key


def _apply(api: client.ApiClient, obj: OBJ) -> None:
    """Create `obj`, or replace it if it exists (a restarted Kueue on the same cluster)."""
    admission = client.AdmissionregistrationV1Api(api)
    core = client.CoreV1Api(api)
    kind, name = obj["kind"], obj["metadata"]["name"]
    calls: dict[str, tuple[Any, Any]] = {
        "Namespace": (core.create_namespace, core.replace_namespace),
        "MutatingWebhookConfiguration": (
            admission.create_mutating_webhook_configuration,
            admission.replace_mutating_webhook_configuration,
        ),
        "ValidatingWebhookConfiguration": (
            admission.create_validating_webhook_configuration,
            admission.replace_validating_webhook_configuration,
        ),
    }
    try:
        if kind == "Secret":
            try:
                raw(core.create_namespaced_secret, NAMESPACE, obj)
            except ApiException as err:
                if err.status != 409:
                    raise
                raw(core.replace_namespaced_secret, name, NAMESPACE, obj)
            return
        create, replace = calls[kind]
        try:
            raw(create, obj)
        except ApiException as err:
            if err.status != 409:
                raise
            if kind != "Namespace":
                raw(replace, name, obj)
    except ApiException as err:
        raise KueueError(f"the apiserver rejected {kind} {name}: {err.body or err.reason}") from err


def start_kueue(cluster: Cluster, timeout: float | None = None) -> Kueue:
    """Install Kueue's CRDs, Secret and webhooks, start the controller and wait until it is ready."""
    absent = missing()
    if absent:
        raise binaries.MissingBinaryError(f"missing {', '.join(absent)}: build them with tools/k8s/build.sh")
    timeout = timeout or cluster.config.timeout
    module = module_dir()
    state = cluster.state_dir / "kueue"
    cert_dir = state / "certs"
    cert_dir.mkdir(parents=True, exist_ok=True)
    pki, cert, key = _issue_certificates(cluster.pki_dir / "kueue")
    shutil.copyfile(cert, cert_dir / "tls.crt")
    shutil.copyfile(key, cert_dir / "tls.key")
    ca_bundle = base64.b64encode(pki.ca.cert.read_bytes()).decode()

    handle = Kueue(cluster, webhook_port=free_port(), health_port=free_port(), metrics_port=free_port())
    base_url = f"https://127.0.0.1:{handle.webhook_port}"
    api = cluster.api_client()
    crd_dir = state / "crds"
    crd_dir.mkdir(exist_ok=True)
    files = []
    for doc in crd_documents(module, base_url, ca_bundle):
        path = crd_dir / f"{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(path)
    install_crds(api, files, timeout)
    _apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    secret_data = {
        "ca.crt": pki.ca.cert.read_bytes(),
        "ca.key": pki.ca.key.read_bytes(),
        "tls.crt": cert.read_bytes(),
        "tls.key": key.read_bytes(),
    }
    _apply(api, {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "data": {name: base64.b64encode(value).decode() for name, value in secret_data.items()},
    })  # fmt: skip
    for webhook in webhook_configurations(module, base_url, ca_bundle):
        _apply(api, webhook)

    config_file = state / "config.yaml"
    config = configuration(
        handle.webhook_port, handle.health_port, handle.metrics_port, cert_dir, cluster.config.kueue_job_concurrency
    )
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    # Kueue acts cluster-wide (CRDs, webhooks, every namespace's Jobs): the admin group, as in kube-system.
    identity = PKI(cluster.pki_dir).issue("kueue", "kueue-controller-manager", ("system:masters",))
    kubeconfig = cluster.pki_dir / "kueue.kubeconfig"
    ca = cluster.pki_dir / "ca.crt"
    write_cert_kubeconfig(kubeconfig, cluster.server, ca, identity.cert, identity.key, "kueue-controller-manager")
    process = cluster.process(handle.process_name)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    process.start([str(binaries.binary("kueue")), f"--config={config_file}"], env=env, cwd=state)
    cluster.save_info()

    def ready() -> bool:
        if not process.running():
            raise KueueError(process.describe_exit())
        return handle.ready()

    try:
        wait_for("Kueue to be ready (/readyz)", ready, timeout, interval=0.5)
        # Ready means its webhooks serve; a ClusterQueue dry run proves the API server reaches them.
        wait_for("Kueue's webhooks to answer the API server", functools.partial(_webhooks_answer, api), timeout)
    except TimeoutError as err:
        raise KueueError(f"{err}; {process.describe_exit()}") from err
    return handle


def _webhooks_answer(api: client.ApiClient) -> bool:
    probe = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": "localcluster-webhook-probe"},
        "spec": {"namespaceSelector": {}},
    }
    try:
        client.CustomObjectsApi(api).create_cluster_custom_object(
            "kueue.x-k8s.io", "v1beta2", "clusterqueues", probe, dry_run="All"
        )
        return True
    except ApiException as err:
        if err.status >= 500:  # "failed calling webhook": not reachable yet
            return False
        raise KueueError(f"Kueue's ClusterQueue webhook refused a valid object: {err.body}") from err


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
