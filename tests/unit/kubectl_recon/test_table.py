"""What `kubectl recon get` prints."""

from __future__ import annotations

from datetime import UTC, datetime

from recon_kubectl.table import age, details, format_table, row

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def test_ages_read_like_kubectls() -> None:
    assert [age(t, NOW) for t in ("2026-12-01T11:59:15Z", "2026-12-01T11:48:00Z", "2026-12-01T07:00:00Z")] == [
        "45s",
        "12m",
        "5h",
    ]
    assert age("2026-11-26T12:00:00Z", NOW) == "5d"


def test_row_shows_psnr_with_one_decimal() -> None:
    resource = {
        "metadata": {"name": "spot", "creationTimestamp": "2026-12-01T11:58:00Z"},
        "status": {"phase": "Succeeded", "progress": 100, "stage": "publish", "metrics": {"psnr": 30.061671654310217}},
    }
    assert row(resource, NOW) == ["spot", "Succeeded", "100", "publish", "30.1", "2m"]
    lines = format_table([row(resource, NOW)]).splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "PROGRESS", "STAGE", "PSNR", "AGE"]
    assert lines[1].split() == ["spot", "Succeeded", "100", "publish", "30.1", "2m"]


def test_details_show_stage_timings_and_gates_from_the_manifest() -> None:
    resource = {"metadata": {"name": "spot"}, "status": {"phase": "Succeeded", "reason": "Succeeded"}}
    manifest = {
        "stageSeconds": {"fetch": 0.5, "refine": 12.25},
        "metrics": {"psnr": 30.06, "gates": {"passed": False, "failures": ["PSNR 30.06 dB is below 32"]}},
        "files": [{}, {}],
    }
    text = details(resource, manifest)
    assert "stages:  fetch 0.5s, refine 12.2s (total 12.8s)" in text
    assert "gates:   FAILED (PSNR 30.06 dB is below 32)" in text
    assert "files:   2 published" in text
    assert "not published yet" in details(resource, None)
