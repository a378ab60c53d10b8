"""The quality report: `report.json` (`Report`, for machines) and `report.html` (for people).

The HTML page is self-contained: previews are inlined as base64 data URIs (shown at the size they were
rendered, never upscaled), plots are inline SVG, the style sheet is inline, and nothing is fetched, so it
opens from S3, a mail attachment or a laptop without a network. Its one script is the optional 3D
viewer of mesh.glb (`viewer.js`, shipped in this package and inlined with the mesh; WebGL), left out
when the mesh is larger than `VIEWER_MAX_BYTES`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import platform
import struct
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
from recon_worker.stage import STAGES

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
    refinement_losses: list[tuple[int, float]] = Field(
        default_factory=list, description="(iteration, total loss) samples of the refinement, as it logged them."
    )
    stage_details: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="What each stage recorded in its info.json (timings of its steps, decimation), by stage.",
    )


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
.grid img{display:block;max-width:100%;height:auto}
figcaption{font-size:12px;padding:2px 6px;color:#555}.muted{color:#777;font-size:13px}
.legend{display:flex;align-items:center;gap:6px;font-size:12px;color:#555;margin:6px 0}
svg.plot{background:#fff;border:1px solid #ddd;margin:4px 8px 4px 0}svg.plot text{font-size:11px;fill:#555}
"""
# error_map's scale (engine/metrics.py): black at 0, red at half of max_error, yellow at max_error.
ERROR_MAP_MAX = 0.25
VIEWER_MAX_BYTES = 8_000_000  # a larger mesh.glb is not inlined (the page would grow by 4/3 of it)
VIEWER_SCRIPT = Path(__file__).with_name("viewer.js")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def _img(path: Path, alt: str) -> str:
    """An inlined PNG shown at the size it was rendered (width/height attributes: no upscaling blur)."""
    width, height = png_size(path)
    return f'<img alt="{html.escape(alt)}" width="{width}" height="{height}" src="{data_uri(path)}">'


def error_colour_bar(max_error: float = ERROR_MAP_MAX, steps: int = 50) -> str:
    """The colour scale of the error maps: mean absolute RGB error per pixel, 0 to `max_error` (clipped).

    Drawn as `steps` rectangles with error_map's own colours (no gradient reference: the page holds no url())."""
    cells = []
    for k in range(steps):
        err = (k + 0.5) / steps  # fraction of max_error
        red, green = min(1.0, 2 * err), min(1.0, max(0.0, 2 * err - 1))
        colour = f"#{round(red * 255):02x}{round(green * 255):02x}00"
        cells.append(f'<rect x="{k * 200 / steps:.1f}" width="{200 / steps + 0.5:.1f}" height="14" fill="{colour}"/>')
    return (
        '<div class=legend><span>error</span><svg class=colorbar width="200" height="14" role="img" '
        f'aria-label="error colour scale from 0 to {max_error:g}">{"".join(cells)}</svg>'
        f"<span>0 · {max_error / 2:g} · ≥ {max_error:g} (mean absolute RGB error, 0–1)</span></div>"
    )


def svg_plot(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_y: bool = False,
    bars: bool = False,
    width: int = 420,
    height: int = 220,
) -> str:
    """A small inline SVG chart of `points` (x, y): a line, or bars (one per point); axes with min/max ticks."""
    if not points:
        return f"<p class=muted>{html.escape(title)}: no data</p>"
    left, right, top, bottom = 52, 12, 22, 34
    xs = [float(x) for x, _ in points]
    ys = [math.log10(max(float(y), 1e-12)) if log_y else float(y) for _, y in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if bars:
        y0 = min(0.0, y0) if not log_y else y0
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 1, x1 + 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    def label(y: float) -> str:
        return f"{10**y:.3g}" if log_y else f"{y:.3g}"

    if bars:
        bar_w = max(1.0, plot_w / len(points) * 0.7)
        marks = "".join(
            f'<rect x="{px(x) - bar_w / 2:.1f}" y="{py(y):.1f}" width="{bar_w:.1f}" '
            f'height="{max(0.0, py(y0) - py(y)):.1f}" fill="#3d7fd6"><title>{x:g}: {label(y)}</title></rect>'
            for x, y in zip(xs, ys, strict=True)
        )
    else:
        corners = [f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True)]
        path = "M" + " L".join(corners)
        marks = f'<path d="{path}" fill="none" stroke="#3d7fd6" stroke-width="1.5"/>'
    axes = (
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>'
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>'
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{label(y1)}</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{label(y0)}</text>'
        f'<text x="{left}" y="{height - 18}" text-anchor="start">{min(xs):g}</text>'
        f'<text x="{left + plot_w}" y="{height - 18}" text-anchor="end">{max(xs):g}</text>'
        f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">{html.escape(x_label)}</text>'
        f'<text x="{left}" y="14" text-anchor="start">{html.escape(title)} ({html.escape(y_label)})</text>'
    )
    return (
        f'<svg class=plot width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">{axes}{marks}</svg>'
    )


def viewer_section(mesh: Path | None) -> str:
    """The 3D viewer of `mesh` (a GLB inlined in the canvas, the packaged script), or a note why not."""
    if mesh is None or not mesh.is_file():
        return ""
    size = mesh.stat().st_size
    if size > VIEWER_MAX_BYTES:
        return f"<h2>3D view</h2><p class=muted>mesh.glb is {size / 1e6:.1f} MB: open it in a glTF viewer.</p>"
    glb = base64.b64encode(mesh.read_bytes()).decode("ascii")
    script = VIEWER_SCRIPT.read_text(encoding="utf-8")
    return (
        '<h2>3D view</h2><canvas id="recon-viewer" width="480" height="360" '
        f'style="background:#fff;border:1px solid #ddd;touch-action:none" data-glb="{glb}"></canvas>'
        f'<p class=muted id="recon-viewer-status">3D view needs JavaScript and WebGL</p><script>{script}</script>'
    )


def timing_rows(stage_seconds: dict[str, float], resumed: Sequence[str]) -> list[tuple[str, object]]:
    """One row per pipeline stage, in order: its seconds, "resumed" (from a checkpoint), or, for the stages
    that end after the report is written (publish; export while it writes the report), a note."""
    rows: list[tuple[str, object]] = []
    for stage in STAGES:
        if stage in stage_seconds:
            note = " (until this report)" if stage == "export" else ""
            rows.append((stage + note, stage_seconds[stage]))
        elif stage in resumed:
            rows.append((stage, "resumed from a checkpoint"))
        else:
            rows.append((stage, "after this report (manifest.json has it)" if stage == "publish" else None))
    extra = [(k, v) for k, v in stage_seconds.items() if k not in STAGES]
    return rows + extra + [("total", float(sum(stage_seconds.values())))]


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


def render_html(report: Report, previews: Path, mesh: Path | None = None) -> str:
    """The report page, with the PNGs under `previews` inlined (turntable_*.png, heldout_*.png) and, when
    given, a 3D viewer of the GLB `mesh`."""
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
            ("  accuracy: result → GT (%)", m.geometry.accuracy if m.geometry else None),
            ("  completeness: GT → result (%)", m.geometry.completeness if m.geometry else None),
            ("F-score @ 0.5 % diagonal", m.fscore),
            ("GT seen by some training view (share)", m.geometry.visible_share if m.geometry else None),
            ("Chamfer-L1 over visible GT only (%)", m.geometry.chamfer_l1_visible if m.geometry else None),
            ("F-score over visible GT only", m.geometry.fscore_visible if m.geometry else None),
            ("normal consistency", m.normal_consistency),
            ("PSNR against the reference/ views (dB, aligned)", m.reference.psnr if m.reference else None),
            ("mask IoU against the reference/ views", m.reference.mask_iou if m.reference else None),
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
            ("connected components (each judged on its own)", c.components),
            ("inside-out components", c.inside_out_components),
            ("enclosed volume", c.volume),
        ],
        digits=4,
    )
    repairs = "".join(f"<li>{html.escape(r)}</li>" for r in c.repairs) or "<li>none needed</li>"
    frames = sorted(previews.glob("turntable_*.png"))
    turntable = "".join(
        f"<figure>{_img(p, f'turntable view {i}')}"
        f"<figcaption>azimuth {360 * i / len(frames):.0f}°</figcaption></figure>"
        for i, p in enumerate(frames)
    )
    comparisons = "".join(
        f"<figure class=cmp>{_img(p, f'held-out comparison {i}')}"
        f"<figcaption>capture | render | error (0 → {ERROR_MAP_MAX:g})</figcaption></figure>"
        for i, p in enumerate(sorted(previews.glob("heldout_*.png")))
    )
    legend = error_colour_bar() if comparisons else ""
    loss_plot = svg_plot(
        report.refinement_losses, title="refinement loss", x_label="iteration", y_label="log scale", log_y=True
    )
    psnr_plot = svg_plot(
        [(i, v.psnr) for i, v in enumerate(m.views)], title="PSNR per view", x_label="view", y_label="dB", bars=True
    )
    per_view = "".join(
        f"<tr><td>{html.escape(v.image)}</td><td class=num>{v.psnr:.2f}</td><td class=num>{v.ssim:.4f}</td>"
        f"<td class=num>{v.mask_iou:.4f}</td></tr>"
        for v in m.views
    )
    timings = _table(timing_rows(report.stage_seconds, report.resumed_stages), digits=2)
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
{viewer_section(mesh)}
<h2>Metrics</h2>{summary}
<p class=muted>Image metrics over the {html.escape(m.view_split)} views, composited on white.</p>
<h2>Held-out views</h2>{legend}<div class=grid>{comparisons or "<p>no held-out views</p>"}</div>
<div class=grid>{psnr_plot}{loss_plot}</div>
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
    refinement_losses: Sequence[tuple[int, float]] = (),
    stage_details: dict[str, dict[str, Any]] | None = None,
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
        refinement_losses=[(int(i), float(loss)) for i, loss in refinement_losses if math.isfinite(float(loss))],
        stage_details=dict(stage_details or {}),
    )


def write_report(report: Report, folder: Path) -> tuple[Path, Path]:
    """report.json and report.html into `folder` (previews from `folder/previews`, the viewer's mesh from
    `folder/mesh.glb` when it is there)."""
    json_path, html_path = folder / "report.json", folder / "report.html"
    json_path.write_text(report.model_dump_json(by_alias=True, indent=2))
    html_path.write_text(render_html(report, folder / "previews", folder / "mesh.glb"), encoding="utf-8")
    return json_path, html_path
