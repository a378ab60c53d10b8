"""Textured OBJ files: OBJ + MTL + texture.png in a folder (export's published `mesh.obj`).

Every file this package writes has one UV (and, when written, one normal) per vertex, so a corner
is `a/a` or `a/a/a`, and one material whose `map_Kd` is the texture. The text is formatted by one
%-operation per block (C speed): trimesh's exporter took 1.40 s for a 58,572-face mesh of the
per-face atlas (176k vertices) where `obj_text` takes 0.41 s, smooth normals included (2 busy cores),
and 5-6 s for 300k faces on the H200's host. Reading is trimesh's (0.36 s for the same file; a
numpy reader of this form measured 0.30-0.55 s, not worth a second parser). Between stages the
mesh travels as arrays instead (`engine.stagemesh`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

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
    vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, material_file: str, normals: np.ndarray | None = None
) -> str:
    """OBJ text with one UV (and normal) per vertex, formatted by one %-operation per block (C speed)."""
    verts = np.asarray(vertices, np.float64)
    uv = np.asarray(uv, np.float64)
    per_corner = 2 if normals is None else 3
    corners = np.repeat(np.asarray(faces, np.int64) + 1, per_corner, axis=1)  # [F, 6 or 9]: a a b b c c
    corner = "/".join(["%d"] * per_corner)
    blocks = [
        f"mtllib {material_file}\nusemtl {MATERIAL}\n",
        ("v %.8g %.8g %.8g\n" * len(verts)) % tuple(verts.ravel()),
        ("vt %.8g %.8g\n" * len(uv)) % tuple(uv.ravel()),
    ]
    if normals is not None:
        blocks.append(("vn %.6g %.6g %.6g\n" * len(normals)) % tuple(np.asarray(normals, np.float64).ravel()))
    blocks.append((f"f {corner} {corner} {corner}\n" * len(corners)) % tuple(corners.ravel()))
    return "".join(blocks)


def write_textured_obj(
    path: Path,
    mesh: trimesh.Trimesh,
    image: Image.Image,
    *,
    normals: np.ndarray | None = None,
    png_compression: int = 6,
) -> Path:
    """`path` (an .obj), its .mtl beside it and texture.png in the same folder; returns `path`.

    `mesh` has one UV per vertex (`mesh.visual.uv`); `png_compression` (zlib level 0-9): intermediate
    files between stages use 1 (a 2048² texture saves several times faster, for a larger file).
    """
    uv = getattr(mesh.visual, "uv", None)
    if uv is None or len(uv) != len(mesh.vertices):
        raise ValueError("the mesh has no per-vertex UV coordinates to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    material_file = path.with_suffix(".mtl")
    image.save(path.parent / TEXTURE_NAME, optimize=False, compress_level=png_compression)
    material_file.write_text(f"newmtl {MATERIAL}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nNs 1\nillum 1\nmap_Kd {TEXTURE_NAME}\n")
    path.write_text(obj_text(mesh.vertices, mesh.faces, uv, material_file.name, normals))
    return path


def read_textured_obj(path: Path) -> trimesh.Trimesh:
    """The textured mesh in `path` (with its MTL and texture), vertices and faces in file order."""
    loaded = trimesh.load(path, process=False, maintain_order=True)
    if not isinstance(loaded, trimesh.Trimesh):
        raise ValueError(f"{path}: expected one textured mesh, got {type(loaded).__name__}")
    return loaded
