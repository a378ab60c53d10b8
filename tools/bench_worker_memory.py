"""Worker memory benchmark: peak RSS of `recon-worker local` against the number of views and their resolution.

    python tools/bench_worker_memory.py run --out .scratch/bench-memory.json   # measure (CPU, draft)
    python tools/bench_worker_memory.py docs .scratch/bench-memory.json        # write the docs
    python tools/bench_worker_memory.py stages --out .scratch/stages.json      # peak of each stage (CPU)
    python tools/bench_worker_memory.py gpu --out gpu-memory.json              # peak CUDA memory (a GPU host)

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
a stage whose memory grows with the views shows as its own row. `gpu` measures a views series and a
resolution series on CUDA and fits peak device memory = base + per_view x views + per_pixel x pixels, the
figure the GPU capture limits need (`memory.BYTES_PER_PIXEL["cuda"]`).
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
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
# Peak CUDA memory (one H200 in about a minute, with nvdiffrast's plugin compiled on first use): views
# series at 64², resolution series at 16 views.
GPU_CASES = [(16, 64), (128, 64), (512, 64), (16, 256), (16, 512), (16, 1024)]


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


def stage_child(capture: str, output: str, device: str, iterations: int) -> int:
    """In the child process: run the pipeline on `capture` with StagePeaks; print its rows as JSON."""
    sys.path.insert(0, str(REPO / "worker"))
    from recon_worker.capture_checks import CaptureLimits
    from recon_worker.presets import resolve_quality
    from recon_worker.runner import execute
    from recon_worker.task import load_task

    settings = resolve_quality("draft", {"refinement": {"iterations": iterations}})
    quality = settings.model_dump(mode="json", by_alias=True)
    document = {
        "apiVersion": "recon.dev/v1alpha1",
        "input": {"uri": Path(capture).resolve().as_uri()},
        "output": {"uri": Path(output).resolve().as_uri()},
        "quality": quality,
        "compute": {"gpus": 1 if device == "cuda" else 0, "minGpuMemoryGiB": 0},
    }
    peaks = StagePeaks(cuda=device == "cuda")
    limits = CaptureLimits(max_views=10**6, max_total_pixels=10**12)
    outcome = execute(load_task(json.dumps(document)), listeners=[peaks], limits=limits, use_checkpoints=False)
    peaks.close()
    print(json.dumps({"exitCode": outcome.exit_code, "reason": outcome.reason, "stages": peaks.rows}))
    return 0


def measure_stages(views: int, size: int, iterations: int, device: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        capture = Path(tmp) / "capture"
        write_sphere_capture(capture, views, size)
        command = [sys.executable, __file__, "stage-child", str(capture), str(Path(tmp) / "out"), device]
        command += [str(iterations)]
        env = {**os.environ, "RECON_SCRATCH": str(Path(tmp) / "scratch"), "RECON_LOG_LEVEL": "WARNING"}
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        stdout = process.stdout.read().decode(errors="replace") if process.stdout else ""
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    exit_code = os.waitstatus_to_exitcode(status)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    child = json.loads(lines[-1]) if lines else {"exitCode": exit_code, "stages": []}
    row = {
        "views": views,
        "resolution": size,
        "decodedPixels": views * size * size,
        "peakRssMiB": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(seconds, 1),
        "exitCode": child["exitCode"] if exit_code == 0 else exit_code,
        "stages": child["stages"],
    }
    if row["exitCode"] and stderr.strip():
        row["error"] = stderr.strip().splitlines()[-1][:300]
    if row["stages"] and "peakCudaAllocatedMiB" in row["stages"][0]:
        row["peakCudaAllocatedMiB"] = max(s["peakCudaAllocatedMiB"] for s in row["stages"])
        row["peakCudaReservedMiB"] = max(s["peakCudaReservedMiB"] for s in row["stages"])
    return row


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
    device = "cuda" if args.command == "gpu" else args.device
    default = GPU_CASES if args.command == "gpu" else STAGE_CASES
    cases = [tuple(int(v) for v in c.split("x")) for c in args.case] if args.case else default
    rows = []
    for views, size in cases:
        row = measure_stages(views, size, args.iterations, device)
        print(json.dumps({k: v for k, v in row.items() if k != "stages"}), flush=True)
        rows.append(row)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(device),
        "preset": f"draft, {args.iterations} refinement iterations",
        "device": device,
        "rows": rows,
        "perViewMiBByStage": growth([r for r in rows if r["resolution"] == rows[0]["resolution"]]),
    }
    if device == "cuda":
        result["cudaFit"] = fit(rows, "peakCudaAllocatedMiB")
        result["hostFit"] = fit(rows)
        result["perViewCudaMiBByStage"] = growth(
            [r for r in rows if r["resolution"] == rows[0]["resolution"]], "peakCudaAllocatedMiB"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows",)}))
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


def docs(args: argparse.Namespace) -> int:
    results = [json.loads(Path(p).read_text()) for p in args.results]
    DOCS_JSON.parent.mkdir(parents=True, exist_ok=True)
    DOCS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        SECTION,
        "",
        "Peak resident memory of `recon-worker local --quality draft --device cpu` (the whole process: fetch,",
        "checks, reconstruct, refine, texture, validate, export, publish) against views and resolution;",
        "`make bench-worker-memory` (tools/bench_worker_memory.py), records in docs/benchmarks/worker-memory.json.",
        "The fit is what the capture limits (`max_views`, `max_total_pixels`, docs/worker.md) are derived from.",
        "",
    ]
    for result in results:
        f = result["fit"]
        lines += [
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
            lines += [
                "",
                "(Before issue 11, `load_images` stacked a list of float32 views: 512 MiB for the same capture,",
                "measured on 2026-12-01. The engine's per-view and per-pixel costs above are the engine's to cut.)",
                "",
            ]
    text = DOCS_MD.read_text() if DOCS_MD.exists() else "# Benchmarks\n"
    head, sep, rest = text.partition(SECTION)
    tail = rest[rest.find("\n## ") :] if sep and "\n## " in rest else ""
    DOCS_MD.write_text(head.rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n" + tail)
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
        st.add_argument("--iterations", type=int, default=2, help="refinement steps")
        st.add_argument("--case", action="append", metavar="VIEWSxRESOLUTION", help="e.g. 128x16")
        if name == "stages":
            st.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
        st.set_defaults(handler=stages)
    child = commands.add_parser("stage-child", help=argparse.SUPPRESS)
    child.add_argument("capture")
    child.add_argument("output")
    child.add_argument("device")
    child.add_argument("iterations", type=int)
    child.set_defaults(handler=lambda a: stage_child(a.capture, a.output, a.device, a.iterations))
    d = commands.add_parser("docs", help="write docs/benchmarks.md's section and worker-memory.json")
    d.add_argument("results", nargs="+")
    d.set_defaults(handler=docs)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
