"""Real-capture benchmark: structure from motion time and registered share, and mask IoU per provider.

    python tools/bench_sfm.py run --views 24 50 100 --resolution 512 800 --out .scratch/bench-sfm.json
    python tools/bench_sfm.py run --mesh bob --engine --views 24 --resolution 320 --out .scratch/bob.json
    python tools/bench_sfm.py masks --thresholds 20 15 12 --out .scratch/bench-sfm-masks.json
    python tools/bench_sfm.py docs docs/benchmarks/sfm.json .scratch/bench-sfm.json .scratch/bob.json

Each case renders a turntable of `--mesh` (spot, bob, or the painted stool, a CC0 hard object;
`recon_worker.engine.synth_photos`: JPEG photos over a static
textured backdrop, with a clean plate; fine speckle printed over spot's flat texture unless --plain;
rendering is outside the timed region), then times the backdrop
masks and pycolmap (SIFT on the CPU, exhaustive matching, incremental mapping) as stage `poses` runs
them. Mask IoU is scored against the renders' alpha for: backdrop with the clean plate, backdrop
recovered from the photos, and alpha (the renders themselves: 1.0 by construction, the reference).
Pose error is after the similarity SfM cannot know (`engine.pose_error`).

With `--engine` the case also reconstructs the posed capture and the photos (CPU draft) and scores both
on the posed capture's held-out renders (the photos with it as their `reference/`).

`masks` splits the photos' gap from the posed capture: the posed capture's own training views rebuilt with
the photos' parts (JPEG colours; the backdrop provider's masks at each `--thresholds`), true poses, the
same CPU draft run, scored on the same held-out renders, with the coarse hull's genus and volume.

`docs` rewrites the "## Real captures" section of docs/benchmarks.md and docs/benchmarks/sfm.json from the
rows of the files it is given, and nothing else: pass docs/benchmarks/sfm.json first to keep its rows.
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


# Turntable subjects: Keenan Crane's smooth objects and one CC0 hard object (thin legs, an open frame).
MESH_FILES = {
    "spot": "spot/spot.obj",
    "bob": "bob/bob_tri.obj",
    "stool": "painted_wooden_stool/painted_wooden_stool.glb",
}
ENGINE_TEST_VIEWS = 2  # held-out views of the end-to-end comparison (as tests/integration/test_poses_sfm.py)


def run_case(
    views: int,
    resolution: int,
    scratch: Path,
    reuse: Path | None = None,
    patterned: bool = True,
    mesh_name: str = "spot",
    engine: bool = False,
) -> dict[str, Any]:
    import numpy as np

    from recon_worker.engine.pose_error import pose_error, umeyama
    from recon_worker.engine.synth import SynthOptions
    from recon_worker.engine.synth_photos import render_turntable
    from recon_worker.masks import BackdropMasks, clean_plate, mask_iou
    from recon_worker.poses import SfmOptions, estimate_poses, list_photos

    if reuse is None:
        options = SynthOptions(resolution=resolution, supersample=1)
        mesh = MESHES / MESH_FILES[mesh_name]
        test_views = ENGINE_TEST_VIEWS if engine else 0
        shoot = render_turntable(
            mesh,
            scratch,
            views=views,
            test_views=test_views,
            resolution=resolution,
            options=options,
            patterned=patterned,
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
    row: dict[str, Any] = {"mesh": mesh_name, "views": len(names), "resolution": resolution}
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
    if engine:
        row |= end_to_end(photos, posed, scratch)
    return row


def end_to_end(photos: Path, posed: Path, scratch: Path) -> dict[str, Any]:
    """The posed, masked capture and the photos (SfM poses, backdrop masks) through the CPU engine (draft,
    10 refinement iterations), both scored on the posed capture's held-out renders: the photos run with
    them as its `reference/` (engine.reference), after the similarity SfM cannot know."""
    import shutil

    from recon_worker.capture import REFERENCE_FOLDER
    from recon_worker.capture_forms import FormChoice, prepare_capture
    from recon_worker.poses import SfmOptions

    shutil.copytree(posed, photos / REFERENCE_FOLDER)
    prepare_capture(photos, choice=FormChoice(sfm=SfmOptions(min_registered=0.0)), workdir=scratch / "sfm-e2e")
    started = time.monotonic()
    exact = run_engine(posed, scratch / "run-posed")
    taken = run_engine(photos, scratch / "run-photos")
    reference = taken.reference
    assert exact.psnr is not None and reference is not None and reference.psnr is not None
    return {
        "engineSeconds": round(time.monotonic() - started, 1),
        "posedPSNR": round(exact.psnr, 2),
        "posedMaskIoU": round(exact.mask_iou or 0.0, 4),
        "photosPSNR_reference": round(reference.psnr, 2),
        "photosMaskIoU_reference": round(reference.mask_iou or 0.0, 4),
        "photosPSNR_own": round(taken.psnr or 0.0, 2),
        "gapDB": round(exact.psnr - reference.psnr, 2),
    }


def run_engine(capture_dir: Path, workdir: Path) -> Any:
    """The engine's stages in process on the CPU, as tests/integration/test_poses_sfm.py runs them."""
    from recon_worker.capture import load_capture
    from recon_worker.engine import stages
    from recon_worker.engine.metrics import QualityMetrics
    from recon_worker.pipeline import ENGINE_STAGES
    from recon_worker.presets import resolve_quality
    from recon_worker.stage import StageContext
    from recon_worker.task import Gates

    ctx = StageContext(
        capture=load_capture(capture_dir),
        settings=resolve_quality("draft", {"refinement": {"iterations": 10}}),
        gates=Gates(),
        workdir=workdir,
        device="cpu",
        renderer="pytorch3d",
        export_formats=("glb",),
    )
    for stage in ENGINE_STAGES:
        getattr(stages, stage)(ctx)
    return QualityMetrics.model_validate_json((workdir / "validate" / "metrics.json").read_text())


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


def record(rows: list[dict[str, Any]], row: dict[str, Any], args: argparse.Namespace) -> None:
    """Stamp `row` with the machine, note and date, print it, and rewrite `args.out` with every row so far
    (a long run stopped halfway keeps what it measured)."""
    row |= {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "note": args.note,
        "date": datetime.now(UTC).date().isoformat(),
    }
    print(json.dumps(row), flush=True)
    rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


def hull_shape(workdir: Path) -> tuple[int, float]:
    """Genus and volume of the coarse mesh a run reconstructed (closed: genus = 1 - Euler / 2)."""
    import trimesh

    mesh = trimesh.load(workdir / "reconstruct" / "coarse.ply", process=True)
    return round(1 - mesh.euler_number / 2), float(mesh.volume)


def cmd_masks(args: argparse.Namespace) -> int:
    import dataclasses
    import shutil

    import numpy as np
    from PIL import Image

    from recon_worker.engine.synth import SynthOptions
    from recon_worker.engine.synth_photos import render_turntable
    from recon_worker.masks import BackdropMasks, clean_plate

    resolution, views = args.resolution, args.views
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-sfm-masks-") as tmp:
        scratch = Path(tmp)
        options = SynthOptions(resolution=resolution, supersample=1)
        shoot = render_turntable(
            MESHES / MESH_FILES[args.mesh], scratch, views=views, test_views=ENGINE_TEST_VIEWS,
            resolution=resolution, options=options, patterned=True,
        )  # fmt: skip
        posed, photos = Path(shoot["posed"]), Path(shoot["photos"])
        jpegs = sorted((photos / "train").glob("*.jpg"))

        def rebuilt(name: str, colours: bool, masks: list[np.ndarray] | None) -> Path:
            target = scratch / f"capture-{name}"
            shutil.copytree(posed, target)
            for i, jpeg in enumerate(jpegs):
                png = target / "train" / f"{jpeg.stem}.png"
                rgba = np.asarray(Image.open(png).convert("RGBA")).copy()
                if colours:
                    rgba[..., :3] = np.asarray(Image.open(jpeg).convert("RGB"))
                if masks is not None:
                    rgba[..., 3] = masks[i]
                Image.fromarray(rgba, "RGBA").save(png)
            return target

        plate = BackdropMasks(plate=clean_plate(photos))
        cases: list[tuple[str, Path, float | None]] = [("renders / true alpha", posed, None)]
        cases.append(("JPEG photos / true alpha", rebuilt("jpeg", True, None), None))
        for threshold in args.thresholds:
            provider = dataclasses.replace(plate, threshold=threshold)
            masks = list(provider.masks(jpegs))
            cases.append(("renders / backdrop masks", rebuilt(f"t{threshold:g}", False, masks), threshold))
        for label, capture, threshold in cases:
            workdir = scratch / f"run-{capture.name}"
            started = time.monotonic()
            metrics = run_engine(capture, workdir)
            genus, volume = hull_shape(workdir)
            row = {
                "kind": "mask-ablation",
                "mesh": args.mesh,
                "views": views,
                "resolution": resolution,
                "trainingViews": label,
                "threshold": threshold,
                "psnr": round(metrics.psnr or 0.0, 2),
                "maskIoU": round(metrics.mask_iou or 0.0, 4),
                "hullGenus": genus,
                "hullVolume": round(volume, 3),
                "engineSeconds": round(time.monotonic() - started, 1),
            }
            record(rows, row, args)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for resolution in args.resolution:
        for views in args.views:
            with tempfile.TemporaryDirectory(prefix="bench-sfm-") as scratch:
                row = run_case(views, resolution, Path(scratch), args.reuse, not args.plain, args.mesh, args.engine)
            record(rows, row, args)
            if args.reuse:
                break
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    every = [r for f in args.files for r in json.loads(Path(f).read_text())]
    data = REPO / "docs" / "benchmarks" / "sfm.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps(every, indent=1) + "\n")
    rows = [r for r in every if "kind" not in r]
    ablation = [r for r in every if r.get("kind") == "mask-ablation"]
    lines = [
        "## Real captures",
        "",
        "Turntable photos of spot (bob and the painted stool where the mesh column says so; JPEG over a",
        "static textured backdrop, clean plate, no poses), posed by",
        "pycolmap on the CPU after backdrop masks (`tools/bench_sfm.py`; data in",
        "[benchmarks/sfm.json](benchmarks/sfm.json)). Mask IoU against the renders' alpha; pose error after",
        "the best similarity, centre error relative to the camera distance. Object offset and scale are that",
        "similarity itself: how far from the true object centre the normalised world's origin lies (relative",
        "to the camera distance; the engine reconstructs around that origin) and its unit against the true one",
        "(1: the same). Measured as written: the machine column says what else was running.",
        "",
        "End to end (in-process engine, draft preset with 10 refinement iterations, CPU;",
        "tests/integration/test_poses_sfm.py and `run --engine`): both runs are scored on the same held-out",
        "renders. The photos run has the posed capture as its `reference/` (`engine.reference`): its mesh is",
        "moved by the similarity between the two rigs' camera centres and rendered at the posed capture's test",
        "views. On the 320² blotched spot turntable (24 + 2 views) the posed, masked capture scores 28.06 dB",
        "(mask IoU 0.981) and the photos 24.88 dB (IoU 0.970; SfM seeded, one thread: the same cameras every",
        "run; 26.47 dB against their own JPEG views), a gap of 3.2 dB, not the 1.5 dB issue 13 asks for. With",
        "the recovered poses perturbed by 1.5° and 1.5 % of the camera distance: 16.00 dB.",
        "Where the gap goes (`bench_sfm.py masks`, table below): with the true poses, JPEG colours cost 0.1 dB",
        "and the backdrop masks 1.5 dB; the rest is SfM's cameras (26.5 dB with the true poses, 24.88 with",
        "SfM's: its focal length came out 2.2 % long, 454.4 px against 444.4; cameras 0.28-0.31° and",
        "0.6-0.7 % off after the similarity). The masks' own errors at threshold 20 / 15 / 12 (share of the",
        "object's pixels, all 26 views): missed 0.80 / 0.35 / 0.17 %, extra 1.03 / 1.54 / 2.02 %, mask IoU",
        "0.982 / 0.981 / 0.979; the missed pixels lie at the object's edge (81-93 % within 2 px), where JPEG's",
        "4:2:0 colour subsampling blends it with the backdrop. A hull intersects the silhouettes, so missed",
        "pixels carve every view (at 20: two false tunnels through spot, 4 % less volume, and a quadric",
        "decimation that broke into a coarse re-mesh) while extra ones are carved away by the other views: the",
        "threshold is now 15, below the 20 at which photos agree on a backdrop colour. A foreground/backdrop",
        "matting estimate at the edge (the nearest interior colour as the object's) gave mask IoU 0.987 but",
        "missed 1.1 % and scored 24.75 dB. Bob (genus 1) showed the other half: its handle's hole, 0.8-5.6 % of",
        "its silhouette in half the views, was filled as a mask hole, so the hull could not carve it (30 %",
        "too much volume, 22.2 dB at threshold 20). Holes are now filled only below 0.5 % of the mask's area",
        "(spot's false ones reach 0.38 %): bob 23.75 dB at 15 (24.53 at 20), spot unchanged at 15 (at 20 its",
        "edge misses now stay open as 14 tunnels: 23.97 dB). The SfM rows' IoU columns were measured with",
        "threshold 20 and every hole filled.",
        "What SfM cannot know is set by `poses.normalise`: the origin it reconstructs around lies 4.5-7 % of the",
        "camera distance from the object's centre (the median of the sparse points, on the photographed",
        "surface) and its unit is 2-3 % small (the object offset and scale columns). The turntable's step",
        "matters: 24 views (15° apart) register every photo, 20 views (18°) only 2 of 22.",
        "",
        "Not measured yet: pycolmap-cuda12 (no GPU this round), and the `model` provider on these photos (it is",
        "tested with a small ONNX graph the test builds; no matting model ships). The 100- and 800²-view rows",
        "were measured on 2026-12-02 on a fresh machine beside other work (the machine column says what); an",
        "earlier try at load 8-14 was still rendering after 53 minutes and was stopped. The flat cartoon",
        "textures of spot and bob give SIFT too few features at these sizes: the rows marked so show it; the",
        "others print blotches over them.",
        "",
        "| mesh | views | px | SfM s | registered | reproj. px | centre err | rot. err ° | object offset | scale "
        "| IoU plate | IoU recovered | target PSNR | machine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('mesh', 'spot')} | {r['views']} | {r['resolution']} | {r['sfmSeconds']} "
            f"| {r['registered']} ({r['registeredShare']:.0%}) "
            f"| {r['reprojectionErrorPx']} | {r.get('centreErrorRel', '-')} | {r.get('rotationErrorDeg', '-')} "
            f"| {r.get('objectCentreOffsetRel', '-')} | {r.get('scaleToTrue', '-')} "
            f"| {r['maskIoU_plate']} | {r['maskIoU_recovered']} | {r.get('targetPSNR_plate', '-')} "
            f"| {r['machine']}{'; ' + r['note'] if r['note'] else ''} |"
        )
    if ablation:
        lines += [
            "",
            "The photos' gap split (`bench_sfm.py masks`): the posed capture's training views rebuilt with the "
            "photos' parts,",
            "true poses throughout, the same CPU draft run, the same held-out renders; the coarse hull's genus "
            "(spot: 0, bob: 1) and volume.",
            "",
            "| mesh | views | px | training views: colours / masks | backdrop threshold | PSNR | IoU | hull genus "
            "| hull volume | engine s | machine |",
            "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in ablation:
            threshold = "-" if r["threshold"] is None else f"{r['threshold']:g}"
            lines.append(
                f"| {r.get('mesh', 'spot')} | {r['views']} | {r['resolution']} | {r['trainingViews']} | {threshold} "
                f"| {r['psnr']} "
                f"| {r['maskIoU']} | {r['hullGenus']} | {r['hullVolume']} | {r['engineSeconds']} "
                f"| {r['machine']}{'; ' + r['note'] if r['note'] else ''} |"
            )
    ends = [r for r in rows if "posedPSNR" in r]
    if ends:
        lines += [
            "",
            "End to end (`run --engine`): held-out PSNR and mask IoU of the posed, masked capture and of the "
            "photos, both on",
            "the posed capture's held-out renders (the photos' mesh after the similarity of the two rigs), and the "
            "photos'",
            "PSNR against their own JPEG views; CPU draft, 10 refinement iterations. Bob (genus 1) and the",
            "painted stool (CC0, thin legs and rungs): bob's backdrop masks are worse than spot's (IoU 0.96 with",
            "the plate) and its photos land further from the posed run; the stool's thin parts defeat the",
            "backdrop masks (IoU 0.80) and SfM registers 6 of its 26 photos, which the worker refuses",
            "(`PosesUnrecoverable` below `minRegistered` 0.8); the benchmark poses it anyway (no minimum), so",
            "its row is a mesh from 6 photos.",
            "",
            "| mesh | views | px | posed PSNR (IoU) | photos PSNR (IoU), same views | gap dB | photos, own views "
            "| engine s | machine |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in ends:
            machine = r["machine"] + ("; " + r["note"] if r["note"] else "")
            lines.append(
                f"| {r.get('mesh', 'spot')} | {r['views']} | {r['resolution']} "
                f"| {r['posedPSNR']} ({r['posedMaskIoU']}) "
                f"| {r['photosPSNR_reference']} ({r['photosMaskIoU_reference']}) | {r['gapDB']} "
                f"| {r['photosPSNR_own']} | {r['engineSeconds']} | {machine} |"
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
    run.add_argument("--plain", action="store_true", help="the mesh's own texture, without printed speckle")
    run.add_argument("--mesh", choices=sorted(MESH_FILES), default="spot", help="the turntable's subject")
    run.add_argument(
        "--engine",
        action="store_true",
        help="also reconstruct the posed capture and the photos (CPU draft), scored on the same held-out renders",
    )
    run.add_argument("--note", default="", help="what else the machine was doing")
    run.add_argument("--out", required=True)
    run.set_defaults(handler=cmd_run)
    masks = sub.add_parser("masks", help="the photos' gap split into masks and colours (true poses)")
    masks.add_argument("--mesh", choices=sorted(MESH_FILES), default="spot", help="the turntable's subject")
    masks.add_argument("--views", type=int, default=24)
    masks.add_argument("--resolution", type=int, default=320)
    masks.add_argument("--thresholds", type=float, nargs="+", default=[20.0, 15.0, 12.0])
    masks.add_argument("--note", default="", help="what else the machine was doing")
    masks.add_argument("--out", required=True)
    masks.set_defaults(handler=cmd_masks)
    docs = sub.add_parser("docs")
    docs.add_argument("files", nargs="+")
    docs.set_defaults(handler=cmd_docs)
    args = parser.parse_args()
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
