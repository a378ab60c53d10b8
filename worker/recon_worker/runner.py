"""One run of the worker process: task in, outcome out (exit code, reason, message).

`execute` wraps the pipeline with everything around it: the scratch folder, the device check, the
worker info on the CR, signal-driven cancellation, and the mapping of any failure to an `Outcome`.
The commands in `cli.py` only parse arguments, call this and write the outcome where it belongs.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from recon_worker.capture_checks import CaptureInvalid, CaptureLimits, CaptureReport, check_capture
from recon_worker.capture_forms import CaptureForm, FormChoice, describe_capture, prepare_capture
from recon_worker.errors import ExitCode, InputsInvalid, Outcome, TaskInvalid, outcome_of
from recon_worker.fetch import fetch_capture
from recon_worker.gpu import DeviceChoice, detect_device
from recon_worker.pipeline import CancelToken, Pipeline, load_engine
from recon_worker.progress import Listener, ProgressTracker, stage_weights
from recon_worker.stage import Cancelled
from recon_worker.status import StatusReporter, WorkerInfo, worker_patch
from recon_worker.storage import FileStore, open_store
from recon_worker.task import StorageSpec, TaskDocument, TaskError, check_uri, load_task

log = logging.getLogger("recon_worker")


def read_task(task_file: str | None, environ: Mapping[str, str] = os.environ) -> TaskDocument:
    """The task from `--task FILE`, else RECON_TASK (JSON), else RECON_TASK_FILE; TaskInvalid when unusable."""
    path = task_file or (None if environ.get("RECON_TASK") else environ.get("RECON_TASK_FILE"))
    try:
        if path:
            text = Path(path).read_text()
        elif environ.get("RECON_TASK"):
            text = environ["RECON_TASK"]
        else:
            raise TaskInvalid("no task: set RECON_TASK (JSON) or RECON_TASK_FILE, or pass --task FILE")
        return load_task(text)
    except OSError as exc:
        raise TaskInvalid(f"cannot read the task file {path}: {exc.strerror}") from None
    except TaskError as exc:
        raise TaskInvalid(str(exc)) from None


@contextmanager
def cancel_on_signals(
    token: CancelToken, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> Iterator[None]:
    """While inside, SIGTERM/SIGINT ask the pipeline to stop at its next safe point; a second one stops it now.

    A stage can run for minutes between safe points; a user who presses Ctrl-C again should not have to reach
    for SIGKILL, which would leave the scratch folder behind. Raising here unwinds through `execute`'s
    cleanup (staged outputs, scratch) wherever the main thread is.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if token.is_set():
            log.warning("received %s again: stopping now", name)
            raise Cancelled(f"stopped by {token.why} then {name}; nothing was published")
        log.warning("received %s: stopping at the next safe point (send it again to stop now)", name)
        token.request(name)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def execute(
    task: TaskDocument,
    *,
    reporter: StatusReporter | None = None,
    listeners: Sequence[Listener] = (),
    cancel: CancelToken | None = None,
    limits: CaptureLimits | None = None,
    use_checkpoints: bool = True,
    poses_only: bool = False,
) -> Outcome:
    """Run the whole pipeline for `task`; never raises (Ctrl-C and SIGTERM become a Cancelled outcome).

    `poses_only`: fetch and stage `poses` alone, on the CPU, checkpointed for the full run."""
    cancel = cancel or CancelToken()
    parent = os.environ.get("RECON_SCRATCH")
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="recon-", dir=parent))
    try:
        device = DeviceChoice("cpu", None) if poses_only else detect_device(task.compute)
        log.info("computing on %s (%s, renderer %s)", device.device, device.gpu_name, device.renderer)
        if reporter is not None:
            total = device.gpu.total_gib if device.gpu else None
            reporter.update(worker_patch(WorkerInfo.from_env(device.gpu_name, total, device.renderer)), force=True)
        weights = stage_weights(task.quality, cuda=device.device == "cuda")
        tracker = ProgressTracker(weights=weights, listeners=list(listeners))
        if reporter is not None:
            tracker.listeners.append(reporter.on_progress)
        pipeline = Pipeline(
            task=task,
            workdir=scratch,
            engine=load_engine(),
            device=device,
            tracker=tracker,
            reporter=reporter,
            cancel=cancel,
            limits=limits or CaptureLimits.for_worker(device.device),
            use_checkpoints=use_checkpoints,
        )
        if poses_only:
            estimated = pipeline.run_poses()
            return Outcome(
                int(ExitCode.OK), "Succeeded", "poses estimated" if estimated else "poses given: nothing to do"
            )
        result = pipeline.run()
        metrics = result.manifest.metrics
        psnr = f", PSNR {metrics['psnr']:.2f} dB" if isinstance(metrics.get("psnr"), int | float) else ""
        message = f"published {result.manifest_uri} ({len(result.manifest.files)} files{psnr})"
        return Outcome(int(ExitCode.OK), "Succeeded", message)
    except (Exception, KeyboardInterrupt) as exc:
        outcome = outcome_of(exc)
        if outcome.reason == "InternalError":
            log.exception("unexpected failure")
        else:
            log.error("%s: %s", outcome.reason, outcome.message)
        return outcome
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if reporter is not None:
            reporter.close()


def check_capture_at(
    uri: str,
    storage: StorageSpec,
    transforms_file: str,
    limits: CaptureLimits,
    choice: FormChoice | None = None,
) -> tuple[CaptureForm, CaptureReport | None]:
    """The capture checks alone (`recon-worker validate`): the form detected, then the checks on a scratch
    copy fetched exactly as a run fetches (local folders too, so that validate and local agree on every
    capture) and brought into the canonical form (undistorted, masked). A photo folder whose poses are to
    be estimated is only described (structure from motion is the run's work): the report is then None."""
    choice = choice or FormChoice()
    store = open_store(check_uri(uri), storage)
    if isinstance(store, FileStore) and not store.root.is_dir():
        raise InputsInvalid(f"{store.uri} is not a directory")
    parent = os.environ.get("RECON_SCRATCH")
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recon-validate-", dir=parent) as scratch:
        root = Path(scratch) / "capture"
        try:
            fetch_capture(store, root, transforms_file, limits)
        except CaptureInvalid as exc:
            return CaptureForm(), exc.report
        form = describe_capture(root, transforms_file, choice)
        if form.poses == "estimate":
            return form, None
        form = prepare_capture(root, transforms_file, choice, Path(scratch) / "sfm")
        return form, check_capture(root, transforms_file, limits)
