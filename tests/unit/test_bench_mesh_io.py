"""The mesh-file benchmark's own parts: one measured row, and the docs section it writes."""

from __future__ import annotations

import json
from pathlib import Path

import bench_mesh_io as bench
import pytest


def test_a_row_times_every_step_on_the_per_face_atlas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "TEXTURE_SIZE", 64)
    row = bench.measure(2_000, runs=1, scratch=tmp_path)
    assert row["faces"] == 2_000 and row["vertices"] == 6_000  # three vertices per face
    assert set(bench.STEPS) <= set(row) and all(row[k] > 0 for k in bench.STEPS)


def test_docs_rewrites_its_own_section_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs_md, docs_json = tmp_path / "benchmarks.md", tmp_path / "mesh-io.json"
    docs_md.write_text("# Benchmarks\n\n## Mesh files between stages\n\nold\n\n## Real captures\n\nkept\n")
    monkeypatch.setattr(bench, "DOCS_MD", docs_md)
    monkeypatch.setattr(bench, "DOCS_JSON", docs_json)
    row = {"faces": 60_000, "vertices": 180_000, **{k: 0.5 for k in bench.STEPS}, "obj_text": None}
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"date": "2026-12-03", "machine": "m", "runs": 3, "rows": [row]}))
    assert bench.main(["docs", str(result)]) == 0
    text = docs_md.read_text()
    assert "old" not in text and text.endswith("## Real captures\n\nkept\n")
    assert "| 60,000 | 180,000 | 0.500 |" in text and "| - |" in text
    assert json.loads(docs_json.read_text())[0]["rows"] == [row]
