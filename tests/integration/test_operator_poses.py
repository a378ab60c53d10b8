"""Photos without poses through the operator on the local control plane: a CPU poses Job first, then the
worker Job, both running the real worker (`recon-worker poses`, then `recon-worker run` on the CPU with a
shrunk draft preset) against the S3 server.

- A turntable of spot (JPEG photos over a static textured backdrop, no transforms file, no masks) goes
  Posing → Pending → Running → Succeeded; the poses Job requests no GPU and has finished before the worker
  Job exists, and the worker restores its poses instead of running structure from motion again.
- Textureless photos fail with PosesUnrecoverable from the poses Job: no worker Job is ever created.

One render (24 + 2 views, 320^2), two structure from motion runs, one short engine run; nothing is timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from localcluster import Cluster
from localcluster.kube import raw, wait_for
from tests.conftest import MESHES
from tests.s3server import TEST_CREDENTIALS, S3Server, free_port
from tests.unit.worker.test_poses import textureless_photos

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "recon.dev", "v1alpha1", "reconstructionjobs"
BIN = Path(sys.executable).parent
WORKER = [sys.executable, "-m", "recon_worker.cli"]
# The draft preset shrunk until a CPU run takes seconds (as in test_kubectl_recon).
TINY_QUALITY = {
    "preset": "draft",
    "reconstruction": {"resolution": 32},
    "refinement": {"iterations": 2, "renderResolution": 48, "textureSize": 256},
    "export": {"targetFaces": 2000},
}


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The operator as its own process, the real worker as each pod's process; yields its log."""
    log = tmp_path_factory.mktemp("recon-operator") / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "RECON_OPERATOR_WORKER_COMMAND": json.dumps([*WORKER, "run"]),
        "RECON_OPERATOR_POSES_COMMAND": json.dumps([*WORKER, "poses"]),
        "RECON_OPERATOR_POSES_CPU": "500m",
        "RECON_OPERATOR_POSES_MEMORY": "2Gi",
        "RECON_OPERATOR_S3_ENDPOINT": s3_server.endpoint,
        "RECON_OPERATOR_DEFAULT_CPU": "500m",
        "RECON_OPERATOR_DEFAULT_MEMORY": "2Gi",
        "RECON_OPERATOR_RECONCILE_INTERVAL_S": "1",
        "RECON_OPERATOR_PREFLIGHT_RETRIES": "1",
        "RECON_OPERATOR_PREFLIGHT_BACKOFF_S": "1",
        "RECON_OPERATOR_METRICS_PORT": str(free_port()),
        "RECON_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{free_port()}/healthz",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "recon-operator")], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def buckets(s3: S3Server, namespace: str, core: client.CoreV1Api) -> S3Server:
    s3.client().create_bucket(Bucket="captures")
    s3.client().create_bucket(Bucket="results")
    creds = {k: v for k, v in TEST_CREDENTIALS.items() if k != "AWS_DEFAULT_REGION"}
    raw(core.create_namespaced_secret, namespace, {"metadata": {"name": "s3"}, "stringData": creds})
    return s3


@pytest.fixture(scope="module")
def turntable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Spot's turntable photos with blotches (SIFT needs texture): no transforms file, no alpha. 24 views
    (15 degrees apart) register all 26 photos; at 20 views (18 degrees) pycolmap registered 2 of 22."""
    from recon_worker.engine.synth import SynthOptions
    from recon_worker.engine.synth_photos import render_turntable

    out = tmp_path_factory.mktemp("turntable")
    options = SynthOptions(resolution=320, supersample=1)
    shoot = render_turntable(
        MESHES / "spot" / "spot.obj", out, views=24, test_views=2, resolution=320, options=options, patterned=True
    )
    photos: Path = shoot["photos"]
    assert not list(photos.glob("transforms*.json"))
    return photos


def upload(s3: S3Server, folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.client().upload_file(str(path), "captures", prefix + path.relative_to(folder).as_posix())


def submit(api: client.ApiClient, namespace: str, name: str, **input_fields: Any) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReconstructionJob",
        "metadata": {"name": name},
        "spec": {
            "input": {"uri": f"s3://captures/{name}/", **input_fields},
            "output": {"uri": f"s3://results/{name}/"},
            "storage": {"credentialsSecret": "s3"},
            "resources": {"gpus": 0},
            "quality": TINY_QUALITY,
            "gates": {"requireWatertight": False},
        },
    }
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


class PhaseLog:
    """Every phase the CR shows, in order, from a watch (a poll could miss the short Pending between Jobs)."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.phases: list[str] = []
        self._watch = watch.Watch()
        custom = client.CustomObjectsApi(api)
        stream = self._watch.stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            timeout_seconds=900,
        )
        self._thread = threading.Thread(target=self._follow, args=(stream,), daemon=True)
        self._thread.start()

    def _follow(self, stream: Iterator[dict[str, Any]]) -> None:
        for event in stream:
            phase = (event["object"].get("status") or {}).get("phase")
            if phase and (not self.phases or self.phases[-1] != phase):
                self.phases.append(phase)

    def stop(self) -> None:
        self._watch.stop()


def resource(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return raw(client.CustomObjectsApi(api).get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)


def wait_phase(api: client.ApiClient, namespace: str, name: str, phases: set[str], timeout: float) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = resource(api, namespace, name).get("status") or {}
        return status if status.get("phase") in phases else None

    try:
        status: dict[str, Any] = wait_for(f"{name} in {sorted(phases)}", reached, timeout, interval=1)
    except Exception as exc:
        raise AssertionError(f"{exc}; status: {json.dumps(resource(api, namespace, name).get('status'))}") from None
    return status


def jobs_of(batch: client.BatchV1Api, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    listed = raw(batch.list_namespaced_job, namespace, label_selector=f"recon.dev/job={name}")
    return {job["metadata"]["name"]: job for job in listed["items"]}


def limits_of(job: dict[str, Any]) -> dict[str, str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    limits: dict[str, str] = container["resources"].get("limits") or {}
    return limits


def test_photos_are_posed_by_a_cpu_job_then_reconstructed_by_the_worker_job(
    operator: Path, api: client.ApiClient, batch: client.BatchV1Api, buckets: S3Server, namespace: str, turntable: Path
) -> None:
    upload(buckets, turntable, "spot-photos/")
    phases = PhaseLog(api, namespace, "spot-photos")
    try:
        submit(api, namespace, "spot-photos")
        posing = wait_phase(api, namespace, "spot-photos", {"Posing", "Failed"}, timeout=120)
        assert posing["phase"] == "Posing", posing
        assert posing["jobName"] == "spot-photos-1-poses"
        assert "spot-photos-1" not in jobs_of(batch, namespace, "spot-photos")  # no GPU Job while posing
        status = wait_phase(api, namespace, "spot-photos", {"Succeeded", "Failed", "Cancelled"}, timeout=900)
        assert status["phase"] == "Succeeded", (status["reason"], status["message"])
    finally:
        phases.stop()
    assert phases.phases == ["Posing", "Pending", "Running", "Succeeded"], phases.phases

    jobs = jobs_of(batch, namespace, "spot-photos")
    assert set(jobs) == {"spot-photos-1-poses", "spot-photos-1"}
    poses, worker = jobs["spot-photos-1-poses"], jobs["spot-photos-1"]
    assert poses["metadata"]["labels"]["app.kubernetes.io/component"] == "poses"
    assert not any("gpu" in key for key in limits_of(poses)), limits_of(poses)
    assert limits_of(poses)["cpu"] == "500m"
    # The worker Job was created only once the poses Job had completed.
    assert worker["metadata"]["creationTimestamp"] >= poses["status"]["completionTime"]
    assert status["jobName"] == "spot-photos-1" and status["attempts"] == 1

    # The published result holds the recovered cameras, and the worker restored them (no second SfM).
    manifest = json.loads(buckets.client().get_object(Bucket="results", Key="spot-photos/manifest.json")["Body"].read())
    names = {f["name"] for f in manifest["files"]}
    assert {"poses/transforms_train.json", "poses/transforms_test.json"} <= names, sorted(names)
    report = json.loads(buckets.client().get_object(Bucket="results", Key="spot-photos/report.json")["Body"].read())
    print("report timings:", json.dumps(report.get("timings") or report.get("stageSeconds")))
    assert status["metrics"]["psnr"] > 0


def test_unposable_photos_fail_from_the_poses_job_before_any_worker_job(
    operator: Path, api: client.ApiClient, batch: client.BatchV1Api, buckets: S3Server, namespace: str, tmp_path: Path
) -> None:
    textureless_photos(tmp_path / "ball")
    upload(buckets, tmp_path / "ball", "ball/")
    submit(api, namespace, "ball", poses="estimate", minRegistered=0.5)
    status = wait_phase(api, namespace, "ball", {"Succeeded", "Failed", "Cancelled"}, timeout=300)
    assert (status["phase"], status["reason"]) == ("Failed", "PosesUnrecoverable"), status["message"]
    assert status["jobName"] == "ball-1-poses" and "of 12 photos" in status["message"]
    assert set(jobs_of(batch, namespace, "ball")) == {"ball-1-poses"}  # no worker Job, no GPU asked for
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert (failed["status"], failed["reason"]) == ("True", "PosesUnrecoverable")
