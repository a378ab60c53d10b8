"""Operator benchmark on the local control plane with kwok nodes (`make bench-operator`).

One run: a fresh cluster (no node agent) with kwok nodes, the operator as a subprocess, N
ReconstructionJobs applied at once (16 client threads). Measured with one watch per kind in this
process, all stamped with the same local clock on receipt:

- CR → Job: from the CR's create call returning to the first watch event of its Job (operator latency),
- Job → Pod: from that Job event to the first watch event of its Pod (the built-in Job controller),
- all Succeeded: from the first create call until every CR shows phase Succeeded,
- operator peak RSS: VmHWM of the operator process.

Succeeded needs a published manifest.json: inputs and outputs are file:// folders on this machine, and
the bench writes every capture's transforms.json and every output's manifest.json before applying the
CRs (kwok pods run nothing), so preflight is a local stat and the manifest check a local file test.
Worker pods ask 1 nvidia.com/gpu of kwok nodes that advertise 128 each.

    python tools/bench_operator.py [--crs 500] [--nodes 5] [--json docs/benchmarks/operator.json]

With `--kueue-gpu-quota Q` the same run goes through Kueue (tools/localcluster/kueue.py): one
ResourceFlavor, a ClusterQueue whose nvidia.com/gpu quota Q is below the demand (one GPU per CR), a
LocalQueue, every CR with `spec.scheduling.queueName`, the operator watching Workloads. Kueue admits Q
at a time; each kwok pod succeeds after about a second and frees its GPU for the next. Measured too:
CR → admitted (the first watch event of its Workload with Admitted True), admitted → Pod, and the
admission throughput (admissions per second between the first and the last).

    python tools/bench_operator.py --kueue-gpu-quota 50 [--json docs/benchmarks/operator-kueue.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch

from localcluster import Cluster, ClusterConfig
from localcluster.controlplane import free_port
from localcluster.kube import raw, wait_for, wait_service_account
from localcluster.kueue import CLIENT_BURST, CLIENT_QPS, CONCURRENCY
from localcluster.kwok import KWOK_TAINT, pod_placement, start_kwok

REPO = Path(__file__).resolve().parent.parent
GROUP, VERSION, PLURAL = "recon.dev", "v1alpha1", "reconstructionjobs"
NAMESPACE = "bench"
KUEUE = ("kueue.x-k8s.io", "v1beta2")
QUEUE = "bench"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Recorder:
    """First-seen times (monotonic seconds) of Jobs and Pods, and phases of CRs, from watches."""

    def __init__(self, api: client.ApiClient, kueue: bool = False) -> None:
        self.api = api
        self.lock = threading.Lock()
        self.job_seen: dict[str, float] = {}  # job name -> time
        self.pod_seen: dict[str, float] = {}  # job name -> time its first pod appeared
        self.succeeded: dict[str, float] = {}  # CR name -> time
        self.failed: dict[str, str] = {}  # CR name -> its status.message (the bench stops at the first)
        self.admitted: dict[str, float] = {}  # job name -> time its Workload was first seen admitted
        self.workload_seen: dict[str, float] = {}  # job name -> first event of its Workload (Kueue made it)
        self.unsuspended: dict[str, float] = {}  # job name -> first event with spec.suspend false (Kueue started it)
        self.load: list[float] = []  # 1-minute load averages sampled while waiting (the machine is shared)
        self.stop = threading.Event()
        kinds = ("jobs", "pods", "crs", "workloads") if kueue else ("jobs", "pods", "crs")
        self.threads = [threading.Thread(target=self._watch, args=(kind,), daemon=True) for kind in kinds]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _stream(self, kind: str) -> Any:
        if kind == "jobs":
            return client.BatchV1Api(self.api).list_namespaced_job, (NAMESPACE,)
        if kind == "pods":
            return client.CoreV1Api(self.api).list_namespaced_pod, (NAMESPACE,)
        if kind == "workloads":
            return client.CustomObjectsApi(self.api).list_namespaced_custom_object, (*KUEUE, NAMESPACE, "workloads")
        return client.CustomObjectsApi(self.api).list_namespaced_custom_object, (GROUP, VERSION, NAMESPACE, PLURAL)

    def _watch(self, kind: str) -> None:
        call, args = self._stream(kind)
        while not self.stop.is_set():
            try:
                self._follow(kind, call, args)
            except Exception:  # a watch cut off (e.g. by shutting the cluster down): resume unless stopping
                time.sleep(0.5)

    def _follow(self, kind: str, call: Any, args: tuple[Any, ...]) -> None:
        for event in watch.Watch().stream(call, *args, timeout_seconds=30, _request_timeout=60):
            now = time.monotonic()
            obj = event["object"]
            if kind == "workloads":
                conditions = (obj.get("status") or {}).get("conditions") or []
                admitted = any(c["type"] == "Admitted" and c["status"] == "True" for c in conditions)
                for ref in obj["metadata"].get("ownerReferences") or []:
                    with self.lock:
                        self.workload_seen.setdefault(ref["name"], now)
                        if admitted:
                            self.admitted.setdefault(ref["name"], now)
                continue
            if kind == "crs":
                status = obj.get("status") or {}
                with self.lock:
                    if status.get("phase") == "Succeeded":
                        self.succeeded.setdefault(obj["metadata"]["name"], now)
                    elif status.get("phase") == "Failed":
                        self.failed.setdefault(obj["metadata"]["name"], str(status.get("message")))
                continue
            meta = obj.metadata
            with self.lock:
                if kind == "jobs":
                    self.job_seen.setdefault(meta.name, now)
                    if not obj.spec.suspend:
                        self.unsuspended.setdefault(meta.name, now)
                else:
                    job = (meta.labels or {}).get("batch.kubernetes.io/job-name")
                    if job:
                        self.pod_seen.setdefault(job, now)
            if self.stop.is_set():
                return


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def machine(load: list[float] | None = None) -> str:
    memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    end = os.getloadavg()[0]  # the machine may be shared: absolute latencies scale with it, the ratio less so
    during = f"load average {statistics.fmean(load):.1f} (max {max(load):.1f}) during the run, " if load else ""
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {memory} GiB, Python {platform.python_version()}, no GPU, "
        f"{during}load average {end:.1f} at the end"
    )


def kueue_controller_stats(cluster: Cluster) -> dict[str, float]:
    """Kueue's own view of its Job and Workload reconcilers (controller-runtime's metrics, cumulative):
    reconciles, mean seconds per reconcile and mean seconds an object waited in the work queue.

    Kueue serves metrics over HTTPS to a bearer token allowed GET /metrics: a token of the bench
    namespace's default ServiceAccount, bound to a ClusterRole for that URL only."""
    api = cluster.api_client()
    rbac = client.RbacAuthorizationV1Api(api)
    role = "bench-kueue-metrics"
    raw(rbac.create_cluster_role, {
        "metadata": {"name": role},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
    })  # fmt: skip
    raw(rbac.create_cluster_role_binding, {
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": NAMESPACE}],
    })  # fmt: skip
    core = client.CoreV1Api(api)
    body = {"spec": {"expirationSeconds": 600}}
    token = raw(core.create_namespaced_service_account_token, "default", NAMESPACE, body)["status"]["token"]
    config = yaml.safe_load((cluster.state_dir / "kueue" / "config.yaml").read_text())
    url = f"https://{config['metrics']['bindAddress']}/metrics"
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # Kueue's self-signed metrics certificate
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    text = urllib.request.urlopen(request, timeout=30, context=context).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        values[name] = float(value) if name and not line.startswith("#") else 0.0
    stats: dict[str, float] = {}
    for controller, key in (("job", "job"), ("workload_controller", "workload")):
        labels = f'{{controller="{controller}"}}'
        queue = f'{{controller="{controller}",name="{controller}"}}'
        count = values.get(f"controller_runtime_reconcile_time_seconds_count{labels}", 0.0)
        waited = values.get(f"workqueue_queue_duration_seconds_count{queue}", 0.0)
        stats[f"kueue_{key}_reconciles"] = count
        stats[f"kueue_{key}_reconcile_mean_s"] = round(
            values.get(f"controller_runtime_reconcile_time_seconds_sum{labels}", 0.0) / max(count, 1), 3
        )
        stats[f"kueue_{key}_queue_wait_mean_s"] = round(
            values.get(f"workqueue_queue_duration_seconds_sum{queue}", 0.0) / max(waited, 1), 3
        )
    stats["kueue_cpu_s"] = values.get("process_cpu_seconds_total", 0.0)
    return stats


def resource(name: str, data: Path, queue: str | None = None) -> dict[str, Any]:
    scheduling: dict[str, Any] = {**pod_placement(), **({"queueName": queue} if queue else {})}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReconstructionJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "input": {"uri": f"file://{data}/captures/{name}/"},
            "output": {"uri": f"file://{data}/results/{name}/"},
            "quality": {"preset": "draft"},
            "resources": {"gpus": 1, "cpu": "100m", "memory": "64Mi", "shmSize": "64Mi"},
            "scheduling": scheduling,
        },
    }


def create_queues(api: client.ApiClient, gpu_quota: int) -> None:
    """One flavor (the kwok nodes), a ClusterQueue with `gpu_quota` GPUs, and the bench's LocalQueue."""
    custom = client.CustomObjectsApi(api)
    custom.create_cluster_custom_object(
        *KUEUE,
        "resourceflavors",
        {"apiVersion": "/".join(KUEUE), "kind": "ResourceFlavor", "metadata": {"name": "kwok"}},
    )
    quota = {"cpu": "1000", "memory": "10Ti", "nvidia.com/gpu": str(gpu_quota)}
    cluster_queue = {
        "apiVersion": "/".join(KUEUE),
        "kind": "ClusterQueue",
        "metadata": {"name": QUEUE},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [
                {
                    "coveredResources": list(quota),
                    "flavors": [
                        {"name": "kwok", "resources": [{"name": k, "nominalQuota": v} for k, v in quota.items()]}
                    ],
                }
            ],
        },
    }
    custom.create_cluster_custom_object(*KUEUE, "clusterqueues", cluster_queue)
    local_queue = {
        "apiVersion": "/".join(KUEUE),
        "kind": "LocalQueue",
        "metadata": {"name": QUEUE, "namespace": NAMESPACE},
        "spec": {"clusterQueue": QUEUE},
    }
    custom.create_namespaced_custom_object(*KUEUE, NAMESPACE, "localqueues", local_queue)


def run(
    crs: int,
    nodes: int,
    state: Path,
    kueue_gpu_quota: int | None = None,
    timeout: float = 900,
    kueue_job_concurrency: int | None = None,
) -> dict[str, Any]:
    data = state / "data"
    for index in range(crs):
        name = f"rj-{index:04d}"
        (data / "captures" / name).mkdir(parents=True)
        (data / "captures" / name / "transforms.json").write_text('{"frames": []}')
        (data / "results" / name).mkdir(parents=True)
        (data / "results" / name / "manifest.json").write_text('{"files": []}')

    kueue = kueue_gpu_quota is not None
    config = ClusterConfig(
        state_dir=state / "cluster", nodes=[], kueue=kueue, kueue_job_concurrency=kueue_job_concurrency
    )
    cluster = Cluster(config)
    cluster.up()
    operator: subprocess.Popen[bytes] | None = None
    try:
        capacity = {"cpu": "64", "memory": "512Gi", "pods": "250", "nvidia.com/gpu": "128"}
        start_kwok(cluster, nodes=nodes, capacity=capacity)
        api = cluster.api_client()
        core = client.CoreV1Api(api)
        raw(core.create_namespace, {"metadata": {"name": NAMESPACE}})
        wait_service_account(api, NAMESPACE, "default", timeout=60)
        if kueue_gpu_quota is not None:
            create_queues(api, kueue_gpu_quota)

        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "RECON_OPERATOR_NAMESPACES": NAMESPACE,
            "RECON_OPERATOR_METRICS_PORT": str(free_port()),
            "RECON_OPERATOR_LIVENESS_ENDPOINT": liveness,
            "RECON_OPERATOR_RECONCILE_INTERVAL_S": "30",
            "RECON_OPERATOR_ALLOW_FILE_URIS": "true",  # off by default in a cluster; the bench's data is local
            # The CRs tolerate the kwok nodes' taint (pod_placement), which the default policy refuses.
            "RECON_OPERATOR_ALLOWED_TOLERATION_KEYS": json.dumps(["nvidia.com/gpu", KWOK_TAINT["key"]]),
            "RECON_OPERATOR_KUEUE_WORKLOADS": "true" if kueue else "false",
        }
        log = (state / "operator.log").open("wb")
        operator = subprocess.Popen([sys.executable, "-m", "recon_operator"], env=env, stdout=log, stderr=log)

        def ready() -> bool:
            if operator is not None and operator.poll() is not None:
                raise RuntimeError(f"operator exited with {operator.returncode}; see {state / 'operator.log'}")
            try:
                return urllib.request.urlopen(liveness, timeout=2).status == 200
            except OSError:
                return False

        wait_for("the operator's liveness endpoint", ready, 120, interval=0.5)

        recorder = Recorder(api, kueue)
        recorder.start()
        time.sleep(1)
        custom = client.CustomObjectsApi(api)
        created: dict[str, float] = {}

        def create(index: int) -> None:
            name = f"rj-{index:04d}"
            body = resource(name, data, QUEUE if kueue else None)
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
            created[name] = time.monotonic()

        start = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(crs)))
        applied = time.monotonic() - start

        def every_cr_succeeded() -> bool:
            recorder.load.append(os.getloadavg()[0])
            if recorder.failed:
                name, message = next(iter(recorder.failed.items()))
                raise RuntimeError(f"{len(recorder.failed)} ReconstructionJobs failed, e.g. {name}: {message}")
            return len(recorder.succeeded) >= crs

        wait_for(f"{crs} ReconstructionJobs to succeed", every_cr_succeeded, timeout, interval=1)
        all_succeeded = max(recorder.succeeded.values()) - start
        rss = peak_rss_mb(operator.pid)
        recorder.stop.set()
        controllers = kueue_controller_stats(cluster) if kueue else {}

        cr_to_job = [recorder.job_seen[f"{n}-1"] - t for n, t in created.items()]
        job_to_pod = [recorder.pod_seen[j] - t for j, t in recorder.job_seen.items() if j in recorder.pod_seen]
        queued: dict[str, Any] = {}
        if kueue:
            cr_to_admitted = [recorder.admitted[f"{n}-1"] - t for n, t in created.items()]
            admitted_to_pod = [recorder.pod_seen[j] - t for j, t in recorder.admitted.items() if j in recorder.pod_seen]
            # Where admitted → Pod goes: Kueue unsuspending the Job, then the Job controller making its Pod.
            job_to_workload = [
                t - recorder.job_seen[j] for j, t in recorder.workload_seen.items() if j in recorder.job_seen
            ]
            admitted_to_start = [
                recorder.unsuspended[j] - t for j, t in recorder.admitted.items() if j in recorder.unsuspended
            ]
            times = sorted(recorder.admitted.values())
            queued = {
                "kueue_gpu_quota": kueue_gpu_quota,
                "cr_to_admitted_p50_s": round(percentile(cr_to_admitted, 50), 3),
                "cr_to_admitted_p99_s": round(percentile(cr_to_admitted, 99), 3),
                "admitted_to_pod_p50_s": round(percentile(admitted_to_pod, 50), 3),
                "admitted_to_pod_p99_s": round(percentile(admitted_to_pod, 99), 3),
                "job_to_workload_p50_s": round(percentile(job_to_workload, 50), 3),
                "job_to_workload_p99_s": round(percentile(job_to_workload, 99), 3),
                "admitted_to_unsuspended_p50_s": round(percentile(admitted_to_start, 50), 3),
                "admitted_to_unsuspended_p99_s": round(percentile(admitted_to_start, 99), 3),
                "kueue_job_concurrency": kueue_job_concurrency or CONCURRENCY["Job.batch"],
                "kueue_client_qps_burst": [CLIENT_QPS, CLIENT_BURST],
                **controllers,
                "admissions_per_s": round((len(times) - 1) / max(times[-1] - times[0], 1e-9), 2),
            }
        return {
            "crs": crs,
            "kwok_nodes": nodes,
            "apply_s": round(applied, 2),
            "cr_to_job_p50_s": round(percentile(cr_to_job, 50), 3),
            "cr_to_job_p99_s": round(percentile(cr_to_job, 99), 3),
            "cr_to_job_mean_s": round(statistics.fmean(cr_to_job), 3),
            "job_to_pod_p50_s": round(percentile(job_to_pod, 50), 3),
            "job_to_pod_p99_s": round(percentile(job_to_pod, 99), 3),
            "job_to_pod_mean_s": round(statistics.fmean(job_to_pod), 3),
            "all_succeeded_s": round(all_succeeded, 1),
            "operator_peak_rss_mb": round(rss, 1),
            **queued,
            "machine": machine(recorder.load),
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                operator.kill()
        cluster.down()


def markdown(result: dict[str, Any]) -> str:
    """The "Operator" section of docs/benchmarks.md."""
    ratio = result["cr_to_job_p99_s"] / max(result["job_to_pod_p99_s"], 1e-9)
    return f"""## Operator

`make bench-operator` (`tools/bench_operator.py`): {result["crs"]} ReconstructionJobs applied at once
(16 client threads, {result["apply_s"]} s to apply) on the local control plane with {result["kwok_nodes"]} kwok
nodes; the operator runs as its own process. Latencies are first watch events seen by the bench, on one
clock: CR created → its Job (the operator), and Job → its Pod (Kubernetes' own Job controller, in the
same run). Inputs and outputs are `file://` folders whose `transforms.json` and `manifest.json` the bench
writes before applying the CRs (kwok pods run nothing), so preflight and the manifest check are local.

| metric | value | target |
| --- | --- | --- |
| CR → Job p50 / p99 | {result["cr_to_job_p50_s"]} s / {result["cr_to_job_p99_s"]} s | p99 ≤ 2 × Job → Pod p99 |
| Job → Pod p50 / p99 (Job controller) | {result["job_to_pod_p50_s"]} s / {result["job_to_pod_p99_s"]} s | |
| CR → Job p99 / Job → Pod p99 | {ratio:.2f} × | ≤ 2 × |
| all {result["crs"]} Succeeded after | {result["all_succeeded_s"]} s | |
| operator peak RSS | {result["operator_peak_rss_mb"]} MB | ≤ 250 MB |

Machine: {result["machine"]}; {result["date"]}. The machine may be shared with other work (see the
load average): that inflates both latencies alike, so their ratio is the comparison that holds.
Figures in `docs/benchmarks/operator.json`.
"""


def markdown_kueue(result: dict[str, Any], plain: dict[str, Any] | None) -> str:
    """The "Operator with Kueue" section of docs/benchmarks.md, beside the plain run's figures."""

    def pair(source: dict[str, Any] | None, key: str) -> str:
        if not source or f"{key}_p50_s" not in source:
            return ""
        return f"{source[f'{key}_p50_s']} s / {source[f'{key}_p99_s']} s"

    def one(source: dict[str, Any] | None, key: str, unit: str) -> str:
        return f"{source[key]} {unit}" if source and key in source else ""

    table = [
        ("CR → Job p50 / p99", pair(result, "cr_to_job"), pair(plain, "cr_to_job")),
        ("CR → admitted p50 / p99 (includes waiting for quota)", pair(result, "cr_to_admitted"), ""),
        ("Job → its Workload p50 / p99 (Kueue's Job reconciler)", pair(result, "job_to_workload"), ""),
        ("admitted → Job unsuspended p50 / p99 (Kueue)", pair(result, "admitted_to_unsuspended"), ""),
        ("admitted → Pod p50 / p99", pair(result, "admitted_to_pod"), ""),
        ("Job → Pod p50 / p99", pair(result, "job_to_pod"), pair(plain, "job_to_pod")),
        ("admission throughput", one(result, "admissions_per_s", "/ s"), ""),
        (
            "Kueue's Job reconciler: reconciles, mean time, mean wait in its queue",
            (
                f"{result['kueue_job_reconciles']:.0f}, {result['kueue_job_reconcile_mean_s']} s, "
                f"{result['kueue_job_queue_wait_mean_s']} s"
            )
            if "kueue_job_reconciles" in result
            else "",
            "",
        ),
        (
            f"all {result['crs']} Succeeded after",
            one(result, "all_succeeded_s", "s"),
            one(plain, "all_succeeded_s", "s"),
        ),
        ("operator peak RSS", one(result, "operator_peak_rss_mb", "MB"), one(plain, "operator_peak_rss_mb", "MB")),
    ]
    concurrency = (
        f"`controller.groupKindConcurrency` Job.batch {result['kueue_job_concurrency']} "
        "(Kueue's sample configuration has 5; controller-runtime's default is 1) and client QPS/burst "
        + "/".join(map(str, result["kueue_client_qps_burst"]))
        if "kueue_job_concurrency" in result
        else "one reconcile at a time per kind"
    )
    plain_crs = plain["crs"] if plain else "–"
    plain_when = f"{plain['machine']}; {plain['date']}" if plain else "not measured"
    rows = "\n".join(f"| {name} | {ours} | {theirs} |" for name, ours, theirs in table)

    return f"""## Operator with Kueue

`tools/bench_operator.py --kueue-gpu-quota {result["kueue_gpu_quota"]}`: the run above, through Kueue
(docs/kueue.md): {result["crs"]} ReconstructionJobs of one GPU each on {result["kwok_nodes"]} kwok nodes, a ClusterQueue
whose nvidia.com/gpu quota is {result["kueue_gpu_quota"]}, so Kueue admits {result["kueue_gpu_quota"]} at a time
and each kwok pod (done after about 1 s) frees a GPU for the next. The operator watches Workloads
(`RECON_OPERATOR_KUEUE_WORKLOADS`). "admitted" is the first watch event of a Workload with `Admitted` True.
Kueue runs with {concurrency}.

| metric | with Kueue ({result["crs"]} CRs) | without ({plain_crs} CRs, section above) |
| --- | --- | --- |
{rows}

Machine: {result["machine"]}; {result["date"]}. Figures in `docs/benchmarks/operator-kueue.json`.
The run without Kueue: {plain_when}. Latencies scale with the machine's load, so compare within a run.
Where the time goes (Kueue's Job reconciler, the API server under load): docs/kueue.md, "Scale".
"""


def update_doc(path: Path, section: str) -> None:
    """Replace (or append) the section of `path` that `section` starts with, leaving the others alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    heading = section.split("\n", 1)[0] + "\n"
    start = text.find(heading)
    if start < 0:
        path.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    end = text.find("\n## ", start + 1)
    rest = text[end + 1 :] if end >= 0 else ""
    path.write_text(text[:start] + section + ("\n" + rest if rest else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crs", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="default: docs/benchmarks/operator[-kueue].json")
    parser.add_argument("--kueue-gpu-quota", type=int, default=None, help="run through Kueue with this GPU quota")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--state", type=Path, default=None, help="keep the cluster's logs here (a new folder)")
    parser.add_argument("--timeout", type=float, default=2400, help="seconds for every CR to succeed")
    parser.add_argument("--kueue-job-concurrency", type=int, default=None, help="Kueue's Job reconciler workers")
    args = parser.parse_args(argv)
    if args.state:
        args.state.mkdir(parents=True)
        state = args.state.resolve()
        result = run(args.crs, args.nodes, state, args.kueue_gpu_quota, args.timeout, args.kueue_job_concurrency)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
            result = run(
                args.crs, args.nodes, Path(tmp), args.kueue_gpu_quota, args.timeout, args.kueue_job_concurrency
            )
    plain_json = REPO / "docs" / "benchmarks" / "operator.json"
    kueue = args.kueue_gpu_quota is not None
    out = args.json or (REPO / "docs" / "benchmarks" / "operator-kueue.json" if kueue else plain_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_doc:
        plain = json.loads(plain_json.read_text()) if plain_json.exists() else None
        update_doc(args.doc, markdown_kueue(result, plain) if kueue else markdown(result))
    print(json.dumps(result, indent=2))
    ratio = result["cr_to_job_p99_s"] / max(result["job_to_pod_p99_s"], 1e-9)
    rss = result["operator_peak_rss_mb"]
    print(f"CR→Job p99 is {ratio:.2f}× the Job→Pod p99 (target ≤ 2×); operator peak RSS {rss} MB (target ≤ 250)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
