"""`density-field`: a density + colour voxel grid fitted to the photos by volume rendering, carving the hull.

Silhouettes cannot see a concavity; photo-consistency tests (`photo-hull`) cannot see one whose false
surface happens to agree within a tolerance (flat glaze, flat paint). A field fitted by volume rendering
has no tolerance: it must reproduce every pixel of every view, and a lid over a cup cannot, because
each view sees a different point of the cavity behind it, differently *shaded* as well as coloured
(the walls of a white cup face other lights than its rim). Where the field puts its surfaces is then
the evidence: what a camera sees through is empty. The field is the voxel-grid radiance field of
DVGO (Sun et al., CVPR 2022) and Plenoxels (Fridovich-Keil et al., CVPR 2022), rendered as in NeRF
(Mildenhall et al., ECCV 2020), bounded by the hull.

1. The visual hull's grid and soft occupancy (`hull_occupancy`): outside the hull the density is 0
   (the masks prove that space empty), inside it starts low and uniform (no surface preferred).
2. A density grid and a colour grid (view-independent: a highlight has no per-voxel term to hide
   in, and the robust loss below lets it go instead of turning it into geometry), trilinear
   (`grid_sample`), rendered by alpha compositing along the rays of random pixels from all views, a
   batch of rays at a time (memory bounded by `rays` x samples). Loss: Charbonnier colour error on
   premultiplied colour, the opacity against the mask, total variation of the density.
   Coarse to fine: the first `coarse_fraction` of the steps on a grid of half the resolution.
3. Extraction by visibility, not by a density level: the density behind an opaque surface gets no
   gradient and is arbitrary (a level set of it would be full of voids), so each view's depth map of
   the fitted field (where the accumulated opacity crosses 0.5) carves the hull: a voxel is empty when
   at least `min_views` views see it, inside their mask, more than `margin` voxels in front of what
   they see. Marching cubes runs on min(hull occupancy, 1 - carve): never outside the hull, so the
   silhouettes are kept, and unseen insides stay solid.

Images are area-downsampled to about one pixel per voxel (a finer picture tells a voxel grid nothing),
so the cost does not grow with the capture's resolution.

The margin (3.5 voxels) and `min_views` (3) were chosen on the CPU measurements of docs/geometry.md:
the fitted surfaces are a few voxels of fog deep, so a smaller margin carves into true surfaces (spot,
the torus), a larger one carves less of a cup. Limits measured there: the bottom of a cup stays foggy
(4x the steps hardly change it), so about a third of its cavity is carved and the Chamfer distance gets
worse, not better; the tea set's small white cups are not carved at 96³. On the H200 (192³-256³, 512²
photos) it carves the fill between the toy car and its cloth and the stool's seat underside (Chamfer
-16 to -20 % against the hull), not the tea set's cups; it is the `high` preset's backend.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
import trimesh

from recon_worker.engine.reconstruct.grid import Grid, kth_smallest, surface
from recon_worker.engine.reconstruct.views import FLOAT_BATCH_VALUES, SilhouetteViews, as_unit_float
from recon_worker.engine.reconstruct.visual_hull import hull_occupancy

log = logging.getLogger(__name__)

RENDER_RAYS = 1 << 14  # rays per chunk when rendering depth maps (no gradient)


class DensityField:
    name = "density-field"
    needs_color = True

    def __init__(
        self,
        outlier_fraction: float = 0.0,
        steps: int | None = None,
        rays: int | None = None,
        learning_rate: float = 0.3,
        coarse_fraction: float = 0.7,
        opacity_weight: float = 1.0,
        tv_weight: float = 0.01,
        initial_alpha: float = 0.002,
        min_views: int = 3,
        margin: float = 3.5,
        depth_level: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.outlier_fraction = outlier_fraction
        self.steps = steps
        self.rays = rays
        self.learning_rate = learning_rate
        self.coarse_fraction = coarse_fraction
        self.opacity_weight = opacity_weight
        self.tv_weight = tv_weight
        self.initial_alpha = initial_alpha
        self.min_views = min_views
        self.margin = margin
        self.depth_level = depth_level
        self.seed = seed
        # Of the last call, for the stage's info.json.
        self.carved_voxels = 0
        self.final_loss = math.nan
        self.fit_seconds = 0.0

    def __call__(self, views: SilhouetteViews, resolution: int) -> trimesh.Trimesh:
        if views.rgb is None:
            raise ValueError(
                "density-field needs the views' colours (SilhouetteViews.from_capture(..., with_color=True))"
            )
        grid, occupancy = hull_occupancy(views, resolution, self.outlier_fraction)
        carve = self.carve(views, grid, occupancy)
        volume = torch.minimum(occupancy, 1.0 - carve)
        self.carved_voxels = int(((occupancy > 0.5) & (volume <= 0.5)).sum())
        log.info(
            "density-field: carved %d of %d hull voxels (fit %.1f s, loss %.4f)",
            self.carved_voxels,
            int((occupancy > 0.5).sum()),
            self.fit_seconds,
            self.final_loss,
        )
        return surface(-volume, grid, -0.5)

    def carve(self, views: SilhouetteViews, grid: Grid, occupancy: torch.Tensor) -> torch.Tensor:
        """[Z, Y, X] in [0, 1]: how surely the fitted field's views see through each voxel of `grid`."""
        images = _Images.build(views, grid)
        field = self.fit(images, grid, occupancy)
        depth = images.depth_maps(field, grid, self.depth_level)  # [N, h, w]
        return _seen_through(images, grid, depth, self.min_views, self.margin)

    def fit(self, images: _Images, grid: Grid, occupancy: torch.Tensor) -> _Field:
        """The density and colour grids fitted to `images` (rendering is differentiable in both)."""
        start = time.perf_counter()
        device = occupancy.device
        generator = torch.Generator(device=device).manual_seed(self.seed)
        cuda = device.type == "cuda"
        steps = self.steps if self.steps is not None else (2000 if cuda else 600)
        rays = self.rays if self.rays is not None else (1 << 16 if cuda else 2048)
        fine = tuple(occupancy.shape)  # (Z, Y, X)
        coarse = tuple(max(4, (s + 1) // 2) for s in fine)
        field = _Field.initial(occupancy, coarse, self.initial_alpha)
        optimiser = torch.optim.Adam(field.parameters(), lr=self.learning_rate)
        candidates = images.candidate_pixels()
        switch = int(self.coarse_fraction * steps)
        loss_value = torch.zeros((), device=device)
        for step in range(steps):
            if step == switch and coarse != fine:
                field = field.upsampled(fine)
                optimiser = torch.optim.Adam(field.parameters(), lr=self.learning_rate)
            pick = candidates[torch.randint(len(candidates), (rays,), device=device, generator=generator)]
            origins, directions, rgb, alpha = images.rays(pick)
            colour, opacity, _ = field.render(grid, origins, directions, jitter=generator)
            target = rgb * alpha[:, None]  # premultiplied: the background is black in both
            loss = _charbonnier(colour - target).mean() + self.opacity_weight * (opacity - alpha).square().mean()
            loss = loss + self.tv_weight * field.total_variation()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_value = loss.detach()
        self.final_loss = float(loss_value)
        self.fit_seconds = time.perf_counter() - start
        log.info(
            "density-field: %d steps of %d rays, loss %.4f, %.1f s", steps, rays, self.final_loss, self.fit_seconds
        )
        return field


def _charbonnier(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    # Robust (L1-like): a highlight seen in a few views costs little, so the field does not bend for it.
    return (x.square() + eps * eps).sqrt().sum(dim=-1)


class _Field:
    """Raw density [1, 1, Z, Y, X] (softplus, times the hull's occupancy) and colour [1, 3, Z, Y, X] (sigmoid)."""

    def __init__(self, density: torch.Tensor, colour: torch.Tensor, hull: torch.Tensor) -> None:
        self.density = density.requires_grad_(True)
        self.colour = colour.requires_grad_(True)
        self.hull = hull  # [1, 1, Z, Y, X] soft occupancy of the hull at this resolution

    @classmethod
    def initial(cls, occupancy: torch.Tensor, shape: tuple[int, ...], initial_alpha: float) -> _Field:
        hull = _resample(occupancy[None, None], shape)
        # softplus(raw) x one voxel = -ln(1 - initial_alpha): uniform, low opacity inside the hull (a ray
        # through the hull is not opaque yet: density grows first where the views agree, as in NeRF).
        sigma = -math.log(1.0 - initial_alpha)
        raw = math.log(math.expm1(sigma))
        density = torch.full_like(hull, raw)
        colour = torch.zeros((1, 3, *shape), device=occupancy.device)
        return cls(density, colour, hull.clamp(0, 1))

    def upsampled(self, shape: tuple[int, ...]) -> _Field:
        hull = _resample(self.hull, shape)
        with torch.no_grad():
            return _Field(_resample(self.density, shape), _resample(self.colour, shape), hull)

    def parameters(self) -> list[torch.Tensor]:
        return [self.density, self.colour]

    def voxel_scale(self, grid: Grid) -> float:
        """World units per voxel of this field (its grid covers the same box as `grid`)."""
        return grid.step * (grid.shape[0] - 1) / max(self.density.shape[-1] - 1, 1)

    def total_variation(self) -> torch.Tensor:
        d = self.density
        return (
            (d[..., 1:, :, :] - d[..., :-1, :, :]).square().mean()
            + (d[..., :, 1:, :] - d[..., :, :-1, :]).square().mean()
            + (d[..., :, :, 1:] - d[..., :, :, :-1]).square().mean()
        )

    def render(
        self,
        grid: Grid,
        origins: torch.Tensor,
        directions: torch.Tensor,
        jitter: torch.Generator | None = None,
        level: float = 0.5,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Premultiplied colour [R, 3], opacity [R] and the depth [R] where opacity crosses `level` (inf:
        never) of rays `origins` + t `directions` [R, 3] (unit directions, world units) through the grid's box."""
        step = self.voxel_scale(grid)  # one sample per voxel of the field (trilinear between)
        lo = grid.lo.to(origins) - 0.5 * grid.step
        hi = grid.lo.to(origins) + (torch.tensor(grid.shape, device=origins.device) - 0.5) * grid.step
        inv = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
        t0, t1 = (lo - origins) * inv, (hi - origins) * inv
        near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0)  # [R]
        far = torch.maximum(t0, t1).amin(dim=-1)  # [R]
        count = max(1, math.ceil(float((hi - lo).norm()) / step))
        offset = torch.arange(count, device=origins.device, dtype=origins.dtype)
        if jitter is not None:
            offset = offset + torch.rand(len(origins), 1, device=origins.device, generator=jitter)
        else:
            offset = (offset + 0.5).expand(len(origins), count)
        t = near[:, None] + offset * step  # [R, S]
        inside = t < far[:, None]
        points = origins[:, None] + t[..., None] * directions[:, None]  # [R, S, 3]
        # grid_sample's coordinates: x, y, z in [-1, 1] over the voxel centres (align_corners).
        extent = torch.tensor(grid.shape, device=origins.device, dtype=origins.dtype) - 1
        coords = 2 * (points - grid.lo.to(origins)) / (grid.step * extent) - 1
        values = torch.cat([self.density, self.colour, self.hull], dim=1)
        sampled = F.grid_sample(values, coords[None, None], mode="bilinear", padding_mode="zeros", align_corners=True)
        sampled = sampled[0, :, 0]  # [5, R, S]
        sigma = F.softplus(sampled[0]) * sampled[4].clamp(0, 1) * inside / self.voxel_scale(grid)
        optical = sigma * step  # [R, S]
        before = torch.cumsum(optical, dim=-1) - optical
        weights = torch.exp(-before) * (1 - torch.exp(-optical))  # [R, S]
        colour = (weights[..., None] * torch.sigmoid(sampled[1:4]).permute(1, 2, 0)).sum(dim=1)
        opacity = weights.sum(dim=-1)
        crossed = (before + optical) >= -math.log(1.0 - level)  # accumulated opacity >= level
        first = torch.where(crossed.any(dim=-1), crossed.float().argmax(dim=-1), -1)
        depth = torch.where(first >= 0, t.gather(1, first.clamp(min=0)[:, None])[:, 0], math.inf)
        return colour, opacity, depth


def _resample(volume: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return F.interpolate(volume, size=shape, mode="trilinear", align_corners=True)


class _Images:
    """The views area-downsampled to about one pixel per voxel: straight colour, alpha, cameras."""

    def __init__(self, views: SilhouetteViews, scale: float) -> None:
        assert views.rgb is not None
        k = views.intrinsics
        self.views = views
        self.height = max(8, round(k.height * scale))
        self.width = max(8, round(k.width * scale))
        self.sx, self.sy = self.width / k.width, self.height / k.height
        n, device = len(views), views.device
        self.alpha = torch.empty((n, self.height, self.width), device=device)  # [N, h, w]
        self.rgb = torch.empty((n, self.height, self.width, 3), device=device)  # [N, h, w, 3]
        step = max(1, FLOAT_BATCH_VALUES // max(4 * k.width * k.height, 1))
        for start in range(0, n, step):
            stop = min(start + step, n)
            alpha = as_unit_float(views.alpha[start:stop])[:, None]  # [b, 1, H, W]
            rgb = as_unit_float(views.rgb[start:stop]).permute(0, 3, 1, 2)  # [b, 3, H, W]
            small = F.interpolate(torch.cat([rgb * alpha, alpha], dim=1), size=(self.height, self.width), mode="area")
            self.alpha[start:stop] = small[:, 3]
            straight = (small[:, :3] / small[:, 3:].clamp(min=1e-4)).clamp(0, 1)
            self.rgb[start:stop] = straight.permute(0, 2, 3, 1)

    @classmethod
    def build(cls, views: SilhouetteViews, grid: Grid) -> _Images:
        k = views.intrinsics
        distance = float((views.c2w[:, :3, 3] - views.look_at_point()).norm(dim=-1).mean())
        voxel_px = 0.5 * (k.fx + k.fy) * grid.step / max(distance, 1e-9)
        return cls(views, min(1.0, 1.0 / max(voxel_px, 1e-9)))

    def candidate_pixels(self) -> torch.Tensor:
        """Flat indices (view, y, x) of the pixels worth a ray: the masks dilated by two pixels."""
        near = F.max_pool2d(self.alpha[:, None], 5, stride=1, padding=2)[:, 0] > 0
        return near.reshape(-1).nonzero()[:, 0]

    def rays(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Origins [R, 3], unit directions [R, 3], colour [R, 3] and alpha [R] of pixels `flat`."""
        size = self.height * self.width
        view, pixel = flat // size, flat % size
        y, x = pixel // self.width, pixel % self.width
        k = self.views.intrinsics
        # Pixel centres in the full-resolution camera; OpenGL camera axes (looks down -z, y up).
        u = (x.float() + 0.5) / self.sx
        v = (y.float() + 0.5) / self.sy
        cam = torch.stack([(u - k.cx) / k.fx, (k.cy - v) / k.fy, -torch.ones_like(u)], dim=-1)  # [R, 3]
        c2w = self.views.c2w[view]  # [R, 4, 4]
        directions = torch.einsum("rij,rj->ri", c2w[:, :3, :3], cam)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        return c2w[:, :3, 3], directions, self.rgb.view(-1, 3)[flat], self.alpha.view(-1)[flat]

    def depth_maps(self, field: _Field, grid: Grid, level: float) -> torch.Tensor:
        """[N, h, w] distance along each pixel's ray to where the field's opacity crosses `level` (inf: never
        or outside the mask)."""
        depth = torch.full((len(self.views), self.height, self.width), math.inf, device=self.alpha.device)
        flat = (self.alpha.reshape(-1) > 0.5).nonzero()[:, 0]
        with torch.no_grad():
            for start in range(0, len(flat), RENDER_RAYS):
                chunk = flat[start : start + RENDER_RAYS]
                origins, directions, _, _ = self.rays(chunk)
                depth.view(-1)[chunk] = field.render(grid, origins, directions, level=level)[2]
        return depth


def _seen_through(images: _Images, grid: Grid, depth: torch.Tensor, min_views: int, margin: float) -> torch.Tensor:
    """[Z, Y, X] in [0, 1]: the `min_views`-th largest, over the views, of how far in front of what the
    view sees each voxel lies (a soft step: 0.5 at `margin` voxels in front, 1 a voxel further)."""
    chunk = max(256, images.views.point_view_values() // max(len(images.views), 1))
    out = torch.empty(grid.size, device=depth.device)
    flat_depth = depth.reshape(len(depth), -1)
    for first in range(0, grid.size, chunk):
        points = grid.points(first, min(first + chunk, grid.size))  # [P, 3]
        pixels, _ = images.views.project(points)  # [N, P, 2], full-resolution pixels
        x = (pixels[..., 0] * images.sx).floor().long()
        y = (pixels[..., 1] * images.sy).floor().long()
        on = (x >= 0) & (x < images.width) & (y >= 0) & (y < images.height)
        own = (y.clamp(0, images.height - 1) * images.width + x.clamp(0, images.width - 1)).long()
        seen = torch.gather(flat_depth, 1, own)  # [N, P] depth of what the voxel's pixel sees
        distance = (points[None] - images.views.c2w[:, None, :3, 3]).norm(dim=-1)  # [N, P] along the ray
        # No evidence (off the image, outside the mask, or a ray that never turns opaque): inf depth
        # carves nothing, so those views count as "not seen through".
        ahead = torch.where(on & torch.isfinite(seen), (seen - distance) / grid.step - margin, -math.inf)
        free = torch.sigmoid(4.0 * ahead)  # [N, P]
        out[first : first + len(points)] = -kth_smallest(-free, min_views)
    return out.reshape(grid.shape[2], grid.shape[1], grid.shape[0])
