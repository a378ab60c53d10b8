"""`kubectl recon` against the local control plane, the S3 server and the real worker (CPU, tiny settings).

The plugin runs as a user runs it: a separate process found by kubectl on PATH (`kubectl recon ...`),
with KUBECONFIG and the AWS_* variables of the user's shell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster import Cluster, binaries
from localcluster.kube import raw, wait_for
from tests.conftest import MESHES
from tests.integration.operator_process import OperatorProcess
from tests.s3server import S3Server

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GROUP, VERSION, PLURAL = "recon.dev", "v1alpha1", "reconstructionjobs"
BIN = Path(sys.executable).parent
# The draft preset shrunk until a CPU run takes seconds (as in test_worker_end_to_end).
TINY = [
    "--credentials-secret=s3",
    "--preset=draft",
    "--set=resources.gpus=0",
    "--set=quality.reconstruction.resolution=32",
    "--set=quality.refinement.iterations=2",
    "--set=quality.refinement.renderResolution=48",
    "--set=quality.refinement.textureSize=256",
    "--set=quality.export.targetFaces=2000",
]


@pytest.fixture(scope="module")
def operator(cluster: Cluster, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The operator as its own process, running the real worker as each pod's process; yields its log."""
    log = tmp_path_factory.mktemp("recon-operator") / "operator.log"
    settings = {
        "RECON_OPERATOR_DEFAULT_CPU": "500m",
        "RECON_OPERATOR_DEFAULT_MEMORY": "2Gi",
        "RECON_OPERATOR_RECONCILE_INTERVAL_S": "1",
        "RECON_OPERATOR_PREFLIGHT_RETRIES": "1",
        "RECON_OPERATOR_PREFLIGHT_BACKOFF_S": "1",
    }
    worker = [sys.executable, "-m", "recon_worker.cli", "run"]
    with OperatorProcess(cluster, s3_server, log, worker, settings=settings):
        yield log


@pytest.fixture(scope="module")
def spot_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recon_worker.engine.synth import SynthOptions, synthesize

    folder = tmp_path_factory.mktemp("captures") / "spot"
    synthesize(MESHES / "spot" / "spot.obj", folder, SynthOptions(views=8, test_views=1, resolution=48, supersample=1))
    return folder


def kubectl_recon(
    cluster: Cluster, s3: S3Server, namespace: str, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`kubectl recon ARGS -n NAMESPACE`, kubectl finding the plugin on PATH; S3 keys only from the Secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(KUBECONFIG=str(cluster.kubeconfig), AWS_ENDPOINT_URL=s3.endpoint, AWS_DEFAULT_REGION="us-east-1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    command = [binaries.kubectl(), "recon", *args, "-n", namespace, "--quiet"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def keys(s3: S3Server, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def resource(api: client.ApiClient, namespace: str, name: str) -> dict[str, object]:
    return raw(client.CustomObjectsApi(api).get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)


def test_kubectl_finds_the_plugin(cluster: Cluster, s3_server: S3Server) -> None:
    result = kubectl_recon(cluster, s3_server, "default", "--help")
    assert result.returncode == 0, result.stderr
    assert "submit" in result.stdout and "fetch" in result.stdout


def test_submit_a_folder_wait_and_fetch_verified_outputs(
    operator: Path, cluster: Cluster, buckets: S3Server, namespace: str, spot_capture: Path, tmp_path: Path
) -> None:
    submit = kubectl_recon(
        cluster,
        buckets,
        namespace,
        "submit",
        str(spot_capture),
        "--upload-to=s3://captures/",
        "--output=s3://results/spot/",
        "--wait",
        *TINY,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    assert "spot: Succeeded" in submit.stdout and "s3://results/spot/" in submit.stdout
    assert "spot/transforms_train.json" in keys(buckets, "captures")

    got = kubectl_recon(cluster, buckets, namespace, "get", "spot", "--credentials-secret=s3")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split("\n")[1].split()[:2] == ["spot", "Succeeded"]
    assert "stages:  fetch" in got.stdout and "gates:   passed" in got.stdout

    as_json = kubectl_recon(cluster, buckets, namespace, "get", "spot", "-o", "json")
    assert json.loads(as_json.stdout)["status"]["phase"] == "Succeeded", as_json.stderr
    logs = kubectl_recon(cluster, buckets, namespace, "logs", "spot")
    assert logs.returncode == 0, logs.stderr
    assert "recon_worker" in logs.stdout  # the worker's own log lines, from its pod

    dest = tmp_path / "out"
    fetched = kubectl_recon(cluster, buckets, namespace, "fetch", "spot", str(dest), "--credentials-secret=s3")
    assert fetched.returncode == 0, fetched.stderr
    manifest = json.loads((dest / "manifest.json").read_text())
    assert {f["name"] for f in manifest["files"]} <= {p.relative_to(dest).as_posix() for p in dest.rglob("*")}
    assert (dest / "mesh.glb").stat().st_size > 0

    # A corrupted object (same size, other bytes) is detected, and nothing of it lands in the folder.
    original = buckets.client().get_object(Bucket="results", Key="spot/mesh.obj")["Body"].read()
    tampered = b"# tampered\n" + original[len(b"# tampered\n") :]
    buckets.client().put_object(Bucket="results", Key="spot/mesh.obj", Body=tampered)
    dest2 = tmp_path / "out2"
    bad = kubectl_recon(cluster, buckets, namespace, "fetch", "spot", str(dest2), "--credentials-secret=s3")
    assert bad.returncode == 1
    assert "checksum mismatch" in bad.stderr and "mesh.obj" in bad.stderr
    assert not any(p.is_file() for p in dest2.rglob("*"))


def test_a_bad_capture_is_rejected_before_any_upload(
    cluster: Cluster, buckets: S3Server, namespace: str, spot_capture: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(spot_capture), str(broken)], check=True)
    victim = sorted((broken / "train").glob("*.png"))[0]
    victim.write_bytes(b"<html>not an image</html>")
    result = kubectl_recon(
        cluster, buckets, namespace, "submit", str(broken), "--upload-to=s3://captures/", "--output=s3://results/b/",
        "--credentials-secret=s3",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert victim.name in result.stderr
    assert keys(buckets, "captures") == []
    items = client.CustomObjectsApi(cluster.api_client()).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )["items"]
    assert items == []


def test_cancel_a_running_job(
    operator: Path, cluster: Cluster, buckets: S3Server, namespace: str, spot_capture: Path
) -> None:
    long_run = [*TINY, "--set=quality.refinement.iterations=100000"]
    submit = kubectl_recon(
        cluster, buckets, namespace, "submit", str(spot_capture), "--upload-to=s3://captures/",
        "--output=s3://results/long/", "--name=long", *long_run,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    api = cluster.api_client()
    wait_for(
        "long to be in refine",
        lambda: (resource(api, namespace, "long").get("status") or {}).get("stage") == "refine",
        240,
    )  # type: ignore[union-attr]
    cancel = kubectl_recon(cluster, buckets, namespace, "cancel", "long", "--wait", "--timeout=120")
    assert cancel.returncode == 1, cancel.stdout + cancel.stderr
    status = resource(api, namespace, "long")["status"]
    assert (status["phase"], status["reason"]) == ("Cancelled", "CancelRequested")  # type: ignore[index]
    batch = client.BatchV1Api(api)
    wait_for("the worker Job to be gone", lambda: not batch.list_namespaced_job(namespace).items, 120)
    assert not [k for k in keys(buckets, "results") if k.endswith("manifest.json")]


def test_retry_a_failed_job_once_its_capture_is_fixed(
    operator: Path, cluster: Cluster, buckets: S3Server, namespace: str, spot_capture: Path
) -> None:
    s3 = buckets.client()
    # Only the camera file: the job fails on missing images, exit 2 (InputsInvalid).
    s3.upload_file(str(spot_capture / "transforms_train.json"), "captures", "late/transforms_train.json")
    first = kubectl_recon(
        cluster, buckets, namespace, "submit", "s3://captures/late/", "--output=s3://results/late/", "--name=late",
        "--transforms-file=transforms_train.json", "--wait", "--timeout=300", *TINY,
    )  # fmt: skip
    assert first.returncode == 2, first.stdout + first.stderr
    old_uid = resource(cluster.api_client(), namespace, "late")["metadata"]["uid"]  # type: ignore[index]

    for path in sorted(spot_capture.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), "captures", f"late/{path.relative_to(spot_capture).as_posix()}")
    retried = kubectl_recon(cluster, buckets, namespace, "retry", "late", "--wait", "--timeout=400")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    new = resource(cluster.api_client(), namespace, "late")
    assert new["metadata"]["uid"] != old_uid  # type: ignore[index]
    assert new["metadata"]["annotations"]["recon.dev/retry-of"] == old_uid  # type: ignore[index]
    assert new["status"]["phase"] == "Succeeded"  # type: ignore[index]
