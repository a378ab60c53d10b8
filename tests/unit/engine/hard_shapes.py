"""Small hard objects built from trimesh primitives, rendered with the synth renderer.

- a cup: a solid of revolution with a deep cavity that no silhouette sees (its rim is convex);
- a torus: one through-hole (genus 1).
Both carry a smooth random colour texture (UVs from a linear map of the position, so no seams),
because photo-consistency needs colour variation to tell a false surface from a real one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import trimesh
from scipy import ndimage

from recon_worker.capture import Intrinsics
from recon_worker.engine.synth import (
    CAMERA_ANGLE_X,
    CAMERA_DISTANCE,
    OBJECT_SIZE,
    Material,
    SceneMesh,
    SynthOptions,
    fibonacci_sphere,
    look_at,
    render_views,
)


def genus(mesh: trimesh.Trimesh) -> int:
    """Handles of a closed connected surface, from its Euler characteristic (a torus: 1)."""
    return (2 - int(mesh.euler_number)) // 2


def cup_mesh(sections: int = 48) -> trimesh.Trimesh:
    """A closed cup, y up: outer radius 1, height 1.4, wall 0.12, cavity 1.15 deep."""
    # (radius, height) profile from the outer base round to the inner bottom, revolved about y.
    outer, inner, height, bottom = 1.0, 0.88, 1.4, 0.25
    profile = np.array([[0.0, 0.0], [outer, 0.0], [outer, height], [inner, height], [inner, bottom], [0.0, bottom]])
    # trimesh revolves (x, y) about z: build it z-up, then turn z to y.
    mesh = trimesh.creation.revolve(profile, sections=sections)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(-math.pi / 2, [1, 0, 0]))
    mesh.merge_vertices()
    return mesh


def torus_mesh() -> trimesh.Trimesh:
    """A torus with its hole along y (seen through from above and below)."""
    mesh = trimesh.creation.torus(major_radius=1.0, minor_radius=0.35, major_sections=48, minor_sections=24)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [1, 0, 0]))
    return mesh


def textured_scene(
    mesh: trimesh.Trimesh, seed: int = 0, texture_size: int = 64, plain: float | None = None
) -> SceneMesh:
    """`mesh` normalised like synth does (longest side OBJECT_SIZE, centred), with a random colour texture,
    or with `plain`, one grey level everywhere (a white glaze: only the lighting's shading varies)."""
    lo, hi = mesh.bounds
    verts = (np.asarray(mesh.vertices) - (lo + hi) / 2) * (OBJECT_SIZE / float((hi - lo).max()))
    # A linear map of the position: no seams, and inside and outside of a wall get different colours.
    uv = np.stack([0.4 * verts[:, 0] + 0.1 * verts[:, 2] + 0.5, 0.4 * verts[:, 1] + 0.07 * verts[:, 2] + 0.5], 1)
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(texture_size, texture_size, 3)), (1.5, 1.5, 0))
    texture = np.clip(0.5 + noise / (3 * noise.std()) * 0.5, 0.05, 0.95).astype(np.float32)
    if plain is not None:
        texture = np.full_like(texture, plain)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    normalised = trimesh.Trimesh(verts, faces, process=False)
    return SceneMesh(
        verts=verts,
        faces=faces,
        uv=uv,
        uv_faces=faces,
        normals=np.asarray(normalised.vertex_normals),
        normal_faces=faces,
        face_material=np.zeros(len(faces), dtype=np.int64),
        materials=[Material(texture)],
    )


def write_capture(root: Path, scene: SceneMesh, *, views: int = 32, size: int = 96, specular: float = 0.0) -> Path:
    """A NeRF-synthetic capture of `scene` (train split only) plus its ground truth; returns `root`."""
    import json

    from PIL import Image

    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    intrinsics = Intrinsics(focal, focal, size / 2, size / 2, size, size)
    poses = np.stack([look_at(p * CAMERA_DISTANCE) for p in fibonacci_sphere(views)])
    images = render_views(scene, poses, intrinsics, SynthOptions(specular=specular, device="cpu", renderer="pytorch3d"))
    (root / "train").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (pose, rgba) in enumerate(zip(poses, images, strict=True)):
        Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA").save(root / "train" / f"r_{i}.png")
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": pose.tolist()})
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}))
    trimesh.Trimesh(scene.verts, scene.faces, process=False).export(root / "ground_truth.obj")
    return root
