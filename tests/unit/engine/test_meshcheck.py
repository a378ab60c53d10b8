"""Validity checks and repairs of `engine.meshcheck` on small meshes with one known defect each."""

from __future__ import annotations

import numpy as np
import trimesh

from recon_worker.engine.meshcheck import check_mesh, repair_mesh, welded
from tests.conftest import MESHES


def box() -> trimesh.Trimesh:
    return trimesh.creation.box()  # 8 vertices, 12 faces, closed, outward


def test_closed_box_is_valid() -> None:
    checks = check_mesh(box())
    assert checks.valid and checks.watertight and checks.manifold
    assert (checks.faces, checks.vertices, checks.components) == (12, 8, 1)
    assert checks.volume is not None and abs(checks.volume - 1.0) < 1e-9
    assert checks.problems() == []


def test_textured_mesh_with_uv_seams_is_checked_on_its_welded_geometry() -> None:
    spot = trimesh.load(MESHES / "spot" / "spot.obj", process=False)
    assert len(spot.vertices) > len(welded(spot)[0].vertices)  # seams split vertices
    checks = check_mesh(spot)
    assert checks.valid, checks.problems()


def test_hole_is_reported_and_small_hole_filled() -> None:
    mesh = box()
    mesh.update_faces(np.arange(1, 12))  # drop one triangle: a hole of three edges
    checks = check_mesh(mesh)
    assert checks.boundary_edges == 3 and not checks.watertight and not checks.valid
    assert "3 boundary edges (holes)" in checks.problems()
    repaired, done = repair_mesh(mesh)
    assert check_mesh(repaired).valid and any("filled" in d for d in done)


def test_flipped_face_is_reported_and_repaired() -> None:
    mesh = box()
    faces = mesh.faces.copy()
    faces[0] = faces[0][::-1]
    mesh.faces = faces
    checks = check_mesh(mesh)
    assert checks.inconsistent_edges == 3 and checks.watertight and not checks.valid
    repaired, done = repair_mesh(mesh)
    assert check_mesh(repaired).valid
    assert done == ["flipped 1 faces to a consistent outward winding"]


def test_inside_out_mesh_is_turned_outward() -> None:
    mesh = box()
    mesh.faces = mesh.faces[:, ::-1].copy()
    volume = check_mesh(mesh).volume
    assert volume is not None and volume < 0
    repaired, _ = repair_mesh(mesh)
    volume = check_mesh(repaired).volume
    assert volume is not None and volume > 0


def test_non_manifold_edge_is_reported() -> None:
    mesh = box()
    a, b, _ = mesh.faces[0]
    fin = trimesh.Trimesh(
        np.vstack([mesh.vertices, [[2.0, 2.0, 2.0]]]), np.vstack([mesh.faces, [[a, b, 8]]]), process=False
    )
    checks = check_mesh(fin)
    assert checks.non_manifold_edges == 1 and not checks.manifold and not checks.watertight


def test_boxes_touching_at_a_corner_have_a_non_manifold_vertex() -> None:
    other = box()
    other.apply_translation([1.0, 1.0, 1.0])  # shares exactly the corner (0.5, 0.5, 0.5)
    checks = check_mesh(trimesh.util.concatenate([box(), other]))
    assert checks.watertight and checks.non_manifold_edges == 0
    assert checks.non_manifold_vertices == 1 and not checks.manifold
    assert checks.components == 1 and not checks.valid


def scene_of_boxes() -> trimesh.Trimesh:
    """Three separate closed boxes (a scene of three objects) and a 1 %-of-the-area speck."""
    pieces = [box(), box().apply_translation([3.0, 0, 0]), trimesh.creation.box((0.5, 2.0, 0.5))]
    pieces[2].apply_translation([0, 4.0, 0])
    speck = trimesh.creation.box((0.12, 0.12, 0.12)).apply_translation([0, -4.0, 0])  # area 0.086 < 2 % of 6
    return trimesh.util.concatenate([*pieces, speck])


def test_a_scene_of_several_closed_objects_is_valid() -> None:
    checks = check_mesh(scene_of_boxes())
    assert checks.components == 4 and checks.valid, checks.problems()


def test_repair_keeps_every_object_of_a_scene_and_drops_only_specks() -> None:
    repaired, done = repair_mesh(scene_of_boxes())
    checks = check_mesh(repaired)
    assert checks.components == 3 and checks.valid and checks.faces == 36
    assert any("removed 1 specks" in d and "kept 3 components" in d for d in done), done


def test_one_inside_out_object_of_a_scene_is_invalid_and_turned_outward() -> None:
    small = box().apply_translation([3.0, 0, 0])
    small.faces = small.faces[:, ::-1].copy()  # inside out; the scene's total volume stays positive
    big = trimesh.creation.box((2.0, 2.0, 2.0))
    checks = check_mesh(trimesh.util.concatenate([big, small]))
    assert checks.volume is not None and checks.volume > 0
    assert checks.inside_out_components == 1 and not checks.valid
    assert "1 inside-out components" in checks.problems()
    repaired, done = repair_mesh(trimesh.util.concatenate([big, small]))
    assert check_mesh(repaired).valid and any("flipped 12 faces" in d for d in done), done


def test_a_void_inside_an_object_is_not_inside_out() -> None:
    inner = box()
    inner.faces = inner.faces[:, ::-1].copy()  # the wall of a cavity faces into the cavity
    checks = check_mesh(trimesh.util.concatenate([trimesh.creation.box((3.0, 3.0, 3.0)), inner]))
    assert checks.inside_out_components == 0 and checks.valid


def test_degenerate_and_duplicate_faces_are_removed_and_a_second_object_stays() -> None:
    mesh = box()
    far = box()
    far.apply_translation([5.0, 0.0, 0.0])
    v = len(mesh.vertices)
    faces = np.vstack([mesh.faces, [mesh.faces[3]], [[0, 0, 1]], far.faces + v])
    messy = trimesh.Trimesh(np.vstack([mesh.vertices, far.vertices]), faces, process=False)
    checks = check_mesh(messy)
    assert (checks.duplicate_faces, checks.degenerate_faces, checks.components) == (1, 1, 2)
    repaired, done = repair_mesh(messy)
    assert len(done) == 2, done
    after = check_mesh(repaired)
    assert after.valid and after.faces == 24 and after.components == 2


def test_nan_positions_are_reported() -> None:
    mesh = box()
    vertices = mesh.vertices.copy()
    vertices[0, 0] = np.nan
    checks = check_mesh(trimesh.Trimesh(vertices, mesh.faces, process=False))
    assert not checks.finite and not checks.valid
    assert "positions or UVs contain NaN or Inf" in checks.problems()
