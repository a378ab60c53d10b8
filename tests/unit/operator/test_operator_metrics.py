"""Metrics registry and transition events."""

from __future__ import annotations

import urllib.request

from recon_operator.events import event_manifest, transition_event
from recon_operator.metrics import OperatorMetrics


def test_phase_gauge_counts_each_resource_once() -> None:
    metrics = OperatorMetrics()
    assert metrics.phases.record("ns", "a", "Pending") is None
    assert metrics.phases.record("ns", "a", "Running") == "Pending"
    metrics.phases.record("ns", "b", "Running")
    assert metrics.registry.get_sample_value("recon_jobs", {"phase": "Running"}) == 2
    assert metrics.registry.get_sample_value("recon_jobs", {"phase": "Pending"}) == 0
    metrics.phases.forget("ns", "a")
    assert metrics.registry.get_sample_value("recon_jobs", {"phase": "Running"}) == 1


def test_metrics_are_served_over_http() -> None:
    metrics = OperatorMetrics()
    metrics.preflight_failures.labels("InputsInvalid").inc()
    port = metrics.serve(0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        metrics.stop()
    assert 'recon_preflight_failures_total{reason="InputsInvalid"} 1.0' in text
    assert "recon_time_to_job_seconds_bucket" in text
    again = OperatorMetrics()
    assert again.serve(port) == port  # the port was freed
    again.stop()


def test_events_only_on_phase_changes() -> None:
    assert transition_event("Running", {"phase": "Running", "reason": "WorkerRunning"}) is None
    started = transition_event("Pending", {"phase": "Running", "reason": "WorkerRunning", "message": "on n1"})
    assert started is not None and started.type == "Normal" and started.message == "Pending → Running: on n1"
    failed = transition_event("Running", {"phase": "Failed", "reason": "OOMKilled", "message": "m"})
    assert failed is not None and (failed.type, failed.reason) == ("Warning", "OOMKilled")


def test_event_manifest_points_at_the_resource() -> None:
    owner = {
        "apiVersion": "recon.dev/v1alpha1",
        "kind": "ReconstructionJob",
        "metadata": {"name": "bunny", "namespace": "ns", "uid": "u1"},
    }
    event = transition_event(None, {"phase": "Pending", "reason": "JobCreated", "message": "creating Job bunny-1"})
    assert event is not None
    manifest = event_manifest(owner, event, "2026-01-01T00:00:00Z", "op-0")
    assert manifest["involvedObject"] == {
        "apiVersion": "recon.dev/v1alpha1",
        "kind": "ReconstructionJob",
        "name": "bunny",
        "namespace": "ns",
        "uid": "u1",
    }
    assert (manifest["type"], manifest["reason"]) == ("Normal", "JobCreated")
    assert manifest["message"] == "New → Pending: creating Job bunny-1"


def test_event_names_follow_what_they_record_so_a_restart_cannot_post_one_twice() -> None:
    owner = {"metadata": {"name": "bunny", "namespace": "ns", "uid": "u1"}}
    status = {"phase": "Pending", "reason": "JobCreated", "message": "creating Job bunny-1", "attempts": 1}
    first = transition_event(None, status)
    # After a restart the cold cache may show another previous phase and message: the same Event.
    again = transition_event("Running", {**status, "message": "creating Job bunny-1 (again)"})
    assert first is not None and again is not None
    name = event_manifest(owner, first, "t", "op-0")["metadata"]["name"]
    assert name == event_manifest(owner, again, "t2", "op-1")["metadata"]["name"]
    assert name.startswith("bunny.") and "generateName" not in event_manifest(owner, first, "t", "op-0")["metadata"]
    others = [
        transition_event(None, {**status, "attempts": 2}),
        transition_event(None, {**status, "phase": "Running", "reason": "Running"}),
        transition_event(None, {**status, "reason": "Retrying"}),
    ]
    names = {event_manifest(owner, e, "t", "op")["metadata"]["name"] for e in others if e is not None}
    assert len(names) == 3 and name not in names
    other_uid = {"metadata": {**owner["metadata"], "uid": "u2"}}
    assert event_manifest(other_uid, first, "t", "op")["metadata"]["name"] != name
    long_owner = {"metadata": {"name": "a" * 253, "namespace": "ns", "uid": "u1"}}
    assert len(event_manifest(long_owner, first, "t", "op")["metadata"]["name"]) <= 253
