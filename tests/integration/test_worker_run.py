"""`recon-worker run` as a real subprocess against the moto S3 server, with the stand-in engine.

Covers the published result (verified by sha256), every documented failure's exit code and termination
message, SIGTERM mid-run, and resuming a retried run from its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from recon_worker.publish import input_fingerprint
from recon_worker.storage import StoredObject
from tests.conftest import REPO
from tests.s3server import S3Server
from tests.unit.worker.captures import upload_folder, write_capture

UID = "6f1d2c3b-uid"
STAGING = f"ball/.recon-staging/{UID}/"


def task_document(s3: S3Server, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "recon.dev/v1alpha1",
        "kind": "ReconstructionTask",
        "job": {"namespace": "default", "name": "ball", "uid": UID},
        "input": {"uri": "s3://captures/ball/"},
        "output": {"uri": "s3://results/ball/"},
        "storage": {"endpoint": s3.endpoint, "region": "us-east-1"},
        "quality": {"preset": "draft", "refinement": {"iterations": 3}},
        "compute": {"gpus": 0},
        **extra,
    }


def worker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "RECON_TASK", "RECON_TASK_FILE")}
    env.update(
        PYTHONPATH=str(REPO),
        RECON_ENGINE="tests.unit.worker.standin_engine",
        RECON_TERMINATION_LOG=str(tmp_path / "termination-log"),
        RECON_S3_MAX_ATTEMPTS="3",
        **extra,
    )
    return env


def start_worker(task: dict[str, Any], tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "recon_worker.cli", "run"],
        env=worker_env(tmp_path, RECON_TASK=json.dumps(task), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_worker(task: dict[str, Any], tmp_path: Path, **env: str) -> tuple[int, dict[str, str], str]:
    process = start_worker(task, tmp_path, **env)
    output, _ = process.communicate(timeout=180)
    return process.returncode, termination(tmp_path), output


def termination(tmp_path: Path) -> dict[str, str]:
    result: dict[str, str] = json.loads((tmp_path / "termination-log").read_text())
    return result


def keys(s3: S3Server, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def wait_for_key(s3: S3Server, bucket: str, key: str, process: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if key in keys(s3, bucket, key):
            return
        assert process.poll() is None, f"worker exited early ({process.returncode}): {process.stdout.read()}"  # type: ignore[union-attr]
        time.sleep(0.2)
    raise AssertionError(f"s3://{bucket}/{key} did not appear within {timeout} s")


@pytest.fixture
def capture(s3: S3Server, tmp_path: Path) -> Path:
    root = write_capture(tmp_path / "capture", views=10, size=32)
    client = s3.client()
    client.create_bucket(Bucket="captures")
    client.create_bucket(Bucket="results")
    upload_folder(client, root, "captures", "ball/")
    return root


def test_run_publishes_a_result_verified_by_sha256(s3: S3Server, capture: Path, tmp_path: Path) -> None:
    code, message, output = run_worker(task_document(s3), tmp_path)
    assert code == 0, output
    assert message == {"reason": "Succeeded", "message": "published s3://results/ball/manifest.json (7 files)"}
    client = s3.client()
    manifest = json.loads(client.get_object(Bucket="results", Key="ball/manifest.json")["Body"].read())
    names = {f["name"] for f in manifest["files"]}
    assert names == {
        "mesh.glb", "mesh.obj", "mesh.ply", "texture.png", "report.json", "report.html", "previews/turntable_000.png"
    }  # fmt: skip
    for entry in manifest["files"]:
        body = client.get_object(Bucket="results", Key=f"ball/{entry['name']}")["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (entry["size"], entry["sha256"])
        assert entry["uri"] == f"s3://results/ball/{entry['name']}"
    assert keys(s3, "results") == sorted(["ball/manifest.json"] + [f"ball/{n}" for n in names])  # staging is gone
    listing = client.list_objects_v2(Bucket="captures", Prefix="ball/")["Contents"]
    objects = [StoredObject(o["Key"].removeprefix("ball/"), o["Size"], o["ETag"].strip('"')) for o in listing]
    assert manifest["input"]["fingerprint"] == input_fingerprint(objects)
    assert manifest["job"]["uid"] == UID and manifest["metrics"]["watertight"] is True
    assert manifest["software"]["recon-worker"] and manifest["resumedStages"] == []


def test_invalid_capture_exits_2_naming_every_bad_frame(s3: S3Server, capture: Path, tmp_path: Path) -> None:
    client = s3.client()
    client.put_object(Bucket="captures", Key="ball/images/r_2.png", Body=b"<html>denied</html>")
    client.delete_object(Bucket="captures", Key="ball/images/r_7.png")
    code, message, _ = run_worker(task_document(s3), tmp_path)
    assert code == 2 and message["reason"] == "InputsInvalid"
    assert "frame 2: images/r_2.png is not a PNG or JPEG (first bytes 3c 68 74 6d)" in message["message"]
    assert "frame 7: images/r_7.png does not exist" in message["message"]
    assert keys(s3, "results") == []


def test_missing_input_bucket_exits_2(s3: S3Server, tmp_path: Path) -> None:
    s3.client().create_bucket(Bucket="results")
    code, message, _ = run_worker(task_document(s3, input={"uri": "s3://nowhere/ball/"}), tmp_path)
    assert code == 2
    assert message == {
        "reason": "InputsInvalid",
        "message": "cannot list s3://nowhere/ball/: bucket 'nowhere' does not exist",
    }


def test_denied_output_write_exits_2_without_a_manifest(s3: S3Server, capture: Path, tmp_path: Path) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::results/*"}
        ],
    }
    s3.client().put_bucket_policy(Bucket="results", Policy=json.dumps(policy))
    code, message, _ = run_worker(task_document(s3), tmp_path)
    assert code == 2 and message["reason"] == "AccessDenied"
    assert message["message"].startswith(f"cannot upload to s3://results/{STAGING}checkpoints/reconstruct/files/")
    assert keys(s3, "results") == []


def test_invalid_task_exits_2(s3: S3Server, tmp_path: Path) -> None:
    code, message, _ = run_worker({**task_document(s3), "compute": {"gpus": -1}}, tmp_path)
    assert code == 2 and message["reason"] == "TaskInvalid"
    assert message["message"] == "invalid task document: compute.gpus: Input should be greater than or equal to 0"


def test_gpu_task_on_a_node_without_gpu_exits_3(s3: S3Server, capture: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, message, _ = run_worker(task_document(s3, compute={"gpus": 1}), tmp_path)
    assert code == 3 and message["reason"] == "NoGPU"


def test_enforced_gate_failure_exits_2_and_publishes_nothing(s3: S3Server, capture: Path, tmp_path: Path) -> None:
    task = task_document(s3, gates={"minMaskIoU": 0.9, "enforce": True})
    code, message, _ = run_worker(task, tmp_path, RECON_STANDIN_FAIL_GATE="1")
    assert code == 2
    assert message == {
        "reason": "QualityGateFailed",
        "message": "quality gates failed, nothing was published: maskIoU 0.10 is below minMaskIoU 0.9",
    }
    assert keys(s3, "results") == []  # checkpoints too: a retry could not do better


@pytest.mark.slow
def test_output_bucket_deleted_mid_run_exits_2_naming_it(s3: S3Server, capture: Path, tmp_path: Path) -> None:
    task = task_document(s3, quality={"preset": "draft", "refinement": {"iterations": 80}})
    process = start_worker(task, tmp_path, RECON_STANDIN_STEP_SECONDS="0.1")
    wait_for_key(s3, "results", f"{STAGING}checkpoints/reconstruct/checkpoint.json", process)
    client = s3.client()
    for key in keys(s3, "results"):
        client.delete_object(Bucket="results", Key=key)
    client.delete_bucket(Bucket="results")
    output, _ = process.communicate(timeout=120)
    message = termination(tmp_path)
    assert process.returncode == 2, output
    assert message["reason"] == "InputsInvalid" and "bucket 'results' does not exist" in message["message"]


@pytest.mark.slow
def test_sigterm_publishes_nothing_and_the_retry_resumes(s3: S3Server, capture: Path, tmp_path: Path) -> None:
    task = task_document(s3, quality={"preset": "draft", "refinement": {"iterations": 600}})
    process = start_worker(task, tmp_path, RECON_STANDIN_STEP_SECONDS="0.05")
    wait_for_key(s3, "results", f"{STAGING}checkpoints/reconstruct/checkpoint.json", process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)  # well inside a pod's default 30 s grace period
    assert process.returncode == 143, output
    message = termination(tmp_path)
    assert message == {"reason": "Cancelled", "message": "stopped by SIGTERM; nothing was published"}
    left = keys(s3, "results")
    assert "ball/manifest.json" not in left
    assert left and all(k.startswith(f"{STAGING}checkpoints/reconstruct/") for k in left)

    code, message, output = run_worker(task, tmp_path)  # the retried pod (same uid, same task)
    assert code == 0, output
    manifest = json.loads(s3.client().get_object(Bucket="results", Key="ball/manifest.json")["Body"].read())
    assert manifest["resumedStages"] == ["reconstruct"]
    assert "resumed from checkpoints of: reconstruct" in output
    assert not [k for k in keys(s3, "results") if ".recon-staging" in k]


def test_validate_command_reads_an_s3_capture(s3: S3Server, capture: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "recon_worker.cli", "validate", "--input", "s3://captures/ball/"]
    command += ["--endpoint", s3.endpoint]
    ok = subprocess.run(command, env=worker_env(tmp_path), capture_output=True, text=True, timeout=60)
    # The form it detected first (issue 13), then the checks' verdict.
    assert ok.stdout.startswith("capture form:\n  poses: given\n  masks: alpha"), ok.stdout
    assert (ok.returncode, ok.stdout.strip().splitlines()[-1]) == (0, "capture OK: 10 frames of 32x32")
    s3.client().put_object(Bucket="captures", Key="ball/transforms.json", Body=b'{"frames": []}')
    bad = subprocess.run(command, env=worker_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "  - transforms.json: has no 'frames' list (or it is empty)" in bad.stdout.splitlines()


def test_validate_fetches_only_referenced_objects_and_refuses_ambiguous_keys(
    s3: S3Server, capture: Path, tmp_path: Path
) -> None:
    client = s3.client()
    client.put_object(Bucket="captures", Key="ball/raw/video.mp4", Body=b"\0" * 2_000_000)  # never referenced
    command = [sys.executable, "-m", "recon_worker.cli", "validate", "--input", "s3://captures/ball/"]
    command += ["--endpoint", s3.endpoint, "--max-total-bytes", "1000000"]
    ok = subprocess.run(command, env=worker_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert (ok.returncode, ok.stdout.strip().splitlines()[-1]) == (0, "capture OK: 10 frames of 32x32"), ok.stderr
    # "images//r_4.png" is another S3 object than "images/r_4.png", but one file once downloaded.
    document = json.loads((capture / "transforms.json").read_text())
    document["frames"][4]["file_path"] = "images//r_4.png"
    client.put_object(Bucket="captures", Key="ball/images//r_4.png", Body=(capture / "images" / "r_3.png").read_bytes())
    client.put_object(Bucket="captures", Key="ball/transforms.json", Body=json.dumps(document).encode())
    bad = subprocess.run(command, env=worker_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "  - images//r_4.png: is not a usable object key: it has an empty segment ('//')" in bad.stdout
