"""The act layer's guard against cached bodies that lag the operator's own status patches."""

from __future__ import annotations

from typing import Any

import kubernetes

from recon_operator.reconciler import Reconciler
from recon_operator.settings import OperatorSettings


def body(phase: str, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"name": "bunny", "namespace": "ns", "uid": uid}, "status": {"phase": phase, "progress": 40}}


def reconciler() -> Reconciler:
    return Reconciler(OperatorSettings.model_validate({}), kubernetes.client.ApiClient())


def test_a_stale_body_gets_the_sticky_phase_published_since() -> None:
    subject = reconciler()
    subject.published[("ns", "bunny")] = ("u1", {"phase": "Failed", "reason": "PendingDeadlineExceeded"})
    seen = subject._not_older_than_published(body("Queued"))
    assert seen["status"]["phase"] == "Failed" and seen["status"]["reason"] == "PendingDeadlineExceeded"
    assert seen["status"]["progress"] == 40  # the worker's fields stay


def test_non_sticky_phases_and_other_incarnations_are_left_alone() -> None:
    subject = reconciler()
    subject.published[("ns", "bunny")] = ("u1", {"phase": "Running"})
    assert subject._not_older_than_published(body("Pending"))["status"]["phase"] == "Pending"
    subject.published[("ns", "bunny")] = ("u1", {"phase": "Suspended"})
    assert subject._not_older_than_published(body("Running", uid="u2"))["status"]["phase"] == "Running"
    subject.forget("ns", "bunny")
    assert subject._not_older_than_published(body("Running"))["status"]["phase"] == "Running"
