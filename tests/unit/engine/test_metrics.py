"""Image and geometric metrics of `engine.metrics` against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh

from recon_worker.engine.meshcheck import check_mesh
from recon_worker.engine.metrics import (
    GateResult,
    QualityMetrics,
    geometry_metrics,
    mask_iou,
    over_white,
    psnr,
    ssim,
    view_metrics,
)


def flat(value: float, shape: tuple[int, ...] = (32, 32, 3)) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


# --- image metrics ---------------------------------------------------------------------------------


def test_psnr_of_a_uniform_error_of_0_1_is_20_db() -> None:
    assert psnr(flat(0.5), flat(0.6)) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01


def test_psnr_of_identical_images_is_infinite() -> None:
    assert psnr(flat(0.3), flat(0.3)) == math.inf


def test_psnr_of_error_in_a_quarter_of_the_pixels() -> None:
    target = flat(0.0)
    pred = target.copy()
    pred[:16, :16] = 1.0  # a quarter of the pixels off by 1 -> MSE 0.25 -> 10 log10(4)
    assert psnr(pred, target) == pytest.approx(10 * math.log10(4), abs=1e-6)


def test_ssim_of_identical_images_is_one() -> None:
    image = np.random.default_rng(0).random((48, 48, 3))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-9)


def test_ssim_of_two_constant_images_is_the_luminance_term() -> None:
    # No variance and no covariance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = 0.01^2.
    a, b, c1 = 0.2, 0.7, 1e-4
    assert ssim(flat(a), flat(b)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-4)  # float32


def test_ssim_falls_with_noise_and_is_symmetric() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((64, 64, 3)) * 0.5 + 0.25
    noisy = np.clip(image + rng.normal(0, 0.1, image.shape), 0, 1)
    very_noisy = np.clip(image + rng.normal(0, 0.3, image.shape), 0, 1)
    assert 1.0 > ssim(noisy, image) > ssim(very_noisy, image) > 0.0
    assert ssim(noisy, image) == pytest.approx(ssim(image, noisy), abs=1e-12)


def test_ssim_agrees_with_scikit_image() -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(2)
    image = ndimage_smooth(rng.random((80, 80, 3)))
    noisy = np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1)
    reference = structural_similarity(
        noisy, image, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
    )
    # scikit-image leaves out a 5-pixel border; ours reflects it: the two means differ only slightly.
    assert ssim(noisy, image) == pytest.approx(reference, abs=0.01)


def ndimage_smooth(image: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(image, sigma=(2, 2, 0))


def test_mask_iou_of_two_overlapping_squares() -> None:
    a, b = np.zeros((10, 10)), np.zeros((10, 10))
    a[0:4, 0:4] = 1.0  # 16 pixels
    b[2:6, 0:4] = 0.9  # 16 pixels, 8 shared
    assert mask_iou(a, b) == pytest.approx(8 / 24)
    assert mask_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_over_white_and_view_metrics() -> None:
    rgba = np.zeros((8, 8, 4), np.float32)
    rgba[..., 0] = 1.0
    rgba[:4, :, 3] = 1.0  # top half red and opaque, bottom half transparent
    composite = over_white(rgba)
    assert composite[0, 0].tolist() == [1.0, 0.0, 0.0] and composite[7, 7].tolist() == [1.0, 1.0, 1.0]
    (metrics,) = view_metrics(["test/r_0.png"], composite[None], rgba[None, ..., 3], rgba[None])
    assert metrics.psnr == 100.0 and metrics.mask_iou == 1.0 and metrics.ssim == pytest.approx(1.0)


# --- geometric metrics -----------------------------------------------------------------------------


def square(z: float = 0.0, x_max: float = 1.0) -> trimesh.Trimesh:
    """The square [0, x_max] x [0, 1] at height z, two triangles."""
    vertices = np.array([[0, 0, z], [x_max, 0, z], [x_max, 1, z], [0, 1, z]], dtype=float)
    return trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], process=False)


def test_parallel_squares_chamfer_is_their_distance() -> None:
    # Every point of one square is exactly 0.003 from the other; GT bbox diagonal is sqrt(2).
    metrics = geometry_metrics(square(0.003), square(0.0), samples=5000)
    assert metrics.chamfer_l1 == pytest.approx(100 * 0.003 / math.sqrt(2), rel=1e-6)
    assert metrics.fscore == 1.0  # 0.003 < tau = 0.005 * sqrt(2)
    assert metrics.normal_consistency == pytest.approx(1.0)


def test_squares_farther_apart_than_the_threshold_score_zero() -> None:
    metrics = geometry_metrics(square(0.02), square(0.0), samples=5000)
    assert metrics.fscore == 0.0 and metrics.precision == 0.0 and metrics.recall == 0.0


def test_half_square_misses_half_of_the_ground_truth() -> None:
    # Result covers x in [0, 0.5]: precision 1; GT points with x > 0.5 are (x - 0.5) away, mean 0.25
    # over that half -> completeness 0.125, accuracy 0 -> Chamfer 0.0625 / sqrt(2).
    # Recall = P(x < 0.5 + tau) = 0.5 + 0.005 sqrt(2).
    metrics = geometry_metrics(square(0.0, x_max=0.5), square(0.0), samples=40_000)
    assert metrics.chamfer_l1 == pytest.approx(100 * 0.0625 / math.sqrt(2), rel=0.03)
    assert metrics.precision == 1.0
    recall = 0.5 + 0.005 * math.sqrt(2)
    assert metrics.recall == pytest.approx(recall, abs=0.01)
    assert metrics.fscore == pytest.approx(2 * recall / (1 + recall), abs=0.01)


def test_chamfer_splits_into_accuracy_and_completeness_and_a_labelled_visible_part() -> None:
    # As above; the ground truth's half x > 0.5 is "unseen": over the seen half the result is complete.
    seen_half = lambda points: points[:, 0] < 0.5  # noqa: E731
    metrics = geometry_metrics(square(0.0, x_max=0.5), square(0.0), samples=40_000, visible=seen_half)
    assert metrics.accuracy == pytest.approx(0.0, abs=1e-9)
    assert metrics.completeness == pytest.approx(100 * 0.125 / math.sqrt(2), rel=0.03)
    assert metrics.chamfer_l1 == pytest.approx(0.5 * (metrics.accuracy + metrics.completeness))
    assert metrics.visible_share == pytest.approx(0.5, abs=0.01)
    assert metrics.completeness_visible == pytest.approx(0.0, abs=1e-9)
    assert metrics.chamfer_l1_visible == pytest.approx(0.0, abs=1e-9) and metrics.fscore_visible == 1.0
    # Without a visibility function the labelled figures stay empty.
    plain = geometry_metrics(square(0.0, x_max=0.5), square(0.0), samples=2000)
    assert plain.visible_share is None and plain.chamfer_l1_visible is None


def test_perpendicular_squares_have_no_normal_consistency() -> None:
    upright = square(0.0)
    upright.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [1, 0, 0]))
    assert geometry_metrics(upright, square(0.0), samples=2000).normal_consistency == pytest.approx(0.0, abs=1e-9)


def test_identical_spheres_score_perfectly_and_a_scaled_one_by_its_offset() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    same = geometry_metrics(sphere, sphere, samples=5000)
    assert same.chamfer_l1 < 1e-6 and same.fscore == 1.0
    bigger = sphere.copy()
    bigger.apply_scale(1.01)  # every point moves ~0.01 outwards; diagonal 2 sqrt(3)
    scaled = geometry_metrics(bigger, sphere, samples=5000)
    assert scaled.chamfer_l1 == pytest.approx(100 * 0.01 / (2 * math.sqrt(3)), rel=0.05)


# --- the metrics.json contract ---------------------------------------------------------------------


def test_quality_metrics_round_trip_and_status_keys() -> None:
    checks = check_mesh(trimesh.creation.box())
    metrics = QualityMetrics(
        psnr=31.5,
        ssim=0.97,
        mask_iou=0.99,
        faces=12,
        vertices=8,
        watertight=True,
        manifold=True,
        renderer="pytorch3d",
        checks=checks,
        gates=GateResult(passed=True, enforced=False),
    )
    text = metrics.model_dump_json(by_alias=True)
    assert '"maskIoU":0.99' in text and '"chamferL1":null' in text and '"normalConsistency":null' in text
    assert QualityMetrics.model_validate_json(text) == metrics
    assert metrics.status_metrics() == {
        "psnr": 31.5, "ssim": 0.97, "maskIoU": 0.99, "faces": 12, "vertices": 8, "watertight": True,
    }  # fmt: skip
