"""Exit codes, outcomes and the termination message."""

from __future__ import annotations

import json
from pathlib import Path

from recon_worker.errors import (
    TERMINATION_MESSAGE_LIMIT,
    AccessDenied,
    InputsInvalid,
    NodeUnsuitable,
    QualityGateFailed,
    TransientError,
    outcome_of,
    termination_message,
    write_termination_message,
)
from recon_worker.stage import Cancelled


def test_exit_codes_follow_the_contract() -> None:
    assert outcome_of(InputsInvalid("x")).exit_code == 2
    assert outcome_of(AccessDenied("x")).exit_code == 2
    assert outcome_of(QualityGateFailed("x")).exit_code == 2
    assert outcome_of(NodeUnsuitable("x", reason="InsufficientGPUMemory")).exit_code == 3
    assert outcome_of(TransientError("x")).exit_code == 1
    cancelled = outcome_of(Cancelled("stopped by SIGTERM; nothing was published"))
    assert (cancelled.exit_code, cancelled.reason) == (143, "Cancelled")


def test_unexpected_errors_are_transient_and_name_their_type() -> None:
    outcome = outcome_of(KeyError("mesh"))
    assert (outcome.exit_code, outcome.reason, outcome.message) == (1, "InternalError", "KeyError: 'mesh'")


def test_gpu_out_of_memory_is_a_node_problem() -> None:
    class OutOfMemoryError(RuntimeError):  # the name torch.cuda.OutOfMemoryError has
        pass

    outcome = outcome_of(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert (outcome.exit_code, outcome.reason) == (3, "InsufficientGPUMemory")


def test_termination_message_is_json_with_reason_and_message() -> None:
    assert json.loads(termination_message("InputsInvalid", "frame 3: bad")) == {
        "reason": "InputsInvalid",
        "message": "frame 3: bad",
    }


def test_long_termination_message_is_cut_below_4_kib() -> None:
    message = "\n".join(f'frame {i}: images/r_{i}.png is not a PNG or JPEG "é"' for i in range(500))
    text = termination_message("InputsInvalid", message)
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT < 4096
    decoded = json.loads(text)
    assert decoded["message"].startswith("frame 0: images/r_0.png") and decoded["message"].endswith("(truncated)")


def test_termination_message_written_to_file_and_unwritable_path_is_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    write_termination_message(path, "Cancelled", "stopped")
    assert json.loads(path.read_text())["reason"] == "Cancelled"
    write_termination_message(tmp_path / "missing" / "dir" / "log", "Cancelled", "stopped")


def test_termination_message_escapes_control_characters() -> None:
    from recon_worker.errors import termination_message

    text = termination_message("InputsInvalid", "frame 3: images/\x1b[2J\rr_3.png does not exist\nsecond line")
    assert json.loads(text)["message"] == "frame 3: images/\\x1b[2J\\x0dr_3.png does not exist\nsecond line"
