"""The appearance model refine fits: per-vertex albedo x learned low-order lighting, plus a little gloss.

Why not a free per-vertex colour: a free colour (and a free per-vertex function of the viewing
direction) can paint any picture onto a false surface, e.g. the lid the visual hull puts on a cup, so
the colour loss never asks the geometry to move. Here a vertex's colour is

    albedo_v * shading(n_v)  +  gloss_v * sum_k a_k max(0, r . d_k)^p_k

- `shading` is one global, second-order spherical-harmonic function of the surface normal per colour
  channel (9 coefficients x 3: ambient light, any number of distant lights and a fill, as Ramamoorthi
  & Hanrahan 2001 showed is within a few per cent for Lambertian surfaces). The normal comes from the
  current geometry, differentiably: a surface whose shading disagrees with the photos is turned (a lid
  shaded like a flat disc over a cavity whose walls are lit differently), which is what lets the
  colour loss reach geometry that silhouettes cannot see.
- gloss: a per-vertex, per-channel strength times a few global lobes around the mirror direction r
  of the view about the normal (learned unit directions d_k, amplitudes a_k and exponents p_k), so a
  highlight that moves with the viewer has somewhere to go. The lobes see the normal *detached*:
  a highlight never turns (dents) the surface; only the diffuse shading does.

Everything is global except albedo and gloss strength, so a view-dependent picture cannot be painted:
a false surface's colours disagree between views in ways that no per-vertex constant explains.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOBES = 3  # global gloss lobes (a key light, a second one, a fill)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """[..., 9] real spherical harmonics up to degree 2 (unnormalised) of unit `normals` [..., 3]."""
    x, y, z = normals.unbind(-1)
    one = torch.ones_like(x)
    return torch.stack([one, x, y, z, x * y, y * z, x * z, x * x - y * y, 3 * z * z - 1], dim=-1)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[V, 3] area-weighted unit vertex normals (outward for counter-clockwise faces), differentiable."""
    faces = faces.long()
    # index_select: its backward is an atomic index_add, not advanced indexing's sort-based scatter.
    v0, v1, v2 = (verts.index_select(0, faces[:, i]) for i in range(3))
    face_normals = torch.cross(v1 - v0, v2 - v0, dim=-1)  # length: twice the area
    summed = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), face_normals.repeat_interleave(3, dim=0))
    return F.normalize(summed, dim=-1, eps=1e-12)


class ShadedAppearance(torch.nn.Module):
    """Albedo x spherical-harmonic shading + detached-normal gloss, for a mesh of `num_verts` vertices."""

    def __init__(self, num_verts: int, device: torch.device) -> None:
        super().__init__()
        self.albedo = torch.nn.Parameter(torch.full((num_verts, 3), 0.5, device=device))
        lighting = torch.zeros((9, 3), device=device)
        lighting[0] = 1.0  # uniform white light: shading 1 everywhere until fitted
        self.lighting = torch.nn.Parameter(lighting)
        self.gloss = torch.nn.Parameter(torch.zeros((num_verts, 3), device=device))
        # Lobe directions start spread over the sphere (a tetrahedron's corners), exponents at 16.
        dirs = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]], device=device)[:LOBES]
        self.lobe_dirs = torch.nn.Parameter(dirs / math.sqrt(3))
        self.lobe_log_amp = torch.nn.Parameter(torch.zeros(LOBES, device=device))
        self.lobe_log_exp = torch.nn.Parameter(torch.full((LOBES,), math.log(16.0), device=device))

    def param_groups(self, lr_scale: float = 1.0) -> list[dict[str, object]]:
        return [
            {"params": [self.albedo], "lr": 0.03 * lr_scale},
            {"params": [self.lighting], "lr": 0.01 * lr_scale},
            {"params": [self.gloss], "lr": 0.01 * lr_scale},
            {"params": [self.lobe_dirs, self.lobe_log_amp, self.lobe_log_exp], "lr": 0.02 * lr_scale},
        ]

    def shading(self, normals: torch.Tensor) -> torch.Tensor:
        """[..., 3] diffuse light arriving at surfaces with `normals` [..., 3] (clamped at 0)."""
        return (sh_basis(normals) @ self.lighting).clamp(min=0)

    def forward(self, normals: torch.Tensor, view_dirs: torch.Tensor) -> torch.Tensor:
        """[B, V, 3] vertex colours for unit `normals` [V, 3] (differentiable) seen along `view_dirs`
        [B, V, 3] (unit, camera -> vertex)."""
        diffuse = self.albedo.clamp(0, 1) * self.shading(normals)  # [V, 3]
        n = normals.detach()
        # Mirror of the view about the normal: where a viewer would see a light reflected.
        mirror = view_dirs - 2 * (view_dirs * n).sum(-1, keepdim=True) * n  # [B, V, 3]
        cos = (mirror @ F.normalize(self.lobe_dirs, dim=-1).T).clamp(min=0)  # [B, V, K]
        lobes = (self.lobe_log_amp.exp() * cos.clamp(min=1e-6) ** self.lobe_log_exp.exp()).sum(-1, keepdim=True)
        return diffuse + self.gloss.clamp(min=0) * lobes

    def regulariser(self) -> torch.Tensor:
        """Gloss is the exception, not the rule: a small L1 prior on its strength."""
        return self.gloss.clamp(min=0).mean()

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "colors": self.albedo.detach().clamp(0, 1).cpu(),
            "lighting": self.lighting.detach().cpu(),
            "gloss": self.gloss.detach().clamp(min=0).cpu(),
            "lobeDirections": F.normalize(self.lobe_dirs.detach(), dim=-1).cpu(),
            "lobeAmplitudes": self.lobe_log_amp.detach().exp().cpu(),
            "lobeExponents": self.lobe_log_exp.detach().exp().cpu(),
        }


class FreeAppearance(torch.nn.Module):
    """The earlier model, kept for comparison: a free per-vertex colour plus a per-vertex linear function
    of the viewing direction (degree-1 spherical harmonics). Paints any picture on any surface."""

    def __init__(self, num_verts: int, device: torch.device) -> None:
        super().__init__()
        self.colors = torch.nn.Parameter(torch.full((num_verts, 3), 0.5, device=device))
        self.view_dep = torch.nn.Parameter(torch.zeros((num_verts, 3, 3), device=device))

    def param_groups(self, lr_scale: float = 1.0) -> list[dict[str, object]]:
        return [{"params": [self.colors], "lr": 0.03 * lr_scale}, {"params": [self.view_dep], "lr": 0.01 * lr_scale}]

    def forward(self, normals: torch.Tensor, view_dirs: torch.Tensor) -> torch.Tensor:
        return self.colors[None] + torch.einsum("vcj,bvj->bvc", self.view_dep, view_dirs)

    def regulariser(self) -> torch.Tensor:
        return (self.view_dep * self.view_dep).mean()

    def state(self) -> dict[str, torch.Tensor]:
        return {"colors": self.colors.detach().clamp(0, 1).cpu(), "view_dependence": self.view_dep.detach().cpu()}
