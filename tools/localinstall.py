"""Install the Helm chart on the local control plane, as a user would, and feed it a capture.

Shared by `make demo` (tools/demo.py) and the end-to-end tests (tests/e2e). The node agent runs each
pod's container command as a local process and pulls no image, so the chart is installed with values
that make its Deployment run the `recon-operator` console script (the venv's `bin/` is first on a
pod's PATH), workers run `recon-worker run`, and every port is a free one on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from localcluster import binaries

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "recon-operator"
SPOT = Path(os.environ.get("RECON_MESHES", REPO.parent / "shared" / "data" / "meshes")) / "spot" / "spot.obj"
GROUP, VERSION, PLURAL = "recon.dev", "v1alpha1", "reconstructionjobs"


@dataclass(frozen=True)
class LocalPorts:
    """Ports the operator process binds on this machine (every pod shares 127.0.0.1 here)."""

    metrics: int
    health: int


def local_node_values(
    s3_endpoint: str,
    ports: LocalPorts,
    *,
    worker_cpu: str = "1",
    worker_memory: str = "4Gi",
    reconcile_interval_s: float = 2.0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Chart values for the local node agent: console scripts instead of images, small CPU workers."""
    values: dict[str, Any] = {
        "command": ["recon-operator"],
        "metrics": {"port": ports.metrics},
        "livenessProbe": {"port": ports.health},
        "operator": {
            "reconcileIntervalSeconds": reconcile_interval_s,
            "preflightRetries": 2,
            "preflightBackoffSeconds": 1,
        },
        "worker": {
            "command": ["recon-worker", "run"],
            # The local node has 2 CPUs: the production defaults (4 CPU, 16Gi) would never schedule.
            "cpu": worker_cpu,
            "memory": worker_memory,
            "scratchSize": "2Gi",
            "s3": {"endpoint": s3_endpoint, "region": "us-east-1"},
        },
    }
    return _merge(values, dict(extra or {}))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def helm(kubeconfig: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The pinned helm (tools/k8s/build.sh) against the cluster; raises with helm's stderr on failure."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HELM_CACHE_HOME": str(kubeconfig.parent / "helm-cache")}
    env["HELM_CONFIG_HOME"] = str(kubeconfig.parent / "helm-config")
    env["HELM_DATA_HOME"] = str(kubeconfig.parent / "helm-data")
    result = subprocess.run(
        [str(binaries.binary("helm")), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr.strip()}")
    return result


def install_chart(
    kubeconfig: Path, release: str, namespace: str, values: Mapping[str, Any], values_file: Path
) -> subprocess.CompletedProcess[str]:
    """`helm install --wait` of charts/recon-operator (CRD included); returns helm's output (NOTES)."""
    values_file.write_text(yaml.safe_dump(dict(values), sort_keys=False))
    return helm(
        kubeconfig,
        "install", release, str(CHART),
        "--namespace", namespace, "--create-namespace",
        "--values", str(values_file),
        "--wait", "--timeout", "3m",
    )  # fmt: skip


def render_capture(output: Path, views: int, test_views: int, resolution: int, mesh: Path = SPOT) -> Path:
    """`recon-worker synth`: a NeRF-synthetic capture of `mesh` (spot by default) in `output`."""
    if not mesh.exists():
        raise FileNotFoundError(f"mesh {mesh} not found (set RECON_MESHES to the folder holding spot/)")
    command = [
        str(Path(sys.executable).parent / "recon-worker"), "synth",
        "--mesh", str(mesh), "--output", str(output),
        "--views", str(views), "--test-views", str(test_views), "--resolution", str(resolution),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"recon-worker synth failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return output


def upload_folder(s3: Any, folder: Path, bucket: str, prefix: str) -> int:
    """Upload every file under `folder` to s3://bucket/prefix/; returns how many."""
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}")
            count += 1
    return count


def reconstruction_job(
    name: str,
    input_uri: str,
    output_uri: str,
    credentials_secret: str,
    quality: Mapping[str, Any] | None = None,
    transforms_file: str = "transforms_train.json",
    **spec: Any,
) -> dict[str, Any]:
    """A CPU ReconstructionJob (`resources.gpus: 0`), draft preset unless `quality` says otherwise.

    `recon-worker synth` writes the train/test split files only, so the job names the train file.
    """
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReconstructionJob",
        "metadata": {"name": name},
        "spec": {
            "input": {"uri": input_uri, "transformsFile": transforms_file},
            "output": {"uri": output_uri},
            "storage": {"credentialsSecret": credentials_secret},
            "quality": dict(quality or {"preset": "draft"}),
            "resources": {"gpus": 0},
            **spec,
        },
    }


def credentials_secret(name: str, credentials: Mapping[str, str]) -> dict[str, Any]:
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {k: credentials[k] for k in keys},
    }
