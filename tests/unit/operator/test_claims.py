"""claims.py: one output prefix, one active ReconstructionJob (issue 11 point 9)."""

from __future__ import annotations

from typing import Any

from recon_operator.claims import output_conflict, overlaps


def cr(name: str, output: str, created: str, uid: str | None = None) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "uid": uid or name, "creationTimestamp": created}
    return {"metadata": meta, "spec": {"input": {"uri": "s3://in/c/"}, "output": {"uri": output}}}


def test_overlap_is_by_folder_not_by_string() -> None:
    assert overlaps("s3://out/a/", "s3://out/a")
    assert overlaps("s3://out/a/b/", "s3://out/a/")
    assert overlaps("s3://out//a/", "s3://out/a/")
    assert not overlaps("s3://out/a/", "s3://out/ab/")
    assert not overlaps("s3://out/a/", "s3://other/a/")


def test_the_younger_of_two_yields_and_the_conflict_is_named() -> None:
    first = cr("first", "s3://out/shared/", "2026-01-01T10:00:00Z")
    second = cr("second", "s3://out/shared/", "2026-01-01T10:00:01Z")
    pending: dict[str, Any] = {}
    assert output_conflict(first, [(second, pending)]) is None
    found = output_conflict(second, [(first, pending)])
    assert found is not None and "ReconstructionJob ns/first" in found and "s3://out/shared/" in found


def test_a_started_attempt_holds_the_prefix_even_against_older_ones() -> None:
    older = cr("older", "s3://out/shared/", "2026-01-01T10:00:00Z")
    running = cr("running", "s3://out/shared/sub/", "2026-01-01T11:00:00Z")
    assert output_conflict(older, [(running, {"phase": "Running", "attempts": 1})]) is not None


def test_a_finished_one_releases_the_prefix() -> None:
    done = cr("done", "s3://out/shared/", "2026-01-01T10:00:00Z")
    again = cr("again", "s3://out/shared/", "2026-01-01T11:00:00Z")
    for phase in ("Succeeded", "Failed", "Cancelled"):
        assert output_conflict(again, [(done, {"phase": phase, "attempts": 1})]) is None
    assert output_conflict(again, [(again, {"phase": "Running", "attempts": 1})]) is None  # itself


def test_same_creation_second_orders_by_uid() -> None:
    a = cr("a", "s3://out/x/", "2026-01-01T10:00:00Z", uid="1")
    b = cr("b", "s3://out/x/", "2026-01-01T10:00:00Z", uid="2")
    assert output_conflict(a, [(b, {})]) is None and output_conflict(b, [(a, {})]) is not None
