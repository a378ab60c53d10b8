"""`visual-hull`: voxel carving of the silhouettes, then marching cubes on the soft occupancy.

A voxel is kept when the views see it inside the mask; occupancy is the k-th smallest bilinearly
sampled alpha over the views (k - 1 = `outlier_views`), so a few views with bad masks do not carve
the object, and the surface falls between voxels where alpha crosses 0.5 (sub-voxel accuracy).
"""

from __future__ import annotations

import torch
import trimesh

from recon_worker.engine.reconstruct.grid import Grid, evaluate, fit_grid, initial_grid, kth_smallest, surface
from recon_worker.engine.reconstruct.views import SilhouetteViews

COARSE_RESOLUTION = 48


class VisualHull:
    name = "visual-hull"

    def __init__(self, outlier_fraction: float = 0.0) -> None:
        self.outlier_fraction = outlier_fraction

    def __call__(self, views: SilhouetteViews, resolution: int) -> trimesh.Trimesh:
        grid, volume = hull_occupancy(views, resolution, self.outlier_fraction)
        # Marching cubes' inside is below the level: negate occupancy.
        return surface(-volume, grid, -0.5)


def hull_occupancy(views: SilhouetteViews, resolution: int, outlier_fraction: float = 0.0) -> tuple[Grid, torch.Tensor]:
    """The grid fitted to the hull and the soft occupancy [Z, Y, X] in [0, 1] of its voxels (> 0.5: inside)."""
    k = 1 + int(outlier_fraction * len(views))

    def occupancy(points: torch.Tensor) -> torch.Tensor:
        pixels, depth = views.project(points)
        alpha = views.sample(views.alpha, pixels, outside=1.0)  # off-image: no evidence
        alpha = alpha.masked_fill(depth <= 0, 1.0)
        # Points that most cameras do not frame are background, not "no evidence".
        seen = views.in_view_count(pixels, depth) >= (len(views) + 1) // 2
        return torch.where(seen, kth_smallest(alpha, k), torch.zeros_like(alpha[0]))

    coarse = initial_grid(views, COARSE_RESOLUTION)
    chunk = views.points_per_chunk()  # [N, P] temporaries bounded whatever the number of views
    grid = fit_grid(evaluate(coarse, occupancy, chunk) > 0.5, coarse, resolution)
    return grid, evaluate(grid, occupancy, chunk)
