"""The pipeline on photos without poses: stage `poses` runs first, and a capture structure from motion
cannot pose fails with PosesUnrecoverable (exit 2) before the engine, publishing nothing; `recon-worker
poses` runs that stage alone on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recon_worker.cli import main
from recon_worker.errors import ExitCode, PosesUnrecoverable, outcome_of
from recon_worker.progress import ProgressEvent, ProgressTracker
from recon_worker.task import TaskDocument
from tests.unit.worker.captures import write_capture
from tests.unit.worker.test_pipeline import pipeline
from tests.unit.worker.test_poses import textureless_photos


def test_unposable_photos_fail_in_stage_poses_before_the_engine(tmp_path: Path) -> None:
    textureless_photos(tmp_path / "capture")
    task = TaskDocument.model_validate(
        {
            "apiVersion": "recon.dev/v1alpha1",
            "input": {"uri": (tmp_path / "capture").as_uri() + "/", "minRegistered": 0.5},
            "output": {"uri": (tmp_path / "out").as_uri() + "/"},
            "compute": {"gpus": 0},
        }
    )
    events: list[ProgressEvent] = []
    tracker = ProgressTracker(listeners=[events.append])
    with pytest.raises(PosesUnrecoverable) as caught:
        pipeline(task, tmp_path / "w", tracker=tracker).run()
    outcome = outcome_of(caught.value)
    assert outcome.exit_code == ExitCode.INVALID and outcome.reason == "PosesUnrecoverable"
    assert "of 12 photos" in outcome.message
    assert [e.stage for e in events if e.stage_changed] == ["fetch", "poses"]
    assert not (tmp_path / "out" / "manifest.json").exists()


def _task_file(tmp_path: Path, capture: Path) -> Path:
    doc = {
        "apiVersion": "recon.dev/v1alpha1",
        "input": {"uri": capture.as_uri() + "/", "minRegistered": 0.5},
        "output": {"uri": (tmp_path / "out").as_uri() + "/"},
        "compute": {"gpus": 1},  # the poses step never asks for the GPU
    }
    path = tmp_path / "task.json"
    path.write_text(json.dumps(doc))
    return path


def test_poses_command_is_a_cpu_step_that_fails_like_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    textureless_photos(tmp_path / "capture")
    monkeypatch.setenv("RECON_TERMINATION_LOG", str(tmp_path / "termination"))
    assert main(["poses", "--task", str(_task_file(tmp_path, tmp_path / "capture"))]) == ExitCode.INVALID
    assert json.loads((tmp_path / "termination").read_text())["reason"] == "PosesUnrecoverable"


def test_poses_command_has_nothing_to_do_on_a_posed_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    capture = write_capture(tmp_path / "capture", views=8, size=16)
    monkeypatch.setenv("RECON_TERMINATION_LOG", str(tmp_path / "termination"))
    assert main(["poses", "--task", str(_task_file(tmp_path, capture))]) == ExitCode.OK
    assert "poses given" in json.loads((tmp_path / "termination").read_text())["message"]
