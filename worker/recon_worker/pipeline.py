"""The pipeline: fetch ► reconstruct ► refine ► texture ► validate ► export ► publish.

The runtime owns `fetch` (list, size limits, parallel download, capture checks) and `publish` (atomic,
see `publish.py`); the five stages between are the engine's (`recon_worker.engine.stages`, or the module
named by RECON_ENGINE). After each engine stage its folder is checkpointed; a retried run restores the
longest run of checkpointed stages and starts at the first unfinished one.

Cancellation is cooperative: `CancelToken.check()` raises `stage.Cancelled` at safe points (between
stages, between refinement iterations via `ctx.check_cancelled`, between transfer batches).
On any failure the staged outputs are deleted; checkpoints stay for a retry unless the failure is
permanent (exit 2), in which case the whole staging prefix goes.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recon_worker.capture import Capture, load_capture
from recon_worker.capture_checks import (
    CaptureLimits,
    require_valid_capture,
)
from recon_worker.capture_forms import (
    POSES_WEIGHT,
    copy_poses,
    estimate_capture_poses,
    form_choice,
    needs_poses,
    prepare_capture,
)
from recon_worker.checkpoint import Checkpoints, run_key, staging_prefix
from recon_worker.errors import ExitCode, outcome_of
from recon_worker.fetch import fetch_capture
from recon_worker.gpu import DeviceChoice
from recon_worker.gpu_usage import GpuSampler, per_stage
from recon_worker.progress import ProgressTracker
from recon_worker.publish import (
    MANIFEST,
    InputRecord,
    Manifest,
    ManifestFile,
    check_gates,
    input_fingerprint,
    now,
    publish_outputs,
    software_versions,
)
from recon_worker.stage import Cancelled, StageContext, StageName
from recon_worker.status import StatusReporter, metrics_patch
from recon_worker.storage import Store, StoredObject, UploadedFile, open_store
from recon_worker.task import TaskDocument

log = logging.getLogger("recon_worker.pipeline")

ENGINE_STAGES: tuple[StageName, ...] = ("reconstruct", "refine", "texture", "validate", "export")
DEFAULT_ENGINE = "recon_worker.engine.stages"
EngineStage = Callable[[StageContext], None]


def load_engine(module: str | None = None) -> dict[StageName, EngineStage]:
    """The engine's stage functions from `module` (default: RECON_ENGINE, else recon_worker.engine.stages)."""
    name = module or os.environ.get("RECON_ENGINE") or DEFAULT_ENGINE
    engine = importlib.import_module(name)
    missing = [s for s in ENGINE_STAGES if not callable(getattr(engine, s, None))]
    if missing:
        raise RuntimeError(f"engine module {name} lacks stage function(s) {', '.join(missing)}")
    return {s: getattr(engine, s) for s in ENGINE_STAGES}


class CancelToken:
    """Set from a signal handler; checked by the pipeline and the engine at safe points."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.why = ""

    def request(self, why: str) -> None:
        self.why = why
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(f"stopped by {self.why}; nothing was published")


@dataclass(frozen=True)
class RunResult:
    manifest: Manifest
    manifest_uri: str


@dataclass
class Pipeline:
    task: TaskDocument
    workdir: Path  # scratch; the caller removes it
    engine: Mapping[StageName, EngineStage]
    device: DeviceChoice
    tracker: ProgressTracker = field(default_factory=ProgressTracker)
    reporter: StatusReporter | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    limits: CaptureLimits = field(default_factory=lambda: CaptureLimits())
    use_checkpoints: bool = True
    _started: float = 0.0
    _spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> monotonic start, end
    _fetch_seconds: float = 0.0
    _poses_seconds: float | None = None

    def run(self) -> RunResult:
        self._started = time.monotonic()
        input_store = open_store(self.task.input.uri, self.task.storage)
        output_store = open_store(self.task.output.uri, self.task.storage)
        staging: str | None = None
        try:
            objects, key, staging = self._fetch(input_store)
            checkpoints = Checkpoints(output_store, staging + "checkpoints/", key) if self.use_checkpoints else None
            capture, fetch_seconds = self._prepare(checkpoints)
            ctx = StageContext(
                capture=capture,
                settings=self.task.quality,
                gates=self.task.gates,
                workdir=self.workdir,
                device=self.device.device,
                renderer=self.device.renderer,
                export_formats=tuple(self.task.quality.export.formats),
                progress=self.tracker.update,
                check_cancelled=self.cancel.check,
            )
            ctx.stage_seconds["fetch"] = fetch_seconds
            if self._poses_seconds is not None:
                ctx.stage_seconds["poses"] = self._poses_seconds
                # Published with the mesh: the recovered cameras (and masks) the mesh was made from.
                copy_poses(self.workdir / "fetch" / "capture", ctx.workdir / "export" / "poses")
            sampler = GpuSampler() if self.device.device == "cuda" else None
            if sampler is not None and sampler.start():
                ctx.gpu_usage = lambda: per_stage(list(sampler.samples), dict(self._spans))
            try:
                self._run_engine(ctx, checkpoints)
            finally:
                if sampler is not None:
                    sampler.stop()
            metrics = self._metrics(ctx)
            self.cancel.check()
            self.tracker.start("publish")
            staged = checkpoints.stored_files("export") if checkpoints is not None else None
            manifest = self._publish(output_store, ctx, objects, metrics, staging, staged)
            self.tracker.finish("publish")
        except BaseException as exc:
            if staging is not None:
                self._clean_after_failure(output_store, staging, outcome_of(exc).exit_code)
            raise
        if checkpoints is not None:
            try:
                checkpoints.clear()
            except Exception as exc:  # the result is published; stale checkpoints only cost storage
                log.warning("could not remove checkpoints under %s: %s", output_store.uri_of(staging), exc)
        # status.outputs are the operator's: it writes them from this manifest once it has verified it.
        return RunResult(manifest, output_store.uri_of(MANIFEST))

    def _fetch(self, store: Store) -> tuple[list[StoredObject], str, str]:
        """Stage `fetch`: the capture's objects, the run key they give and its staging prefix (run and poses)."""
        self.tracker.start("fetch")
        objects = self._download(store)
        self.tracker.finish("fetch")
        key = run_key(self.task, input_fingerprint(objects))
        return objects, key, staging_prefix(self.task, key)

    def _download(self, store: Store) -> list[StoredObject]:
        started = time.monotonic()
        dest = self.workdir / "fetch" / "capture"
        progress = lambda fraction: self.tracker.update(fraction * 0.9)  # noqa: E731
        objects = fetch_capture(store, dest, self.task.input.transforms_file, self.limits, self.cancel.check, progress)
        self._fetch_seconds = time.monotonic() - started
        return objects

    def _prepare(self, checkpoints: Checkpoints | None) -> tuple[Capture, float]:
        """Poses (structure from motion, stage `poses`, cached in the checkpoints for a retry), then the
        canonical form (undistorted, masked) and the capture checks."""
        started = time.monotonic()
        dest = self.workdir / "fetch" / "capture"
        name, choice = self.task.input.transforms_file, form_choice(self.task.input)
        estimating = self._poses(checkpoints)
        form = prepare_capture(dest, name, choice, self.workdir / "sfm", poses_ready=estimating)
        log.info("%s", form.explain())
        report = require_valid_capture(dest, name, self.limits)
        log.info("%s", report.summary())
        seconds = self._fetch_seconds + time.monotonic() - started - (self._poses_seconds or 0.0)
        return load_capture(dest, name), round(seconds, 3)

    def _poses(self, checkpoints: Checkpoints | None) -> bool:
        """Stage `poses` when the capture needs it: SfM, or its checkpoint from an earlier attempt (or
        from the operator's CPU Job, `run_poses`). Returns whether poses were estimated."""
        dest = self.workdir / "fetch" / "capture"
        name, choice = self.task.input.transforms_file, form_choice(self.task.input)
        if not needs_poses(dest, name, choice):
            return False
        started = time.monotonic()
        self.tracker.weights = {**self.tracker.weights, "poses": POSES_WEIGHT}
        self.tracker.start("poses")
        if checkpoints is not None and checkpoints.completed(["poses"]):
            checkpoints.restore("poses", dest)
            self.tracker.skip("poses")
            log.info("poses: reused the structure from motion of an earlier attempt")
        else:
            form = estimate_capture_poses(dest, name, choice, self.workdir / "sfm", self.tracker.update)
            log.info("%s", form.explain())
            if checkpoints is not None:
                copy_poses(dest, self.workdir / "poses")
                checkpoints.save("poses", self.workdir / "poses")
        self.tracker.finish("poses")
        self._poses_seconds = round(time.monotonic() - started, 3)
        return True

    def run_poses(self) -> bool:
        """Fetch and stage `poses` alone, saved as the run's checkpoint (a CPU step before the GPU one:
        the full run then reuses it). Returns whether poses were estimated; a failure cleans up as `run`."""
        input_store = open_store(self.task.input.uri, self.task.storage)
        output_store = open_store(self.task.output.uri, self.task.storage)
        staging: str | None = None
        try:
            _, key, staging = self._fetch(input_store)
            return self._poses(Checkpoints(output_store, staging + "checkpoints/", key))
        except BaseException as exc:
            if staging is not None:
                self._clean_after_failure(output_store, staging, outcome_of(exc).exit_code)
            raise

    def _run_engine(self, ctx: StageContext, checkpoints: Checkpoints | None) -> None:
        resumed = checkpoints.completed(ENGINE_STAGES) if checkpoints else []
        for stage in resumed:
            self.cancel.check()
            checkpoints.restore(stage, self.workdir / stage)  # type: ignore[union-attr]
            self.tracker.skip(stage)
            ctx.resumed_stages.append(stage)
        if resumed:
            log.info("resumed from checkpoints of: %s", ", ".join(resumed))
        for stage in ENGINE_STAGES:
            if stage in resumed:
                continue
            self.cancel.check()
            self.tracker.start(stage)
            started = time.monotonic()
            self._spans[stage] = (started, math.inf)  # open until it ends (export reports while it runs)
            self.engine[stage](ctx)
            ended = time.monotonic()
            self._spans[stage] = (started, ended)
            ctx.stage_seconds[stage] = round(ended - started, 3)
            self.cancel.check()
            if checkpoints is not None:
                checkpoints.save(stage, ctx.stage_dir(stage))
            self.tracker.finish(stage)

    def _metrics(self, ctx: StageContext) -> dict[str, Any]:
        path = ctx.workdir / "validate" / "metrics.json"
        if not path.is_file():
            raise RuntimeError(f"the validate stage wrote no {path.relative_to(ctx.workdir)}")
        metrics: dict[str, Any] = json.loads(path.read_text())
        duration = time.monotonic() - self._started
        metrics["durationSeconds"] = round(duration, 3)
        if self.device.device == "cuda":
            metrics["gpuSeconds"] = round(duration * self.task.compute.gpus, 3)
        if self.reporter is not None:
            self.reporter.update(metrics_patch(metrics), force=True)
        check_gates(metrics, self.task.gates)
        return metrics

    def _publish(
        self,
        store: Store,
        ctx: StageContext,
        objects: list[StoredObject],
        metrics: dict[str, Any],
        staging: str,
        staged: Mapping[str, UploadedFile] | None,
    ) -> Manifest:
        started = time.monotonic()

        def build(files: list[ManifestFile]) -> Manifest:
            return Manifest(
                created_at=now(),
                job=self.task.job,
                input=InputRecord(
                    uri=self.task.input.uri,
                    transforms_file=self.task.input.transforms_file,
                    fingerprint=input_fingerprint(objects),
                    objects=len(objects),
                    bytes=sum(o.size for o in objects),
                ),
                settings=self.task.quality,
                files=files,
                metrics=metrics,
                resumed_stages=list(ctx.resumed_stages),
                # publish: until the manifest, the last file, is built (report.html is written before it).
                stage_seconds={**ctx.stage_seconds, "publish": round(time.monotonic() - started, 3)},
                software=software_versions(),
            )

        return publish_outputs(
            store,
            ctx.workdir / "export",
            staging,
            build,
            check_cancelled=self.cancel.check,
            progress=self.tracker.update,
            staged=staged,  # the export checkpoint: its files need no second upload
        )

    def _clean_after_failure(self, store: Store, staging: str, exit_code: int) -> None:
        """Staged outputs always go; checkpoints only when no retry will come (a permanent failure)."""
        prefix = staging if exit_code == ExitCode.INVALID else staging + "outputs/"
        try:
            removed = store.delete_prefix(prefix)
            log.info("removed %d staged object(s) under %s", removed, store.uri_of(prefix))
        except Exception as exc:
            log.warning("could not clean %s: %s", store.uri_of(prefix), exc)
