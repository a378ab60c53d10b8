"""The engine's stage functions, in pipeline order (see recon_worker/stage.py for the contract).

Files each stage leaves under `ctx.workdir` (all in the capture's world coordinates):

    reconstruct/coarse.ply        closed coarse mesh (backend `settings.reconstruction.backend`)
    reconstruct/info.json         backend, grid resolution, faces, seconds
    refine/refined.ply            refined closed mesh (same topology as the decimated coarse mesh)
    refine/appearance.pt          {"model", "colors": [V, 3], ...} the fitted appearance (engine/shading.py)
    refine/info.json              renderer, iterations, resolution, loss samples, seconds
    texture/mesh.npz              the refined mesh with UVs (vertices split along seams; engine/stagemesh.py)
    texture/texture.png           its base-colour texture
    texture/info.json             renderer, texture size, unwrap/bake seconds
    (validate/ and export/: see their modules)

`recon_worker.engine.texture.load_textured_mesh(workdir / "texture")` reads the textured mesh back.
Each function is a thin call into the module that holds the stage.
"""

from __future__ import annotations

from recon_worker.stage import StageContext


def reconstruct(ctx: StageContext) -> None:
    from recon_worker.engine.reconstruct.stage import run_reconstruct

    run_reconstruct(ctx)


def refine(ctx: StageContext) -> None:
    from recon_worker.engine.refine import run_refine

    run_refine(ctx)


def texture(ctx: StageContext) -> None:
    from recon_worker.engine.texture import run_texture

    run_texture(ctx)


def validate(ctx: StageContext) -> None:
    from recon_worker.engine.validate import run_validate

    run_validate(ctx)


def export(ctx: StageContext) -> None:
    from recon_worker.engine.export import run_export

    run_export(ctx)
