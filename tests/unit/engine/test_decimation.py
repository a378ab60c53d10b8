"""Decimation: the face bound always holds and the result is closed and manifold, or it says so."""

from __future__ import annotations

import logging

import pytest
import trimesh

from recon_worker.engine.decimation import closed_manifold_problems, decimate, quadric
from recon_worker.engine.meshcheck import check_mesh


def thin_torus() -> trimesh.Trimesh:
    """A ring 8 thousandths thick: quadric decimation to 300 faces collapses it into loose, non-manifold bits."""
    return trimesh.creation.torus(1.0, 0.004, major_sections=400, minor_sections=32)


def thin_slab() -> trimesh.Trimesh:
    """A 2 x 2 x 0.002 slab: quadric decimation stops far above a 2,000-face bound."""
    return trimesh.creation.box((2.0, 2.0, 0.002)).subdivide_to_size(0.05)


def test_a_mesh_within_the_bound_is_returned_as_it_is() -> None:
    sphere = trimesh.creation.icosphere(2)
    result = decimate(sphere, len(sphere.faces))
    assert result.mesh is sphere and result.method == "none" and not result.fell_back


def test_quadric_decimation_is_used_when_it_keeps_the_mesh_valid() -> None:
    result = decimate(trimesh.creation.icosphere(4), 1000)
    assert result.method == "quadric" and len(result.mesh.faces) <= 1000
    assert check_mesh(result.mesh).valid
    assert result.summary()["facesBefore"] == 5120 and result.summary()["fallback"] is False


@pytest.mark.parametrize(
    ("mesh", "bound", "why"),
    [(thin_torus(), 300, "non-manifold edges"), (thin_slab(), 2000, "stopped at")],
    ids=["breaks", "stops-short"],
)
def test_when_quadric_decimation_fails_the_fallback_is_valid_within_the_bound_and_logged(
    mesh: trimesh.Trimesh, bound: int, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The failure is real: plain quadric decimation gives what the old code kept silently.
    plain = quadric(mesh, bound)
    assert closed_manifold_problems(plain) or len(plain.faces) > bound
    with caplog.at_level(logging.WARNING, logger="recon_worker.engine.decimation"):
        result = decimate(mesh, bound, what="the coarse mesh")
    assert result.fell_back and result.method == "remesh"
    assert len(result.mesh.faces) <= bound
    checks = check_mesh(result.mesh)
    assert checks.watertight and checks.manifold, checks.problems()
    assert checks.volume is not None and checks.volume > 0  # wound outwards
    assert why in result.notes[0] and "the coarse mesh" in result.notes[0]
    assert "fallback" in result.notes[-1]
    assert any("fallback" in r.getMessage() for r in caplog.records)


def test_closed_manifold_problems_names_boundary_and_non_manifold_edges() -> None:
    box = trimesh.creation.box()
    assert closed_manifold_problems(box) == []
    open_box = trimesh.Trimesh(box.vertices, box.faces[1:], process=False)
    assert closed_manifold_problems(open_box) == ["3 boundary edges"]
    fin = trimesh.Trimesh(box.vertices, [*box.faces, [*box.faces[0][[0, 1]].tolist(), 6]], process=False)
    assert any("non-manifold" in p for p in closed_manifold_problems(fin))


def test_bad_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_faces must be at least 4"):
        decimate(trimesh.creation.box(), 2)
