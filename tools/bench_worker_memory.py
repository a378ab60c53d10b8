"""Worker memory benchmark: peak RSS of `recon-worker local` against the number of views and their resolution.

    python tools/bench_worker_memory.py run --out .scratch/bench-memory.json   # measure (CPU, draft)
    python tools/bench_worker_memory.py docs .scratch/bench-memory.json        # write the docs
    python tools/bench_worker_memory.py stages --out .scratch/stages.json      # peak of each stage (CPU)
    python tools/bench_worker_memory.py reconstruct --out .scratch/recon.json  # the reconstruct stage alone
    python tools/bench_worker_memory.py gpu --out gpu-memory.json              # peak CUDA memory (a GPU host)
    python tools/bench_worker_memory.py docs --keep gpu-memory.json            # add a record to the docs

Each case writes a capture of a sphere seen from a ring of cameras (PIL, outside the measured process),
then runs `recon-worker local --quality draft --device cpu --no-resume` (refinement cut to a few
iterations: its memory does not grow with them) as a child process and reads its
peak resident set size from the kernel (`wait4`'s ru_maxrss). A least-squares fit of peak = base +
per_view x views + per_pixel x decoded pixels over the rows is what `memory.memory_model` is
calibrated against (`recon_worker/memory.py`). `docs` rewrites the "## Worker memory" section of docs/benchmarks.md and
docs/benchmarks/worker-memory.json.

`stages` and `gpu` run the same pipeline in a child process with a listener that records, for each stage,
the peak resident memory (the kernel's VmHWM, reset at every stage start through /proc/self/clear_refs)
and, on CUDA, torch's peak allocated and reserved device memory (reset at every stage start as well), so
a stage whose memory grows with the views shows as its own row (a child per case; `wait4`'s figure is
reset with VmHWM, so a case's peak is its stages' largest). `gpu` runs the standard preset (2 refinement
steps) over a views series and a resolution series on CUDA in one child, within `--budget-s`, and fits
peak device memory and peak host memory = base + per_view x views + per_pixel x pixels: `hostFit` is the
figure the GPU capture limits need (`memory.BYTES_PER_PIXEL["cuda"]`), `cudaFit` the device's own.
`reconstruct` runs only the reconstruct stage's work (masks loaded, grid carved), for before/after figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from benchdocs import gather_records, replace_section
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
DOCS_MD = REPO / "docs" / "benchmarks.md"
DOCS_JSON = REPO / "docs" / "benchmarks" / "worker-memory.json"
SECTION = "## Worker memory"
CAMERA_ANGLE_X, DISTANCE, RADIUS = 0.8, 3.0, 1.0
# (views, resolution): a views series at a small resolution, a resolution series at few views.
CASES = [(16, 32), (128, 32), (512, 32), (16, 512), (16, 1024)]
# Per-stage peaks on the CPU: a views series at 16² (images are ~nothing, so growth is the engine's own).
STAGE_CASES = [(16, 16), (128, 16), (512, 16)]
RECONSTRUCT_CASES = [(16, 16), (128, 16), (512, 16), (2002, 16)]  # 2,002 views of 16²: issue 11's capture
# Peak CUDA memory (one H200 in about a minute, with nvdiffrast's plugin compiled on first use): a views
# series at 64² and a resolution series at 16 views, interleaved so that a run cut short by its time budget
# still has both series for the fit.
GPU_CASES = [(16, 64), (16, 1024), (128, 64), (16, 2048), (512, 64), (16, 512)]


def look_at(position: np.ndarray) -> np.ndarray:
    z = position / np.linalg.norm(position)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, np.cross(z, x), z, position
    return c2w


def write_sphere_capture(root: Path, views: int, size: int) -> None:
    (root / "images").mkdir(parents=True)
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    r = focal * RADIUS / math.sqrt(DISTANCE**2 - RADIUS**2)
    frames = []
    for i in range(views):
        azimuth, elevation = 2 * math.pi * i / views, 0.5 * math.sin(7.0 * i / views)
        position = DISTANCE * np.array(
            [math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth)]
        )
        image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        # A distinct colour per view: identical images are refused by the capture checks.
        color = (i % 256, (i // 256) * 40 % 256, 200 - i % 100)
        ImageDraw.Draw(image).ellipse([size / 2 - r, size / 2 - r, size / 2 + r, size / 2 + r], fill=(*color, 255))
        image.save(root / "images" / f"r_{i}.png")
        frames.append({"file_path": f"images/r_{i}.png", "transform_matrix": look_at(position).tolist()})
    (root / "transforms.json").write_text(json.dumps({"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}))


def measure(views: int, size: int, iterations: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        capture = Path(tmp) / "capture"
        write_sphere_capture(capture, views, size)
        command = [sys.executable, "-m", "recon_worker.cli", "local", "--input", str(capture)]
        command += ["--output", str(Path(tmp) / "out"), "--quality", "draft", "--device", "cpu", "--no-resume"]
        command += ["--max-views", "100000", "--max-total-pixels", str(10**12)]
        command += ["--set", f"refinement.iterations={iterations}"]
        env = {**os.environ, "RECON_SCRATCH": str(Path(tmp) / "scratch"), "RECON_LOG_LEVEL": "WARNING"}
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    exit_code = os.waitstatus_to_exitcode(status)
    return {
        "views": views,
        "resolution": size,
        "decodedPixels": views * size * size,
        "peakRssMiB": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
        "seconds": round(seconds, 1),
        "exitCode": exit_code,
        **({"error": stderr.strip().splitlines()[-1][:300]} if exit_code and stderr.strip() else {}),
    }


def loading_peaks(views: int = 64, size: int = 512) -> dict[str, float]:
    """Peak Python/NumPy allocation (tracemalloc, MiB) of each way `Capture` hands out the views."""
    import tracemalloc

    sys.path.insert(0, str(REPO / "worker"))
    from recon_worker.capture import load_capture

    with tempfile.TemporaryDirectory(prefix="bench-loading-") as tmp:
        write_sphere_capture(Path(tmp) / "capture", views, size)
        capture = load_capture(Path(tmp) / "capture")
        ways = {
            "load_images float32": lambda: capture.load_images("train"),
            "load_images uint8": lambda: capture.load_images("train", np.uint8),
            "load_masks uint8": lambda: capture.load_masks("train"),
            "iter_views, 8 at a time": lambda: [int(b[..., 3].max()) for _, b in capture.iter_views("train", 8)],
        }
        peaks = {}
        for name, load in ways.items():
            tracemalloc.start()
            result = load()
            peaks[name] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
            tracemalloc.stop()
            del result
    return {"views": views, "resolution": size, **peaks}


# ---- per-stage peaks (the child process runs the pipeline with this listener) ---------------------------


class StagePeaks:
    """A progress listener: peak host RSS and (on CUDA) peak device memory of each stage, in MiB."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.stage: str | None = None
        self.rows: list[dict[str, Any]] = []

    @staticmethod
    def _status_kib(field: str) -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

    def _reset(self) -> None:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def close(self) -> None:
        """The row of the stage that ran until now."""
        if self.stage is None:
            return
        row: dict[str, Any] = {
            "stage": self.stage,
            "startRssMiB": round(self._start_kib / 1024, 1),
            "peakRssMiB": round(self._status_kib("VmHWM") / 1024, 1),
        }
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            row["peakCudaAllocatedMiB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            row["peakCudaReservedMiB"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        self.rows.append(row)
        self.stage = None

    def __call__(self, event: Any) -> None:
        if not event.stage_changed:
            return
        self.close()
        self._reset()
        self.stage, self._start_kib = event.stage, self._status_kib("VmRSS")


def stage_child(cases: list[str], device: str, preset: str, iterations: int, budget_s: float) -> int:
    """In the child process: each case's capture through the pipeline with StagePeaks, one JSON line per case.

    One process for every case (on CUDA the process start, CUDA's context and nvdiffrast's plugin are paid
    once); between cases the device cache is emptied and the peaks reset, so each case's figures are its
    own. Cases after `budget_s` seconds are left out."""
    import gc

    sys.path.insert(0, str(REPO / "worker"))
    from recon_worker.capture_checks import CaptureLimits
    from recon_worker.presets import resolve_quality
    from recon_worker.runner import execute
    from recon_worker.task import load_task

    settings = resolve_quality(preset, {"refinement": {"iterations": iterations}})  # type: ignore[arg-type]
    limits = CaptureLimits(max_views=10**6, max_total_pixels=10**12)
    began = time.monotonic()
    for case in cases:
        views, size = (int(v) for v in case.split("x"))
        if time.monotonic() - began > budget_s:
            print(json.dumps({"views": views, "resolution": size, "skipped": f"over the {budget_s:.0f} s budget"}))
            continue
        with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
            write_sphere_capture(Path(tmp) / "capture", views, size)
            document = {
                "apiVersion": "recon.dev/v1alpha1",
                "input": {"uri": (Path(tmp) / "capture").as_uri()},
                "output": {"uri": (Path(tmp) / "out").as_uri()},
                "quality": settings.model_dump(mode="json", by_alias=True),
                "compute": {"gpus": 1 if device == "cuda" else 0, "minGpuMemoryGiB": 0},
            }
            peaks = StagePeaks(cuda=device == "cuda")
            started = time.monotonic()
            outcome = execute(load_task(json.dumps(document)), listeners=[peaks], limits=limits, use_checkpoints=False)
            peaks.close()
        row: dict[str, Any] = {
            "views": views,
            "resolution": size,
            "decodedPixels": views * size * size,
            "seconds": round(time.monotonic() - started, 1),
            "exitCode": outcome.exit_code,
            **({"error": f"{outcome.reason}: {outcome.message}"[:300]} if outcome.exit_code else {}),
            "peakRssMiB": max((r["peakRssMiB"] for r in peaks.rows), default=0.0),
            "stages": peaks.rows,
        }
        if device == "cuda" and peaks.rows:
            row["peakCudaAllocatedMiB"] = max(r["peakCudaAllocatedMiB"] for r in peaks.rows)
            row["peakCudaReservedMiB"] = max(r["peakCudaReservedMiB"] for r in peaks.rows)
        print(json.dumps(row), flush=True)
        gc.collect()
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()
    return 0


def reconstruct_child(capture: str, backend: str, resolution: int) -> int:
    """In the child process: the reconstruct stage's work alone; prints its peak RSS above its start."""
    sys.path.insert(0, str(REPO / "worker"))
    import torch  # noqa: F401  (imported before the start figure: its libraries are not the stage's)

    from recon_worker.capture import load_capture
    from recon_worker.engine.reconstruct import get_reconstructor
    from recon_worker.engine.reconstruct.views import SilhouetteViews

    peaks = StagePeaks(cuda=False)
    loaded = load_capture(Path(capture))
    reconstructor = get_reconstructor(backend)
    peaks._reset()
    start = peaks._status_kib("VmRSS")
    started = time.monotonic()
    views = SilhouetteViews.from_capture(loaded, with_color=bool(getattr(reconstructor, "needs_color", False)))
    mesh = reconstructor(views, resolution)
    row = {
        "startRssMiB": round(start / 1024, 1),
        "peakRssMiB": round(peaks._status_kib("VmHWM") / 1024, 1),
        "seconds": round(time.monotonic() - started, 1),
        "faces": len(mesh.faces),
    }
    print(json.dumps(row))
    return 0


def reconstruct(args: argparse.Namespace) -> int:
    """Peak RSS of the reconstruct stage alone (a child process per case) against the number of views."""
    cases = [tuple(int(v) for v in c.split("x")) for c in args.case] if args.case else RECONSTRUCT_CASES
    rows = []
    for views, size in cases:
        with tempfile.TemporaryDirectory(prefix="bench-reconstruct-") as tmp:
            write_sphere_capture(Path(tmp) / "capture", views, size)
            command = [sys.executable, __file__, "reconstruct-child", str(Path(tmp) / "capture"), args.backend]
            done = subprocess.run([*command, str(args.resolution)], capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        row = {"views": views, "resolution": size, "backend": args.backend, "grid": args.resolution}
        row |= json.loads(lines[-1]) if lines else {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
        row["stageMiB"] = round(row["peakRssMiB"] - row["startRssMiB"], 1) if "peakRssMiB" in row else None
        print(json.dumps(row), flush=True)
        rows.append(row)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "kind": "reconstruct",
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": machine("cpu"),
        }
        record |= {"note": args.note, "rows": rows}
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


def run_stage_child(
    cases: list[tuple[int, int]], args: argparse.Namespace, device: str, on_row: Callable[[dict[str, Any]], None]
) -> None:
    """`stage-child` for `cases` in one child process; `on_row` gets each row as it comes (stderr passes)."""
    command = [sys.executable, __file__, "stage-child", "--device", device, "--preset", args.preset]
    command += ["--iterations", str(args.iterations), "--budget-s", str(args.budget_s)]
    command += [f"{v}x{r}" for v, r in cases]
    rows = 0
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        env = {**os.environ, "RECON_SCRATCH": tmp, "RECON_LOG_LEVEL": "WARNING"}
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as child:
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith("{"):
                    rows += 1
                    on_row(json.loads(line))
        if child.returncode and rows < len(cases):
            on_row({"views": 0, "resolution": 0, "exitCode": child.returncode, "error": "the child process died"})


def growth(rows: list[dict[str, Any]], key: str = "peakRssMiB") -> dict[str, float]:
    """Per stage, MiB per view of its peak over the rows (least squares on views; rows share a resolution)."""
    stages = {s["stage"] for r in rows for s in r["stages"]}
    slopes = {}
    for stage in sorted(stages):
        points = [(r["views"], s[key]) for r in rows for s in r["stages"] if s["stage"] == stage and key in s]
        if len({v for v, _ in points}) >= 2:
            v, m = np.array(points, dtype=float).T
            slopes[stage] = round(float(np.polyfit(v, m, 1)[0]), 3)
    return slopes


def stages(args: argparse.Namespace) -> int:
    """`stages`: a child process per case (host figures of one run each); `gpu`: one child for all cases."""
    device = "cuda" if args.command == "gpu" else args.device
    default = GPU_CASES if args.command == "gpu" else STAGE_CASES
    cases = [(int(c.split("x")[0]), int(c.split("x")[1])) for c in args.case] if args.case else default
    result: dict[str, Any] = {
        "kind": args.command,  # "stages" or "gpu"
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(device),
        "preset": f"{args.preset}, {args.iterations} refinement iterations",
        "device": device,
        "rows": [],
    }

    def on_row(row: dict[str, Any]) -> None:
        print(json.dumps({k: v for k, v in row.items() if k != "stages"}), flush=True)
        result["rows"].append(row)
        rows = [r for r in result["rows"] if r.get("exitCode") == 0]
        same = [r for r in rows if r["resolution"] == cases[0][1]]
        result["perViewMiBByStage"] = growth(same)
        if device == "cuda":
            result["perViewCudaMiBByStage"] = growth(same, "peakCudaAllocatedMiB")
            if len({(r["views"], r["decodedPixels"]) for r in rows}) >= 3:
                result["cudaFit"] = fit(rows, "peakCudaAllocatedMiB")
                result["hostFit"] = fit(rows)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # after every row: a killed run keeps its rows
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")

    for batch in [cases] if device == "cuda" else [[case] for case in cases]:
        run_stage_child(batch, args, device, on_row)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    return 0


def machine(device: str) -> str:
    text = f"{platform.machine()}, {os.cpu_count()} CPUs, {physical_gib():.0f} GiB, {platform.system()}"
    if device == "cuda":
        import torch

        text += f", {torch.cuda.get_device_name(0)}"
    return text


def fit(rows: list[dict[str, Any]], key: str = "peakRssMiB") -> dict[str, float]:
    """peak bytes = base + per_view * views + per_pixel * pixels, least squares over the successful rows."""
    ok = [r for r in rows if r["exitCode"] == 0 and key in r]
    a = np.array([[1.0, r["views"], r["decodedPixels"]] for r in ok])
    b = np.array([r[key] * 2**20 for r in ok])
    (base, per_view, per_pixel), *_ = np.linalg.lstsq(a, b, rcond=None)
    return {
        "baseMiB": round(base / 2**20, 1),
        "perViewMiB": round(per_view / 2**20, 3),
        "perPixelBytes": round(per_pixel, 1),
    }


def run(args: argparse.Namespace) -> int:
    cases = [tuple(int(v) for v in c.split("x")) for c in args.case] if args.case else CASES
    if args.rows:  # rows measured earlier (e.g. one case per call on a busy machine), merged as they are
        previous = json.loads(Path(args.rows).read_text())["rows"]
        measured = {(r["views"], r["resolution"]) for r in previous}
        cases = [c for c in cases if c not in measured]
    else:
        previous = []
    rows = list(previous)
    for views, size in cases:
        row = measure(views, size, args.iterations)
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {physical_gib():.0f} GiB, {platform.system()}",
        "preset": f"draft, {args.iterations} refinement iterations",
        "device": "cpu",
        "rows": rows,
        "fit": fit(rows),
        "loading": loading_peaks(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["fit"]))
    return 0


def physical_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _run_lines(result: dict[str, Any]) -> list[str]:
    """The whole-process table of a `run` record."""
    f = result["fit"]
    lines = [
        f"{result['date']}, {result['machine']}, preset {result['preset']}, {result['device']}:",
        "",
        "| views | resolution | decoded pixels | peak RSS (MiB) | seconds | exit |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['views']} | {r['resolution']}² | {r['decodedPixels']:,} | {r['peakRssMiB']:,.0f} | {r['seconds']} | "
        f"{r['exitCode']} |"
        for r in result["rows"]
    ]
    lines += [
        "",
        f"Fit: peak ≈ {f['baseMiB']:,.0f} MiB + {f['perViewMiB']:.2f} MiB per view + {f['perPixelBytes']:.0f} bytes"
        " per decoded pixel.",
        "",
    ]
    if loading := result.get("loading"):
        lines += [
            f"Loading {loading['views']} views of {loading['resolution']}² (peak allocation, tracemalloc):",
            "",
            "| how | peak (MiB) |",
            "|---|---:|",
        ]
        lines += [f"| `{k}` | {v:,.0f} |" for k, v in loading.items() if k not in ("views", "resolution")]
        lines += [""]
    return lines


def _stage_lines(result: dict[str, Any]) -> list[str]:
    """Per-stage peaks of a `stages` or `gpu` record: host RSS, and device memory on CUDA."""
    cuda = result["device"] == "cuda"
    names = [s["stage"] for s in next((r["stages"] for r in result["rows"] if r.get("stages")), [])]
    lines = [
        (f"{result['note']}: p" if result.get("note") else "P")
        + f"er stage, {result['date']}, {result['machine']}, preset {result['preset']}, {result['device']}"
        + (" (peak host RSS / peak CUDA allocated, MiB):" if cuda else " (peak RSS during the stage, MiB):"),
        "",
        "| views | resolution | " + " | ".join(names) + " | seconds |",
        "|---:|---:|" + "---:|" * len(names) + "---:|",
    ]
    for r in result["rows"]:
        if not r.get("stages"):
            lines.append(f"| {r['views']} | {r['resolution']}² | " + " | ".join("-" * 1 for _ in names) + " | - |")
            continue
        by = {s["stage"]: s for s in r["stages"]}
        cells = []
        for name in names:
            stage = by.get(name)
            if stage is None:
                cells.append("-")
            elif cuda:
                cells.append(f"{stage['peakRssMiB']:,.0f} / {stage['peakCudaAllocatedMiB']:,.0f}")
            else:
                cells.append(f"{stage['peakRssMiB']:,.0f}")
        lines.append(f"| {r['views']} | {r['resolution']}² | " + " | ".join(cells) + f" | {r['seconds']} |")
    slopes = result.get("perViewMiBByStage") or {}
    if slopes:
        lines += ["", "Growth per view (MiB, least squares over the views series): "
                  + ", ".join(f"{k} {v:+.3f}" for k, v in slopes.items()) + "."]  # fmt: skip
    for key, what in (("cudaFit", "peak CUDA allocated"), ("hostFit", "peak host RSS")):
        if f := result.get(key):
            lines += [
                "",
                f"Fit, {what} ≈ {f['baseMiB']:,.0f} MiB + {f['perViewMiB']:.3f} MiB per view"
                f" + {f['perPixelBytes']:.0f} bytes per decoded pixel.",
            ]
    return [*lines, ""]


def _reconstruct_lines(records: list[dict[str, Any]]) -> list[str]:
    """The reconstruct stage alone, one column per note (e.g. before and after a change)."""
    notes = list(dict.fromkeys(r["note"] for r in records))
    results = [
        {**records[0], "note": n, "rows": [x for r in records if r["note"] == n for x in r["rows"]]} for n in notes
    ]
    keys = sorted({(r["views"], r["resolution"], r["backend"], r["grid"]) for res in results for r in res["rows"]})
    lines = [
        f"The reconstruct stage alone (masks loaded and carved; peak RSS above its start, MiB; {results[0]['date']},"
        f" {results[0]['machine']}):",
        "",
        "| views | resolution | backend | grid | " + " | ".join(res["note"] or "?" for res in results) + " |",
        "|---:|---:|---|---:|" + "---:|" * len(results),
    ]
    for key in keys:
        cells = []
        for res in results:
            row = next((r for r in res["rows"] if (r["views"], r["resolution"], r["backend"], r["grid"]) == key), None)
            cells.append(
                "-" if row is None or row.get("stageMiB") is None else f"{row['stageMiB']:,.0f} ({row['seconds']} s)"
            )
        lines.append(f"| {key[0]:,} | {key[1]}² | {key[2]} | {key[3]}³ | " + " | ".join(cells) + " |")
    return [*lines, ""]


def docs(args: argparse.Namespace) -> int:
    results = gather_records(DOCS_JSON, args.results, args.keep)
    lines = [
        SECTION,
        "",
        "Peak resident memory of `recon-worker local --device cpu` (the whole process: fetch, checks,",
        "reconstruct, refine, texture, validate, export, publish) against views and resolution, per stage, and",
        "on a GPU the device's peak; `make bench-worker-memory` (tools/bench_worker_memory.py: `run`, `stages`,",
        "`reconstruct`, `gpu`), records in docs/benchmarks/worker-memory.json. The whole-process fit is what",
        "the capture limits (`max_views`, `max_total_pixels`, docs/worker.md) are derived from.",
        "",
    ]
    for result in results:
        kind = result.get("kind", "run")
        if kind == "run":
            lines += _run_lines(result)
        elif kind in ("stages", "gpu"):
            lines += _stage_lines(result)
    reconstructs = [r for r in results if r.get("kind") == "reconstruct"]
    if reconstructs:
        lines += _reconstruct_lines(reconstructs)
    lines += [line for r in results for line in r.get("notes", [])]
    replace_section(DOCS_MD, SECTION, lines)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run", help="measure and write a results JSON file")
    r.add_argument("--out", required=True)
    r.add_argument("--iterations", type=int, default=2, help="refinement steps (memory does not grow with them)")
    r.add_argument("--rows", metavar="JSON", help="keep the rows of an earlier results file, measure the rest")
    r.add_argument("--case", action="append", metavar="VIEWSxRESOLUTION", help="e.g. 16x512 (default: the grid)")
    r.set_defaults(handler=run)
    for name, what in (("stages", "peak memory of each stage"), ("gpu", "peak CUDA memory on a GPU host")):
        st = commands.add_parser(name, help=f"{what}: a results JSON file")
        st.add_argument("--out", required=True)
        st.add_argument("--preset", default="standard" if name == "gpu" else "draft")
        st.add_argument("--iterations", type=int, default=2, help="refinement steps")
        st.add_argument("--case", action="append", metavar="VIEWSxRESOLUTION", help="e.g. 128x16")
        st.add_argument("--budget-s", type=float, default=90.0, help="start no case after this many seconds")
        if name == "stages":
            st.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
        st.set_defaults(handler=stages)
    child = commands.add_parser("stage-child", help=argparse.SUPPRESS)
    child.add_argument("cases", nargs="+")
    child.add_argument("--device", default="cpu")
    child.add_argument("--preset", default="draft")
    child.add_argument("--iterations", type=int, default=2)
    child.add_argument("--budget-s", type=float, default=90.0)
    child.set_defaults(handler=lambda a: stage_child(a.cases, a.device, a.preset, a.iterations, a.budget_s))
    rc = commands.add_parser("reconstruct", help="peak memory of the reconstruct stage alone, per views")
    rc.add_argument("--out", required=True)
    rc.add_argument("--backend", default="visual-hull")
    rc.add_argument("--resolution", type=int, default=64, help="voxel grid (draft: 64)")
    rc.add_argument("--case", action="append", metavar="VIEWSxRESOLUTION", help="e.g. 2002x16")
    rc.add_argument("--note", default="", help="what was measured (e.g. the commit)")
    rc.set_defaults(handler=reconstruct)
    rchild = commands.add_parser("reconstruct-child", help=argparse.SUPPRESS)
    rchild.add_argument("capture")
    rchild.add_argument("backend")
    rchild.add_argument("resolution", type=int)
    rchild.set_defaults(handler=lambda a: reconstruct_child(a.capture, a.backend, a.resolution))
    d = commands.add_parser("docs", help="write docs/benchmarks.md's section and worker-memory.json")
    d.add_argument("results", nargs="+")
    d.add_argument("--keep", action="store_true", help="add to the records already in worker-memory.json")
    d.set_defaults(handler=docs)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
