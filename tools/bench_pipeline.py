"""What the pipeline benchmarks share (bench_recon, bench_geometry, bench_refine): the meshes, a capture
synthesized once per case outside the timed region, and the whole pipeline timed as `recon-worker local`
runs it (runner.execute in-process, file:// input and output, no checkpoints).

The worker's modules are imported inside the functions, after a caller may have put another checkout's
worker/ first on sys.path (bench_recon --worker).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recon_worker.engine.synth import SynthOptions
    from recon_worker.runner import Outcome

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "worker"))
# The public-domain meshes (as in tests/conftest.py): beside the checkout, or where RECON_MESHES points.
MESHES = Path(os.environ.get("RECON_MESHES", REPO.parent / "shared" / "data" / "meshes"))
SMOOTH_FILES = {"spot": "spot/spot.obj", "bob": "bob/bob_tri.obj", "blub": "blub/blub_triangulated.obj"}
# CC0 binary glTF scenes with PBR materials: concavities, through-holes, thin parts, gloss (issue 10).
HARD_FILES = {
    "tea_set_01": "tea_set_01/tea_set_01.glb",
    "painted_wooden_stool": "painted_wooden_stool/painted_wooden_stool.glb",
    "wooden_bookshelf_worn": "wooden_bookshelf_worn/wooden_bookshelf_worn.glb",
    "toycar": "toycar/toycar.glb",
}
MESH_FILES = {**SMOOTH_FILES, **HARD_FILES}


def synthesized_capture(obj: str, folder: Path, options: SynthOptions) -> Path:
    """`folder`, holding a capture of the mesh `obj` rendered with `options`: rendered now unless a
    capture is there already (cases that differ only in their settings share one; the caller names the
    folder after what the render depends on)."""
    from recon_worker.engine.synth import synthesize

    if obj not in MESH_FILES:
        raise ValueError(f"unknown object {obj!r}: one of {', '.join(MESH_FILES)}")
    if not folder.exists():
        synthesize(MESHES / MESH_FILES[obj], folder, options)
    return folder


@dataclass
class TimedRun:
    outcome: Outcome
    seconds: float  # fetch -> publish, wall clock (between CUDA syncs on the GPU)


def time_pipeline(capture: Path, output: Path, quality: Any, device: str) -> TimedRun:
    """The whole pipeline on `capture` (its transforms_train.json) into `output` (emptied first), at
    `quality` (resolved QualitySettings). On CUDA the synthesis step's cached blocks are returned first
    and the peak counters reset, so torch.cuda.max_memory_reserved() afterwards is this run's peak."""
    import torch

    from recon_worker.runner import execute
    from recon_worker.task import TaskDocument

    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    task = TaskDocument.model_validate(
        {
            "input": {"uri": capture.as_uri() + "/", "transformsFile": "transforms_train.json"},
            "output": {"uri": output.as_uri() + "/"},
            "quality": quality.model_dump(mode="json", by_alias=True),
            "compute": {"gpus": 1 if device == "cuda" else 0, "minGpuMemoryGiB": 0},
        }
    )
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    outcome = execute(task, use_checkpoints=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return TimedRun(outcome, time.perf_counter() - started)
