"""Decide, purely, what to do about one ReconstructionJob and which status it should show.

Inputs are what the operator observed (the CR, the Jobs and Pods it owns, the time); the output is one
action for the thin layer in `handlers.py` to carry out plus the operator-owned status fields. Running
it twice on the same world gives the same answer, so missed events and restarts heal themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from recon_operator.labels import ATTEMPT_LABEL, COMPONENT_LABEL
from recon_operator.names import job_name, poses_job_name
from recon_operator.phases import (
    TERMINAL,
    Observation,
    Phase,
    Reason,
    conditions,
    observe_job,
    parse_time,
    quality_findings,
    replacing_pod,
)
from recon_operator.spec import ReconstructionJobSpec
from recon_operator.workloads import Admission, admission_of, workload_of

Obj = Mapping[str, Any]
# Status fields the operator owns; the worker owns the rest (progress, stage, metrics, worker).
OWNED_FIELDS = (
    "phase",
    "reason",
    "message",
    "conditions",
    "attempts",
    "jobName",
    "startTime",
    "completionTime",
    "observedGeneration",
    "outputs",
)
# The operator's own record of the fields above, on the CR's metadata. The worker's token may patch only
# the status subresource (which ignores metadata), so this record is what the operator wrote, and the
# status it decides from; owned fields in .status that differ from it are restored.
RECORD_ANNOTATION = "recon.dev/operator-status"


class Action(StrEnum):
    NONE = "None"
    CREATE_JOB = "CreateJob"  # preflight, then the worker identity and the poses Job or worker Job of `attempt`
    CREATE_POSED_JOB = "CreatePosedJob"  # the poses Job of `attempt` succeeded: its worker Job, no new preflight
    DELETE_JOB = "DeleteJob"  # stop the current attempt's Job (suspend, cancel, or failed while its pod runs)
    CHECK_OUTPUTS = "CheckOutputs"  # the Job completed: Succeeded only if the manifest is published
    CONFIRM_JOB_GONE = "ConfirmJobGone"  # the expected Job is not in the cache: ask the API before cancelling
    DELETE_RESOURCE = "DeleteResource"  # spec.ttlSecondsAfterFinished has run out


@dataclass(frozen=True)
class Decision:
    action: Action
    attempt: int  # the attempt the action and status are about (0: none yet)
    observation: Observation | None = None
    status: dict[str, Any] = field(default_factory=dict)  # operator-owned status fields, complete


def rfc3339(moment: datetime) -> str:
    """UTC, whole seconds, as Kubernetes writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def attempt_of(job: Obj) -> int:
    value = ((job.get("metadata") or {}).get("labels") or {}).get(ATTEMPT_LABEL, "0")
    return int(value) if str(value).isdigit() else 0


# FailureTarget and SuccessCriteriaMet come first, while the last pods terminate: the outcome is decided.
FINISHED_CONDITIONS = ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet")


def is_finished(job: Obj) -> bool:
    """The Job controller has decided the outcome (its pods stay, as evidence, until the Job's TTL)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in FINISHED_CONDITIONS and condition.get("status") == "True":
            return True
    return False


def owned_by(owner: Obj, objects: Sequence[Obj]) -> list[Obj]:
    """The `objects` that name `owner` (by uid) among their ownerReferences.

    Labels name a ReconstructionJob by name only, so right after one is deleted and re-created under the
    same name (`kubectl recon retry`) its old Jobs, which garbage collection has yet to remove, carry the
    new one's labels: they belong to the old uid and say nothing about the new resource.
    """
    uid = (owner.get("metadata") or {}).get("uid")
    return [obj for obj in objects if uid in {ref.get("uid") for ref in _owner_references(obj)}]


def _owner_references(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def pods_of(job: Obj, pods: Sequence[Obj]) -> list[Obj]:
    return owned_by(job, pods)


def status_fields(
    body: Obj,
    spec: ReconstructionJobSpec,
    phase: Phase,
    reason: str,
    message: str,
    attempt: int,
    now: datetime,
    started_at: str | None = None,
    finished_at: str | None = None,
    outputs: Mapping[str, Any] | None = None,
    admission: Admission | None = None,
    job: str | None = None,
) -> dict[str, Any]:
    """The complete operator-owned status for `phase`, keeping earlier times and condition transitions.

    `outputs` (from the verified manifest) shows only on Succeeded; a Succeeded status keeps its own.
    `job`: the Job the status is about when it is not the attempt's worker Job (its poses Job).
    """
    status = body.get("status") or {}
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    # Watches and listings render times differently ("Z" or "+00:00"): one form keeps the status stable.
    started_at = rfc3339(parse_time(started_at)) if started_at else None
    finished_at = rfc3339(parse_time(finished_at)) if finished_at else None
    quality = quality_findings(spec.gates, status.get("metrics"))
    fields: dict[str, Any] = {
        "phase": phase.value,
        "reason": reason,
        "message": message[:4096],
        "conditions": conditions(
            phase, reason, message, quality, status.get("conditions") or [], rfc3339(now), generation, admission
        ),
        "attempts": attempt,
        "jobName": job or (job_name(body["metadata"]["name"], attempt) if attempt else None),
        "startTime": status.get("startTime") or started_at,
        "completionTime": None,
        "observedGeneration": generation,
        "outputs": None,
    }
    if phase == Phase.SUCCEEDED:
        kept = status.get("outputs") if status.get("phase") == Phase.SUCCEEDED else None
        fields["outputs"] = dict(outputs) if outputs is not None else kept
    if phase in TERMINAL:
        fields["completionTime"] = status.get("completionTime") or finished_at or rfc3339(now)
    return fields


def from_observation(
    body: Obj, spec: ReconstructionJobSpec, obs: Observation, attempt: int, now: datetime
) -> dict[str, Any]:
    return status_fields(
        body,
        spec,
        obs.phase,
        obs.reason,
        obs.message,
        attempt,
        now,
        obs.started_at,
        obs.finished_at,
        obs.outputs,
        obs.admission,
    )


def record_of(body: Obj) -> dict[str, Any] | None:
    """The operator-owned status last recorded on `body` (RECORD_ANNOTATION); None when there is none.

    A record names the uid of the CR it was written for: one set at creation (before the uid exists) or
    copied from another CR is not this operator's record of this CR, and is ignored.
    """
    meta = body.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(RECORD_ANNOTATION)
    if not text:
        return None
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("uid") != meta.get("uid"):
        return None
    return {key: record.get(key) for key in OWNED_FIELDS}


def trusted(body: Obj, jobs: Sequence[Obj]) -> dict[str, Any]:
    """`body` with its operator-owned status fields replaced by the operator's record.

    Without a record the owned fields are dropped as soon as a worker Job exists (a worker may have
    written them); a CR with neither (new, or from an operator before the record) keeps its status.
    """
    status = dict(body.get("status") or {})
    record = record_of(body)
    if record is None and not jobs:
        return dict(body)
    worker = {key: value for key, value in status.items() if key not in OWNED_FIELDS}
    owned = {key: value for key, value in (record or {}).items() if value is not None}
    return {**body, "status": {**worker, **owned}}


def record_annotation(status: Obj, uid: str) -> str:
    """RECORD_ANNOTATION's value for the operator-owned `status` of the CR with `uid`."""
    return json.dumps({**owned_status(status), "uid": uid}, sort_keys=True, separators=(",", ":"))


def decide(
    body: Obj,
    jobs: Sequence[Obj],
    pods: Sequence[Obj],
    now: datetime,
    create_refusals: Mapping[str, str] | None = None,
    workloads: Sequence[Obj] = (),
) -> Decision:
    """The next step for the ReconstructionJob `body`, given the Jobs and Pods it owns (and Kueue's Workloads).

    An attempt whose photos need poses has two Jobs in turn: the CPU poses Job, then (once it succeeded)
    the worker Job; the worker Job, once it exists, is the one the attempt is about.
    `create_refusals`: Job name -> the Job controller's latest FailedCreate message, where one was looked up.
    """
    spec = ReconstructionJobSpec.model_validate(body["spec"])
    status = body.get("status") or {}
    name = body["metadata"]["name"]
    # A Job can exist before the status that records it (crash between the two): trust the larger.
    attempt = max([int(status.get("attempts") or 0), *(attempt_of(job) for job in jobs)])
    wanted = job_name(name, attempt) if attempt else None
    current = next((job for job in jobs if job["metadata"]["name"] == wanted), None)
    posing = None
    if current is None and attempt:
        posing = next((job for job in jobs if job["metadata"]["name"] == poses_job_name(name, attempt)), None)
    stage = current if current is not None else posing  # the attempt's Job now in charge, if any
    phase = Phase(status["phase"]) if status.get("phase") in Phase.__members__.values() else None

    if phase in TERMINAL:
        kept = status_fields(
            body, spec, phase, status.get("reason", ""), status.get("message", ""), attempt, now, job=_job_of(status)
        )
        if stage is not None and not is_finished(stage):
            return Decision(Action.DELETE_JOB, attempt, status=kept)
        finished = status.get("completionTime")
        ttl = spec.ttl_seconds_after_finished
        if ttl is not None and finished and now >= parse_time(finished) + timedelta(seconds=ttl):
            return Decision(Action.DELETE_RESOURCE, attempt, status=kept)
        return Decision(Action.NONE, attempt, status=kept)

    stopping = stage is not None and not is_finished(stage)  # a pod of it may still run
    stage_name = stage["metadata"]["name"] if stage is not None else None
    if spec.cancel and not (current is not None and is_finished(current)):
        # Cancelled is terminal: from the next reconcile on, the branch above deletes a Job still running.
        message = "spec.cancel is true: the job was cancelled" + (f" and Job {stage_name} is stopped" if stage else "")
        cancelled = status_fields(body, spec, Phase.CANCELLED, Reason.CANCEL_REQUESTED, message, attempt, now)
        return Decision(Action.DELETE_JOB if stopping else Action.NONE, attempt, status=cancelled)

    if stage is not None and (stage.get("metadata") or {}).get("deletionTimestamp"):
        # The Job is going away. Ours (suspend): stay Suspended until it is gone, then resume creates the
        # next attempt. Someone else's: the attempt is cancelled.
        if spec.suspend or phase == Phase.SUSPENDED:
            message = "spec.suspend is true: the worker is stopped and its GPU released"
            if not spec.suspend:
                message = f"resuming once Job {stage_name} has finished terminating"
            suspended = status_fields(body, spec, Phase.SUSPENDED, Reason.SUSPENDED, message, attempt, now)
            return Decision(Action.NONE, attempt, status=suspended)
        message = f"{_kind(stage)} Job {stage_name} was deleted before it finished"
        cancelled = status_fields(body, spec, Phase.CANCELLED, Reason.JOB_DELETED, message, attempt, now)
        return Decision(Action.NONE, attempt, status=cancelled)

    if spec.suspend and not (current is not None and is_finished(current)):
        message = "spec.suspend is true: the worker is stopped and its GPU released"
        suspended = status_fields(body, spec, Phase.SUSPENDED, Reason.SUSPENDED, message, attempt, now)
        return Decision(Action.DELETE_JOB if stopping else Action.NONE, attempt, status=suspended)

    if current is None and posing is not None:
        admission = admission_of(workload_of(posing, workloads)) if spec.scheduling.queue_name else None
        return _posing(body, spec, posing, pods, attempt, now, admission)

    if current is None:
        if attempt == 0 or phase == Phase.SUSPENDED:
            message = f"creating Job {job_name(name, attempt + 1)}"
            created = status_fields(body, spec, Phase.PENDING, Reason.JOB_CREATED, message, attempt + 1, now)
            return Decision(Action.CREATE_JOB, attempt + 1, status=created)
        gone = _job_of(status) or wanted
        kind = "poses" if gone == poses_job_name(name, attempt) else "worker"
        message = f"{kind} Job {gone} was deleted before it finished"
        cancelled = status_fields(body, spec, Phase.CANCELLED, Reason.JOB_DELETED, message, attempt, now)
        return Decision(Action.CONFIRM_JOB_GONE, attempt, status=cancelled)

    refusal = (create_refusals or {}).get(current["metadata"]["name"])
    admission = admission_of(workload_of(current, workloads)) if spec.scheduling.queue_name else None
    job_pods = pods_of(current, pods)
    observation = observe_job(current, job_pods, now, spec.pending_deadline_seconds, refusal, admission=admission)
    if (
        phase == Phase.RUNNING
        and _job_of(status) == current["metadata"]["name"]
        and observation.phase in (Phase.PENDING, Phase.QUEUED)
        and not replacing_pod(current, job_pods)
    ):
        # No pod of this Job stopped, yet none runs: the view lacks the pod Running was decided from (the
        # Pods' watch behind the Jobs', or a listing taken before the decision that wrote Running). Running
        # stays until a view shows the pod again, or shows it stopped.
        message = str(status.get("message") or "")
        held = status_fields(body, spec, Phase.RUNNING, Reason.WORKER_RUNNING, message, attempt, now)
        return Decision(Action.NONE, attempt, status=held)
    derived = from_observation(body, spec, observation, attempt, now)
    if observation.phase == Phase.SUCCEEDED:
        return Decision(Action.CHECK_OUTPUTS, attempt, observation, derived)
    if observation.phase == Phase.FAILED and observation.job_active:
        return Decision(Action.DELETE_JOB, attempt, observation, derived)
    return Decision(Action.NONE, attempt, observation, derived)


def _job_of(status: Obj) -> str | None:
    return str(status["jobName"]) if status.get("jobName") else None


def _kind(job: Obj) -> str:
    labels = (job.get("metadata") or {}).get("labels") or {}
    return "poses" if labels.get(COMPONENT_LABEL) == "poses" else "worker"


def _posing(
    body: Obj,
    spec: ReconstructionJobSpec,
    job: Obj,
    pods: Sequence[Obj],
    attempt: int,
    now: datetime,
    admission: Admission | None = None,
) -> Decision:
    """The attempt's poses Job, before its worker Job exists: Posing while it waits or runs, then the worker
    Job (CREATE_POSED_JOB), or Failed with its typed reason (PosesUnrecoverable: too few photos registered).
    A poses Job submitted to a Kueue queue is Queued, with Kueue's words (`admission`), until admitted."""
    name = job["metadata"]["name"]
    observation = observe_job(job, pods_of(job, pods), now, spec.pending_deadline_seconds, admission=admission)
    if observation.phase == Phase.SUCCEEDED:
        worker = job_name(body["metadata"]["name"], attempt)
        message = f"poses Job {name} posed the photos; creating Job {worker}"
        created = status_fields(
            body, spec, Phase.PENDING, Reason.POSES_ESTIMATED, message, attempt, now, observation.started_at
        )
        return Decision(Action.CREATE_POSED_JOB, attempt, status=created)
    if observation.phase == Phase.FAILED:
        failed = replace(observation, message=f"poses Job {name}: {observation.message}")
        derived = from_observation(body, spec, failed, attempt, now) | {"jobName": name}
        action = Action.DELETE_JOB if observation.job_active else Action.NONE
        return Decision(action, attempt, failed, derived)
    # Waiting (pod pending, unschedulable) or running: the reason is the pod's, the phase Posing; waiting for
    # Kueue (the Job suspended) is Queued, as for the worker Job.
    queued = observation.reason in (Reason.WAITING_FOR_ADMISSION, Reason.PREEMPTED)
    phase = Phase.QUEUED if queued else Phase.POSING
    reason = Reason.ESTIMATING_POSES if observation.phase == Phase.RUNNING else observation.reason
    message = f"poses Job {name}: {observation.message}"
    posing = status_fields(
        body, spec, phase, reason, message, attempt, now, observation.started_at, admission=admission, job=name
    )
    return Decision(Action.NONE, attempt, replace(observation, phase=phase, reason=reason), posing)


def owned_status(status: Obj) -> dict[str, Any]:
    """The operator-owned part of a CR's status, for change detection."""
    return {key: status.get(key) for key in OWNED_FIELDS}
