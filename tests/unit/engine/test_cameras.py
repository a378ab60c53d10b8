"""Cameras: clip-space projection agrees with the pinhole model of the capture (OpenGL c2w)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon_worker.capture import Intrinsics
from recon_worker.engine.cameras import make_cameras, scaled_intrinsics
from recon_worker.engine.synth import look_at

K = Intrinsics(fx=120.0, fy=110.0, cx=70.0, cy=40.0, width=128, height=96)


def test_clip_space_matches_the_pinhole_projection() -> None:
    c2w = np.stack([look_at(np.array([0.5, 1.0, 3.0])), look_at(np.array([-2.0, 0.3, -1.5]))])
    cams = make_cameras(K, c2w, near=0.1, far=10.0)
    points = torch.tensor([[0.1, 0.2, -0.3], [0.0, 0.0, 0.0], [-0.4, 0.1, 0.2]])
    clip = cams.to_clip(points)  # [2, 3, 4]
    ndc = clip[..., :3] / clip[..., 3:]
    for b in range(2):
        cam = (np.linalg.inv(c2w[b]) @ np.c_[points.numpy(), np.ones(3)].T).T
        depth = -cam[:, 2]
        u = K.fx * cam[:, 0] / depth + K.cx
        v = K.cy - K.fy * cam[:, 1] / depth  # rows grow downwards
        np.testing.assert_allclose((ndc[b, :, 0].numpy() + 1) / 2 * K.width, u, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose((ndc[b, :, 1].numpy() + 1) / 2 * K.height, v, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(clip[b, :, 3].numpy(), depth, rtol=1e-5)
    # Nearer points have smaller depth in NDC, inside (-1, 1).
    assert torch.all(ndc[..., 2].abs() < 1)


def test_depth_planes_enclose_the_object_by_default() -> None:
    c2w = np.stack([look_at(d * 4.0) for d in np.eye(3)])
    cams = make_cameras(K, c2w)
    ndc_z = (lambda c: c[..., 2] / c[..., 3])(cams.to_clip(torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])))
    assert torch.all(ndc_z.abs() < 1)


def test_scaled_intrinsics_keep_the_field_of_view() -> None:
    small = scaled_intrinsics(K, 64)
    assert (small.width, small.height) == (64, 48)
    assert small.fx / small.width == pytest.approx(K.fx / K.width)
    assert small.cy / small.height == pytest.approx(K.cy / K.height)
