"""Tiny synthetic captures for the worker's tests: a sphere seen from a ring of cameras, drawn with PIL.

A sphere's silhouette under a pinhole camera aimed at its centre is a disc, so these captures are
geometrically consistent (a visual hull of them is a sphere) while costing milliseconds to make.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

CAMERA_ANGLE_X = 0.8  # radians
CAMERA_DISTANCE = 3.0
SPHERE_RADIUS = 1.0


def look_at_c2w(position: np.ndarray) -> np.ndarray:
    """[4, 4] camera-to-world of a camera at `position` looking at the origin (OpenGL: looks down -Z, +Y up)."""
    z = position / np.linalg.norm(position)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, position
    return c2w


def sphere_image(size: int, color: tuple[int, int, int], mode: str = "RGBA") -> Image.Image:
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    radius_px = focal * SPHERE_RADIUS / math.sqrt(CAMERA_DISTANCE**2 - SPHERE_RADIUS**2)
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    centre = size / 2
    ImageDraw.Draw(image).ellipse(
        [centre - radius_px, centre - radius_px, centre + radius_px, centre + radius_px], fill=(*color, 255)
    )
    return image if mode == "RGBA" else image.convert(mode)


def write_capture(root: Path, views: int = 10, size: int = 32, **meta: Any) -> Path:
    """A capture folder with `views` RGBA PNGs under images/ and a transforms.json; returns `root`."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(views):
        azimuth = 2 * math.pi * i / views
        elevation = 0.35 if i % 2 else -0.2
        position = CAMERA_DISTANCE * np.array(
            [math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth)]
        )
        sphere_image(size, (200, (90 + 10 * i) % 256, 40)).save(root / "images" / f"r_{i}.png")
        frames.append({"file_path": f"images/r_{i}.png", "transform_matrix": look_at_c2w(position).tolist()})
    document = {"camera_angle_x": CAMERA_ANGLE_X, **meta, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(document, indent=1))
    return root


def edit_transforms(root: Path, edit: Any, name: str = "transforms.json") -> None:
    """Apply `edit(document)` (in place) to a capture's transforms file."""
    document = json.loads((root / name).read_text())
    edit(document)
    (root / name).write_text(json.dumps(document))


def upload_folder(client: Any, folder: Path, bucket: str, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, prefix + path.relative_to(folder).as_posix())
