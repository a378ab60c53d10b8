"""Geometry benchmark: reconstruction backends side by side on the hard objects (issue 10, point 1).

    python tools/bench_geometry.py --out DIR [--objects tea_set_01 spot] [--backends visual-hull photo-hull]
    python tools/bench_geometry.py --out DIR --coarse [visual-hull:256 density-field:192:1000 ...]

For each object: one synthesized capture (100 train + 20 test views, 512², outside the timed region),
then the whole pipeline (runner.execute, fetch -> publish, as tools/bench_recon.py times it) once per
backend at the standard preset with only `reconstruction.backend` overridden. Prints one table row per
run and writes DIR/geometry.json (rows with stage seconds, PSNR, IoU, Chamfer, F-score, carved voxels).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_pipeline import synthesized_capture, time_pipeline


def run(obj: str, backend: str, device: str, scratch: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    import torch

    from recon_worker.engine.synth import SynthOptions
    from recon_worker.presets import deep_merge, resolve_quality

    capture, output = scratch / obj / "capture", scratch / obj / f"out-{backend}"
    synthesized_capture(obj, capture, SynthOptions(views=100, test_views=20, resolution=512, device=device))
    quality = resolve_quality("standard", deep_merge({"reconstruction": {"backend": backend}}, overrides))
    run = time_pipeline(capture, output, quality, device)
    outcome = run.outcome
    row: dict[str, Any] = {"object": obj, "backend": backend, "total_s": round(run.seconds, 2)}
    if outcome.exit_code != 0:
        row["error"] = outcome.message
        return row
    manifest = json.loads((output / "manifest.json").read_text())
    m = json.loads((output / "report.json").read_text())["metrics"]
    row.update(
        stages={k: round(v, 2) for k, v in manifest["stageSeconds"].items()},
        psnr=m["psnr"], mask_iou=m["maskIoU"], chamfer=m["chamferL1"], fscore=m["fScore"], faces=m["faces"],
        valid=bool(m["watertight"] and m["manifold"]),
        gpu_gb=round(torch.cuda.max_memory_reserved() / 1e9, 2) if device == "cuda" else None,
    )  # fmt: skip
    return row


def coarse(obj: str, variants: list[str], device: str, scratch: Path, out: Path) -> list[dict[str, Any]]:
    """The reconstruct stage alone, per `BACKEND:RESOLUTION[:STEPS]` variant, scored and decimated."""
    import torch

    from recon_worker.capture import load_capture
    from recon_worker.engine.decimation import decimate
    from recon_worker.engine.export import load_mesh
    from recon_worker.engine.metrics import geometry_metrics
    from recon_worker.engine.reconstruct import get_reconstructor
    from recon_worker.engine.reconstruct.views import SilhouetteViews
    from recon_worker.engine.synth import SynthOptions

    capture = scratch / obj / "capture"
    synthesized_capture(obj, capture, SynthOptions(views=100, test_views=20, resolution=512, device=device))
    loaded = load_capture(capture)
    assert loaded.ground_truth is not None
    truth = load_mesh(loaded.ground_truth)
    views = SilhouetteViews.from_capture(loaded, device, with_color=True)
    rows = []
    for variant in variants:
        backend, resolution, *steps = variant.split(":")
        reconstructor = get_reconstructor(backend)
        if steps:
            reconstructor.steps = int(steps[0])  # type: ignore[attr-defined]
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        mesh = reconstructor(views, int(resolution))
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        g = geometry_metrics(mesh, truth, device=device)
        started = time.perf_counter()
        decimation = decimate(mesh, 60_000, what="the coarse mesh")
        rows.append(
            {"object": obj, "variant": variant, "seconds": round(seconds, 2), "faces": len(mesh.faces),
             "chamfer": g.chamfer_l1, "accuracy": g.accuracy, "completeness": g.completeness, "fscore": g.fscore,
             "carved": getattr(reconstructor, "carved_voxels", None), "decimation": decimation.method,
             "decimation_s": round(time.perf_counter() - started, 2), "decimation_notes": decimation.notes}
        )  # fmt: skip
        mesh.export(out / f"{obj}-{variant.replace(':', '-')}.ply")
        print(json.dumps(rows[-1]), flush=True)
    return rows


def refine_ab(capture: Path, device: str, repeats: int = 2) -> list[dict[str, Any]]:
    """Refine alone on one capture (standard preset), edge pairs gathered with and without a host sync."""
    import torch

    from recon_worker.capture import load_capture
    from recon_worker.engine.reconstruct.views import SilhouetteViews
    from recon_worker.engine.reconstruct.visual_hull import VisualHull
    from recon_worker.engine.refine import TrainingViews, refine_mesh
    from recon_worker.engine.render import get_renderer
    from recon_worker.presets import resolve_quality

    loaded = load_capture(capture)
    coarse = VisualHull()(SilhouetteViews.from_capture(loaded, device), 192)
    renderer = get_renderer(device)
    views = TrainingViews.from_capture(loaded, 512, renderer.device)
    settings = resolve_quality("standard").refinement
    compositor = renderer._composite  # type: ignore[attr-defined]
    rows = []
    for _ in range(repeats):
        for static in (False, True):
            compositor.static = static
            torch.cuda.synchronize()
            started = time.perf_counter()
            result = refine_mesh(coarse, views, renderer, settings)
            torch.cuda.synchronize()
            rows.append(
                {"static": static, "refine_s": round(time.perf_counter() - started, 2),
                 "final_loss": result.losses[-1][1], "overflows": compositor.overflows}
            )  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    import logging

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--objects", nargs="*", default=["tea_set_01", "painted_wooden_stool", "toycar", "spot"])
    parser.add_argument("--backends", nargs="*", default=["visual-hull", "photo-hull"])
    parser.add_argument("--overrides", default="{}", help="JSON of spec.quality overrides for every run")
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--refine-ab", action="store_true", help="also time refine alone on spot, sync vs no sync")
    parser.add_argument("--coarse", nargs="*", metavar="BACKEND:RES[:STEPS]", help="the reconstruct stage alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for backend_module in ("photo_hull", "density_field"):  # what each carved, and the fit's time
        logging.getLogger(f"recon_worker.engine.reconstruct.{backend_module}").setLevel(logging.INFO)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench-geometry-"))
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    if args.coarse is not None:
        variants = args.coarse or ["visual-hull:256", "density-field:256", "density-field:192:1000"]
        for obj in args.objects:
            rows += coarse(obj, variants, device, scratch, args.out)
            (args.out / "coarse.json").write_text(json.dumps(rows, indent=2))
        return 0
    overrides = json.loads(args.overrides)
    for i, obj in enumerate(args.objects):
        for backend in args.backends:
            if i == 0 and backend == args.backends[0]:
                run(obj, backend, device, scratch, overrides)  # warm-up: CUDA context, nvdiffrast build
            try:
                row = run(obj, backend, device, scratch, overrides)
            except Exception as exc:  # keep the rows measured so far
                row = {"object": obj, "backend": backend, "error": f"{type(exc).__name__}: {exc}"}
            rows.append(row)
            (args.out / "geometry.json").write_text(json.dumps(rows, indent=2))
            print(json.dumps(row), flush=True)
    print(
        "| object | backend | total s | reconstruct s | refine s | PSNR | IoU | Chamfer % | F@0.5% | valid | GPU GB |"
    )
    for r in rows:
        s = r.get("stages", {})
        print(
            f"| {r['object']} | {r['backend']} | {r.get('total_s')} | {s.get('reconstruct')} | {s.get('refine')} "
            f"| {r.get('psnr')} | {r.get('mask_iou')} | {r.get('chamfer')} | {r.get('fscore')} | {r.get('valid')} "
            f"| {r.get('gpu_gb')} | {r.get('error', '')}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
