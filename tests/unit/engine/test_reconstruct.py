"""Coarse reconstruction: both built-in backends carve a sphere's silhouettes into a closed sphere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recon_worker.capture import load_capture
from recon_worker.engine.reconstruct import available, get_reconstructor
from recon_worker.engine.reconstruct.views import SilhouetteViews
from recon_worker.errors import InputsInvalid
from tests.unit.engine.hard_shapes import textured_scene, write_capture
from tests.unit.engine.synthetic_sphere import write_sphere_capture

RADIUS = 0.5


@pytest.fixture(scope="module")
def sphere_views(tmp_path_factory: pytest.TempPathFactory) -> SilhouetteViews:
    root = write_sphere_capture(tmp_path_factory.mktemp("sphere"), views=16, size=64, radius=RADIUS)
    return SilhouetteViews.from_capture(load_capture(root))


@pytest.mark.parametrize("backend", ["visual-hull", "silhouette-sdf"])
def test_backend_gives_a_closed_mesh_close_to_the_sphere(sphere_views: SilhouetteViews, backend: str) -> None:
    mesh = get_reconstructor(backend)(sphere_views, 48)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0
    radii = np.linalg.norm(mesh.vertices, axis=1)
    # A hull of 16 views is a little larger than the sphere, never smaller (beyond a voxel's error).
    voxel = 1.2 * 2 * RADIUS / 47
    assert radii.min() > RADIUS - voxel
    assert np.median(radii) < RADIUS * 1.08
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.2)
    np.testing.assert_allclose(mesh.centroid, 0, atol=0.02)


def test_look_at_point_is_the_sphere_centre(sphere_views: SilhouetteViews) -> None:
    np.testing.assert_allclose(sphere_views.look_at_point().numpy(), 0, atol=1e-4)


def test_registry_lists_builtins_and_names_unknown_backends() -> None:
    assert {"visual-hull", "silhouette-sdf", "photo-hull", "density-field"} <= set(available())
    with pytest.raises(ValueError, match=r"unknown reconstruction backend 'nerf'.*visual-hull"):
        get_reconstructor("nerf")


@pytest.mark.parametrize("backend", ["visual-hull", "silhouette-sdf"])
def test_empty_masks_fail_with_an_actionable_error(tmp_path: Path, backend: str) -> None:
    views = SilhouetteViews.from_capture(load_capture(write_sphere_capture(tmp_path, views=4, size=32)))
    views.alpha.zero_()
    with pytest.raises(InputsInvalid, match="carve away everything"):
        get_reconstructor(backend)(views, 32)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["visual-hull", "photo-hull"])
def test_a_scene_of_separate_objects_keeps_every_object(tmp_path: Path, backend: str) -> None:
    """A tea set is ten pieces side by side: the surface keeps each one (it used to keep the largest)."""
    import trimesh

    big = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    small = trimesh.creation.icosphere(subdivisions=2, radius=0.35)
    small.apply_translation([1.2, 0, 0])
    root = write_capture(tmp_path, textured_scene(trimesh.util.concatenate([big, small])), views=16, size=48)
    views = SilhouetteViews.from_capture(load_capture(root), with_color=True)
    mesh = get_reconstructor(backend)(views, 40)
    pieces = mesh.split(only_watertight=True)
    assert len(pieces) == 2 and mesh.is_watertight
    # Both orientations outward, the small one about (0.35 / 0.5)^3 of the big one.
    volumes = sorted(piece.volume for piece in pieces)
    assert volumes[0] > 0 and volumes[0] / volumes[1] == pytest.approx((0.35 / 0.5) ** 3, rel=0.35)
