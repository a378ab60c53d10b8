"""Export writers of `engine.export`, on the public-domain spot mesh."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

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


def test_an_obj_with_separate_uv_indices_keeps_each_corners_uv(spot: trimesh.Trimesh) -> None:
    # spot.obj indexes positions and UVs apart (`f 739/1/1`): every corner keeps the UV the file gives it.
    lines = (MESHES / "spot" / "spot.obj").read_text().splitlines()
    uv = np.array([[float(x) for x in line.split()[1:3]] for line in lines if line.startswith("vt ")])
    corners = [[int(c.split("/")[1]) - 1 for c in line.split()[1:4]] for line in lines if line.startswith("f ")]
    np.testing.assert_allclose(uv_of(spot)[spot.faces], uv[np.array(corners)], atol=1e-6)


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
        export_mesh(spot, tmp_path / "refused", ["glb", "fbx"])
    assert not (tmp_path / "refused").exists()  # refused before anything is written


def test_mesh_without_texture_is_refused_with_a_reason(tmp_path: Path) -> None:
    trimesh.creation.box().export(tmp_path / "box.obj")
    with pytest.raises(ValueError, match="no texture"):
        load_result_mesh(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"holds no mesh \(mesh\.npz or \.obj\)"):
        load_result_mesh(tmp_path / "nothing")


def glb_document(path: Path) -> tuple[dict[str, Any], bytes]:
    """The JSON chunk and the binary chunk of a GLB (glTF 2.0 binary container)."""
    data = path.read_bytes()
    magic, version, _ = struct.unpack_from("<4sII", data, 0)
    assert (magic, version) == (b"glTF", 2)
    json_length, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A  # "JSON"
    document = json.loads(data[20 : 20 + json_length])
    bin_length, bin_type = struct.unpack_from("<II", data, 20 + json_length)
    assert bin_type == 0x004E4942  # "BIN"
    return document, data[28 + json_length : 28 + json_length + bin_length]


def accessor_array(document: dict[str, Any], binary: bytes, index: int) -> np.ndarray:
    accessor = document["accessors"][index]
    view = document["bufferViews"][accessor["bufferView"]]
    assert accessor["componentType"] == 5126  # FLOAT
    width = {"VEC2": 2, "VEC3": 3}[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    return np.frombuffer(binary, np.float32, accessor["count"] * width, start).reshape(-1, width)


def test_glb_has_smooth_unit_normals_for_every_vertex(spot: trimesh.Trimesh, tmp_path: Path) -> None:
    """Without NORMAL, viewers shade the GLB flat and faceted (the OBJ has normals)."""
    export_mesh(spot, tmp_path, ["glb"])
    document, binary = glb_document(tmp_path / "mesh.glb")
    (primitive,) = document["meshes"][0]["primitives"]
    attributes = primitive["attributes"]
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(attributes)
    positions = accessor_array(document, binary, attributes["POSITION"])
    normals = accessor_array(document, binary, attributes["NORMAL"])
    assert document["accessors"][attributes["NORMAL"]]["type"] == "VEC3"
    assert normals.shape == positions.shape
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-4)
    # Smooth across UV seams: copies of one position carry one normal.
    _, first, inverse = np.unique(positions.round(6), axis=0, return_index=True, return_inverse=True)
    assert np.abs(normals - normals[first][inverse.ravel()]).max() < 1e-5
    # On the outside: each corner's normal agrees with its face's (outward, counter-clockwise) normal.
    faces = trimesh.load(tmp_path / "mesh.glb", force="mesh", process=False).faces
    face_normals = trimesh.triangles.normals(positions[faces])[0]  # [F, 3]
    agreement = (normals[faces] * face_normals[:, None, :]).sum(axis=-1)  # [F, 3]
    assert (agreement > 0).mean() > 0.99
