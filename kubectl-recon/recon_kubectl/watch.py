"""Follow one ReconstructionJob until it ends, drawing its phase, stage and percent."""

from __future__ import annotations

import time
from typing import Any

from recon_kubectl.cluster import Cluster
from recon_kubectl.progress import JobBar
from recon_kubectl.resource import TERMINAL_PHASES


def wait_for_end(
    cluster: Cluster, name: str, *, timeout_s: float | None = None, poll_s: float = 1.0, quiet: bool = False
) -> dict[str, Any]:
    """Poll the resource until its phase is terminal; returns its last status.

    Polling (not a watch) keeps this simple and correct across apiserver restarts and expired
    resource versions; one GET a second is nothing next to the operator's own traffic.
    """
    progress = JobBar(name, quiet=quiet)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            status = cluster.get_job(name).get("status") or {}
            phase = str(status.get("phase") or "Pending")
            progress.update(phase, status.get("stage"), status.get("progress"))
            if phase in TERMINAL_PHASES:
                return dict(status)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not finish within {timeout_s:.0f} s (it is {phase}; still running)")
            time.sleep(poll_s)
    finally:
        progress.close()
