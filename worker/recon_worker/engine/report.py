"""The quality report: `report.json` (`Report`, for machines) and `report.html` (for people).

The HTML page is self-contained: previews are inlined as base64 data URIs, the style sheet is inline
and there is no script and no external resource, so it opens from S3, a mail attachment or a laptop
without a network.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from recon_worker import __version__
from recon_worker.engine.metrics import QualityMetrics
from recon_worker.gpu_usage import StageGpuUse
from recon_worker.presets import QualitySettings

GB = 1e9
REPORT_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CaptureSummary(_Model):
    train_views: int
    test_views: int
    width: int
    height: int
    ground_truth: bool


class GpuTelemetry(_Model):
    """GPU use of this process; every field None on the CPU."""

    name: str | None = None
    total_memory_gb: float | None = None
    peak_memory_allocated_gb: float | None = Field(None, description="torch.cuda.max_memory_allocated, GB (1e9 B).")
    peak_memory_reserved_gb: float | None = Field(None, description="Peak held by PyTorch's caching allocator, GB.")
    process_memory_gb: float | None = Field(None, description="NVML: memory this process holds now (context too).")
    utilization_mean_percent: float | None = Field(None, description="NVML samples the driver kept (recent seconds).")
    utilization_max_percent: float | None = None
    stages: dict[str, StageGpuUse] = Field(
        default_factory=dict, description="NVML samples per stage (recon_worker.gpu_usage), stages run so far."
    )


class Report(_Model):
    version: int = REPORT_VERSION
    created: datetime
    preset: str
    settings: dict[str, Any] = Field(description="Resolved quality settings (camelCase, as in the task).")
    export_formats: list[str]
    files: list[str] = Field(description="Files written next to this report, relative to it.")
    capture: CaptureSummary
    renderer: str
    device: str
    metrics: QualityMetrics
    stage_seconds: dict[str, float]
    total_seconds: float = Field(description="Sum of the stage timings known when the report was written.")
    resumed_stages: list[str]
    gpu: GpuTelemetry
    software: dict[str, str | None]


def software_versions() -> dict[str, str | None]:
    """Versions of everything that shapes the figures (None: not installed)."""
    versions: dict[str, str | None] = {"recon-worker": __version__, "python": platform.python_version()}
    for name, dist in (
        ("torch", "torch"),
        ("pytorch3d", "easypytorch3d"),
        ("nvdiffrast", "diffrp-nvdiffrast"),
        ("trimesh", "trimesh"),
        ("xatlas", "xatlas"),
        ("fast-simplification", "fast-simplification"),
        ("numpy", "numpy"),
    ):
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def gpu_telemetry(device: str, stages: dict[str, StageGpuUse] | None = None) -> GpuTelemetry:
    """Peak memory from PyTorch and what NVML knows of this process's GPU; empty on the CPU.

    `stages`: the utilisation per stage the pipeline sampled (`recon_worker.gpu_usage.per_stage`).
    """
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return GpuTelemetry()
    index = torch.cuda.current_device()
    telemetry = GpuTelemetry(
        name=torch.cuda.get_device_name(index),
        total_memory_gb=torch.cuda.get_device_properties(index).total_memory / GB,
        peak_memory_allocated_gb=torch.cuda.max_memory_allocated(index) / GB,
        peak_memory_reserved_gb=torch.cuda.max_memory_reserved(index) / GB,
        stages=stages or {},
    )
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    telemetry.process_memory_gb = proc.usedGpuMemory / GB
            try:
                _, samples = pynvml.nvmlDeviceGetSamples(handle, pynvml.NVML_GPU_UTILIZATION_SAMPLES, 0)
                values = [s.sampleValue.uiVal for s in samples]
                if values:
                    telemetry.utilization_mean_percent = sum(values) / len(values)
                    telemetry.utilization_max_percent = float(max(values))
            except pynvml.NVMLError:
                pass  # some drivers keep no utilisation samples
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # telemetry must never fail an export: without NVML, torch's figures stand alone
        telemetry.name = f"{telemetry.name} (NVML unavailable: {exc})"
    return telemetry


# --------------------------------------------------------------------------------------------------
# HTML

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{margin:0 0 4px}h2{margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:left}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;color:#fff;font-weight:600}
.pass{background:#1b873f}.fail{background:#c62828}.warn{background:#b26a00}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;background:#fff;border:1px solid #ddd}
.grid img{display:block;width:230px}.grid .cmp img{width:auto;min-width:450px;max-width:100%}
figcaption{font-size:12px;padding:2px 6px;color:#555}.muted{color:#777;font-size:13px}
"""


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(rows: Sequence[tuple[str, object]], digits: int = 3) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class=num>{_fmt(v, digits)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render_html(report: Report, previews: Path) -> str:
    """The report page, with the PNGs under `previews` inlined (turntable_*.png, heldout_*.png)."""
    m = report.metrics
    verdict = (
        '<span class="badge pass">quality gates passed</span>'
        if m.gates.passed
        else f'<span class="badge {"fail" if m.gates.enforced else "warn"}">quality gates failed</span>'
    )
    failures = "".join(f"<li>{html.escape(f)}</li>" for f in m.gates.failures)
    summary = _table(
        [
            ("PSNR (dB, held-out, white bg)", m.psnr),
            ("SSIM", m.ssim),
            ("mask IoU", m.mask_iou),
            ("Chamfer-L1 (% of GT bbox diagonal)", m.chamfer_l1),
            ("F-score @ 0.5 % diagonal", m.fscore),
            ("normal consistency", m.normal_consistency),
            ("faces", m.faces),
            ("vertices", m.vertices),
            ("watertight", m.watertight),
            ("manifold", m.manifold),
        ],
        digits=4,
    )
    c = m.checks
    checks = _table(
        [
            ("finite (no NaN/Inf)", c.finite),
            ("boundary edges", c.boundary_edges),
            ("non-manifold edges", c.non_manifold_edges),
            ("non-manifold vertices", c.non_manifold_vertices),
            ("inconsistently wound edges", c.inconsistent_edges),
            ("degenerate faces", c.degenerate_faces),
            ("duplicate faces", c.duplicate_faces),
            ("connected components", c.components),
            ("enclosed volume", c.volume),
        ],
        digits=4,
    )
    repairs = "".join(f"<li>{html.escape(r)}</li>" for r in c.repairs) or "<li>none needed</li>"
    frames = sorted(previews.glob("turntable_*.png"))
    turntable = "".join(
        f'<figure><img alt="turntable view {i}" src="{data_uri(p)}">'
        f"<figcaption>azimuth {360 * i / len(frames):.0f}°</figcaption></figure>"
        for i, p in enumerate(frames)
    )
    comparisons = "".join(
        f'<figure class=cmp><img alt="held-out comparison {i}" src="{data_uri(p)}">'
        f"<figcaption>capture | render | error (0 → 0.25)</figcaption></figure>"
        for i, p in enumerate(sorted(previews.glob("heldout_*.png")))
    )
    per_view = "".join(
        f"<tr><td>{html.escape(v.image)}</td><td class=num>{v.psnr:.2f}</td><td class=num>{v.ssim:.4f}</td>"
        f"<td class=num>{v.mask_iou:.4f}</td></tr>"
        for v in m.views
    )
    timings = _table([(k, v) for k, v in report.stage_seconds.items()] + [("total", report.total_seconds)], digits=2)
    gpu = report.gpu
    gpu_rows = _table(
        [
            ("GPU", gpu.name),
            ("peak allocated (GB)", gpu.peak_memory_allocated_gb),
            ("peak reserved (GB)", gpu.peak_memory_reserved_gb),
            ("process memory, NVML (GB)", gpu.process_memory_gb),
            ("utilisation mean / max (%)", None if gpu.utilization_mean_percent is None else
                f"{gpu.utilization_mean_percent:.0f} / {gpu.utilization_max_percent:.0f}"),
        ],
        digits=2,
    )  # fmt: skip
    software = _table(list(report.software.items()))
    cap = report.capture
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Reconstruction report</title>
<style>{_STYLE}</style></head><body>
<h1>Reconstruction report</h1>
<p class=muted>{report.created:%Y-%m-%d %H:%M:%S} UTC · preset <b>{html.escape(report.preset)}</b> ·
renderer <b>{html.escape(report.renderer)}</b> on {html.escape(report.device)} ·
capture {cap.train_views} training + {cap.test_views} held-out views at {cap.width}×{cap.height}
{"· ground truth known" if cap.ground_truth else ""}</p>
<p>{verdict}{" (enforced)" if m.gates.enforced else ""}</p>{f"<ul>{failures}</ul>" if failures else ""}
<h2 id=turntable>Turntable</h2><div class=grid>{turntable}</div>
<h2>Metrics</h2>{summary}
<p class=muted>Image metrics over the {html.escape(m.view_split)} views, composited on white.</p>
<h2>Held-out views</h2><div class=grid>{comparisons or "<p>no held-out views</p>"}</div>
<table><tr><th>view</th><th>PSNR</th><th>SSIM</th><th>mask IoU</th></tr>{per_view}</table>
<h2>Validity</h2>{checks}<p>Repairs:</p><ul>{repairs}</ul>
<h2>Timings (s)</h2>{timings}
<p class=muted>Resumed from a checkpoint: {html.escape(", ".join(report.resumed_stages) or "none")}</p>
<h2>GPU</h2>{gpu_rows}
<h2>Files</h2><p>{html.escape(", ".join(f for f in report.files if not f.startswith("previews/")))}</p>
<h2>Settings</h2><pre>{html.escape(json.dumps(report.settings, indent=2))}</pre>
<h2>Software</h2>{software}
</body></html>
"""


def build_report(
    *,
    metrics: QualityMetrics,
    settings: QualitySettings,
    capture: CaptureSummary,
    device: str,
    export_formats: list[str],
    files: list[str],
    stage_seconds: dict[str, float],
    resumed_stages: list[str],
    gpu: GpuTelemetry,
    created: datetime | None = None,
) -> Report:
    return Report(
        created=created or datetime.now(UTC),
        preset=settings.preset,
        settings=settings.model_dump(mode="json", by_alias=True),
        export_formats=export_formats,
        files=files,
        capture=capture,
        renderer=metrics.renderer,
        device=device,
        metrics=metrics,
        stage_seconds=dict(stage_seconds),
        total_seconds=float(sum(stage_seconds.values())),
        resumed_stages=list(resumed_stages),
        gpu=gpu,
        software=software_versions(),
    )


def write_report(report: Report, folder: Path) -> tuple[Path, Path]:
    """report.json and report.html into `folder` (previews are read from `folder/previews`)."""
    json_path, html_path = folder / "report.json", folder / "report.html"
    json_path.write_text(report.model_dump_json(by_alias=True, indent=2))
    html_path.write_text(render_html(report, folder / "previews"), encoding="utf-8")
    return json_path, html_path
