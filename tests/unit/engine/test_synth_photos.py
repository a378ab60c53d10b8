"""Turntable poses for the photo captures (`engine.synth_photos`)."""

from __future__ import annotations

import numpy as np

from recon_worker.engine.synth_photos import turntable_poses


def test_turntable_poses_ring_around_the_object() -> None:
    poses = turntable_poses(8)
    assert poses.shape == (8, 4, 4)
    centres = poses[:, :3, 3]
    assert np.allclose(np.linalg.norm(centres, axis=1), np.linalg.norm(centres[0]))


def test_no_views_is_an_empty_stack() -> None:
    # The SfM benchmark shoots without held-out views; numpy cannot stack nothing.
    assert turntable_poses(0).shape == (0, 4, 4)
