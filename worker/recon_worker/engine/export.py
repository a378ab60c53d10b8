"""Export: the textured mesh as GLB, OBJ (+ MTL + PNG) and PLY, at most `targetFaces` faces.

Decimation keeps the texture by re-unwrapping the simplified surface (xatlas, with the texture stage's
`unwrap`) and re-baking its texture from the full-resolution one: every texel of the new atlas takes
the colour of the nearest point of the original textured surface. Quadric decimation
(fast-simplification, through trimesh) can break a closed surface; the result is re-checked and
repaired, and the original mesh is kept when the decimated one stays broken.

File names are fixed by the output contract: mesh.glb, mesh.obj, mesh.mtl, texture.png, mesh.ply.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image, ImageDraw
from scipy import ndimage

from recon_worker.engine.meshcheck import check_mesh, repair_mesh, welded
from recon_worker.engine.metrics import QualityMetrics, SurfaceSamples
from recon_worker.engine.report import CaptureSummary, build_report, gpu_telemetry, write_report
from recon_worker.stage import StageContext

EXPORT_FILES: dict[str, tuple[str, ...]] = {
    "glb": ("mesh.glb",),
    "obj": ("mesh.obj", "mesh.mtl", "texture.png"),
    "ply": ("mesh.ply",),
}
_MATERIAL_NAME = "material"


def uv_of(mesh: trimesh.Trimesh) -> np.ndarray:
    """[V, 2] per-vertex UVs of a textured mesh (v up, OBJ convention)."""
    uv = getattr(mesh.visual, "uv", None)
    if uv is None:
        raise ValueError("the mesh has no UV coordinates")
    return np.asarray(uv, dtype=np.float64)


def load_mesh(path: Path) -> trimesh.Trimesh:
    """One triangle mesh from a file (scenes are merged), exactly as stored."""
    mesh = trimesh.load(path, force="mesh", process=False)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"{path} holds no triangles")
    return mesh


def texture_image(mesh: trimesh.Trimesh) -> Image.Image:
    """The base-colour texture of a textured mesh, as RGB; names what is missing otherwise."""
    material = getattr(mesh.visual, "material", None)
    image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
    if getattr(mesh.visual, "uv", None) is None or image is None:
        raise ValueError("the mesh has no texture: expected UV coordinates and a base-colour image")
    return image.convert("RGB")


def load_result_mesh(folder: Path) -> trimesh.Trimesh:
    """The textured mesh a stage wrote (an OBJ with its MTL and texture), kept exactly as stored."""
    objs = sorted(folder.glob("*.obj"))
    if not objs:
        raise FileNotFoundError(f"{folder} holds no .obj mesh: did the stage that writes it finish?")
    mesh = load_mesh(objs[0])
    texture_image(mesh)  # fails early, naming what is missing
    return mesh


def textured(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, image: Image.Image) -> trimesh.Trimesh:
    """A trimesh with one UV per vertex and a plain white diffuse material carrying `image`."""
    material = trimesh.visual.material.SimpleMaterial(
        name=_MATERIAL_NAME, image=image, diffuse=[255, 255, 255, 255], ambient=[255, 255, 255, 255]
    )
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(vertices, faces, visual=visual, process=False, validate=False)


# --------------------------------------------------------------------------------------------------
# Decimation


def _rasterize_atlas(uv: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which face covers each texel of a `size`^2 atlas, and the texel's barycentric coordinates.

    Returns face ids [S, S] (-1 where none) and barycentrics [S, S, 3]. Row 0 is the top of the image
    (v = 1), as in the PNG written next to an OBJ.
    """
    ids = Image.new("I", (size, size), 0)
    draw = ImageDraw.Draw(ids)
    corners = np.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], axis=1)[faces]  # [F, 3, 2] pixels
    for index, triangle in enumerate(corners):
        draw.polygon([tuple(p) for p in triangle], fill=index + 1)
    face_id = np.asarray(ids, dtype=np.int64) - 1  # [S, S]
    rows, cols = np.nonzero(face_id >= 0)
    tri = corners[face_id[rows, cols]]  # [N, 3, 2]
    centres = np.stack([cols + 0.5, rows + 0.5], axis=1)  # [N, 2]
    # Barycentrics of texel centres; PIL's polygon edges include border texels, hence the clamp.
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, centres - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    bary = np.clip(np.stack([1 - w1 - w2, w1, w2], axis=1), 0.0, 1.0)
    bary /= bary.sum(axis=1, keepdims=True)
    barycentric = np.zeros((size, size, 3))
    barycentric[rows, cols] = bary
    return face_id, barycentric


def bake_texture(
    source: trimesh.Trimesh, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, size: int
) -> Image.Image:
    """Texture [size, size] for (`vertices`, `faces`, `uv`) from the nearest colours of textured `source`."""
    face_id, bary = _rasterize_atlas(uv, faces, size)
    covered = face_id >= 0
    positions = np.einsum("nk,nkd->nd", bary[covered], vertices[faces[face_id[covered]]])  # [N, 3]

    samples = SurfaceSamples(source, max(200_000, 20 * len(source.faces)), seed=0)
    _, src_face, points = samples.closest_points(positions, exact=False)
    src_bary = trimesh.triangles.points_to_barycentric(source.triangles[src_face], points)
    src_bary = np.clip(np.nan_to_num(src_bary), 0.0, 1.0)
    src_bary /= np.maximum(src_bary.sum(axis=1, keepdims=True), 1e-12)
    src_uv = np.einsum("nk,nkd->nd", src_bary, uv_of(source)[np.asarray(source.faces)[src_face]])

    image = np.asarray(texture_image(source), dtype=np.float32)  # [Ht, Wt, 3], row 0 = top (v = 1)
    ht, wt = image.shape[:2]
    px = np.mod(src_uv[:, 0], 1.0) * wt - 0.5
    py = (1.0 - np.mod(src_uv[:, 1], 1.0)) * ht - 0.5
    colors = np.stack([ndimage.map_coordinates(image[..., c], [py, px], order=1, mode="nearest") for c in range(3)], 1)

    baked = np.zeros((size, size, 3), dtype=np.float32)
    baked[covered] = colors
    # Fill the gutters with the nearest covered texel so bilinear lookups at chart edges stay clean.
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    baked = baked[iy, ix]
    return Image.fromarray(np.clip(baked + 0.5, 0, 255).astype(np.uint8), "RGB")


def decimate(mesh: trimesh.Trimesh, target_faces: int) -> tuple[trimesh.Trimesh, list[str]]:
    """`mesh` simplified to at most `target_faces` faces with its texture re-baked; notes say what happened.

    Meshes already small enough are returned unchanged. A decimated mesh that is not closed and
    manifold after repair is discarded: the original is returned with a note (validity first).
    """
    if len(mesh.faces) <= target_faces:
        return mesh, []
    from recon_worker.engine.texture import unwrap

    geometry, _ = welded(mesh)
    simplified = geometry.simplify_quadric_decimation(face_count=target_faces)
    simplified = trimesh.Trimesh(simplified.vertices, simplified.faces, process=False)
    simplified, repairs = repair_mesh(simplified)
    checks = check_mesh(simplified)
    if not (checks.watertight and checks.manifold) or len(simplified.faces) > target_faces:
        problems = "; ".join(checks.problems()) or f"{len(simplified.faces)} faces"
        return mesh, [f"decimation to {target_faces} faces gave an invalid mesh ({problems}); kept the original"]
    size = max(texture_image(mesh).size)
    atlas = unwrap(simplified, size)  # the texture stage's unwrap: same charts, packing and gutters
    image = bake_texture(mesh, atlas.verts, atlas.faces, atlas.uv, size)
    notes = [f"decimated {len(mesh.faces)} -> {len(atlas.faces)} faces, texture re-baked at {size}px", *repairs]
    return textured(atlas.verts, atlas.faces, atlas.uv, image), notes


# --------------------------------------------------------------------------------------------------
# Writers


def smooth_normals(mesh: trimesh.Trimesh) -> np.ndarray:
    """[V, 3] unit vertex normals of `mesh`, computed on the welded surface: the copies of a vertex on
    either side of a UV seam get the same normal, so viewers shade the seam smooth, not creased."""
    geometry, _ = welded(mesh)
    to_welded = np.zeros(len(mesh.vertices), dtype=np.int64)  # textured vertex -> welded vertex
    to_welded[np.asarray(mesh.faces).ravel()] = np.asarray(geometry.faces).ravel()  # same face order
    normals: np.ndarray = np.asarray(geometry.vertex_normals)[to_welded]
    return normals


def write_glb(mesh: trimesh.Trimesh, path: Path) -> None:
    """mesh.glb: POSITION, NORMAL (smooth, see `smooth_normals`) and TEXCOORD_0, one PBR material."""
    image = texture_image(mesh)
    material = trimesh.visual.material.PBRMaterial(
        name=_MATERIAL_NAME, baseColorTexture=image, baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0,
        roughnessFactor=1.0, doubleSided=False,
    )  # fmt: skip
    out = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=smooth_normals(mesh), process=False, validate=False)
    out.visual = trimesh.visual.TextureVisuals(uv=uv_of(mesh), material=material)
    out.export(str(path), file_type="glb", include_normals=True)


def write_obj(mesh: trimesh.Trimesh, folder: Path) -> None:
    """mesh.obj + mesh.mtl + texture.png in `folder` (the MTL names the texture by that fixed name)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = textured(np.asarray(mesh.vertices), np.asarray(mesh.faces), uv_of(mesh), texture_image(mesh))
    text, _ = trimesh.exchange.obj.export_obj(
        out, include_normals=True, include_texture=True, return_texture=True, mtl_name="mesh.mtl"
    )
    (folder / "mesh.obj").write_text(text)
    (folder / "mesh.mtl").write_text(
        f"newmtl {_MATERIAL_NAME}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nNs 1\nillum 1\nmap_Kd texture.png\n"
    )
    texture_image(mesh).save(folder / "texture.png", optimize=False)


def write_ply(mesh: trimesh.Trimesh, path: Path) -> None:
    """Welded geometry (closed, no seam splits) with colours sampled from the texture at each vertex."""
    geometry, to_textured = welded(mesh)
    colors = trimesh.visual.TextureVisuals(uv=uv_of(mesh), image=texture_image(mesh)).to_color().vertex_colors
    geometry.visual = trimesh.visual.ColorVisuals(geometry, vertex_colors=np.asarray(colors)[to_textured])  # [V, 4]
    geometry.export(str(path), file_type="ply")


def export_mesh(mesh: trimesh.Trimesh, folder: Path, formats: Iterable[str]) -> list[Path]:
    """Write `mesh` in each of `formats` into `folder`; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for fmt in dict.fromkeys(formats):
        if fmt == "glb":
            write_glb(mesh, folder / "mesh.glb")
        elif fmt == "obj":
            write_obj(mesh, folder)
        elif fmt == "ply":
            write_ply(mesh, folder / "mesh.ply")
        else:
            raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FILES)}")
        written += [folder / name for name in EXPORT_FILES[fmt]]
    return written


# --------------------------------------------------------------------------------------------------
# The stage


def refinement_losses(info: Path) -> list[tuple[int, float]]:
    """The (iteration, loss) samples the refine stage logged in its info.json; none when it logged none."""
    if not info.is_file():
        return []
    samples = json.loads(info.read_text()).get("losses") or []
    return [(int(it), float(loss)) for it, loss in samples]


def run_export(ctx: StageContext) -> list[Path]:
    """Write the validated mesh in every requested format, the previews and the report into `export/`."""
    started = time.monotonic()
    out_dir = ctx.stage_dir("export")
    validate_dir = ctx.workdir / "validate"
    metrics = QualityMetrics.model_validate_json((validate_dir / "metrics.json").read_text())
    mesh = load_result_mesh(validate_dir / "mesh")
    formats = list(dict.fromkeys(ctx.export_formats or ctx.settings.export.formats))
    written = export_mesh(mesh, out_dir, formats)
    ctx.progress(0.6)

    previews = out_dir / "previews"
    previews.mkdir(exist_ok=True)
    for png in sorted((validate_dir / "previews").glob("*.png")):
        shutil.copyfile(png, previews / png.name)
        written.append(previews / png.name)

    capture = ctx.capture
    report = build_report(
        metrics=metrics,
        settings=ctx.settings,
        capture=CaptureSummary(
            train_views=len(capture.indices("train")),
            test_views=len(capture.indices("test")),
            width=capture.intrinsics.width,
            height=capture.intrinsics.height,
            ground_truth=capture.ground_truth is not None,
        ),
        device=ctx.device,
        export_formats=formats,
        files=[p.relative_to(out_dir).as_posix() for p in written] + ["report.json", "report.html"],
        # This stage's time so far: the report is its last file.
        stage_seconds={**ctx.stage_seconds, "export": round(time.monotonic() - started, 3)},
        resumed_stages=ctx.resumed_stages,
        refinement_losses=refinement_losses(ctx.workdir / "refine" / "info.json"),
        gpu=gpu_telemetry(ctx.device),
    )
    written += write_report(report, out_dir)
    ctx.progress(1.0)
    return written
