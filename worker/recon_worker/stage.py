"""The contract between the worker runtime and the reconstruction engine's stages.

The pipeline runs the stages `fetch, poses, reconstruct, refine, texture, validate, export, publish` in order
(`poses` only for photos without poses).
The runtime owns `fetch` and `publish`; the engine (`recon_worker.engine.stages`) implements the five in
between as plain functions `stage(ctx: StageContext) -> None`.

Each stage reads what earlier stages wrote under `ctx.workdir/<stage>/` and writes its own results to
`ctx.stage_dir(<its name>)`, and nothing else. Stage outputs are therefore plain files, which is what
lets the runtime checkpoint a finished stage (upload its folder) and resume a retried pod at the first
unfinished one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recon_worker.capture import Capture
from recon_worker.presets import QualitySettings
from recon_worker.task import Gates

StageName = Literal["fetch", "poses", "reconstruct", "refine", "texture", "validate", "export", "publish"]
# `poses` (structure from motion) runs only for captures without poses; its weight is 0 otherwise.
STAGES: tuple[StageName, ...] = (
    "fetch",
    "poses",
    "reconstruct",
    "refine",
    "texture",
    "validate",
    "export",
    "publish",
)


@dataclass
class StepClock:
    """Seconds per named step of a stage, for its `stepSeconds`: `lap(step)` ends the step begun at
    the previous lap (or at the clock's creation)."""

    seconds: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter)

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 3)
        self._last = now


class Cancelled(Exception):
    """Raised at a safe point when the worker was asked to stop (SIGTERM)."""


@dataclass
class StageContext:
    capture: Capture
    settings: QualitySettings
    gates: Gates
    workdir: Path  # stage outputs live in workdir/<stage>/
    device: str = "cpu"  # torch device: "cuda" or "cpu"
    renderer: Literal["auto", "nvdiffrast", "pytorch3d"] = "auto"
    export_formats: tuple[str, ...] = ("glb", "obj")
    # Called with the fraction (0..1) of the current stage done; cheap, may be called every iteration.
    progress: Callable[[float], None] = lambda fraction: None
    # Raises Cancelled when a stop was requested; call it between iterations.
    check_cancelled: Callable[[], None] = lambda: None
    # Timings of the stages finished so far, seconds (for the report).
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # Stages restored from a checkpoint instead of run (for the report).
    resumed_stages: list[str] = field(default_factory=list)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("recon_worker"))
    # GPU utilisation per stage sampled so far (StageGpuUse by stage name; empty on the CPU), for the report.
    gpu_usage: Callable[[], dict[str, Any]] = lambda: {}

    def stage_dir(self, stage: StageName) -> Path:
        path = self.workdir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path
