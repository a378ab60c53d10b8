"""One-line progress bars on stderr: bytes for transfers, percent and stage for a running job.

On a terminal the line is redrawn in place; elsewhere (logs, CI) a line is printed only when the
percent or the stage moves, so logs stay short. `quiet` turns every bar off.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def bar(fraction: float, width: int = 30) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class Bar:
    def __init__(self, label: str, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.label = label
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = ""
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        if self.quiet or text == self._last:
            return
        with self._lock:
            if self.tty:
                self.stream.write("\r\033[K" + text)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
            self._last = text

    def close(self) -> None:
        if not self.quiet and self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()


class BytesBar(Bar):
    """Transfer progress; `add` is called from transfer threads."""

    def __init__(self, label: str, total: int, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        super().__init__(label, quiet=quiet, stream=stream)
        self.total = max(total, 1)
        self.done = 0
        self.started = time.monotonic()
        self._shown_percent = -1

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            done = self.done
        percent = int(100 * done / self.total)
        # Off a terminal, a line every 10 %; on one, every percent.
        step = 1 if self.tty else 10
        if percent // step == self._shown_percent // step and done < self.total:
            return
        self._shown_percent = percent
        rate = done / max(time.monotonic() - self.started, 1e-6)
        self.show(
            f"{self.label} {bar(done / self.total)} {percent:3d}% "
            f"{human_bytes(done)}/{human_bytes(self.total)} {human_bytes(rate)}/s"
        )


class JobBar(Bar):
    """Where a ReconstructionJob stands: phase, stage and percent."""

    def update(self, phase: str, stage: str | None, progress: int | None) -> None:
        percent = int(progress or 0)
        self.show(f"{self.label} {bar(percent / 100)} {percent:3d}% {phase}" + (f" · {stage}" if stage else ""))
