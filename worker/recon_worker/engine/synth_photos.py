"""Photos as people take them, made from a synthetic capture: for tests and benchmarks of real forms.

`photo_capture(synth_dir, out)` turns a capture written by `engine.synth` (RGBA renders, poses) into a
turntable shoot: every render composited over the same textured backdrop (the backdrop is fixed to the
camera, as on a turntable), saved as JPEG without alpha, with no transforms file. Test views go under
`test/`, training views under `train/`; the true masks are returned for scoring mask providers.
Optional lens distortion is applied to the photos (`lens`), as a real lens would; `clean_plate` also
writes `backdrop.jpg`, a photo of the empty backdrop.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recon_worker.capture import Intrinsics, intrinsics_from_meta
from recon_worker.distortion import Lens, distort_image
from recon_worker.engine.synth import (
    CAMERA_ANGLE_X,
    CAMERA_DISTANCE,
    SynthOptions,
    load_scene_mesh,
    look_at,
    render_views,
)


def textured_backdrop(width: int, height: int, seed: int = 7) -> np.ndarray:
    """[H, W, 3] uint8: smooth coloured noise over a soft gradient, like a printed studio backdrop."""
    from scipy.ndimage import gaussian_filter, zoom

    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, height // 16), max(2, width // 16), 3))
    noise = zoom(coarse, (height / coarse.shape[0], width / coarse.shape[1], 1), order=1)[:height, :width]
    noise = gaussian_filter(noise, (2, 2, 0))
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    rgb = 60 + 120 * noise * np.array([0.8, 0.9, 1.0]) + 40 * ramp
    return np.clip(rgb, 0, 255).astype(np.uint8)


def photo_capture(
    synth_dir: Path,
    out: Path,
    *,
    quality: int = 95,
    lens: Lens | None = None,
    seed: int = 7,
    clean_plate: bool = False,
) -> dict[str, np.ndarray]:
    """Write the photos; return {relative photo path: true mask [H, W] bool} (after the lens, if any)."""
    from PIL import Image

    truth: dict[str, np.ndarray] = {}
    backdrop: np.ndarray | None = None
    for split in ("train", "test"):
        source = synth_dir / f"transforms_{split}.json"
        if not source.is_file():
            continue
        doc = json.loads(source.read_text())
        for frame in doc["frames"]:
            name = frame["file_path"].removeprefix("./")
            with Image.open(synth_dir / f"{name}.png") as im:
                rgba = np.asarray(im.convert("RGBA"))
            height, width = rgba.shape[:2]
            if lens is not None and lens.distorted:
                k = intrinsics_from_meta(doc, width, height)
                rgba = distort_image(rgba, k, lens, k)
            if backdrop is None:
                backdrop = textured_backdrop(width, height, seed)
            alpha = rgba[..., 3:4].astype(np.float32) / 255.0
            rgb = alpha * rgba[..., :3].astype(np.float32) + (1 - alpha) * backdrop.astype(np.float32)
            rel = f"{split}/{Path(name).name}.jpg"
            (out / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8)).save(out / rel, quality=quality)
            truth[rel] = rgba[..., 3] > 127
    if clean_plate and backdrop is not None:
        Image.fromarray(backdrop).save(out / "backdrop.jpg", quality=quality)
    return truth


def patterned_texture(texture: np.ndarray, seed: int = 11, strength: float = 1.0) -> np.ndarray:
    """[Ht, Wt, 3] the texture with coloured blotches printed over it, as on most real objects: the flat
    cartoon textures of the test meshes give SIFT too little to match at small image sizes. Blotches are
    about 1/100 of the texture wide, so they survive the texture's minification in a 256-512 px view."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    sigma = max(1.0, texture.shape[0] / 200)
    speckle = gaussian_filter(rng.random(texture.shape), (sigma, sigma, 0))
    speckle = (speckle - speckle.mean()) / max(1e-6, float(speckle.std()))
    return np.clip(texture + strength * 0.25 * speckle, 0.0, 1.0).astype(np.float32)


def turntable_poses(views: int, elevations: Sequence[float] = (15.0, 40.0), offset: float = 0.0) -> np.ndarray:
    """[views, 4, 4] camera-to-world on rings around the object (degrees of elevation, alternating), as
    a camera on a stand sees an object turning on a turntable, in small steps."""
    poses = []
    for i in range(views):
        azimuth = math.radians(360.0 * (i + offset) / views)
        elevation = math.radians(elevations[i % len(elevations)])
        eye = CAMERA_DISTANCE * np.array(
            [math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth)]
        )
        poses.append(look_at(eye))
    return np.stack(poses) if poses else np.zeros((0, 4, 4))


def render_turntable(
    mesh: Path,
    out: Path,
    *,
    views: int = 24,
    test_views: int = 4,
    resolution: int = 256,
    lens: Lens | None = None,
    options: SynthOptions | None = None,
    patterned: bool = False,
) -> dict[str, Any]:
    """Render a turntable shoot of `mesh` twice into `out`: `posed/` (RGBA renders with their true poses:
    the posed, masked reference capture) and `photos/` (the same views as JPEG photos over a static
    backdrop, with a clean plate, no poses; `photo_capture`). `patterned` prints fine speckle over the
    mesh's texture (`patterned_texture`). Returns {"truth": masks, "posed": dir,
    "photos": dir}."""
    from PIL import Image

    options = options or SynthOptions(resolution=resolution)
    scene = load_scene_mesh(mesh)
    if patterned:
        materials = [dataclasses.replace(m, base_color=patterned_texture(m.base_color)) for m in scene.materials]
        scene = dataclasses.replace(scene, materials=materials)
    focal = 0.5 * resolution / math.tan(0.5 * CAMERA_ANGLE_X)
    intrinsics = Intrinsics(focal, focal, resolution / 2, resolution / 2, resolution, resolution)
    posed = out / "posed"
    splits = {"train": turntable_poses(views), "test": turntable_poses(test_views, (28.0,), 0.5)}
    for split, poses in splits.items():
        if not len(poses):
            continue
        (posed / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i, (pose, rgba) in enumerate(zip(poses, render_views(scene, poses, intrinsics, options), strict=True)):
            Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA").save(posed / split / f"r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        doc = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        (posed / f"transforms_{split}.json").write_text(json.dumps(doc, indent=1))
    truth = photo_capture(posed, out / "photos", lens=lens, clean_plate=True)
    return {"truth": truth, "posed": posed, "photos": out / "photos"}
