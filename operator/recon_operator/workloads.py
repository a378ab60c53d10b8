"""Kueue Workloads: what Kueue says about a queued worker Job, as the ReconstructionJob shows it. Pure.

Kueue creates one Workload per Job it manages (owned by the Job). Its conditions carry Kueue's own
reasons (`QuotaReserved` False with reason `Pending` and "couldn't assign flavors ... insufficient
unused quota ...", `Evicted` True with reason `Preempted`), and `status.admission` names the
ClusterQueue and the ResourceFlavor chosen for each resource once it is admitted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
WORKLOADS = "workloads"
# The label Kueue reads a Job's WorkloadPriorityClass from; copied from the ReconstructionJob's labels.
PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"
BUILT_IN_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage", "pods"})


@dataclass(frozen=True)
class Admission:
    """A Workload's admission state, in Kueue's own words."""

    admitted: bool
    reason: str  # Kueue's reason: Admitted, Pending, Preempted, ... (CamelCase)
    message: str
    cluster_queue: str | None = None
    flavors: dict[str, str] = field(default_factory=dict)  # resource -> ResourceFlavor, over all pod sets
    evicted_reason: str | None = None  # why Kueue last evicted it (Preempted, ...), while it waits again
    evicted_message: str = ""

    def flavor_text(self) -> str:
        """`nvidia.com/gpu=gpu-a100, cpu=default`: extended resources (GPUs, MIG slices such as
        nvidia.com/mig-1g.10gb) first, then the built-in ones."""
        items = sorted(self.flavors.items(), key=lambda item: (item[0] in BUILT_IN_RESOURCES, item[0]))
        return ", ".join(f"{resource}={flavor}" for resource, flavor in items)

    def describe(self) -> str:
        """One line for status.message and the Admitted condition."""
        if self.admitted:
            flavors = f" with flavors {self.flavor_text()}" if self.flavors else ""
            return f"admitted by Kueue ClusterQueue {self.cluster_queue or '?'}{flavors}"
        waiting = f"Kueue: {self.reason}" + (f": {self.message}" if self.message else "")
        if self.evicted_reason:
            evicted = f"evicted by Kueue ({self.evicted_reason}" + (
                f": {self.evicted_message})" if self.evicted_message else ")"
            )
            return f"{evicted}; {waiting}" if self.message else evicted
        return waiting


def _condition(workload: Obj, kind: str) -> Obj | None:
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _true(condition: Obj | None) -> bool:
    return condition is not None and condition.get("status") == "True"


def workload_of(job: Obj, workloads: Sequence[Obj]) -> Obj | None:
    """The Workload Kueue made for `job` (owned by it), newest first if there are several."""
    uid = (job.get("metadata") or {}).get("uid")
    owned = [
        w
        for w in workloads
        if any(ref.get("uid") == uid for ref in (w.get("metadata") or {}).get("ownerReferences") or [])
    ]
    owned.sort(key=lambda w: str((w.get("metadata") or {}).get("creationTimestamp") or ""))
    return owned[-1] if owned else None


def admission_of(workload: Obj | None) -> Admission | None:
    """What `workload` says; None without a Workload (Kueue has not seen the Job yet, or is not installed)."""
    if workload is None:
        return None
    status = workload.get("status") or {}
    admission = status.get("admission") or {}
    flavors: dict[str, str] = {}
    for assignment in admission.get("podSetAssignments") or []:
        flavors.update({str(k): str(v) for k, v in (assignment.get("flavors") or {}).items()})
    admitted = _condition(workload, "Admitted")
    reserved = _condition(workload, "QuotaReserved")
    evicted = _condition(workload, "Evicted")
    if _true(admitted):
        assert admitted is not None
        return Admission(
            True,
            str(admitted.get("reason") or "Admitted"),
            str(admitted.get("message") or ""),
            admission.get("clusterQueue"),
            flavors,
        )
    # Not admitted: the latest word is QuotaReserved's (Pending + why), else Admitted's, else none yet.
    latest = reserved or admitted
    reason = str((latest or {}).get("reason") or "Pending")
    message = str((latest or {}).get("message") or ("" if latest else "waiting for Kueue to consider it"))
    evicted_reason = str(evicted.get("reason")) if _true(evicted) and evicted else None
    evicted_message = str(evicted.get("message") or "") if evicted_reason and evicted else ""
    return Admission(False, reason, message, admission.get("clusterQueue"), flavors, evicted_reason, evicted_message)
