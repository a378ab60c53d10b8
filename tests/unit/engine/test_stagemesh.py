"""The mesh the stages hand on (`engine.stagemesh`): read back exactly; damaged files named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from recon_worker.engine.export import texture_image
from recon_worker.engine.stagemesh import read_stage_mesh, write_stage_mesh


def test_what_is_written_reads_back_exactly(textured_sphere: trimesh.Trimesh, tmp_path: Path) -> None:
    write_stage_mesh(tmp_path, textured_sphere, texture_image(textured_sphere))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.npz", "texture.png"]
    back = read_stage_mesh(tmp_path)
    np.testing.assert_array_equal(back.vertices, textured_sphere.vertices)
    np.testing.assert_array_equal(back.faces, textured_sphere.faces)
    np.testing.assert_array_equal(back.visual.uv, textured_sphere.visual.uv)
    assert np.array_equal(np.asarray(texture_image(back)), np.asarray(texture_image(textured_sphere)))


def test_missing_and_damaged_files_are_named(textured_sphere: trimesh.Trimesh, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"mesh\.npz is missing: did the stage that writes"):
        read_stage_mesh(tmp_path)
    write_stage_mesh(tmp_path, textured_sphere, texture_image(textured_sphere))
    arrays = dict(np.load(tmp_path / "mesh.npz"))
    np.savez(tmp_path / "mesh.npz", **{**arrays, "faces": arrays["faces"] + len(textured_sphere.vertices)})
    with pytest.raises(ValueError, match="face indices outside the 642 vertices"):
        read_stage_mesh(tmp_path)
    np.savez(tmp_path / "mesh.npz", **{**arrays, "uv": arrays["uv"][:10]})
    with pytest.raises(ValueError, match=r"one UV per vertex, \[642, 2\], got \(10, 2\)"):
        read_stage_mesh(tmp_path)
    (tmp_path / "mesh.npz").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not a stage mesh"):
        read_stage_mesh(tmp_path)
    # Pickled objects are never loaded from a stage file (checkpoints come back from the bucket).
    np.savez(tmp_path / "mesh.npz", **{**arrays, "uv": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="not a stage mesh"):
        read_stage_mesh(tmp_path)
