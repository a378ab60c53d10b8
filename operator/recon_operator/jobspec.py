"""The Jobs of one attempt, derived from the CR and the operator settings by pure functions.

`build_job` is the worker Job (GPU); `build_poses_job` the CPU Job that poses a photo capture by structure
from motion before it (`recon-worker poses`: its result is the run's `poses` checkpoint under the output's
staging prefix, which the worker Job's `poses` stage then restores instead of posing again).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, cast

import kopf

from recon_operator.labels import ATTEMPT_LABEL, KUEUE_QUEUE_LABEL, child_labels
from recon_operator.names import identity_name, job_name, poses_job_name
from recon_operator.settings import OperatorSettings
from recon_operator.spec import ReconstructionJobSpec, ResourceCoordinates
from recon_operator.task import build_task, task_json
from recon_operator.workloads import PRIORITY_CLASS_LABEL

CONTAINER = "worker"
SHM_VOLUME = "shm"
SCRATCH_VOLUME = "scratch"
SCRATCH_PATH = "/scratch"
TERMINATION_LOG = "/dev/termination-log"
EXIT_INVALID_INPUT = 2  # the worker's contract: invalid input or spec, retrying cannot help
EXIT_NODE_UNFIT = 3  # the node cannot run it (e.g. too little GPU memory): retry elsewhere
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# The worker derives its capture limits (views, decoded pixels) from this many bytes (recon_worker/memory.py).
MEMORY_ENV = "RECON_MEMORY_BYTES"


def _env(spec: ReconstructionJobSpec, task: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "RECON_TASK", "value": task},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        # The pod's memory request in bytes, as the API server admitted it (a LimitRange default included;
        # the limit when only a limit is set; "0" when neither is): the worker sizes its capture limits by it.
        {
            "name": MEMORY_ENV,
            "valueFrom": {"resourceFieldRef": {"containerName": CONTAINER, "resource": "requests.memory"}},
        },
        # The root filesystem is read-only: temporary files and caches go to the scratch volume.
        {"name": "TMPDIR", "value": SCRATCH_PATH},
        {"name": "HOME", "value": SCRATCH_PATH},
    ]
    secret = spec.storage.credentials_secret
    if secret:
        for key in CREDENTIAL_KEYS:
            ref: dict[str, Any] = {"name": secret, "key": key}
            if key == "AWS_SESSION_TOKEN":
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def _resources(spec: ReconstructionJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    cpu = spec.resources.cpu if spec.resources.cpu is not None else settings.default_cpu
    memory = spec.resources.memory if spec.resources.memory is not None else settings.default_memory
    gpus = {spec.resources.gpu_resource_name: spec.resources.gpus} if spec.resources.gpus > 0 else {}
    return _amounts(cpu, memory, gpus)


def _amounts(cpu: object | None, memory: object | None, extended: Mapping[str, int]) -> dict[str, Any]:
    amounts: dict[str, str] = {}
    if cpu is not None:
        amounts["cpu"] = str(cpu)
    if memory is not None:
        amounts["memory"] = str(memory)
    limits = dict(amounts)
    # Extended resources (GPUs) are limits only; the API server copies them into requests.
    limits.update({name: str(count) for name, count in extended.items()})
    return {"requests": amounts, "limits": limits} if amounts else {"limits": limits}


def _pod_failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            # Preemption, eviction and node drains are the cluster's doing: retry without spending the budget.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_INVALID_INPUT]},
            },
            {"action": "Count", "onExitCodes": {"containerName": CONTAINER, "operator": "NotIn", "values": [0]}},
        ]
    }


def _container(
    spec: ReconstructionJobSpec,
    task: str,
    settings: OperatorSettings,
    command: tuple[str, ...],
    resources: dict[str, Any],
) -> dict[str, Any]:
    return {
        "name": CONTAINER,
        "image": spec.image or settings.worker_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(command),
        "env": _env(spec, task),
        "resources": resources,
        "volumeMounts": [
            {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
            {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH},
        ],
        "terminationMessagePath": TERMINATION_LOG,
        # A worker that dies before writing its JSON message still leaves the tail of its log as evidence.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def _pod_spec(
    spec: ReconstructionJobSpec, cr_name: str, container: dict[str, Any], settings: OperatorSettings
) -> dict[str, Any]:
    """The pod of either Job: identity, security, volumes; placement is added by the caller."""
    return {
        "restartPolicy": "Never",  # retries are the Job's, so each attempt's evidence stays in its own pod
        "serviceAccountName": identity_name(cr_name),
        "automountServiceAccountToken": True,  # the worker patches its own CR's status
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "fsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.resources.shm_size)}},
            {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": settings.scratch_size}},
        ],
    }


def _worker_pod(spec: ReconstructionJobSpec, cr_name: str, task: str, settings: OperatorSettings) -> dict[str, Any]:
    scheduling = spec.scheduling
    container = _container(spec, task, settings, settings.worker_command, _resources(spec, settings))
    pod = _pod_spec(spec, cr_name, container, settings)
    # The admin's placement wins over the CR's: a CR may narrow where it runs, not move off the GPU pool.
    node_selector = {**scheduling.node_selector, **settings.worker_node_selector}
    if node_selector:
        pod["nodeSelector"] = node_selector
    tolerations = copy.deepcopy(scheduling.tolerations)
    tolerations += [copy.deepcopy(default) for default in settings.worker_tolerations if default not in tolerations]
    if tolerations:
        pod["tolerations"] = tolerations
    if scheduling.affinity:
        pod["affinity"] = copy.deepcopy(scheduling.affinity)
    if scheduling.priority_class_name:
        pod["priorityClassName"] = scheduling.priority_class_name
    runtime_class = settings.worker_runtime_class_name or scheduling.runtime_class_name
    if runtime_class:
        pod["runtimeClassName"] = runtime_class
    return pod


def _poses_pod(spec: ReconstructionJobSpec, cr_name: str, task: str, settings: OperatorSettings) -> dict[str, Any]:
    """CPU only: no GPU request, and none of the CR's GPU placement (it would wait for a GPU node)."""
    resources = _amounts(settings.poses_cpu, settings.poses_memory, {})
    pod = _pod_spec(spec, cr_name, _container(spec, task, settings, settings.poses_command, resources), settings)
    if settings.poses_node_selector:
        pod["nodeSelector"] = dict(settings.poses_node_selector)
    if settings.poses_tolerations:
        pod["tolerations"] = [copy.deepcopy(t) for t in settings.poses_tolerations]
    if spec.scheduling.priority_class_name:
        pod["priorityClassName"] = spec.scheduling.priority_class_name
    return pod


def build_job(
    owner: Mapping[str, Any], spec: ReconstructionJobSpec, attempt: int, settings: OperatorSettings
) -> dict[str, Any]:
    """The batch/v1 worker Job for `attempt` (1-based) of the ReconstructionJob `owner` (its body)."""
    coords = ResourceCoordinates.of(owner)
    task = task_json(build_task(spec, coords, attempt, settings))
    labels = {**child_labels(coords.name, "worker"), ATTEMPT_LABEL: str(attempt)}
    pod = _worker_pod(spec, coords.name, task, settings)
    name = job_name(coords.name, attempt)
    # Kueue admits the Job by unsuspending it; the operator never toggles it itself.
    return _job(owner, spec, settings, name, _queue_labels(owner, spec, labels), labels, pod, suspend=_queued(spec))


def _queued(spec: ReconstructionJobSpec) -> bool:
    return bool(spec.scheduling.queue_name)


def _queue_labels(owner: Mapping[str, Any], spec: ReconstructionJobSpec, labels: Mapping[str, str]) -> dict[str, str]:
    """A Job's labels, with Kueue's queue and priority-class labels when the CR names a queue."""
    job_labels = dict(labels)
    kueue = spec.scheduling.queue_name
    if kueue:
        job_labels[KUEUE_QUEUE_LABEL] = kueue
        # Kueue reads a Job's WorkloadPriorityClass from this label: set it on the ReconstructionJob.
        priority = ((owner.get("metadata") or {}).get("labels") or {}).get(PRIORITY_CLASS_LABEL)
        if priority:
            job_labels[PRIORITY_CLASS_LABEL] = priority
    return job_labels


def build_poses_job(
    owner: Mapping[str, Any], spec: ReconstructionJobSpec, attempt: int, settings: OperatorSettings
) -> dict[str, Any]:
    """The batch/v1 CPU Job that poses the photos of `attempt` before its worker Job (`recon-worker poses`).

    Its task document is the worker Job's: the same run key, so the worker restores the poses it saved.
    With `spec.scheduling.queueName` it goes through Kueue like the worker Job (suspended, the queue's
    labels): a CPU-only Workload, admitted against the queue's cpu and memory quota.
    """
    coords = ResourceCoordinates.of(owner)
    task = task_json(build_task(spec, coords, attempt, settings))
    labels = {**child_labels(coords.name, "poses"), ATTEMPT_LABEL: str(attempt)}
    pod = _poses_pod(spec, coords.name, task, settings)
    name = poses_job_name(coords.name, attempt)
    return _job(owner, spec, settings, name, _queue_labels(owner, spec, labels), labels, pod, suspend=_queued(spec))


def _job(
    owner: Mapping[str, Any],
    spec: ReconstructionJobSpec,
    settings: OperatorSettings,
    name: str,
    job_labels: dict[str, str],
    pod_labels: dict[str, str],
    pod: dict[str, Any],
    *,
    suspend: bool,
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": owner["metadata"]["namespace"], "labels": job_labels},
        "spec": {
            "backoffLimit": spec.backoff_limit,
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "podFailurePolicy": _pod_failure_policy(),
            "podReplacementPolicy": "Failed",  # never two workers at once on a terminating pod's GPU
            "suspend": suspend,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod},
        },
    }
    kopf.adopt(job, owner=kopf.Body(cast("kopf.RawBody", dict(owner))), nested=["spec.template"])
    return job
