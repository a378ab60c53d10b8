"""spec → Job manifest: one test per field the issue names."""

from __future__ import annotations

import json
from typing import Any

import pytest

from recon_operator.jobspec import build_job, build_poses_job
from recon_operator.settings import OperatorSettings
from recon_operator.spec import ReconstructionJobSpec

UID = "6f1c2d3e-0000-4000-8000-000000000001"


def cr(name: str = "bunny", **spec: Any) -> dict[str, Any]:
    body_spec = {"input": {"uri": "s3://captures/bunny/"}, "output": {"uri": "s3://results/bunny/"}, **spec}
    return {
        "apiVersion": "recon.dev/v1alpha1",
        "kind": "ReconstructionJob",
        "metadata": {"name": name, "namespace": "team-a", "uid": UID, "generation": 1},
        "spec": body_spec,
    }


def job_for(body: dict[str, Any], attempt: int = 1, **settings: Any) -> dict[str, Any]:
    spec = ReconstructionJobSpec.model_validate(body["spec"])
    return build_job(body, spec, attempt, OperatorSettings.model_validate(settings))


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(job: dict[str, Any]) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container(job)["env"]}


def test_name_is_cr_name_and_attempt() -> None:
    assert job_for(cr(), attempt=3)["metadata"]["name"] == "bunny-3"


def test_long_names_are_shortened_with_a_hash_and_stay_distinct() -> None:
    a = job_for(cr("x" * 80 + "a"))["metadata"]["name"]
    b = job_for(cr("x" * 80 + "b"))["metadata"]["name"]
    assert len(a) <= 63 and len(b) <= 63
    assert a != b and a.endswith("-1")


def test_same_spec_gives_the_same_manifest() -> None:
    assert job_for(cr()) == job_for(cr())


def test_owned_by_the_cr_as_controller() -> None:
    (ref,) = job_for(cr())["metadata"]["ownerReferences"]
    assert ref["uid"] == UID and ref["kind"] == "ReconstructionJob" and ref["controller"] is True
    assert ref["blockOwnerDeletion"] is True


def test_labels_on_job_and_pod() -> None:
    job = job_for(cr(), attempt=2)
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["recon.dev/job"] == "bunny"
        assert labels["recon.dev/attempt"] == "2"
        assert labels["app.kubernetes.io/managed-by"] == "recon-operator"
        assert labels["app.kubernetes.io/part-of"] == "recon-operator"
        assert labels["app.kubernetes.io/instance"] == "bunny"


def test_image_defaults_to_operator_setting_and_spec_overrides() -> None:
    assert container(job_for(cr(), worker_image="reg/worker:1"))["image"] == "reg/worker:1"
    assert container(job_for(cr(image="reg/worker:2"), worker_image="reg/worker:1"))["image"] == "reg/worker:2"


def test_command_comes_from_settings() -> None:
    assert container(job_for(cr(), worker_command=["python", "-m", "x"]))["command"] == ["python", "-m", "x"]
    assert container(job_for(cr()))["command"] == ["recon-worker", "run"]


def test_task_document_carries_coordinates_and_resolved_quality() -> None:
    task = json.loads(env(job_for(cr(quality={"preset": "draft"}), attempt=4))["RECON_TASK"])
    assert task["apiVersion"] == "recon.dev/v1alpha1" and task["kind"] == "ReconstructionTask"
    assert task["job"] == {"namespace": "team-a", "name": "bunny", "uid": UID, "attempt": 4}
    assert task["input"]["uri"] == "s3://captures/bunny/" and task["output"]["uri"] == "s3://results/bunny/"
    assert task["quality"]["preset"] == "draft" and task["quality"]["reconstruction"]["resolution"] == 64


def test_downward_api_names_pod_and_node() -> None:
    variables = env(job_for(cr()))
    assert variables["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert variables["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_the_memory_request_reaches_the_worker_in_bytes() -> None:
    # Through the downward API, so the figure is the request the API server admitted (a LimitRange's
    # default too), in bytes whatever unit the CR used.
    for body in (cr(resources={"memory": "3Gi"}), cr()):
        variables = env(job_for(body))
        ref = {"resourceFieldRef": {"containerName": "worker", "resource": "requests.memory"}}
        assert variables["RECON_MEMORY_BYTES"] == ref


def test_gpu_limit_of_the_named_resource() -> None:
    limits = container(job_for(cr(resources={"gpus": 2, "gpuResourceName": "nvidia.com/mig-3g.40gb"})))["resources"]
    assert limits["limits"]["nvidia.com/mig-3g.40gb"] == "2"
    assert "nvidia.com/gpu" not in limits["limits"]


def test_no_gpu_limit_when_zero_gpus() -> None:
    limits = container(job_for(cr(resources={"gpus": 0})))["resources"]["limits"]
    assert not any("gpu" in key for key in limits)


def test_cpu_and_memory_from_spec_or_operator_defaults() -> None:
    own = container(job_for(cr(resources={"cpu": "500m", "memory": "2Gi"})))["resources"]
    assert own["requests"] == {"cpu": "500m", "memory": "2Gi"}
    assert own["limits"]["cpu"] == "500m" and own["limits"]["memory"] == "2Gi"
    default = container(job_for(cr(), default_cpu="3", default_memory="9Gi"))["resources"]
    assert default["requests"] == {"cpu": "3", "memory": "9Gi"}


def test_shm_is_memory_backed_of_shm_size_and_scratch_is_mounted() -> None:
    job = job_for(cr(resources={"shmSize": "2Gi"}))
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert "emptyDir" in volumes[mounts["/scratch"]]
    assert env(job)["TMPDIR"] == "/scratch"


def test_credentials_from_the_secret_session_token_optional() -> None:
    variables = env(job_for(cr(storage={"credentialsSecret": "s3-creds"})))
    assert variables["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}
    assert variables["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "s3-creds"
    assert variables["AWS_SESSION_TOKEN"]["secretKeyRef"]["optional"] is True


def test_no_credentials_without_a_secret() -> None:
    assert "AWS_ACCESS_KEY_ID" not in env(job_for(cr()))


def test_scheduling_fields_pass_through() -> None:
    scheduling = {
        "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        "priorityClassName": "batch-low",
        "runtimeClassName": "nvidia",
    }
    pod = job_for(cr(scheduling=scheduling))["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == scheduling["tolerations"]
    assert pod["affinity"] == scheduling["affinity"]
    assert pod["priorityClassName"] == "batch-low" and pod["runtimeClassName"] == "nvidia"


def test_deadlines_backoff_and_ttl() -> None:
    spec = job_for(cr(activeDeadlineSeconds=600, backoffLimit=5), job_ttl_seconds=3600)["spec"]
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["backoffLimit"] == 5
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_pod_failure_policy_ignores_disruption_fails_on_exit_2_counts_the_rest() -> None:
    rules = job_for(cr())["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "Ignore"
    assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [2]
    assert rules[2]["action"] == "Count" and rules[2]["onExitCodes"]["operator"] == "NotIn"


def test_restricted_security_context() -> None:
    job = job_for(cr(), run_as_user=4242)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 4242
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container(job)["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}


def test_runs_as_its_own_service_account() -> None:
    assert job_for(cr())["spec"]["template"]["spec"]["serviceAccountName"] == "bunny-worker"


def test_kueue_queue_label_and_created_suspended() -> None:
    job = job_for(cr(scheduling={"queueName": "gpu-queue"}))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job["spec"]["suspend"] is True
    assert job_for(cr())["spec"]["suspend"] is False


@pytest.mark.parametrize("attempt", [1, 2, 17])
def test_termination_message_path_and_fallback_to_logs(attempt: int) -> None:
    worker = container(job_for(cr(), attempt=attempt))
    assert worker["terminationMessagePath"] == "/dev/termination-log"
    assert worker["terminationMessagePolicy"] == "FallbackToLogsOnError"


def poses_job_for(body: dict[str, Any], attempt: int = 1, **settings: Any) -> dict[str, Any]:
    spec = ReconstructionJobSpec.model_validate(body["spec"])
    return build_poses_job(body, spec, attempt, OperatorSettings.model_validate(settings))


def test_the_poses_job_runs_recon_worker_poses_on_the_cpu() -> None:
    body = cr(
        resources={"gpus": 2, "cpu": "8", "memory": "32Gi"},
        scheduling={"nodeSelector": {"gpu": "a100"}, "queueName": "gpus", "priorityClassName": "batch"},
    )
    poses = poses_job_for(body, 2, poses_cpu="3", poses_memory="6Gi", poses_node_selector={"pool": "cpu"})
    assert poses["metadata"]["name"] == "bunny-2-poses"
    assert poses["metadata"]["labels"]["app.kubernetes.io/component"] == "poses"
    assert poses["metadata"]["labels"]["recon.dev/attempt"] == "2"
    # Submitted to the CR's Kueue queue like the worker Job: suspended until admitted (a CPU-only Workload).
    assert poses["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpus" and poses["spec"]["suspend"] is True
    assert "kueue.x-k8s.io/queue-name" not in poses["spec"]["template"]["metadata"]["labels"]
    pod = poses["spec"]["template"]["spec"]
    assert container(poses)["command"] == ["recon-worker", "poses"]
    # No GPU, none of the GPU placement: the settings' CPU requests and pool; the CR's priority holds.
    assert container(poses)["resources"] == {
        "requests": {"cpu": "3", "memory": "6Gi"},
        "limits": {"cpu": "3", "memory": "6Gi"},
    }
    assert pod["nodeSelector"] == {"pool": "cpu"} and "tolerations" not in pod and "runtimeClassName" not in pod
    assert pod["priorityClassName"] == "batch"
    assert pod["serviceAccountName"] == "bunny-worker"
    (ref,) = poses["metadata"]["ownerReferences"]
    assert ref["uid"] == UID and ref["controller"] is True


def test_the_poses_job_goes_through_kueue_only_when_the_cr_names_a_queue() -> None:
    plain = poses_job_for(cr())
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"] and plain["spec"]["suspend"] is False
    body = cr(scheduling={"queueName": "team-a"})
    body["metadata"]["labels"] = {"kueue.x-k8s.io/priority-class": "urgent"}
    queued = poses_job_for(body)
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "urgent"
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a" and queued["spec"]["suspend"]


def test_the_poses_job_reads_the_same_task_as_the_worker_job() -> None:
    # Same task document, so the same run key: the worker restores the poses checkpoint the CPU Job saved.
    body = cr(input={"uri": "s3://captures/mug/", "poses": "estimate"})
    assert env(poses_job_for(body))["RECON_TASK"] == env(job_for(body))["RECON_TASK"]
    assert poses_job_for(body)["spec"]["podFailurePolicy"] == job_for(body)["spec"]["podFailurePolicy"]


def test_no_cr_can_own_a_worker_job_named_like_a_poses_job() -> None:
    # Worker Job names end in the attempt's digits; poses Job names never do.
    assert job_for(cr("bunny-1-poses"))["metadata"]["name"] == "bunny-1-poses-1"
    assert poses_job_for(cr("x" * 80))["metadata"]["name"].endswith("-1-poses")
    assert len(poses_job_for(cr("x" * 80))["metadata"]["name"]) <= 63
