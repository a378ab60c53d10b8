"""Texture: xatlas unwrap, projective bake from the photos, seams padded, files readable again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from recon_worker.capture import load_capture
from recon_worker.engine.render import get_renderer
from recon_worker.engine.texture import dilate, load_textured_mesh, texture_mesh
from tests.unit.engine.synthetic_sphere import write_sphere_capture

COLOR = (0.2, 0.6, 0.3)


def test_bake_reproduces_the_photographed_colour(tmp_path: Path) -> None:
    capture = load_capture(write_sphere_capture(tmp_path / "cap", views=8, size=48, radius=0.5, color=COLOR))
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    timings = texture_mesh(mesh, capture, get_renderer("cpu"), 64, tmp_path / "texture")
    assert {"unwrapSeconds", "bakeSeconds"} <= set(timings)
    texture = np.asarray(Image.open(tmp_path / "texture" / "texture.png").convert("RGB")) / 255.0
    # Every texel, gutter included, holds the sphere's colour (dilation padded the seams).
    np.testing.assert_allclose(texture.reshape(-1, 3).mean(axis=0), COLOR, atol=0.02)
    assert np.abs(texture - COLOR).max() < 0.1

    textured = load_textured_mesh(tmp_path / "texture")
    assert textured.visual.kind == "texture"
    assert textured.visual.uv.shape == (len(textured.vertices), 2)
    welded = textured.copy()
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    assert welded.is_watertight
    assert (tmp_path / "texture" / "textured.mtl").read_text().count("map_Kd texture.png") == 1


def test_dilation_fills_empty_texels_from_their_neighbours() -> None:
    image = torch.zeros((8, 8, 3))
    filled = torch.zeros((8, 8), dtype=torch.bool)
    image[3, 3] = torch.tensor([1.0, 0.5, 0.25])
    filled[3, 3] = True
    grown, mask = dilate(image, filled, iterations=2)
    assert bool(mask[1:6, 1:6].all()) and not bool(mask[0, 7])
    torch.testing.assert_close(grown[5, 5], torch.tensor([1.0, 0.5, 0.25]))


@pytest.mark.parametrize("backend", ["visual-hull", "silhouette-sdf"])
def test_engine_stages_write_the_documented_files(tmp_path: Path, backend: str) -> None:
    from recon_worker.engine import stages
    from recon_worker.presets import resolve_quality
    from recon_worker.stage import StageContext
    from recon_worker.task import Gates

    capture = load_capture(write_sphere_capture(tmp_path / "cap", views=8, size=32, radius=0.5, color=COLOR))
    overrides = {
        "reconstruction": {"backend": backend, "resolution": 24},
        "refinement": {"iterations": 3, "renderResolution": 32, "batchViews": 2, "textureSize": 64, "maxFaces": 400},
    }
    ctx = StageContext(capture, resolve_quality("draft", overrides), Gates(), tmp_path / "work")
    for stage in (stages.reconstruct, stages.refine, stages.texture):
        stage(ctx)
    work = tmp_path / "work"
    for name in (
        "reconstruct/coarse.ply",
        "refine/refined.ply",
        "refine/appearance.pt",
        "texture/textured.obj",
        "texture/textured.mtl",
        "texture/texture.png",
    ):
        assert (work / name).is_file(), name
    assert trimesh.load(work / "refine" / "refined.ply").is_watertight
