"""Pipeline progress: stage weights, the overall percentage, an ETA, and a terminal progress bar.

`ProgressTracker` is pure bookkeeping (time comes from an injectable clock): each stage has a weight,
the overall fraction is the finished stages' weights plus the current stage's weight times its own
fraction. Listeners receive a `ProgressEvent` on every update and decide themselves how often to act
(the status reporter rate-limits, the terminal bar redraws).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from recon_worker.presets import QualitySettings
from recon_worker.stage import STAGES, StageName

# Relative cost of each stage at the standard preset on a GPU; refinement dominates.
DEFAULT_WEIGHTS: Mapping[StageName, float] = {
    "fetch": 4,
    "poses": 0,  # set by the pipeline when structure from motion runs
    "reconstruct": 8,
    "refine": 55,
    "texture": 15,
    "validate": 8,
    "export": 5,
    "publish": 5,
}


def stage_weights(settings: QualitySettings | None = None) -> dict[StageName, float]:
    """Weights for one job: refinement's share follows its iteration count (0 iterations: almost free)."""
    weights = dict(DEFAULT_WEIGHTS)
    if settings is not None:
        standard_iterations = 600
        scale = min(4.0, settings.refinement.iterations / standard_iterations)
        weights["refine"] = max(1.0, DEFAULT_WEIGHTS["refine"] * scale)
    return weights


@dataclass(frozen=True)
class ProgressEvent:
    stage: StageName
    stage_fraction: float  # 0..1 within the stage
    overall: float  # 0..1 of the whole pipeline
    eta_seconds: float | None  # None until there is enough to extrapolate from
    stage_changed: bool  # first event of a stage

    @property
    def percent(self) -> int:
        return min(100, int(self.overall * 100))


Listener = Callable[[ProgressEvent], None]


@dataclass
class ProgressTracker:
    weights: Mapping[StageName, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    listeners: list[Listener] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    stage: StageName | None = None
    stage_fraction: float = 0.0
    _done: set[StageName] = field(default_factory=set)
    _started: float | None = None
    _skipped_weight: float = 0.0  # weight of stages restored from a checkpoint: not part of the ETA's rate

    def overall(self) -> float:
        total = sum(self.weights[s] for s in STAGES)
        done = sum(self.weights[s] for s in self._done)
        current = self.weights[self.stage] * self.stage_fraction if self.stage and self.stage not in self._done else 0
        return min(1.0, (done + current) / total)

    def eta_seconds(self) -> float | None:
        """Remaining seconds, extrapolated from the work done so far in this run (resumed stages excluded)."""
        if self._started is None:
            return None
        total = sum(self.weights[s] for s in STAGES)
        worked = self.overall() - self._skipped_weight / total
        elapsed = self.clock() - self._started
        if worked < 0.01 or elapsed <= 0:
            return None
        return elapsed * (1.0 - self.overall()) / worked

    def skip(self, stage: StageName) -> None:
        """A stage restored from a checkpoint: counted as done, not timed."""
        if stage not in self._done:
            self._done.add(stage)
            self._skipped_weight += self.weights[stage]

    def start(self, stage: StageName) -> None:
        if self._started is None:
            self._started = self.clock()
        self.stage, self.stage_fraction = stage, 0.0
        self._emit(stage_changed=True)

    def update(self, fraction: float) -> None:
        """Fraction (0..1) of the current stage done; values outside are clamped, going back is ignored."""
        fraction = min(1.0, max(0.0, float(fraction)))
        if self.stage is None or fraction <= self.stage_fraction:
            return
        self.stage_fraction = fraction
        self._emit(stage_changed=False)

    def finish(self, stage: StageName) -> None:
        self._done.add(stage)
        self.stage_fraction = 1.0
        self._emit(stage_changed=False)

    def _emit(self, *, stage_changed: bool) -> None:
        assert self.stage is not None
        event = ProgressEvent(self.stage, self.stage_fraction, self.overall(), self.eta_seconds(), stage_changed)
        for listener in self.listeners:
            listener(event)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def render_bar(event: ProgressEvent, width: int = 30) -> str:
    """`[#########.....................]  31% refine      ETA 01:12`"""
    filled = round(event.overall * width)
    bar = "#" * filled + "." * (width - filled)
    return f"[{bar}] {event.percent:3d}% {event.stage:<11} ETA {format_duration(event.eta_seconds)}"


@dataclass
class TerminalProgress:
    """Progress for people: a redrawn bar on a TTY, else a plain line per stage and per 10 %."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    min_interval: float = 0.2  # seconds between TTY redraws
    clock: Callable[[], float] = time.monotonic
    _last_draw: float = -1e9
    _last_decile: int = -1

    def __call__(self, event: ProgressEvent) -> None:
        if self.stream.isatty():
            now = self.clock()
            if event.stage_changed or now - self._last_draw >= self.min_interval or event.overall >= 1:
                self._last_draw = now
                self.stream.write("\r" + render_bar(event))
                self.stream.flush()
            return
        decile = event.percent // 10
        if event.stage_changed or decile > self._last_decile:
            self._last_decile = max(self._last_decile, decile)
            self.stream.write(render_bar(event) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()
