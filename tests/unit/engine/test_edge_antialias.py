"""The silhouette antialiaser's fixed-size pair buffer (the sync-free path refine takes on CUDA) gives the
exact path's picture: its unused slots sit on a background pixel and must neither index out of range
(they once made CUDA assert in the first refine step) nor add anything."""

from __future__ import annotations

import torch

from recon_worker.engine.refine import to_clip
from recon_worker.engine.render import get_renderer
from recon_worker.engine.render.edge_antialias import edge_antialias, face_neighbors
from tests.unit.engine.test_render_backends import ball, camera_on_z, tensors


def test_the_buffered_path_gives_the_exact_picture_and_counts_its_pairs() -> None:
    renderer = get_renderer("cpu")
    verts, faces = tensors(ball(offset=(0.1, -0.05, 0.0)))
    cameras = camera_on_z(views=2)
    pos_clip = to_clip(cameras.mvp, verts)
    raster = renderer.rasterize(pos_clip, faces, cameras.resolution)
    image = raster.mask.float().expand(-1, -1, -1, 3).contiguous()
    neighbors = face_neighbors(faces.long())

    exact, found = edge_antialias(image, raster.triangle_id, pos_clip, faces, neighbors)
    pairs = int(found)
    assert pairs > 50, pairs
    buffered, counted = edge_antialias(image, raster.triangle_id, pos_clip, faces, neighbors, capacity=pairs + 500)
    assert int(counted) == pairs
    torch.testing.assert_close(buffered, exact)
    # Too small a buffer blends only the pairs that fit, and its count says it overflowed.
    _, overflowed = edge_antialias(image, raster.triangle_id, pos_clip, faces, neighbors, capacity=pairs // 2)
    assert int(overflowed) == pairs > pairs // 2
