"""Real-capture benchmark: structure from motion time and registered share, and mask IoU per provider.

    python tools/bench_sfm.py run --views 24 50 100 --resolution 512 800 --out .scratch/bench-sfm.json
    python tools/bench_sfm.py docs .scratch/bench-sfm.json

Each case renders a turntable of spot (`recon_worker.engine.synth_photos`: JPEG photos over a static
textured backdrop, with a clean plate; fine speckle printed over spot's flat texture unless --plain;
rendering is outside the timed region), then times the backdrop
masks and pycolmap (SIFT on the CPU, exhaustive matching, incremental mapping) as stage `poses` runs
them. Mask IoU is scored against the renders' alpha for: backdrop with the clean plate, backdrop
recovered from the photos, and alpha (the renders themselves: 1.0 by construction, the reference).
Pose error is after the similarity SfM cannot know (`engine.pose_error`).

`docs` rewrites the "## Real captures" section of docs/benchmarks.md and docs/benchmarks/sfm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "worker"))
MESHES = Path(os.environ.get("RECON_MESHES", REPO.parent / "shared" / "data" / "meshes"))


def run_case(
    views: int, resolution: int, scratch: Path, reuse: Path | None = None, patterned: bool = True
) -> dict[str, Any]:
    import numpy as np

    from recon_worker.engine.pose_error import pose_error, umeyama
    from recon_worker.engine.synth import SynthOptions
    from recon_worker.engine.synth_photos import render_turntable
    from recon_worker.masks import BackdropMasks, clean_plate, mask_iou
    from recon_worker.poses import SfmOptions, estimate_poses, list_photos

    if reuse is None:
        options = SynthOptions(resolution=resolution, supersample=1)
        mesh = MESHES / "spot" / "spot.obj"
        shoot = render_turntable(
            mesh, scratch, views=views, test_views=0, resolution=resolution, options=options, patterned=patterned
        )
        photos, posed = shoot["photos"], shoot["posed"]
        truth = shoot["truth"]
    else:  # a folder render_turntable wrote earlier (photos/ and posed/)
        from PIL import Image

        photos, posed = reuse / "photos", reuse / "posed"
        truth = {}
        for split in ("train", "test"):
            for path in sorted((posed / split).glob("*.png")):
                truth[f"{split}/{path.stem}.jpg"] = np.asarray(Image.open(path).convert("RGBA"))[..., 3] > 127
    names = list_photos(photos, exclude=("backdrop",))
    images = [photos / n for n in names]
    row: dict[str, Any] = {"views": len(names), "resolution": resolution}
    for label, provider in (("plate", BackdropMasks(plate=clean_plate(photos))), ("recovered", BackdropMasks())):
        started = time.monotonic()
        masks = list(provider.masks(images))
        row[f"maskSeconds_{label}"] = round(time.monotonic() - started, 2)
        ious = [mask_iou(m, truth[n]) for m, n in zip(masks, names, strict=True)]
        row[f"maskIoU_{label}"] = round(float(np.mean(ious)), 4)
        if label == "plate":
            plate_masks = dict(zip(names, masks, strict=True))
    row["targetPSNR_plate"] = round(target_psnr(photos, posed, plate_masks), 2)
    started = time.monotonic()
    result = estimate_poses(photos, names, scratch / "sfm", plate_masks, SfmOptions(min_registered=0.0))
    row["sfmSeconds"] = round(time.monotonic() - started, 1)
    row["registered"] = len(result.c2w)
    row["registeredShare"] = round(result.share, 3)
    row["reprojectionErrorPx"] = round(result.reprojection_error, 3)
    true = {}
    for split in ("train", "test"):
        source = posed / f"transforms_{split}.json"
        if source.is_file():
            for frame in json.loads(source.read_text())["frames"]:
                true[frame["file_path"].removeprefix("./") + ".jpg"] = np.asarray(frame["transform_matrix"])
    got = [n for n in names if n in result.c2w]
    if len(got) >= 3:
        recovered, truth_c2w = np.stack([result.c2w[n] for n in got]), np.stack([true[n] for n in got])
        error = pose_error(recovered, truth_c2w)
        row["centreErrorRel"] = round(error.centre_rms, 4)
        row["rotationErrorDeg"] = round(error.rotation_deg, 3)
        # Where the normalised world's origin (the object centre the engine reconstructs around) and unit
        # land in the true world, whose object sits at its origin: the similarity the error ignores.
        scale, _, translation = umeyama(recovered[:, :3, 3], truth_c2w[:, :3, 3])
        distance = float(np.linalg.norm(truth_c2w[:, :3, 3], axis=1).mean())
        row["objectCentreOffsetRel"] = round(float(np.linalg.norm(translation)) / distance, 4)
        row["scaleToTrue"] = round(scale, 4)
    return row


def target_psnr(photos: Path, posed: Path, masks: dict[str, Any]) -> float:
    """Mean PSNR (dB) of the photos' own targets (JPEG RGB, the provider's mask, over white) against the
    posed capture's (the renders' RGBA over white), as the engine's held-out PSNR composes them: what a
    perfect reconstruction would score when judged against the photos."""
    import numpy as np
    from PIL import Image

    from recon_worker.engine.metrics import over_white, psnr

    scores = []
    for name, mask in masks.items():
        exact = np.asarray(Image.open(posed / name.replace(".jpg", ".png")).convert("RGBA"), np.float32) / 255
        photo = np.asarray(Image.open(photos / name).convert("RGB"), np.float32) / 255
        alpha = np.asarray(mask, np.float32)
        alpha = alpha / 255 if alpha.max() > 1 else alpha
        scores.append(psnr(over_white(np.dstack([photo, alpha])), over_white(exact)))
    return float(np.mean(scores))


def cmd_run(args: argparse.Namespace) -> int:
    rows = []
    for resolution in args.resolution:
        for views in args.views:
            with tempfile.TemporaryDirectory(prefix="bench-sfm-") as scratch:
                row = run_case(views, resolution, Path(scratch), args.reuse, not args.plain)
            row |= {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "note": args.note,
                "date": datetime.now(UTC).date().isoformat(),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            # Written after every case: a long run stopped halfway keeps what it measured.
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(rows, indent=1))
            if args.reuse:
                break
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    rows = [r for f in args.files for r in json.loads(Path(f).read_text())]
    data = REPO / "docs" / "benchmarks" / "sfm.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "## Real captures",
        "",
        "Turntable photos of spot (JPEG over a static textured backdrop, clean plate, no poses), posed by",
        "pycolmap on the CPU after backdrop masks (`tools/bench_sfm.py`; data in",
        "[benchmarks/sfm.json](benchmarks/sfm.json)). Mask IoU against the renders' alpha; pose error after",
        "the best similarity, centre error relative to the camera distance. Object offset and scale are that",
        "similarity itself: how far from the true object centre the normalised world's origin lies (relative",
        "to the camera distance; the engine reconstructs around that origin) and its unit against the true one",
        "(1: the same). Measured as written: the machine column says what else was running.",
        "",
        "End to end (in-process engine, draft preset with 10 refinement iterations, CPU): the 320² blotched",
        "turntable reconstructs at 26.73 dB held-out PSNR (mask IoU 0.971) from its photos alone (SfM poses,",
        "backdrop masks, SfM's radial distortion undone), against 28.06 dB (0.981) from the posed RGBA renders.",
        "Most of that gap is the yardstick: each run is scored against its own held-out views, and the photos'",
        "views (JPEG, the backdrop mask, over white) are only 29.6 dB from the posed renders before anything",
        "is reconstructed at 320² (34.2 dB at 800², where silhouettes are fewer of the pixels: the target PSNR",
        "column; on the 320² turntable JPEG alone costs 35.5 dB, a binary",
        "mask without antialiased edges 33.9 dB, the backdrop provider's silhouette errors the rest). The",
        "poses are hardly it (0.1-0.26°, 0.2-0.55 % centre error). What SfM cannot know is set by",
        "`poses.normalise`: the origin it reconstructs around lies 4.5-7 % of the camera distance from the",
        "object's centre (the median of the sparse points, which sit on the photographed surface, not at the",
        "centre) and its unit is 2-3 % small; a reconstruction volume tight around the origin would",
        "feel that, which is not measured yet. Scoring the photos run's mesh against the posed views (after",
        "the similarity) would compare the meshes alone; not done yet, so the test's bound stays 2 dB. The",
        "turntable's step matters: 24 views (15° apart) register every photo, 20 views (18°) only 2 of 22.",
        "",
        "Not measured yet: the rows of `make bench-sfm` missing below (on a machine with load average 15-20,",
        "rendering, masking and posing a case took 4-10 minutes of CPU and 11-48 minutes of wall time: the session",
        "measured what fitted), pycolmap-cuda12 on a GPU, and the `model` provider on these",
        "photos (it is tested with a small ONNX graph the test builds; no matting model ships). The flat",
        "cartoon textures of spot and bob give SIFT too few features at these sizes: the rows marked so show it.",
        "",
        "| views | px | SfM s | registered | reproj. px | centre err | rot. err ° | object offset | scale "
        "| IoU plate | IoU recovered | target PSNR | machine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['views']} | {r['resolution']} | {r['sfmSeconds']} | {r['registered']} ({r['registeredShare']:.0%}) "
            f"| {r['reprojectionErrorPx']} | {r.get('centreErrorRel', '-')} | {r.get('rotationErrorDeg', '-')} "
            f"| {r.get('objectCentreOffsetRel', '-')} | {r.get('scaleToTrue', '-')} "
            f"| {r['maskIoU_plate']} | {r['maskIoU_recovered']} | {r.get('targetPSNR_plate', '-')} "
            f"| {r['machine']}{'; ' + r['note'] if r['note'] else ''} |"
        )
    doc = REPO / "docs" / "benchmarks.md"
    text = doc.read_text()
    section = "\n".join(lines) + "\n"
    if "## Real captures" in text:
        head, _, rest = text.partition("## Real captures")
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)
    print(f"wrote {doc.relative_to(REPO)} and {data.relative_to(REPO)}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--views", type=int, nargs="+", default=[24, 50, 100])
    run.add_argument("--resolution", type=int, nargs="+", default=[512, 800])
    run.add_argument("--reuse", type=Path, help="measure a folder render_turntable wrote instead of rendering")
    run.add_argument("--plain", action="store_true", help="spot's own texture, without printed speckle")
    run.add_argument("--note", default="", help="what else the machine was doing")
    run.add_argument("--out", required=True)
    run.set_defaults(handler=cmd_run)
    docs = sub.add_parser("docs")
    docs.add_argument("files", nargs="+")
    docs.set_defaults(handler=cmd_docs)
    args = parser.parse_args()
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
