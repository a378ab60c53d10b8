"""Textured OBJ files: OBJ + MTL + texture.png in a folder (export's published `mesh.obj`).

A file this package writes holds each position once, with its smooth normal (`v`, `vn`), each UV once
(`vt`), and one material whose `map_Kd` is the texture; a corner is `p/t/p`. The text is formatted by
one %-operation per block (C speed), not by trimesh's exporter (`make bench-mesh-io`, 2 cores: at
327,680 faces of the per-face atlas 4.9 s by trimesh, 2.1 s by blocks of one position per textured
vertex, 1.2 s with each position once). Reading is trimesh's general reader. Between stages the mesh
travels as arrays instead (`engine.stagemesh`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from recon_worker.engine.meshcheck import welded

TEXTURE_NAME = "texture.png"
MATERIAL = "material"


def textured(
    vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, image: Image.Image, normals: np.ndarray | None = None
) -> trimesh.Trimesh:
    """A trimesh with one UV (and normal, when given) per vertex and a plain white material carrying `image`."""
    material = trimesh.visual.material.SimpleMaterial(
        name=MATERIAL, image=image, diffuse=[255, 255, 255, 255], ambient=[255, 255, 255, 255]
    )
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(vertices, faces, vertex_normals=normals, visual=visual, process=False, validate=False)


def obj_text(
    positions: np.ndarray,
    position_faces: np.ndarray,
    uv: np.ndarray,
    uv_faces: np.ndarray,
    material_file: str,
    normals: np.ndarray | None = None,
) -> str:
    """OBJ text: `v` (and `vn`, one per position) indexed by `position_faces`, `vt` by `uv_faces`.

    Formatted by one %-operation per block (C speed).
    """
    positions = np.asarray(positions, np.float64)
    uv = np.asarray(uv, np.float64)
    p, t = np.asarray(position_faces, np.int64) + 1, np.asarray(uv_faces, np.int64) + 1
    per_corner = 2 if normals is None else 3
    corners = np.empty((len(p), 3 * per_corner), np.int64)  # a/ta[/a] b/tb[/b] c/tc[/c]
    for k in range(3):
        corners[:, k * per_corner] = p[:, k]
        corners[:, k * per_corner + 1] = t[:, k]
        if normals is not None:
            corners[:, k * per_corner + 2] = p[:, k]
    corner = "/".join(["%d"] * per_corner)
    blocks = [
        f"mtllib {material_file}\nusemtl {MATERIAL}\n",
        ("v %.8g %.8g %.8g\n" * len(positions)) % tuple(positions.ravel()),
        ("vt %.8g %.8g\n" * len(uv)) % tuple(uv.ravel()),
    ]
    if normals is not None:
        blocks.append(("vn %.6g %.6g %.6g\n" * len(normals)) % tuple(np.asarray(normals, np.float64).ravel()))
    blocks.append((f"f {corner} {corner} {corner}\n" * len(corners)) % tuple(corners.ravel()))
    return "".join(blocks)


def write_textured_obj(path: Path, mesh: trimesh.Trimesh, image: Image.Image, *, png_compression: int = 6) -> Path:
    """`path` (an .obj), its .mtl beside it and texture.png in the same folder; returns `path`.

    `mesh` has one UV per vertex (`mesh.visual.uv`, vertices split along UV seams). The file holds each
    position once, with its smooth normal (the welded surface's: seams shade smooth, and tools that
    check the file see a closed surface), and each UV once: `f p/t/p`.
    """
    uv = getattr(mesh.visual, "uv", None)
    if uv is None or len(uv) != len(mesh.vertices):
        raise ValueError("the mesh has no per-vertex UV coordinates to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    material_file = path.with_suffix(".mtl")
    image.save(path.parent / TEXTURE_NAME, optimize=False, compress_level=png_compression)
    material_file.write_text(f"newmtl {MATERIAL}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nNs 1\nillum 1\nmap_Kd {TEXTURE_NAME}\n")
    path.write_text(welded_obj_text(mesh, material_file.name))
    return path


def welded_obj_text(mesh: trimesh.Trimesh, material_file: str) -> str:
    """The OBJ text `write_textured_obj` writes: welded positions with smooth normals, the mesh's UVs."""
    geometry, _ = welded(mesh)
    uv = np.asarray(getattr(mesh.visual, "uv", None))
    return obj_text(geometry.vertices, geometry.faces, uv, mesh.faces, material_file, geometry.vertex_normals)


def read_textured_obj(path: Path) -> trimesh.Trimesh:
    """The textured mesh in `path` (with its MTL and texture), faces in file order.

    Vertices are split where a position has several UVs or normals (trimesh's `maintain_order` would
    keep the file's positions and give their corners wrong UVs).
    """
    loaded = trimesh.load(path, process=False)
    if not isinstance(loaded, trimesh.Trimesh):
        raise ValueError(f"{path}: expected one textured mesh, got {type(loaded).__name__}")
    return loaded
