"""tools/venv.sh: two clones on one machine share the cached base of dependencies but each imports its own
tree (it once re-pointed one shared venv at whichever clone ran it last)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
BASE_INPUTS = ("operator/pyproject.toml", "worker/pyproject.toml", "constraints.txt")


def run(args: list[str], cwd: Path, timeout: int = 300) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(args)} in {cwd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def imported_from(clone: Path, module: str) -> Path:
    return Path(
        run(
            [str(clone / ".venv" / "bin" / "python"), "-c", f"import {module}; print({module}.__file__)"], clone
        ).strip()
    )


def test_two_clones_share_the_base_but_import_their_own_trees(tmp_path: Path) -> None:
    marker = REPO / ".venv" / ".recon-base"
    if not marker.is_file() or not (Path(marker.read_text().strip()) / ".complete").is_file():
        pytest.skip("needs this checkout's venv (make venv): the clones reuse its base instead of building one")
    clones = [tmp_path / "a", tmp_path / "b"]
    for clone in clones:
        run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], tmp_path)
    for name in BASE_INPUTS:  # what keys the base: equal files, the base is reused, nothing is downloaded
        here, there = REPO / name, clones[0] / name
        if here.exists() != there.exists() or (here.exists() and here.read_bytes() != there.read_bytes()):
            pytest.skip(f"{name} differs from the last commit: the clones would build another base")
    env_cache = {"RECON_CACHE": str(Path(marker.read_text().strip()).parent)}
    for clone in clones:
        subprocess.run(
            ["tools/venv.sh"], cwd=clone, env={**os.environ, **env_cache}, check=True, timeout=600,
            capture_output=True,
        )  # fmt: skip
    bases = {(clone / ".venv" / ".recon-base").read_text() for clone in clones}
    assert bases == {marker.read_text()}, "the clones built or chose another base"
    # The last clone to run venv.sh must not capture the other's imports.
    for clone in clones:
        for module, folder in (("recon_worker", "worker"), ("recon_operator", "operator")):
            assert imported_from(clone, module).is_relative_to(clone / folder), (
                f"{clone.name} imports {module} elsewhere"
            )
    # A change in one clone is seen there only.
    (clones[0] / "worker" / "recon_worker" / "clone_marker.py").write_text("WHO = 'a'\n")
    assert imported_from(clones[0], "recon_worker.clone_marker").is_relative_to(clones[0])
    missing = subprocess.run(
        [str(clones[1] / ".venv" / "bin" / "python"), "-c", "import recon_worker.clone_marker"],
        cwd=clones[1], capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr
