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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

from kubernetes import client, watch

from localcluster import Cluster, ClusterConfig
from localcluster.controlplane import free_port
from localcluster.kube import raw, wait_for, wait_service_account
from localcluster.kwok import pod_placement, start_kwok

REPO = Path(__file__).resolve().parent.parent
GROUP, VERSION, PLURAL = "recon.dev", "v1alpha1", "reconstructionjobs"
NAMESPACE = "bench"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Recorder:
    """First-seen times (monotonic seconds) of Jobs and Pods, and phases of CRs, from watches."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.lock = threading.Lock()
        self.job_seen: dict[str, float] = {}  # job name -> time
        self.pod_seen: dict[str, float] = {}  # job name -> time its first pod appeared
        self.succeeded: dict[str, float] = {}  # CR name -> time
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._watch, args=(kind,), daemon=True) for kind in ("jobs", "pods", "crs")
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _stream(self, kind: str) -> Any:
        if kind == "jobs":
            return client.BatchV1Api(self.api).list_namespaced_job, (NAMESPACE,)
        if kind == "pods":
            return client.CoreV1Api(self.api).list_namespaced_pod, (NAMESPACE,)
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
            if kind == "crs":
                if (obj.get("status") or {}).get("phase") == "Succeeded":
                    with self.lock:
                        self.succeeded.setdefault(obj["metadata"]["name"], now)
                continue
            meta = obj.metadata
            with self.lock:
                if kind == "jobs":
                    self.job_seen.setdefault(meta.name, now)
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


def machine() -> str:
    memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    load = os.getloadavg()[0]  # the machine may be shared: absolute latencies scale with it, the ratio less so
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {memory} GiB, Python {platform.python_version()}, no GPU, "
        f"load average {load:.1f} at the end"
    )


def resource(name: str, data: Path) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReconstructionJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "input": {"uri": f"file://{data}/captures/{name}/"},
            "output": {"uri": f"file://{data}/results/{name}/"},
            "quality": {"preset": "draft"},
            "resources": {"gpus": 1, "cpu": "100m", "memory": "64Mi", "shmSize": "64Mi"},
            "scheduling": pod_placement(),
        },
    }


def run(crs: int, nodes: int, state: Path) -> dict[str, Any]:
    data = state / "data"
    for index in range(crs):
        name = f"rj-{index:04d}"
        (data / "captures" / name).mkdir(parents=True)
        (data / "captures" / name / "transforms.json").write_text('{"frames": []}')
        (data / "results" / name).mkdir(parents=True)
        (data / "results" / name / "manifest.json").write_text('{"files": []}')

    cluster = Cluster(ClusterConfig(state_dir=state / "cluster", nodes=[]))
    cluster.up()
    operator: subprocess.Popen[bytes] | None = None
    try:
        capacity = {"cpu": "64", "memory": "512Gi", "pods": "250", "nvidia.com/gpu": "128"}
        start_kwok(cluster, nodes=nodes, capacity=capacity)
        api = cluster.api_client()
        core = client.CoreV1Api(api)
        raw(core.create_namespace, {"metadata": {"name": NAMESPACE}})
        wait_service_account(api, NAMESPACE, "default", timeout=60)

        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "RECON_OPERATOR_NAMESPACES": NAMESPACE,
            "RECON_OPERATOR_METRICS_PORT": str(free_port()),
            "RECON_OPERATOR_LIVENESS_ENDPOINT": liveness,
            "RECON_OPERATOR_RECONCILE_INTERVAL_S": "30",
            "RECON_OPERATOR_ALLOW_FILE_URIS": "true",  # off by default in a cluster; the bench's data is local
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

        recorder = Recorder(api)
        recorder.start()
        time.sleep(1)
        custom = client.CustomObjectsApi(api)
        created: dict[str, float] = {}

        def create(index: int) -> None:
            name = f"rj-{index:04d}"
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, resource(name, data))
            created[name] = time.monotonic()

        start = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(crs)))
        applied = time.monotonic() - start
        wait_for(f"{crs} ReconstructionJobs to succeed", lambda: len(recorder.succeeded) >= crs, 900, interval=1)
        all_succeeded = max(recorder.succeeded.values()) - start
        rss = peak_rss_mb(operator.pid)
        recorder.stop.set()

        cr_to_job = [recorder.job_seen[f"{n}-1"] - t for n, t in created.items()]
        job_to_pod = [recorder.pod_seen[j] - t for j, t in recorder.job_seen.items() if j in recorder.pod_seen]
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
            "machine": machine(),
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


def update_doc(path: Path, section: str) -> None:
    """Replace (or append) the "## Operator" section of `path`, leaving the other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find("## Operator\n")
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
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "benchmarks" / "operator.json")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        result = run(args.crs, args.nodes, Path(tmp))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_doc:
        update_doc(args.doc, markdown(result))
    print(json.dumps(result, indent=2))
    ratio = result["cr_to_job_p99_s"] / max(result["job_to_pod_p99_s"], 1e-9)
    rss = result["operator_peak_rss_mb"]
    print(f"CR→Job p99 is {ratio:.2f}× the Job→Pod p99 (target ≤ 2×); operator peak RSS {rss} MB (target ≤ 250)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
