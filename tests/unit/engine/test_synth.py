"""Synthetic captures: loadable, consistent cameras, noise only where asked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from recon_worker.capture import Intrinsics, load_capture
from recon_worker.cli import main as cli_main
from recon_worker.engine.synth import (
    CAMERA_ANGLE_X,
    SynthOptions,
    fibonacci_sphere,
    load_scene_mesh,
    look_at,
    render_views,
    synthesize,
)
from tests.conftest import MESHES

SPOT = MESHES / "spot" / "spot.obj"


def project(points: np.ndarray, c2w: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """[N, 2] pixel (x, y) of world points seen by an OpenGL camera (looks down -Z)."""
    cam = (np.linalg.inv(c2w) @ np.c_[points, np.ones(len(points))].T).T[:, :3]
    depth = -cam[:, 2]
    return np.stack([fx * cam[:, 0] / depth + cx, cy - fy * cam[:, 1] / depth], axis=-1)


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(SPOT, out, SynthOptions(views=6, test_views=2, resolution=48, supersample=1, specular=0.5))
    return out


def test_synth_writes_a_loadable_nerf_synthetic_capture(capture_dir: Path) -> None:
    capture = load_capture(capture_dir)
    assert len(capture.indices("train")) == 6
    assert len(capture.indices("test")) == 2
    assert (capture.intrinsics.width, capture.intrinsics.height) == (48, 48)
    assert capture.ground_truth == capture_dir / "ground_truth.obj"
    doc = json.loads((capture_dir / "transforms_train.json").read_text())
    assert "camera_angle_x" in doc
    images = capture.load_images("train")
    assert images.shape == (6, 48, 48, 4)
    # Every view sees the object, not the whole frame, with soft (antialiased) edges.
    coverage = (images[..., 3] > 0.5).mean(axis=(1, 2))
    assert np.all(coverage > 0.05) and np.all(coverage < 0.8)
    assert np.any((images[..., 3] > 0.05) & (images[..., 3] < 0.95))


def test_ground_truth_projects_inside_the_masks(capture_dir: Path) -> None:
    capture = load_capture(capture_dir)
    gt = trimesh.load(capture.ground_truth, process=False)
    assert gt.is_watertight
    extent = gt.bounds[1] - gt.bounds[0]
    assert extent.max() == pytest.approx(2.0, rel=1e-3)
    k = capture.intrinsics
    alphas = capture.load_images("train")[..., 3]
    for c2w, alpha in zip(capture.poses("train"), alphas, strict=True):
        xy = project(np.asarray(gt.vertices), c2w, k.fx, k.fy, k.cx, k.cy)
        cols = np.clip(np.floor(xy[:, 0]).astype(int), 0, k.width - 1)
        rows = np.clip(np.floor(xy[:, 1]).astype(int), 0, k.height - 1)
        # Within one pixel: thin parts (horns) can fall between pixel centres at this tiny size.
        near_mask = ndimage.maximum_filter(alpha, size=3) > 0.0
        assert near_mask[rows, cols].mean() > 0.995
        # And the mask is not much larger than the projected mesh: its bounding box matches.
        mask_rows, mask_cols = np.nonzero(alpha > 0.5)
        assert abs(mask_rows.min() - xy[:, 1].min()) < 2.5 and abs(mask_cols.max() - xy[:, 0].max()) < 2.5


def test_pose_noise_changes_only_the_written_poses(tmp_path: Path) -> None:
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    options = SynthOptions(views=3, test_views=1, resolution=32, supersample=1)
    synthesize(SPOT, clean, options)
    synthesize(SPOT, noisy, SynthOptions(views=3, test_views=1, resolution=32, supersample=1, pose_noise=2.0))
    a, b = load_capture(clean), load_capture(noisy)
    np.testing.assert_array_equal(a.load_images("train"), b.load_images("train"))
    rotation = a.poses("train")[:, :3, :3].transpose(0, 2, 1) @ b.poses("train")[:, :3, :3]
    angles = np.degrees(np.arccos(np.clip((np.trace(rotation, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    np.testing.assert_allclose(angles, 2.0, atol=1e-3)
    np.testing.assert_array_equal(a.poses("test"), b.poses("test"))


def test_cameras_look_at_the_origin_from_the_sphere() -> None:
    points = fibonacci_sphere(50)
    np.testing.assert_allclose(np.linalg.norm(points, axis=-1), 1.0, atol=1e-9)
    assert np.abs(points.mean(axis=0)).max() < 0.05
    c2w = look_at(points[7] * 4.0)
    np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-9)
    # The camera's -Z axis points at the origin.
    np.testing.assert_allclose(-c2w[:3, 2], -points[7], atol=1e-9)


def test_synth_cli_reports_a_mesh_without_texture(tmp_path: Path) -> None:
    plain = tmp_path / "box.obj"
    trimesh.creation.box().export(plain)
    assert (
        cli_main(["synth", "--mesh", str(plain), "--views", "2", "--resolution", "16", "--output", str(tmp_path / "o")])
        == 2
    )


STOOL = MESHES / "painted_wooden_stool" / "painted_wooden_stool.glb"


def two_box_scene(path: Path) -> None:
    """A GLB scene in centimetres: a red-textured box and, 6 cm to its right, a blue metallic one."""
    from PIL import Image

    red = trimesh.creation.box(extents=(0.04, 0.04, 0.04))
    texture = Image.fromarray(np.tile(np.array([200, 30, 30], np.uint8), (8, 8, 1)))
    red.visual = trimesh.visual.TextureVisuals(
        uv=np.random.default_rng(0).uniform(0.2, 0.8, size=(len(red.vertices), 2)),
        material=trimesh.visual.material.PBRMaterial(baseColorTexture=texture, metallicFactor=0.0, roughnessFactor=0.8),
    )
    blue = trimesh.creation.box(extents=(0.04, 0.04, 0.04))
    blue.visual = trimesh.visual.TextureVisuals(
        uv=np.zeros((len(blue.vertices), 2)),
        material=trimesh.visual.material.PBRMaterial(
            baseColorFactor=[30, 30, 220, 255], metallicFactor=1.0, roughnessFactor=0.3
        ),
    )
    scene = trimesh.Scene()
    scene.add_geometry(red, node_name="red", transform=trimesh.transformations.translation_matrix((-0.03, 0, 0)))
    scene.add_geometry(blue, node_name="blue", transform=trimesh.transformations.translation_matrix((0.03, 0, 0)))
    scene.export(path)


def test_synth_renders_every_mesh_of_a_glb_scene_with_its_own_material(tmp_path: Path) -> None:
    path = tmp_path / "boxes.glb"
    two_box_scene(path)
    # Seen from +z: the red box (at -x in the file) on the left, the blue one on the right.
    scene = load_scene_mesh(path)
    assert len(scene.materials) == 2 and scene.materials[1].metal_rough is not None
    extent = scene.verts.max(axis=0) - scene.verts.min(axis=0)
    assert extent.max() == pytest.approx(2.0, rel=1e-6)  # 10 cm of scene scaled to the capture's 2 units
    size = 64
    focal = 0.5 * size / np.tan(0.5 * CAMERA_ANGLE_X)
    poses = np.stack([look_at(np.array([0.0, 0.5, 4.0]))])
    image = render_views(
        scene, poses, Intrinsics(focal, focal, size / 2, size / 2, size, size), SynthOptions(supersample=1)
    )[0]
    covered = image[..., 3] > 0.99
    left, right = covered.copy(), covered.copy()
    left[:, size // 2 :], right[:, : size // 2] = False, False
    red_side, blue_side = image[left][:, :3].mean(axis=0), image[right][:, :3].mean(axis=0)
    assert red_side[0] > 2 * red_side[2]
    assert blue_side[2] > 2 * blue_side[0]
    assert left.sum() > 100 and right.sum() > 100


def test_synth_of_a_glb_file_keeps_the_authored_open_surface_as_ground_truth(tmp_path: Path) -> None:
    synthesize(STOOL, tmp_path, SynthOptions(views=3, test_views=1, resolution=48, supersample=1))
    capture = load_capture(tmp_path)
    gt = trimesh.load(capture.ground_truth, process=False)
    assert not gt.is_watertight  # the stool as authored: open edges, not closed by the renderer
    assert len(gt.faces) == 676
    assert (gt.bounds[1] - gt.bounds[0]).max() == pytest.approx(2.0, rel=1e-3)
    k = capture.intrinsics
    images = capture.load_images("train")
    for c2w, alpha in zip(capture.poses("train"), images[..., 3], strict=True):
        xy = project(np.asarray(gt.vertices), c2w, k.fx, k.fy, k.cx, k.cy)
        cols = np.clip(np.floor(xy[:, 0]).astype(int), 0, k.width - 1)
        rows = np.clip(np.floor(xy[:, 1]).astype(int), 0, k.height - 1)
        assert (ndimage.maximum_filter(alpha, size=3) > 0.0)[rows, cols].mean() > 0.99
    # Lit and textured: the painted wood is neither black nor flat.
    rgb = images[..., :3][images[..., 3] > 0.99]
    assert 0.1 < rgb.mean() < 0.9 and rgb.std() > 0.02
