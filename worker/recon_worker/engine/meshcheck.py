"""Validity of a triangle mesh: the checks the exported mesh must pass, and the repairs we attempt.

Textured meshes split vertices along UV seams, so every check runs on the *welded* geometry
(vertices merged by position): a seam is not a hole. Repairs decide on the welded geometry and apply
face by face to the textured mesh, so its UVs stay attached to their corners.

Definitions (counts over the welded geometry):
- boundary edge: used by one face; non-manifold edge: used by three or more.
- non-manifold vertex: its incident faces form more than one fan (e.g. two cones touching at a tip).
- inconsistent edge: a directed edge used twice in the same direction (neighbouring faces disagree
  on winding).
- degenerate face: a repeated vertex, or an area below 1e-12 x the squared bounding-box diagonal.
"""

from __future__ import annotations

import numpy as np
import trimesh
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# A face is degenerate below this area, relative to the squared bounding-box diagonal.
_DEGENERATE_AREA = 1e-12


class MeshChecks(BaseModel):
    """Validity counts of a mesh (all zero, one component and finite = valid)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    faces: int
    vertices: int = Field(description="Vertices after welding by position (UV seams merged).")
    finite: bool = Field(description="No NaN or Inf in positions or UVs.")
    boundary_edges: int
    non_manifold_edges: int
    non_manifold_vertices: int
    inconsistent_edges: int
    degenerate_faces: int
    duplicate_faces: int
    components: int
    volume: float | None = Field(None, description="Enclosed volume when watertight (negative: inside out).")
    repairs: list[str] = Field(default_factory=list, description="Repairs applied before these counts.")

    @property
    def watertight(self) -> bool:
        return self.boundary_edges == 0 and self.non_manifold_edges == 0

    @property
    def manifold(self) -> bool:
        return self.non_manifold_edges == 0 and self.non_manifold_vertices == 0

    @property
    def valid(self) -> bool:
        """Everything the export promises: closed, manifold, oriented, clean, finite, one piece."""
        return (
            self.finite
            and self.watertight
            and self.manifold
            and self.inconsistent_edges == 0
            and self.degenerate_faces == 0
            and self.duplicate_faces == 0
            and self.components == 1
            and (self.volume is None or self.volume > 0)
        )

    def problems(self) -> list[str]:
        """Human-readable list of what is wrong (empty when valid)."""
        found = []
        if not self.finite:
            found.append("positions or UVs contain NaN or Inf")
        named = [
            (self.boundary_edges, "boundary edges (holes)"),
            (self.non_manifold_edges, "non-manifold edges"),
            (self.non_manifold_vertices, "non-manifold vertices"),
            (self.inconsistent_edges, "edges with inconsistent winding"),
            (self.degenerate_faces, "degenerate faces"),
            (self.duplicate_faces, "duplicate faces"),
        ]
        found += [f"{count} {what}" for count, what in named if count]
        if self.components != 1:
            found.append(f"{self.components} connected components (expected 1)")
        if self.volume is not None and self.volume <= 0:
            found.append(f"inside out (volume {self.volume:.4g})")
        return found


def welded(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, np.ndarray]:
    """Geometry of `mesh` with vertices merged by position, faces in the same order.

    Returns the welded mesh and, for each welded vertex, one index of a vertex of `mesh` at that
    position (to map faces added on the welded mesh back to the textured one).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    unique, inverse = trimesh.grouping.unique_rows(np.nan_to_num(vertices), digits=8)
    geometry = trimesh.Trimesh(vertices[unique], inverse[np.asarray(mesh.faces)], process=False, validate=False)
    return geometry, np.asarray(unique)


def _non_manifold_vertex_count(geometry: trimesh.Trimesh) -> int:
    """Vertices whose incident faces form more than one edge-connected fan."""
    faces = np.asarray(geometry.faces)
    if len(faces) == 0:
        return 0
    # Nodes are face corners (3f + k); corners of one vertex in two faces that share an edge through
    # that vertex are joined. Each vertex must end up with exactly one group of corners.
    adjacency = geometry.face_adjacency  # [P, 2] faces sharing an edge used by exactly two faces
    shared = geometry.face_adjacency_edges  # [P, 2] that edge's vertices
    rows, cols = [], []
    for end in range(2):
        v = shared[:, end]
        k0 = np.argmax(faces[adjacency[:, 0]] == v[:, None], axis=1)
        k1 = np.argmax(faces[adjacency[:, 1]] == v[:, None], axis=1)
        rows.append(adjacency[:, 0] * 3 + k0)
        cols.append(adjacency[:, 1] * 3 + k1)
    n = 3 * len(faces)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    corner_vertex = faces.ravel()
    groups = np.unique(np.stack([corner_vertex, labels], axis=1), axis=0)  # one row per (vertex, fan)
    fans_per_vertex = np.bincount(groups[:, 0], minlength=len(geometry.vertices))
    return int(np.count_nonzero(fans_per_vertex > 1))


def check_mesh(mesh: trimesh.Trimesh, repairs: list[str] | None = None) -> MeshChecks:
    """Count every validity problem of `mesh` (see the module doc for the definitions)."""
    geometry, _ = welded(mesh)
    faces = np.asarray(geometry.faces)
    uv = getattr(mesh.visual, "uv", None)
    finite = bool(np.isfinite(mesh.vertices).all() and (uv is None or np.isfinite(uv).all()))

    edges = np.sort(geometry.edges, axis=1)  # [3F, 2] undirected
    _, edge_use = np.unique(edges, axis=0, return_counts=True)
    _, directed_use = np.unique(geometry.edges, axis=0, return_counts=True)
    diagonal = float(np.linalg.norm(np.ptp(geometry.vertices, axis=0))) if len(geometry.vertices) and finite else 0.0
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
    tiny = geometry.area_faces <= _DEGENERATE_AREA * max(diagonal, 1e-30) ** 2 if finite else np.zeros(len(faces), bool)
    _, face_use = np.unique(np.sort(faces, axis=1), axis=0, return_counts=True)
    # Components joined through shared vertices: pieces touching at one vertex are one component
    # (and that vertex is reported as non-manifold).
    components = trimesh.graph.connected_components(geometry.edges, nodes=np.unique(faces)) if len(faces) else []

    checks = MeshChecks(
        faces=len(faces),
        vertices=len(np.unique(faces)),
        finite=finite,
        boundary_edges=int(np.count_nonzero(edge_use == 1)),
        non_manifold_edges=int(np.count_nonzero(edge_use > 2)),
        non_manifold_vertices=_non_manifold_vertex_count(geometry),
        inconsistent_edges=int(np.count_nonzero(directed_use > 1)),
        degenerate_faces=int(np.count_nonzero(repeated | tiny)),
        duplicate_faces=int(np.sum(face_use - 1)),
        components=len(components),
        repairs=repairs or [],
    )
    if checks.watertight and finite and len(faces):
        checks.volume = float(geometry.volume)
    return checks


def repair_mesh(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, list[str]]:
    """Fix what can be fixed without re-meshing; returns the repaired copy and what was done.

    In order: drop degenerate and duplicate faces, keep the largest connected component, make the
    winding consistent and outward, fill holes of three or four edges (trimesh's hole filler). Holes
    that remain, non-manifold edges and vertices are left for the checks to report.
    """
    mesh = mesh.copy()
    done: list[str] = []

    geometry, _ = welded(mesh)
    faces = np.asarray(geometry.faces)
    keep = np.ones(len(faces), dtype=bool)
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
    diagonal = float(np.linalg.norm(np.ptp(geometry.vertices, axis=0))) if len(faces) else 0.0
    degenerate = repeated | (geometry.area_faces <= _DEGENERATE_AREA * max(diagonal, 1e-30) ** 2)
    if degenerate.any():
        keep &= ~degenerate
        done.append(f"removed {int(degenerate.sum())} degenerate faces")
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    duplicate = np.ones(len(faces), dtype=bool)
    duplicate[first] = False
    duplicate &= keep
    if duplicate.any():
        keep &= ~duplicate
        done.append(f"removed {int(duplicate.sum())} duplicate faces")
    if not keep.all():
        mesh.update_faces(keep)
        mesh.remove_unreferenced_vertices()
        geometry, _ = welded(mesh)

    labels = trimesh.graph.connected_component_labels(geometry.face_adjacency, node_count=len(geometry.faces))
    counts = np.bincount(labels)
    if len(counts) > 1:
        largest = labels == counts.argmax()
        done.append(f"removed {len(counts) - 1} small components ({int((~largest).sum())} faces)")
        mesh.update_faces(largest)
        mesh.remove_unreferenced_vertices()
        geometry, _ = welded(mesh)

    before = np.asarray(geometry.faces).copy()
    trimesh.repair.fix_winding(geometry)
    flipped = np.any(np.asarray(geometry.faces) != before, axis=1)
    if geometry.is_watertight and geometry.volume < 0:
        flipped = ~flipped
    if flipped.any():
        faces_t = np.asarray(mesh.faces).copy()
        faces_t[flipped] = faces_t[flipped][:, ::-1]
        mesh.faces = faces_t
        done.append(f"flipped {int(flipped.sum())} faces to a consistent outward winding")
        geometry, _ = welded(mesh)

    if not geometry.is_watertight:
        geometry, to_textured = welded(mesh)
        count = len(geometry.faces)
        trimesh.repair.fill_holes(geometry)
        added = np.asarray(geometry.faces)[count:]
        if len(added):
            # New faces reuse existing vertices; on a textured mesh they take one copy's UVs.
            mesh.faces = np.vstack([np.asarray(mesh.faces), to_textured[added]])
            done.append(f"filled small holes with {len(added)} faces")
    return mesh, done
