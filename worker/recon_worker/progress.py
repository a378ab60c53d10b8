"""Pipeline progress: stage weights, the overall percentage, an ETA, and a terminal progress bar.

`ProgressTracker` is pure bookkeeping (time comes from an injectable clock): each stage has a weight,
the overall fraction is the finished stages' weights plus the current stage's weight times its own
fraction. Listeners receive a `ProgressEvent` on every update and decide themselves how often to act
(the status reporter rate-limits, the terminal bar redraws). On a terminal, `TerminalProgress.logs_above`
routes log records (and Python warnings) above the bar, as tqdm's and rich's handlers do; `CountBar`
is the same bar for commands that count items (`recon-worker synth`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from recon_worker.presets import PRESETS, QualitySettings
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


# Relative cost of each stage at the draft preset on the CPU (PyTorch3D's rasterizer), from the
# cpu-draft row of docs/benchmarks/recon.json (seconds: fetch 0.03, reconstruct 0.97, refine 18.86,
# texture 3.40, validate 2.24, export 0.14, publish 0.01), in percent, each at least 1. On the CPU the
# refinement costs pixels x views a step, so the GPU's table (refine a fifth of the run at 30 steps)
# would leave the bar at 25-30 % for three quarters of a draft run.
CPU_DRAFT_WEIGHTS: Mapping[StageName, float] = {
    "fetch": 1,
    "poses": 0,  # set by the pipeline when structure from motion runs
    "reconstruct": 4,
    "refine": 73,
    "texture": 13,
    "validate": 9,
    "export": 1,
    "publish": 1,
}
CPU_DRAFT_STEP = (30, 96, 3)  # (iterations, renderResolution, batchViews) that CPU_DRAFT_WEIGHTS measured


def stage_weights(settings: QualitySettings | None = None, *, cuda: bool = True) -> dict[StageName, float]:
    """Weights for one job on a GPU (`cuda`) or the CPU: refinement's share follows its iteration count
    (0 iterations: almost free), and on the CPU also its pixels and views per step."""
    if not cuda:
        weights = dict(CPU_DRAFT_WEIGHTS)
        if settings is not None:
            refinement = settings.refinement
            iterations, resolution, batch = CPU_DRAFT_STEP
            scale = (
                refinement.iterations / iterations
                * (refinement.render_resolution / resolution) ** 2
                * refinement.batch_views / batch
            )  # fmt: skip
            weights["refine"] = max(1.0, CPU_DRAFT_WEIGHTS["refine"] * scale)
        return weights
    weights = dict(DEFAULT_WEIGHTS)
    if settings is not None:
        # A step costs about the same host time whatever its batch (the GPU waits on kernel launches), but
        # the views rendered are what a longer or bigger run adds: scale by steps x views per step.
        standard = PRESETS["standard"]["refinement"]
        refinement = settings.refinement
        scale = min(
            4.0, refinement.iterations * refinement.batch_views / (standard["iterations"] * standard["batchViews"])
        )
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


CLEAR_LINE = "\r\x1b[K"  # carriage return, then erase to the end of the line (ANSI EL)


@dataclass
class TerminalProgress:
    """Progress for people: a redrawn bar on a TTY, else a plain line per stage and per 10 %."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    min_interval: float = 0.2  # seconds between TTY redraws
    clock: Callable[[], float] = time.monotonic
    _last_draw: float = -1e9
    _last_decile: int = -1
    _line: str = ""  # the bar as last drawn on the TTY ("" when none is on screen)

    def __call__(self, event: ProgressEvent) -> None:
        if self.stream.isatty():
            now = self.clock()
            if event.stage_changed or now - self._last_draw >= self.min_interval or event.overall >= 1:
                self._last_draw = now
                self._line = render_bar(event)
                self.stream.write("\r" + self._line)
                self.stream.flush()
            return
        decile = event.percent // 10
        if event.stage_changed or decile > self._last_decile:
            self._last_decile = max(self._last_decile, decile)
            self.stream.write(render_bar(event) + "\n")
            self.stream.flush()

    def clear(self) -> None:
        """Take the bar off the screen (before something else is written on the terminal)."""
        if self._line:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()

    def redraw(self) -> None:
        """Put the bar back after `clear`."""
        if self._line:
            self.stream.write(self._line)
            self.stream.flush()

    def close(self) -> None:
        if self.stream.isatty() and self._line:
            self.stream.write("\n")
            self.stream.flush()
        self._line = ""

    @contextmanager
    def logs_above(self, logger: logging.Logger | None = None) -> Iterator[None]:
        """While inside, every handler of `logger` (the root logger) clears the bar, writes its record, and
        redraws the bar below it; Python warnings (PyTorch's among them) go through logging too."""
        logger = logger or logging.getLogger()
        saved = list(logger.handlers)
        logger.handlers = [BarAwareHandler(handler, self) for handler in saved]
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)
            logger.handlers = saved


class BarAwareHandler(logging.Handler):
    """Wraps a handler so that its lines appear above a progress bar instead of inside it."""

    def __init__(self, inner: logging.Handler, bar: TerminalProgress | CountBar) -> None:
        super().__init__(inner.level)
        self.inner, self.bar = inner, bar

    def emit(self, record: logging.LogRecord) -> None:
        self.bar.clear()
        try:
            self.inner.handle(record)
        finally:
            self.bar.redraw()


@dataclass
class CountBar(TerminalProgress):
    """`[#####.........] 12/120 images ETA 00:41` for commands that count items; plain lines off a TTY."""

    total: int = 1
    unit: str = "items"
    _started: float | None = None

    def advance(self, done: int) -> None:
        """`done` of `total` items are finished."""
        now = self.clock()
        if self._started is None:
            self._started = now
        fraction = min(1.0, done / max(1, self.total))
        elapsed = now - self._started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 and elapsed > 0 else None
        width = 30
        filled = round(fraction * width)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {self.unit} ETA {format_duration(eta)}"
        if self.stream.isatty():
            if done >= self.total or now - self._last_draw >= self.min_interval:
                self._last_draw = now
                self._line = line
                self.stream.write(CLEAR_LINE + line)
                self.stream.flush()
            return
        decile = int(fraction * 10)
        if decile > self._last_decile:
            self._last_decile = decile
            self.stream.write(line + "\n")
            self.stream.flush()
