"""Coarse shape from masks and cameras, through pluggable reconstructors.

A reconstructor is a callable `(views: SilhouetteViews, resolution: int) -> trimesh.Trimesh` returning a
closed mesh in the capture's world coordinates. Backends are found through the Python entry-point group
`recon_worker.reconstructors` (declared in worker/pyproject.toml), so a learned model can be added by
installing a package that declares one and mounting its weights; the worker never downloads weights.
The built-ins (`visual-hull`, `silhouette-sdf`, `photo-hull`, `density-field`) are also known by name here, so a source
checkout that was not pip-installed still finds them. A backend with `needs_color = True` also gets the
views' colours (`SilhouetteViews.rgb`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import trimesh

    from recon_worker.engine.reconstruct.views import SilhouetteViews

ENTRY_POINT_GROUP = "recon_worker.reconstructors"
BUILTIN: dict[str, str] = {
    "visual-hull": "recon_worker.engine.reconstruct.visual_hull:VisualHull",
    "silhouette-sdf": "recon_worker.engine.reconstruct.silhouette_sdf:SilhouetteSdf",
    "photo-hull": "recon_worker.engine.reconstruct.photo_hull:PhotoHull",
    "density-field": "recon_worker.engine.reconstruct.density_field:DensityField",
}


class Reconstructor(Protocol):
    name: str

    def __call__(self, views: SilhouetteViews, resolution: int) -> trimesh.Trimesh: ...


def available() -> list[str]:
    """Names of every reconstructor this worker can load."""
    return sorted({*BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def get_reconstructor(name: str) -> Reconstructor:
    """Instantiate the reconstructor registered as `name` (entry points first, then the built-ins)."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if found:
        factory = found[0].load()
    elif name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        factory = getattr(importlib.import_module(module), attr)
    else:
        raise ValueError(f"unknown reconstruction backend {name!r}; available: {', '.join(available())}")
    reconstructor: Reconstructor = factory()
    return reconstructor
