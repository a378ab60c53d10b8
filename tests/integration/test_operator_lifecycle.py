"""The operator on the local control plane: real API server, Job controller, scheduler and node agent.

The worker is replaced by STAND_IN, a small real Python program run by the node agent as the pod's
process. It reads the task document like the worker, then does what the capture's `behaviour.json`
says (per attempt): sleep or wait for a marker object, patch its own CR's status with metrics through
its ServiceAccount, publish `manifest.json` to the S3 server, write a termination message, exit with a code.

Not producible on the node agent (no images, cgroups or kubelet eviction): ImagePullFailed, OOMKilled
and Evicted as a failure reason; tests/realnode produces them on a real kubelet node, and
tests/unit/operator/test_phases.py covers them without a cluster.
Eviction through the Eviction API is tested here: it is retried without spending the backoff budget.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import Cluster
from localcluster.kube import raw, wait_for
from tests.integration.reconstruction_jobs import (
    GROUP,
    PLURAL,
    VERSION,
    get,
    jobs_of,
    wait_phase,
    wait_status,
    worker_api,
)
from tests.s3server import S3Server, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

STAND_IN = textwrap.dedent(
    """
    import json, os, sys, time
    import boto3
    from kubernetes import client, config

    task = json.loads(os.environ["RECON_TASK"])
    s3 = boto3.client("s3", endpoint_url=task["storage"].get("endpoint"), region_name="us-east-1")
    def split(uri):
        bucket, _, key = uri[len("s3://"):].partition("/")
        return bucket, key.rstrip("/") + "/"
    bucket, prefix = split(task["input"]["uri"])
    plan = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "behaviour.json")["Body"].read())
    plan = {**plan, **plan.get("attempts", {}).get(str(task["job"]["attempt"]), {})}
    time.sleep(plan.get("sleep", 0))
    while plan.get("waitFor"):  # until the test puts this object beside the capture
        try:
            s3.head_object(Bucket=bucket, Key=prefix + plan["waitFor"])
            break
        except Exception:
            time.sleep(0.5)
    if plan.get("metrics"):
        config.load_kube_config()
        worker = {"pod": os.environ["POD_NAME"], "node": os.environ["NODE_NAME"]}
        body = {"status": {"metrics": plan["metrics"], "worker": worker}}
        client.CustomObjectsApi().patch_namespaced_custom_object_status(
            "recon.dev", "v1alpha1", task["job"]["namespace"], "reconstructionjobs", task["job"]["name"], body)
    code = plan.get("exit", 0)
    if code == 0 and plan.get("publish", True):
        # A real (tiny) result: the operator checks every listed file is there at its listed size.
        # "publish": "broken" lists a file it never uploads.
        import hashlib
        out_bucket, out_prefix = split(task["output"]["uri"])
        mesh = b"glTF stand-in"
        entry = {"name": "mesh.glb", "uri": task["output"]["uri"].rstrip("/") + "/mesh.glb",
                 "size": len(mesh), "sha256": hashlib.sha256(mesh).hexdigest()}
        if plan.get("publish") != "broken":
            s3.put_object(Bucket=out_bucket, Key=out_prefix + "mesh.glb", Body=mesh)
        manifest = json.dumps({"files": [entry]}).encode()
        s3.put_object(Bucket=out_bucket, Key=out_prefix + "manifest.json", Body=manifest)
    if plan.get("messageFromEnv"):  # report a variable of the pod's environment (what the worker would see)
        plan["message"] = plan["messageFromEnv"] + "=" + os.environ.get(plan["messageFromEnv"], "<unset>")
    if plan.get("reason"):
        with open(os.environ.get("RECON_TERMINATION_MESSAGE_PATH", "/dev/termination-log"), "w") as f:
            json.dump({"reason": plan["reason"], "message": plan.get("message", "")}, f)
    sys.exit(code)
    """
)


# A loopback port nothing listens on, allowed as a storage endpoint: the unreachable-store case.
DEAD_STORE = f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def operator_env(cluster: Cluster, s3_server: S3Server) -> Iterator[None]:
    """Settings for every operator the tests start (read when recon_operator.handlers is imported)."""
    values = {
        "RECON_OPERATOR_ALLOWED_ENDPOINTS": json.dumps([DEAD_STORE]),
        "KUBECONFIG": str(cluster.kubeconfig),
        "RECON_OPERATOR_WORKER_COMMAND": json.dumps([sys.executable, "-c", STAND_IN]),
        "RECON_OPERATOR_S3_ENDPOINT": s3_server.endpoint,
        "RECON_OPERATOR_DEFAULT_CPU": "50m",
        "RECON_OPERATOR_DEFAULT_MEMORY": "64Mi",
        "RECON_OPERATOR_RECONCILE_INTERVAL_S": "1",
        "RECON_OPERATOR_PREFLIGHT_RETRIES": "2",
        "RECON_OPERATOR_PREFLIGHT_BACKOFF_S": "1",
        "RECON_OPERATOR_METRICS_PORT": str(free_port()),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in values.items():
            patch.setenv(key, value)
        yield


def start_operator() -> KopfRunner:
    # recon_operator.handlers reads its settings and registers its handlers when it is imported, and an
    # earlier import in this process (a unit test's, at collection) saw another environment: import it
    # afresh, into a fresh registry, so this operator runs with operator_env's settings.
    sys.modules.pop("recon_operator.handlers", None)
    kopf.set_default_registry(kopf.OperatorRegistry())
    runner = KopfRunner(["run", "--standalone", "--all-namespaces", "-m", "recon_operator.handlers"], timeout=60)
    runner.__enter__()
    return runner


@pytest.fixture
def operator(operator_env: None) -> Iterator[KopfRunner]:
    runner = start_operator()
    yield runner
    runner.__exit__(None, None, None)
    assert runner.exception is None, runner.output


def capture(buckets: S3Server, name: str, behaviour: dict[str, Any] | None) -> None:
    if behaviour is None:
        return
    buckets.client().put_object(Bucket="captures", Key=f"{name}/transforms.json", Body=b'{"frames": []}')
    buckets.client().put_object(Bucket="captures", Key=f"{name}/behaviour.json", Body=json.dumps(behaviour).encode())


def apply(
    custom: client.CustomObjectsApi,
    buckets: S3Server,
    namespace: str,
    name: str,
    behaviour: dict[str, Any] | None,
    **spec: Any,
) -> None:
    capture(buckets, name, behaviour)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReconstructionJob",
        "metadata": {"name": name},
        "spec": {
            "input": {"uri": f"s3://captures/{name}/"},
            "output": {"uri": f"s3://results/{name}/"},
            "storage": {"credentialsSecret": "s3"},
            "resources": {"gpus": 0},
            **spec,
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def pods_of(core: client.CoreV1Api, namespace: str, job: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}").items)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("reason", "")) for c in status.get("conditions") or []}


# ---- the happy path ------------------------------------------------------------------------------


def test_success_publishes_and_reports(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
) -> None:
    metrics = {"psnr": 31.5, "maskIoU": 0.97, "watertight": True}
    apply(custom, buckets, namespace, "ok", {"sleep": 1, "metrics": metrics}, gates={"minPSNR": 25})
    status = wait_phase(custom, namespace, "ok", "Succeeded")
    assert status["reason"] == "Succeeded" and status["attempts"] == 1 and status["jobName"] == "ok-1"
    assert status["startTime"] and status["completionTime"]
    assert status["metrics"]["psnr"] == 31.5  # the worker's own patch, kept beside the operator's fields
    (listed,) = status["outputs"]["files"]  # from the verified manifest, by the operator
    assert status["outputs"]["manifest"] == "s3://results/ok/manifest.json" and listed["name"] == "mesh.glb"
    assert status["worker"]["node"] == "local-node"
    assert conditions(status)["Succeeded"] == ("True", "Succeeded")
    assert conditions(status)["Ready"][0] == "True" and conditions(status)["Failed"][0] == "False"
    assert conditions(status)["QualityDegraded"] == ("False", "GatesPassed")
    (job,) = jobs_of(batch, namespace, "ok")
    assert job.metadata.owner_references[0].name == "ok"
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=ok").items
    assert {"JobCreated", "Succeeded"} <= {e.reason for e in events}
    # No flap back (issue 11 point 9): no Event records a move from Running to Pending. Which moves, not
    # their order: Events have whole-second timestamps, so the order of two within a second is not known.
    moves = [e.message.split(":")[0] for e in events]
    assert not any(move.startswith("Running → Pending") for move in moves), moves
    import urllib.request

    from recon_operator.handlers import SETTINGS  # read once, when the first in-process operator of the session started

    port = SETTINGS.metrics_port

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "recon_time_to_job_seconds_count" in text and 'recon_jobs{phase="Succeeded"}' in text


def test_quality_gate_miss_degrades_without_failing(
    operator: KopfRunner, buckets: S3Server, custom: client.CustomObjectsApi, namespace: str
) -> None:
    apply(custom, buckets, namespace, "meh", {"metrics": {"psnr": 18.0, "watertight": False}}, gates={"minPSNR": 25})
    status = wait_phase(custom, namespace, "meh", "Succeeded")
    status = wait_status(
        custom, namespace, "meh", lambda s: conditions(s).get("QualityDegraded", ("",))[0] == "True", "QualityDegraded"
    )
    degraded = next(c for c in status["conditions"] if c["type"] == "QualityDegraded")
    assert "PSNR 18.00 dB < minPSNR 25 dB" in degraded["message"] and "watertight" in degraded["message"]


# ---- failures, each with its typed reason --------------------------------------------------------


def test_failures_have_typed_reasons_and_evidence(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
) -> None:
    # All at once: the cases run side by side on the node.
    bad = {"exit": 2, "reason": "InvalidCapture", "message": "frame 3: images/r_3.png is not a PNG"}
    apply(custom, buckets, namespace, "bad-input", bad, backoffLimit=3)
    small_gpu = {"exit": 3, "reason": "InsufficientGPUMemory", "message": "4.0 GiB free, 12 needed"}
    apply(custom, buckets, namespace, "small-gpu", small_gpu, backoffLimit=1)
    apply(custom, buckets, namespace, "flaky", {"exit": 1, "reason": "Crash", "message": "segfault"}, backoffLimit=1)
    apply(custom, buckets, namespace, "no-capture", None)
    apply(custom, buckets, namespace, "no-manifest", {"exit": 0, "publish": False})
    apply(custom, buckets, namespace, "broken-manifest", {"exit": 0, "publish": "broken"})
    apply(custom, buckets, namespace, "too-slow", {"sleep": 300}, activeDeadlineSeconds=60)  # the CRD's minimum
    dead_store = {"credentialsSecret": "s3", "endpoint": DEAD_STORE}
    apply(custom, buckets, namespace, "no-store", {}, storage=dead_store)

    status = wait_phase(custom, namespace, "bad-input", "Failed")
    assert status["reason"] == "InputsInvalid"
    assert "InvalidCapture: frame 3: images/r_3.png is not a PNG" in status["message"]
    assert len(pods_of(core, namespace, "bad-input-1")) == 1  # exit 2 is never retried

    status = wait_phase(custom, namespace, "small-gpu", "Failed")
    assert status["reason"] == "InsufficientGPUMemory" and "4.0 GiB free" in status["message"]
    assert len(pods_of(core, namespace, "small-gpu-1")) == 2  # retried within backoffLimit

    status = wait_phase(custom, namespace, "flaky", "Failed")
    assert status["reason"] == "BackoffLimitExceeded" and "Crash: segfault" in status["message"]

    status = wait_phase(custom, namespace, "no-capture", "Failed")
    assert status["reason"] == "InputsInvalid"
    assert "s3://captures/no-capture/transforms.json" in status["message"]
    assert jobs_of(batch, namespace, "no-capture") == []  # preflight: no GPU spent
    assert conditions(status)["Failed"] == ("True", "InputsInvalid")

    status = wait_phase(custom, namespace, "no-manifest", "Failed")  # exit 0 without publishing is no success
    assert status["reason"] == "OutputsMissing" and "s3://results/no-manifest/manifest.json" in status["message"]

    status = wait_phase(custom, namespace, "broken-manifest", "Failed")  # a manifest listing a missing file
    assert status["reason"] == "OutputsMissing" and "lists mesh.glb, which does not exist" in status["message"]

    status = wait_phase(custom, namespace, "no-store", "Failed")  # after the preflight retries (2 here)
    assert status["reason"] == "StorageUnreachable" and dead_store["endpoint"] in status["message"]
    assert jobs_of(batch, namespace, "no-store") == []

    status = wait_phase(custom, namespace, "too-slow", "Failed", timeout=120)
    assert status["reason"] == "DeadlineExceeded"


def test_unschedulable_is_queued_then_fails_its_pending_deadline(
    operator: KopfRunner, buckets: S3Server, custom: client.CustomObjectsApi, batch: client.BatchV1Api, namespace: str
) -> None:
    apply(custom, buckets, namespace, "big", {}, resources={"gpus": 4}, pendingDeadlineSeconds=8)
    status = wait_phase(custom, namespace, "big", "Queued")
    assert status["reason"] == "Unschedulable" and "nvidia.com/gpu" in status["message"]
    status = wait_phase(custom, namespace, "big", "Failed", timeout=60)
    assert status["reason"] == "PendingDeadlineExceeded"
    wait_for("the pending Job to be deleted", lambda: not jobs_of(batch, namespace, "big"), 60)


def test_kueue_managed_job_is_created_suspended_and_left_to_kueue(
    operator: KopfRunner, buckets: S3Server, custom: client.CustomObjectsApi, batch: client.BatchV1Api, namespace: str
) -> None:
    apply(custom, buckets, namespace, "queued", {}, scheduling={"queueName": "gpu"})
    status = wait_phase(custom, namespace, "queued", "Queued")
    assert status["reason"] == "WaitingForAdmission"
    time.sleep(3)  # several reconcile rounds: the operator must not unsuspend it
    (job,) = jobs_of(batch, namespace, "queued")
    assert job.spec.suspend is True and job.metadata.labels["kueue.x-k8s.io/queue-name"] == "gpu"


# ---- lifecycle ---------------------------------------------------------------------------------


def test_suspend_frees_the_node_and_resume_starts_a_new_attempt(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
) -> None:
    apply(custom, buckets, namespace, "pausable", {"sleep": 300, "attempts": {"2": {"sleep": 0}}})
    wait_phase(custom, namespace, "pausable", "Running")
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "pausable", {"spec": {"suspend": True}})
    status = wait_phase(custom, namespace, "pausable", "Suspended")
    assert status["reason"] == "Suspended"
    wait_for(
        "the worker Job and pod to go",
        lambda: not jobs_of(batch, namespace, "pausable") and not pods_of(core, namespace, "pausable-1"),
        60,
    )
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "pausable", {"spec": {"suspend": False}})
    status = wait_phase(custom, namespace, "pausable", "Succeeded")
    assert status["attempts"] == 2 and status["jobName"] == "pausable-2"


def test_deleting_the_job_cancels(
    operator: KopfRunner, buckets: S3Server, custom: client.CustomObjectsApi, batch: client.BatchV1Api, namespace: str
) -> None:
    apply(custom, buckets, namespace, "doomed", {"sleep": 300})
    wait_phase(custom, namespace, "doomed", "Running")
    batch.delete_namespaced_job("doomed-1", namespace, propagation_policy="Foreground")
    status = wait_phase(custom, namespace, "doomed", "Cancelled")
    assert status["reason"] == "JobDeleted" and status["completionTime"]


def test_deleting_the_resource_removes_job_pods_and_identity(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
) -> None:
    apply(custom, buckets, namespace, "gone", {"sleep": 300})
    wait_phase(custom, namespace, "gone", "Running")
    assert core.read_namespaced_service_account("gone-worker", namespace)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")

    def all_gone() -> bool:
        accounts = [a.metadata.name for a in core.list_namespaced_service_account(namespace).items if a.metadata]
        return (
            not jobs_of(batch, namespace, "gone")
            and not pods_of(core, namespace, "gone-1")
            and "gone-worker" not in accounts
        )

    wait_for("the Job, its pods and the worker identity to be collected", all_gone, 90)


def test_a_namesake_waits_for_the_deleted_ones_job_and_ignores_its_failure(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
    namespace: str,
) -> None:
    # What `kubectl recon retry` does: delete a failed CR, create one of the same name. Labels name the CR by
    # name only, so the old one's Job (held here by a finalizer, as a slow garbage collector would leave it)
    # looks like the new one's attempt 1.
    apply(custom, buckets, namespace, "again", {"exit": 2, "reason": "InvalidCapture", "message": "no images"})
    wait_phase(custom, namespace, "again", "Failed")
    old_uid = get(custom, namespace, "again")["metadata"]["uid"]
    hold = {"metadata": {"finalizers": ["test.recon.dev/hold"]}}
    batch.patch_namespaced_job("again-1", namespace, hold)
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "again")

        def old_gone() -> bool:
            try:
                get(custom, namespace, "again")
            except ApiException as exc:
                return exc.status == 404
            return False

        wait_for("the old resource to be deleted", old_gone, 60)
        apply(custom, buckets, namespace, "again", {})  # its capture fixed: this one succeeds
        # (its ServiceAccount, Role and RoleBinding may also be waited for, for a moment: no finalizer holds them)
        status = wait_status(
            custom,
            namespace,
            "again",
            lambda s: s.get("reason") == "Replacing" and "Job " in s.get("message", ""),
            "Pending/Replacing on the old Job",
            60,
        )
        assert status["phase"] == "Pending" and f"Job {namespace}/again-1 still belongs" in status["message"]
        time.sleep(3)  # more decisions from views that hold the old, failed Job
        assert get(custom, namespace, "again")["status"]["phase"] == "Pending"
    finally:
        batch.patch_namespaced_job("again-1", namespace, {"metadata": {"finalizers": None}})
    status = wait_phase(custom, namespace, "again", "Succeeded", timeout=120)
    assert status["attempts"] == 1
    new_uid = get(custom, namespace, "again")["metadata"]["uid"]
    (job,) = jobs_of(batch, namespace, "again")
    assert new_uid != old_uid and job.metadata.owner_references[0].uid == new_uid


def test_ttl_after_finished_deletes_the_resource(
    operator: KopfRunner, buckets: S3Server, custom: client.CustomObjectsApi, namespace: str
) -> None:
    apply(custom, buckets, namespace, "brief", {}, ttlSecondsAfterFinished=2)
    wait_phase(custom, namespace, "brief", "Succeeded")

    def deleted() -> bool:
        try:
            get(custom, namespace, "brief")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("the finished resource to be deleted by its TTL", deleted, 60)
    assert buckets.client().head_object(Bucket="results", Key="brief/manifest.json")  # outputs stay


def test_operator_restart_mid_flight_creates_no_duplicate(
    operator_env: None, buckets: S3Server, custom: client.CustomObjectsApi, batch: client.BatchV1Api, namespace: str
) -> None:
    first = start_operator()
    try:
        apply(custom, buckets, namespace, "steady", {"sleep": 6})
        wait_phase(custom, namespace, "steady", "Running")
    finally:
        first.__exit__(None, None, None)
    second = start_operator()
    try:
        status = wait_phase(custom, namespace, "steady", "Succeeded")
    finally:
        second.__exit__(None, None, None)
    assert status["attempts"] == 1
    assert [j.metadata.name for j in jobs_of(batch, namespace, "steady")] == ["steady-1"]
    # The second operator re-derives every phase from a cold cache: still one Event per transition.
    events = client.CoreV1Api(batch.api_client).list_namespaced_event(namespace).items
    reasons = [e.reason for e in events if e.involved_object.name == "steady"]
    assert reasons.count("JobCreated") == 1, reasons
    assert reasons.count("Succeeded") == 1, reasons


# ---- the worker's identity -------------------------------------------------------------------------


def test_worker_identity_may_patch_only_its_own_status(
    operator: KopfRunner,
    cluster: Cluster,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    apply(custom, buckets, namespace, "mine", {"sleep": 300})
    apply(custom, buckets, namespace, "theirs", {"sleep": 300})
    wait_phase(custom, namespace, "mine", "Running")
    as_worker = worker_api(core, namespace, "mine-worker")

    patch = {"status": {"progress": 40, "stage": "refine"}}
    as_worker.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "mine", patch)
    assert get(custom, namespace, "mine")["status"]["progress"] == 40
    for call, args in (
        (as_worker.patch_namespaced_custom_object_status, (GROUP, VERSION, namespace, PLURAL, "theirs", patch)),
        (
            as_worker.patch_namespaced_custom_object,
            (GROUP, VERSION, namespace, PLURAL, "mine", {"spec": {"suspend": True}}),
        ),
        (as_worker.delete_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL, "mine")),
    ):
        with pytest.raises(ApiException) as refused:
            call(*args)
        assert refused.value.status == 403


def test_resume_right_after_suspend_waits_for_the_old_job_then_starts_the_next(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
    namespace: str,
) -> None:
    apply(custom, buckets, namespace, "flip", {"sleep": 300, "attempts": {"2": {"sleep": 0}}})
    wait_phase(custom, namespace, "flip", "Running")
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "flip", {"spec": {"suspend": True}})
    wait_phase(custom, namespace, "flip", "Suspended")
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "flip", {"spec": {"suspend": False}})
    status = wait_phase(custom, namespace, "flip", "Succeeded")
    assert status["attempts"] == 2 and status["jobName"] == "flip-2"
    assert [j.metadata.name for j in jobs_of(batch, namespace, "flip")] == ["flip-2"]


def test_eviction_is_retried_without_spending_the_backoff_budget(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    apply(custom, buckets, namespace, "evictee", {"waitFor": "go"}, backoffLimit=0)
    wait_phase(custom, namespace, "evictee", "Running")
    (first,) = pods_of(core, namespace, "evictee-1")
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": first.metadata.name}}
    raw(core.create_namespaced_pod_eviction, first.metadata.name, namespace, eviction)

    def replaced() -> bool:
        return any(p.metadata.name != first.metadata.name for p in pods_of(core, namespace, "evictee-1"))

    wait_for("a replacement pod after the eviction", replaced, 60)
    buckets.client().put_object(Bucket="captures", Key="evictee/go", Body=b"")
    status = wait_phase(custom, namespace, "evictee", "Succeeded")
    assert status["attempts"] == 1  # the same Job retried it: backoffLimit 0 was not spent
