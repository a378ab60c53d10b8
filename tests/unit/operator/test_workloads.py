"""Kueue Workload → admission state on the ReconstructionJob: Kueue's reason while queued, its
preemption, the ClusterQueue and flavors once admitted (workloads.py, and how phases.py shows it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from recon_operator.phases import Phase, Reason, conditions, observe_job
from recon_operator.workloads import admission_of, workload_of

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PENDING = (
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor gpu-a100, "
    "1 more needed"
)
PREEMPTED = "Preempted to accommodate a workload (UID: u2, JobUID: j2) due to prioritization in the ClusterQueue"


def condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T11:59:00Z",
    }


def workload(*conds: dict[str, Any], owner: str = "job-uid", admission: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": list(conds)}
    if admission is not None:
        status["admission"] = admission
    return {
        "metadata": {"name": "job-bunny-1-abcde", "uid": "wl-uid", "ownerReferences": [{"kind": "Job", "uid": owner}]},
        "status": status,
    }


ADMITTED = {
    "clusterQueue": "reconstruction",
    "podSetAssignments": [
        {"name": "main", "flavors": {"cpu": "gpu-l4", "memory": "gpu-l4", "nvidia.com/gpu": "gpu-l4"}}
    ],
}


def suspended_job() -> dict[str, Any]:
    return {
        "metadata": {"name": "bunny-1", "uid": "job-uid", "creationTimestamp": "2026-01-01T11:59:00Z"},
        "spec": {"suspend": True},
        "status": {},
    }


def test_the_workload_of_a_job_is_the_one_it_owns() -> None:
    ours, other = workload(owner="job-uid"), workload(owner="other")
    assert workload_of(suspended_job(), [other, ours]) is ours
    assert workload_of(suspended_job(), [other]) is None


def test_pending_workload_shows_kueues_own_reason_and_message() -> None:
    admission = admission_of(workload(condition("QuotaReserved", "False", "Pending", PENDING)))
    seen = observe_job(suspended_job(), [], NOW, None, admission=admission)
    assert (seen.phase, seen.reason) == (Phase.QUEUED, Reason.WAITING_FOR_ADMISSION)
    assert seen.message == f"Kueue: Pending: {PENDING}"
    [admitted] = [
        c
        for c in conditions(seen.phase, seen.reason, seen.message, None, [], "t", 1, admission)
        if c["type"] == "Admitted"
    ]
    assert (admitted["status"], admitted["reason"], admitted["message"]) == (
        "False",
        "Pending",
        f"Kueue: Pending: {PENDING}",
    )


def test_preempted_workload_is_queued_again_with_the_preemption_reason() -> None:
    admission = admission_of(
        workload(
            condition("QuotaReserved", "False", "Pending", PENDING),
            condition("Evicted", "True", "Preempted", PREEMPTED),
            condition("Admitted", "False", "NoReservation"),
        )
    )
    seen = observe_job(suspended_job(), [], NOW, None, admission=admission)
    assert (seen.phase, seen.reason) == (Phase.QUEUED, Reason.PREEMPTED)
    assert seen.message == f"evicted by Kueue (Preempted: {PREEMPTED}); Kueue: Pending: {PENDING}"


def test_admitted_workload_names_cluster_queue_and_flavor_on_the_running_job() -> None:
    admission = admission_of(
        workload(
            condition("QuotaReserved", "True", "QuotaReserved"),
            condition("Admitted", "True", "Admitted", "The workload is admitted"),
            admission=ADMITTED,
        )
    )
    assert admission is not None and admission.flavors["nvidia.com/gpu"] == "gpu-l4"
    job = {**suspended_job(), "spec": {"suspend": False}}
    running = {
        "metadata": {"name": "bunny-1-x", "creationTimestamp": "2026-01-01T11:59:10Z"},
        "spec": {"nodeName": "node-l4"},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "worker", "state": {"running": {"startedAt": "2026-01-01T11:59:20Z"}}}],
        },
    }
    seen = observe_job(job, [running], NOW, None, admission=admission)
    assert seen.phase == Phase.RUNNING
    assert seen.message == (
        "pod bunny-1-x on node-l4; admitted by Kueue ClusterQueue reconstruction with flavors "
        "nvidia.com/gpu=gpu-l4, cpu=gpu-l4, memory=gpu-l4"
    )
    [admitted] = [
        c
        for c in conditions(seen.phase, seen.reason, seen.message, None, [], "t", 1, admission)
        if c["type"] == "Admitted"
    ]
    assert admitted["status"] == "True" and "gpu-l4" in admitted["message"]


def test_without_a_workload_the_suspended_job_waits_as_before() -> None:
    seen = observe_job(suspended_job(), [], NOW, None, admission_of(None))
    assert (seen.reason, seen.message) == (Reason.WAITING_FOR_ADMISSION, "Job is suspended until its queue admits it")
    # A condition Kueue set earlier stays as it was when no Workload is observed.
    old = [{"type": "Admitted", "status": "True", "reason": "Admitted", "message": "m", "lastTransitionTime": "t0"}]
    kept = [c for c in conditions(Phase.SUCCEEDED, "Succeeded", "", None, old, "t1", 1) if c["type"] == "Admitted"]
    assert kept == old


def test_a_mig_slice_is_named_first_among_the_flavors() -> None:
    mig = {
        "clusterQueue": "reconstruction-mig",
        "podSetAssignments": [
            {
                "name": "main",
                "flavors": {"cpu": "any-node", "memory": "any-node", "nvidia.com/mig-1g.10gb": "mig-1g-10gb"},
            }
        ],
    }
    admission = admission_of(workload(condition("Admitted", "True", "Admitted"), admission=mig))
    assert admission is not None
    assert admission.describe() == (
        "admitted by Kueue ClusterQueue reconstruction-mig with flavors "
        "nvidia.com/mig-1g.10gb=mig-1g-10gb, cpu=any-node, memory=any-node"
    )
