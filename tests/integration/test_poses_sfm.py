"""Photos without poses or masks: a turntable of spot (JPEGs over a static textured backdrop, with a clean
plate, no transforms file) is masked by the backdrop provider, posed by pycolmap, and reconstructed
near the posed, masked capture of the same views, both scored against the same held-out renders: the
posed capture sits in the photo folder as its `reference/` (engine.reference), so the photos run's mesh
is judged after the similarity SfM cannot know, not against its own JPEG views. The same photos with
their recovered poses perturbed (1.5 degrees, 1.5 % of the camera distance) fall outside the bound: the
comparison can fail. Issue 13's 1.5 dB is a strict xfail until it holds (GAP_BOUND_DB says why).

Spot's own texture (flat cartoon patches) gives SIFT about 100 features per 256^2 view, and pycolmap
registers 2 of 28 such photos (docs/benchmarks.md); the render prints coloured blotches over it, as most
real objects have. One render (24 + 2 views, 320^2), one structure from motion, two short draft engine
runs, and one more with the perturbed poses; nothing is timed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from recon_worker.capture import REFERENCE_FOLDER, load_capture
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
    # The posed renders are the photos' reference views, as a benchmark or a calibrated rig would give them.
    shutil.copytree(shoot["posed"], shoot["photos"] / REFERENCE_FOLDER)
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


def perturb_poses(root: Path, degrees: float, shift: float, seed: int = 0) -> None:
    """Turn every camera of the capture at `root` by `degrees` about a random axis and move it by `shift`
    of its distance from the origin in a random direction (transforms files rewritten in place)."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    for name in ("transforms_train.json", "transforms_test.json"):
        doc = json.loads((root / name).read_text())
        for frame in doc["frames"]:
            c2w = np.asarray(frame["transform_matrix"])
            axis = rng.normal(size=3)
            turn = Rotation.from_rotvec(np.radians(degrees) * axis / np.linalg.norm(axis)).as_matrix()
            direction = rng.normal(size=3)
            c2w[:3, :3] = turn @ c2w[:3, :3]
            c2w[:3, 3] += shift * np.linalg.norm(c2w[:3, 3]) * direction / np.linalg.norm(direction)
            frame["transform_matrix"] = c2w.tolist()
        (root / name).write_text(json.dumps(doc))


# The gap this test holds the photos to, on the same held-out renders. Issue 13 asks for 1.5 dB; measured
# on this 2-core machine (2026-12-02, deterministic SfM): posed, masked 28.06 dB; photos 24.88 dB (3.2 dB
# gap), with their poses perturbed 16.00 dB. test_the_photos_meet_the_issues_bound below is expected to
# fail until the gap closes. Where it goes, measured with the true poses in place of SfM's: the backdrop
# masks cost 1.5 dB (26.52 dB with them; JPEG colours alone 0.1 dB), SfM's cameras the other 1.6 (its
# focal length comes out about 2 % long). Before the backdrop provider's threshold went from 20 to 15
# (masks.BackdropMasks.threshold) the masks missed object pixels at the edges, the hull grew two false
# tunnels and its decimation fell back to a coarse re-mesh: 23.34 dB with the true poses, outside this bound.
GAP_BOUND_DB = 4.5
ISSUE_GAP_DB = 1.5


@pytest.fixture(scope="module")
def runs(turntable: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, QualityMetrics]:
    """The posed capture, the photos (with the posed capture as their reference/), and the photos with
    their recovered poses 1.5 degrees and 1.5 % of the camera distance off (about 5x SfM's error here)."""
    out = tmp_path_factory.mktemp("runs")
    perturbed_dir = out / "perturbed-capture"
    shutil.copytree(turntable["photos"], perturbed_dir)
    perturb_poses(perturbed_dir, degrees=1.5, shift=0.015)
    return {
        "posed": run_engine(turntable["posed"], out / "posed"),
        "photos": run_engine(turntable["photos"], out / "photos"),
        "perturbed": run_engine(perturbed_dir, out / "perturbed"),
    }


def test_posed_photos_reconstruct_near_the_posed_masked_capture(runs: dict[str, QualityMetrics]) -> None:
    posed, photos, perturbed = runs["posed"], runs["photos"], runs["perturbed"]
    assert posed.psnr is not None and photos.psnr is not None and photos.reference is not None
    reference = photos.reference
    assert reference.psnr is not None and reference.view_split == "test"
    assert [v.image for v in reference.views] == [v.image for v in posed.views]  # the same yardstick
    assert reference.matched_frames == 26
    print(
        f"held-out PSNR: posed, masked {posed.psnr:.2f} dB (IoU {posed.mask_iou:.4f}); photos (SfM, backdrop "
        f"masks) {reference.psnr:.2f} dB (IoU {reference.mask_iou:.4f}) against the same views after the "
        f"similarity (scale {reference.scale:.4f}, {reference.rotation_error_deg:.2f} degrees), "
        f"{photos.psnr:.2f} dB against its own JPEG views"
    )
    assert reference.psnr >= posed.psnr - GAP_BOUND_DB
    # The comparison can fail: wrong poses fall well outside it (measured 15.72-16.13 dB).
    assert perturbed.reference is not None and perturbed.reference.psnr is not None
    print(f"perturbed poses: {perturbed.reference.psnr:.2f} dB against the same views")
    assert perturbed.reference.psnr < posed.psnr - GAP_BOUND_DB


@pytest.mark.xfail(strict=True, reason="issue 13's 1.5 dB is not met yet (3.2 dB measured; see GAP_BOUND_DB)")
def test_the_photos_meet_the_issues_bound(runs: dict[str, QualityMetrics]) -> None:
    photos, posed = runs["photos"].reference, runs["posed"]
    assert photos is not None and photos.psnr is not None and posed.psnr is not None
    assert photos.psnr >= posed.psnr - ISSUE_GAP_DB
