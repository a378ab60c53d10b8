"""Quality presets: what `draft`, `standard` and `high` mean to the engine.

This module is the single source of truth for preset values. The operator resolves a job's preset and
overrides into full settings before it writes the task document, from a generated copy of this table
(`operator/recon_operator/data/presets.json`, written by `tools/generate.py` and checked equal by a test),
so the two never drift apart.

Pure Python and pydantic only: importing it must not import PyTorch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

PresetName = Literal["draft", "standard", "high"]
ExportFormat = Literal["glb", "obj", "ply"]


class _Model(BaseModel):
    # camelCase on the wire (as in the CRD), snake_case in Python; unknown keys are errors.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ReconstructionSettings(_Model):
    """Coarse shape from masks and cameras."""

    backend: str = Field("visual-hull", description="Reconstructor entry point name.")
    resolution: int = Field(192, ge=16, le=1024, description="Voxel grid resolution along each axis.")


class RefinementSettings(_Model):
    """Differentiable-rendering refinement of geometry and appearance."""

    iterations: int = Field(600, ge=0, le=100_000, description="Optimisation steps.")
    render_resolution: int = Field(512, ge=32, le=4096, description="Longest side of rendered views, pixels.")
    batch_views: int = Field(8, ge=1, le=64, description="Training views rendered per step.")
    texture_size: int = Field(1024, ge=64, le=8192, description="Texture map side, pixels.")
    max_faces: int = Field(60_000, ge=100, le=2_000_000, description="The coarse mesh is decimated to this.")
    position_lr: float = Field(5e-4, gt=0, le=0.1, description="Vertex step size, fraction of the bbox diagonal.")
    laplacian_weight: float = Field(0.02, ge=0, description="Smoothness weight (uniform Laplacian).")
    mask_weight: float = Field(2.0, ge=0, description="Silhouette loss weight, relative to colour.")
    geometry_color_weight: float = Field(
        0.3, ge=0, le=1, description="Share of the colour loss' gradient that moves vertices (silhouettes: 1)."
    )
    appearance: Literal["shaded", "free"] = Field(
        "shaded",
        description="Appearance model fitted with the geometry: albedo x learned lighting + gloss (`shaded`), "
        "or a free per-vertex colour with a linear view-dependent term (`free`).",
    )
    coarse_fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of the steps rendered at half the resolution (coarse to fine)."
    )


class ExportSettings(_Model):
    formats: tuple[ExportFormat, ...] = Field(("glb", "obj"), min_length=1, description="Files to export.")
    target_faces: int = Field(100_000, ge=100, le=10_000_000, description="Upper bound on exported faces.")


class QualitySettings(_Model):
    """Fully resolved engine settings for one job."""

    preset: PresetName = "standard"
    reconstruction: ReconstructionSettings = ReconstructionSettings()
    refinement: RefinementSettings = RefinementSettings()
    export: ExportSettings = ExportSettings()


# Preset values, as the nested camelCase mapping that `QualitySettings` validates.
PRESETS: dict[PresetName, dict[str, Any]] = {
    # CPU-friendly: small grid, few low-resolution steps on a small mesh (PyTorch3D's CPU rasterizer costs
    # pixels x faces: ~0.3 s a step here), texture baked from the photos at their own resolution.
    "draft": {
        "reconstruction": {"backend": "visual-hull", "resolution": 64},
        "refinement": {
            "iterations": 30,
            "renderResolution": 96,
            "batchViews": 3,
            "textureSize": 512,
            "maxFaces": 1500,
        },
        "export": {"formats": ["glb", "obj"], "targetFaces": 20_000},
    },
    "standard": {
        "reconstruction": {"backend": "visual-hull", "resolution": 192},
        # maxFaces bounds xatlas' unwrap time in the texture stage (20k faces: 0.4-0.6 s on the H200's 16-core host).
        # 300 steps of 16 views, the first half at 256²: the same views seen as 600 steps of 8, with half the
        # per-step launch overhead (refine is bound by the host's kernel launches, docs/geometry.md).
        "refinement": {
            "iterations": 300,
            "renderResolution": 512,
            "batchViews": 16,
            "coarseFraction": 0.5,
            "textureSize": 1024,
            "maxFaces": 20_000,
        },
        "export": {"formats": ["glb", "obj"], "targetFaces": 100_000},
    },
    "high": {
        # density-field: on the H200 at the standard settings it cut the Chamfer distance of toycar by 20 %
        # and of the stool by 16 % against visual-hull, for ~20 s more (docs/geometry.md): high's time allows it.
        "reconstruction": {"backend": "density-field", "resolution": 256},
        "refinement": {
            "iterations": 2000,
            "renderResolution": 800,
            "batchViews": 8,
            "textureSize": 2048,
            "maxFaces": 60_000,
        },
        "export": {"formats": ["glb", "obj"], "targetFaces": 300_000},
    },
}


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `overrides` applied recursively (lists and scalars replace)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_quality(preset: PresetName, overrides: dict[str, Any] | None = None) -> QualitySettings:
    """Preset values with the job's overrides (camelCase, as in `spec.quality`) applied on top."""
    if preset not in PRESETS:
        raise ValueError(f"unknown quality preset {preset!r}; expected one of {', '.join(PRESETS)}")
    values = deep_merge(PRESETS[preset], overrides or {})
    return QualitySettings.model_validate({**values, "preset": preset})
