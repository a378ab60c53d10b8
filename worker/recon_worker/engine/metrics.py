"""Quality metrics of a reconstruction, and the `validate/metrics.json` contract that carries them.

Image metrics compare a rendered held-out view with the captured one, both composited over a white
background: PSNR (dB, data range 1), SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
K1 = 0.01, K2 = 0.03, averaged over RGB) and silhouette IoU (alpha thresholded at 0.5).

Geometric metrics compare the result with a ground-truth mesh, from points sampled uniformly on
both surfaces. Distances are point-to-SURFACE (each sample to the nearest point of the other
triangle mesh), so the figure does not carry the spacing of a point sample as a bias:

- Chamfer-L1: mean of the two directed mean distances, in percent of the ground truth's
  bounding-box diagonal. Its two halves are reported too: accuracy (result -> ground truth: surface
  that is not there) and completeness (ground truth -> result: authored surface the result misses).
- Visible ground truth (labelled as such, never in place of the figures above): where the validate
  stage can tell which ground-truth samples at least one training view sees, completeness, recall,
  Chamfer and F are also given over those samples alone. Authored surface that no view can see
  (a cup's inside under its lid, the underside of a car) cannot be reconstructed from the capture;
  the gap between the two figures says how much of the error that is.
- F-score at tau = 0.5 % of that diagonal: harmonic mean of precision (result samples within tau
  of the ground truth) and recall (ground-truth samples within tau of the result).
- Normal consistency: mean |cos| between the normals of each sample and of its nearest point on the
  other surface, averaged over both directions (orientation-agnostic, as in Occupancy Networks).

Importing this module does not import PyTorch (SSIM imports it when called), so the runtime can read
the models cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import trimesh
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from scipy.spatial import cKDTree

from recon_worker.engine.meshcheck import MeshChecks

# F-score threshold as a fraction of the ground-truth bounding-box diagonal.
FSCORE_THRESHOLD = 0.005
# Surface samples per mesh for the geometric metrics (the mean distance of 50k exact point-to-surface
# distances varies by well under 1 % between seeds).
GEOMETRY_SAMPLES = 50_000
# Nearest samples whose triangles give the first upper bound of the point-to-surface distance.
_CANDIDATES = 3


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# --------------------------------------------------------------------------------------------------
# Image metrics


def over_white(rgba: np.ndarray) -> np.ndarray:
    """[..., H, W, 4] straight-alpha RGBA in [0, 1] -> [..., H, W, 3] RGB composited over white."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    return rgb * alpha + (1.0 - alpha)


def psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of two [H, W, C] images in [0, 1]; infinite for identical images."""
    mse = float(np.mean((prediction.astype(np.float64) - target.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * float(np.log10(1.0 / mse))


def ssim_batch(prediction: Any, target: Any, device: str = "cpu") -> np.ndarray:
    """[N] mean SSIM of [N, H, W, C] images in [0, 1] (11x11 Gaussian window, sigma 1.5, reflected borders).

    Separable convolutions in PyTorch on `device` (the renderer's: the GPU in production); the images
    may be numpy arrays or tensors (tensors already on `device` are not copied).
    """
    import torch
    import torch.nn.functional as F

    c1, c2 = 0.01**2, 0.03**2
    taps = torch.arange(11, dtype=torch.float32, device=device) - 5
    kernel = torch.exp(-(taps**2) / (2 * 1.5**2))
    kernel = kernel / kernel.sum()
    n, h, w, c = prediction.shape
    # Every channel of every image is one single-channel plane: [N*C, 1, H, W].
    x = torch.as_tensor(np.ascontiguousarray(prediction) if isinstance(prediction, np.ndarray) else prediction)
    y = torch.as_tensor(np.ascontiguousarray(target) if isinstance(target, np.ndarray) else target)
    x = x.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2).reshape(n * c, 1, h, w)
    y = y.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2).reshape(n * c, 1, h, w)

    def blur(img: torch.Tensor) -> torch.Tensor:
        img = F.pad(img, (5, 5, 5, 5), mode="reflect")
        return F.conv2d(F.conv2d(img, kernel.view(1, 1, 1, 11)), kernel.view(1, 1, 11, 1))

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    result: np.ndarray = (num / den).reshape(n, c * h * w).mean(dim=1).double().cpu().numpy()
    return result


def ssim(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM of two [H, W, C] images in [0, 1]."""
    return float(ssim_batch(prediction[None], target[None])[0])


def mask_iou(prediction: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of two [H, W] coverage maps (alpha) thresholded at `threshold`; 1 when both are empty."""
    a, b = prediction > threshold, target > threshold
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def error_map(prediction: np.ndarray, target: np.ndarray, max_error: float = 0.25) -> np.ndarray:
    """[H, W, 3] uint8 heat map of the per-pixel RGB error (black 0 -> red -> yellow at `max_error`)."""
    err = np.clip(np.abs(prediction - target).mean(axis=-1) / max_error, 0.0, 1.0)  # [H, W]
    heat = np.stack([np.clip(2 * err, 0, 1), np.clip(2 * err - 1, 0, 1), np.zeros_like(err)], axis=-1)
    return (heat * 255 + 0.5).astype(np.uint8)


class ViewMetrics(_Model):
    """Image metrics of one held-out view."""

    image: str = Field(description="Capture image, relative to the capture root.")
    psnr: float = Field(description="dB, capped at 100 (identical images).")
    ssim: float
    mask_iou: float = Field(alias="maskIoU")


# PSNR of a view is capped here: identical images (infinite PSNR) must still serialise as a number.
PSNR_CAP = 100.0


def view_metrics(
    images: list[str],
    rendered_rgb: Any,
    rendered_alpha: Any,
    captured_rgba: Any,
    device: str = "cpu",
) -> list[ViewMetrics]:
    """Compare renders ([N, H, W, 3] over white, [N, H, W] coverage) with captured [N, H, W, 4] RGBA views.

    Arrays or tensors (captured views may be uint8); everything is computed on `device` in PyTorch,
    and only N numbers per figure come back (at 800² and 200 held-out views, the numpy version of
    these figures was most of validate's 12.9 s on the H200's host).
    """
    import torch

    if not len(images):
        return []

    def on_device(values: Any) -> torch.Tensor:
        tensor = torch.as_tensor(np.ascontiguousarray(values) if isinstance(values, np.ndarray) else values)
        tensor = tensor.to(device)
        return tensor.float() / 255 if tensor.dtype == torch.uint8 else tensor.float()

    captured = on_device(captured_rgba)
    rgb, alpha = on_device(rendered_rgb), on_device(rendered_alpha)
    target = captured[..., :3] * captured[..., 3:] + (1.0 - captured[..., 3:])  # over white
    mse = ((rgb.double() - target.double()) ** 2).flatten(1).mean(dim=1)
    a, b = alpha > 0.5, captured[..., 3] > 0.5
    union = (a | b).flatten(1).sum(dim=1)
    iou = torch.where(union == 0, torch.ones_like(mse), (a & b).flatten(1).sum(dim=1).double() / union.clamp(min=1))
    ssims = ssim_batch(rgb, target, device)
    mse_h, iou_h = mse.cpu().numpy(), iou.cpu().numpy()
    return [
        ViewMetrics(
            image=name,
            psnr=PSNR_CAP if mse_h[k] == 0 else min(10.0 * float(np.log10(1.0 / mse_h[k])), PSNR_CAP),
            ssim=float(ssims[k]),
            mask_iou=float(iou_h[k]),
        )
        for k, name in enumerate(images)
    ]


# --------------------------------------------------------------------------------------------------
# Geometric metrics


class GeometryMetrics(_Model):
    chamfer_l1: float = Field(alias="chamferL1", description="Percent of the ground truth's bbox diagonal.")
    fscore: float = Field(alias="fScore", description=f"At {FSCORE_THRESHOLD * 100:g} % of the diagonal.")
    precision: float
    recall: float
    normal_consistency: float
    accuracy: float | None = Field(None, description="Mean result -> ground truth distance, % of the diagonal.")
    completeness: float | None = Field(None, description="Mean ground truth -> result distance, % of the diagonal.")
    visible_share: float | None = Field(
        None, alias="visibleGTShare", description="Share of ground-truth samples some training view sees."
    )
    completeness_visible: float | None = Field(None, description="Completeness over the visible GT samples only.")
    chamfer_l1_visible: float | None = Field(
        None, alias="chamferL1Visible", description="(accuracy + visible completeness) / 2, % of the diagonal."
    )
    fscore_visible: float | None = Field(None, alias="fScoreVisible", description="F with recall on visible GT.")


class SurfaceSamples:
    """Uniform samples of a triangle mesh with their face normals, and an exact point-to-surface query."""

    def __init__(self, mesh: trimesh.Trimesh, count: int, seed: int) -> None:
        self.mesh = mesh
        points, face_index = trimesh.sample.sample_surface(mesh, count, seed=seed)
        self.points: np.ndarray = np.asarray(points, dtype=np.float64)  # [N, 3]
        self.normals: np.ndarray = mesh.face_normals[face_index]  # [N, 3]
        self.face_index: np.ndarray = np.asarray(face_index)  # [N]
        self._tree = cKDTree(self.points)
        triangles = np.asarray(mesh.triangles)  # [F, 3, 3]
        self._centroids = triangles.mean(axis=1)  # [F, 3]
        # Radius of each triangle's bounding sphere about its centroid.
        self._radius = np.linalg.norm(triangles - self._centroids[:, None], axis=2).max(axis=1)  # [F]
        self._centroid_tree = cKDTree(self._centroids)

    def closest_points(self, queries: np.ndarray, exact: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each query [Q, 3]: distance [Q] to this surface, the face [Q] and point [Q, 3] reached.

        The faces of the nearest samples give an upper bound d. With `exact`, any closer triangle
        (its centroid lies within d + its bounding radius of the query) is checked as well; without,
        the bound is returned (close enough where samples are much denser than triangles).
        """
        k = min(_CANDIDATES, len(self.points))
        _, idx = self._tree.query(queries, k=k)  # [Q, k]
        faces = self.face_index[np.asarray(idx).reshape(len(queries), k)]  # [Q, k]
        repeated = np.repeat(queries, k, axis=0)  # [Q*k, 3]
        nearest = trimesh.triangles.closest_point(self.mesh.triangles[faces.ravel()], repeated)  # [Q*k, 3]
        dist = np.linalg.norm(nearest - repeated, axis=1).reshape(len(queries), k)
        rows = np.arange(len(queries))
        best = dist.argmin(axis=1)
        best_dist = dist[rows, best]
        best_face = faces[rows, best]
        best_point = nearest.reshape(len(queries), k, 3)[rows, best]

        if not exact:
            return best_dist, best_face, best_point
        hits = self._centroid_tree.query_ball_point(queries, r=best_dist + self._radius.max(), return_sorted=False)
        counts = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(queries))
        if counts.sum() == 0:
            return best_dist, best_face, best_point
        query = np.repeat(rows, counts)  # [M]
        face = np.fromiter((f for h in hits for f in h), dtype=np.int64, count=int(counts.sum()))  # [M]
        reach = np.linalg.norm(self._centroids[face] - queries[query], axis=1) <= best_dist[query] + self._radius[face]
        query, face = query[reach], face[reach]
        point = trimesh.triangles.closest_point(self.mesh.triangles[face], queries[query])
        d = np.linalg.norm(point - queries[query], axis=1)
        better = d < best_dist[query]
        # Keep, for each query, the candidate with the smallest distance (sorted so the last write wins).
        order = np.lexsort((-d[better], query[better]))
        q, f, p, dd = query[better][order], face[better][order], point[better][order], d[better][order]
        best_dist[q], best_face[q], best_point[q] = dd, f, p
        return best_dist, best_face, best_point


def _closest_on_device(
    queries: np.ndarray, target: SurfaceSamples | _Samples, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """Distance and face of the point of `target`'s mesh nearest each query, on a torch device."""
    import torch

    from recon_worker.engine.surface_distance import closest_points

    def t(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

    with torch.no_grad():
        dist, face, _ = closest_points(
            t(queries), t(np.asarray(target.mesh.triangles)), t(target.points), t(target.face_index, torch.long)
        )
    return dist.double().cpu().numpy(), face.cpu().numpy()


class _Samples:
    """Uniform surface samples without the CPU search structures (the GPU path needs none)."""

    def __init__(self, mesh: trimesh.Trimesh, count: int, seed: int) -> None:
        self.mesh = mesh
        points, face_index = trimesh.sample.sample_surface(mesh, count, seed=seed)
        self.points: np.ndarray = np.asarray(points, dtype=np.float64)
        self.normals: np.ndarray = mesh.face_normals[face_index]
        self.face_index: np.ndarray = np.asarray(face_index)


def geometry_metrics(
    result: trimesh.Trimesh,
    ground_truth: trimesh.Trimesh,
    samples: int = GEOMETRY_SAMPLES,
    seed: int = 0,
    device: str = "cpu",
    visible: Callable[[np.ndarray], np.ndarray] | None = None,
) -> GeometryMetrics:
    """Chamfer-L1, F-score and normal consistency of `result` against `ground_truth` (see module doc).

    `visible` maps ground-truth sample points [N, 3] to [N] bool (seen by some training view); when
    given, the visible-GT figures are filled in as well.

    On a CUDA `device` the point-to-surface queries run in PyTorch (`engine.surface_distance`: an
    upper bound that equals the exact distance when the nearest triangle is among its candidates);
    elsewhere on the CPU, exactly (KD-trees).
    """
    diagonal = float(np.linalg.norm(ground_truth.bounds[1] - ground_truth.bounds[0]))
    if diagonal <= 0 or not np.isfinite(diagonal):
        raise ValueError("ground-truth mesh has an empty or non-finite bounding box")
    if device.startswith("cuda"):
        pred_s, gt_s = _Samples(result, samples, seed), _Samples(ground_truth, samples, seed + 1)
        d_pred, f_gt = _closest_on_device(pred_s.points, gt_s, device)
        d_gt, f_pred = _closest_on_device(gt_s.points, pred_s, device)
        pred_normals, gt_normals = pred_s.normals, gt_s.normals
        gt_points = gt_s.points
    else:
        pred = SurfaceSamples(result, samples, seed)
        gt = SurfaceSamples(ground_truth, samples, seed + 1)
        d_pred, f_gt, _ = gt.closest_points(pred.points)  # result -> ground truth (accuracy)
        d_gt, f_pred, _ = pred.closest_points(gt.points)  # ground truth -> result (completeness)
        pred_normals, gt_normals = pred.normals, gt.normals
        gt_points = gt.points
    n_at_gt, n_at_pred = ground_truth.face_normals[f_gt], result.face_normals[f_pred]
    tau = FSCORE_THRESHOLD * diagonal
    precision = float(np.mean(d_pred < tau))
    recall = float(np.mean(d_gt < tau))
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    nc_pred = np.abs(np.sum(pred_normals * n_at_gt, axis=1)).mean()
    nc_gt = np.abs(np.sum(gt_normals * n_at_pred, axis=1)).mean()
    accuracy = 100.0 * float(d_pred.mean()) / diagonal
    completeness = 100.0 * float(d_gt.mean()) / diagonal
    metrics = GeometryMetrics(
        chamfer_l1=0.5 * (accuracy + completeness),
        fscore=fscore,
        precision=precision,
        recall=recall,
        normal_consistency=0.5 * float(nc_pred + nc_gt),
        accuracy=accuracy,
        completeness=completeness,
    )
    if visible is not None:
        seen = np.asarray(visible(gt_points), dtype=bool)
        if seen.any():
            completeness_visible = 100.0 * float(d_gt[seen].mean()) / diagonal
            recall_visible = float(np.mean(d_gt[seen] < tau))
            total = precision + recall_visible
            metrics.visible_share = float(seen.mean())
            metrics.completeness_visible = completeness_visible
            metrics.chamfer_l1_visible = 0.5 * (accuracy + completeness_visible)
            metrics.fscore_visible = 0.0 if total == 0 else 2 * precision * recall_visible / total
    return metrics


# --------------------------------------------------------------------------------------------------
# The validate/metrics.json contract


class GateResult(_Model):
    passed: bool
    enforced: bool
    failures: list[str] = Field(default_factory=list, description="One message per failed gate.")


class ReferenceMetrics(_Model):
    """The mesh against a reference capture's views (`engine.reference`), after the similarity that maps
    this capture's cameras onto the reference's: the fair comparison for estimated poses."""

    psnr: float | None = Field(None, description="Mean PSNR (dB) of the reference's views over white.")
    ssim: float | None = None
    mask_iou: float | None = Field(None, alias="maskIoU")
    view_split: Literal["test", "train"] = Field(
        "test", description="The reference's views compared: its test split, or its training views without one."
    )
    matched_frames: int = Field(description="Frames both captures have: the similarity is fitted on them.")
    scale: float = Field(description="Reference units per capture unit (the similarity's scale).")
    centre_error: float = Field(
        description="Camera-centre RMS error after the similarity, relative to the reference's mean camera distance."
    )
    rotation_error_deg: float = Field(description="Mean camera orientation error after the similarity, degrees.")
    views: list[ViewMetrics] = Field(default_factory=list, description="Per reference view.")


class QualityMetrics(_Model):
    """`validate/metrics.json`: flat figures the runtime copies to `status.metrics`, plus details.

    The figures describe the mesh that `export` writes (validate decimates to the target first).
    Geometric figures are None when the capture has no ground truth.
    """

    psnr: float | None = Field(None, description="Mean PSNR (dB) of held-out views over white; None without any.")
    ssim: float | None = None
    mask_iou: float | None = Field(None, alias="maskIoU")
    chamfer_l1: float | None = Field(None, alias="chamferL1", description="Percent of the GT bbox diagonal.")
    fscore: float | None = Field(None, alias="fScore", description="At 0.5 % of the GT bbox diagonal.")
    normal_consistency: float | None = None
    faces: int
    vertices: int
    watertight: bool
    manifold: bool
    renderer: str = Field(description="Renderer backend that produced the image metrics.")
    view_split: Literal["test", "train"] = Field(
        "test", description="Views compared: the held-out test split, or the training views when there is none."
    )
    checks: MeshChecks
    gates: GateResult
    views: list[ViewMetrics] = Field(default_factory=list, description="Per held-out view.")
    geometry: GeometryMetrics | None = None
    reference: ReferenceMetrics | None = Field(None, description="Against a reference capture, when one is given.")

    def status_metrics(self) -> dict[str, float | int | bool]:
        """The flat camelCase figures for `status.metrics` (None values left out)."""
        keys = ("psnr", "ssim", "mask_iou", "chamfer_l1", "fscore", "faces", "vertices", "watertight")
        dumped = self.model_dump(by_alias=True, include=set(keys))
        return {k: v for k, v in dumped.items() if v is not None}
