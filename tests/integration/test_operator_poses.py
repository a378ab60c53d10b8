"""Photos without poses through the operator on the local control plane: a CPU poses Job first, then the
worker Job, both running the real worker (`recon-worker poses`, then `recon-worker run` on the CPU with a
shrunk draft preset) against the S3 server.

- A turntable of spot (JPEG photos over a static textured backdrop, no transforms file, no masks) goes
  Posing → Pending → Running → Succeeded; the poses Job requests no GPU and has finished before the worker
  Job exists, and the worker restores its poses instead of running structure from motion again.
- Textureless photos fail with PosesUnrecoverable from the poses Job: no worker Job is ever created.
- With test_operator_lifecycle's STAND_IN as both commands (it waits for a marker object): an operator
  restarted while posing makes no second Job or Event; cancel and suspend stop the poses Job, and resume
  poses again in attempt 2.

One render (24 + 2 views, 320^2), two structure from motion runs, one short engine run; nothing is timed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from localcluster import Cluster
from localcluster.kube import raw, wait_for
from tests.conftest import MESHES
from tests.integration.operator_process import OperatorProcess as Operator
from tests.integration.test_operator_lifecycle import STAND_IN
from tests.s3server import S3Server
from tests.unit.worker.test_poses import textureless_photos

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "recon.dev", "v1alpha1", "reconstructionjobs"
WORKER = [sys.executable, "-m", "recon_worker.cli"]
# The draft preset shrunk until a CPU run takes seconds (as in test_kubectl_recon).
TINY_QUALITY = {
    "preset": "draft",
    "reconstruction": {"resolution": 32},
    "refinement": {"iterations": 2, "renderResolution": 48, "textureSize": 256},
    "export": {"targetFaces": 2000},
}


# The operator's settings for every test here (pods run the commands each fixture names).
SETTINGS = {
    "RECON_OPERATOR_POSES_CPU": "500m",
    "RECON_OPERATOR_POSES_MEMORY": "2Gi",
    "RECON_OPERATOR_DEFAULT_CPU": "500m",
    "RECON_OPERATOR_DEFAULT_MEMORY": "4Gi",
    "RECON_OPERATOR_RECONCILE_INTERVAL_S": "1",
    "RECON_OPERATOR_PREFLIGHT_RETRIES": "1",
    "RECON_OPERATOR_PREFLIGHT_BACKOFF_S": "1",
}


@pytest.fixture
def operator(cluster: Cluster, s3_server: S3Server, tmp_path: Path) -> Iterator[Operator]:
    """The real worker as each pod's process: `recon-worker poses`, then `recon-worker run`."""
    log = tmp_path / "operator.log"
    with Operator(cluster, s3_server, log, [*WORKER, "run"], [*WORKER, "poses"], SETTINGS) as running:
        yield running


@pytest.fixture
def stand_in(cluster: Cluster, s3_server: S3Server, tmp_path: Path) -> Iterator[Operator]:
    """STAND_IN as both commands, not started: the test starts (and restarts) it."""
    command = [sys.executable, "-c", STAND_IN]
    running = Operator(cluster, s3_server, tmp_path / "operator.log", command, command, SETTINGS)
    yield running
    running.stop()


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

    def settle(self, phase: str, timeout: float = 30) -> None:
        """Wait until the watch has delivered `phase`: a poll can see it before the watch's event arrives."""
        deadline = time.monotonic() + timeout
        while (not self.phases or self.phases[-1] != phase) and time.monotonic() < deadline:
            time.sleep(0.2)

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
    operator: Operator,
    api: client.ApiClient,
    batch: client.BatchV1Api,
    buckets: S3Server,
    namespace: str,
    turntable: Path,
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
        phases.settle("Succeeded")
    finally:
        phases.stop()
    jobs = jobs_of(batch, namespace, "spot-photos")
    pods = raw(client.CoreV1Api(api).list_namespaced_pod, namespace, label_selector="recon.dev/job=spot-photos")
    evidence = [
        (
            p["metadata"]["name"],
            p["status"].get("phase"),
            [c.get("state") for c in p["status"].get("containerStatuses") or []],
        )
        for p in pods["items"]
    ]
    assert phases.phases == ["Posing", "Pending", "Running", "Succeeded"], (phases.phases, evidence)

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
    operator: Operator,
    api: client.ApiClient,
    batch: client.BatchV1Api,
    buckets: S3Server,
    namespace: str,
    tmp_path: Path,
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


# ---- the poses Job's life, with the stand-in worker -----------------------------------------------


def stand_in_capture(s3: S3Server, name: str, behaviour: dict[str, Any]) -> None:
    """A photo (no transforms file: the poses Job comes first) and the stand-in's plan."""
    s3.client().put_object(Bucket="captures", Key=f"{name}/IMG_0001.jpg", Body=b"\xff\xd8\xff")
    s3.client().put_object(Bucket="captures", Key=f"{name}/behaviour.json", Body=json.dumps(behaviour).encode())


def release(s3: S3Server, name: str) -> None:
    s3.client().put_object(Bucket="captures", Key=f"{name}/go", Body=b"")


def patch_spec(api: client.ApiClient, namespace: str, name: str, **spec: Any) -> None:
    custom = client.CustomObjectsApi(api)
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec})


def wait_posing(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """Posing with the poses Job's pod running."""

    def running() -> dict[str, Any] | None:
        status = resource(api, namespace, name).get("status") or {}
        return status if status.get("reason") == "EstimatingPoses" else None

    found: dict[str, Any] = wait_for(f"{name}: EstimatingPoses", running, 90, interval=0.5)
    return found


def test_an_operator_restarted_while_posing_makes_no_second_job_or_event(
    stand_in: Operator, api: client.ApiClient, batch: client.BatchV1Api, buckets: S3Server, namespace: str
) -> None:
    stand_in_capture(buckets, "steady", {"sleep": 2, "waitFor": "go"})
    stand_in.start()
    try:
        submit(api, namespace, "steady")
        wait_posing(api, namespace, "steady")
    finally:
        stand_in.stop()
    stand_in.start()
    time.sleep(3)  # the new operator has listed everything and reconciled it at least once
    status = resource(api, namespace, "steady")["status"]
    assert (status["phase"], status["jobName"]) == ("Posing", "steady-1-poses")
    assert set(jobs_of(batch, namespace, "steady")) == {"steady-1-poses"}
    release(buckets, "steady")
    status = wait_phase(api, namespace, "steady", {"Succeeded", "Failed", "Cancelled"}, timeout=120)
    assert status["phase"] == "Succeeded", (status["reason"], status["message"])
    assert set(jobs_of(batch, namespace, "steady")) == {"steady-1-poses", "steady-1"} and status["attempts"] == 1
    events = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector="involvedObject.name=steady")
    # Each move once (none repeated by the restarted operator); Events have whole-second timestamps, so two
    # moves of one second come back in either order: compare them as a set of distinct moves.
    moves = [e.message.split(":")[0] for e in events.items]
    expected = ["New → Posing", "Posing → Pending", "Pending → Running", "Running → Succeeded"]
    assert sorted(moves) == sorted(expected), moves


def test_cancel_while_posing_stops_the_poses_job_and_creates_no_worker_job(
    stand_in: Operator, api: client.ApiClient, batch: client.BatchV1Api, buckets: S3Server, namespace: str
) -> None:
    stand_in_capture(buckets, "doomed", {"waitFor": "go"})
    stand_in.start()
    submit(api, namespace, "doomed")
    wait_posing(api, namespace, "doomed")
    patch_spec(api, namespace, "doomed", cancel=True)
    status = wait_phase(api, namespace, "doomed", {"Cancelled"}, timeout=60)
    assert status["reason"] == "CancelRequested" and "doomed-1-poses is stopped" in status["message"]
    wait_for("the poses Job to go", lambda: not jobs_of(batch, namespace, "doomed"), 60)
    release(buckets, "doomed")
    time.sleep(3)
    assert not jobs_of(batch, namespace, "doomed")  # cancelled is final: no worker Job afterwards


def test_suspend_while_posing_stops_it_and_resume_poses_again_in_attempt_2(
    stand_in: Operator, api: client.ApiClient, batch: client.BatchV1Api, buckets: S3Server, namespace: str
) -> None:
    stand_in_capture(buckets, "pausable", {"waitFor": "go"})
    stand_in.start()
    submit(api, namespace, "pausable")
    wait_posing(api, namespace, "pausable")
    patch_spec(api, namespace, "pausable", suspend=True)
    wait_phase(api, namespace, "pausable", {"Suspended"}, timeout=60)
    wait_for("the poses Job to go", lambda: not jobs_of(batch, namespace, "pausable"), 60)
    release(buckets, "pausable")
    patch_spec(api, namespace, "pausable", suspend=False)
    status = wait_phase(api, namespace, "pausable", {"Succeeded", "Failed", "Cancelled"}, timeout=120)
    assert status["phase"] == "Succeeded", (status["reason"], status["message"])
    assert status["attempts"] == 2 and status["jobName"] == "pausable-2"
    assert set(jobs_of(batch, namespace, "pausable")) == {"pausable-2-poses", "pausable-2"}
