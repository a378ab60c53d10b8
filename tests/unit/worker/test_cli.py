"""The command line: validate, local (in-process, file:// folders, stand-in engine) and run's task errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recon_worker.cli import build_parser, main
from tests.unit.worker.captures import write_capture


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECON_ENGINE", "tests.unit.worker.standin_engine")


def test_commands_are_listed() -> None:
    help_text = build_parser().format_help()
    for command in ("run", "local", "validate"):
        assert command in help_text


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: recon-worker" in capsys.readouterr().out


def test_validate_a_good_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_capture(tmp_path, views=8, size=16)
    assert main(["validate", "--input", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "capture OK: 8 frames of 16x16"
    assert "poses: given" in out and "masks: alpha" in out


def test_validate_lists_every_problem_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_capture(tmp_path, views=8, size=16)
    (tmp_path / "images" / "r_1.png").write_bytes(b"")
    (tmp_path / "images" / "r_5.png").unlink()
    assert main(["validate", "--input", str(tmp_path), "--min-views", "9"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("capture form:\n")  # what was detected, then every problem
    assert out.splitlines()[-4:] == [
        "capture invalid: 3 problem(s)",
        "  - frame 1: images/r_1.png is not a PNG or JPEG (first bytes none: empty file)",
        "  - frame 5: images/r_5.png does not exist",
        "  - capture: has 8 views; at least 9 are needed",
    ]


def test_validate_a_missing_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--input", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.usefixtures("standin")
def test_local_runs_the_pipeline_with_plain_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = write_capture(tmp_path / "capture", views=8, size=16)
    args = ["local", "--input", str(capture), "--output", str(tmp_path / "out"), "--set", "refinement.iterations=4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "100% publish" in out and "\r" not in out
    assert out.strip().endswith(f"Succeeded: published {(tmp_path / 'out').as_uri()}/manifest.json (7 files)")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["job"] is None and manifest["settings"]["refinement"]["iterations"] == 4


def test_local_refuses_an_output_inside_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = write_capture(tmp_path / "capture", views=8, size=16)
    assert main(["local", "--input", str(capture), "--output", str(capture / "out")]) == 2
    assert "must not be, or lie inside, input.uri" in capsys.readouterr().err


def test_local_refuses_an_unknown_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = write_capture(tmp_path / "capture", views=8, size=16)
    args = ["local", "--input", str(capture), "--output", str(tmp_path / "o"), "--set", "refinement.steps=3"]
    assert main(args) == 2
    assert "refinement.steps" in capsys.readouterr().err


def test_run_without_a_task_exits_2_with_a_termination_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RECON_TASK", "RECON_TASK_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RECON_TERMINATION_LOG", str(tmp_path / "log"))
    assert main(["run"]) == 2
    assert json.loads((tmp_path / "log").read_text()) == {
        "reason": "TaskInvalid",
        "message": "no task: set RECON_TASK (JSON) or RECON_TASK_FILE, or pass --task FILE",
    }


def test_run_with_an_unknown_task_version_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = tmp_path / "task.json"
    task.write_text(json.dumps({"apiVersion": "recon.dev/v2", "input": {}, "output": {}}))
    monkeypatch.setenv("RECON_TERMINATION_LOG", str(tmp_path / "log"))
    assert main(["run", "--task", str(task)]) == 2
    message = json.loads((tmp_path / "log").read_text())["message"]
    assert message == "unsupported task apiVersion 'recon.dev/v2'; this worker reads 'recon.dev/v1alpha1'"
