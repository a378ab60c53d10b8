"""decide() for a photo capture: the CPU poses Job runs before the worker Job of the same attempt."""

from __future__ import annotations

import json
from typing import Any

from recon_operator.phases import Phase, Reason
from recon_operator.reconcile import Action, decide
from tests.unit.operator.test_reconcile import NOW, cr, job, running_pod


def poses_job(attempt: int, *conds: str) -> dict[str, Any]:
    body = job(attempt, *conds)
    body["metadata"] |= {
        "name": f"bunny-{attempt}-poses",
        "uid": f"p{attempt}",
        "labels": {"recon.dev/attempt": str(attempt), "app.kubernetes.io/component": "poses"},
    }
    return body


def poses_pod(attempt: int, state: dict[str, Any], phase: str = "Running") -> dict[str, Any]:
    pod = running_pod(attempt)
    pod["metadata"] |= {"name": f"bunny-{attempt}-poses-x", "ownerReferences": [{"uid": f"p{attempt}"}]}
    pod["status"] = {"phase": phase, "containerStatuses": [{"name": "worker", "state": state}]}
    return pod


POSING = {"attempts": 1, "phase": "Posing", "jobName": "bunny-1-poses"}


def test_a_running_poses_job_shows_posing_and_creates_nothing() -> None:
    started = {"running": {"startedAt": "2026-01-01T11:59:05Z"}}
    decision = decide(cr(POSING), [poses_job(1)], [poses_pod(1, started)], NOW)
    assert decision.action == Action.NONE
    status = decision.status
    assert (status["phase"], status["reason"]) == (Phase.POSING, Reason.ESTIMATING_POSES)
    assert status["jobName"] == "bunny-1-poses" and status["startTime"] == "2026-01-01T11:59:05Z"
    assert "poses Job bunny-1-poses: pod bunny-1-poses-x on n" in status["message"]
    # No GPU is held while posing: the Running condition stays False.
    assert {c["type"]: c["status"] for c in status["conditions"]}["Running"] == "False"


def test_a_waiting_poses_job_keeps_the_pods_reason() -> None:
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    decision = decide(cr(POSING), [poses_job(1)], [poses_pod(1, waiting, "Pending")], NOW)
    assert (decision.status["phase"], decision.status["reason"]) == (Phase.POSING, Reason.CONTAINER_CREATING)


def test_a_queued_poses_job_shows_kueues_reason_then_posing_once_admitted() -> None:
    pending = {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": "insufficient quota for cpu"}
    workload = {
        "metadata": {"name": "w1", "ownerReferences": [{"kind": "Job", "uid": "p1"}]},
        "status": {"conditions": [pending]},
    }
    body = cr(POSING, scheduling={"queueName": "q"})
    suspended = poses_job(1)
    suspended["spec"]["suspend"] = True
    decision = decide(body, [suspended], [], NOW, workloads=[workload])
    status = decision.status
    assert decision.action == Action.NONE and status["jobName"] == "bunny-1-poses"
    assert (status["phase"], status["reason"]) == (Phase.QUEUED, Reason.WAITING_FOR_ADMISSION)
    assert status["message"] == "poses Job bunny-1-poses: Kueue: Pending: insufficient quota for cpu"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Admitted"] == "False"

    admitted = {"type": "Admitted", "status": "True", "reason": "Admitted", "message": ""}
    workload["status"] = {
        "conditions": [admitted],
        "admission": {"clusterQueue": "cq", "podSetAssignments": [{"name": "main", "flavors": {"cpu": "cpu"}}]},
    }
    started = {"running": {"startedAt": "2026-01-01T11:59:05Z"}}
    decision = decide(body, [poses_job(1)], [poses_pod(1, started)], NOW, workloads=[workload])
    status = decision.status
    assert (status["phase"], status["reason"]) == (Phase.POSING, Reason.ESTIMATING_POSES)
    assert "admitted by Kueue ClusterQueue cq" in status["message"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Admitted"] == "True"


def test_a_succeeded_poses_job_creates_the_worker_job_of_the_same_attempt() -> None:
    decision = decide(cr(POSING), [poses_job(1, "Complete")], [], NOW)
    assert (decision.action, decision.attempt) == (Action.CREATE_POSED_JOB, 1)
    status = decision.status
    assert (status["phase"], status["reason"], status["jobName"]) == (Phase.PENDING, Reason.POSES_ESTIMATED, "bunny-1")


def test_once_the_worker_job_exists_it_is_the_one_observed() -> None:
    decision = decide(cr({**POSING, "phase": "Pending"}), [poses_job(1, "Complete"), job(1)], [running_pod(1)], NOW)
    assert decision.action == Action.NONE
    assert (decision.status["phase"], decision.status["jobName"]) == (Phase.RUNNING, "bunny-1")


def unposed_pod() -> dict[str, Any]:
    message = json.dumps({"reason": "PosesUnrecoverable", "message": "3 of 20 photos registered (need 80 %)"})
    terminated = {"terminated": {"exitCode": 2, "message": message, "startedAt": "2026-01-01T11:59:05Z"}}
    return poses_pod(1, terminated, "Failed")


def test_too_few_registered_photos_fail_for_good_with_poses_unrecoverable() -> None:
    decision = decide(cr(POSING), [poses_job(1, "Failed")], [unposed_pod()], NOW)
    assert decision.action == Action.NONE  # no worker Job: no GPU is ever requested
    status = decision.status
    assert (status["phase"], status["reason"]) == (Phase.FAILED, Reason.POSES_UNRECOVERABLE)
    assert status["jobName"] == "bunny-1-poses"
    assert "3 of 20 photos registered" in status["message"] and status["completionTime"]
    # Terminal: the next reconcile keeps it, and never creates the worker Job.
    again = decide(cr(status), [poses_job(1, "Failed")], [unposed_pod()], NOW)
    assert again.action == Action.NONE and again.status["reason"] == Reason.POSES_UNRECOVERABLE


def test_cancel_while_posing_stops_the_poses_job() -> None:
    decision = decide(cr(POSING, cancel=True), [poses_job(1)], [], NOW)
    assert decision.action == Action.DELETE_JOB and decision.status["phase"] == Phase.CANCELLED
    assert "Job bunny-1-poses is stopped" in decision.status["message"]
    # Cancelled and the poses Job still there: the terminal branch keeps stopping it.
    again = decide(cr(decision.status, cancel=True), [poses_job(1)], [], NOW)
    assert again.action == Action.DELETE_JOB


def test_suspend_while_posing_stops_it_and_resume_starts_a_new_attempt() -> None:
    decision = decide(cr(POSING, suspend=True), [poses_job(1)], [], NOW)
    assert decision.action == Action.DELETE_JOB and decision.status["phase"] == Phase.SUSPENDED
    resumed = decide(cr(decision.status), [], [], NOW)
    assert (resumed.action, resumed.attempt) == (Action.CREATE_JOB, 2)


def test_suspend_after_posing_needs_nothing_deleted() -> None:
    decision = decide(cr(POSING, suspend=True), [poses_job(1, "Complete")], [], NOW)
    assert decision.action == Action.NONE and decision.status["phase"] == Phase.SUSPENDED


def test_a_poses_job_deleted_by_someone_else_cancels() -> None:
    deleted = poses_job(1)
    deleted["metadata"]["deletionTimestamp"] = "2026-01-01T11:59:30Z"
    decision = decide(cr(POSING), [deleted], [], NOW)
    assert (decision.status["phase"], decision.status["reason"]) == (Phase.CANCELLED, Reason.JOB_DELETED)
    assert decision.status["message"] == "poses Job bunny-1-poses was deleted before it finished"
    vanished = decide(cr(POSING), [], [], NOW)
    assert vanished.action == Action.CONFIRM_JOB_GONE
    assert vanished.status["message"] == "poses Job bunny-1-poses was deleted before it finished"


def test_a_poses_job_the_status_does_not_know_yet_is_adopted() -> None:
    # The operator died between creating the poses Job and recording it: it is observed, not made twice.
    decision = decide(cr(), [poses_job(1)], [], NOW)
    assert decision.action == Action.NONE and decision.attempt == 1
    assert decision.status["phase"] == Phase.POSING


def test_deciding_twice_while_posing_is_stable() -> None:
    started = {"running": {"startedAt": "2026-01-01T11:59:05Z"}}
    world = ([poses_job(1)], [poses_pod(1, started)])
    first = decide(cr(POSING), *world, NOW)
    second = decide(cr(first.status), *world, NOW)
    assert first.status == second.status
