"""Pose error up to a similarity: zero for a transformed copy, positive for a perturbed one."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from recon_worker.engine.pose_error import pose_error
from recon_worker.engine.synth import fibonacci_sphere, look_at


def test_a_similar_rig_has_no_error_and_a_perturbed_one_has_some() -> None:
    truth = np.stack([look_at(p * 4.0) for p in fibonacci_sphere(12)])
    similarity = np.eye(4)
    similarity[:3, :3] = 0.3 * Rotation.from_euler("xyz", [20, -40, 75], degrees=True).as_matrix()
    similarity[:3, 3] = [5.0, -2.0, 1.0]
    moved = similarity @ truth
    moved[:, :3, :3] /= 0.3  # camera-to-world rotations stay rotations; only the centres scale
    error = pose_error(moved, truth)
    assert error.centre_rms < 1e-9 and error.rotation_deg < 1e-6
    noisy = moved.copy()
    noisy[0, :3, :3] = Rotation.from_euler("y", 10, degrees=True).as_matrix() @ noisy[0, :3, :3]
    assert 0.5 < pose_error(noisy, truth).rotation_deg < 1.0  # 10 degrees on one of 12 cameras
