"""Export: the textured mesh as GLB, OBJ (+ MTL + PNG) and PLY, at most `targetFaces` faces.

The face bound is met upstream: the texture stage decimates to `targetFaces` (`engine.decimation`)
before it unwraps and bakes, so export writes the mesh validate measured, unchanged.

File names are fixed by the output contract: mesh.glb, mesh.obj, mesh.mtl, texture.png, mesh.ply.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from PIL import Image

from recon_worker.engine.meshcheck import welded
from recon_worker.engine.metrics import QualityMetrics
from recon_worker.engine.objfile import MATERIAL, read_textured_obj, write_textured_obj
from recon_worker.engine.report import CaptureSummary, build_report, gpu_telemetry, write_report
from recon_worker.engine.stagemesh import ARRAYS_NAME, read_stage_mesh
from recon_worker.stage import StageContext, StepClock

EXPORT_FILES: dict[str, tuple[str, ...]] = {
    "glb": ("mesh.glb",),
    "obj": ("mesh.obj", "mesh.mtl", "texture.png"),
    "ply": ("mesh.ply",),
}


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
    """The textured mesh in `folder`: a stage's `mesh.npz` + texture (`engine.stagemesh`), or else the
    folder's OBJ with its MTL and texture (what export writes); kept exactly as stored."""
    if (folder / ARRAYS_NAME).is_file():
        mesh = read_stage_mesh(folder)
    else:
        objs = sorted(folder.glob("*.obj"))
        if not objs:
            what = f"{folder} holds no mesh ({ARRAYS_NAME} or .obj)"
            raise FileNotFoundError(f"{what}: did the stage that writes it finish?")
        mesh = read_textured_obj(objs[0])
    if len(mesh.faces) == 0:
        raise ValueError(f"{folder} holds no triangles")
    texture_image(mesh)  # fails early, naming what is missing
    return mesh


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
        name=MATERIAL, baseColorTexture=image, baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0,
        roughnessFactor=1.0, doubleSided=False,
    )  # fmt: skip
    out = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=smooth_normals(mesh), process=False, validate=False)
    out.visual = trimesh.visual.TextureVisuals(uv=uv_of(mesh), material=material)
    out.export(str(path), file_type="glb", include_normals=True)


def write_obj(mesh: trimesh.Trimesh, folder: Path) -> None:
    """mesh.obj (each position once, with its smooth normal; `engine.objfile`) + mesh.mtl + texture.png."""
    write_textured_obj(folder / "mesh.obj", mesh, texture_image(mesh))


def write_ply(mesh: trimesh.Trimesh, path: Path) -> None:
    """Welded geometry (closed, no seam splits) with colours sampled from the texture at each vertex."""
    geometry, to_textured = welded(mesh)
    colors = trimesh.visual.TextureVisuals(uv=uv_of(mesh), image=texture_image(mesh)).to_color().vertex_colors
    geometry.visual = trimesh.visual.ColorVisuals(geometry, vertex_colors=np.asarray(colors)[to_textured])  # [V, 4]
    geometry.export(str(path), file_type="ply")


def export_mesh(mesh: trimesh.Trimesh, folder: Path, formats: Iterable[str]) -> list[Path]:
    """Write `mesh` in each of `formats` into `folder`; returns the files written.

    The writers run at once, each on its own copy of the mesh (their PNG and zlib encoding release
    the GIL): GLB + OBJ + PLY of a 58,572-face mesh with a noise texture took 1.55-1.69 s one after
    another and 1.02-1.19 s at once on 2 busy cores; with a smooth texture the gain is small
    (`make bench-mesh-io`).
    """
    formats = list(dict.fromkeys(formats))
    unknown = [fmt for fmt in formats if fmt not in EXPORT_FILES]
    if unknown:
        raise ValueError(f"unknown export format {unknown[0]!r}; expected one of {', '.join(EXPORT_FILES)}")
    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[trimesh.Trimesh], None]] = {
        "glb": lambda copy: write_glb(copy, folder / "mesh.glb"),
        "obj": lambda copy: write_obj(copy, folder),
        "ply": lambda copy: write_ply(copy, folder / "mesh.ply"),
    }
    with ThreadPoolExecutor(max_workers=max(1, len(formats))) as pool:
        for done in [pool.submit(writers[fmt], mesh.copy()) for fmt in formats]:
            done.result()
    return [folder / name for fmt in formats for name in EXPORT_FILES[fmt]]


# --------------------------------------------------------------------------------------------------
# The stage


def refinement_losses(info: Path) -> list[tuple[int, float]]:
    """The (iteration, loss) samples the refine stage logged in its info.json; none when it logged none."""
    if not info.is_file():
        return []
    samples = json.loads(info.read_text()).get("losses") or []
    return [(int(it), float(loss)) for it, loss in samples]


def stage_details(workdir: Path) -> dict[str, dict[str, Any]]:
    """Each earlier stage's info.json (refine without its loss samples, which the report has apart)."""
    details: dict[str, dict[str, Any]] = {}
    for stage in ("reconstruct", "refine", "texture", "validate"):
        info = workdir / stage / "info.json"
        if info.is_file():
            details[stage] = {k: v for k, v in json.loads(info.read_text()).items() if k != "losses"}
    return details


def run_export(ctx: StageContext) -> list[Path]:
    """Write the validated mesh in every requested format, the previews and the report into `export/`.

    The report's `stageDetails.export.stepSeconds` times its steps: load, meshes, previews, GPU telemetry.
    """
    started = time.monotonic()
    clock = StepClock()

    out_dir = ctx.stage_dir("export")
    validate_dir = ctx.workdir / "validate"
    metrics = QualityMetrics.model_validate_json((validate_dir / "metrics.json").read_text())
    mesh = load_result_mesh(validate_dir / "mesh")
    clock.lap("load")
    formats = list(dict.fromkeys(ctx.export_formats or ctx.settings.export.formats))
    written = export_mesh(mesh, out_dir, formats)
    clock.lap("meshes")
    ctx.progress(0.6)

    previews = out_dir / "previews"
    previews.mkdir(exist_ok=True)
    for png in sorted((validate_dir / "previews").glob("*.png")):
        shutil.copyfile(png, previews / png.name)
        written.append(previews / png.name)
    clock.lap("previews")

    capture = ctx.capture
    gpu = gpu_telemetry(ctx.device, ctx.gpu_usage())
    clock.lap("GPU telemetry")
    details = stage_details(ctx.workdir) | {"export": {"stepSeconds": clock.seconds}}  # the steps before the report
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
        stage_details=details,
        gpu=gpu,
    )
    written += write_report(report, out_dir)
    ctx.progress(1.0)
    return written
