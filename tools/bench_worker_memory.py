"""Worker memory benchmark: peak RSS of `recon-worker local` against the number of views and their resolution.

    python tools/bench_worker_memory.py run --out .scratch/bench-memory.json   # measure (CPU, draft)
    python tools/bench_worker_memory.py docs .scratch/bench-memory.json        # write the docs

Each case writes a capture of a sphere seen from a ring of cameras (PIL, outside the measured process),
then runs `recon-worker local --quality draft --device cpu --no-resume` (refinement cut to a few
iterations: its memory does not grow with them) as a child process and reads its
peak resident set size from the kernel (`wait4`'s ru_maxrss). A least-squares fit of peak = base +
per_view x views + per_pixel x decoded pixels over the rows is what `memory.memory_model` is
calibrated against (`recon_worker/memory.py`). `docs` rewrites the "## Worker memory" section of docs/benchmarks.md and
docs/benchmarks/worker-memory.json.
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


def fit(rows: list[dict[str, Any]]) -> dict[str, float]:
    """peak bytes = base + per_view * views + per_pixel * pixels, least squares over the successful rows."""
    ok = [r for r in rows if r["exitCode"] == 0]
    a = np.array([[1.0, r["views"], r["decodedPixels"]] for r in ok])
    b = np.array([r["peakRssMiB"] * 2**20 for r in ok])
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
    d = commands.add_parser("docs", help="write docs/benchmarks.md's section and worker-memory.json")
    d.add_argument("results", nargs="+")
    d.set_defaults(handler=docs)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
