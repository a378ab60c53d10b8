"""Point-to-surface distances in PyTorch, for the geometric metrics on the GPU.

`closest_points` takes query points and a triangle mesh, finds candidate triangles for each query
(those of its `k` nearest surface samples and of its `k` nearest triangle centroids, by brute-force
`torch.cdist` in chunks: O(queries x (samples + faces)) multiply-adds, milliseconds on a GPU), and
returns the exact distance to the nearest candidate (Ericson, Real-Time Collision Detection 5.1.5).
That is an upper bound of the true point-to-surface distance, equal to it whenever the nearest
triangle is among the candidates; the CPU path of `metrics.SurfaceSamples` is exact (a KD-tree
and a ball query), and the unit tests hold the two together.
"""

from __future__ import annotations

import torch

_CHUNK_PAIRS = 1 << 27  # query x reference distances per cdist call (512 MB of float32)


def closest_on_triangles(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """[..., 3] closest point to `p` on triangle (a, b, c), each [..., 3] (degenerate triangles too)."""

    def dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x * y).sum(-1, keepdim=True)

    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = dot(ab, ap), dot(ac, ap)
    bp = p - b
    d3, d4 = dot(ab, bp), dot(ac, bp)
    cp = p - c
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    eps = 1e-30
    # Interior (the default), then each edge and vertex region overrides where it applies.
    denom = (va + vb + vc).clamp(min=eps)
    out = a + ab * (vb / denom) + ac * (vc / denom)
    # Edge regions.
    on_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
    w = (d4 - d3) / ((d4 - d3) + (d5 - d6)).clamp(min=eps)
    out = torch.where(on_bc, b + (c - b) * w, out)
    on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    out = torch.where(on_ac, a + ac * (d2 / (d2 - d6).clamp(min=eps)), out)
    on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    out = torch.where(on_ab, a + ab * (d1 / (d1 - d3).clamp(min=eps)), out)
    # Vertex regions.
    out = torch.where((d6 >= 0) & (d5 <= d6), c, out)
    out = torch.where((d3 >= 0) & (d4 <= d3), b, out)
    out = torch.where((d1 <= 0) & (d2 <= 0), a, out)
    return out


def nearest(queries: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """[Q, k] indices of the `k` nearest `reference` points [R, 3] of each query [Q, 3]."""
    k = min(k, len(reference))
    chunk = max(1, _CHUNK_PAIRS // max(1, len(reference)))
    out = []
    for start in range(0, len(queries), chunk):
        dist = torch.cdist(queries[start : start + chunk], reference)  # [q, R]
        out.append(dist.topk(k, dim=1, largest=False).indices)
    return torch.cat(out) if out else torch.zeros((0, k), dtype=torch.long, device=queries.device)


def closest_points(
    queries: torch.Tensor,
    triangles: torch.Tensor,
    samples: torch.Tensor,
    sample_faces: torch.Tensor,
    k: int = 4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distance [Q], face [Q] and point [Q, 3] on the mesh (`triangles` [F, 3, 3]) nearest each query [Q, 3].

    `samples` [S, 3] are points on the mesh and `sample_faces` [S] their faces (candidates near them).
    """
    centroids = triangles.mean(dim=1)  # [F, 3]
    candidates = torch.cat([sample_faces[nearest(queries, samples, k)], nearest(queries, centroids, 2 * k)], 1)
    tri = triangles[candidates]  # [Q, C, 3, 3]
    p = queries[:, None].expand(-1, candidates.shape[1], -1)
    points = closest_on_triangles(p, tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])  # [Q, C, 3]
    dist = (points - p).norm(dim=-1)  # [Q, C]
    best = dist.argmin(dim=1)
    rows = torch.arange(len(queries), device=queries.device)
    return dist[rows, best], candidates[rows, best], points[rows, best]
