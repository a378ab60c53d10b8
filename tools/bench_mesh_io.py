"""Mesh-file benchmark: the CPU steps of texture, validate and export that grow with the mesh.

The textured mesh of the per-face atlas (every face its own chart, three vertices per face: the
texture stage's unwrap above 25,000 faces) at the high preset's 60,000 faces and at 327,680. Each
figure is the best of a few runs of one step, beside the alternative it replaced:

- texture's write (`engine.stagemesh`: mesh.npz + texture.png),
- validate's read of it, against reading the same mesh as OBJ text with trimesh,
- validate's repair and checks (`engine.meshcheck`) with the integer rows packed into int64 keys
  (`engine.introws`), against `np.unique(axis=0)`,
- export's three writers (GLB, OBJ, PLY) at once and one after another, and export's OBJ text
  (`engine.objfile`) against trimesh's exporter.

    tools/bench_mesh_io.py run --out .scratch/bench-mesh-io.json     # here, or on the GPU host
    tools/bench_mesh_io.py docs .scratch/bench-mesh-io.json [more.json ...] [--keep]

`docs` rewrites the "## Mesh files between stages" section of docs/benchmarks.md and
docs/benchmarks/mesh-io.json. No GPU is used: on the GPU host these are its CPU's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from benchdocs import gather_records, replace_section

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "worker"))

import trimesh  # noqa: E402

import recon_worker.engine.manifold as manifold_module  # noqa: E402
import recon_worker.engine.meshcheck as meshcheck_module  # noqa: E402
from recon_worker.engine.export import (  # noqa: E402
    export_mesh,
    uv_of,
    write_glb,
    write_obj,
    write_ply,
)
from recon_worker.engine.meshcheck import check_mesh, repair_mesh  # noqa: E402
from recon_worker.engine.objfile import obj_text, welded_obj_text  # noqa: E402
from recon_worker.engine.texture import face_atlas, load_textured_mesh, write_textured_mesh  # noqa: E402

DOCS_MD = REPO / "docs" / "benchmarks.md"
DOCS_JSON = REPO / "docs" / "benchmarks" / "mesh-io.json"
SECTION = "## Mesh files between stages"
FACES = (60_000, 327_680)
TEXTURE_SIZE = 2048
# Column name -> what it times (the docs table's legend).
STEPS = {
    "write": "texture's write (mesh.npz + texture.png, PNG level 1)",
    "read": "validate's read of it",
    "read_obj_trimesh": "the same mesh read as OBJ text by trimesh (the former stage file)",
    "repair_check": "validate's repair and checks, int64 keys",
    "repair_check_axis0": "the same with np.unique(axis=0)",
    "export_at_once": "export's GLB + OBJ + PLY writers at once",
    "export_in_turn": "the same one after another",
    "obj_text": "export's OBJ text (welded positions with smooth normals, objfile)",
    "obj_text_trimesh": "the same by trimesh's exporter",
}


def best(step: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return round(min(times), 3)


def atlas_mesh(faces: int) -> Any:
    """A sphere of about `faces` faces, unwrapped into the per-face atlas."""
    sphere = trimesh.creation.icosphere(subdivisions=7)  # 327,680 faces
    if faces < len(sphere.faces):
        sphere = sphere.simplify_quadric_decimation(face_count=faces)
    return face_atlas(sphere, TEXTURE_SIZE)


def texture() -> np.ndarray:
    """A smooth texture with some detail (PNG encodes it at the speed of a baked one, not of noise)."""
    yy, xx = np.mgrid[0:TEXTURE_SIZE, 0:TEXTURE_SIZE] / TEXTURE_SIZE
    return np.stack([xx, yy, 0.5 + 0.5 * np.sin(40 * xx) * np.cos(30 * yy)], axis=-1)


def measure(faces: int, runs: int, scratch: Path) -> dict[str, Any]:
    unwrapped, image = atlas_mesh(faces), texture()
    folder = scratch / f"texture-{faces}"
    write_textured_mesh(folder, unwrapped, image)
    mesh = load_textured_mesh(folder)
    # The former stage file: one UV per vertex (`f a/a`), next to the texture.png written above.
    uv = uv_of(mesh)
    (folder / "as-text.obj").write_text(obj_text(mesh.vertices, mesh.faces, uv, mesh.faces, "as-text.mtl"))
    (folder / "as-text.mtl").write_text("newmtl material\nmap_Kd texture.png\n")
    row: dict[str, Any] = {"faces": len(mesh.faces), "vertices": len(mesh.vertices)}
    row["write"] = best(lambda: write_textured_mesh(folder, unwrapped, image), runs)
    row["read"] = best(lambda: load_textured_mesh(folder), runs)
    row["read_obj_trimesh"] = best(
        lambda: trimesh.load(folder / "as-text.obj", process=False, maintain_order=True), runs
    )

    def repair_and_check() -> None:
        repaired, done = repair_mesh(mesh)
        check_mesh(repaired, done)

    row["repair_check"] = best(repair_and_check, runs)
    packed = meshcheck_module.unique_rows
    numpy_rows: Any = lambda rows, **flags: np.unique(rows, axis=0, **flags)  # noqa: E731
    meshcheck_module.unique_rows = manifold_module.unique_rows = numpy_rows
    try:
        row["repair_check_axis0"] = best(repair_and_check, runs)
    finally:
        meshcheck_module.unique_rows = manifold_module.unique_rows = packed
    out = scratch / f"export-{faces}"
    row["export_at_once"] = best(lambda: export_mesh(mesh, out, ["glb", "obj", "ply"]), runs)
    row["export_in_turn"] = best(
        lambda: (write_glb(mesh, out / "mesh.glb"), write_obj(mesh, out), write_ply(mesh, out / "mesh.ply")), runs
    )
    row["obj_text"] = best(lambda: welded_obj_text(mesh, "mesh.mtl"), runs)
    row["obj_text_trimesh"] = best(
        lambda: trimesh.exchange.obj.export_obj(
            mesh, include_normals=True, include_texture=True, return_texture=True, mtl_name="mesh.mtl"
        ),
        runs,
    )
    return row


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, {memory:.0f} GiB, Python {platform.python_version()}, "
        f"numpy {np.__version__}, trimesh {trimesh.__version__}, load average {os.getloadavg()[0]:.1f} at the end"
    )


def run(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for faces in FACES:
            rows.append(measure(faces, args.runs, Path(scratch)))
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": args.machine or machine(),
        "runs": args.runs,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        f"{result['date']}, {result['machine']}, best of {result['runs']} (s):",
        "",
        "| faces | vertices | " + " | ".join(STEPS) + " |",
        "|---:|---:|" + "---:|" * len(STEPS),
    ]
    for row in result["rows"]:
        cells = [f"{row[k]:.3f}" if row.get(k) is not None else "-" for k in STEPS]
        lines.append(f"| {row['faces']:,} | {row['vertices']:,} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def docs(args: argparse.Namespace) -> int:
    results = gather_records(DOCS_JSON, args.results, args.keep)
    lines = [
        SECTION,
        "",
        "The CPU steps of texture, validate and export that grow with the mesh, on the per-face atlas",
        "(three vertices per face), beside what each replaced; `make bench-mesh-io` (tools/bench_mesh_io.py),",
        "records in docs/benchmarks/mesh-io.json. Columns:",
        "",
        *[f"- `{k}`: {v}" for k, v in STEPS.items()],
        "",
    ]
    for result in results:
        lines += table(result)
    replace_section(DOCS_MD, SECTION, lines)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run", help="measure and write a results JSON file")
    r.add_argument("--out", required=True)
    r.add_argument("--runs", type=int, default=3, help="runs of each step (the best is kept)")
    r.add_argument("--machine", default="", help="describe the machine (default: read off this one)")
    r.set_defaults(handler=run)
    d = commands.add_parser("docs", help="write docs/benchmarks.md's section and mesh-io.json")
    d.add_argument("results", nargs="+")
    d.add_argument("--keep", action="store_true", help="add to the records already in mesh-io.json")
    d.set_defaults(handler=docs)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
