"""report.json and the self-contained report.html of `engine.report`; the page is opened in headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon_worker.capture import Intrinsics
from recon_worker.engine.export import export_mesh, load_result_mesh, refinement_losses
from recon_worker.engine.meshcheck import check_mesh
from recon_worker.engine.metrics import GateResult, QualityMetrics, ViewMetrics, error_map
from recon_worker.engine.render import get_renderer
from recon_worker.engine.report import (
    ERROR_MAP_MAX,
    VIEWER_MAX_BYTES,
    VIEWER_SCRIPT,
    CaptureSummary,
    GpuTelemetry,
    Report,
    build_report,
    render_html,
    write_report,
)
from recon_worker.engine.validate import MeshTensors, render_views, to_png, turntable_poses
from recon_worker.presets import resolve_quality
from recon_worker.stage import STAGES
from tests.conftest import MESHES

CHROMIUM = Path("/usr/bin/chromium")
PREVIEW = 96


@pytest.fixture(scope="module")
def rendered_previews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real turntable renders of spot and a held-out comparison strip, rendered once for the module."""
    spot = load_result_mesh(MESHES / "spot")
    previews = tmp_path_factory.mktemp("previews")
    intrinsics = Intrinsics(PREVIEW * 1.4, PREVIEW * 1.4, PREVIEW / 2, PREVIEW / 2, PREVIEW, PREVIEW)
    poses = turntable_poses(np.zeros(3), 3.0, np.array([0.0, 1.0, 0.0]), 8, 20.0)
    rgb, _ = render_views(get_renderer("cpu", "pytorch3d"), MeshTensors.of(spot, "cpu"), intrinsics, poses)
    for k, image in enumerate(rgb):
        to_png(image).save(previews / f"turntable_{k:02d}.png")
    to_png(np.concatenate([rgb[0], rgb[1], np.zeros_like(rgb[0])], axis=1)).save(previews / "heldout_00.png")
    return previews


LOSSES = [(0, 0.5), (10, 0.2), (20, 0.08), (29, 0.05)]


def make_report(folder: Path, previews: Path, *, gates_passed: bool = True) -> Report:
    """A report for spot, its previews copied into folder/previews."""
    shutil.copytree(previews, folder / "previews")
    spot = load_result_mesh(MESHES / "spot")
    checks = check_mesh(spot)
    metrics = QualityMetrics(
        psnr=31.25, ssim=0.9712, mask_iou=0.9934, chamfer_l1=0.0712, fscore=0.9961, normal_consistency=0.987,
        faces=checks.faces, vertices=checks.vertices, watertight=True, manifold=True, renderer="pytorch3d",
        checks=checks,
        gates=GateResult(passed=gates_passed, enforced=False, failures=[] if gates_passed else ["PSNR 31.25 dB <x>"]),
        views=[
            ViewMetrics(image="test/r_0.png", psnr=31.25, ssim=0.9712, mask_iou=0.9934),
            ViewMetrics(image="test/r_1.png", psnr=28.5, ssim=0.95, mask_iou=0.99),
        ],
    )  # fmt: skip
    return build_report(
        metrics=metrics,
        settings=resolve_quality("draft"),
        capture=CaptureSummary(train_views=24, test_views=1, width=128, height=128, ground_truth=True),
        device="cpu",
        export_formats=["glb", "obj"],
        files=["mesh.glb"],
        stage_seconds={"fetch": 0.5, "reconstruct": 3.25, "validate": 2.0},
        resumed_stages=[],
        gpu=GpuTelemetry(),
        created=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        refinement_losses=LOSSES,
    )


def test_report_json_round_trips_with_all_sections(tmp_path: Path, rendered_previews: Path) -> None:
    report = make_report(tmp_path, rendered_previews)
    json_path, _ = write_report(report, tmp_path)
    again = Report.model_validate_json(json_path.read_text())
    assert again == report
    raw = json_path.read_text()
    for key in ("stageSeconds", "resumedStages", "gpu", "software", "metrics", "checks", "gates", "renderer"):
        assert f'"{key}"' in raw
    assert again.total_seconds == pytest.approx(5.75)
    assert again.gpu.peak_memory_allocated_gb is None  # the CPU has no GPU figures
    assert set(again.software) >= {"python", "torch", "pytorch3d", "nvdiffrast", "trimesh", "recon-worker"}


def test_report_html_is_self_contained(tmp_path: Path, rendered_previews: Path) -> None:
    _, html_path = write_report(make_report(tmp_path, rendered_previews, gates_passed=False), tmp_path)
    page = html_path.read_text()
    assert "<script" not in page
    # Every image is inlined; nothing is fetched from anywhere.
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 9 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(href|src)=\"(https?:|//|file:)", page) and "url(" not in page
    assert "quality gates failed" in page and "PSNR 31.25 dB &lt;x&gt;" in page  # escaped
    assert "31.250" in page and "0.0712" in page


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium (apt-get install chromium)"
)
def test_report_html_renders_previews_in_chromium(tmp_path: Path, rendered_previews: Path) -> None:
    (tmp_path / "out").mkdir()
    _, html_path = write_report(make_report(tmp_path / "out", rendered_previews), tmp_path / "out")
    shot = tmp_path / "shot.png"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
        f"--screenshot={shot}", "--window-size=1280,2000",
    ]  # fmt: skip
    run = subprocess.run(
        [str(CHROMIUM), *flags, html_path.as_uri()], capture_output=True, text=True, timeout=180, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Uncaught" not in run.stderr and "Failed to load resource" not in run.stderr, run.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape[:2] == (2000, 1280)
    # The turntable sits right below the title: its band holds the cow's coloured pixels in 8 figures.
    band = image[80:450]
    coloured = (band.max(axis=-1) - band.min(axis=-1)) > 40
    assert coloured.sum() > 2000, "no coloured preview pixels where the turntable should be"
    columns = np.nonzero(coloured.any(axis=0))[0]
    assert columns.max() - columns.min() > 600  # spread across the row, not one image


def test_report_times_every_stage(tmp_path: Path, rendered_previews: Path) -> None:
    report = make_report(tmp_path, rendered_previews)
    report.stage_seconds.update({"refine": 12.5, "texture": 1.5, "export": 0.75})
    report.resumed_stages.append("texture")
    page = render_html(report, tmp_path / "previews")
    timings = page.split("<h2>Timings (s)</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><th>([^<]*)</th><td class=num>([^<]*)</td></tr>", timings)
    assert [name.split()[0] for name, _ in rows] == [*STAGES, "total"]
    values = dict(rows)
    assert values["refine"] == "12.50" and values["export (until this report)"] == "0.75"
    assert "after this report" in values["publish"]
    assert values["total"] == "20.50"


def test_error_maps_have_a_colour_bar_in_error_maps_colours(tmp_path: Path, rendered_previews: Path) -> None:
    page = render_html(make_report(tmp_path, rendered_previews), rendered_previews)
    bar = re.search(r"<svg class=colorbar[^>]*>(.*?)</svg>", page)
    assert bar is not None, "no colour bar next to the error maps"
    colours = re.findall(r'fill="#([0-9a-f]{6})"', bar.group(1))
    steps = len(colours)
    errors = (np.arange(steps) + 0.5) / steps * ERROR_MAP_MAX
    expected = error_map(np.zeros((1, steps, 3)) + errors[None, :, None], np.zeros((1, steps, 3)))[0]  # [steps, 3]
    got = np.array([[int(c[i : i + 2], 16) for i in (0, 2, 4)] for c in colours])
    assert np.abs(got - expected.astype(int)).max() <= 1
    assert f"≥ {ERROR_MAP_MAX:g}" in page


def test_previews_are_shown_at_the_size_they_were_rendered(tmp_path: Path, rendered_previews: Path) -> None:
    page = render_html(make_report(tmp_path, rendered_previews), rendered_previews)
    images = re.findall(r'<img alt="([^"]*)" width="(\d+)" height="(\d+)" src="data:image/png;base64,', page)
    assert len(images) == 9
    for alt, width, height in images:
        if alt.startswith("turntable"):
            assert (int(width), int(height)) == (PREVIEW, PREVIEW)
        else:
            assert (int(width), int(height)) == (3 * PREVIEW, PREVIEW)
    assert not re.search(r"img\{[^}]*(min-)?width:\d+px", page), "CSS must not stretch the previews"


def test_report_plots_the_refinement_loss_and_psnr_per_view_inline(tmp_path: Path, rendered_previews: Path) -> None:
    report = make_report(tmp_path, rendered_previews)
    _, html_path = write_report(report, tmp_path)
    page = html_path.read_text()
    plots = re.findall(r'<svg class=plot [^>]*aria-label="([^"]*)">(.*?)</svg>', page)
    assert [label for label, _ in plots] == ["PSNR per view", "refinement loss"]
    psnr_svg, loss_svg = plots[0][1], plots[1][1]
    assert len(re.findall(r"<rect ", psnr_svg)) == len(report.metrics.views)
    (path,) = re.findall(r'<path d="([^"]*)"', loss_svg)
    assert len(path.split("L")) == len(LOSSES)
    # A falling loss: each sample is drawn below the one before (SVG's y grows downwards).
    ys = [float(point.split(",")[1]) for point in path.lstrip("M").split(" L")]
    assert ys == sorted(ys)
    assert "<script" not in page and "http" not in page.split("<svg", 1)[1]
    assert Report.model_validate_json((tmp_path / "report.json").read_text()).refinement_losses == LOSSES


def test_refinement_losses_are_read_from_the_refine_stages_info(tmp_path: Path) -> None:
    assert refinement_losses(tmp_path / "info.json") == []
    (tmp_path / "info.json").write_text('{"iterations": 30, "losses": [[0, 0.5], [29, 0.05]]}')
    assert refinement_losses(tmp_path / "info.json") == [(0, 0.5), (29, 0.05)]


def test_report_embeds_a_3d_viewer_of_its_mesh_with_the_packaged_script(
    tmp_path: Path, rendered_previews: Path
) -> None:
    report = make_report(tmp_path, rendered_previews)
    export_mesh(load_result_mesh(MESHES / "spot"), tmp_path, ["glb"])
    _, html_path = write_report(report, tmp_path)
    page = html_path.read_text()
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert scripts == [VIEWER_SCRIPT.read_text()], "one script, the one shipped in recon_worker.engine"
    assert VIEWER_SCRIPT.parent.name == "engine" and "fetch(" not in scripts[0] and "http" not in scripts[0]
    (glb,) = re.findall(r'<canvas id="recon-viewer"[^>]* data-glb="([^"]+)"', page)
    assert base64.b64decode(glb) == (tmp_path / "mesh.glb").read_bytes()
    assert not re.search(r"(href|src)=\"(https?:|//|file:)", page)


def test_no_viewer_without_a_mesh_or_for_a_large_one(tmp_path: Path, rendered_previews: Path) -> None:
    report = make_report(tmp_path, rendered_previews)
    assert "<script" not in render_html(report, tmp_path / "previews", tmp_path / "mesh.glb")
    (tmp_path / "mesh.glb").write_bytes(b"\0" * (VIEWER_MAX_BYTES + 1))
    page = render_html(report, tmp_path / "previews", tmp_path / "mesh.glb")
    assert "<script" not in page and "open it in a glTF viewer" in page


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium (apt-get install chromium)"
)
def test_the_3d_viewer_draws_the_textured_mesh_in_chromium(tmp_path: Path, rendered_previews: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    export_mesh(load_result_mesh(MESHES / "spot"), out, ["glb"])
    _, html_path = write_report(make_report(out, rendered_previews), out)
    shot = tmp_path / "shot.png"
    flags = [
        "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-first-run",
        "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
        f"--screenshot={shot}", "--window-size=1100,900",
    ]  # fmt: skip
    run = subprocess.run(
        [str(CHROMIUM), *flags, html_path.as_uri()], capture_output=True, text=True, timeout=180, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # The canvas (480 x 360) sits below the turntable: the cow's shaded pixels, dark patches and brown
    # horns included, fill part of it; a viewer that failed leaves it white.
    canvas = image[410:770, 25:505]
    drawn = (canvas.min(axis=-1) < 235).mean()
    assert 0.1 < drawn < 0.9, f"{drawn:.0%} of the viewer's canvas is drawn"
    assert (canvas.max(axis=-1) < 80).sum() > 500, "no dark texture patches: the texture was not applied"
