"""A sphere capture rendered analytically (ray-sphere intersection): ground truth without any rasterizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from recon_worker.engine.synth import fibonacci_sphere, look_at

FOCAL_FRACTION = 1.2  # focal length in units of the image side


def sphere_rgba(c2w: np.ndarray, size: int, radius: float, color: tuple[float, float, float]) -> np.ndarray:
    """[size, size, 4] uint8 RGBA of a sphere at the origin, 4x4 supersampled coverage."""
    focal = FOCAL_FRACTION * size
    sub = (np.arange(size * 4) + 0.5) / 4  # sub-pixel centres, pixels
    xs, ys = np.meshgrid(sub, sub)
    dirs = np.stack([(xs - size / 2) / focal, -(ys - size / 2) / focal, -np.ones_like(xs)], axis=-1)
    dirs = dirs @ c2w[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origin = c2w[:3, 3]
    b = dirs @ origin
    hit = (b * b - (origin @ origin - radius * radius)) >= 0
    alpha = hit.reshape(size, 4, size, 4).mean(axis=(1, 3))
    rgba = np.zeros((size, size, 4))
    rgba[..., :3] = color
    rgba[..., 3] = alpha
    return np.round(rgba * 255).astype(np.uint8)


def write_sphere_capture(
    root: Path,
    *,
    views: int = 12,
    size: int = 48,
    radius: float = 0.5,
    distance: float = 3.0,
    color: tuple[float, float, float] = (0.2, 0.6, 0.3),
) -> Path:
    """A NeRF-synthetic capture of a uniformly coloured sphere; returns `root`."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, direction in enumerate(fibonacci_sphere(views)):
        c2w = look_at(direction * distance)
        Image.fromarray(sphere_rgba(c2w, size, radius, color), "RGBA").save(root / "train" / f"r_{i}.png")
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": c2w.tolist()})
    angle_x = 2 * math.atan(0.5 / FOCAL_FRACTION)
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": frames}))
    return root
