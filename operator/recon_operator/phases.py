"""Observed worker Job and Pods → phase, reason and message; status conditions. Pure functions.

The operator never guesses: each phase is read from what Kubernetes reports (Job conditions, pod
phases, container states, scheduler conditions) and the worker's JSON termination message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from recon_operator.jobspec import CONTAINER, EXIT_INVALID_INPUT, EXIT_NODE_UNFIT
from recon_operator.spec import Gates
from recon_operator.workloads import Admission

Obj = Mapping[str, Any]


class Phase(StrEnum):
    PENDING = "Pending"
    POSING = "Posing"  # the CPU Job poses the photos by structure from motion; no GPU is held yet
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    CANCELLED = "Cancelled"


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


class Reason(StrEnum):
    JOB_CREATED = "JobCreated"
    REPLACING = "Replacing"  # a deleted namesake's Job or identity awaits garbage collection; retried
    ESTIMATING_POSES = "EstimatingPoses"  # the poses Job's pod runs structure from motion
    POSES_ESTIMATED = "PosesEstimated"  # the poses Job succeeded: the worker Job of the attempt is created
    POSES_UNRECOVERABLE = "PosesUnrecoverable"  # too few photos registered (the worker's exit 2, its reason)
    WAITING_FOR_ADMISSION = "WaitingForAdmission"  # suspended Job, waiting for Kueue
    PREEMPTED = "Preempted"  # Kueue evicted the running Job for a higher-priority one; it waits again
    UNSCHEDULABLE = "Unschedulable"
    CONTAINER_CREATING = "ContainerCreating"
    WORKER_RUNNING = "WorkerRunning"
    SUCCEEDED = "Succeeded"
    SUSPENDED = "Suspended"
    JOB_DELETED = "JobDeleted"
    CANCEL_REQUESTED = "CancelRequested"
    INPUTS_INVALID = "InputsInvalid"
    STORAGE_UNREACHABLE = "StorageUnreachable"
    INSUFFICIENT_GPU_MEMORY = "InsufficientGPUMemory"
    OOM_KILLED = "OOMKilled"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    PENDING_DEADLINE_EXCEEDED = "PendingDeadlineExceeded"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    IMAGE_PULL_FAILED = "ImagePullFailed"
    EVICTED = "Evicted"
    OUTPUTS_MISSING = "OutputsMissing"
    NAME_CONFLICT = "NameConflict"  # a ServiceAccount, Role, RoleBinding or Job of our name is not this CR's
    JOB_REJECTED = "JobRejected"  # the API server refused the Job the spec describes
    POLICY_VIOLATION = "PolicyViolation"  # the spec asks for more than the operator's settings allow
    OUTPUT_CONFLICT = "OutputConflict"  # another active ReconstructionJob publishes into an overlapping prefix


# Waiting reasons after which kubelet keeps failing the same way: fail fast instead of holding a GPU.
IMAGE_PULL_FAILURES = frozenset({"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


@dataclass(frozen=True)
class Observation:
    """What the current attempt's Job and Pods say."""

    phase: Phase
    reason: Reason
    message: str
    started_at: str | None = None  # RFC 3339, when a worker container first ran
    finished_at: str | None = None  # RFC 3339, when the Job completed or failed
    job_active: bool = False  # the Job still holds (or waits for) a pod that should be stopped on failure
    pod_failures: int = 0
    outputs: Mapping[str, Any] | None = None  # status.outputs, from the verified manifest (Succeeded only)
    admission: Admission | None = None  # what Kueue's Workload says, for a Job submitted to a queue


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _condition(obj: Obj, kind: str) -> Obj | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _worker_status(pod: Obj) -> Obj:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return status
    return {}


def _terminated(pod: Obj) -> Obj | None:
    state = _worker_status(pod).get("state") or {}
    terminated: Obj | None = state.get("terminated")
    return terminated


def _created(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


def worker_reason(terminated: Obj | None) -> str | None:
    """The `reason` of the worker's JSON termination message, when it wrote one."""
    try:
        data = json.loads(str((terminated or {}).get("message") or "").strip())
    except json.JSONDecodeError:
        return None
    return str(data["reason"]) if isinstance(data, dict) and data.get("reason") else None


def worker_message(terminated: Obj | None) -> str:
    """The worker's termination message `{"reason", "message"}` as `reason: message` (raw text otherwise)."""
    if not terminated:
        return ""
    text = str(terminated.get("message") or "").strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(data, dict):
        reason, message = data.get("reason"), data.get("message")
        return ": ".join(str(part) for part in (reason, message) if part)
    return text


def first_start(pods: Sequence[Obj]) -> str | None:
    """Earliest time a worker container started running, over all pods of the Job."""
    times = []
    for pod in pods:
        state = _worker_status(pod).get("state") or {}
        for key in ("running", "terminated"):
            started = (state.get(key) or {}).get("startedAt")
            if started:
                times.append(started)
    return min(times, key=parse_time) if times else None


def _failed_pods(pods: Sequence[Obj]) -> list[Obj]:
    failed = [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Failed"]
    return sorted(failed, key=_created)


def _failure(job: Obj, condition: Obj, pods: Sequence[Obj]) -> tuple[Reason, str]:
    """Typed reason and message of a failed Job, from its condition and its last failed pod."""
    job_reason = condition.get("reason") or ""
    failed = _failed_pods(pods)
    last = failed[-1] if failed else None
    terminated = _terminated(last) if last else None
    evidence = worker_message(terminated)
    exit_code = terminated.get("exitCode") if terminated else None
    if job_reason == "DeadlineExceeded":
        reason = Reason.DEADLINE_EXCEEDED
    elif exit_code == EXIT_INVALID_INPUT:
        # Structure from motion that registers too few photos is the input's fault too, by its own name.
        unposed = worker_reason(terminated) == Reason.POSES_UNRECOVERABLE
        reason = Reason.POSES_UNRECOVERABLE if unposed else Reason.INPUTS_INVALID
    elif exit_code == EXIT_NODE_UNFIT:
        reason = Reason.INSUFFICIENT_GPU_MEMORY
    elif terminated and terminated.get("reason") == "OOMKilled":
        reason = Reason.OOM_KILLED
    elif last and (last.get("status") or {}).get("reason") == "Evicted":
        reason = Reason.EVICTED
    else:
        reason = Reason.BACKOFF_LIMIT_EXCEEDED
    parts = []
    if last is not None:
        pod_name = last["metadata"]["name"]
        code = f" exited with code {exit_code}" if exit_code is not None else " failed"
        parts.append(f"pod {pod_name}{code}" + (f": {evidence}" if evidence else ""))
        # The kubelet's own words when it evicted the pod (its container then shows only a SIGKILL).
        if (terminated is None or reason == Reason.EVICTED) and (last.get("status") or {}).get("message"):
            parts.append(str(last["status"]["message"]))
    if condition.get("message"):
        parts.append(f"Job: {condition['message']}")
    return reason, "; ".join(parts) or f"worker Job failed ({job_reason or 'no reason given'})"


def observe_job(
    job: Obj,
    pods: Sequence[Obj],
    now: datetime,
    pending_deadline_s: int | None,
    create_refusal: str | None = None,
    admission: Admission | None = None,
) -> Observation:
    """Phase of one attempt, from its Job, the Job's pods and (queued Jobs) Kueue's Workload.

    `create_refusal`: the message of the Job controller's latest FailedCreate Event for this Job (the API
    refused its pod, e.g. a missing PriorityClass or RuntimeClass), when the act layer found one.
    """
    observation = _observe_job(job, pods, now, pending_deadline_s, create_refusal, admission)
    if admission is None:
        return observation
    message = observation.message
    if admission.admitted and observation.phase in (Phase.PENDING, Phase.RUNNING):
        message = f"{message}; {admission.describe()}"
    return replace(observation, message=message, admission=admission)


def _observe_job(
    job: Obj,
    pods: Sequence[Obj],
    now: datetime,
    pending_deadline_s: int | None,
    create_refusal: str | None,
    admission: Admission | None,
) -> Observation:
    status = job.get("status") or {}
    started_at = first_start(pods)
    failures = int(status.get("failed") or 0)
    complete = _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet")
    if complete:
        finished = status.get("completionTime") or complete.get("lastTransitionTime")
        return Observation(Phase.SUCCEEDED, Reason.SUCCEEDED, "worker finished", started_at, finished, False, failures)
    # FailureTarget comes first (pods still terminating), then Failed: either is final.
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if failed:
        reason, message = _failure(job, failed, pods)
        finished = failed.get("lastTransitionTime")
        return Observation(Phase.FAILED, reason, message, started_at, finished, False, failures)

    live = sorted((p for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running")), key=_created)
    running = [p for p in live if p["status"]["phase"] == "Running"]
    if running:
        pod = running[-1]
        where = (pod.get("spec") or {}).get("nodeName") or "?"
        return Observation(
            Phase.RUNNING,
            Reason.WORKER_RUNNING,
            f"pod {pod['metadata']['name']} on {where}",
            started_at,
            None,
            True,
            failures,
        )
    for pod in live:
        waiting = (_worker_status(pod).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_FAILURES:
            image = _worker_status(pod).get("image") or "?"
            detail = waiting.get("message") or waiting["reason"]
            return Observation(
                Phase.FAILED, Reason.IMAGE_PULL_FAILED, f"image {image}: {detail}", started_at, None, True, failures
            )

    finished = _succeeded_pods(pods)
    if finished and not live:
        # The worker exited 0; the Job controller marks the Job complete moments later. Still Running
        # until then (not back to Pending), and Succeeded only with the Job's own condition.
        return Observation(
            Phase.RUNNING,
            Reason.WORKER_RUNNING,
            f"pod {finished[-1]['metadata']['name']} finished; waiting for the Job to complete",
            started_at,
            None,
            True,
            failures,
        )

    observation = _waiting(job, live, create_refusal, admission)
    created = _created(job)
    if pending_deadline_s is not None and started_at is None and created:
        waited = (now - parse_time(created)).total_seconds()
        if waited > pending_deadline_s:
            limit = f"limit {pending_deadline_s} s"
            message = f"not running {waited:.0f} s after the Job was created ({limit}); {observation.message}"
            return Observation(Phase.FAILED, Reason.PENDING_DEADLINE_EXCEEDED, message, None, None, True, failures)
    return Observation(observation.phase, observation.reason, observation.message, started_at, None, True, failures)


def replacing_pod(job: Obj, pods: Sequence[Obj]) -> bool:
    """The Job stopped a pod of it (failed, evicted, deleted), or is suspended (Kueue preempted it).

    Only then can a worker Job already seen Running wait again for a pod: a pod never goes from Running
    back to Pending, so a view of the Job that shows no such stop but no running pod either lacks the pod
    that was seen running (it is older than the view Running was decided from).
    """
    if (job.get("spec") or {}).get("suspend") or int((job.get("status") or {}).get("failed") or 0):
        return True
    return any(
        (pod.get("status") or {}).get("phase") == "Failed" or (pod.get("metadata") or {}).get("deletionTimestamp")
        for pod in pods
    )


def _succeeded_pods(pods: Sequence[Obj]) -> list[Obj]:
    done = [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Succeeded"]
    return sorted(done, key=_created)


def _waiting(
    job: Obj, live: Sequence[Obj], create_refusal: str | None = None, admission: Admission | None = None
) -> Observation:
    spec = job.get("spec") or {}
    if spec.get("suspend") and not live:
        if admission is None:
            return Observation(Phase.QUEUED, Reason.WAITING_FOR_ADMISSION, "Job is suspended until its queue admits it")
        # Kueue's own words: why it is not admitted (quota, flavors), and why it was evicted if it was.
        reason = Reason.PREEMPTED if admission.evicted_reason == "Preempted" else Reason.WAITING_FOR_ADMISSION
        if admission.admitted:
            return Observation(Phase.QUEUED, reason, f"{admission.describe()}; waiting for the Job to start")
        return Observation(Phase.QUEUED, reason, admission.describe())
    if create_refusal and not live:
        message = f"Job {job['metadata']['name']} cannot create its pod: {create_refusal}"
        return Observation(Phase.QUEUED, Reason.UNSCHEDULABLE, message)
    for pod in live:
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                message = condition.get("message") or condition.get("reason") or "not scheduled"
                return Observation(Phase.QUEUED, Reason.UNSCHEDULABLE, f"pod {pod['metadata']['name']}: {message}")
    for pod in live:
        waiting = (_worker_status(pod).get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            detail = waiting.get("message") or waiting["reason"]
            return Observation(Phase.PENDING, Reason.CONTAINER_CREATING, f"pod {pod['metadata']['name']}: {detail}")
    if live:
        return Observation(Phase.PENDING, Reason.CONTAINER_CREATING, f"pod {live[-1]['metadata']['name']} is starting")
    return Observation(Phase.PENDING, Reason.JOB_CREATED, f"Job {job['metadata']['name']} created, waiting for its pod")


def confirm_outputs(
    observation: Observation, manifest_uri: str, problem: str | None, outputs: Mapping[str, Any] | None = None
) -> Observation:
    """Succeeded needs the published manifest, verified: a Job that exits 0 without one did not deliver.

    `problem`: why the manifest does not verify (missing, unparseable, a listed file absent or of another
    size), None when it does; `outputs`: status.outputs derived from it.
    """
    if observation.phase != Phase.SUCCEEDED:
        return observation
    if problem is None:
        return replace(observation, outputs=outputs)
    message = f"worker exited 0 but {manifest_uri} {problem}"
    return Observation(Phase.FAILED, Reason.OUTPUTS_MISSING, message, observation.started_at, observation.finished_at)


# ---- conditions ----------------------------------------------------------------------------------


def quality_findings(gates: Gates, metrics: Mapping[str, Any] | None) -> list[str] | None:
    """Gates the worker's reported metrics fail (empty: all pass); None while no metrics are reported."""
    if not metrics:
        return None
    findings = []
    psnr, iou, watertight = metrics.get("psnr"), metrics.get("maskIoU"), metrics.get("watertight")
    if gates.min_psnr is not None and psnr is not None and psnr < gates.min_psnr:
        findings.append(f"PSNR {psnr:.2f} dB < minPSNR {gates.min_psnr:g} dB")
    if gates.min_mask_iou is not None and iou is not None and iou < gates.min_mask_iou:
        findings.append(f"mask IoU {iou:.3f} < minMaskIoU {gates.min_mask_iou:g}")
    if gates.require_watertight and watertight is False:
        findings.append("mesh is not watertight (requireWatertight)")
    return findings


def conditions(
    phase: Phase,
    reason: str,
    message: str,
    quality: list[str] | None,
    previous: Sequence[Obj],
    now: str,
    generation: int,
    admission: Admission | None = None,
) -> list[dict[str, Any]]:
    """Ready, Running, Succeeded, Failed and QualityDegraded; lastTransitionTime moves only when status does.

    A Job submitted to a Kueue queue also has `Admitted`, with Kueue's reason and message (the
    ClusterQueue and flavors once admitted); it keeps its last value when no Workload is observed.
    """
    old = {c.get("type"): c for c in previous}
    wanted = [
        ("Ready", phase == Phase.SUCCEEDED),
        ("Running", phase == Phase.RUNNING),
        ("Succeeded", phase == Phase.SUCCEEDED),
        ("Failed", phase == Phase.FAILED),
    ]
    result = []
    for kind, holds in wanted:
        result.append(
            _condition_entry(kind, "True" if holds else "False", reason, message, old.get(kind), now, generation)
        )
    if quality is None:
        degraded = ("Unknown", "NoMetrics", "the worker has not reported quality metrics yet")
    elif quality:
        degraded = ("True", "GatesFailed", "; ".join(quality))
    else:
        degraded = ("False", "GatesPassed", "all quality gates pass")
    result.append(_condition_entry("QualityDegraded", *degraded, old.get("QualityDegraded"), now, generation))
    if admission is not None:
        admitted = "True" if admission.admitted else "False"
        entry = _condition_entry(
            "Admitted", admitted, admission.reason, admission.describe(), old.get("Admitted"), now, generation
        )
        result.append(entry)
    elif old.get("Admitted"):
        result.append(dict(old["Admitted"]))
    return result


def _condition_entry(
    kind: str, status: str, reason: str, message: str, old: Obj | None, now: str, generation: int
) -> dict[str, Any]:
    moved = old is None or old.get("status") != status
    since = now if moved or not old or not old.get("lastTransitionTime") else old["lastTransitionTime"]
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }
