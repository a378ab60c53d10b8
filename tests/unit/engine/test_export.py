"""Export writers of `engine.export`, on the public-domain spot mesh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from recon_worker.engine.export import export_mesh, load_mesh, load_result_mesh, texture_image, uv_of
from recon_worker.engine.meshcheck import check_mesh
from tests.conftest import MESHES


@pytest.fixture(scope="module")
def spot() -> trimesh.Trimesh:
    return load_result_mesh(MESHES / "spot")


def mean_texture_color(mesh: trimesh.Trimesh, samples: int = 20_000) -> np.ndarray:
    """Area-weighted mean surface colour [3] in [0, 255], looked up in the texture at sampled points."""
    _, face, bary = trimesh.sample.sample_surface(mesh, samples, seed=3, return_barycentric=True)
    uv = np.einsum("nk,nkd->nd", bary, uv_of(mesh)[mesh.faces[face]])
    image = np.asarray(texture_image(mesh), dtype=np.float64)
    h, w = image.shape[:2]
    px = np.clip((uv[:, 0] % 1.0) * w, 0, w - 1).astype(int)
    py = np.clip((1.0 - uv[:, 1] % 1.0) * h, 0, h - 1).astype(int)
    return image[py, px].mean(axis=0)


def test_all_formats_round_trip(spot: trimesh.Trimesh, tmp_path: Path) -> None:
    written = export_mesh(spot, tmp_path, ["glb", "obj", "ply"])
    names = sorted(p.name for p in written)
    assert names == ["mesh.glb", "mesh.mtl", "mesh.obj", "mesh.ply", "texture.png"]

    glb = trimesh.load(tmp_path / "mesh.glb", force="mesh", process=False)
    assert len(glb.faces) == len(spot.faces)
    assert glb.visual.uv.shape == (len(glb.vertices), 2)
    assert glb.visual.material.baseColorTexture.size == texture_image(spot).size

    assert "map_Kd texture.png" in (tmp_path / "mesh.mtl").read_text()
    obj = load_result_mesh(tmp_path)  # reads mesh.obj + mesh.mtl + texture.png back
    assert len(obj.faces) == len(spot.faces)
    np.testing.assert_allclose(mean_texture_color(obj), mean_texture_color(spot), atol=1.0)

    ply = load_mesh(tmp_path / "mesh.ply")
    assert check_mesh(ply).valid  # welded: the seams of the texture atlas are not holes
    assert ply.visual.vertex_colors.shape == (len(ply.vertices), 4)


def test_only_requested_formats_are_written(spot: trimesh.Trimesh, tmp_path: Path) -> None:
    written = export_mesh(spot, tmp_path, ["ply", "ply"])
    assert [p.name for p in written] == ["mesh.ply"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.ply"]
    with pytest.raises(ValueError, match="unknown export format 'fbx'"):
        export_mesh(spot, tmp_path, ["fbx"])


def test_mesh_without_texture_is_refused_with_a_reason(tmp_path: Path) -> None:
    trimesh.creation.box().export(tmp_path / "box.obj")
    with pytest.raises(ValueError, match="no texture"):
        load_result_mesh(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"holds no \.obj"):
        load_result_mesh(tmp_path / "nothing")
