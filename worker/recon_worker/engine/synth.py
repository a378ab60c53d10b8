"""Synthetic captures: render a textured mesh into a NeRF-synthetic capture with known ground truth.

`recon-worker synth --mesh M.obj|M.glb --views 100 --test-views 20 --resolution 512 --output DIR` writes

    DIR/train/r_<i>.png, DIR/test/r_<i>.png   RGBA (straight alpha), the object over transparency
    DIR/transforms_train.json, transforms_test.json   camera_angle_x + per-frame transform_matrix (c2w)
    DIR/ground_truth.obj                      the authored surface in the capture's world coordinates
                                              (as authored: a glTF scene's is open, not watertight)

The mesh is an OBJ with its material and texture, or a glTF/GLB scene: every mesh of the scene, placed by
its node transforms, each with its own base-colour texture and metallic/roughness (see `iter_views`).

The object is centred and scaled so that its bounding box's longest side is `OBJECT_SIZE` world units;
cameras sit on a Fibonacci sphere of radius `CAMERA_DISTANCE` looking at the origin (train and test
use two different spirals). Shading is Lambertian (albedo from the texture) under fixed world-space
lights, plus a view-dependent highlight: Blinn-Phong of weight K (`--specular`) for OBJ materials, the
material's own metallic/roughness for glTF PBR materials. Mask
noise (a smooth random warp of the alpha channel, PX pixels) and pose noise (a random rotation of
DEG degrees applied to each written camera orientation) touch the training views only, and only
what is written: the pictures are rendered from the true poses.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
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
class Material:
    """What shading reads for a group of faces: an albedo map and, for glTF PBR materials, metal/roughness."""

    base_color: np.ndarray  # [Ht, Wt, 3] float32 in [0, 1], row 0 the image top (factor already applied)
    # [Hm, Wm, 2] float32 (metallic, roughness) in [0, 1]; None: no PBR data (OBJ), the highlight is
    # SynthOptions.specular's Blinn-Phong.
    metal_rough: np.ndarray | None = None


@dataclass
class SceneMesh:
    """The normalised object: welded geometry, per-corner UVs and normals, one material per face."""

    verts: np.ndarray  # [V, 3] float64, capture world coordinates
    faces: np.ndarray  # [F, 3] int64, welded by position (one surface, no seams for the antialiaser)
    uv: np.ndarray  # [T, 2]
    uv_faces: np.ndarray  # [F, 3] indexes uv
    normals: np.ndarray  # [N, 3] unit shading normals, world frame
    normal_faces: np.ndarray  # [F, 3] indexes normals
    face_material: np.ndarray  # [F] int64 index into materials
    materials: list[Material]

    @property
    def texture(self) -> np.ndarray:
        """The first material's albedo (single-material meshes: their texture)."""
        return self.materials[0].base_color


def _rgb(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.clip(c, 0.0031308, None) ** (1 / 2.4) - 0.055)


def _factor(value: Any, default: float | tuple[float, ...]) -> np.ndarray:
    """A glTF factor as floats in [0, 1] (trimesh gives colours as uint8, scalars as floats, or None)."""
    if value is None:
        return np.asarray(default, dtype=np.float32)
    array = np.asarray(value)
    return (array / 255.0 if array.dtype == np.uint8 else array).astype(np.float32)


def material_of(visual: Any, path: Path, name: str) -> Material:
    """The albedo and PBR maps of one trimesh visual (OBJ SimpleMaterial or glTF PBRMaterial)."""
    import trimesh

    material = getattr(visual, "material", None)
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        factor = _factor(material.baseColorFactor, (1.0, 1.0, 1.0, 1.0))[:3]
        image = material.baseColorTexture
        # The factor is linear, the texture sRGB: multiply in linear light, keep the map in sRGB (as the OBJ
        # textures are shaded).
        linear = srgb_to_linear(_rgb(image)) * factor if image is not None else factor.reshape(1, 1, 3)
        base = linear_to_srgb(linear)
        metallic = float(_factor(material.metallicFactor, 1.0))  # glTF defaults: 1 and 1
        roughness = float(_factor(material.roughnessFactor, 1.0))
        mr_image = material.metallicRoughnessTexture
        if mr_image is not None:  # glTF: green = roughness, blue = metallic, times the factors
            mr = _rgb(mr_image)
            metal_rough = np.stack([mr[..., 2] * metallic, mr[..., 1] * roughness], axis=-1)
        else:
            metal_rough = np.array([[[metallic, roughness]]], dtype=np.float32)
        return Material(np.ascontiguousarray(base, dtype=np.float32), np.ascontiguousarray(metal_rough))
    image = getattr(material, "image", None)
    if getattr(visual, "uv", None) is None or image is None:
        raise ValueError(f"{path}: mesh {name!r} has no texture (UVs and an image in its material are required)")
    return Material(_rgb(image))


def load_scene_mesh(path: Path) -> SceneMesh:
    """Read a textured mesh (OBJ + material, or a glTF/GLB scene) and normalise it to the capture's frame.

    A scene's meshes are placed by its node transforms and joined into one object; each keeps its own
    material. The object is centred and scaled so that its bounding box's longest side is OBJECT_SIZE
    (files are in their own units: metres for glTF, a 7 cm toy or a 2 m shelf).
    """
    import trimesh

    loaded = trimesh.load(path, process=False)
    is_scene = isinstance(loaded, trimesh.Scene)
    found = list(loaded.dump(concatenate=False)) if isinstance(loaded, trimesh.Scene) else [loaded]
    parts = [m for m in found if isinstance(m, trimesh.Trimesh) and len(m.faces) > 0]
    if not parts:
        raise ValueError(f"{path}: no triangle mesh inside")
    materials, face_material, uv_blocks, corner_faces, normal_blocks = [], [], [], [], []
    verts_blocks, uv_offset, vert_offset = [], 0, 0
    for index, part in enumerate(parts):
        name = str(part.metadata.get("name") or index)
        material = material_of(part.visual, path, name)
        uv = getattr(part.visual, "uv", None)
        if uv is None:  # an untextured glTF primitive: a constant colour needs no real UVs
            uv = np.zeros((len(part.vertices), 2))
        materials.append(material)
        face_material.append(np.full(len(part.faces), index, dtype=np.int64))
        verts_blocks.append(np.asarray(part.vertices, dtype=np.float64))
        uv_blocks.append(np.asarray(uv, dtype=np.float64))
        normal_blocks.append(np.asarray(part.vertex_normals, dtype=np.float64))
        corner_faces.append(np.asarray(part.faces, dtype=np.int64) + vert_offset)
        vert_offset += len(part.vertices)
        uv_offset += len(uv)
    joined = trimesh.Trimesh(np.concatenate(verts_blocks), np.concatenate(corner_faces), process=False)
    # Welding by position (UV seams split vertices in the file) gives one surface per part and smooth normals.
    welded = joined.copy()
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    lo, hi = welded.bounds
    center, scale = (lo + hi) / 2, OBJECT_SIZE / float((hi - lo).max())
    verts = (welded.vertices - center) * scale
    corners = np.concatenate(corner_faces)
    if is_scene:
        # glTF carries authored shading normals (hard edges of boards and rims): keep them per corner.
        normals, normal_faces = np.concatenate(normal_blocks), corners
    else:  # OBJ: smooth normals of the welded surface (the seams of the file must not show)
        normals = np.asarray(trimesh.Trimesh(verts, welded.faces, process=False).vertex_normals)
        normal_faces = np.asarray(welded.faces, dtype=np.int64)
    normals = normals / np.clip(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12, None)
    return SceneMesh(
        verts=verts,
        faces=np.asarray(welded.faces, dtype=np.int64),
        uv=np.concatenate(uv_blocks),
        uv_faces=corners,
        normals=normals,
        normal_faces=normal_faces,
        face_material=np.concatenate(face_material),
        materials=materials,
    )


def blinn_phong_exponent(roughness: Any) -> Any:
    """The Blinn-Phong exponent whose lobe matches a GGX lobe of this perceptual roughness (alpha = r^2)."""
    alpha2 = roughness.clamp(min=0.05) ** 4
    return (2.0 / alpha2 - 2.0).clamp(1.0, 4096.0)


def iter_views(
    scene: SceneMesh, poses: np.ndarray, intrinsics: Intrinsics, options: SynthOptions
) -> Iterator[np.ndarray]:
    """Batches [b, H, W, 4] of straight-alpha RGBA float in [0, 1] of `scene` seen from `poses` [N, 4, 4].

    Shading: albedo x (ambient + Lambert) under the fixed LIGHTS, plus a highlight. OBJ materials get a
    Blinn-Phong highlight of weight `options.specular`; glTF PBR materials a Blinn-Phong lobe fitted to
    their roughness, coloured like metal (albedo) where metallic and like a dielectric (4 % white)
    elsewhere, with the diffuse term dimmed by metalness. Batches keep memory at one batch of views.
    """
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

    def tensor(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.tensor(array, dtype=dtype, device=device)

    verts = tensor(scene.verts)
    faces = tensor(scene.faces, torch.int32)
    normals, normal_faces = tensor(scene.normals), tensor(scene.normal_faces, torch.int32)
    # Textures repeat (glTF's default wrap): sample the fractional part of every UV.
    uv, uv_faces = tensor(scene.uv - np.floor(scene.uv)), tensor(scene.uv_faces, torch.int32)
    face_material = tensor(scene.face_material, torch.int64)
    maps = [(tensor(m.base_color), None if m.metal_rough is None else tensor(m.metal_rough)) for m in scene.materials]
    light_dirs = tensor(np.array([d for d, _ in LIGHTS]))
    light_dirs = light_dirs / light_dirs.norm(dim=-1, keepdim=True)  # [L, 3]
    light_power = tensor(np.array([p for _, p in LIGHTS]))  # [L]
    with torch.no_grad():
        for start in range(0, len(poses), options.batch):
            cams = make_cameras(big, poses[start : start + options.batch], device=device)
            pos_clip = cams.to_clip(verts)
            raster = renderer.rasterize(pos_clip, faces, (big.height, big.width))
            pixel_uv = renderer.interpolate(uv, raster, uv_faces)  # [B, H, W, 2]
            material = face_material[raster.triangle_id.clamp(min=0)]  # [B, H, W]
            albedo = torch.zeros((*material.shape, 3), device=device)
            metal_rough = torch.zeros((*material.shape, 2), device=device)
            weight = torch.zeros_like(material, dtype=torch.float32)  # highlight weight per pixel
            pbr = torch.zeros_like(material, dtype=torch.bool)
            for index, (base, mr) in enumerate(maps):
                here = material == index
                if len(scene.materials) > 1 and not bool(here.any()):
                    continue
                albedo = torch.where(here[..., None], renderer.texture(base, pixel_uv), albedo)
                if mr is not None:
                    metal_rough = torch.where(here[..., None], renderer.texture(mr, pixel_uv), metal_rough)
                    pbr = pbr | here
                else:
                    weight = torch.where(here, torch.full_like(weight, options.specular), weight)
            normal = F.normalize(renderer.interpolate(normals, raster, normal_faces), dim=-1)
            world = renderer.interpolate(verts, raster, faces)  # [B, H, W, 3]
            view = F.normalize(cams.centers[:, None, None, :] - world, dim=-1)
            # Light the side that faces the camera (a few faces of thin parts are seen from behind).
            normal = torch.where((normal * view).sum(-1, keepdim=True) < 0, -normal, normal)
            cos = (normal[..., None, :] * light_dirs).sum(-1).clamp(min=0)  # [B, H, W, L]
            metallic = torch.where(pbr, metal_rough[..., 0], torch.zeros_like(weight))[..., None]  # [B, H, W, 1]
            diffuse = albedo * (1 - metallic) * (AMBIENT + (cos * light_power).sum(-1, keepdim=True))
            half = F.normalize(light_dirs + view[..., None, :], dim=-1)  # [B, H, W, L, 3]
            n_dot_h = (normal[..., None, :] * half).sum(-1).clamp(min=0)  # [B, H, W, L]
            exponent = torch.where(pbr, blinn_phong_exponent(metal_rough[..., 1]), torch.full_like(weight, SHININESS))
            lobe = n_dot_h ** exponent[..., None] * (cos > 0)  # [B, H, W, L]
            # PBR: a normalised lobe ((n + 2) / 8) so that rough surfaces spread, polished ones glint.
            norm = torch.where(pbr, (exponent + 2) / 8, weight)[..., None]  # [B, H, W, 1]
            tint = torch.where(pbr[..., None], 0.04 * (1 - metallic) + albedo * metallic, torch.ones_like(albedo))
            # Plus the ambient light mirrored by the surface, so that metal is not black between highlights.
            ambient_mirror = torch.where(pbr[..., None], AMBIENT * tint, torch.zeros_like(tint))
            highlight = norm * tint * (lobe * light_power).sum(-1, keepdim=True) + ambient_mirror
            color = (diffuse + highlight).clamp(0, 1)
            fg = torch.cat([color, torch.ones_like(color[..., :1])], dim=-1)
            rgba = renderer.antialias(fg, torch.zeros(4, device=device), raster, pos_clip, faces)  # premultiplied
            rgba = F.avg_pool2d(rgba.permute(0, 3, 1, 2), ss).permute(0, 2, 3, 1)
            alpha = rgba[..., 3:4].clamp(0, 1)
            rgb = torch.where(alpha > 1e-4, rgba[..., :3] / alpha.clamp(min=1e-4), torch.zeros_like(rgba[..., :3]))
            yield torch.cat([rgb.clamp(0, 1), alpha], dim=-1).cpu().numpy()


def render_views(scene: SceneMesh, poses: np.ndarray, intrinsics: Intrinsics, options: SynthOptions) -> np.ndarray:
    """[N, H, W, 4] straight-alpha RGBA float in [0, 1] of `scene` seen from `poses` [N, 4, 4]."""
    out = list(iter_views(scene, poses, intrinsics, options))
    return np.concatenate(out) if out else np.zeros((0, intrinsics.height, intrinsics.width, 4), np.float32)


def synthesize(mesh_path: Path, output: Path, options: SynthOptions) -> dict[str, Any]:
    """Write a capture of `mesh_path` into `output`; return a summary (counts, noise, renderer)."""
    import trimesh
    from PIL import Image

    from recon_worker.engine.render import get_renderer

    if options.views < 1 or options.test_views < 0 or options.resolution < 8:
        raise ValueError("synth: need --views >= 1, --test-views >= 0 and --resolution >= 8")
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
        images = (rgba for batch in iter_views(scene, poses, intrinsics, options) for rgba in batch)
        frames = []
        for i, (pose, rgba) in enumerate(zip(poses, images, strict=True)):
            written = pose
            if split == "train" and options.mask_noise > 0:
                rgba = rgba.copy()
                rgba[..., 3] = warp_alpha(rgba[..., 3], options.mask_noise, rng)
            if split == "train" and options.pose_noise > 0:
                written = perturb_rotation(pose, options.pose_noise, rng)
            Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA").save(output / split / f"r_{i}.png")
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
    parser.add_argument(
        "--mesh", type=Path, required=True, help="textured mesh: OBJ + MTL + image, or a glTF/GLB scene"
    )
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
    try:
        summary = synthesize(args.mesh, args.output, options)
    except (OSError, ValueError) as exc:
        print(f"recon-worker synth: {exc}")
        return 2
    print(json.dumps(summary))
    return 0
