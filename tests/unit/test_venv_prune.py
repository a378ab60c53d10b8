"""tools/venv_prune.sh: shared venv bases no clone has used for DAYS days are removed, nothing else is."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import REPO

SCRIPT = REPO / "tools" / "venv_prune.sh"
DAY = 86_400


def make_base(cache: Path, name: str, age_days: float | None) -> Path:
    base = cache / name
    (base / "lib").mkdir(parents=True)
    if age_days is not None:
        stamp = base / ".last-used"
        stamp.touch()
        then = time.time() - age_days * DAY
        os.utime(stamp, (then, then))
    return base


def prune(cache: Path, keep: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), str(cache), str(keep), *extra], capture_output=True, text=True, timeout=60, check=False
    )


def test_old_bases_go_recent_ones_and_the_current_one_stay(tmp_path: Path) -> None:
    current = make_base(tmp_path, "venv-base-" + "a" * 16, age_days=30)  # in use now, whatever its stamp
    recent = make_base(tmp_path, "venv-base-" + "b" * 16, age_days=2)
    stale = make_base(tmp_path, "venv-base-" + "c" * 16, age_days=20)
    unstamped = make_base(tmp_path, "venv-base-" + "d" * 16, age_days=None)
    old_layout = make_base(tmp_path, "venv-" + "e" * 16, age_days=None)
    elsewhere = make_base(tmp_path / "other", "venv-base-" + "f" * 16, age_days=40)
    link = tmp_path / ("venv-base-" + "f" * 16)
    link.symlink_to(elsewhere)
    unrelated = tmp_path / "k8s-v1.36.3"
    unrelated.mkdir()
    lock = tmp_path / "venv.lock"
    lock.touch()

    result = prune(tmp_path, current)

    assert result.returncode == 0, result.stderr
    assert current.is_dir() and recent.is_dir() and unrelated.is_dir() and lock.is_file()
    assert link.is_symlink() and elsewhere.is_dir(), "a linked base is not ours to delete"
    assert not stale.exists() and not unstamped.exists() and not old_layout.exists()
    assert str(stale) in result.stdout, "a removal is announced"


def test_days_come_from_the_argument_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    current = make_base(tmp_path, "venv-base-" + "a" * 16, age_days=0)
    week_old = make_base(tmp_path, "venv-base-" + "b" * 16, age_days=7)
    assert prune(tmp_path, current, "30").returncode == 0 and week_old.is_dir()
    assert prune(tmp_path, current, "3").returncode == 0 and not week_old.exists()
    bad = prune(tmp_path, current, "two")
    assert bad.returncode == 2 and "RECON_VENV_KEEP_DAYS" in bad.stderr
