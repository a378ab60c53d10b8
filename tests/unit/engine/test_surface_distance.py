"""The PyTorch point-to-surface query (GPU geometric metrics) agrees with the exact CPU one."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from recon_worker.engine.metrics import SurfaceSamples
from recon_worker.engine.surface_distance import closest_on_triangles, closest_points


def test_closest_point_on_triangles_matches_trimesh_in_every_region() -> None:
    rng = np.random.default_rng(0)
    triangles = rng.normal(size=(4000, 3, 3))
    triangles[:50, 2] = triangles[:50, 1]  # degenerate ones (two equal corners) too
    points = rng.normal(size=(4000, 3)) * 2
    expected = trimesh.triangles.closest_point(triangles, points)
    tri = torch.tensor(triangles)
    got = closest_on_triangles(torch.tensor(points), tri[:, 0], tri[:, 1], tri[:, 2]).numpy()
    np.testing.assert_allclose(
        np.linalg.norm(got - points, axis=1), np.linalg.norm(expected - points, axis=1), rtol=1e-6, atol=1e-9
    )


def test_closest_points_equal_the_exact_cpu_query_near_the_surface() -> None:
    mesh = trimesh.creation.icosphere(3)
    rng = np.random.default_rng(1)
    queries = trimesh.sample.sample_surface(trimesh.creation.icosphere(4, radius=1.02), 3000, seed=2)[0]
    queries = queries + rng.normal(scale=0.01, size=queries.shape)
    exact = SurfaceSamples(mesh, 5000, seed=0)
    d_exact, _, _ = exact.closest_points(queries)
    dist, face, point = closest_points(
        torch.tensor(queries, dtype=torch.float32),
        torch.tensor(np.asarray(mesh.triangles), dtype=torch.float32),
        torch.tensor(exact.points, dtype=torch.float32),
        torch.tensor(exact.face_index),
    )
    np.testing.assert_allclose(dist.numpy(), d_exact, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(point.numpy() - queries, axis=1), d_exact, atol=1e-5)
    assert face.shape == (3000,)
