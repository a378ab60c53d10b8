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
    assert sorted(p.name for p in (tmp_path / "texture").iterdir()) == ["mesh.npz", "texture.png"]


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
        "texture/mesh.npz",
        "texture/texture.png",
    ):
        assert (work / name).is_file(), name
    assert trimesh.load(work / "refine" / "refined.ply").is_watertight


def uv_areas(tri: np.ndarray) -> np.ndarray:
    """Areas [F] of the UV triangles `tri` [F, 3, 2]."""
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def uv_coverage(tri: np.ndarray, side: int) -> np.ndarray:
    """How many of the UV triangles `tri` [F, 3, 2] cover each cell centre of a `side`² grid: [side²]."""
    cover = np.zeros((side, side), dtype=np.int64)
    for a, b, c in tri:
        lo = np.clip(np.floor(np.minimum(np.minimum(a, b), c) * side).astype(int), 0, side)
        hi = np.clip(np.ceil(np.maximum(np.maximum(a, b), c) * side).astype(int), 0, side)
        xs, ys = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]))
        px, py = (xs + 0.5) / side, (ys + 0.5) / side
        d = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        w0 = ((b[1] - c[1]) * (px - c[0]) + (c[0] - b[0]) * (py - c[1])) / d
        w1 = ((c[1] - a[1]) * (px - c[0]) + (a[0] - c[0]) * (py - c[1])) / d
        cover[ys, xs] += (w0 >= 0) & (w1 >= 0) & (1 - w0 - w1 >= 0)
    return cover.ravel()


def test_xatlas_charts_a_mesh_in_pieces_without_overlaps(monkeypatch: pytest.MonkeyPatch) -> None:
    from recon_worker.engine import texture

    monkeypatch.setattr(texture, "XATLAS_PIECE_FACES", 1000)
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.5)  # 5,120 faces: five pieces
    unwrapped = texture.xatlas_unwrap(mesh, 256)
    # Face i is still face i, on the same three points, and every vertex maps back to its source.
    assert unwrapped.faces.shape == mesh.faces.shape
    np.testing.assert_allclose(unwrapped.verts[unwrapped.faces], mesh.vertices[mesh.faces], atol=1e-6)
    np.testing.assert_array_equal(unwrapped.source_index[unwrapped.faces], mesh.faces)
    assert unwrapped.uv.min() >= 0 and unwrapped.uv.max() <= 1
    tri = unwrapped.uv[unwrapped.faces]
    areas = uv_areas(tri)
    cover = uv_coverage(tri, side := 1024)
    # The pieces are packed into one atlas: no cell covered twice (a shared edge's cell may be, rarely).
    assert (cover > 1).sum() < 1e-3 * side**2
    assert cover.sum() / side**2 == pytest.approx(areas.sum(), rel=0.05)


def test_the_per_face_atlas_bakes_the_photographed_colour_without_overlaps(tmp_path: Path) -> None:
    from recon_worker.engine.texture import bake_texture, face_atlas

    capture = load_capture(write_sphere_capture(tmp_path / "cap", views=8, size=48, radius=0.5, color=COLOR))
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    unwrapped = face_atlas(mesh, 64)
    assert unwrapped.faces.shape == mesh.faces.shape and len(unwrapped.verts) == 3 * len(mesh.faces)
    np.testing.assert_array_equal(unwrapped.verts, mesh.vertices[mesh.faces.ravel()])
    assert unwrapped.uv.min() >= 0 and unwrapped.uv.max() <= 1
    # No two faces overlap in UV space: the atlas' area equals the sum of the faces' areas.
    tri = unwrapped.uv[unwrapped.faces]  # [F, 3, 2]
    areas = uv_areas(tri)
    assert np.all(areas > 0)
    cover = uv_coverage(tri, side := 512)
    assert cover.max() == 1
    assert cover.sum() / side**2 == pytest.approx(areas.sum(), rel=0.05)
    normals = np.asarray(mesh.vertex_normals)[unwrapped.source_index]
    texture = bake_texture(unwrapped, normals, capture, get_renderer("cpu"), 64)
    np.testing.assert_allclose(texture.reshape(-1, 3).mean(axis=0), COLOR, atol=0.02)
    assert np.abs(texture - COLOR).max() < 0.1


def test_texture_decimates_to_the_export_bound_first(tmp_path: Path) -> None:
    capture = load_capture(write_sphere_capture(tmp_path / "cap", views=4, size=32, radius=0.5, color=COLOR))
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)  # 1,280 faces
    timings = texture_mesh(mesh, capture, get_renderer("cpu"), 32, tmp_path / "texture", max_faces=300)
    assert timings["faces"] <= 300
    assert timings["decimation"]["method"] == "quadric"  # type: ignore[index]
    assert len(load_textured_mesh(tmp_path / "texture").faces) <= 300


def test_bake_memory_does_not_grow_with_the_number_of_views(tmp_path: Path) -> None:
    """Counted, not timed: the largest tensor the bake creates is the same for 4 and for 16 views."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from recon_worker.engine.texture import bake_texture, unwrap

    class LargestTensor(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            for value in tree_flatten(out)[0]:
                if isinstance(value, torch.Tensor):
                    self.numel = max(self.numel, value.numel())
            return out

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    unwrapped = unwrap(mesh, 32)
    normals = np.asarray(mesh.vertex_normals)[unwrapped.source_index]
    largest = []
    for views in (4, 16):
        capture = load_capture(write_sphere_capture(tmp_path / f"v{views}", views=views, size=24, radius=0.5))
        with LargestTensor() as counter:
            bake_texture(unwrapped, normals, capture, get_renderer("cpu"), 32, views_per_batch=4)
        largest.append(counter.numel)
    assert largest[0] == largest[1]


def test_views_kept_between_the_passes_bake_the_same_texture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recon_worker.engine import texture

    capture = load_capture(write_sphere_capture(tmp_path / "cap", views=6, size=40, radius=0.5, color=COLOR))
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    unwrapped = texture.unwrap(mesh, 64)
    normals = np.asarray(mesh.vertex_normals)[unwrapped.source_index]
    decoded: list[int] = []
    original = capture.load_view
    monkeypatch.setattr(capture, "load_view", lambda i: decoded.append(i) or original(i))
    twice = texture.bake_texture(unwrapped, normals, capture, get_renderer("cpu"), 64)
    assert len(decoded) == 12  # no cache on the CPU: each view decoded in both passes
    decoded.clear()
    monkeypatch.setitem(texture.VIEW_CACHE_BYTES, "cpu", 1 << 30)
    once = texture.bake_texture(unwrapped, normals, capture, get_renderer("cpu"), 64)
    assert len(decoded) == 6
    np.testing.assert_array_equal(once, twice)
