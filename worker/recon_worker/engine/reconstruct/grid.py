"""Voxel grids over the region the cameras look at, and their surfaces (marching cubes)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import trimesh

from recon_worker.engine.meshcheck import component_areas, component_labels, inside_out, speck_components
from recon_worker.engine.reconstruct.views import SilhouetteViews
from recon_worker.errors import InputsInvalid


@dataclass(frozen=True)
class Grid:
    lo: torch.Tensor  # [3] world position of the first voxel centre
    step: float  # voxel size, world units
    shape: tuple[int, int, int]  # voxels along (x, y, z)

    def points(self, start: int, stop: int) -> torch.Tensor:
        """World positions [P, 3] of voxels start..stop in (z, y, x)-major order (marching-cubes order)."""
        nx, ny, _ = self.shape
        index = torch.arange(start, stop, device=self.lo.device)
        ijk = torch.stack([index % nx, (index // nx) % ny, index // (nx * ny)], dim=-1)
        return self.lo + ijk.float() * self.step

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]


def initial_grid(views: SilhouetteViews, resolution: int) -> Grid:
    """A cube around the cameras' look-at point, as wide as the views' field at that distance."""
    center = views.look_at_point()
    distance = (views.c2w[:, :3, 3] - center).norm(dim=-1).mean().item()
    k = views.intrinsics
    half = 1.1 * distance * max(k.width / (2 * k.fx), k.height / (2 * k.fy))
    step = 2 * half / (resolution - 1)
    return Grid(center - half, step, (resolution, resolution, resolution))


def fit_grid(occupied: torch.Tensor, grid: Grid, resolution: int, margin: float = 0.06) -> Grid:
    """A grid of `resolution` voxels along its longest side over the occupied part of `grid` (+ margin)."""
    nz = torch.nonzero(occupied.reshape(grid.shape[2], grid.shape[1], grid.shape[0]))
    if len(nz) == 0:
        raise InputsInvalid("the masks carve away everything: no point is inside every silhouette (check poses)")
    lo_idx = nz.min(dim=0).values.flip(0).float() - 1
    hi_idx = nz.max(dim=0).values.flip(0).float() + 1
    lo = grid.lo + lo_idx * grid.step
    hi = grid.lo + hi_idx * grid.step
    pad = margin * (hi - lo).max()
    lo, hi = lo - pad, hi + pad
    step = float((hi - lo).max()) / (resolution - 1)
    shape = tuple(math.ceil(float(e) / step) + 1 for e in (hi - lo))
    return Grid(lo, step, (shape[0], shape[1], shape[2]))


def evaluate(grid: Grid, field: Callable[[torch.Tensor], torch.Tensor], chunk: int = 1 << 18) -> torch.Tensor:
    """`field` of every voxel centre, as a volume [Z, Y, X]."""
    values = [field(grid.points(s, min(s + chunk, grid.size))) for s in range(0, grid.size, chunk)]
    return torch.cat(values).reshape(grid.shape[2], grid.shape[1], grid.shape[0])


def surface(volume: torch.Tensor, grid: Grid, level: float) -> trimesh.Trimesh:
    """The closed surface {volume = level} (inside where volume < level), world coordinates: every piece
    but specks (one closed component per object of the scene)."""
    # scikit-image's Lewiner marching cubes resolves ambiguous cells consistently (closed output);
    # PyTorch3D's leaves cracks on generic fields.
    from skimage.measure import marching_cubes

    # A border of "outside" closes every surface that touches the grid's edge.
    big = float(volume.abs().max()) + abs(level) + 1.0
    # Values exactly at the level make vertices coincide and can pinch the surface.
    volume = torch.where(volume == level, torch.full_like(volume, level + 1e-6), volume)
    padded = torch.nn.functional.pad(volume.float(), (1, 1, 1, 1, 1, 1), value=big).cpu().numpy()
    verts, faces, _, _ = marching_cubes(padded, level)
    if len(faces) == 0:
        raise InputsInvalid("no surface: the reconstructed volume is empty (check masks and poses)")
    # Voxel indices (z, y, x) of the padded grid -> world (x, y, z).
    xyz = (verts[:, ::-1].astype(np.float64) - 1.0) * grid.step + grid.lo.double().cpu().numpy()
    mesh = trimesh.Trimesh(xyz, faces, process=True)
    labels = component_labels(mesh)
    if len(labels) and labels.max() > 0:
        # A scene of several objects (a tea set: ten pieces side by side) keeps every object; only
        # specks go (`meshcheck.SPECK_FRACTION` of the largest one's area: carving noise, mask dirt).
        specks = speck_components(component_areas(mesh, labels))
        if specks.any():
            mesh.update_faces(~specks[labels])
            mesh.remove_unreferenced_vertices()
        # Each object outward on its own (a void inside another stays as it is).
        labels = component_labels(mesh)
        flip = inside_out(mesh, labels)[labels]
        if flip.any():
            faces = np.asarray(mesh.faces).copy()
            faces[flip] = faces[flip][:, ::-1]
            mesh.faces = faces
        return mesh
    return _outward(mesh)


def _outward(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest (1-based) along dim 0 of [N, P]; k = 1 is the minimum."""
    k = int(np.clip(k, 1, values.shape[0]))
    return values.min(dim=0).values if k == 1 else torch.kthvalue(values, k, dim=0).values
