"""The command line: validate, local (in-process, file:// folders, stand-in engine) and run's task errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from recon_worker.cli import build_parser, main
from tests.conftest import MESHES, REPO
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


def _subcommand_help(name: str) -> str:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    return commands.choices[name].format_help()  # type: ignore[attr-defined]


def test_local_help_describes_the_command_and_shows_defaults() -> None:
    text = " ".join(_subcommand_help("local").split())
    assert "Reconstruct one capture without a cluster" in text
    assert "transforms.json" in text and "manifest.json" in text and "exit codes" in text
    assert "(default: standard)" in text and "(default: auto)" in text and "(default: 8)" in text
    assert "VALUE is JSON" in text
    assert "(default: None)" not in text


def test_local_quality_default_is_the_crds() -> None:
    crd = yaml.safe_load((REPO / "crds" / "recon.dev_reconstructionjobs.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    crd_default = spec["properties"]["quality"]["properties"]["preset"]["default"]
    args = build_parser().parse_args(["local", "--input", "a", "--output", "b"])
    assert args.quality == crd_default


@pytest.mark.parametrize("command", [["local", "--input", "a", "--output", "b"], ["validate", "--input", "a"], ["run"]])
def test_log_level_works_before_and_after_the_command(command: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["--log-level", "ERROR", *command]).log_level == "ERROR"
    assert parser.parse_args([*command, "--log-level", "DEBUG"]).log_level == "DEBUG"
    assert parser.parse_args([command[0], "--log-level", "DEBUG", *command[1:]]).log_level == "DEBUG"
    assert parser.parse_args(["--log-level", "ERROR", *command, "--log-level", "DEBUG"]).log_level == "DEBUG"
    synth = ["synth", "--mesh", "m.obj", "--output", "o", "--log-level", "WARNING"]
    assert parser.parse_args(synth).log_level == "WARNING"


def test_an_unknown_log_level_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["validate", "--input", "a", "--log-level", "LOUD"])
    assert "--log-level 'LOUD'" in capsys.readouterr().err


def test_a_bad_set_value_names_the_flag_without_pydantic_links(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = write_capture(tmp_path / "capture", views=8, size=16)
    args = ["local", "--input", str(capture), "--output", str(tmp_path / "o")]
    assert main([*args, "--set", "refinement.iterations=many", "--set", "refinement.renderResolution=8"]) == 2
    err = capsys.readouterr().err
    assert "--set refinement.iterations=many: Input should be a valid integer" in err
    assert "--set refinement.renderResolution=8: Input should be greater than or equal to 32" in err
    assert "pydantic.dev" not in err and "type=" not in err


def test_a_failed_local_run_prints_its_reason_once(tmp_path: Path) -> None:
    """The runner logs the outcome; the command must not print it a second time."""
    env = {**os.environ, "RECON_ENGINE": "tests.unit.worker.standin_engine", "PYTHONPATH": str(REPO)}
    args = ["local", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "out"), "--device", "cpu"]
    result = subprocess.run(
        [sys.executable, "-m", "recon_worker.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.count("InputsInvalid") == 1, result.stderr
    assert "is not a directory" in result.stderr


def test_synth_with_a_missing_mesh_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--mesh", str(tmp_path / "nope.obj"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"--mesh {tmp_path / 'nope.obj'}: no such file" in err
    assert "string is not a file" not in err


def test_synth_shows_a_progress_bar_of_the_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spot = MESHES / "spot" / "spot.obj"
    args = ["synth", "--mesh", str(spot), "--output", str(tmp_path / "c"), "--views", "2", "--test-views", "1"]
    assert main([*args, "--resolution", "16", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "3/3 images" in captured.err
    assert json.loads(captured.out)["views"] == 2  # stdout stays the summary alone


def _start_local(tmp_path: Path, step_seconds: str, iterations: int) -> subprocess.Popen[bytes]:
    capture = write_capture(tmp_path / "capture", views=8, size=16)
    env = {
        **os.environ,
        "RECON_ENGINE": "tests.unit.worker.standin_engine",
        "RECON_STANDIN_STEP_SECONDS": step_seconds,
        "RECON_SCRATCH": str(tmp_path / "scratch"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    command = [sys.executable, "-m", "recon_worker.cli", "local", "--input", str(capture), "--device", "cpu"]
    command += ["--output", str(tmp_path / "out"), "--set", f"refinement.iterations={iterations}"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "scratch").glob("*/reconstruct")):
        assert process.poll() is None and time.monotonic() < deadline, "local never reached refine"
        time.sleep(0.1)
    return process


def test_a_second_signal_stops_local_now_and_removes_its_scratch(tmp_path: Path) -> None:
    # One refinement step of 60 s: the first SIGINT waits for a safe point, the second must not.
    process = _start_local(tmp_path, step_seconds="60", iterations=1)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=20)[0].decode()
    assert process.returncode == 143, output
    assert "Cancelled: stopped by SIGINT then SIGINT; nothing was published" in output
    assert list((tmp_path / "scratch").iterdir()) == []


@pytest.mark.usefixtures("standin")
def test_local_fetches_only_what_the_transforms_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = write_capture(tmp_path / "capture", views=8, size=16)
    (capture / "unused").mkdir()
    (capture / "unused" / "video.mp4").write_bytes(b"\0" * 3_000_000)  # above the byte limit below
    args = ["local", "--input", str(capture), "--output", str(tmp_path / "out"), "--max-total-bytes", "1000000"]
    assert main([*args, "--set", "refinement.iterations=2"]) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["input"]["objects"] == 9  # transforms.json and 8 images
    assert main(["validate", "--input", str(capture), "--max-total-bytes", "1000000"]) == 0


@pytest.mark.usefixtures("standin")
def test_control_characters_in_keys_are_refused_and_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    capture = write_capture(tmp_path / "capture", views=8, size=16)
    (capture / "images" / "r_3.png").rename(capture / "images" / "r_\x1b[2J3.png")
    doc = json.loads((capture / "transforms.json").read_text())
    doc["frames"][3]["file_path"] = "images/r_\x1b[2J3.png"
    (capture / "transforms.json").write_text(json.dumps(doc))
    assert main(["local", "--input", str(capture), "--output", str(tmp_path / "out")]) == 2
    # The outcome is logged once by the runner (stderr's log handler; here pytest's), not printed again.
    err = capsys.readouterr().err + caplog.text
    assert "images/r_\\x1b[2J3.png: is not a usable object key: it holds a control character" in err
    assert "\x1b" not in err


def _turn_around(doc: dict[str, Any]) -> None:
    for frame in doc["frames"]:
        m = np.asarray(frame["transform_matrix"])
        m[:3, 0] *= -1
        m[:3, 2] *= -1
        frame["transform_matrix"] = m.tolist()


def _break(capture: Path, case: str) -> None:
    """Captures that once passed validate and then failed (or published garbage) in local: issue 11 point 6."""
    transforms, images = capture / "transforms.json", capture / "images"
    doc = json.loads(transforms.read_text())
    if case == "empty-mask":
        Image.new("RGBA", (16, 16), (1, 2, 3, 0)).save(images / "r_2.png")
    elif case == "alpha-254":
        for i in range(8):
            image = Image.open(images / f"r_{i}.png")
            image.putalpha(254)
            image.save(images / f"r_{i}.png")
    elif case == "one-point":
        for frame in doc["frames"]:
            frame["transform_matrix"][0][3] = frame["transform_matrix"][1][3] = frame["transform_matrix"][2][3] = 0.5
    elif case == "facing-away":
        _turn_around(doc)
    elif case == "principal-point":
        doc.pop("camera_angle_x")
        doc.update(fl_x=20, cx=-400, cy=8, w=16, h=16)
    elif case == "angle-y-string":
        doc["camera_angle_y"] = "0.8"
    elif case == "angle-y-zero":
        doc["camera_angle_y"] = 0
    elif case == "identical-frames":
        for i in range(1, 8):
            (images / f"r_{i}.png").write_bytes((images / "r_0.png").read_bytes())
    elif case == "symlinked-view":
        (images / "r_5.png").unlink()
        (images / "r_5.png").symlink_to("r_1.png")
    if case == "deep-nesting":
        transforms.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "huge-number":
        transforms.write_text(json.dumps(doc).replace('"camera_angle_x": 0.8', '"camera_angle_x": ' + "9" * 5000))
    elif case == "transforms-folder":
        transforms.unlink()
        transforms.mkdir()
        (transforms / "x").write_text("{}")
    elif case == "transforms-fifo":
        transforms.unlink()
        os.mkfifo(transforms)
    else:
        transforms.write_text(json.dumps(doc))


BROKEN = [
    "empty-mask",
    "alpha-254",
    "one-point",
    "facing-away",
    "principal-point",
    "angle-y-string",
    "angle-y-zero",
    "identical-frames",
    "symlinked-view",
    "deep-nesting",
    "huge-number",
    "transforms-folder",
    "transforms-fifo",
]


@pytest.mark.usefixtures("standin")
@pytest.mark.parametrize("case", BROKEN)
def test_validate_and_local_refuse_alike_with_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    capture = write_capture(tmp_path / "capture", views=8, size=16)
    _break(capture, case)
    assert main(["validate", "--input", str(capture)]) == 2
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  - ")]
    assert problems, case
    args = ["local", "--input", str(capture), "--output", str(tmp_path / "out"), "--set", "refinement.iterations=2"]
    assert main(args) == 2
    err = capsys.readouterr().err + caplog.text  # the runner logs the outcome once
    assert "InputsInvalid: capture invalid" in err
    assert all(p in err for p in problems), (problems, err)
    assert not (tmp_path / "out" / "manifest.json").exists()
