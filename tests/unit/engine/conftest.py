"""Fixtures shared by the engine's unit tests."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image

from recon_worker.engine.objfile import textured


@pytest.fixture
def textured_sphere() -> trimesh.Trimesh:
    """An icosphere (642 vertices) with a random UV per vertex and a random 32² texture."""
    geometry = trimesh.creation.icosphere(subdivisions=3)
    uv = np.random.default_rng(0).random((len(geometry.vertices), 2))
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    return textured(np.asarray(geometry.vertices), np.asarray(geometry.faces), uv, image)
