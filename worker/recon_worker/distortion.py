"""Lens distortion: the camera models of nerfstudio / COLMAP captures, and undistortion to a pinhole.

A capture may name `camera_model` (globally or per frame) with distortion coefficients: `OPENCV`
(radial `k1`, `k2`, optional `k3`, tangential `p1`, `p2`) or `OPENCV_FISHEYE` (equidistant, `k1`-`k4`).
The engine models pinhole cameras only, so a distorted capture is resampled once, after fetch, onto an
undistorted pinhole camera (`undistort_image`); `distort_image` is its inverse, used to make test
captures with known distortion.

Pixel conventions: intrinsics follow COLMAP and this project (the top-left pixel's centre is at
(0.5, 0.5)); OpenCV puts it at (0, 0), so the principal point is shifted by half a pixel for OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from recon_worker.capture import Intrinsics

CameraModel = Literal["PINHOLE", "OPENCV", "OPENCV_FISHEYE"]
# Accepted `camera_model` names -> the model they mean (SIMPLE_PINHOLE only differs in fx == fy).
CAMERA_MODELS: dict[str, CameraModel] = {
    "PINHOLE": "PINHOLE",
    "SIMPLE_PINHOLE": "PINHOLE",
    "OPENCV": "OPENCV",
    "OPENCV_FISHEYE": "OPENCV_FISHEYE",
}
COEFFICIENTS: dict[CameraModel, tuple[str, ...]] = {
    "PINHOLE": (),
    "OPENCV": ("k1", "k2", "p1", "p2", "k3"),
    "OPENCV_FISHEYE": ("k1", "k2", "k3", "k4"),
}


class UnknownCameraModel(ValueError):
    """A `camera_model` this worker cannot undistort (the capture is invalid)."""


@dataclass(frozen=True)
class Lens:
    """A camera model and its coefficients; all zero coefficients mean no distortion."""

    model: CameraModel = "PINHOLE"
    coefficients: tuple[float, ...] = ()  # in COEFFICIENTS[model] order

    @property
    def distorted(self) -> bool:
        return any(c != 0.0 for c in self.coefficients)


def lens_from_meta(meta: dict, fallback: dict | None = None) -> Lens:
    """The lens of a frame (`meta`), its missing keys taken from the file's top level (`fallback`).

    Raises UnknownCameraModel naming the model, or ValueError naming a coefficient that is not a number.
    """
    fallback = fallback or {}

    def get(key: str, default: object = None) -> object:
        return meta.get(key, fallback.get(key, default))

    name = get("camera_model", "PINHOLE")
    if not isinstance(name, str) or name.upper() not in CAMERA_MODELS:
        known = ", ".join(CAMERA_MODELS)
        raise UnknownCameraModel(f"camera_model {name!r} is not supported (known: {known})")
    model = CAMERA_MODELS[name.upper()]
    values = []
    for key in COEFFICIENTS[model]:
        value = get(key, 0.0)
        if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
            raise ValueError(f"{key} of camera_model {model} must be a finite number, not {value!r}")
        values.append(float(value))
    return Lens(model, tuple(values))


def _camera_matrix(k: Intrinsics) -> np.ndarray:
    """[3, 3] OpenCV camera matrix (pixel centres at integers)."""
    return np.array([[k.fx, 0.0, k.cx - 0.5], [0.0, k.fy, k.cy - 0.5], [0.0, 0.0, 1.0]])


def _grid(k: Intrinsics) -> np.ndarray:
    """[H*W, 1, 2] float64 OpenCV pixel coordinates of every pixel of an image of `k`'s size."""
    ys, xs = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)[:, None, :]


def _remap(image: np.ndarray, map_xy: np.ndarray, interpolation: int) -> np.ndarray:
    import cv2

    map_x = np.ascontiguousarray(map_xy[..., 0], dtype=np.float32)
    map_y = np.ascontiguousarray(map_xy[..., 1], dtype=np.float32)
    # Outside the source image: zero, i.e. black and (for alpha or masks) not the object.
    return cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def undistort_map(source: Intrinsics, lens: Lens, target: Intrinsics) -> np.ndarray:
    """[H_t, W_t, 2] source-image pixel (OpenCV) for each pixel of the undistorted `target` camera."""
    import cv2

    k_src, k_dst = _camera_matrix(source), _camera_matrix(target)
    size = (target.width, target.height)
    eye = np.eye(3)
    if lens.model == "OPENCV_FISHEYE":
        d = np.array(lens.coefficients, dtype=np.float64)
        map_x, map_y = cv2.fisheye.initUndistortRectifyMap(k_src, d, eye, k_dst, size, cv2.CV_32FC1)
    else:
        c = dict(zip(COEFFICIENTS[lens.model], lens.coefficients, strict=True))
        d = np.array([c.get("k1", 0), c.get("k2", 0), c.get("p1", 0), c.get("p2", 0), c.get("k3", 0)], np.float64)
        map_x, map_y = cv2.initUndistortRectifyMap(k_src, d, eye, k_dst, size, cv2.CV_32FC1)
    return np.stack([map_x, map_y], axis=-1)


def distort_map(source: Intrinsics, lens: Lens, target: Intrinsics) -> np.ndarray:
    """[H_t, W_t, 2] pixel of the pinhole `source` image seen by each pixel of the distorted `target`."""
    import cv2

    k_src, k_dst = _camera_matrix(source), _camera_matrix(target)
    points = _grid(target)
    if lens.model == "OPENCV_FISHEYE":
        d = np.array(lens.coefficients, dtype=np.float64)
        normalised = cv2.fisheye.undistortPoints(points, k_dst, d)
    else:
        c = dict(zip(COEFFICIENTS[lens.model], lens.coefficients, strict=True))
        d = np.array([c.get("k1", 0), c.get("k2", 0), c.get("p1", 0), c.get("p2", 0), c.get("k3", 0)], np.float64)
        # Iterative inversion; the default 5 iterations leave visible error at strong distortion.
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9)
        normalised = cv2.undistortPoints(points, k_dst, d, R=None, P=None, criteria=criteria)
    xy = normalised[:, 0, :] @ k_src[:2, :2].T + k_src[:2, 2]
    return xy.reshape(target.height, target.width, 2)


def undistort_image(image: np.ndarray, source: Intrinsics, lens: Lens, target: Intrinsics) -> np.ndarray:
    """Resample `image` [H, W, C] (or [H, W]), taken with `source` and `lens`, onto the pinhole `target`."""
    import cv2

    return _remap(image, undistort_map(source, lens, target), cv2.INTER_LINEAR)


def distort_image(image: np.ndarray, source: Intrinsics, lens: Lens, target: Intrinsics) -> np.ndarray:
    """What a camera with `target` intrinsics and `lens` sees of the pinhole picture `image` of `source`."""
    import cv2

    return _remap(image, distort_map(source, lens, target), cv2.INTER_LINEAR)
