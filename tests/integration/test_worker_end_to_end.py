"""`recon-worker run` with the real engine (CPU, tiny settings) on a synthetic capture of spot, through S3."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MESHES, REPO
from tests.s3server import S3Server
from tests.unit.worker.captures import upload_folder

pytestmark = pytest.mark.slow

# The draft preset, shrunk until the whole pipeline takes seconds on a CPU.
TINY = {
    "preset": "draft",
    "reconstruction": {"resolution": 32},
    "refinement": {"iterations": 2, "renderResolution": 48, "batchViews": 2, "textureSize": 256},
    "export": {"formats": ["glb", "obj", "ply"], "targetFaces": 2000},
}


def test_real_engine_run_publishes_a_verified_textured_mesh(s3: S3Server, tmp_path: Path) -> None:
    pytest.importorskip("recon_worker.engine.stages", reason="the engine's stages have not landed yet")
    from recon_worker.engine.synth import SynthOptions, synthesize

    capture = tmp_path / "spot"
    synthesize(MESHES / "spot" / "spot.obj", capture, SynthOptions(views=8, test_views=1, resolution=48, supersample=1))
    client = s3.client()
    client.create_bucket(Bucket="captures")
    client.create_bucket(Bucket="results")
    upload_folder(client, capture, "captures", "spot/")
    task = {
        "apiVersion": "recon.dev/v1alpha1",
        "job": {"namespace": "default", "name": "spot", "uid": "e2e-uid"},
        "input": {"uri": "s3://captures/spot/"},
        "output": {"uri": "s3://results/spot/"},
        "storage": {"endpoint": s3.endpoint},
        "quality": TINY,
        "gates": {"minMaskIoU": 0.5},
        "compute": {"gpus": 0},
    }
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "RECON_ENGINE")}
    env.update(PYTHONPATH=str(REPO), RECON_TASK=json.dumps(task), RECON_TERMINATION_LOG=str(tmp_path / "log"))
    result = subprocess.run(
        [sys.executable, "-m", "recon_worker.cli", "run"], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((tmp_path / "log").read_text())["reason"] == "Succeeded"

    manifest = json.loads(client.get_object(Bucket="results", Key="spot/manifest.json")["Body"].read())
    names = {f["name"] for f in manifest["files"]}
    assert {"mesh.glb", "mesh.obj", "mesh.ply", "report.json", "report.html"} <= names
    assert any(name.startswith("previews/") for name in names)
    for entry in manifest["files"]:
        body = client.get_object(Bucket="results", Key=f"spot/{entry['name']}")["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (entry["size"], entry["sha256"])
    metrics = manifest["metrics"]
    assert metrics["faces"] <= 2000 and metrics["maskIoU"] > 0.5 and metrics["psnr"] > 10
    assert not [
        k["Key"] for k in client.list_objects_v2(Bucket="results").get("Contents", []) if ".recon-staging" in k["Key"]
    ]
