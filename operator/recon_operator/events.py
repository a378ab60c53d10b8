"""Kubernetes Events for phase transitions: what `kubectl describe rj` shows as the job's history."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recon_operator.phases import Phase


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def transition_event(previous: str | None, status: Mapping[str, Any]) -> Event | None:
    """The Event to post when the phase moves from `previous` to `status["phase"]`; None if it did not move."""
    phase = status.get("phase")
    if phase is None or phase == previous:
        return None
    kind = "Warning" if phase in (Phase.FAILED, Phase.CANCELLED) else "Normal"
    detail = status.get("message") or ""
    reason = status.get("reason") or phase
    message = f"{previous or 'New'} → {phase}" + (f": {detail}" if detail else "")
    return Event(kind, str(reason), message[:1024])


def event_manifest(owner: Mapping[str, Any], event: Event, now: str, instance: str) -> dict[str, Any]:
    """A core/v1 Event about the ReconstructionJob `owner` (posted directly: it works from any thread)."""
    meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": owner.get("apiVersion", "recon.dev/v1alpha1"),
            "kind": owner.get("kind", "ReconstructionJob"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message,
        "source": {"component": "recon-operator"},
        "reportingComponent": "recon-operator",
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
