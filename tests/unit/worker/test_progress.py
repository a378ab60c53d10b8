"""Progress weighting, ETA and the terminal bar."""

from __future__ import annotations

import io
import json
import logging
import warnings

import pytest

from recon_worker.presets import resolve_quality
from recon_worker.progress import (
    CLEAR_LINE,
    DEFAULT_WEIGHTS,
    CountBar,
    ProgressEvent,
    ProgressTracker,
    TerminalProgress,
    format_duration,
    render_bar,
    stage_weights,
)
from recon_worker.stage import STAGES
from tests.conftest import REPO


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


def test_cpu_draft_weights_follow_the_measured_stage_times() -> None:
    """Where the bar stands at the end of each stage is where the measured CPU draft run stood in time
    (docs/benchmarks/recon.json, cpu-draft row): no more sitting at 25-30 % through the refinement."""
    rows = json.loads((REPO / "docs" / "benchmarks" / "recon.json").read_text())
    row = next(r for r in rows if r["device"] == "cpu" and r["preset"] == "draft")
    seconds = row["stage_seconds"]
    weights = stage_weights(resolve_quality("draft"), cuda=False)
    total_s, total_w = sum(seconds.values()), sum(weights.values())
    done_s = done_w = 0.0
    for stage in STAGES:
        done_s += seconds.get(stage, 0.0)  # `poses` runs only for photos posed by structure from motion
        done_w += weights[stage]
        assert done_w / total_w == pytest.approx(done_s / total_s, abs=0.05), stage


def test_cpu_refinement_weight_follows_pixels_views_and_steps() -> None:
    draft = stage_weights(resolve_quality("draft"), cuda=False)["refine"]
    more_steps = stage_weights(resolve_quality("draft", {"refinement": {"iterations": 60}}), cuda=False)["refine"]
    bigger = stage_weights(resolve_quality("draft", {"refinement": {"renderResolution": 192}}), cuda=False)["refine"]
    assert more_steps == pytest.approx(2 * draft)
    assert bigger == pytest.approx(4 * draft)


def test_log_records_and_warnings_appear_above_the_bar_not_inside_it() -> None:
    stream = Tty()
    bar = TerminalProgress(stream=stream)
    logger = logging.getLogger("test-progress-above")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.handlers = [handler]
    bar(ProgressEvent("refine", 0.5, 0.42, None, True))
    with bar.logs_above(logger):
        logger.warning("something happened")
        warnings.warn("a library warning", UserWarning, stacklevel=1)
    # The py.warnings logger propagates to the root logger, not to ours: route that one through too.
    root = logging.getLogger("py.warnings")
    root.propagate, saved = False, list(root.handlers)
    root.handlers = [handler]
    try:
        with bar.logs_above(root):
            warnings.warn("a library warning", UserWarning, stacklevel=1)
    finally:
        root.handlers, root.propagate = saved, True
    bar.close()
    out = stream.getvalue()
    bar_line = render_bar(ProgressEvent("refine", 0.5, 0.42, None, True))
    assert out.startswith("\r" + bar_line + CLEAR_LINE + "WARNING something happened\n" + bar_line)
    assert "a library warning" in out
    # Every log line starts on a cleared line, and the bar is drawn again after it.
    for chunk in out.split(CLEAR_LINE)[1:]:
        assert chunk.startswith("WARNING") and bar_line in chunk


def test_count_bar_counts_items_on_a_tty_and_prints_tenths_elsewhere() -> None:
    plain = io.StringIO()
    bar = CountBar(stream=plain, total=20, unit="images")
    for done in range(1, 21):
        bar.advance(done)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("[" + "#" * 30 + "] 20/20 images")
    tty, clock = Tty(), Clock()
    bar = CountBar(stream=tty, total=3, unit="images", clock=clock, min_interval=0.0)
    for done in (1, 2, 3):
        clock.now += 1
        bar.advance(done)
    bar.close()
    assert tty.getvalue().count(CLEAR_LINE) == 3 and "3/3 images ETA 00:00" in tty.getvalue()
