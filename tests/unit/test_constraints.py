"""constraints.txt: the one lock of exact versions that the venv and both images install with."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO

LOCK = REPO / "constraints.txt"
# Packages only the worker image installs (tools/lock.py adds them to the venv's freeze).
IMAGE_ONLY = {"diffrp-nvdiffrast", "ninja", "nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm", "nvidia-cuda-cccl"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"constraints.txt:{number}: not an exact `name==version` pin: {line!r}"
        name = normalise(match.group(1))
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = match.group(2)
    return pins


PROJECT = {"recon-operator", "recon-worker", "kubectl-recon"}


def project_requirements() -> list[Requirement]:
    requirements = []
    for package in ("operator", "worker", "kubectl-recon"):
        project = tomllib.loads((REPO / package / "pyproject.toml").read_text())["project"]
        requirements += [Requirement(r) for r in project["dependencies"]]
        for extra in project.get("optional-dependencies", {}).values():
            requirements += [Requirement(r) for r in extra]
    # The project's own distributions (kubectl-recon needs recon-worker's core; `cuda` names `engine`).
    return [r for r in requirements if normalise(r.name) not in PROJECT]


def test_lock_holds_exact_pins_and_not_the_project_itself() -> None:
    pins = locked()
    assert len(pins) > 50
    assert not PROJECT & set(pins)


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    pins = locked()
    for requirement in project_requirements():
        name = normalise(requirement.name)
        assert name in pins, f"{requirement} is not in constraints.txt: run `make venv` then `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside the pyproject's {requirement}"
        )


def test_nvcc_is_the_cuda_release_of_torchs_own_cuda_wheels() -> None:
    pins = locked()
    for name in ("nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm"):
        nvrtc = pins["nvidia-cuda-nvrtc"]
        assert pins[name] == nvrtc, f"{name}=={pins[name]} but torch's nvrtc is {nvrtc}"


def test_the_venv_installed_exactly_the_locked_versions() -> None:
    """tools/venv.sh installs with `-c constraints.txt`: what is installed is what is locked, both ways."""
    installed = {normalise(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    pins = locked()
    wrong = {name: (pin, installed[name]) for name, pin in pins.items() if installed.get(name, pin) != pin}
    assert not wrong, f"installed versions differ from constraints.txt (locked, installed): {wrong}"
    missing = sorted(set(pins) - set(installed) - IMAGE_ONLY)
    assert not missing, f"locked but not in the venv: {missing}"
    unlocked = sorted(set(installed) - set(pins) - PROJECT - {"pip", "setuptools", "wheel"})
    assert not unlocked, f"in the venv but not locked (run `make lock`): {unlocked}"


def test_venv_script_installs_with_the_lock_and_keys_its_cache_on_it() -> None:
    script = (REPO / "tools" / "venv.sh").read_text()
    assert "constraints=constraints.txt" in script
    assert 'cat operator/pyproject.toml worker/pyproject.toml kubectl-recon/pyproject.toml "$constraints"' in script
    assert 'cflag=(-c "$constraints")' in script


@pytest.mark.parametrize("target", ["lock", "images"])
def test_make_targets_exist(target: str) -> None:
    assert re.search(rf"^{target}:.*## ", (REPO / "Makefile").read_text(), re.M)
