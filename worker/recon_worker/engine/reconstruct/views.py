"""Masks and cameras of the training views, as the reconstructors read them (torch, on one device)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recon_worker.capture import Capture, Intrinsics
from recon_worker.errors import InputsInvalid


@dataclass
class SilhouetteViews:
    alpha: torch.Tensor  # [N, H, W] float in [0, 1], object masks
    c2w: torch.Tensor  # [N, 4, 4] camera-to-world, OpenGL axes
    intrinsics: Intrinsics
    rgb: torch.Tensor | None = None  # [N, H, W, 3] straight colour in [0, 1], for photo-consistency backends

    @classmethod
    def from_capture(
        cls, capture: Capture, device: torch.device | str = "cpu", *, with_color: bool = False
    ) -> SilhouetteViews:
        masks = capture.load_masks("train")  # [N, H, W] uint8: a quarter of float32 on the host
        if len(masks) == 0:
            raise InputsInvalid(f"{capture.root}: the capture has no training views")
        alpha = torch.as_tensor(masks, device=device).to(torch.float32).div_(255.0)
        c2w = torch.as_tensor(capture.poses("train"), dtype=torch.float32, device=device)
        rgb = None
        if with_color:  # [N, H, W, 3] in [0, 1], converted on the device from the uint8 views
            rgb = torch.as_tensor(capture.load_images("train", np.uint8)[..., :3], device=device).float().div_(255.0)
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

    def sample(self, image: torch.Tensor, pixels: torch.Tensor, outside: float) -> torch.Tensor:
        """Bilinear samples [N, P] of per-view `image` [N, H, W] at `pixels` [N, P, 2]; `outside` off-image."""
        k = self.intrinsics
        grid = torch.stack([2 * pixels[..., 0] / k.width - 1, 2 * pixels[..., 1] / k.height - 1], dim=-1)
        values = F.grid_sample(image[:, None], grid[:, None], mode="bilinear", align_corners=False)[:, 0, 0]
        off = (grid.abs() > 1).any(dim=-1)
        return torch.where(off, torch.full_like(values, outside), values)

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
