"""decide(): the level-based reconcile step, on observed worlds (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from recon_operator.phases import Phase, Reason
from recon_operator.reconcile import RECORD_ANNOTATION, Action, decide, owned_status, record_annotation, trusted

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def cr(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "bunny",
            "namespace": "ns",
            "uid": "u",
            "generation": 2,
            "creationTimestamp": "2026-01-01T11:00:00Z",
        },
        "spec": {"input": {"uri": "s3://in/c/"}, "output": {"uri": "s3://out/r/"}, **spec},
        "status": status or {},
    }


def job(attempt: int, *conds: str, suspend: bool = False) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"bunny-{attempt}",
            "uid": f"j{attempt}",
            "labels": {"recon.dev/attempt": str(attempt)},
            "creationTimestamp": "2026-01-01T11:59:00Z",
        },
        "spec": {"suspend": suspend},
        "status": {"conditions": [{"type": c, "status": "True", "reason": "BackoffLimitExceeded"} for c in conds]},
    }


def running_pod(attempt: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"bunny-{attempt}-x",
            "ownerReferences": [{"uid": f"j{attempt}"}],
            "creationTimestamp": "2026-01-01T11:59:01Z",
        },
        "spec": {"nodeName": "n"},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "worker", "state": {"running": {"startedAt": "2026-01-01T11:59:05Z"}}}],
        },
    }


def test_new_resource_creates_attempt_1() -> None:
    decision = decide(cr(), [], [], NOW)
    assert (decision.action, decision.attempt) == (Action.CREATE_JOB, 1)
    assert decision.status["jobName"] == "bunny-1" and decision.status["phase"] == Phase.PENDING
    assert decision.status["observedGeneration"] == 2


def test_a_job_the_status_does_not_know_yet_is_adopted_not_duplicated() -> None:
    # The operator died between creating the Job and recording it: the Job's attempt label wins.
    decision = decide(cr(), [job(1)], [], NOW)
    assert decision.action == Action.NONE and decision.attempt == 1
    assert decision.status["phase"] == Phase.PENDING


def test_running_job_shows_running() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Pending"}), [job(1)], [running_pod(1)], NOW)
    assert decision.action == Action.NONE
    assert decision.status["phase"] == Phase.RUNNING
    assert decision.status["startTime"] == "2026-01-01T11:59:05Z"


def test_complete_job_needs_an_output_check() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Running"}), [job(1, "Complete")], [], NOW)
    assert decision.action == Action.CHECK_OUTPUTS


def test_suspend_deletes_the_running_job() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Running"}, suspend=True), [job(1)], [running_pod(1)], NOW)
    assert decision.action == Action.DELETE_JOB and decision.attempt == 1
    assert decision.status["phase"] == Phase.SUSPENDED


def test_suspended_without_a_job_stays_suspended() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Suspended"}, suspend=True), [], [], NOW)
    assert decision.action == Action.NONE and decision.status["phase"] == Phase.SUSPENDED


def test_resume_starts_a_new_attempt() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Suspended"}), [], [], NOW)
    assert (decision.action, decision.attempt) == (Action.CREATE_JOB, 2)
    assert decision.status["jobName"] == "bunny-2"


def test_suspend_after_the_job_finished_reports_the_result() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Running"}, suspend=True), [job(1, "Complete")], [], NOW)
    assert decision.action == Action.CHECK_OUTPUTS


def test_vanished_job_is_confirmed_before_cancelling() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Running"}), [], [], NOW)
    assert decision.action == Action.CONFIRM_JOB_GONE
    assert decision.status["phase"] == Phase.CANCELLED and decision.status["reason"] == Reason.JOB_DELETED


def test_terminal_phases_are_sticky() -> None:
    status = {
        "attempts": 1,
        "phase": "Failed",
        "reason": "InputsInvalid",
        "message": "m",
        "completionTime": "2026-01-01T11:59:59Z",
    }
    decision = decide(cr(status), [job(1, "Failed")], [], NOW)
    assert decision.action == Action.NONE
    assert decision.status["phase"] == "Failed" and decision.status["reason"] == "InputsInvalid"


def test_failed_while_the_pod_still_holds_a_gpu_deletes_the_job() -> None:
    status = {"attempts": 1, "phase": "Pending"}
    decision = decide(cr(status, pendingDeadlineSeconds=10), [job(1)], [], NOW)
    assert decision.action == Action.DELETE_JOB
    assert decision.status["reason"] == Reason.PENDING_DEADLINE_EXCEEDED


def test_ttl_after_finished_deletes_the_resource() -> None:
    status = {"attempts": 1, "phase": "Succeeded", "completionTime": "2026-01-01T11:59:00Z"}
    assert decide(cr(status, ttlSecondsAfterFinished=30), [], [], NOW).action == Action.DELETE_RESOURCE
    assert decide(cr(status, ttlSecondsAfterFinished=3600), [], [], NOW).action == Action.NONE


def test_deciding_twice_on_the_same_world_is_stable() -> None:
    body = cr({"attempts": 1, "phase": "Pending"})
    first = decide(body, [job(1)], [running_pod(1)], NOW)
    body["status"] = first.status
    second = decide(body, [job(1)], [running_pod(1)], NOW)
    assert owned_status(second.status) == owned_status(first.status)


RUNNING = {
    "attempts": 1,
    "phase": "Running",
    "reason": "WorkerRunning",
    "message": "pod bunny-1-x on n",
    "jobName": "bunny-1",
    "startTime": "2026-01-01T11:59:05Z",
}


def pod_of(attempt: int, name: str, phase: str, **metadata: Any) -> dict[str, Any]:
    meta = {"name": name, "ownerReferences": [{"uid": f"j{attempt}"}], "creationTimestamp": "2026-01-01T11:59:30Z"}
    return {"metadata": meta | metadata, "spec": {"nodeName": "n"}, "status": {"phase": phase}}


def test_a_view_without_the_running_pod_does_not_move_running_back_to_pending() -> None:
    # What the flake of test_operator_poses saw: the CR Running (decided from a view with the worker's pod),
    # then a view of the worker Job from the Jobs' watch whose Pods' watch had not delivered that pod yet.
    active = job(1)
    active["status"] = {"active": 1, "ready": 1}
    for lagging in ([], [pod_of(1, "bunny-1-x", "Pending")]):
        decision = decide(cr(RUNNING), [active], lagging, NOW)
        assert decision.action == Action.NONE
        assert (decision.status["phase"], decision.status["reason"]) == (Phase.RUNNING, Reason.WORKER_RUNNING)
        assert decision.status["message"] == "pod bunny-1-x on n"
        assert decision.status["startTime"] == "2026-01-01T11:59:05Z"
    # Before Running was ever seen, the same view is Pending, as it says.
    assert decide(cr({"attempts": 1, "phase": "Pending"}), [active], [], NOW).status["phase"] == Phase.PENDING


def test_running_waits_again_when_the_job_replaces_a_stopped_pod_or_kueue_suspends_it() -> None:
    failed = pod_of(1, "bunny-1-x", "Failed")
    replacement = pod_of(1, "bunny-1-y", "Pending", creationTimestamp="2026-01-01T11:59:50Z")
    decision = decide(cr(RUNNING), [job(1)], [failed, replacement], NOW)
    assert (decision.status["phase"], decision.status["reason"]) == (Phase.PENDING, Reason.CONTAINER_CREATING)
    counted = job(1)
    counted["status"] = {"failed": 1, "active": 1}  # the stopped pod is gone already; the Job counted it
    assert decide(cr(RUNNING), [counted], [], NOW).status["phase"] == Phase.PENDING
    preempted = decide(cr(RUNNING), [job(1, suspend=True)], [], NOW)
    assert (preempted.status["phase"], preempted.status["reason"]) == (Phase.QUEUED, Reason.WAITING_FOR_ADMISSION)
    # Running of an earlier attempt says nothing about this one's Job.
    assert decide(cr(RUNNING | {"attempts": 2}), [job(2)], [], NOW).status["phase"] == Phase.PENDING


def deleting(job_body: dict[str, Any]) -> dict[str, Any]:
    job_body["metadata"]["deletionTimestamp"] = "2026-01-01T11:59:59Z"
    return job_body


def test_resume_waits_for_the_suspended_job_to_finish_terminating() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Suspended"}), [deleting(job(1))], [running_pod(1)], NOW)
    assert decision.action == Action.NONE
    assert decision.status["phase"] == Phase.SUSPENDED and "bunny-1" in decision.status["message"]


def test_a_job_deleted_by_someone_else_cancels_at_once() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Running"}), [deleting(job(1))], [running_pod(1)], NOW)
    assert decision.status["phase"] == Phase.CANCELLED and decision.status["reason"] == Reason.JOB_DELETED


def test_cancel_stops_the_running_job_and_is_final() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Running"}, cancel=True), [job(1)], [running_pod(1)], NOW)
    assert decision.action == Action.DELETE_JOB
    assert (decision.status["phase"], decision.status["reason"]) == (Phase.CANCELLED, Reason.CANCEL_REQUESTED)
    # The next reconcile sees a terminal phase: it keeps deleting a Job that still runs, and never restarts.
    again = decide(cr(decision.status, cancel=True), [job(1)], [running_pod(1)], NOW)
    assert again.action == Action.DELETE_JOB and again.status["phase"] == Phase.CANCELLED
    assert decide(cr(decision.status, cancel=True), [], [], NOW).action == Action.NONE


def test_cancel_before_any_job_creates_none() -> None:
    decision = decide(cr(cancel=True), [], [], NOW)
    assert decision.action == Action.NONE and decision.status["phase"] == Phase.CANCELLED


def test_cancel_after_the_job_finished_reports_the_result() -> None:
    decision = decide(cr({"attempts": 1, "phase": "Running"}, cancel=True), [job(1, "Complete")], [], NOW)
    assert decision.action == Action.CHECK_OUTPUTS


# ---- the operator's record: owned fields a worker token wrote are never obeyed (issue 11 point 3) ----


def recorded(status: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    body = cr(status)
    body["metadata"]["annotations"] = {RECORD_ANNOTATION: record_annotation(record, body["metadata"]["uid"])}
    return body


def test_a_forged_succeeded_is_not_obeyed_while_the_job_runs() -> None:
    record = decide(cr({"phase": "Running", "attempts": 1}), [job(1)], [running_pod(1)], NOW).status
    forged = {**record, "phase": "Succeeded", "reason": "Succeeded", "progress": 90}
    body = trusted(recorded(forged, record), [job(1)])
    assert body["status"]["phase"] == "Running" and body["status"]["progress"] == 90  # worker fields stay
    decision = decide(body, [job(1)], [running_pod(1)], NOW)
    assert decision.action == Action.NONE and decision.status["phase"] == Phase.RUNNING


def test_without_a_record_owned_fields_count_only_before_any_job() -> None:
    forged = {"phase": "Succeeded", "attempts": 1, "metrics": {"psnr": 30}}
    assert trusted(cr(forged), [])["status"] == forged  # a CR from before the record: kept
    body = trusted(cr(forged), [job(1)])
    assert body["status"] == {"metrics": {"psnr": 30}}  # a Job exists: a worker may have written them
    assert decide(body, [job(1)], [running_pod(1)], NOW).status["phase"] == Phase.RUNNING


def test_outputs_show_only_on_succeeded_and_are_kept_there() -> None:
    running = decide(cr({"outputs": {"manifest": "forged"}}), [job(1)], [running_pod(1)], NOW).status
    assert running["outputs"] is None
    done = {"phase": "Succeeded", "attempts": 1, "outputs": {"manifest": "s3://out/r/manifest.json", "files": []}}
    kept = decide(trusted(recorded(done, done), [job(1, "Complete")]), [job(1, "Complete")], [], NOW).status
    assert kept["outputs"] == done["outputs"]


def test_a_record_written_for_another_uid_is_not_this_crs() -> None:
    # Set by whoever created the CR (before its uid existed), or copied from another CR.
    forged = {"phase": "Succeeded", "attempts": 1, "outputs": {"manifest": "s3://out/r/manifest.json", "files": []}}
    body = cr({})
    body["metadata"]["annotations"] = {RECORD_ANNOTATION: record_annotation(forged, "someone-else")}
    assert trusted(body, [])["status"] == {}
    assert decide(trusted(body, []), [], [], NOW).action == Action.CREATE_JOB


def test_a_queued_job_shows_the_reason_of_the_workload_it_owns() -> None:
    pending = {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": "insufficient quota"}
    ours = {
        "metadata": {"name": "w1", "ownerReferences": [{"kind": "Job", "uid": "j1"}]},
        "status": {"conditions": [pending]},
    }
    other = {"metadata": {"name": "w2", "ownerReferences": [{"kind": "Job", "uid": "x"}]}, "status": {"conditions": []}}
    body = cr({"phase": "Queued", "attempts": 1}, scheduling={"queueName": "q"})
    decision = decide(body, [job(1, suspend=True)], [], NOW, workloads=[other, ours])
    assert (
        decision.status["phase"] == Phase.QUEUED and decision.status["message"] == "Kueue: Pending: insufficient quota"
    )
    assert {c["type"]: c["status"] for c in decision.status["conditions"]}["Admitted"] == "False"
    # Without a queue name, Workloads do not matter (nor are they looked at).
    plain = decide(cr({"phase": "Queued", "attempts": 1}), [job(1, suspend=True)], [], NOW, workloads=[ours])
    assert plain.status["reason"] == Reason.WAITING_FOR_ADMISSION and "Admitted" not in str(plain.status["conditions"])
