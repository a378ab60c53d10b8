"""The worker's memory figure: RECON_MEMORY_BYTES, the cgroup limit, the machine's RAM; the smallest wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon_worker.capture_checks import CaptureLimits
from recon_worker.cli import main
from recon_worker.memory import BASE_BYTES, BYTES_PER_VIEW, memory_model, physical_memory_bytes, worker_memory_bytes
from tests.unit.worker.captures import write_capture


def cgroup(tmp_path: Path, text: str) -> tuple[Path, ...]:
    path = tmp_path / "memory.max"
    path.write_text(text + "\n")
    return (path,)


def test_cgroup_limit_below_the_machine_wins(tmp_path: Path) -> None:
    assert worker_memory_bytes({}, cgroup(tmp_path, str(3 * 2**30))) == 3 * 2**30


def test_unlimited_cgroup_falls_back_to_the_machine(tmp_path: Path) -> None:
    assert worker_memory_bytes({}, cgroup(tmp_path, "max")) == physical_memory_bytes()
    assert worker_memory_bytes({}, cgroup(tmp_path, str(2**63 - 4096))) == physical_memory_bytes()


def test_the_request_counts_when_smaller(tmp_path: Path) -> None:
    environ = {"RECON_MEMORY_BYTES": str(2 * 2**30)}
    assert worker_memory_bytes(environ, cgroup(tmp_path, str(3 * 2**30))) == 2 * 2**30


def test_a_bad_request_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RECON_MEMORY_BYTES must be a number of bytes, not '8Gi'"):
        worker_memory_bytes({"RECON_MEMORY_BYTES": "8Gi"}, ())


def test_a_zero_request_is_no_request(tmp_path: Path) -> None:
    # The downward API gives "0" for a pod without a memory request: the cgroup limit serves then.
    assert worker_memory_bytes({"RECON_MEMORY_BYTES": "0"}, cgroup(tmp_path, str(3 * 2**30))) == 3 * 2**30


def test_the_capture_limits_follow_the_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The figure the operator passes decides how many views `validate` (and `run`) accept."""
    write_capture(tmp_path, views=12, size=16)
    request = BASE_BYTES["cpu"] + 2 * 10 * BYTES_PER_VIEW  # room for 10 views on the CPU
    assert memory_model(request, "cpu")[0] == 10
    monkeypatch.setenv("RECON_MEMORY_BYTES", str(request))
    assert main(["validate", "--input", str(tmp_path), "--device", "cpu"]) == 2
    shown = f"{request / 2**30:.1f} GiB"
    assert f"capture: has 12 views, above the limit of 10, derived from {shown} of memory" in capsys.readouterr().out
    monkeypatch.setenv("RECON_MEMORY_BYTES", str(request + 2 * 2 * BYTES_PER_VIEW))  # room for 12
    assert main(["validate", "--input", str(tmp_path), "--device", "cpu"]) == 0


def test_limits_for_the_worker_name_their_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECON_MEMORY_BYTES", str(4 * 2**30))
    limits = CaptureLimits.for_worker("cpu", min_views=3)
    assert limits.memory_bytes == 4 * 2**30 and limits.min_views == 3
    assert limits == CaptureLimits.for_memory(4 * 2**30, "cpu", min_views=3)
    assert limits.max_total_pixels < CaptureLimits.for_worker("cuda").max_total_pixels
