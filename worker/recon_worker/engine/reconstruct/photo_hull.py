"""`photo-hull`: the visual hull, then voxels carved where the photos disagree (space carving).

Silhouettes cannot see a concavity (a cup's interior, the gap between a toy's tracks and its base):
the hull closes it with a false surface. The colour of a point on a true surface is about the same in
every view that sees it; a voxel of a false surface is "seen" by each view at a different point of
the real surface behind it, so its colours disagree. Space carving (Kutulakos & Seitz, "A theory of
shape by space carving", IJCV 2000; Seitz & Dyer's voxel colouring, CVPR 1997) peels such voxels off
the hull one surface layer at a time until every visible voxel is photo-consistent.

One layer, all on the device of the views, vectorised over views and voxels:
- visibility: the surface voxels are splatted into per-view depth buffers at the resolution where a
  voxel covers about one pixel (2x2 footprint, so no gaps); a voxel is visible where it is within
  1.5 voxels of the nearest depth;
- colour: the pictures, area-downsampled to that resolution, are sampled at each visible voxel;
  views where it falls within a pixel of the silhouette's edge are left out (mixed colours there);
- consistency: the share of visible views within `tolerance` (plus the local image gradient, which
  is what half a voxel of misregistration costs on a textured surface) of the per-voxel median. A
  highlight moves with the viewer and is an outlier in a minority of views, so a glossy surface
  stays (point 3 of issue 10: gloss must not dent the geometry);
- a voxel is carved when it is seen in at least `min_views` views, agrees in fewer than `agreement`
  of them, and is not the last voxel on any of its rays inside the silhouette (a far depth buffer
  says what is behind), so carving never cuts into a silhouette: thin legs and rods stay.
Carving opens through-holes the silhouettes missed too (the rays through them reach the background).

Limits: a uniformly coloured false surface over a uniformly coloured cavity is photo-consistent, and
stays (the classic ambiguity of photo-consistency); see docs/engine.md.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
import trimesh

from recon_worker.engine.reconstruct.grid import Grid, surface
from recon_worker.engine.reconstruct.views import FLOAT_BATCH_VALUES, SilhouetteViews, as_unit_float
from recon_worker.engine.reconstruct.visual_hull import hull_occupancy

log = logging.getLogger(__name__)


class PhotoHull:
    name = "photo-hull"
    needs_color = True

    def __init__(
        self,
        outlier_fraction: float = 0.0,
        tolerance: float = 0.08,
        agreement: float = 0.5,
        min_views: int = 3,
        max_layers: int | None = None,
    ) -> None:
        self.outlier_fraction = outlier_fraction
        self.tolerance = tolerance
        self.agreement = agreement
        self.min_views = min_views
        self.max_layers = max_layers
        self.carved_voxels = 0  # of the last call, for the stage's info.json
        self.layers = 0

    def __call__(self, views: SilhouetteViews, resolution: int) -> trimesh.Trimesh:
        if views.rgb is None:
            raise ValueError("photo-hull needs the views' colours (SilhouetteViews.from_capture(..., with_color=True))")
        grid, volume = hull_occupancy(views, resolution, self.outlier_fraction)
        carved = self.carve(views, grid, volume > 0.5)
        volume = torch.where(carved, torch.zeros_like(volume), volume)
        return surface(-volume, grid, -0.5)

    def carve(self, views: SilhouetteViews, grid: Grid, solid: torch.Tensor) -> torch.Tensor:
        """[Z, Y, X] bool: the voxels of `solid` that the photos carve away."""
        assert views.rgb is not None
        images = _CoarseImages.build(views, grid)
        carved = torch.zeros_like(solid)
        max_layers = self.max_layers if self.max_layers is not None else max(grid.shape)
        layer = 0
        for layer in range(1, max_layers + 1):  # noqa: B007 (reported below)
            current = solid & ~carved
            shell = _surface_voxels(current)
            index = shell.reshape(-1).nonzero()[:, 0]
            if len(index) == 0:
                break
            remove = self._inconsistent(images, grid, index, shell)
            if not bool(remove.any()):
                break
            carved.view(-1)[index[remove]] = True
        self.carved_voxels, self.layers = int(carved.sum()), layer
        log.info("photo-hull: carved %d of %d voxels in %d layers", self.carved_voxels, int(solid.sum()), layer)
        return carved

    def _inconsistent(
        self, images: _CoarseImages, grid: Grid, index: torch.Tensor, shell: torch.Tensor
    ) -> torch.Tensor:
        """[P] bool for the surface voxels `index` (flat, (z, y, x)-major): carve this one."""
        points = _voxel_centres(grid, index)
        tol = 1.5 * grid.step
        # Every view's depth buffers from the whole shell (coarse pixels: small), then the voxels a chunk at
        # a time, so that the [N, P] colours and masks hold a bounded number of voxels whatever N is.
        near_buffers, far_buffers = images.depth_buffers(points)  # [N, h * w]
        critical = torch.zeros(len(index), dtype=torch.bool, device=index.device)
        seen_total = torch.zeros(len(index), device=index.device)
        agree_total = torch.zeros(len(index), device=index.device)
        chunk = max(1, images.views.point_view_values() // images.count)
        for first in range(0, len(index), chunk):
            last = min(first + chunk, len(index))
            pixels, depth = images.project(points[first:last], 0, images.count)  # [N, p, 2], [N, p]
            near, far = images.at_pixels(near_buffers, pixels), images.at_pixels(far_buffers, pixels)
            on_image = images.on_image(pixels) & (depth > 0)
            visible = on_image & (depth <= near + tol)
            inside = images.sample(images.inside, pixels) > 0.5  # silhouette interior
            in_mask = images.sample(images.alpha, pixels) > 0.5
            # The last voxel on a ray through the silhouette: carving it would cut the silhouette.
            critical[first:last] = (visible & in_mask & (far <= depth + tol)).any(dim=0)
            use = visible & inside
            colors = images.sample_rgb(pixels)  # [N, p, 3]
            slack = images.sample(images.gradient, pixels)  # [N, p]
            masked = torch.where(use[..., None], colors, torch.full_like(colors, math.nan))
            median = masked.nanmedian(dim=0).values  # [p, 3]
            distance = (colors - median[None]).abs().amax(dim=-1)  # [N, p]
            agree = use & (distance <= self.tolerance + slack)
            seen_total[first:last] = use.sum(dim=0).float()
            agree_total[first:last] = agree.sum(dim=0).float()
        # The agreement share, averaged over each voxel's judged shell neighbours (3x3x3): one voxel of a
        # false surface that agrees by chance is carved with its neighbours instead of staying as a speck.
        judged = seen_total >= self.min_views
        share = torch.where(judged, agree_total / seen_total.clamp(min=1), torch.zeros_like(seen_total))
        share = _neighbourhood_mean(share, judged, index, shell.shape)
        return judged & (share < self.agreement) & ~critical


def _surface_voxels(solid: torch.Tensor) -> torch.Tensor:
    """[Z, Y, X] bool: solid voxels with an empty 6-neighbour (the grid's outside counts as empty)."""
    empty = F.pad((~solid).float()[None, None], (1, 1, 1, 1, 1, 1), value=1.0)[0, 0]
    near_empty = (
        empty[:-2, 1:-1, 1:-1] + empty[2:, 1:-1, 1:-1] + empty[1:-1, :-2, 1:-1]
        + empty[1:-1, 2:, 1:-1] + empty[1:-1, 1:-1, :-2] + empty[1:-1, 1:-1, 2:]
    )  # fmt: skip
    return solid & (near_empty > 0)


def _neighbourhood_mean(
    values: torch.Tensor, weights: torch.Tensor, index: torch.Tensor, shape: torch.Size
) -> torch.Tensor:
    """[P] mean of `values` over the 3x3x3 neighbours (with weight `weights`) of each voxel `index`."""
    total = torch.zeros(shape, device=values.device).view(-1)
    count = torch.zeros(shape, device=values.device).view(-1)
    total[index] = values * weights
    count[index] = weights.float()
    total = F.avg_pool3d(total.view(1, 1, *shape), 3, stride=1, padding=1).view(-1)[index]
    count = F.avg_pool3d(count.view(1, 1, *shape), 3, stride=1, padding=1).view(-1)[index]
    return total / count.clamp(min=1e-6)


def _voxel_centres(grid: Grid, index: torch.Tensor) -> torch.Tensor:
    nx, ny, _ = grid.shape
    ijk = torch.stack([index % nx, (index // nx) % ny, index // (nx * ny)], dim=-1)
    return grid.lo.to(index.device) + ijk.float() * grid.step


class _CoarseImages:
    """The views at the resolution where one voxel covers about one pixel, with their depth buffers.

    Built a batch of views at a time from the views' uint8 masks and colours: only the coarse images
    (h x w per view) are kept as floats."""

    def __init__(self, views: SilhouetteViews, scale: float) -> None:
        assert views.rgb is not None
        k = views.intrinsics
        self.views = views
        self.count = len(views)
        self.height = max(8, round(k.height * scale))
        self.width = max(8, round(k.width * scale))
        self.sx, self.sy = self.width / k.width, self.height / k.height
        n, device = self.count, views.device
        self.alpha = torch.empty((n, self.height, self.width), device=device)  # [N, h, w]
        self.rgb = torch.empty((n, 3, self.height, self.width), device=device)  # [N, 3, h, w]
        self.inside = torch.empty_like(self.alpha)  # [N, h, w]
        self.gradient = torch.empty_like(self.alpha)  # [N, h, w]
        step = max(1, FLOAT_BATCH_VALUES // max(4 * k.width * k.height, 1))
        for start in range(0, n, step):
            stop = min(start + step, n)
            alpha = as_unit_float(views.alpha[start:stop])[:, None]  # [b, 1, H, W]
            rgb = as_unit_float(views.rgb[start:stop]).permute(0, 3, 1, 2)  # [b, 3, H, W]
            small = F.interpolate(torch.cat([rgb * alpha, alpha], dim=1), size=(self.height, self.width), mode="area")
            self.alpha[start:stop] = small[:, 3]
            self.rgb[start:stop] = (small[:, :3] / small[:, 3:].clamp(min=1e-4)).clamp(0, 1)
            mask = (small[:, 3] > 0.5).float()[:, None]
            # Interior: the mask eroded by one pixel (a 3x3 min-filter).
            self.inside[start:stop] = -F.max_pool2d(-mask, 3, stride=1, padding=1)[:, 0]
            # Local colour gradient: the colour change across one pixel, the largest channel.
            color = self.rgb[start:stop]
            gx = (color[..., :, 2:] - color[..., :, :-2]).abs() * 0.5
            gy = (color[..., 2:, :] - color[..., :-2, :]).abs() * 0.5
            grad = torch.maximum(F.pad(gx, (1, 1, 0, 0)), F.pad(gy, (0, 0, 1, 1))).amax(dim=1)
            # Half a voxel (half a coarse pixel) of misregistration costs half the change across a pixel.
            self.gradient[start:stop] = 0.25 * grad

    @classmethod
    def build(cls, views: SilhouetteViews, grid: Grid) -> _CoarseImages:
        k = views.intrinsics
        distance = float((views.c2w[:, :3, 3] - views.look_at_point()).norm(dim=-1).mean())
        voxel_px = 0.5 * (k.fx + k.fy) * grid.step / max(distance, 1e-9)
        return cls(views, min(1.0, 1.0 / max(voxel_px, 1e-9)))

    def project(self, points: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels [n, P, 2] in the coarse images and depths [n, P] of `points` in views start..stop."""
        sub = SilhouetteViews(self.views.alpha[start:stop], self.views.c2w[start:stop], self.views.intrinsics)
        pixels, depth = sub.project(points)
        return pixels * pixels.new_tensor([self.sx, self.sy]), depth

    def on_image(self, pixels: torch.Tensor) -> torch.Tensor:
        x, y = pixels[..., 0], pixels[..., 1]
        return (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)

    def depth_buffers(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest and farthest depth [N, h * w] of `points` splatted into every view (2x2 splats).

        Views in chunks so that the splatting's [n, P] temporaries stay small."""
        size = self.height * self.width
        near = torch.full((self.count, size), math.inf, device=points.device)
        far = torch.full((self.count, size), -math.inf, device=points.device)
        chunk = max(1, (1 << 24) // max(len(points), 1))
        for start in range(0, self.count, chunk):
            stop = min(start + chunk, self.count)
            pixels, depth = self.project(points, start, stop)  # [n, P, 2], [n, P]
            base = torch.arange(stop - start, device=depth.device)[:, None] * size
            x0 = (pixels[..., 0] - 0.5).floor().long()
            y0 = (pixels[..., 1] - 0.5).floor().long()
            ok = (self.on_image(pixels) & (depth > 0)).reshape(-1)
            d = depth.reshape(-1)
            near_view, far_view = near[start:stop].view(-1), far[start:stop].view(-1)
            for dy in (0, 1):
                for dx in (0, 1):
                    x, y = (x0 + dx).clamp(0, self.width - 1), (y0 + dy).clamp(0, self.height - 1)
                    flat = torch.where(ok, (base + y * self.width + x).reshape(-1), 0)
                    near_view.scatter_reduce_(0, flat, torch.where(ok, d, math.inf), reduce="amin")
                    far_view.scatter_reduce_(0, flat, torch.where(ok, d, -math.inf), reduce="amax")
        return near, far

    def at_pixels(self, buffers: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """[N, P] values of per-view `buffers` [N, h * w] at each point's own pixel `pixels` [N, P, 2]."""
        own = pixels[..., 1].long().clamp(0, self.height - 1) * self.width
        own = own + pixels[..., 0].long().clamp(0, self.width - 1)
        return torch.gather(buffers, 1, own)

    def _grid(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.stack([2 * pixels[..., 0] / self.width - 1, 2 * pixels[..., 1] / self.height - 1], dim=-1)

    def sample(self, image: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Bilinear samples [N, P] of per-view `image` [N, h, w] at `pixels` [N, P, 2]."""
        grid = self._grid(pixels)[:, None]
        return F.grid_sample(image[:, None], grid, mode="bilinear", align_corners=False)[:, 0, 0]

    def sample_rgb(self, pixels: torch.Tensor) -> torch.Tensor:
        grid = self._grid(pixels)[:, None]
        out = F.grid_sample(self.rgb, grid, mode="bilinear", align_corners=False)  # [N, 3, 1, P]
        return out[:, :, 0].permute(0, 2, 1)
