"""The stages' OBJ files: what `engine.objfile` writes reads back as it was, in trimesh's reader too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from recon_worker.engine.export import smooth_normals, texture_image
from recon_worker.engine.objfile import read_textured_obj, textured, write_textured_obj
from recon_worker.engine.texture import face_atlas


def test_what_is_written_reads_back_as_it_was(textured_sphere: trimesh.Trimesh, tmp_path: Path) -> None:
    # Split along seams as a textured mesh is (here: every face its own chart, three vertices a face).
    split = face_atlas(textured_sphere, 64)
    atlas = textured(split.verts, split.faces, split.uv, textured_sphere.visual.material.image)
    path = write_textured_obj(tmp_path / "mesh.obj", atlas, textured_sphere.visual.material.image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.mtl", "mesh.obj", "texture.png"]
    lines = path.read_text().splitlines()
    # Each position once, with its smooth normal; each UV once.
    assert sum(line.startswith("v ") for line in lines) == len(textured_sphere.vertices)
    assert sum(line.startswith("vn ") for line in lines) == len(textured_sphere.vertices)
    assert sum(line.startswith("vt ") for line in lines) == 3 * len(textured_sphere.faces)
    back = read_textured_obj(path)
    assert len(back.faces) == len(atlas.faces)
    np.testing.assert_allclose(back.vertices[back.faces], atlas.vertices[atlas.faces], atol=1e-7)  # %.8g
    np.testing.assert_allclose(back.visual.uv[back.faces], atlas.visual.uv[atlas.faces], atol=1e-7)
    np.testing.assert_allclose(back.vertex_normals[back.faces], smooth_normals(atlas)[atlas.faces], atol=1e-5)
    assert np.array_equal(np.asarray(texture_image(back)), np.asarray(textured_sphere.visual.material.image))


def test_a_missing_texture_leaves_the_mesh_without_one(textured_sphere: trimesh.Trimesh, tmp_path: Path) -> None:
    path = write_textured_obj(tmp_path / "mesh.obj", textured_sphere, textured_sphere.visual.material.image)
    (tmp_path / "texture.png").unlink()
    mesh = read_textured_obj(path)  # the general reader's answer: geometry, no image
    assert len(mesh.faces) == len(textured_sphere.faces)
    assert getattr(getattr(mesh.visual, "material", None), "image", None) is None


def test_a_mesh_without_per_vertex_uvs_is_refused(tmp_path: Path) -> None:
    box = trimesh.creation.box()
    with pytest.raises(ValueError, match="no per-vertex UV"):
        write_textured_obj(tmp_path / "mesh.obj", box, Image.new("RGB", (4, 4)))
