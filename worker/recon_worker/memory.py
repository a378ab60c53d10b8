"""How much memory this worker may use: the figure the capture limits are derived from.

Three figures, the smallest present wins: RECON_MEMORY_BYTES (the operator sets it to the pod's memory
request through the downward API, `resourceFieldRef: {containerName: worker, resource: requests.memory}`,
so it is the request the API server admitted, in bytes; "0" there means the pod has no request), the
cgroup's memory limit (v2, then v1), and the machine's RAM. The request is what the scheduler reserved for
the pod: a worker that stays within it is never the one the node's memory pressure evicts, and a request
above the cgroup limit (or the RAM) cannot be used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# The worker's peak host memory: a fixed base (Python, PyTorch, the engine's buffers; on a GPU also the CUDA
# context and the nvdiffrast plugin), a cost per view and a cost per decoded pixel (`make bench-worker-memory`,
# docs/benchmarks.md "Worker memory"):
# - CPU: every buffer of the engine is host memory: a fit of 922 MiB + 344 bytes per pixel over 32²-1024².
# - GPU (H200, `tools/bench_worker_memory.py gpu`, standard preset): the renders and rasters live on the device;
#   the host keeps the decoded views and the validate stage's copies: a fit of 2,109 MiB + 0.39 MiB per view +
#   23 bytes per pixel of host memory (the device's own peak: 550 MiB + 1.5 MiB per view + 54 bytes per pixel).
# Per view: the reconstruct stage's [views, points] chunks were the cost that grew (8.7 MiB per view, 512
# views of 16² at 5.1 GB); with chunks sized by the views it measured 0.12-0.22 MiB per view alone (16 to
# 2,002 views; the rest is glibc's heap: 173 MiB at 2,002 views with a fixed mmap threshold, as at 16) and
# the whole run peaked at 901/919/915 MiB for 16/128/512 views: 2 MiB leaves a margin. The figures below
# keep a margin over each fit.
BASE_BYTES = {"cpu": 1_500 * 2**20, "cuda": 2_300 * 2**20}
BYTES_PER_VIEW = 2 * 2**20
BYTES_PER_PIXEL = {"cpu": 360, "cuda": 40}

MEMORY_ENV = "RECON_MEMORY_BYTES"
CGROUP_FILES = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
UNLIMITED = 2**60  # cgroup v1 writes a number near 2^63 for "no limit"


def _read_bytes(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) >= UNLIMITED:  # "max" in cgroup v2
        return None
    return int(text)


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def worker_memory_bytes(
    environ: Mapping[str, str] = os.environ, cgroup_files: tuple[Path, ...] = CGROUP_FILES
) -> int | None:
    """The memory this worker may use, in bytes, or None when nothing says (see the module's docstring)."""
    figures = []
    requested = environ.get(MEMORY_ENV, "").strip()
    if requested:
        if not requested.isdigit():
            raise ValueError(f"{MEMORY_ENV} must be a number of bytes, not {requested!r}")
        if int(requested) > 0:  # the downward API's "0": no memory request
            figures.append(int(requested))
    cgroup = next((b for p in cgroup_files if (b := _read_bytes(p)) is not None), None)
    figures += [b for b in (cgroup, physical_memory_bytes()) if b is not None]
    return min(figures) if figures else None


def memory_model(memory_bytes: int, device: str = "cuda") -> tuple[int, int]:
    """(most views, most decoded pixels) for a worker with `memory_bytes` computing on `device` ("cuda" or
    "cpu"): half of what the base leaves goes to the views' term and half to the pixels' term, so a capture
    at both limits still fits."""
    kind = "cpu" if device == "cpu" else "cuda"
    spare = max(memory_bytes - BASE_BYTES[kind], 0) // 2
    per_pixel = BYTES_PER_PIXEL[kind]
    return max(1, spare // BYTES_PER_VIEW), max(1, spare // per_pixel)
