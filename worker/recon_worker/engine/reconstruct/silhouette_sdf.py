"""`silhouette-sdf`: a smooth hull from the silhouettes' signed distance fields.

Each mask's 2D signed distance (pixels, positive outside) is lifted to world units at the point's
depth (d * depth / f): a point that projects d pixels outside one silhouette lies at least about that
far from the surface. The hull's distance bound is the k-th largest of these over the views, and its
zero level is a smooth surface through the silhouette cones (less voxel staircase than plain carving
on coarse grids, and a true distance scale for regularising later stages).
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from scipy import ndimage

from recon_worker.engine.reconstruct.grid import evaluate, fit_grid, initial_grid, surface
from recon_worker.engine.reconstruct.views import SilhouetteViews, as_unit_float

COARSE_RESOLUTION = 48


def signed_distance_px(alpha: np.ndarray) -> np.ndarray:
    """[H, W] signed distance to the silhouette edge, pixels, positive outside the mask."""
    inside = alpha >= 0.5
    outside_dist = ndimage.distance_transform_edt(~inside)
    inside_dist = ndimage.distance_transform_edt(inside)
    # Edges lie half-way between an inside and an outside pixel; alpha refines that by up to half a pixel.
    return np.where(inside, 0.5 - inside_dist, outside_dist - 0.5) + (0.5 - np.clip(alpha, 0, 1)) * (
        (inside_dist <= 1) & (outside_dist <= 1)
    )


class SilhouetteSdf:
    name = "silhouette-sdf"

    def __init__(self, outlier_fraction: float = 0.0) -> None:
        self.outlier_fraction = outlier_fraction

    def __call__(self, views: SilhouetteViews, resolution: int) -> trimesh.Trimesh:
        sdf_px = torch.empty(views.alpha.shape, dtype=torch.float32, device=views.device)  # [N, H, W]
        for n in range(len(views)):  # one view's float copy at a time
            sdf_px[n] = torch.as_tensor(signed_distance_px(as_unit_float(views.alpha[n]).cpu().numpy()))
        k = 1 + int(self.outlier_fraction * len(views))
        focal = 0.5 * (views.intrinsics.fx + views.intrinsics.fy)

        def distance(points: torch.Tensor) -> torch.Tensor:
            pixels, depth = views.project(points)
            d = views.sample(sdf_px, pixels, outside=-1e9)  # off-image: no evidence
            d = torch.where(depth > 0, d * depth / focal, torch.full_like(d, -1e9))
            # k-th largest over the views: the tightest bound that tolerates k - 1 bad masks.
            bound = torch.topk(d, min(k, d.shape[0]), dim=0).values[-1]
            # Points that most cameras do not frame are background, not "no evidence".
            seen = views.in_view_count(pixels, depth) >= (len(views) + 1) // 2
            return torch.where(seen, bound, bound.abs().clamp(min=1e-3))

        coarse = initial_grid(views, COARSE_RESOLUTION)
        chunk = views.points_per_chunk()  # [N, P] temporaries bounded whatever the number of views
        grid = fit_grid(evaluate(coarse, distance, chunk) < 0, coarse, resolution)
        volume = evaluate(grid, distance, chunk)
        return surface(volume.clamp(-4 * grid.step, 4 * grid.step), grid, 0.0)
