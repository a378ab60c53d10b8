"""The shaded appearance model: lighting that a fitted SH function explains, gloss that cannot turn surfaces."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from recon_worker.engine.shading import FreeAppearance, ShadedAppearance, vertex_normals
from recon_worker.engine.synth import AMBIENT, LIGHTS


def lambert(normals: torch.Tensor) -> torch.Tensor:
    """The synthetic renderer's diffuse light (ambient + distant lights) at unit `normals` [N, 3]."""
    light = torch.full_like(normals[:, 0], AMBIENT)
    for direction, power in LIGHTS:
        d = F.normalize(torch.tensor(direction, dtype=normals.dtype), dim=0)
        light = light + power * (normals @ d).clamp(min=0)
    return light


def test_second_order_lighting_explains_distant_lights_within_a_few_percent() -> None:
    torch.manual_seed(0)
    normals = F.normalize(torch.randn(4000, 3), dim=-1)
    target = lambert(normals)[:, None].expand(-1, 3)
    model = ShadedAppearance(1, torch.device("cpu"))
    optimizer = torch.optim.Adam([model.lighting], lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss = ((model.shading(normals) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
    error = (model.shading(normals) - target).detach().abs().mean() / target.mean()
    assert float(error) < 0.04  # Ramamoorthi & Hanrahan: order 2 holds Lambertian light to a few %


def test_shading_turns_the_surface_and_gloss_does_not() -> None:
    torch.manual_seed(1)
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32, requires_grad=True)
    faces = torch.tensor(sphere.faces)
    model = ShadedAppearance(len(verts), torch.device("cpu"))
    with torch.no_grad():
        model.lighting[1:4] = torch.tensor([[0.5], [0.8], [0.6]])  # a directional term: shading varies with n
        model.gloss.fill_(0.5)
    eye = torch.tensor([0.0, 0.0, 4.0])
    view_dirs = F.normalize(verts.detach() - eye, dim=-1)[None]
    normals = vertex_normals(verts, faces)

    diffuse_only = model.albedo.clamp(0, 1) * model.shading(normals)
    (grad_diffuse,) = torch.autograd.grad(diffuse_only.sum(), verts, retain_graph=True)
    total = model(normals, view_dirs)
    gloss_only = total - diffuse_only[None]
    assert float(gloss_only.abs().max()) > 1e-3  # the highlight is there...
    (grad_gloss,) = torch.autograd.grad(gloss_only.sum(), verts, allow_unused=True)
    assert float(grad_diffuse.abs().max()) > 1e-3  # ...shading moves vertices...
    assert grad_gloss is None or float(grad_gloss.abs().max()) < 1e-6  # ...and the highlight cannot


def test_vertex_normals_point_outwards_on_a_closed_mesh() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    normals = vertex_normals(torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces))
    radial = F.normalize(torch.tensor(sphere.vertices, dtype=torch.float32), dim=-1)
    assert float((normals * radial).sum(-1).min()) > 0.99


def test_free_appearance_can_paint_a_different_colour_for_every_view_and_shaded_cannot() -> None:
    """What the shaded model is for: on a flat lid, the colours a cavity shows differ per view."""
    torch.manual_seed(2)
    views, verts = 12, 50
    normals = torch.tensor([[0.0, 1.0, 0.0]]).expand(verts, -1)  # a flat lid, facing up
    view_dirs = F.normalize(
        torch.randn(views, 1, 3) * torch.tensor([1.0, 0.3, 1.0]) - torch.tensor([0, 1.0, 0]), dim=-1
    )
    view_dirs = view_dirs.expand(-1, verts, -1)
    # The cavity's colour seen through each lid point depends on the view (linear in it here).
    target = (0.5 + 0.4 * view_dirs[..., :1] + 0.3 * view_dirs[..., 2:]).expand(-1, -1, 3)
    residual = {}
    for name, model in (("free", FreeAppearance(verts, torch.device("cpu"))),
                        ("shaded", ShadedAppearance(verts, torch.device("cpu")))):  # fmt: skip
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(300):
            optimizer.zero_grad()
            loss = ((model(normals, view_dirs) - target) ** 2).mean()
            loss.backward()
            optimizer.step()
        residual[name] = float(((model(normals, view_dirs) - target) ** 2).mean())
    assert residual["free"] < 1e-4  # paints the cavity onto the lid: no error left to move geometry
    assert residual["shaded"] > 10 * residual["free"] and residual["shaded"] > 1e-3
    assert np.isfinite(list(residual.values())).all()
