"""Kubernetes Events for phase transitions: what `kubectl describe rj` shows as the job's history.

An Event's name is derived from what it records (the CR's uid, the attempt, the phase and the reason),
not generated: an operator that restarts, or a second one during a rollout, re-derives the phases
from a cold cache and may see a transition again; posting it again is then refused as AlreadyExists
(409) instead of doubling the history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recon_operator.phases import Phase


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str
    phase: str = ""  # the phase entered
    attempt: int = 0  # status.attempts when it was entered


def transition_event(previous: str | None, status: Mapping[str, Any]) -> Event | None:
    """The Event to post when the phase moves from `previous` to `status["phase"]`; None if it did not move."""
    phase = status.get("phase")
    if phase is None or phase == previous:
        return None
    kind = "Warning" if phase in (Phase.FAILED, Phase.CANCELLED) else "Normal"
    detail = status.get("message") or ""
    reason = status.get("reason") or phase
    message = f"{previous or 'New'} → {phase}" + (f": {detail}" if detail else "")
    return Event(kind, str(reason), message[:1024], str(phase), int(status.get("attempts") or 0))


def event_name(owner: Mapping[str, Any], event: Event) -> str:
    """`<cr-name>.<16 hex>`: the same for the same CR, attempt, phase and reason (previous phase and
    message left out: a cold cache may see another previous phase), a valid name for any CR name."""
    meta = owner["metadata"]
    key = "/".join((str(meta["uid"]), str(event.attempt), event.phase, event.reason))
    return f"{meta['name'][:236]}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def event_manifest(owner: Mapping[str, Any], event: Event, now: str, instance: str) -> dict[str, Any]:
    """A core/v1 Event about the ReconstructionJob `owner` (posted directly: it works from any thread)."""
    meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(owner, event), "namespace": meta["namespace"]},
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
