"""Refinement: differentiable rendering pulls a too-large mesh onto the sphere the photos show."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from recon_worker.capture import load_capture
from recon_worker.engine.cameras import Cameras
from recon_worker.engine.refine import Neighbours, TrainingViews, refine_mesh
from recon_worker.engine.render import get_renderer
from recon_worker.presets import RefinementSettings
from tests.unit.engine.synthetic_sphere import write_sphere_capture

RADIUS, COLOR = 0.5, (0.2, 0.6, 0.3)


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> TrainingViews:
    root = write_sphere_capture(tmp_path_factory.mktemp("sphere"), views=12, size=48, radius=RADIUS, color=COLOR)
    return TrainingViews.from_capture(load_capture(root), 48, torch.device("cpu"))


def test_refinement_lowers_the_loss_and_moves_the_surface_onto_the_sphere(views: TrainingViews) -> None:
    start = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    settings = RefinementSettings(iterations=30, render_resolution=48, batch_views=4, max_faces=1000, position_lr=3e-3)
    progress: list[float] = []
    result = refine_mesh(start, views, get_renderer("cpu"), settings, progress=progress.append)
    losses = [loss for _, loss in result.losses]
    assert losses[-1] < 0.6 * losses[0]
    before = abs(0.6 - RADIUS)
    after = abs(float(np.linalg.norm(result.verts, axis=1).mean()) - RADIUS)
    assert after < 0.6 * before
    refined = trimesh.Trimesh(result.verts, result.faces)
    assert refined.is_watertight
    assert progress[-1] == pytest.approx(1.0) and len(progress) == settings.iterations
    # The appearance learns the object's colour.
    np.testing.assert_allclose(result.colors.mean(axis=0), COLOR, atol=0.08)


def test_cancellation_is_checked_between_iterations(views: TrainingViews) -> None:
    class Stop(Exception):
        pass

    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    settings = RefinementSettings(iterations=10, render_resolution=48, batch_views=2, max_faces=1000)
    with pytest.raises(Stop):
        refine_mesh(trimesh.creation.icosphere(1, 0.5), views, get_renderer("cpu"), settings, check_cancelled=check)


def test_uniform_laplacian_vanishes_on_a_plane_interior() -> None:
    grid = trimesh.creation.box().subdivide().subdivide()
    faces = torch.tensor(grid.faces)
    neighbours = Neighbours.from_faces(faces, len(grid.vertices))
    verts = torch.tensor(grid.vertices, dtype=torch.float32)
    # A constant field has no Laplacian, and a closed mesh's Laplacian points inwards on average.
    ones = torch.ones(len(grid.vertices), 1)
    torch.testing.assert_close(neighbours.laplacian(ones), torch.zeros_like(ones))
    assert float((neighbours.laplacian(verts) * verts).sum()) > 0
    # Vertex 0's row: itself minus the mean of its mesh neighbours.
    ring = sorted({int(v) for f in grid.faces if 0 in f for v in f} - {0})
    torch.testing.assert_close(neighbours.laplacian(verts)[0], verts[0] - verts[ring].mean(0))


def test_views_are_stored_as_uint8_and_halve_by_area(views: TrainingViews) -> None:
    assert views.images.dtype == torch.uint8
    background = torch.tensor([0.1, 0.2, 0.9])
    rgb, alpha = views.target(torch.tensor([0, 3]), background)
    # Premultiplied storage: where the sphere is absent the target is the background.
    empty = alpha[0] == 0
    torch.testing.assert_close(rgb[0][empty], background.expand(int(empty.sum()), 3))
    assert views.halved() is None  # 48²: too small to halve
    big = TrainingViews(
        torch.randint(0, 256, (2, 64, 96, 4), dtype=torch.uint8),
        Cameras(views.cameras.c2w[:2], views.cameras.proj[:2], (64, 96)),
    )
    half = big.halved()
    assert half is not None and half.cameras.resolution == (32, 48)
    expected = big.images.float().reshape(2, 32, 2, 48, 2, 4).mean(dim=(2, 4))
    assert float((half.images.float() - expected).abs().max()) <= 0.5
