"""How far recovered camera poses are from the true ones, up to the similarity SfM cannot know.

Structure from motion recovers cameras up to a rotation, translation and scale of the whole rig; the
error is measured after the least-squares similarity (Umeyama) that maps the recovered camera centres
onto the true ones. For benchmarks and tests of `recon_worker.poses` against synthetic captures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PoseError:
    centre_rms: float  # camera-centre RMS error after alignment, in units of the mean camera distance
    rotation_deg: float  # mean angle between aligned and true camera orientations, degrees


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale s, rotation R [3, 3] and translation t [3] minimising |s R src + t - dst|^2 ([N, 3] each)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.eye(3)
    d[2, 2] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(sigma) @ d) / a.var(axis=0).sum())
    return scale, rotation, mu_d - scale * rotation @ mu_s


def pose_error(recovered: np.ndarray, truth: np.ndarray) -> PoseError:
    """Both [N, 4, 4] camera-to-world (same axes convention), in the same order."""
    scale, rotation, translation = umeyama(recovered[:, :3, 3], truth[:, :3, 3])
    centres = scale * recovered[:, :3, 3] @ rotation.T + translation
    distance = float(np.linalg.norm(truth[:, :3, 3] - truth[:, :3, 3].mean(axis=0), axis=1).mean())
    rms = float(np.sqrt(((centres - truth[:, :3, 3]) ** 2).sum(axis=1).mean())) / max(distance, 1e-12)
    angles = []
    for r, t in zip(recovered[:, :3, :3], truth[:, :3, :3], strict=True):
        delta = (rotation @ r).T @ t
        angles.append(np.degrees(np.arccos(np.clip((np.trace(delta) - 1) / 2, -1.0, 1.0))))
    return PoseError(rms, float(np.mean(angles)))
