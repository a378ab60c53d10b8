"""Issue 11, the operator's side, on the local control plane: each test failed before its fix.

The pod's memory request reaching the worker (1), identity by name (point 2), the worker token and the
operator's status fields (3), Jobs the API refuses (5), scheduling powers (7), where the preflight sends
requests (8), output-prefix claims and pods the API refuses to create (9). The operator and its
stand-in worker are those of test_operator_lifecycle.
"""

# ruff: noqa: F811  (fixtures imported from test_operator_lifecycle are redefined as parameters)
from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
from tests.integration.test_operator_lifecycle import apply, operator, operator_env  # noqa: F401  (fixtures)
from tests.s3server import S3Server

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def events_of(core: client.CoreV1Api, namespace: str, name: str) -> list[client.CoreV1Event]:
    return list(core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items)


# ---- point 1: the worker sizes its capture limits by the pod's memory request ------------------------


def test_the_worker_process_sees_the_pods_memory_request_in_bytes(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
) -> None:
    # The stand-in exits 2 with RECON_MEMORY_BYTES as its message: what the worker's memory.py reads.
    echo = {"exit": 2, "reason": "InputsInvalid", "messageFromEnv": "RECON_MEMORY_BYTES"}
    apply(custom, buckets, namespace, "mem", echo, resources={"gpus": 0, "memory": "3Gi"})
    status = wait_phase(custom, namespace, "mem", "Failed")
    assert f"RECON_MEMORY_BYTES={3 * 2**30}" in status["message"], status
    (job,) = jobs_of(batch, namespace, "mem")
    (container,) = job.spec.template.spec.containers
    (variable,) = [v for v in container.env if v.name == "RECON_MEMORY_BYTES"]
    ref = variable.value_from.resource_field_ref
    assert (ref.container_name, ref.resource) == ("worker", "requests.memory")
    assert container.resources.requests["memory"] == "3Gi"


# ---- point 2: never an account, Role or RoleBinding this CR does not own ---------------------------


def test_identity_objects_it_does_not_own_are_never_used(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
) -> None:
    # A privileged account named like the worker's of a CR `ci`, made by someone else.
    raw(core.create_namespaced_service_account, namespace, {"metadata": {"name": "ci-worker"}})
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    binding = {
        "metadata": {"name": "rb-worker"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "rb-worker", "namespace": namespace}],
    }
    raw(rbac.create_namespaced_role_binding, namespace, binding)
    apply(custom, buckets, namespace, "ci", {})
    apply(custom, buckets, namespace, "rb", {})

    status = wait_phase(custom, namespace, "ci", "Failed")
    assert status["reason"] == "NameConflict"
    assert f"ServiceAccount {namespace}/ci-worker already exists and is not owned" in status["message"]
    status = wait_phase(custom, namespace, "rb", "Failed")
    assert status["reason"] == "NameConflict" and f"RoleBinding {namespace}/rb-worker" in status["message"]
    assert jobs_of(batch, namespace, "ci") == [] and jobs_of(batch, namespace, "rb") == []


# ---- point 3: the worker token cannot set the operator's fields --------------------------------------


def test_status_forged_with_the_worker_token_is_restored_and_not_obeyed(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
) -> None:
    apply(custom, buckets, namespace, "forged", {"waitFor": "go"})
    wait_phase(custom, namespace, "forged", "Running")
    as_worker = worker_api(core, namespace, "forged-worker")
    forged = {
        "status": {
            "phase": "Succeeded",
            "reason": "Succeeded",
            "message": "trust me",
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "trust me"}],
            "outputs": {"manifest": "s3://elsewhere/manifest.json", "files": []},
            "progress": 50,
        }
    }
    as_worker.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "forged", forged)
    status = wait_status(
        custom,
        namespace,
        "forged",
        lambda s: s.get("phase") == "Running" and s.get("message") != "trust me" and "outputs" not in s,
        "the operator's fields restored",
        timeout=30,
    )
    assert status["reason"] == "WorkerRunning" and status["progress"] == 50  # the worker's own field stays
    assert {c["type"]: c["status"] for c in status["conditions"]}["Succeeded"] == "False"
    time.sleep(2)  # a few reconcile rounds: the Job must not be deleted on a forged phase
    (job,) = jobs_of(batch, namespace, "forged")
    assert job.metadata.deletion_timestamp is None

    buckets.client().put_object(Bucket="captures", Key="forged/go", Body=b"")
    status = wait_phase(custom, namespace, "forged", "Succeeded")
    assert status["outputs"]["manifest"] == "s3://results/forged/manifest.json"
    assert [f["name"] for f in status["outputs"]["files"]] == ["mesh.glb"]


# ---- point 5: a Job the API refuses fails the CR once, with the API server's message ------------------


def test_a_job_the_api_refuses_fails_once_with_its_message(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
) -> None:
    terms = [{"matchExpressions": [{"key": "gpu", "operator": "Sometimes", "values": ["a100"]}]}]
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}
    apply(custom, buckets, namespace, "refused", {}, scheduling={"affinity": affinity})
    status = wait_phase(custom, namespace, "refused", "Failed")
    assert status["reason"] == "JobRejected"
    assert "the API server refused Job refused-1" in status["message"] and "Sometimes" in status["message"]
    time.sleep(3)  # several reconcile rounds (1 s): no retry loop, one Event
    assert [e.reason for e in events_of(core, namespace, "refused")].count("JobRejected") == 1
    assert jobs_of(batch, namespace, "refused") == []


def test_values_the_job_api_refuses_are_refused_at_apply_time(
    buckets: S3Server, custom: client.CustomObjectsApi, namespace: str
) -> None:
    for spec, words in (
        ({"resources": {"gpuResourceName": "memory"}}, "gpuResourceName"),
        ({"scheduling": {"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]}}, "NoExecute"),
        ({"scheduling": {"nodeSelector": {"no spaces": "x"}}}, "label keys"),
    ):
        with pytest.raises(ApiException) as refused:
            apply(custom, buckets, namespace, "early", None, **spec)
        assert refused.value.status == 422 and words in str(refused.value.body)


# ---- point 7: scheduling powers bounded by the operator's settings ------------------------------------


def test_scheduling_powers_beyond_the_settings_are_refused(
    operator: KopfRunner, buckets: S3Server, custom: client.CustomObjectsApi, batch: client.BatchV1Api, namespace: str
) -> None:
    apply(custom, buckets, namespace, "critical", {}, scheduling={"priorityClassName": "system-node-critical"})
    apply(custom, buckets, namespace, "anywhere", {}, scheduling={"tolerations": [{"operator": "Exists"}]})
    apply(custom, buckets, namespace, "miner", {}, image="evil.example/miner:latest")
    for name, words in (
        ("critical", "system-* priority classes are reserved"),
        ("anywhere", "with no key (tolerates every taint)"),
        ("miner", "image overrides are off"),
    ):
        status = wait_phase(custom, namespace, name, "Failed")
        assert status["reason"] == "PolicyViolation" and words in status["message"], status
        assert jobs_of(batch, namespace, name) == []


# ---- point 8: the preflight talks only to allowed endpoints -----------------------------------------


@pytest.fixture
def listener() -> Iterator[tuple[str, list[object]]]:
    """A loopback TCP listener that records every connection (the target of a would-be SSRF)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[object] = []
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, peer = server.accept()
            except TimeoutError:
                continue
            accepted.append(peer)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    stopping.set()
    thread.join()
    server.close()


def test_storage_endpoints_and_file_uris_are_allowed_by_setting_only(
    operator: KopfRunner,
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
    namespace: str,
    listener: tuple[str, list[object]],
) -> None:
    endpoint, accepted = listener
    apply(custom, buckets, namespace, "probe", {}, storage={"credentialsSecret": "s3", "endpoint": endpoint})
    apply(custom, buckets, namespace, "local", None, input={"uri": "file:///etc/"})  # the operator's own files
    status = wait_phase(custom, namespace, "probe", "Failed")
    assert (
        status["reason"] == "PolicyViolation"
        and f"spec.storage.endpoint '{endpoint}' is not allowed" in (status["message"])
    )
    assert accepted == []  # not one connection reached the listener
    status = wait_phase(custom, namespace, "local", "Failed")
    assert status["reason"] == "PolicyViolation" and "spec.input.uri 'file:///etc/'" in status["message"]
    assert "file:// URIs are off" in status["message"]
    assert jobs_of(batch, namespace, "probe") == [] and jobs_of(batch, namespace, "local") == []


# ---- point 9: one output prefix per active CR; pods the API refuses; ----------------------------------


def test_a_second_resource_may_not_publish_into_a_claimed_prefix(
    operator: KopfRunner, buckets: S3Server, custom: client.CustomObjectsApi, batch: client.BatchV1Api, namespace: str
) -> None:
    shared = {"output": {"uri": "s3://results/shared/"}}
    apply(custom, buckets, namespace, "first", {"waitFor": "go"}, **shared)
    wait_phase(custom, namespace, "first", "Running")
    apply(custom, buckets, namespace, "second", {}, output={"uri": "s3://results/shared/inner/"})
    status = wait_phase(custom, namespace, "second", "Failed")
    assert status["reason"] == "OutputConflict" and f"ReconstructionJob {namespace}/first" in status["message"]
    assert jobs_of(batch, namespace, "second") == []
    buckets.client().put_object(Bucket="captures", Key="first/go", Body=b"")
    wait_phase(custom, namespace, "first", "Succeeded")
    apply(custom, buckets, namespace, "third", {}, **shared)  # a finished CR releases its prefix
    wait_phase(custom, namespace, "third", "Succeeded")


def test_pods_the_api_refuses_to_create_show_as_unschedulable(
    operator: KopfRunner, cluster: Cluster, buckets: S3Server, custom: client.CustomObjectsApi, namespace: str
) -> None:
    apply(custom, buckets, namespace, "no-class", {}, scheduling={"priorityClassName": "no-such-class"})
    apply(custom, buckets, namespace, "no-runtime", {}, scheduling={"runtimeClassName": "no-such-runtime"})
    for name, words in (("no-class", "no-such-class"), ("no-runtime", "no-such-runtime")):
        status = wait_status(
            custom, namespace, name, lambda s: s.get("reason") == "Unschedulable", "reason Unschedulable", timeout=60
        )
        assert status["phase"] == "Queued"
        assert f"Job {name}-1 cannot create its pod" in status["message"] and words in status["message"], status
    assert get(custom, namespace, "no-class")["status"]["jobName"] == "no-class-1"


# ---- the Kubernetes-native alternative: the documented ValidatingAdmissionPolicy ----------------------


def test_the_documented_admission_policy_refuses_reserved_powers_at_apply_time(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    buckets: S3Server,
    custom: client.CustomObjectsApi,
    namespace: str,
) -> None:
    policy = REPO / "docs" / "validating-admission-policy.yaml"
    kubectl("apply", "-f", str(policy))
    try:

        def refused() -> bool:  # the API server type-checks and loads a new policy within seconds
            try:
                apply(custom, buckets, namespace, "vap", None, scheduling={"priorityClassName": "system-node-critical"})
            except ApiException as exc:
                return exc.status in (403, 422) and "system-* PriorityClass" in str(exc.body)
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "vap")
            return False

        wait_for("the admission policy to refuse a system-* priority class", refused, 60, interval=1)
        apply(custom, buckets, namespace, "plain", None)  # an ordinary CR still passes
    finally:
        kubectl("delete", "-f", str(policy), "--ignore-not-found")
