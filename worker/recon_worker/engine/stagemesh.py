"""The textured mesh as the stages hand it on (texture -> validate -> export): mesh.npz + texture.png.

`mesh.npz` holds three arrays, uncompressed: `vertices` [V, 3] float64, `faces` [F, 3] int64 and
`uv` [V, 2] float64 (one UV per vertex, v up; vertices are split along UV seams). It is an
intermediate file, never published: export writes the GLB, OBJ and PLY users get. Binary arrays
instead of OBJ text, measured on a 327,680-face mesh of the per-face atlas (983k vertices, 2 busy
cores): the OBJ took 3.4 s to write and 3.3 s to read back (trimesh), once in validate and again in
export. Checkpoints are keyed by the worker version, so a resumed run never meets another layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from recon_worker.engine.objfile import TEXTURE_NAME, textured

ARRAYS_NAME = "mesh.npz"  # beside objfile.TEXTURE_NAME, the texture every textured folder holds
FILES = (ARRAYS_NAME, TEXTURE_NAME)


def write_stage_mesh(folder: Path, mesh: trimesh.Trimesh, image: Image.Image, *, png_compression: int = 1) -> None:
    """mesh.npz + texture.png in `folder`; PNG level 1 by default (fast over small: nobody downloads it)."""
    uv = getattr(mesh.visual, "uv", None)
    if uv is None or len(uv) != len(mesh.vertices):
        raise ValueError("the mesh has no per-vertex UV coordinates to write")
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / ARRAYS_NAME,
        vertices=np.asarray(mesh.vertices, np.float64),
        faces=np.asarray(mesh.faces, np.int64),
        uv=np.asarray(uv, np.float64),
    )
    image.save(folder / TEXTURE_NAME, optimize=False, compress_level=png_compression)


def read_stage_mesh(folder: Path) -> trimesh.Trimesh:
    """The textured mesh `write_stage_mesh` wrote into `folder`; a clear error naming what is wrong."""
    arrays_path, texture_path = folder / ARRAYS_NAME, folder / TEXTURE_NAME
    for path in (arrays_path, texture_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: did the stage that writes {folder.name}/ finish?")
    try:
        with np.load(arrays_path, allow_pickle=False) as arrays:
            vertices, faces, uv = (np.asarray(arrays[name]) for name in ("vertices", "faces", "uv"))
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"{arrays_path}: not a stage mesh ({exc})") from None
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        shapes = f"{vertices.shape} and {faces.shape}"
        raise ValueError(f"{arrays_path}: expected vertices [V, 3] and faces [F, 3], got {shapes}")
    if uv.shape != (len(vertices), 2):
        raise ValueError(f"{arrays_path}: expected one UV per vertex, [{len(vertices)}, 2], got {uv.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"{arrays_path}: face indices outside the {len(vertices)} vertices")
    with Image.open(texture_path) as opened:
        image = opened.copy()
    return textured(vertices, faces.astype(np.int64), uv, image)
