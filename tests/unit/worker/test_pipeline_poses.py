"""The pipeline on photos without poses: stage `poses` runs first, and a capture structure from motion
cannot pose fails with PosesUnrecoverable (exit 2) before the engine, publishing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon_worker.errors import ExitCode, PosesUnrecoverable, outcome_of
from recon_worker.progress import ProgressEvent, ProgressTracker
from recon_worker.task import TaskDocument
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
