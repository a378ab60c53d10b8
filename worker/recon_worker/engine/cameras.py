"""Pinhole cameras as clip-space projections for the rasterizers (torch, batched).

Input conventions are the capture's: `c2w` is camera-to-world with OpenGL camera axes (the camera
looks down -Z, +Y up, +X right); intrinsics are pixels of the images as stored. Output clip space
follows `engine.render.base`: x right and y DOWN the image after the perspective divide, so row 0
of a rendered image is the top row, as in the capture's PNGs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recon_worker.capture import Intrinsics


@dataclass(frozen=True)
class Cameras:
    """A batch of B cameras that share one image size."""

    c2w: torch.Tensor  # [B, 4, 4] float32, camera-to-world, OpenGL axes
    proj: torch.Tensor  # [B, 4, 4] float32, camera-to-clip
    resolution: tuple[int, int]  # (H, W) pixels of the images these cameras render

    @property
    def mvp(self) -> torch.Tensor:
        """[B, 4, 4] world-to-clip."""
        return self.proj @ torch.linalg.inv(self.c2w)

    @property
    def centers(self) -> torch.Tensor:
        """[B, 3] camera positions in world coordinates."""
        return self.c2w[:, :3, 3]

    def __len__(self) -> int:
        return int(self.c2w.shape[0])

    def __getitem__(self, index: slice | torch.Tensor | list[int]) -> Cameras:
        return Cameras(self.c2w[index], self.proj[index], self.resolution)

    def to_clip(self, verts: torch.Tensor) -> torch.Tensor:
        """World positions [V, 3] (or [B, V, 3]) -> clip positions [B, V, 4]."""
        homo = torch.cat([verts, torch.ones_like(verts[..., :1])], dim=-1)
        if homo.dim() == 2:
            return torch.einsum("bij,vj->bvi", self.mvp, homo)
        return torch.einsum("bij,bvj->bvi", self.mvp, homo)

    def to_camera(self, verts: torch.Tensor) -> torch.Tensor:
        """World positions [V, 3] -> camera-space positions [B, V, 3] (OpenGL axes; depth is -z)."""
        homo = torch.cat([verts, torch.ones_like(verts[..., :1])], dim=-1)
        return torch.einsum("bij,vj->bvi", torch.linalg.inv(self.c2w), homo)[..., :3]


def scaled_intrinsics(intrinsics: Intrinsics, longest_side: int) -> Intrinsics:
    """The same cameras for images resized so that their longest side is `longest_side` pixels."""
    scale = longest_side / max(intrinsics.width, intrinsics.height)
    width = max(1, round(intrinsics.width * scale))
    height = max(1, round(intrinsics.height * scale))
    sx, sy = width / intrinsics.width, height / intrinsics.height
    return Intrinsics(intrinsics.fx * sx, intrinsics.fy * sy, intrinsics.cx * sx, intrinsics.cy * sy, width, height)


def projection_matrix(intrinsics: Intrinsics, near: float, far: float) -> np.ndarray:
    """[4, 4] camera-to-clip (OpenGL depth range), with image y growing downwards in NDC."""
    w, h = intrinsics.width, intrinsics.height
    # Pixel centres sit at half-integers: x_ndc = 2 * (fx * x / depth + cx) / W - 1, depth = -z.
    return np.array(
        [
            [2 * intrinsics.fx / w, 0.0, -(2 * intrinsics.cx / w - 1), 0.0],
            [0.0, -2 * intrinsics.fy / h, -(2 * intrinsics.cy / h - 1), 0.0],
            [0.0, 0.0, -(far + near) / (far - near), -2 * far * near / (far - near)],
            [0.0, 0.0, -1.0, 0.0],
        ]
    )


def default_depth_range(c2w: np.ndarray) -> tuple[float, float]:
    """Near and far planes from the cameras' distance to the world origin (object-centred captures).

    They depend on the whole rig's scale only, never on which cameras are in a batch, so every batch of
    a capture renders with the same depth mapping; the wide ratio costs nothing with one mesh in view.
    """
    scale = float(np.linalg.norm(c2w[:, :3, 3], axis=-1).max())
    scale = scale if scale > 1e-6 else 1.0
    return 0.01 * scale, 100.0 * scale


def make_cameras(
    intrinsics: Intrinsics,
    c2w: np.ndarray | torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    near: float | None = None,
    far: float | None = None,
) -> Cameras:
    """Batched cameras from shared intrinsics and camera-to-world poses `c2w` [B, 4, 4].

    Without `near`/`far`, `default_depth_range` picks planes from the rig's scale.
    """
    poses = c2w.detach().cpu().numpy() if isinstance(c2w, torch.Tensor) else np.asarray(c2w, dtype=np.float64)
    if poses.ndim == 2:
        poses = poses[None]
    auto_near, auto_far = default_depth_range(poses)
    near = auto_near if near is None else near
    far = auto_far if far is None else far
    proj = np.broadcast_to(projection_matrix(intrinsics, near, far), (len(poses), 4, 4))
    return Cameras(
        c2w=torch.as_tensor(poses, dtype=torch.float32, device=device),
        proj=torch.tensor(np.array(proj), dtype=torch.float32, device=device),
        resolution=(intrinsics.height, intrinsics.width),
    )
