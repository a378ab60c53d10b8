"""The status patch shape and the reporter's rate limiting and failure handling."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from recon_worker.progress import ProgressEvent
from recon_worker.status import (
    WORKER_FIELDS,
    StatusReporter,
    WorkerInfo,
    metrics_patch,
    progress_patch,
    status_body,
    worker_patch,
)
from tests.crd import load_crd, openapi_schema, to_json_schema

OPERATOR_FIELDS = {
    "phase",
    "conditions",
    "reason",
    "message",
    "attempts",
    "jobName",
    "startTime",
    "completionTime",
    "outputs",
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Collects the bodies a reporter sends; fails the next `fail` sends."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = fail

    def __call__(self, body: dict[str, Any]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("apiserver unreachable")
        self.bodies.append(body)


def status_schema() -> dict[str, Any]:
    crd = load_crd()
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]


def test_worker_fields_exist_in_the_crd_and_avoid_the_operators() -> None:
    schema = status_schema()
    assert set(schema) >= WORKER_FIELDS
    assert not WORKER_FIELDS & OPERATOR_FIELDS


def test_progress_patch() -> None:
    assert progress_patch(ProgressEvent("refine", 0.5, 0.426, 10.0, False)) == {"progress": 42, "stage": "refine"}


def test_worker_patch_uses_the_crd_names() -> None:
    patch = worker_patch(WorkerInfo("w-0-abc", "node-1", "NVIDIA H100 80GB HBM3", 79.6543, "nvdiffrast"))
    assert patch == {
        "worker": {
            "pod": "w-0-abc",
            "node": "node-1",
            "gpu": "NVIDIA H100 80GB HBM3",
            "gpuMemoryGiB": 79.65,
            "renderer": "nvdiffrast",
        }
    }
    assert set(patch["worker"]) <= set(status_schema()["worker"]["properties"])


def test_worker_info_reads_the_downward_api_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "job-1-xyz")
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert worker_patch(WorkerInfo.from_env("cpu", None, "pytorch3d")) == {
        "worker": {"pod": "job-1-xyz", "gpu": "cpu", "renderer": "pytorch3d"}
    }


def test_metrics_patch_keeps_crd_keys_with_their_types() -> None:
    metrics = {
        "psnr": 27.5,
        "ssim": 0.91,
        "maskIoU": 0.97,
        "chamferL1": None,
        "fScore": float("nan"),
        "faces": 1200.0,
        "vertices": 602,
        "watertight": 1,
        "manifold": True,
        "gates": {"passed": True},
        "durationSeconds": 12.5,
    }
    patch = metrics_patch(metrics)["metrics"]
    assert patch == {
        "psnr": 27.5,
        "psnrText": "27.5",
        "ssim": 0.91,
        "maskIoU": 0.97,
        "faces": 1200,
        "vertices": 602,
        "watertight": True,
        "durationSeconds": 12.5,
    }
    assert isinstance(patch["faces"], int) and isinstance(patch["watertight"], bool)
    assert set(patch) <= set(status_schema()["metrics"]["properties"])


def test_status_body_refuses_operator_fields() -> None:
    assert status_body({"progress": 3}) == {"status": {"progress": 3}}
    with pytest.raises(ValueError, match=r"\['phase'\]: the operator owns them"):
        status_body({"progress": 3, "phase": "Succeeded"})


def test_reporter_rate_limits_and_coalesces() -> None:
    clock, sent = Clock(), Recorder()
    reporter = StatusReporter(sent, min_interval=5.0, clock=clock)
    reporter.on_progress(ProgressEvent("refine", 0.0, 0.10, None, True))  # stage change: sent at once
    clock.now += 1
    reporter.on_progress(ProgressEvent("refine", 0.1, 0.12, None, False))  # too soon: held
    clock.now += 1
    reporter.update({"worker": {"gpu": "cpu"}})  # held, merged
    assert len(sent.bodies) == 1
    clock.now += 4
    reporter.on_progress(ProgressEvent("refine", 0.3, 0.20, None, False))
    assert sent.bodies == [
        {"status": {"progress": 10, "stage": "refine"}},
        {"status": {"progress": 20, "stage": "refine", "worker": {"gpu": "cpu"}}},
    ]


def test_stage_change_and_close_always_send() -> None:
    clock, sent = Clock(), Recorder()
    reporter = StatusReporter(sent, min_interval=5.0, clock=clock)
    reporter.on_progress(ProgressEvent("fetch", 0.0, 0.0, None, True))
    reporter.on_progress(ProgressEvent("reconstruct", 0.0, 0.04, None, True))
    reporter.on_progress(ProgressEvent("reconstruct", 0.5, 0.08, None, False))
    reporter.close()
    assert [b["status"]["progress"] for b in sent.bodies] == [0, 4, 8]


def test_failed_patch_is_kept_and_retried_never_raised() -> None:
    clock, sent = Clock(), Recorder(fail=2)
    reporter = StatusReporter(sent, min_interval=5.0, clock=clock, sleep=lambda s: None)
    reporter.update({"progress": 5, "stage": "fetch"}, force=True)  # fails
    clock.now += 6
    reporter.update({"progress": 9})  # fails again; still pending
    assert sent.bodies == [] and reporter.failures == 2
    reporter.close()
    assert sent.bodies == [{"status": {"progress": 9, "stage": "fetch"}}]


def test_close_gives_up_after_its_attempts() -> None:
    sent, sleeps = Recorder(fail=10), list[float]()
    reporter = StatusReporter(sent, sleep=sleeps.append)
    reporter.update({"progress": 100}, force=True)
    reporter.close(attempts=3, backoff=1.0)
    assert sent.bodies == [] and sleeps == [1.0, 2.0] and reporter.pending == {"progress": 100}


def test_a_full_worker_status_validates_against_the_crd_schema() -> None:
    fields: dict[str, Any] = {}
    for patch in (
        progress_patch(ProgressEvent("publish", 1.0, 1.0, 0.0, False)),
        worker_patch(WorkerInfo("p", "n", "cpu", None, "pytorch3d")),
        metrics_patch({"psnr": 30.1, "faces": 10, "vertices": 7, "watertight": True, "gpuSeconds": 3.0}),
    ):
        fields.update(patch)
    schema = to_json_schema(openapi_schema()["properties"]["status"])
    jsonschema.validate(status_body(fields)["status"], schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"progress": 101}, schema)


@pytest.mark.parametrize(("psnr", "text"), [(30.061671654310217, "30.1"), (29.95, "29.9"), (7.0, "7.0")])
def test_metrics_carry_the_psnr_with_one_decimal_for_kubectl(psnr: float, text: str) -> None:
    metrics = metrics_patch({"psnr": psnr})["metrics"]
    assert metrics["psnr"] == psnr and metrics["psnrText"] == text
    assert "psnrText" not in metrics_patch({"psnr": float("nan")})["metrics"]
