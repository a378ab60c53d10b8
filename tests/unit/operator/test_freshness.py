"""Views never go back in time: an owned Pod or Job older than one already seen is replaced by the newer one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from recon_operator.freshness import NewestSeen
from recon_operator.phases import Phase, observe_job
from recon_operator.reconcile import decide

KEY = ("ns", "bunny")


def pod(version: str, phase: str, uid: str = "p1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "bunny-1-abcde",
            "uid": uid,
            "resourceVersion": version,
            "creationTimestamp": "2026-01-01T11:00:01Z",
            "ownerReferences": [{"kind": "Job", "name": "bunny-1", "uid": "j1"}],
        },
        "spec": {"nodeName": "node-a"},
        "status": {"phase": phase},
    }


def test_an_older_version_is_replaced_and_a_newer_one_recorded() -> None:
    seen = NewestSeen()
    assert seen.freshen(KEY, [pod("110", "Running")])[0]["status"]["phase"] == "Running"
    # A lagging view (the index behind the healer's listing, or a snapshot read before the lock).
    assert seen.freshen(KEY, [pod("100", "Pending")])[0]["status"]["phase"] == "Running"
    assert seen.freshen(KEY, [pod("120", "Succeeded")])[0]["status"]["phase"] == "Succeeded"
    assert seen.freshen(KEY, [pod("110", "Running")])[0]["status"]["phase"] == "Succeeded"


def test_absent_objects_stay_absent_and_unversioned_ones_pass_through() -> None:
    seen = NewestSeen()
    seen.freshen(KEY, [pod("110", "Running")])
    assert seen.freshen(KEY, []) == []  # gone (or not listed yet): never brought back
    bare = pod("", "Pending", uid="p2")
    assert seen.freshen(KEY, [bare]) == [bare]
    other = pod("5", "Pending")  # the same uid under another CR is that CR's business
    assert seen.freshen(("ns", "other"), [other]) == [other]
    seen.forget(KEY)
    assert seen.freshen(KEY, [pod("100", "Pending")])[0]["status"]["phase"] == "Pending"


def test_a_freshened_lagging_view_does_not_flap_running_back_to_pending() -> None:
    cr = {
        "metadata": {"name": "bunny", "namespace": "ns", "uid": "u1", "creationTimestamp": "2026-01-01T11:00:00Z"},
        "spec": {"input": {"uri": "s3://in/c/"}, "output": {"uri": "s3://out/r/"}},
        "status": {"phase": "Running", "attempts": 1, "jobName": "bunny-1"},
    }
    job = {
        "metadata": {"name": "bunny-1", "uid": "j1", "resourceVersion": "105", "labels": {}},
        "spec": {"suspend": False},
        "status": {"active": 1},
    }
    now = datetime(2026, 1, 1, 11, 1, tzinfo=UTC)
    seen = NewestSeen()
    seen.freshen(KEY, [pod("110", "Running")])
    lagging = [pod("100", "Pending")]
    assert observe_job(job, lagging, now, None).phase == Phase.PENDING  # what CI saw
    assert decide(cr, [job], seen.freshen(KEY, lagging), now).status["phase"] == Phase.RUNNING
