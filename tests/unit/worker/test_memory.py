"""The worker's memory figure: RECON_MEMORY_BYTES, the cgroup limit, the machine's RAM; the smallest wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon_worker.capture_checks import CaptureLimits
from recon_worker.memory import physical_memory_bytes, worker_memory_bytes


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
    with pytest.raises(ValueError, match="RECON_MEMORY_BYTES must be a positive number of bytes, not '8Gi'"):
        worker_memory_bytes({"RECON_MEMORY_BYTES": "8Gi"}, ())


def test_limits_for_the_worker_name_their_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECON_MEMORY_BYTES", str(2 * 2**30))
    limits = CaptureLimits.for_worker("cpu", min_views=3)
    assert limits.memory_bytes == 2 * 2**30 and limits.min_views == 3
    assert limits == CaptureLimits.for_memory(2 * 2**30, "cpu", min_views=3)
    assert limits.max_total_pixels < CaptureLimits.for_worker("cuda").max_total_pixels
