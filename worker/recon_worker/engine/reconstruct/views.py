"""Masks and cameras of the training views, as the reconstructors read them (torch, on one device).

Memory: the views are kept as uint8 (a quarter of float32) and turned into floats a batch of views at a
time; whatever holds one value per (view, point) is computed for a chunk of points sized so that views x
points stays under POINT_VIEW_VALUES (`points_per_chunk`). So the cost per view is its pixels (1 byte each,
3 more with colour), not a share of the grid: before, a chunk was 2^18 points whatever the views, and
each view cost ~10 MB of [N, P] temporaries (2,002 views of 16² took 21 GB, issue 11).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recon_worker.capture import Capture, Intrinsics
from recon_worker.errors import InputsInvalid

POINT_VIEW_VALUES = 1 << 22  # views x points of one chunk on the CPU: ~16 MiB per [N, P] float tensor
# On a GPU the chunk may be larger (fewer, fuller kernels): up to 128 views it is the 2^18 points it always
# was, and a chunk's temporaries stay about 2 GB of device memory whatever the number of views.
CUDA_POINT_VIEW_VALUES = 1 << 25
MAX_CHUNK_POINTS = 1 << 18
FLOAT_BATCH_VALUES = 1 << 24  # pixels of the views turned into floats at once (64 MiB of float32)
VIEWS_PER_LOAD = 8  # views decoded at once while loading


@dataclass
class SilhouetteViews:
    alpha: torch.Tensor  # [N, H, W] object masks: uint8 (0-255, as stored) or float in [0, 1]
    c2w: torch.Tensor  # [N, 4, 4] camera-to-world, OpenGL axes
    intrinsics: Intrinsics
    rgb: torch.Tensor | None = None  # [N, H, W, 3] straight colour, uint8 or float in [0, 1] (photo-consistency)

    @classmethod
    def from_capture(
        cls, capture: Capture, device: torch.device | str = "cpu", *, with_color: bool = False
    ) -> SilhouetteViews:
        """The training views' masks (and colours), decoded a few at a time into uint8 tensors on `device`."""
        indices = capture.indices("train")
        if not indices:
            raise InputsInvalid(f"{capture.root}: the capture has no training views")
        k = capture.intrinsics
        alpha = torch.empty((len(indices), k.height, k.width), dtype=torch.uint8, device=device)
        rgb = (
            torch.empty((len(indices), k.height, k.width, 3), dtype=torch.uint8, device=device) if with_color else None
        )
        start = 0
        for _, batch in capture.iter_views("train", VIEWS_PER_LOAD):  # [B, H, W, 4] uint8
            stop = start + len(batch)
            stored = torch.as_tensor(batch, device=device)
            alpha[start:stop] = stored[..., 3]
            if rgb is not None:
                rgb[start:stop] = stored[..., :3]
            start = stop
        c2w = torch.as_tensor(capture.poses("train"), dtype=torch.float32, device=device)
        return cls(alpha=alpha, c2w=c2w, intrinsics=capture.intrinsics, rgb=rgb)

    @classmethod
    def from_arrays(
        cls,
        alpha: np.ndarray,
        c2w: np.ndarray,
        intrinsics: Intrinsics,
        device: torch.device | str = "cpu",
        *,
        rgb: np.ndarray | None = None,
    ) -> SilhouetteViews:
        return cls(
            alpha=torch.as_tensor(np.ascontiguousarray(alpha), dtype=torch.float32, device=device),
            c2w=torch.as_tensor(np.asarray(c2w), dtype=torch.float32, device=device),
            intrinsics=intrinsics,
            rgb=None if rgb is None else torch.as_tensor(np.ascontiguousarray(rgb), dtype=torch.float32, device=device),
        )

    @property
    def device(self) -> torch.device:
        return self.alpha.device

    def __len__(self) -> int:
        return int(self.alpha.shape[0])

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points [P, 3] -> pixel coordinates [N, P, 2] (x right, y down) and depth [N, P]."""
        w2c = torch.linalg.inv(self.c2w)  # [N, 4, 4]
        cam = torch.einsum("nij,pj->npi", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
        depth = -cam[..., 2]
        k = self.intrinsics
        safe = depth.clamp(min=1e-6)
        x = k.fx * cam[..., 0] / safe + k.cx
        y = k.cy - k.fy * cam[..., 1] / safe
        return torch.stack([x, y], dim=-1), depth

    def point_view_values(self) -> int:
        """How many (view, point) values one chunk may hold on this device."""
        return CUDA_POINT_VIEW_VALUES if self.device.type == "cuda" else POINT_VIEW_VALUES

    def points_per_chunk(self) -> int:
        """Points to evaluate at once so that [views, points] tensors stay bounded (`point_view_values`)."""
        return max(256, min(MAX_CHUNK_POINTS, self.point_view_values() // max(len(self), 1)))

    def sample(self, image: torch.Tensor, pixels: torch.Tensor, outside: float) -> torch.Tensor:
        """Bilinear samples [N, P] of per-view `image` [N, H, W] (uint8 reads as /255) at `pixels` [N, P, 2];
        `outside` off-image. The image is turned into floats a batch of views at a time."""
        k = self.intrinsics
        grid = torch.stack([2 * pixels[..., 0] / k.width - 1, 2 * pixels[..., 1] / k.height - 1], dim=-1)
        values = torch.empty(grid.shape[:2], dtype=torch.float32, device=grid.device)  # [N, P]
        step = max(1, FLOAT_BATCH_VALUES // max(k.width * k.height, 1))
        for start in range(0, len(image), step):
            batch = as_unit_float(image[start : start + step])[:, None]  # [n, 1, H, W]
            sampled = F.grid_sample(batch, grid[start : start + step, None], mode="bilinear", align_corners=False)
            values[start : start + step] = sampled[:, 0, 0]
        off = (grid.abs() > 1).any(dim=-1)
        return values.masked_fill_(off, outside)

    def in_view_count(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """[P] how many views see each point inside their image, in front of the camera."""
        k = self.intrinsics
        inside = (
            (pixels[..., 0] >= 0) & (pixels[..., 0] <= k.width) & (pixels[..., 1] >= 0) & (pixels[..., 1] <= k.height)
        )
        return (inside & (depth > 0)).sum(dim=0)

    def look_at_point(self) -> torch.Tensor:
        """[3] the point nearest (least squares) to every camera's optical axis: the object's centre."""
        origins = self.c2w[:, :3, 3].double()
        dirs = -self.c2w[:, :3, 2].double()
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        proj = torch.eye(3, dtype=torch.float64, device=self.device) - dirs[:, :, None] * dirs[:, None, :]
        a = proj.sum(dim=0)
        b = (proj @ origins[:, :, None]).sum(dim=0)
        return torch.linalg.lstsq(a, b).solution[:, 0].float()


def as_unit_float(values: torch.Tensor) -> torch.Tensor:
    """float32 in [0, 1]: uint8 divided by 255, floats as they are."""
    return values.float().div_(255.0) if values.dtype == torch.uint8 else values.float()
