"""The memory benchmark's own parts: the per-stage listener, the growth per view and the fit."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import bench_worker_memory as bench
import numpy as np
import pytest


def event(stage: str, changed: bool = True) -> SimpleNamespace:
    return SimpleNamespace(stage=stage, stage_changed=changed)


def test_stage_peaks_are_each_stages_own() -> None:
    peaks = bench.StagePeaks(cuda=False)
    peaks(event("fetch"))
    big = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    del big
    peaks(event("fetch", changed=False))  # progress within a stage: no new row
    peaks(event("reconstruct"))
    small = np.ones(10 * 2**20 // 8)
    peaks.close()
    del small
    fetch, reconstruct = peaks.rows
    assert (fetch["stage"], reconstruct["stage"]) == ("fetch", "reconstruct")
    assert fetch["peakRssMiB"] - fetch["startRssMiB"] >= 290
    # The reset at the stage's start: the fetch stage's 300 MiB is not the reconstruct stage's peak.
    assert reconstruct["peakRssMiB"] - reconstruct["startRssMiB"] < 200


def test_growth_per_view_and_fit() -> None:
    def row(views: int, pixels: int, mib: float, stages: dict[str, float]) -> dict[str, object]:
        listed = [{"stage": k, "peakRssMiB": v} for k, v in stages.items()]
        return {"views": views, "resolution": 16, "decodedPixels": pixels, "peakRssMiB": mib, "exitCode": 0,
                "stages": listed}  # fmt: skip

    def peak(views: int, pixels: int) -> float:  # 1000 MiB + 2 MiB per view + 100 bytes per pixel
        return 1000 + 2 * views + pixels * 100 / 2**20

    rows = [
        row(16, 16 * 256, peak(16, 16 * 256), {"reconstruct": 800, "texture": 500 + 16 * 2}),
        row(128, 128 * 256, peak(128, 128 * 256), {"reconstruct": 800, "texture": 500 + 128 * 2}),
    ]
    assert bench.growth(rows) == {"reconstruct": pytest.approx(0.0, abs=1e-9), "texture": pytest.approx(2.0)}
    rows.append(row(16, 16 * 4096, peak(16, 16 * 4096), {}))
    fit = bench.fit(rows)
    assert fit["baseMiB"] == pytest.approx(1000, abs=0.2) and fit["perViewMiB"] == pytest.approx(2.0, abs=0.01)
    assert fit["perPixelBytes"] == pytest.approx(100, abs=1)


def test_docs_render_every_kind_of_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "DOCS_MD", tmp_path / "benchmarks.md")
    monkeypatch.setattr(bench, "DOCS_JSON", tmp_path / "worker-memory.json")
    (tmp_path / "benchmarks.md").write_text("# Benchmarks\n\n## Worker memory\n\nold\n\n## Next\n\nkept\n")
    stage_rows = [{"stage": "reconstruct", "startRssMiB": 500.0, "peakRssMiB": 700.0}]
    stages = {"kind": "stages", "date": "d", "machine": "m", "preset": "draft", "device": "cpu",
              "rows": [{"views": 16, "resolution": 16, "seconds": 1.0, "stages": stage_rows}],
              "perViewMiBByStage": {"reconstruct": 0.01}}  # fmt: skip
    recon = {"kind": "reconstruct", "date": "d", "machine": "m", "note": "after",
             "rows": [{"views": 2002, "resolution": 16, "backend": "visual-hull", "grid": 64, "stageMiB": 90.0,
                       "seconds": 3.0}]}  # fmt: skip
    files = []
    for name, record in (("s.json", stages), ("r.json", recon)):
        (tmp_path / name).write_text(json.dumps(record))
        files.append(str(tmp_path / name))
    bench.main(["docs", *files])
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| 16 | 16² | 700 | 1.0 |" in text and "reconstruct +0.010" in text
    assert "| 2,002 | 16² | visual-hull | 64³ | 90 (3.0 s) |" in text
    assert "old" not in text and text.endswith("## Next\n\nkept\n")
    # --keep adds a record (e.g. a GPU host's) to those already there.
    gpu = {**stages, "kind": "gpu", "device": "cuda", "note": "H200"}
    gpu["rows"] = [
        {"views": 16, "resolution": 64, "seconds": 2.0, "stages": [{**stage_rows[0], "peakCudaAllocatedMiB": 42.0}]}
    ]
    (tmp_path / "g.json").write_text(json.dumps(gpu))
    bench.main(["docs", "--keep", str(tmp_path / "g.json")])
    assert len(json.loads((tmp_path / "worker-memory.json").read_text())) == 3
    assert "| 16 | 64² | 700 / 42 | 2.0 |" in (tmp_path / "benchmarks.md").read_text()
