"""Synthetic captures: render a textured mesh into a NeRF-synthetic capture with known ground truth.

`recon-worker synth --mesh M.obj --views 100 --test-views 20 --resolution 512 --output DIR` writes

    DIR/train/r_<i>.png, DIR/test/r_<i>.png   RGBA (straight alpha), the object over transparency
    DIR/transforms_train.json, transforms_test.json   camera_angle_x + per-frame transform_matrix (c2w)
    DIR/ground_truth.obj                      the mesh in the capture's world coordinates

The object is centred and scaled so that its bounding box's longest side is `OBJECT_SIZE` world units;
cameras sit on a Fibonacci sphere of radius `CAMERA_DISTANCE` looking at the origin (train and test
use two different spirals). Shading is Lambertian (albedo from the texture) under fixed world-space
lights, plus an optional Blinn-Phong highlight of weight K, which depends on the view direction. Mask
noise (a smooth random warp of the alpha channel, PX pixels) and pose noise (a random rotation of
DEG degrees applied to each written camera orientation) touch the training views only, and only
what is written: the pictures are rendered from the true poses.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recon_worker.capture import Intrinsics

OBJECT_SIZE = 2.0  # longest side of the object's bounding box, world units
CAMERA_DISTANCE = 4.0  # camera to origin, world units (NeRF-synthetic uses 4.03)
CAMERA_ANGLE_X = 0.6911112070083618  # horizontal field of view, radians (NeRF-synthetic's value)
AMBIENT = 0.35
# Fixed world-space lights: (direction towards the light, intensity). Two keys and a weak fill from below.
LIGHTS: tuple[tuple[tuple[float, float, float], float], ...] = (
    ((0.5, 0.8, 0.6), 0.55),
    ((-0.7, 0.3, -0.4), 0.35),
    ((0.0, -1.0, 0.2), 0.15),
)
SHININESS = 40.0  # Blinn-Phong exponent of the optional highlight


@dataclass(frozen=True)
class SynthOptions:
    views: int = 100
    test_views: int = 20
    resolution: int = 512
    specular: float = 0.0  # weight K of the Blinn-Phong highlight (0: Lambertian only)
    mask_noise: float = 0.0  # pixels
    pose_noise: float = 0.0  # degrees
    supersample: int = 2  # render at this multiple of the resolution, then average down (antialiasing)
    seed: int = 0
    device: str = "cpu"
    renderer: str = "auto"
    batch: int = 4  # views rendered at once


def fibonacci_sphere(count: int, offset: float = 0.0) -> np.ndarray:
    """[count, 3] unit vectors spread evenly over the sphere; `offset` in [0, 1) shifts the spiral."""
    i = np.arange(count) + 0.5
    z = 1 - 2 * i / count
    radius = np.sqrt(np.clip(1 - z * z, 0, None))
    phi = math.pi * (3 - math.sqrt(5)) * np.arange(count) + 2 * math.pi * offset
    # y is "up" for the meshes we ship (Y-up OBJ files): spread the spiral's poles along +-y.
    return np.stack([radius * np.cos(phi), z, radius * np.sin(phi)], axis=-1)


def look_at(eye: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """[4, 4] camera-to-world (OpenGL axes: looks down -Z, +Y up) for a camera at `eye`."""
    target = np.zeros(3) if target is None else target
    back = eye - target
    back = back / np.linalg.norm(back)
    up = np.array([0.0, 1.0, 0.0]) if abs(back[1]) < 0.99 else np.array([0.0, 0.0, 1.0])
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    true_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w


def perturb_rotation(c2w: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """`c2w` with its orientation turned by `degrees` about a random axis through the camera centre."""
    from scipy.spatial.transform import Rotation

    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    out = c2w.copy()
    out[:3, :3] = Rotation.from_rotvec(axis * math.radians(degrees)).as_matrix() @ c2w[:3, :3]
    return out


def warp_alpha(alpha: np.ndarray, pixels: float, rng: np.random.Generator) -> np.ndarray:
    """Alpha [H, W] displaced by a smooth random field of about `pixels` pixels (segmentation error)."""
    from scipy import ndimage

    height, width = alpha.shape
    sigma = max(height, width) / 16  # wobbles about 1/8 of the image wide
    fields = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.normal(size=(height, width)), sigma)
        fields.append(field / (np.abs(field).max() + 1e-12) * pixels)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    return ndimage.map_coordinates(alpha, [rows + fields[0], cols + fields[1]], order=1, mode="nearest")


@dataclass
class SceneMesh:
    """The normalised object: welded geometry, per-corner UVs and the texture."""

    verts: np.ndarray  # [V, 3] float64, capture world coordinates
    faces: np.ndarray  # [F, 3] int64
    uv: np.ndarray  # [T, 2]
    uv_faces: np.ndarray  # [F, 3] indexes uv
    texture: np.ndarray  # [Ht, Wt, 3] float32 in [0, 1], row 0 the image top
    normals: np.ndarray  # [V, 3] smooth vertex normals


def load_scene_mesh(path: Path) -> SceneMesh:
    """Read a textured mesh (OBJ + material) and normalise it to the capture's world frame."""
    import trimesh

    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.to_mesh()
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ValueError(f"{path}: no triangle mesh inside")
    visual = loaded.visual
    uv = getattr(visual, "uv", None)
    image = getattr(getattr(visual, "material", None), "image", None)
    if uv is None or image is None:
        raise ValueError(f"{path}: the mesh has no texture (UVs and an image in its material are required)")
    texture = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    # Welding by position (UV seams split vertices in the file) gives one closed surface and smooth normals.
    welded = loaded.copy()
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    lo, hi = welded.bounds
    center, scale = (lo + hi) / 2, OBJECT_SIZE / float((hi - lo).max())
    verts = (welded.vertices - center) * scale
    normalised = trimesh.Trimesh(verts, welded.faces, process=False)
    return SceneMesh(
        verts=verts,
        faces=np.asarray(welded.faces, dtype=np.int64),
        uv=np.asarray(uv, dtype=np.float64),
        uv_faces=np.asarray(loaded.faces, dtype=np.int64),
        texture=texture,
        normals=np.asarray(normalised.vertex_normals),
    )


def render_views(scene: SceneMesh, poses: np.ndarray, intrinsics: Intrinsics, options: SynthOptions) -> np.ndarray:
    """[N, H, W, 4] straight-alpha RGBA float in [0, 1] of `scene` seen from `poses` [N, 4, 4]."""
    import torch
    import torch.nn.functional as F

    from recon_worker.engine.cameras import make_cameras
    from recon_worker.engine.render import get_renderer

    renderer = get_renderer(options.device, options.renderer)
    device = renderer.device
    ss = options.supersample
    big = Intrinsics(
        intrinsics.fx * ss, intrinsics.fy * ss, intrinsics.cx * ss, intrinsics.cy * ss,
        intrinsics.width * ss, intrinsics.height * ss,
    )  # fmt: skip
    verts = torch.tensor(scene.verts, dtype=torch.float32, device=device)
    faces = torch.tensor(scene.faces, dtype=torch.int32, device=device)
    normals = torch.tensor(scene.normals, dtype=torch.float32, device=device)
    uv = torch.tensor(scene.uv, dtype=torch.float32, device=device)
    uv_faces = torch.tensor(scene.uv_faces, dtype=torch.int32, device=device)
    texture = torch.tensor(scene.texture, dtype=torch.float32, device=device)
    light_dirs = torch.tensor([d for d, _ in LIGHTS], dtype=torch.float32, device=device)
    light_dirs = light_dirs / light_dirs.norm(dim=-1, keepdim=True)  # [L, 3]
    light_power = torch.tensor([p for _, p in LIGHTS], dtype=torch.float32, device=device)  # [L]
    out = []
    with torch.no_grad():
        for start in range(0, len(poses), options.batch):
            cams = make_cameras(big, poses[start : start + options.batch], device=device)
            pos_clip = cams.to_clip(verts)
            raster = renderer.rasterize(pos_clip, faces, (big.height, big.width))
            albedo = renderer.texture(texture, renderer.interpolate(uv, raster, uv_faces))  # [B, H, W, 3]
            normal = F.normalize(renderer.interpolate(normals, raster, faces), dim=-1)
            world = renderer.interpolate(verts, raster, faces)  # [B, H, W, 3]
            view = F.normalize(cams.centers[:, None, None, :] - world, dim=-1)
            # Light the side that faces the camera (a few faces of thin parts are seen from behind).
            normal = torch.where((normal * view).sum(-1, keepdim=True) < 0, -normal, normal)
            cos = (normal[..., None, :] * light_dirs).sum(-1).clamp(min=0)  # [B, H, W, L]
            color = albedo * (AMBIENT + (cos * light_power).sum(-1, keepdim=True))
            if options.specular > 0:
                half = F.normalize(light_dirs + view[..., None, :], dim=-1)  # [B, H, W, L, 3]
                spec = (normal[..., None, :] * half).sum(-1).clamp(min=0) ** SHININESS * (cos > 0)
                color = color + options.specular * (spec * light_power).sum(-1, keepdim=True)
            color = color.clamp(0, 1)
            fg = torch.cat([color, torch.ones_like(color[..., :1])], dim=-1)
            rgba = renderer.antialias(fg, torch.zeros(4, device=device), raster, pos_clip, faces)  # premultiplied
            rgba = F.avg_pool2d(rgba.permute(0, 3, 1, 2), ss).permute(0, 2, 3, 1)
            alpha = rgba[..., 3:4].clamp(0, 1)
            rgb = torch.where(alpha > 1e-4, rgba[..., :3] / alpha.clamp(min=1e-4), torch.zeros_like(rgba[..., :3]))
            out.append(torch.cat([rgb.clamp(0, 1), alpha], dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, intrinsics.height, intrinsics.width, 4), np.float32)


def synthesize(
    mesh_path: Path, output: Path, options: SynthOptions, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Write a capture of `mesh_path` into `output`; return a summary (counts, noise, renderer).

    `progress(n)` is called after each written image with the count so far (of views + test_views)."""
    import trimesh
    from PIL import Image

    from recon_worker.engine.render import get_renderer

    if options.views < 1 or options.test_views < 0 or options.resolution < 8:
        raise ValueError("synth: need --views >= 1, --test-views >= 0 and --resolution >= 8")
    if not mesh_path.is_file():
        raise ValueError(f"--mesh {mesh_path}: no such file")
    written_images = 0
    rng = np.random.default_rng(options.seed)
    scene = load_scene_mesh(mesh_path)
    size = options.resolution
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    intrinsics = Intrinsics(focal, focal, size / 2, size / 2, size, size)
    output.mkdir(parents=True, exist_ok=True)
    splits = {
        "train": np.stack([look_at(p * CAMERA_DISTANCE) for p in fibonacci_sphere(options.views)]),
        "test": np.stack([look_at(p * CAMERA_DISTANCE) for p in fibonacci_sphere(options.test_views, 0.37)])
        if options.test_views
        else np.zeros((0, 4, 4)),
    }
    for split, poses in splits.items():
        (output / split).mkdir(exist_ok=True)
        images = render_views(scene, poses, intrinsics, options)
        frames = []
        for i, (pose, rgba) in enumerate(zip(poses, images, strict=True)):
            written = pose
            if split == "train" and options.mask_noise > 0:
                rgba = rgba.copy()
                rgba[..., 3] = warp_alpha(rgba[..., 3], options.mask_noise, rng)
            if split == "train" and options.pose_noise > 0:
                written = perturb_rotation(pose, options.pose_noise, rng)
            Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA").save(output / split / f"r_{i}.png")
            written_images += 1
            if progress is not None:
                progress(written_images)
            # NeRF-synthetic omits the extension in file_path; readers append ".png".
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": written.tolist()})
        doc = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        (output / f"transforms_{split}.json").write_text(json.dumps(doc, indent=2))
    trimesh.Trimesh(scene.verts, scene.faces, process=False).export(output / "ground_truth.obj")
    summary = {
        "mesh": str(mesh_path),
        "views": options.views,
        "testViews": options.test_views,
        "resolution": size,
        "specular": options.specular,
        "maskNoisePx": options.mask_noise,
        "poseNoiseDeg": options.pose_noise,
        "objectSize": OBJECT_SIZE,
        "cameraDistance": CAMERA_DISTANCE,
        "renderer": get_renderer(options.device, options.renderer).name,
    }
    (output / "synth.json").write_text(json.dumps(summary, indent=2))
    return summary


def add_synth_parser(subparsers: Any) -> None:
    """Register `recon-worker synth` on the CLI's subparsers (its `handler` runs the command)."""
    parser = subparsers.add_parser(
        "synth",
        help="render a textured mesh into a synthetic capture (NeRF-synthetic layout) with ground truth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mesh", type=Path, required=True, help="textured mesh (OBJ + MTL + image)")
    parser.add_argument("--output", type=Path, required=True, help="capture folder to write")
    parser.add_argument("--views", type=int, default=100, help="training views (default 100)")
    parser.add_argument("--test-views", type=int, default=20, help="held-out views (default 20)")
    parser.add_argument("--resolution", type=int, default=512, help="image side, pixels (default 512)")
    parser.add_argument("--specular", type=float, default=0.0, metavar="K", help="Blinn-Phong highlight weight")
    parser.add_argument("--mask-noise", type=float, default=0.0, metavar="PX", help="alpha boundary noise, pixels")
    parser.add_argument("--pose-noise", type=float, default=0.0, metavar="DEG", help="written pose noise, degrees")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--renderer", default="auto", choices=["auto", "nvdiffrast", "pytorch3d"])
    parser.set_defaults(handler=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    options = SynthOptions(
        views=args.views,
        test_views=args.test_views,
        resolution=args.resolution,
        specular=args.specular,
        mask_noise=args.mask_noise,
        pose_noise=args.pose_noise,
        seed=args.seed,
        device=device,
        renderer=args.renderer,
    )
    from recon_worker.progress import CountBar

    bar = CountBar(stream=sys.stderr, total=options.views + options.test_views, unit="images")
    try:
        with bar.logs_above():
            summary = synthesize(args.mesh, args.output, options, progress=bar.advance)
    except (OSError, ValueError) as exc:
        bar.close()
        print(f"recon-worker synth: {exc}", file=sys.stderr)
        return 2
    bar.close()
    print(json.dumps(summary))
    return 0
