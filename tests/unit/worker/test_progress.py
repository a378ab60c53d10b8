"""Progress weighting, ETA and the terminal bar."""

from __future__ import annotations

import io

import pytest

from recon_worker.presets import resolve_quality
from recon_worker.progress import (
    DEFAULT_WEIGHTS,
    ProgressEvent,
    ProgressTracker,
    TerminalProgress,
    format_duration,
    render_bar,
    stage_weights,
)
from recon_worker.stage import STAGES


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_every_stage_has_a_weight_and_refinement_dominates_by_default() -> None:
    assert set(DEFAULT_WEIGHTS) == set(STAGES)
    assert max(DEFAULT_WEIGHTS, key=lambda s: DEFAULT_WEIGHTS[s]) == "refine"


def test_refinement_weight_follows_its_iterations() -> None:
    standard = stage_weights(resolve_quality("standard"))
    draft = stage_weights(resolve_quality("draft"))
    none = stage_weights(resolve_quality("draft", {"refinement": {"iterations": 0}}))
    assert standard["refine"] == DEFAULT_WEIGHTS["refine"]
    assert none["refine"] < draft["refine"] < standard["refine"]
    assert draft["fetch"] == standard["fetch"]


def test_overall_is_weighted_by_stage() -> None:
    events: list[ProgressEvent] = []
    tracker = ProgressTracker(listeners=[events.append])
    total = sum(DEFAULT_WEIGHTS.values())
    tracker.start("fetch")
    tracker.finish("fetch")
    tracker.start("reconstruct")
    tracker.finish("reconstruct")
    tracker.start("refine")
    tracker.update(0.5)
    expected = (DEFAULT_WEIGHTS["fetch"] + DEFAULT_WEIGHTS["reconstruct"] + 0.5 * DEFAULT_WEIGHTS["refine"]) / total
    assert events[-1].overall == pytest.approx(expected)
    assert events[-1].stage == "refine" and events[-1].stage_fraction == 0.5 and not events[-1].stage_changed
    assert [e.stage for e in events if e.stage_changed] == ["fetch", "reconstruct", "refine"]


def test_progress_never_goes_back_and_is_clamped() -> None:
    events: list[ProgressEvent] = []
    tracker = ProgressTracker(listeners=[events.append])
    tracker.start("refine")
    tracker.update(0.6)
    tracker.update(0.4)  # ignored
    tracker.update(7.0)  # clamped to 1
    assert [e.stage_fraction for e in events] == [0.0, 0.6, 1.0]


def test_full_run_reaches_100_percent() -> None:
    tracker = ProgressTracker()
    for stage in STAGES:
        tracker.start(stage)
        tracker.finish(stage)
    assert tracker.overall() == 1.0


def test_resumed_stages_count_as_done_but_not_in_the_eta_rate() -> None:
    clock = Clock()
    tracker = ProgressTracker(clock=clock)
    tracker.start("fetch")
    tracker.finish("fetch")
    for stage in ("reconstruct", "refine"):
        tracker.skip(stage)
    done_before = tracker.overall()
    assert done_before > 0.6
    tracker.start("texture")
    clock.now = 10.0
    tracker.update(0.5)
    worked = tracker.overall() - (DEFAULT_WEIGHTS["reconstruct"] + DEFAULT_WEIGHTS["refine"]) / sum(
        DEFAULT_WEIGHTS.values()
    )
    eta = tracker.eta_seconds()
    assert eta == pytest.approx(10.0 * (1 - tracker.overall()) / worked)


def test_eta_is_unknown_before_any_work() -> None:
    tracker = ProgressTracker(clock=Clock())
    assert tracker.eta_seconds() is None
    tracker.start("fetch")
    assert tracker.eta_seconds() is None


def test_eta_extrapolates_elapsed_time() -> None:
    clock = Clock()
    tracker = ProgressTracker(weights=dict.fromkeys(STAGES, 1.0) | {"poses": 0.0}, clock=clock)  # no SfM
    tracker.start("fetch")
    tracker.finish("fetch")
    clock.now = 30.0
    tracker.start("reconstruct")
    tracker.update(0.5)
    # 1.5 of 7 units took 30 s: 5.5 units are left.
    assert tracker.eta_seconds() == pytest.approx(30.0 * 5.5 / 1.5)


def test_format_duration() -> None:
    assert format_duration(None) == "--:--"
    assert format_duration(75.4) == "01:15"
    assert format_duration(3 * 3600 + 62) == "3:01:02"


def test_bar_shows_percent_stage_and_eta() -> None:
    event = ProgressEvent("refine", 0.5, 0.42, 72.0, False)
    assert render_bar(event, width=10) == "[####......]  42% refine      ETA 01:12"


def test_plain_output_prints_stage_changes_and_each_tenth() -> None:
    stream = io.StringIO()
    bar = TerminalProgress(stream=stream)
    for overall, changed in [(0.0, True), (0.05, False), (0.12, False), (0.15, False), (0.31, True), (1.0, False)]:
        bar(ProgressEvent("refine", 0.0, overall, None, changed))
    lines = stream.getvalue().splitlines()
    assert [line.split("]")[1].split()[0] for line in lines] == ["0%", "12%", "31%", "100%"]
    assert "\r" not in stream.getvalue()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tty_output_redraws_one_line() -> None:
    stream, clock = Tty(), Clock()
    bar = TerminalProgress(stream=stream, clock=clock, min_interval=1.0)
    bar(ProgressEvent("fetch", 0.0, 0.0, None, True))
    bar(ProgressEvent("fetch", 0.5, 0.02, None, False))  # within min_interval: not drawn
    clock.now = 2.0
    bar(ProgressEvent("fetch", 0.9, 0.04, None, False))
    bar.close()
    assert stream.getvalue().count("\r") == 2 and stream.getvalue().endswith("\n")
