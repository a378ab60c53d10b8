"""The reconstructors' memory is O(batch + one view): uint8 views, [views, points] chunks of bounded size.

Issue 11: 2,002 views of 16² took 21 GB, ~10 MB per view, because a chunk of the grid was 2^18 points
whatever the number of views (every [N, P] temporary grew with N). The chunked results must be the same
as the unchunked ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from recon_worker.capture import load_capture
from recon_worker.engine.reconstruct import get_reconstructor, silhouette_sdf, views, visual_hull
from recon_worker.engine.reconstruct.grid import Grid, evaluate
from recon_worker.engine.reconstruct.photo_hull import PhotoHull
from recon_worker.engine.reconstruct.views import POINT_VIEW_VALUES, SilhouetteViews
from recon_worker.engine.reconstruct.visual_hull import hull_occupancy
from tests.unit.engine.hard_shapes import cup_mesh, textured_scene, write_capture
from tests.unit.engine.synthetic_sphere import write_sphere_capture


@pytest.fixture(scope="module")
def many_views(tmp_path_factory: pytest.TempPathFactory) -> SilhouetteViews:
    root = write_sphere_capture(tmp_path_factory.mktemp("many"), views=96, size=16)
    return SilhouetteViews.from_capture(load_capture(root))


def test_views_are_kept_as_stored_uint8(tmp_path: Path) -> None:
    capture = load_capture(write_sphere_capture(tmp_path, views=10, size=16))
    loaded = SilhouetteViews.from_capture(capture, with_color=True)
    assert loaded.alpha.dtype == torch.uint8 and loaded.rgb is not None and loaded.rgb.dtype == torch.uint8
    stored = np.stack([capture.load_view(i) for i in capture.indices("train")])
    np.testing.assert_array_equal(loaded.alpha.numpy(), stored[..., 3])
    np.testing.assert_array_equal(loaded.rgb.numpy(), stored[..., :3])


def test_uint8_masks_sample_as_floats_a_batch_at_a_time(
    many_views: SilhouetteViews, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = torch.rand(500, 3) - 0.5
    pixels, _ = many_views.project(points)
    as_float = many_views.sample(many_views.alpha.float() / 255, pixels, outside=1.0)
    monkeypatch.setattr(views, "FLOAT_BATCH_VALUES", 3 * 16 * 16)  # three views turned into floats at once
    torch.testing.assert_close(many_views.sample(many_views.alpha, pixels, outside=1.0), as_float)


@pytest.mark.parametrize("module", [visual_hull, silhouette_sdf])
def test_chunks_hold_a_bounded_number_of_view_points(
    many_views: SilhouetteViews, module: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []

    def recording(grid: Grid, field: Callable[[torch.Tensor], torch.Tensor], chunk: int = 1 << 18) -> torch.Tensor:
        def counted(points: torch.Tensor) -> torch.Tensor:
            seen.append(len(points))
            return field(points)

        return evaluate(grid, counted, chunk)

    monkeypatch.setattr(module, "evaluate", recording)
    name = "visual-hull" if module is visual_hull else "silhouette-sdf"
    mesh = get_reconstructor(name)(many_views, 40)
    assert mesh.is_watertight
    assert max(seen) * len(many_views) <= POINT_VIEW_VALUES  # before: 110,592 points x 96 views


def test_photo_hull_carves_the_same_a_chunk_of_voxels_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = load_capture(write_capture(tmp_path, textured_scene(cup_mesh()), views=16, size=48))
    loaded = SilhouetteViews.from_capture(capture, with_color=True)
    grid, volume = hull_occupancy(loaded, 32)
    whole = PhotoHull().carve(loaded, grid, volume > 0.5)
    monkeypatch.setattr(views, "POINT_VIEW_VALUES", 16 * 500)  # 500 voxels a chunk: several chunks
    chunked = PhotoHull().carve(loaded, grid, volume > 0.5)
    assert int(whole.sum()) > 0  # the cup's cavity: something is carved
    assert torch.equal(chunked, whole)
