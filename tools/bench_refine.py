"""Refine alone, timed and measured: variants side by side on one synthesized capture (issue 10, point 4).

    python tools/bench_refine.py --out DIR [--objects spot] [--variants base static ...] [--profile]

For each object: one capture (100 train views, 512², untimed), its visual hull at 192³ (untimed), then
`refine_mesh` once per variant, timed between CUDA syncs, and the refined mesh's Chamfer-L1 / F-score
against the authored surface and the refined silhouettes' IoU against the training masks. A variant is
a JSON object of refinement settings (camelCase, over the standard preset) plus `static` (the edge
buffer without a host sync). `--profile` also runs 30 steps of each named variant under
torch.profiler and writes the top kernels and operators to DIR/profile-<variant>.txt.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_pipeline import synthesized_capture

VARIANTS: dict[str, dict[str, Any]] = {
    "free": {"appearance": "free", "static": False},
    "free-static": {"appearance": "free", "static": True},
    "shaded-static": {"appearance": "shaded", "static": True},
    "shaded-static-300x16": {"appearance": "shaded", "static": True, "iterations": 300, "batchViews": 16},
    "shaded-static-300x16-c2f": {
        "appearance": "shaded", "static": True, "iterations": 300, "batchViews": 16, "coarseFraction": 0.5,
    },
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--objects", nargs="*", default=["spot"])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--extra", default="{}", help="JSON {name: variant} added to the built-in variants")
    parser.add_argument("--profile", nargs="*", default=[], help="variants to profile (30 steps)")
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--grid", type=int, default=192)
    parser.add_argument("--smoke", action="store_true", help="tiny settings (a CPU check of this tool)")
    args = parser.parse_args()

    import numpy as np
    import torch
    import trimesh

    from recon_worker.capture import load_capture
    from recon_worker.engine.metrics import geometry_metrics
    from recon_worker.engine.reconstruct.views import SilhouetteViews
    from recon_worker.engine.reconstruct.visual_hull import VisualHull
    from recon_worker.engine.refine import TrainingViews, read_mesh, refine_mesh
    from recon_worker.engine.render import get_renderer
    from recon_worker.engine.rendering import render_mesh
    from recon_worker.engine.synth import SynthOptions
    from recon_worker.presets import deep_merge, resolve_quality

    variants = {**VARIANTS, **json.loads(args.extra)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench-refine-"))
    args.out.mkdir(parents=True, exist_ok=True)
    renderer = get_renderer(device)
    compositor = renderer._composite  # type: ignore[attr-defined]
    rows: list[dict[str, Any]] = []

    def settings_of(variant: dict[str, Any], **extra: Any) -> Any:
        refinement = {k: v for k, v in variant.items() if k != "static"}
        if args.smoke:
            refinement |= {"iterations": 4, "batchViews": 2, "maxFaces": 1500, "renderResolution": args.resolution}
        return resolve_quality("standard", deep_merge({"refinement": refinement}, {"refinement": extra})).refinement

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for obj in args.objects:
        capture_dir = scratch / obj
        options = SynthOptions(views=args.views, test_views=0, resolution=args.resolution, device=device)
        synthesized_capture(obj, capture_dir, options)
        capture = load_capture(capture_dir)
        coarse = VisualHull()(SilhouetteViews.from_capture(capture, device), args.grid)
        views = TrainingViews.from_capture(capture, args.resolution, renderer.device)
        truth = read_mesh(capture_dir / "ground_truth.obj")
        if not rows:  # warm-up: CUDA context, nvdiffrast's plugin build, allocator
            refine_mesh(coarse, views, renderer, settings_of(variants[args.variants[0]], iterations=20))
        for name in args.profile:
            from torch.profiler import ProfilerActivity, profile

            compositor.static = bool(variants[name].get("static", False))
            settings = settings_of(variants[name], iterations=30)
            refine_mesh(coarse, views, renderer, settings)  # warm this variant's shapes
            sync()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                started = time.perf_counter()
                refine_mesh(coarse, views, renderer, settings)
                sync()
                wall = time.perf_counter() - started
            table = prof.key_averages()
            text = [f"{name}: 30 steps in {wall:.3f} s wall (profiled)"]
            text.append(table.table(sort_by="self_cuda_time_total", row_limit=25))
            text.append(table.table(sort_by="self_cpu_time_total", row_limit=25))
            (args.out / f"profile-{name}.txt").write_text("\n".join(text))
            print(text[0], flush=True)
        for name in args.variants:
            variant = variants[name]
            compositor.static = bool(variant.get("static", False))
            compositor.overflows = 0
            settings = settings_of(variant)
            sync()
            started = time.perf_counter()
            result = refine_mesh(coarse, views, renderer, settings)
            sync()
            seconds = time.perf_counter() - started
            mesh = trimesh.Trimesh(result.verts, result.faces, process=False)
            geometry = geometry_metrics(mesh, truth, device=device)
            with torch.no_grad():
                ious = []
                for start in range(0, len(views.cameras), 16):
                    cams = views.cameras[slice(start, start + 16)]
                    out = render_mesh(renderer, torch.tensor(result.verts, dtype=torch.float32, device=device),
                                      torch.tensor(result.faces, device=device), cams)  # fmt: skip
                    pred = out.alpha[..., 0] > 0.5
                    true = views.images[start : start + 16, ..., 3] > 127
                    ious.append(((pred & true).sum() / (pred | true).sum().clamp(min=1)).item())
            row = {
                "object": obj, "variant": name, "settings": variant, "refine_s": round(seconds, 2),
                "chamfer": round(geometry.chamfer_l1, 4), "fscore": round(geometry.fscore, 4),
                "train_iou": round(float(np.mean(ious)), 4), "final_loss": round(result.losses[-1][1], 5),
                "overflows": compositor.overflows, "faces": len(result.faces),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "refine.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
