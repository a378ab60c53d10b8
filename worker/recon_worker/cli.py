"""Command line of the worker: `recon-worker <command>`.

`run` (inside a ReconstructionJob's pod), `poses` (structure from motion alone, a CPU step before `run`),
`local` (a folder or prefix in, a result out, no cluster) and
`validate` (capture checks only). Exit codes: 0 ok, 2 invalid input or task, 3 this node cannot run it,
143 cancelled, other codes transient (docs/worker.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from recon_worker import __version__
from recon_worker.capture_checks import CaptureLimits
from recon_worker.engine.synth import add_synth_parser
from recon_worker.errors import (
    DEFAULT_TERMINATION_LOG,
    ExitCode,
    WorkerError,
    write_termination_message,
)


def _uri(value: str) -> str:
    """A URI as given, or a local path turned into a file:// URI."""
    return value if "://" in value else Path(value).resolve().as_uri() + "/"


def _setting(text: str) -> tuple[list[str], Any]:
    """`refinement.iterations=5` -> (["refinement", "iterations"], 5); values are JSON, else strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. refinement.iterations=5), not {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    defaults = CaptureLimits()
    parser.add_argument("--min-views", type=int, default=defaults.min_views, help="fewest frames accepted")
    parser.add_argument("--max-file-bytes", type=int, default=defaults.max_file_bytes, help="largest image file")
    parser.add_argument("--max-total-bytes", type=int, default=defaults.max_total_bytes, help="whole capture")
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="largest image, width x height")


def _add_form_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poses", choices=["auto", "given", "estimate"], default="auto", help="camera poses")
    parser.add_argument(
        "--masks", choices=["auto", "alpha", "files", "backdrop", "model"], default="auto", help="mask provider"
    )
    parser.add_argument("--mask-model", type=Path, metavar="FILE", help="ONNX matting model (--masks model)")


def _limits(args: argparse.Namespace) -> CaptureLimits:
    return CaptureLimits(
        min_views=args.min_views,
        max_file_bytes=args.max_file_bytes,
        max_total_bytes=args.max_total_bytes,
        max_pixels=args.max_pixels,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from recon_worker.errors import TaskInvalid
    from recon_worker.pipeline import CancelToken
    from recon_worker.runner import cancel_on_signals, execute, read_task
    from recon_worker.status import StatusReporter, kubernetes_sender

    # RECON_TERMINATION_MESSAGE_PATH: where the local test cluster's node agent maps /dev/termination-log.
    termination_log = Path(
        os.environ.get("RECON_TERMINATION_LOG")
        or os.environ.get("RECON_TERMINATION_MESSAGE_PATH")
        or DEFAULT_TERMINATION_LOG
    )
    try:
        task = read_task(args.task)
    except TaskInvalid as exc:
        logging.getLogger("recon_worker").error("%s", exc.message)
        write_termination_message(termination_log, exc.reason, exc.message)
        return int(exc.exit_code)
    sender = kubernetes_sender(task.job) if task.job else None
    reporter = StatusReporter(sender) if sender else None
    cancel = CancelToken()
    with cancel_on_signals(cancel):
        outcome = execute(task, reporter=reporter, cancel=cancel, poses_only=args.command == "poses")
    write_termination_message(termination_log, outcome.reason, outcome.message)
    return outcome.exit_code


def cmd_local(args: argparse.Namespace) -> int:
    from recon_worker.gpu import cuda_usable, probe_gpus
    from recon_worker.pipeline import CancelToken
    from recon_worker.presets import deep_merge, resolve_quality
    from recon_worker.progress import TerminalProgress
    from recon_worker.runner import cancel_on_signals, execute
    from recon_worker.task import TaskError, load_task

    overrides: dict[str, Any] = {}
    for path, value in args.set or []:
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        overrides = deep_merge(overrides, nested)
    gpus = 0 if args.device == "cpu" else 1
    if args.device == "auto" and not (probe_gpus() and cuda_usable()):
        gpus = 0
    try:
        quality = resolve_quality(args.quality, overrides).model_dump(mode="json", by_alias=True)
        storage = {k: v for k, v in {"endpoint": args.endpoint, "region": args.region}.items() if v}
        document = {
            "apiVersion": "recon.dev/v1alpha1",
            "input": {
                "uri": _uri(args.input),
                "transformsFile": args.transforms_file,
                "poses": args.poses,
                "masks": args.masks,
                **({"maskModel": str(args.mask_model)} if args.mask_model else {}),
            },
            "output": {"uri": _uri(args.output)},
            "storage": storage,
            "quality": quality,
            "compute": {"gpus": gpus, "minGpuMemoryGiB": 0},
        }
        task = load_task(json.dumps(document))
    except (TaskError, ValueError) as exc:
        print(f"recon-worker local: {exc}", file=sys.stderr)
        return int(ExitCode.INVALID)
    bar = TerminalProgress()
    cancel = CancelToken()
    with cancel_on_signals(cancel):
        outcome = execute(
            task, listeners=[bar], cancel=cancel, limits=_limits(args), use_checkpoints=not args.no_resume
        )
    bar.close()
    print(f"{outcome.reason}: {outcome.message}", file=sys.stdout if outcome.exit_code == 0 else sys.stderr)
    return outcome.exit_code


def cmd_validate(args: argparse.Namespace) -> int:
    from recon_worker.capture_forms import FormChoice
    from recon_worker.runner import check_capture_at
    from recon_worker.task import StorageSpec

    try:
        storage = StorageSpec(endpoint=args.endpoint, region=args.region)
        choice = FormChoice(poses=args.poses, masks=args.masks, mask_model=args.mask_model)
        form, report = check_capture_at(_uri(args.input), storage, args.transforms_file, _limits(args), choice)
    except WorkerError as exc:
        print(f"{exc.reason}: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    except ValueError as exc:
        print(f"recon-worker validate: {exc}", file=sys.stderr)
        return int(ExitCode.INVALID)
    print(form.explain())
    if report is None:
        return int(ExitCode.OK)
    print(report.summary())
    return int(ExitCode.OK) if report.ok else int(ExitCode.INVALID)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recon-worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"recon-worker {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("RECON_LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run the task of a ReconstructionJob (inside its pod)")
    run.add_argument("--task", metavar="FILE", help="task document (default: RECON_TASK, else RECON_TASK_FILE)")
    run.set_defaults(handler=cmd_run)

    poses = commands.add_parser(
        "poses", help="only fetch and pose the photos of a task (CPU), checkpointed for a later `run`"
    )
    poses.add_argument("--task", metavar="FILE", help="task document (default: RECON_TASK, else RECON_TASK_FILE)")
    poses.set_defaults(handler=cmd_run)

    local = commands.add_parser("local", help="reconstruct a capture folder or prefix without a cluster")
    local.add_argument("--input", required=True, metavar="DIR_OR_URI", help="capture folder, file:// or s3:// URI")
    local.add_argument("--output", required=True, metavar="DIR_OR_URI", help="where to publish the result")
    local.add_argument("--quality", choices=["draft", "standard", "high"], default="draft")
    local.add_argument("--set", action="append", type=_setting, metavar="KEY=VALUE", help="override a setting")
    local.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    local.add_argument("--transforms-file", default="transforms.json")
    _add_form_flags(local)
    local.add_argument("--endpoint", help="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL, else AWS)")
    local.add_argument("--region")
    local.add_argument("--no-resume", action="store_true", help="ignore and do not write stage checkpoints")
    _add_limit_flags(local)
    local.set_defaults(handler=cmd_local)

    validate = commands.add_parser("validate", help="check a capture and list every problem (exit 0 or 2)")
    validate.add_argument("--input", required=True, metavar="DIR_OR_URI")
    validate.add_argument("--transforms-file", default="transforms.json")
    _add_form_flags(validate)
    validate.add_argument("--endpoint")
    validate.add_argument("--region")
    _add_limit_flags(validate)
    validate.set_defaults(handler=cmd_validate)

    # Engine commands (e.g. `synth`) register their subparsers on `commands` here.
    add_synth_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return int(ExitCode.INVALID)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
