"""The act layer's guard against cached bodies that lag the operator's own status patches."""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest

from recon_operator.reconciler import Reconciler
from recon_operator.settings import OperatorSettings
from tests.s3server import free_port


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


def test_a_body_older_than_the_last_write_gets_the_status_written() -> None:
    # A requeued reconcile reads the CR from Kopf's index, which can lag the operator's own patch: the
    # Running written stays what decide starts from (or a view lacking the pod would not be recognised).
    subject = reconciler()
    subject.published[("ns", "bunny")] = ("u1", {"phase": "Running", "reason": "WorkerRunning"})
    subject.written[("ns", "bunny")] = 9
    stale = body("Pending")
    stale["metadata"]["resourceVersion"] = "5"
    seen = subject._not_older_than_published(stale)
    assert (seen["status"]["phase"], seen["status"]["progress"]) == ("Running", 40)
    stale["metadata"]["resourceVersion"] = "9"  # the write itself, or newer: as it is
    assert subject._not_older_than_published(stale)["status"]["phase"] == "Pending"


def test_non_sticky_phases_and_other_incarnations_are_left_alone() -> None:
    subject = reconciler()
    subject.published[("ns", "bunny")] = ("u1", {"phase": "Running"})
    assert subject._not_older_than_published(body("Pending"))["status"]["phase"] == "Pending"
    subject.published[("ns", "bunny")] = ("u1", {"phase": "Suspended"})
    assert subject._not_older_than_published(body("Running", uid="u2"))["status"]["phase"] == "Running"
    subject.forget("ns", "bunny")
    assert subject._not_older_than_published(body("Running"))["status"]["phase"] == "Running"


def listed(version: str) -> dict[str, Any]:
    cr = body("Pending")
    cr["metadata"] |= {"resourceVersion": version, "creationTimestamp": "2026-01-01T11:00:00Z", "generation": 1}
    cr["spec"] = {"input": {"uri": "s3://in/c/"}, "output": {"uri": "s3://out/r/"}}
    return cr


def test_a_listing_older_than_the_last_write_is_not_decided_from() -> None:
    # The healer's listing of the CR, its Jobs and Pods predates the status this operator wrote (decided
    # from newer Pods): deciding from it would move a Running CR back to Pending.
    dead_api = f"127.0.0.1:{free_port()}"  # nothing listens there: any API call fails, naming it
    config = kubernetes.client.Configuration(host=f"http://{dead_api}")
    config.retries = 0
    subject = Reconciler(OperatorSettings.model_validate({}), kubernetes.client.ApiClient(config))
    subject.written[("ns", "bunny")] = 9
    subject.run(listed("5"), [], [], allow_create=True, retry=0, listing=True)  # returns before any API call
    # A listing that includes the write is decided from: here that means asking the API for its Jobs.
    with pytest.raises(Exception, match=f"port={dead_api.split(':')[1]}"):
        subject.run(listed("10"), [], [], allow_create=True, retry=0, listing=True)
