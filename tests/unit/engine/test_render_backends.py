"""Renderer backends: image conventions, silhouette gradients, and agreement between backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from recon_worker.capture import Intrinsics
from recon_worker.engine.cameras import make_cameras
from recon_worker.engine.render import get_renderer
from recon_worker.engine.render.base import Renderer
from recon_worker.engine.rendering import render_mesh

K = Intrinsics(100.0, 100.0, 32.0, 32.0, 64, 64)


def camera_on_z(device: str = "cpu", views: int = 1):  # type: ignore[no-untyped-def]
    c2w = np.eye(4)
    c2w[2, 3] = 3.0  # at +z, looking down -z at the origin, +y up
    return make_cameras(K, np.stack([c2w] * views), device=device)


def ball(offset: tuple[float, float, float] = (0.0, 0.0, 0.0), radius: float = 0.3) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    mesh.apply_translation(offset)
    return mesh


def tensors(mesh: trimesh.Trimesh, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(mesh.vertices, dtype=torch.float32, device=device),
        torch.tensor(mesh.faces, dtype=torch.int32, device=device),
    )


def renderers() -> list[Renderer]:
    found = [get_renderer("cpu")]
    if torch.cuda.is_available():
        found.append(get_renderer("cuda"))
    return found


@pytest.mark.parametrize("renderer", renderers(), ids=lambda r: r.name)
def test_row_zero_is_the_top_and_x_grows_right(renderer: Renderer) -> None:
    verts, faces = tensors(ball(offset=(0.4, 0.4, 0.0)), str(renderer.device))
    out = render_mesh(renderer, verts, faces, camera_on_z(str(renderer.device)))
    rows, cols = np.nonzero(out.alpha[0, ..., 0].detach().cpu().numpy() > 0.5)
    # Up and right of the optical axis: upper-right quadrant of the picture.
    assert rows.mean() < 32 - 8 and cols.mean() > 32 + 8
    assert rows.mean() == pytest.approx(32 - 100 * 0.4 / 3, abs=1.5)


@pytest.mark.parametrize("renderer", renderers(), ids=lambda r: r.name)
def test_coverage_is_the_projected_area_and_grows_with_the_mesh(renderer: Renderer) -> None:
    device = str(renderer.device)
    verts, faces = tensors(ball(), device)
    verts.requires_grad_(True)
    out = render_mesh(renderer, verts, faces, camera_on_z(device))
    area = float(out.alpha.sum())
    expected = np.pi * (100 * np.tan(np.arcsin(0.3 / 3))) ** 2
    assert area == pytest.approx(expected, rel=0.06)
    out.alpha.sum().backward()
    assert verts.grad is not None
    # d(area)/d(scale): moving every vertex outwards must grow the silhouette.
    radial = float((verts.grad * verts.detach()).sum())
    assert radial > 0.5 * 2 * expected  # d(pi r^2)/d(log r) = 2 x area


@pytest.mark.parametrize("renderer", renderers(), ids=lambda r: r.name)
def test_texture_v_runs_up_the_image(renderer: Renderer) -> None:
    device = str(renderer.device)
    tex = torch.zeros((4, 4, 3), device=device)
    tex[0] = torch.tensor([1.0, 0.0, 0.0])  # top row of the image file: red
    uv = torch.tensor([[[[0.5, 0.95], [0.5, 0.05]]]], device=device)  # [1, 1, 2, 2]
    out = renderer.texture(tex, uv)[0, 0]
    torch.testing.assert_close(out[0], torch.tensor([1.0, 0.0, 0.0], device=device))
    torch.testing.assert_close(out[1], torch.zeros(3, device=device))


@pytest.mark.parametrize("renderer", renderers(), ids=lambda r: r.name)
def test_vertex_colours_interpolate_and_background_shows_around(renderer: Renderer) -> None:
    device = str(renderer.device)
    verts, faces = tensors(ball(), device)
    colors = torch.tensor([0.2, 0.4, 0.8], device=device).expand(len(verts), 3).contiguous()
    out = render_mesh(renderer, verts, faces, camera_on_z(device), vertex_colors=colors, background=(1.0, 0.0, 0.0))
    inside = out.alpha[0, ..., 0] > 0.999  # not blended with the background at the edge
    torch.testing.assert_close(out.rgb[0][inside].mean(0), colors[0], atol=1e-4, rtol=0)
    assert torch.all(out.rgb[0, 0, 0] == torch.tensor([1.0, 0.0, 0.0], device=device))


def test_unknown_or_impossible_renderer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown renderer"):
        get_renderer("cpu", "opengl")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        get_renderer("cpu", "nvdiffrast")
    assert get_renderer("cpu").name == "pytorch3d"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvdiffrast_on_cuda_agrees_with_pytorch3d_on_cpu() -> None:
    mesh = ball(offset=(0.1, -0.2, 0.05))
    outs = []
    for device in ("cuda", "cpu"):
        renderer = get_renderer(device)
        verts, faces = tensors(mesh, device)
        colors = (verts - verts.min(0).values) / (verts.max(0).values - verts.min(0).values)
        out = render_mesh(renderer, verts, faces, camera_on_z(device, views=2), vertex_colors=colors)
        outs.append((out.alpha.cpu(), out.rgb.cpu(), out.mask.cpu()))
    (alpha_a, rgb_a, mask_a), (alpha_b, rgb_b, mask_b) = outs
    a, b = alpha_a[..., 0] > 0.5, alpha_b[..., 0] > 0.5
    assert float((a & b).sum() / (a | b).sum()) > 0.97
    both = (mask_a & mask_b).expand_as(rgb_a)
    assert float((rgb_a - rgb_b).abs()[both].mean()) < 0.02
