"""The `reconstruct` stage: capture masks and cameras in, `reconstruct/coarse.ply` out."""

from __future__ import annotations

import json
import time

from recon_worker.engine.reconstruct import get_reconstructor
from recon_worker.engine.reconstruct.views import SilhouetteViews
from recon_worker.stage import StageContext

COARSE_MESH = "coarse.ply"


def run_reconstruct(ctx: StageContext) -> None:
    settings = ctx.settings.reconstruction
    start = time.perf_counter()
    reconstructor = get_reconstructor(settings.backend)
    # Photo-consistency backends read the pictures' colour too; silhouette backends only the masks.
    with_color = bool(getattr(reconstructor, "needs_color", False))
    views = SilhouetteViews.from_capture(ctx.capture, ctx.device, with_color=with_color)
    ctx.progress(0.2)
    ctx.check_cancelled()
    mesh = reconstructor(views, settings.resolution)
    out = ctx.stage_dir("reconstruct")
    mesh.export(out / COARSE_MESH)
    info = {
        "backend": settings.backend,
        "resolution": settings.resolution,
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "watertight": bool(mesh.is_watertight),
        "seconds": time.perf_counter() - start,
    }
    if hasattr(reconstructor, "carved_voxels"):  # photo-consistency carving: how much colour removed
        info["carvedVoxels"] = reconstructor.carved_voxels
        info["carvedLayers"] = getattr(reconstructor, "layers", 0)
    if hasattr(reconstructor, "fit_seconds"):  # a field fitted by rendering: how long, how well
        info["fitSeconds"] = reconstructor.fit_seconds
        info["fitLoss"] = getattr(reconstructor, "final_loss", None)
    (out / "info.json").write_text(json.dumps(info, indent=2))
    ctx.log.info("reconstruct: %s at %d³ gave %d faces", settings.backend, settings.resolution, len(mesh.faces))
    ctx.progress(1.0)
