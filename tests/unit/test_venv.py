"""tools/venv.sh: two clones on one machine share the cached base of dependencies but each imports its own
tree (it once re-pointed one shared venv at whichever clone ran it last)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from localcluster import binaries
from tests.conftest import REPO

pytestmark = pytest.mark.slow


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
    real_cache = binaries.cache_dir()
    built = [base for base in real_cache.glob("venv-base-*") if (base / ".complete").is_file()]
    if not built:
        pytest.skip(f"no built venv base in {real_cache}: run `make venv` first")
    # A cache of links to the bases already built; with pip offline, a base these files do not match
    # fails to build at once instead of downloading PyTorch.
    cache = tmp_path / "cache"
    cache.mkdir()
    for base in built:
        (cache / base.name).symlink_to(base)
    env = {**os.environ, "RECON_CACHE": str(cache), "PIP_NO_INDEX": "1"}
    clones = [tmp_path / "a", tmp_path / "b"]
    for clone in clones:
        run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], tmp_path)
    for clone in clones:
        made = subprocess.run(["tools/venv.sh"], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        if made.returncode != 0 and "building the shared base" in made.stdout:
            pytest.skip("the last commit's dependencies have no built base here: run `make venv` on it first")
        assert made.returncode == 0, made.stdout + made.stderr
    bases = {Path((clone / ".venv" / ".recon-base").read_text().strip()) for clone in clones}
    assert len(bases) == 1 and bases.pop().resolve() in {b.resolve() for b in built}, "the clones built a base"
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
