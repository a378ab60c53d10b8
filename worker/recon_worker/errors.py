"""Exit codes, typed errors and the termination message: how the worker tells the Job why it stopped.

The exit code is read by the Job's `podFailurePolicy` and the operator; the termination message (JSON,
`{"reason": ..., "message": ...}`) is copied by the operator into the CR's status. Every failure the
worker anticipates is a `WorkerError` carrying both, so `cli.py` maps errors to exits in one place.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from recon_worker.names import printable_text

log = logging.getLogger("recon_worker")

# Kubernetes truncates a termination message at 4096 bytes; stay below it, JSON overhead included.
TERMINATION_MESSAGE_LIMIT = 4000
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


class ExitCode(IntEnum):
    OK = 0
    TRANSIENT = 1  # any code not listed here is a transient failure: the Job retries within its backoff limit
    INVALID = 2  # invalid input, task or result: fail the Job, never retry
    NODE_UNSUITABLE = 3  # this node cannot run it (no GPU, too little GPU memory): retry elsewhere
    CANCELLED = 143  # 128 + SIGTERM, what the kubelet expects of a process stopped by SIGTERM


class WorkerError(Exception):
    """An anticipated failure: a message a user can act on, a CamelCase reason and an exit code."""

    exit_code: ExitCode = ExitCode.TRANSIENT
    reason: str = "TransientError"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InputsInvalid(WorkerError):
    """The capture or the output location is unusable as given (missing bucket or object, bad capture)."""

    exit_code = ExitCode.INVALID
    reason = "InputsInvalid"


class PosesUnrecoverable(InputsInvalid):
    """Structure from motion registered too few of the photos to reconstruct from."""

    reason = "PosesUnrecoverable"


class TaskInvalid(WorkerError):
    exit_code = ExitCode.INVALID
    reason = "TaskInvalid"


class AccessDenied(WorkerError):
    """The credentials may not read or write what the task names. Retrying does not grant permissions."""

    exit_code = ExitCode.INVALID
    reason = "AccessDenied"


class QualityGateFailed(WorkerError):
    """An enforced quality gate failed: the result is not published."""

    exit_code = ExitCode.INVALID
    reason = "QualityGateFailed"


class NodeUnsuitable(WorkerError):
    """This node cannot run the task (reason NoGPU or InsufficientGPUMemory); another node may."""

    exit_code = ExitCode.NODE_UNSUITABLE
    reason = "NoGPU"


class TransientError(WorkerError):
    """Worth retrying: the object store or network failed after the client's own retries."""

    exit_code = ExitCode.TRANSIENT
    reason = "StorageUnavailable"


def termination_message(reason: str, message: str) -> str:
    """`{"reason", "message"}` as JSON of at most TERMINATION_MESSAGE_LIMIT bytes (the message is cut).

    Control characters are escaped first: the operator copies the message into status and Events, which
    kubectl prints raw."""
    message = printable_text(message)
    text = json.dumps({"reason": reason, "message": message})
    kept = message
    while len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        # Escaping makes the JSON's bytes outnumber the text's characters: cut in proportion and retry.
        size = len(text.encode())
        kept = kept[: max(0, int(len(kept) * TERMINATION_MESSAGE_LIMIT / size) - 32)]
        text = json.dumps({"reason": reason, "message": kept + " … (truncated)"})
    return text


def write_termination_message(path: Path | None, reason: str, message: str) -> None:
    """Best effort: a missing or read-only termination log must not change the exit code."""
    if path is None:
        return
    try:
        path.write_text(termination_message(reason, message))
    except OSError as exc:
        log.warning("could not write the termination message to %s: %s", path, exc)


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the exit code and the termination message's reason and message."""

    exit_code: int
    reason: str
    message: str


def outcome_of(exc: BaseException) -> Outcome:
    """Map any exception that ends a run to its outcome (unanticipated ones are transient)."""
    from recon_worker.stage import Cancelled

    if isinstance(exc, WorkerError):
        return Outcome(int(exc.exit_code), exc.reason, exc.message)
    if isinstance(exc, Cancelled | KeyboardInterrupt):
        return Outcome(int(ExitCode.CANCELLED), "Cancelled", str(exc) or "stopped on request; nothing was published")
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, matched without importing torch
        return Outcome(int(ExitCode.NODE_UNSUITABLE), "InsufficientGPUMemory", f"GPU out of memory: {exc}")
    return Outcome(int(ExitCode.TRANSIENT), "InternalError", f"{type(exc).__name__}: {exc}")
