"""Cutting a mesh into a 2-manifold where its sheets touch, and closing the small holes decimation leaves."""

from __future__ import annotations

import numpy as np
import trimesh

from recon_worker.engine.decimation import _clean, closed_manifold_problems
from recon_worker.engine.manifold import fill_small_holes, split_non_manifold
from recon_worker.engine.meshcheck import check_mesh


def two_boxes(offset: tuple[float, float, float]) -> trimesh.Trimesh:
    """Two unit cubes, the second moved by `offset`, welded where they share vertices."""
    mesh = trimesh.util.concatenate([trimesh.creation.box(), trimesh.creation.box().apply_translation(offset)])
    mesh.merge_vertices()
    return mesh


def test_two_solids_touching_along_an_edge_are_cut_apart_there() -> None:
    mesh = two_boxes((1.0, 1.0, 0.0))  # the cubes share one edge: four faces on it
    assert closed_manifold_problems(mesh) == ["1 non-manifold edges"]
    result = split_non_manifold(mesh)
    assert result.edges == 1 and result.vertices == 2  # the edge's two ends, one copy per cube
    checks = check_mesh(result.mesh)
    assert checks.valid and checks.components == 2, checks.problems()
    assert np.isclose(result.mesh.volume, 2.0, rtol=0.03)  # nudged (1.96 here: unit cubes), not reshaped


def test_a_valid_mesh_is_returned_as_it_is() -> None:
    sphere = trimesh.creation.icosphere(2)
    result = split_non_manifold(sphere)
    assert not result and result.mesh is sphere


def test_coincident_faces_of_a_collapsed_wall_are_removed_both_so_the_sides_join() -> None:
    # Two cubes glued face to face, the second the mirror image of the first: the shared square's
    # triangles appear twice with opposite winding, as where quadric collapses a thin wall. Keeping one
    # copy left 4 boundary edges; removing both joins the two cubes into one closed box.
    box = trimesh.creation.box(bounds=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    mirrored = trimesh.Trimesh(box.vertices * [-1.0, 1.0, 1.0] + [2.0, 0.0, 0.0], box.faces[:, ::-1])
    glued = trimesh.util.concatenate([box, mirrored])
    cleaned = _clean(glued.vertices, glued.faces)
    assert closed_manifold_problems(cleaned) == []
    assert len(cleaned.faces) == 2 * 12 - 4 and np.isclose(cleaned.volume, 2.0)


def test_small_holes_are_closed_and_large_ones_left() -> None:
    sphere = trimesh.creation.icosphere(3)
    one_face = trimesh.Trimesh(sphere.vertices, sphere.faces[1:])
    filled, count = fill_small_holes(one_face)
    assert count == 1 and closed_manifold_problems(filled) == []
    assert np.isclose(filled.volume, sphere.volume)  # wound like its neighbours: outward
    # The faces around a vertex and their neighbours: a hole of more than 8 edges stays open.
    around = np.isin(sphere.faces, sphere.faces[np.isin(sphere.faces, [0]).any(axis=1)].ravel()).any(axis=1)
    big_hole = trimesh.Trimesh(sphere.vertices, sphere.faces[~around])
    assert fill_small_holes(big_hole)[1] == 0
