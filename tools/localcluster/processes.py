"""Long-running child processes (control plane components, node agents, kwok) and their pid files.

Each child runs in its own session, so `localcluster up` can exit and leave the cluster running, and
so stopping it reaches the whole process group. A pid file holds "<pid> <start time>": `down` only
signals a pid whose start time still matches, never a recycled pid that belongs to someone else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from pathlib import Path


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None if the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it start past the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait() is missing
        return None
    return fields[19]


def tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open(errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except OSError:
        return f"(no log at {path})"


class ManagedProcess:
    """A child process writing to one log file, tracked by a pid file."""

    def __init__(self, name: str, pid_file: Path, log_file: Path) -> None:
        self.name = name
        self.pid_file = pid_file
        self.log_file = log_file
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"### {' '.join(argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self.popen.pid} {process_start_time(self.popen.pid)}\n")

    def pid(self) -> int | None:
        """The pid if that process is still the one we started, else None."""
        if self.popen is not None:
            return self.popen.pid if self.popen.poll() is None else None
        try:
            pid_text, started = self.pid_file.read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_text)
        return pid if process_start_time(pid) == started else None

    def running(self) -> bool:
        return self.pid() is not None

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds, then forget the pid file."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.pid() is not None:
                time.sleep(0.1)
            if self.pid() is not None:
                _signal_group(pid, signal.SIGKILL)
                while self.pid() is not None:
                    time.sleep(0.05)
        if self.popen is not None:
            self.popen.wait()
        self.pid_file.unlink(missing_ok=True)

    def describe_exit(self, lines: int = 30) -> str:
        code = self.exit_code()
        state = f"exited with code {code}" if code is not None else "is not running"
        return f"{self.name} {state}; last log lines ({self.log_file}):\n{tail(self.log_file, lines)}"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # the child leads its own session, so its pgid is its pid
