"""Cutting a closed mesh into a 2-manifold where its sheets touch: edges and vertices shared by two sheets.

Quadric decimation collapses thin walls and rods until two sheets of the surface meet: along an edge (an
edge with four faces: two sheets crossing it) or at a vertex (two fans of faces around one point). The
volume is still closed; only its connectivity is wrong. `split_non_manifold` repairs it by treating
the sheets as touching, not joined:

1. Faces are paired across every edge. An edge with two faces pairs them. An edge with 2k faces (k
   sheets meeting there) pairs each face with its angular neighbour around the edge, so that every
   pair bounds one wedge of solid (the side opposite both faces' outward normals): each sheet keeps
   its own faces.
2. The corners of the faces at each vertex are grouped into fans: two corners are in one fan when
   their faces are paired across an edge through that vertex.
3. Each vertex gets one copy per fan. A vertex with several fans (a pinch, or the end of an edge where
   sheets met) has its copies moved `NUDGE` of the way towards the centre of their own fan's faces, so
   the sheets no longer share a point (a check that welds by position would merge them again
   otherwise).

The result has every edge in exactly two faces wherever the pairing could be made (an edge whose faces'
windings do not alternate around it is left as it was, and the caller's check says so), and no
pinched vertex. O(faces), vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from recon_worker.engine.introws import unique_rows

NUDGE = 0.05  # a split vertex's copies move this share of the way to their fan's centre


@dataclass(frozen=True)
class Split:
    mesh: trimesh.Trimesh
    vertices: int  # vertices split into several copies
    edges: int  # edges of more than two faces whose faces were paired into sheets

    def __bool__(self) -> bool:
        return bool(self.vertices or self.edges)


def _pairs(faces: np.ndarray, verts: np.ndarray, other_way: set[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Half-edges (3f + k: face f's edge from corner k to corner k+1) paired across their edge: [P] and [P]
    of the two half-edges, and how many edges of more than two faces were paired. The edges in
    `other_way` (sorted vertex pairs) pair their faces across the empty wedges instead."""
    start = faces.ravel()
    end = faces[:, [1, 2, 0]].ravel()
    key = np.sort(np.stack([start, end], 1), axis=1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    sorted_key = key[order]
    new_group = np.ones(len(order), bool)
    new_group[1:] = (sorted_key[1:] != sorted_key[:-1]).any(axis=1)
    group_start = np.flatnonzero(new_group)
    sizes = np.diff(np.append(group_start, len(order)))

    # Two faces on an edge: one pair (the common case, vectorised).
    two = group_start[sizes == 2]
    first, second = [order[two]], [order[two + 1]]

    # More than two: order the faces by angle around the edge and pair neighbours bounding solid.
    paired_edges = 0
    face_normals = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    for g, size in zip(group_start[sizes > 2], sizes[sizes > 2], strict=True):
        if size % 2:
            continue  # an odd number of faces cannot be paired into closed sheets
        halves = order[g : g + size]
        a, b = sorted_key[g]
        axis = verts[b] - verts[a]
        axis /= max(float(np.linalg.norm(axis)), 1e-30)
        f = halves // 3
        third = faces[f, (halves % 3 + 2) % 3]  # the corner of each face that is not on the edge
        wing = verts[third] - verts[a]
        wing -= np.outer(wing @ axis, axis)
        ref = wing[0] / max(float(np.linalg.norm(wing[0])), 1e-30)
        around = np.argsort(np.arctan2(wing @ np.cross(axis, ref), wing @ ref))  # counter-clockwise about a -> b
        ring = halves[around]
        forward = start[ring] == a  # the half-edge runs a -> b in its face
        # The wedge from face i to face i+1 is solid when face i's outward normal points away from it.
        n = face_normals[ring // 3]
        solid = np.einsum("ij,ij->i", n, np.cross(axis, wing[around])) < 0
        if (int(a), int(b)) in other_way:
            solid = ~solid
        for offset in (0, 1):
            i = np.arange(offset, len(ring), 2)
            j = (i + 1) % len(ring)
            if (forward[i] != forward[j]).all() and solid[i].all():
                first.append(ring[i])
                second.append(ring[j])
                paired_edges += 1
                break
    return np.concatenate(first), np.concatenate(second), paired_edges


def split_non_manifold(mesh: trimesh.Trimesh) -> Split:
    """`mesh` cut where its sheets touch (see the module doc); `Split.mesh` is `mesh` itself when nothing
    needed cutting. Faces with a repeated vertex (no area, no sheet) are dropped first."""
    faces = np.asarray(mesh.faces, np.int64)
    verts = np.asarray(mesh.vertices, np.float64)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    if len(faces) == 0:
        return Split(mesh, 0, 0)
    other_way: set[tuple[int, int]] = set()
    for _ in range(2):
        out, origin, split, paired = _cut(faces, verts, other_way)
        # Two sheets that meet along an edge but are joined around both of its ends (a wall quadric
        # collapsed onto one edge) keep the edge shared when their faces pair across the solid: paired
        # across the empty wedges instead, the ends separate.
        stuck = _non_manifold_edges(np.asarray(out.faces))
        if len(stuck) == 0:
            break
        other_way |= {(int(a), int(b)) for a, b in np.sort(origin[stuck], axis=1)}
    if split == 0 and paired == 0 and len(faces) == len(mesh.faces):
        return Split(mesh, 0, 0)
    return Split(out, split, paired)


def edge_use(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The undirected edges [E, 2] (sorted vertex pairs) of `faces` [F, 3] and how many faces use each [E]."""
    edges = np.sort(np.asarray(faces)[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, counts = unique_rows(edges, return_counts=True)
    return unique, counts


def _non_manifold_edges(faces: np.ndarray) -> np.ndarray:
    edges, counts = edge_use(faces)
    return edges[counts > 2]


def _cut(
    faces: np.ndarray, verts: np.ndarray, other_way: set[tuple[int, int]]
) -> tuple[trimesh.Trimesh, np.ndarray, int, int]:
    """The mesh with one vertex per fan, each new vertex's original index, vertices split, edges paired."""
    h1, h2, paired_edges = _pairs(faces, verts, other_way)
    # Across a pair, face f1's edge runs a -> b from its corner k1, face f2's b -> a from its corner k2
    # (or a -> b too, when the winding is inconsistent): join the corners that sit on the same vertex.
    f1, k1, f2, k2 = h1 // 3, h1 % 3, h2 // 3, h2 % 3
    corner = faces.ravel()
    rows, cols = [], []
    for end1 in (0, 1):
        c1 = f1 * 3 + (k1 + end1) % 3
        for end2 in (0, 1):
            c2 = f2 * 3 + (k2 + end2) % 3
            same = corner[c1] == corner[c2]
            rows.append(c1[same])
            cols.append(c2[same])
    n = 3 * len(faces)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n))
    _, fan = connected_components(graph, directed=False)
    groups, group = unique_rows(np.stack([corner, fan], 1), return_inverse=True)
    group = group.ravel()
    copies = np.bincount(groups[:, 0], minlength=len(verts))
    origin = verts[groups[:, 0]]
    centres = np.zeros((len(groups), 3))
    np.add.at(centres, group, verts[faces].mean(axis=1).repeat(3, axis=0))
    centres /= np.bincount(group, minlength=len(groups))[:, None]
    moved = np.where((copies[groups[:, 0]] > 1)[:, None], origin + NUDGE * (centres - origin), origin)
    out = trimesh.Trimesh(moved, group.reshape(-1, 3), process=False)
    return out, groups[:, 0], int((copies > 1).sum()), paired_edges


def fill_small_holes(mesh: trimesh.Trimesh, max_edges: int = 8) -> tuple[trimesh.Trimesh, int]:
    """`mesh` with every hole of at most `max_edges` boundary edges closed by a fan of faces from its first
    vertex, wound like its neighbours (a sliver that welding removed leaves a three-edge hole). Holes
    whose boundary passes a vertex twice are left. Returns the mesh and the number of holes filled."""
    faces = np.asarray(mesh.faces, np.int64)
    directed = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    twins = {(int(a), int(b)) for a, b in directed}
    boundary = [(int(a), int(b)) for a, b in directed if (b, a) not in twins]
    if not boundary:
        return mesh, 0
    # A hole is walked against its neighbours' winding: the new faces use each boundary edge reversed.
    nxt: dict[int, int] = {}
    repeated: set[int] = set()
    for a, b in boundary:
        if b in nxt:
            repeated.add(b)
        nxt[b] = a
    new_faces, filled, seen = [], 0, set()
    for start in list(nxt):
        if start in seen:
            continue
        loop, v = [start], nxt[start]
        while v != start and v in nxt and len(loop) <= max_edges and v not in loop:
            loop.append(v)
            v = nxt[v]
        seen.update(loop)
        if v != start or len(loop) < 3 or len(loop) > max_edges or repeated.intersection(loop):
            continue
        new_faces += [(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)]
        filled += 1
    if not filled:
        return mesh, 0
    out = trimesh.Trimesh(mesh.vertices, np.vstack([faces, np.asarray(new_faces, np.int64)]), process=False)
    return out, filled
