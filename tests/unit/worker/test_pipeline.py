"""The pipeline in-process on file:// stores with the stand-in engine: publish, resume after a crash, cancel."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from recon_worker.errors import InputsInvalid
from recon_worker.gpu import DeviceChoice
from recon_worker.pipeline import ENGINE_STAGES, CancelToken, Pipeline, load_engine
from recon_worker.progress import ProgressEvent, ProgressTracker
from recon_worker.stage import STAGES, Cancelled, StageContext
from recon_worker.task import TaskDocument
from tests.unit.worker import standin_engine
from tests.unit.worker.captures import write_capture

ENGINE: dict[str, Any] = {stage: getattr(standin_engine, stage) for stage in ENGINE_STAGES}


def make_task(tmp_path: Path, **extra: object) -> TaskDocument:
    capture = write_capture(tmp_path / "capture", views=8, size=24)
    return TaskDocument.model_validate(
        {
            "apiVersion": "recon.dev/v1alpha1",
            "job": {"namespace": "ns", "name": "ball", "uid": "uid-1"},
            "input": {"uri": capture.as_uri() + "/"},
            "output": {"uri": (tmp_path / "out").as_uri() + "/"},
            "quality": {"preset": "draft", "refinement": {"iterations": 3}},
            "compute": {"gpus": 0},
            **extra,
        }
    )


def pipeline(task: TaskDocument, workdir: Path, engine: Mapping[str, Any] = ENGINE, **kwargs: Any) -> Pipeline:
    return Pipeline(task=task, workdir=workdir, engine=engine, device=DeviceChoice("cpu", None), **kwargs)  # type: ignore[arg-type]


def test_load_engine_names_missing_stages() -> None:
    assert set(load_engine("tests.unit.worker.standin_engine")) == set(ENGINE_STAGES)
    with pytest.raises(RuntimeError, match="engine module json lacks stage function"):
        load_engine("json")


def test_run_publishes_and_reports_progress(tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    result = pipeline(make_task(tmp_path), tmp_path / "w1", tracker=ProgressTracker(listeners=[events.append])).run()
    out = tmp_path / "out"
    assert result.manifest_uri == out.as_uri() + "/manifest.json"
    assert {f.name for f in result.manifest.files} >= {"mesh.glb", "mesh.obj", "report.json", "texture.png"}
    assert not (out / ".recon-staging").exists()  # checkpoints removed after the publish
    assert [e.stage for e in events if e.stage_changed] == [
        "fetch", "reconstruct", "refine", "texture", "validate", "export", "publish"
    ]  # fmt: skip
    assert events[-1].percent == 100
    assert result.manifest.metrics["watertight"] is True and result.manifest.resumed_stages == []
    # The manifest, written last, times every stage (report.html cannot time the publish that uploads it).
    # (`poses` runs only for captures whose poses are estimated.)
    assert list(result.manifest.stage_seconds) == [s for s in STAGES if s != "poses"]


def test_a_crashed_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    calls: list[str] = []

    def crashing_texture(ctx: StageContext) -> None:
        raise RuntimeError("node lost")

    def counting(stage: str) -> Callable[[StageContext], None]:
        def run(ctx: StageContext) -> None:
            calls.append(stage)
            ENGINE[stage](ctx)

        return run

    with pytest.raises(RuntimeError, match="node lost"):
        pipeline(task, tmp_path / "w1", {**ENGINE, "texture": crashing_texture}).run()
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert (tmp_path / "out" / ".recon-staging" / "uid-1" / "checkpoints" / "refine" / "checkpoint.json").exists()

    engine: dict[str, Any] = {stage: counting(stage) for stage in ENGINE_STAGES}
    result = pipeline(task, tmp_path / "w2", engine).run()
    assert calls == ["texture", "validate", "export"]
    assert result.manifest.resumed_stages == ["reconstruct", "refine"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["resumedStages"] == ["reconstruct", "refine"]


def test_cancel_stops_before_publishing_and_keeps_checkpoints(tmp_path: Path) -> None:
    cancel = CancelToken()

    def cancelling_refine(ctx: StageContext) -> None:
        cancel.request("SIGTERM")
        ctx.check_cancelled()

    with pytest.raises(Cancelled, match="stopped by SIGTERM"):
        pipeline(make_task(tmp_path), tmp_path / "w", {**ENGINE, "refine": cancelling_refine}, cancel=cancel).run()
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in (out / ".recon-staging" / "uid-1" / "checkpoints").iterdir()) == ["reconstruct"]


def test_invalid_capture_fails_before_the_engine_and_leaves_nothing(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    (tmp_path / "capture" / "images" / "r_3.png").write_text("not an image")
    with pytest.raises(InputsInvalid, match=r"frame 3: images/r_3\.png is not a PNG or JPEG"):
        pipeline(task, tmp_path / "w").run()
    assert not (tmp_path / "out").exists()


def test_empty_input_is_invalid(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    for path in sorted((tmp_path / "capture").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    with pytest.raises(InputsInvalid, match=r"holds no files: expected a capture with transforms\.json"):
        pipeline(task, tmp_path / "w").run()
