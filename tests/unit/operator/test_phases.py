"""Observed Job and Pods → phase, typed reason, message; conditions. One test per case of the issue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from recon_operator.phases import (
    Observation,
    Phase,
    Reason,
    conditions,
    confirm_outputs,
    observe_job,
    quality_findings,
    worker_message,
)
from recon_operator.spec import Gates

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T0 = "2026-01-01T11:59:00Z"


def job(*conds: tuple[str, str], suspend: bool = False, created: str = T0, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "bunny-1", "uid": "job-uid", "creationTimestamp": created},
        "spec": {"suspend": suspend},
        "status": {
            **status,
            "conditions": [
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": f"{reason} happened",
                    "lastTransitionTime": "2026-01-01T11:59:30Z",
                }
                for kind, reason in conds
            ],
        },
    }


def pod(name: str = "bunny-1-abc", phase: str = "Pending", created: str = T0, **parts: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    state = parts.pop("state", None)
    if state is not None:
        status["containerStatuses"] = [{"name": "worker", "image": "reg/w:1", "state": state}]
    status.update(parts)
    return {
        "metadata": {"name": name, "creationTimestamp": created, "ownerReferences": [{"uid": "job-uid"}]},
        "spec": {"nodeName": "gpu-1"},
        "status": status,
    }


def terminated(code: int, message: str = "", reason: str = "Error") -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "message": message,
            "startedAt": "2026-01-01T11:59:10Z",
            "finishedAt": "2026-01-01T11:59:20Z",
        }
    }


def observe(j: dict[str, Any], *pods: dict[str, Any], deadline: int | None = None) -> Observation:
    return observe_job(j, list(pods), NOW, deadline)


def test_created_job_without_pods_is_pending() -> None:
    seen = observe(job())
    assert (seen.phase, seen.reason) == (Phase.PENDING, Reason.JOB_CREATED)


def test_suspended_job_waits_for_kueue_admission() -> None:
    seen = observe(job(suspend=True))
    assert (seen.phase, seen.reason) == (Phase.QUEUED, Reason.WAITING_FOR_ADMISSION)


def test_unschedulable_pod_is_queued_with_the_schedulers_message() -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    unschedulable = pod(
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]
    )
    seen = observe(job(), unschedulable)
    assert (seen.phase, seen.reason) == (Phase.QUEUED, Reason.UNSCHEDULABLE)
    assert message in seen.message


def test_running_pod_is_running_with_start_time() -> None:
    running = pod(phase="Running", state={"running": {"startedAt": "2026-01-01T11:59:40Z"}})
    seen = observe(job(active=1), running)
    assert seen.phase == Phase.RUNNING and "gpu-1" in seen.message
    assert seen.started_at == "2026-01-01T11:59:40Z"


def test_complete_job_is_succeeded_only_with_the_manifest() -> None:
    seen = observe(
        job(("Complete", ""), completionTime="2026-01-01T11:59:50Z"), pod(phase="Succeeded", state=terminated(0))
    )
    assert seen.phase == Phase.SUCCEEDED and seen.finished_at == "2026-01-01T11:59:50Z"
    outputs = {"manifest": "s3://o/manifest.json", "files": []}
    confirmed = confirm_outputs(seen, "s3://o/manifest.json", None, outputs)
    assert confirmed.phase == Phase.SUCCEEDED and confirmed.outputs == outputs
    missing = confirm_outputs(seen, "s3://o/manifest.json", "does not exist")
    assert (missing.phase, missing.reason) == (Phase.FAILED, Reason.OUTPUTS_MISSING)
    assert missing.message == "worker exited 0 but s3://o/manifest.json does not exist"
    assert missing.outputs is None


def test_a_finished_pod_stays_running_until_the_job_completes() -> None:
    # The pod has exited 0; the Job controller has not yet added Complete: no flap back to Pending.
    seen = observe(job(active=0), pod(phase="Succeeded", state=terminated(0)))
    assert (seen.phase, seen.reason) == (Phase.RUNNING, Reason.WORKER_RUNNING)
    assert "finished; waiting for the Job to complete" in seen.message


def test_failed_create_surfaces_as_unschedulable() -> None:
    refusal = 'pods "x-1-abc" is forbidden: no PriorityClass with name gold was found'
    seen = observe_job(job(), [], NOW, None, refusal)
    assert (seen.phase, seen.reason) == (Phase.QUEUED, Reason.UNSCHEDULABLE)
    assert "cannot create its pod: " + refusal in seen.message
    assert observe_job(job(), [], NOW, None).reason == Reason.JOB_CREATED  # no refusal: just waiting


def test_exit_2_is_inputs_invalid_with_the_workers_message() -> None:
    note = json.dumps({"reason": "InvalidCapture", "message": "frame 17: images/r_17.png is not a PNG"})
    seen = observe(job(("Failed", "PodFailurePolicy")), pod(phase="Failed", state=terminated(2, note)))
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.INPUTS_INVALID)
    assert "InvalidCapture: frame 17: images/r_17.png is not a PNG" in seen.message
    assert "bunny-1-abc exited with code 2" in seen.message


def test_exit_2_of_too_few_registered_photos_is_poses_unrecoverable() -> None:
    note = json.dumps({"reason": "PosesUnrecoverable", "message": "3 of 20 photos registered (80 % needed)"})
    seen = observe(job(("Failed", "PodFailurePolicy")), pod(phase="Failed", state=terminated(2, note)))
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.POSES_UNRECOVERABLE)
    assert "PosesUnrecoverable: 3 of 20 photos registered" in seen.message
    # Only exit 2 says the input is at fault: the same words on a crash stay a transient failure.
    crashed = observe(job(("Failed", "BackoffLimitExceeded")), pod(phase="Failed", state=terminated(1, note)))
    assert crashed.reason == Reason.BACKOFF_LIMIT_EXCEEDED


def test_failure_target_is_already_final() -> None:
    seen = observe(job(("FailureTarget", "PodFailurePolicy")), pod(phase="Failed", state=terminated(2)))
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.INPUTS_INVALID)


def test_exit_3_on_every_try_is_insufficient_gpu_memory() -> None:
    note = json.dumps({"reason": "InsufficientGPUMemory", "message": "7.5 GiB free, 12 needed"})
    pods = [
        pod(f"p{i}", phase="Failed", created=f"2026-01-01T11:59:0{i}Z", state=terminated(3, note)) for i in range(3)
    ]
    seen = observe(job(("Failed", "BackoffLimitExceeded"), failed=3), *pods)
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.INSUFFICIENT_GPU_MEMORY)
    assert "p2 exited with code 3" in seen.message and "7.5 GiB free" in seen.message
    assert seen.pod_failures == 3


def test_oom_killed() -> None:
    seen = observe(
        job(("Failed", "BackoffLimitExceeded")), pod(phase="Failed", state=terminated(137, reason="OOMKilled"))
    )
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.OOM_KILLED)


def test_transient_failures_exhaust_the_backoff_limit() -> None:
    seen = observe(job(("Failed", "BackoffLimitExceeded")), pod(phase="Failed", state=terminated(1, "boom")))
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.BACKOFF_LIMIT_EXCEEDED)
    assert "boom" in seen.message


def test_active_deadline() -> None:
    seen = observe(job(("Failed", "DeadlineExceeded")), pod(phase="Failed", state=terminated(137)))
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.DEADLINE_EXCEEDED)
    assert "DeadlineExceeded happened" in seen.message


def test_evicted_pod() -> None:
    evicted = pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    seen = observe(job(("Failed", "BackoffLimitExceeded")), evicted)
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.EVICTED)
    assert "low on resource" in seen.message


def test_evicted_pod_whose_container_was_killed_keeps_the_kubelets_message() -> None:
    """A real kubelet's eviction (seen on the local real node): the container shows only a SIGKILL."""
    message = 'Usage of EmptyDir volume "scratch" exceeds the limit "16Mi". '
    evicted = pod(phase="Failed", reason="Evicted", message=message, state=terminated(137))
    seen = observe(job(("Failed", "BackoffLimitExceeded")), evicted)
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.EVICTED)
    assert "exited with code 137" in seen.message and 'EmptyDir volume "scratch"' in seen.message


def test_image_pull_back_off_fails_fast_and_asks_to_stop_the_job() -> None:
    waiting = pod(state={"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "reg/w:1"'}})
    seen = observe(job(active=1), waiting)
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.IMAGE_PULL_FAILED)
    assert seen.job_active and "reg/w:1" in seen.message


def test_pending_deadline_fails_a_job_that_never_ran() -> None:
    seen = observe(job(created="2026-01-01T11:58:00Z"), pod(), deadline=60)
    assert (seen.phase, seen.reason) == (Phase.FAILED, Reason.PENDING_DEADLINE_EXCEEDED)
    assert seen.job_active
    assert observe(job(created="2026-01-01T11:59:30Z"), pod(), deadline=60).phase == Phase.PENDING


def test_pending_deadline_does_not_apply_once_the_worker_ran() -> None:
    retried = [pod("old", phase="Failed", state=terminated(1)), pod("new", created="2026-01-01T11:59:30Z")]
    seen = observe(job(created="2026-01-01T11:50:00Z"), *retried, deadline=60)
    assert seen.phase == Phase.PENDING


def test_worker_message_accepts_plain_text_and_json() -> None:
    assert worker_message({"message": "plain words"}) == "plain words"
    assert worker_message({"message": '{"reason": "R", "message": "m"}'}) == "R: m"
    assert worker_message(None) == ""


def test_conditions_follow_the_phase_and_keep_transition_times() -> None:
    first = conditions(Phase.RUNNING, "WorkerRunning", "on gpu-1", None, [], "2026-01-01T00:00:00Z", 1)
    kinds = {c["type"]: c["status"] for c in first}
    assert kinds == {
        "Ready": "False",
        "Running": "True",
        "Succeeded": "False",
        "Failed": "False",
        "QualityDegraded": "Unknown",
    }
    later = conditions(Phase.SUCCEEDED, "Succeeded", "done", [], first, "2026-01-01T01:00:00Z", 1)
    by_type = {c["type"]: c for c in later}
    assert by_type["Succeeded"]["status"] == "True" and by_type["Ready"]["status"] == "True"
    assert by_type["Running"]["lastTransitionTime"] == "2026-01-01T01:00:00Z"
    assert by_type["Failed"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # stayed False
    assert by_type["QualityDegraded"]["status"] == "False"


def test_quality_degraded_from_metrics_and_gates() -> None:
    gates = Gates.model_validate({"minPSNR": 25, "minMaskIoU": 0.9})
    assert quality_findings(gates, None) is None
    assert quality_findings(gates, {"psnr": 30.0, "maskIoU": 0.95, "watertight": True}) == []
    findings = quality_findings(gates, {"psnr": 21.5, "maskIoU": 0.95, "watertight": False})
    assert findings is not None and len(findings) == 2
    assert "PSNR 21.50 dB < minPSNR 25 dB" in findings[0]
    degraded = conditions(Phase.SUCCEEDED, "Succeeded", "", findings, [], "t", 1)[-1]
    assert (degraded["type"], degraded["status"], degraded["reason"]) == ("QualityDegraded", "True", "GatesFailed")
