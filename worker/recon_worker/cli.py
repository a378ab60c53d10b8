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
from recon_worker.names import printable_text


class PrintableFormatter(logging.Formatter):
    """Log lines with control characters escaped: a key holding ESC or CR must not rewrite the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return printable_text(super().format(record))


def _uri(value: str) -> str:
    """A URI as given, or a local path turned into a file:// URI."""
    return value if "://" in value else Path(value).resolve().as_uri() + "/"


# The preset when none is given, the same as the CRD's `spec.quality.preset` default (a test checks
# it): the same capture and settings give the same mesh from `recon-worker local` as from a
# ReconstructionJob. On a CPU, `--quality draft` is the quick look (standard takes far longer there).
DEFAULT_QUALITY = "standard"

LOCAL_DESCRIPTION = """\
Reconstruct one capture without a cluster: fetch ► reconstruct ► refine ► texture ► validate ► export
► publish, the pipeline a ReconstructionJob's worker runs, with a progress bar.

The input is a folder (or file:// or s3:// prefix) in the NeRF-synthetic / Instant-NGP layout:
transforms.json (or transforms_train.json + transforms_test.json) and RGBA images whose alpha is the
object mask. The output gets mesh.glb, mesh.obj/.mtl, texture.png, report.json, report.html, previews/
and, last, manifest.json. Runs on CUDA when present, else on the CPU; an interrupted run resumes from
its stage checkpoints unless --no-resume.

examples:
  recon-worker local --input ./captures/chair --output ./results/chair --quality draft
  recon-worker local --input s3://bucket/captures/chair/ --output ./out --set refinement.iterations=200

exit codes: 0 ok, 2 invalid input or settings, 3 this machine cannot run it, 143 cancelled.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and each option's default after its help (when it has a meaningful one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text
        if shown and (action.option_strings or action.nargs in ("?", "*")):
            text += " (default: %(default)s)"
        return text


def _setting(text: str) -> tuple[list[str], Any, str]:
    """`refinement.iterations=5` -> (["refinement", "iterations"], 5); values are JSON, else strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. refinement.iterations=5), not {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value, text


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    defaults = CaptureLimits()
    parser.add_argument("--min-views", type=int, default=defaults.min_views, help="fewest frames accepted")
    parser.add_argument("--max-file-bytes", type=int, default=defaults.max_file_bytes, help="largest image file")
    parser.add_argument("--max-total-bytes", type=int, default=defaults.max_total_bytes, help="whole capture")
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="largest image, width x height")
    parser.add_argument("--max-views", type=int, help="most frames (default: derived from the memory)")
    parser.add_argument(
        "--max-total-pixels", type=int, help="decoded pixels of all views together (default: derived from the memory)"
    )


def _setting_problems(exc: Exception, sets: list[str]) -> str:
    """A settings error in the user's terms: each bad key with its --set text, no pydantic web links."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    given = {text.partition("=")[0]: text for text in sets}
    lines = []
    for err in exc.errors(include_url=False):
        key = ".".join(str(part) for part in err["loc"])
        camel = ".".join(_camel(str(part)) for part in err["loc"])
        origin = given.get(key) or given.get(camel)
        shown = f"--set {origin}" if origin else key
        lines.append(f"  {shown}: {err['msg']}")
    return f"invalid settings ({len(lines)}):\n" + "\n".join(lines)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _gpus(device: str) -> int:
    """1 when `--device` (auto: a usable GPU is present) means CUDA, else 0."""
    from recon_worker.gpu import cuda_usable, probe_gpus

    if device == "cpu" or (device == "auto" and not (probe_gpus() and cuda_usable())):
        return 0
    return 1


def _add_form_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poses", choices=["auto", "given", "estimate"], default="auto", help="camera poses")
    parser.add_argument(
        "--masks", choices=["auto", "alpha", "files", "backdrop", "model"], default="auto", help="mask provider"
    )
    parser.add_argument("--mask-model", type=Path, metavar="FILE", help="ONNX matting model (--masks model)")


def _limits(args: argparse.Namespace, gpus: int) -> CaptureLimits:
    """The limits of the flags; views and decoded pixels, unless given, from the memory on that device."""
    given = {"max_views": args.max_views, "max_total_pixels": args.max_total_pixels}
    return CaptureLimits.for_worker(
        "cuda" if gpus else "cpu",
        min_views=args.min_views,
        max_file_bytes=args.max_file_bytes,
        max_total_bytes=args.max_total_bytes,
        max_pixels=args.max_pixels,
        **{k: v for k, v in given.items() if v is not None},
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
    from recon_worker.pipeline import CancelToken
    from recon_worker.presets import deep_merge, resolve_quality
    from recon_worker.progress import TerminalProgress
    from recon_worker.runner import cancel_on_signals, execute
    from recon_worker.task import TaskError, load_task

    overrides: dict[str, Any] = {}
    for path, value, _ in args.set or []:
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        overrides = deep_merge(overrides, nested)
    gpus = _gpus(args.device)
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
        limits = _limits(args, gpus)
    except (TaskError, ValueError) as exc:
        problems = _setting_problems(exc, [text for _, _, text in args.set or []])
        print(printable_text(f"recon-worker local: {problems}"), file=sys.stderr)
        return int(ExitCode.INVALID)
    bar = TerminalProgress()
    cancel = CancelToken()
    with cancel_on_signals(cancel), bar.logs_above():
        outcome = execute(task, listeners=[bar], cancel=cancel, limits=limits, use_checkpoints=not args.no_resume)
    bar.close()
    # A failure was logged once by `execute` (reason and message, on stderr); only success is printed here.
    if outcome.exit_code == 0:
        print(printable_text(f"{outcome.reason}: {outcome.message}"))
    return outcome.exit_code


def cmd_validate(args: argparse.Namespace) -> int:
    from recon_worker.capture_forms import FormChoice
    from recon_worker.runner import check_capture_at
    from recon_worker.task import StorageSpec

    try:
        storage = StorageSpec(endpoint=args.endpoint, region=args.region)
        limits = _limits(args, _gpus(args.device))
        choice = FormChoice(poses=args.poses, masks=args.masks, mask_model=args.mask_model)
        form, report = check_capture_at(_uri(args.input), storage, args.transforms_file, limits, choice)
    except WorkerError as exc:
        print(printable_text(f"{exc.reason}: {exc.message}"), file=sys.stderr)
        return int(exc.exit_code)
    except ValueError as exc:
        print(printable_text(f"recon-worker validate: {exc}"), file=sys.stderr)
        return int(ExitCode.INVALID)
    print(printable_text(form.explain()))
    if report is None:
        return int(ExitCode.OK)
    print(printable_text(report.summary()))
    return int(ExitCode.OK) if report.ok else int(ExitCode.INVALID)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recon-worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"recon-worker {__version__}")
    log_help = "DEBUG, INFO, WARNING or ERROR (default: RECON_LOG_LEVEL, else INFO)"
    parser.add_argument(
        "--log-level", default=os.environ.get("RECON_LOG_LEVEL", "INFO"), metavar="LEVEL", help=log_help
    )
    # The same flag after the command (`recon-worker local --log-level DEBUG ...`); SUPPRESS keeps the
    # value given before the command when it is not repeated.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS, metavar="LEVEL", help=log_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the task of a ReconstructionJob (inside its pod)",
        parents=[common],
        formatter_class=HelpFormatter,
    )
    run.add_argument("--task", metavar="FILE", help="task document (default: RECON_TASK, else RECON_TASK_FILE)")
    run.set_defaults(handler=cmd_run)

    poses = commands.add_parser(
        "poses", help="only fetch and pose the photos of a task (CPU), checkpointed for a later `run`"
    )
    poses.add_argument("--task", metavar="FILE", help="task document (default: RECON_TASK, else RECON_TASK_FILE)")
    poses.set_defaults(handler=cmd_run)

    local = commands.add_parser(
        "local",
        help="reconstruct a capture folder or prefix without a cluster",
        description=LOCAL_DESCRIPTION,
        formatter_class=HelpFormatter,
        parents=[common],
    )
    local.add_argument("--input", required=True, metavar="DIR_OR_URI", help="capture folder, file:// or s3:// URI")
    local.add_argument("--output", required=True, metavar="DIR_OR_URI", help="where to publish the result")
    local.add_argument(
        "--quality",
        choices=["draft", "standard", "high"],
        default=DEFAULT_QUALITY,
        help="quality preset, as spec.quality.preset of a ReconstructionJob (draft: the quick CPU look)",
    )
    local.add_argument(
        "--set",
        action="append",
        type=_setting,
        metavar="KEY=VALUE",
        help="override one setting of the preset, camelCase as in spec.quality (docs/api.md); VALUE is JSON "
        '(5, 0.5, true, ["glb"], {...}), anything that is not JSON is taken as a string; repeatable, '
        "e.g. --set refinement.iterations=200 --set 'export.formats=[\"glb\"]'",
    )
    local.add_argument(
        "--device", choices=["auto", "cuda", "cpu"], default="auto", help="auto: CUDA when usable, else the CPU"
    )
    local.add_argument("--transforms-file", default="transforms.json", help="camera file inside the input")
    _add_form_flags(local)
    local.add_argument("--endpoint", help="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL, else AWS)")
    local.add_argument("--region", help="S3 region (default: AWS_REGION / the AWS configuration)")
    local.add_argument("--no-resume", action="store_true", help="ignore and do not write stage checkpoints")
    _add_limit_flags(local)
    local.set_defaults(handler=cmd_local)

    validate = commands.add_parser(
        "validate",
        help="check a capture and list every problem (exit 0 or 2)",
        description="Check a capture (layout, cameras, images, limits) and list every problem; exit 0 or 2.",
        formatter_class=HelpFormatter,
        parents=[common],
    )
    validate.add_argument("--input", required=True, metavar="DIR_OR_URI", help="capture folder, file:// or s3:// URI")
    validate.add_argument("--transforms-file", default="transforms.json", help="camera file inside the input")
    validate.add_argument("--endpoint", help="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL, else AWS)")
    validate.add_argument("--region", help="S3 region (default: AWS_REGION / the AWS configuration)")
    validate.add_argument(
        "--device", choices=["auto", "cuda", "cpu"], default="auto", help="the memory limits of this device"
    )
    _add_form_flags(validate)
    _add_limit_flags(validate)
    validate.set_defaults(handler=cmd_validate)

    # Engine commands (e.g. `synth`) register their subparsers on `commands` here.
    own = set(commands.choices)
    add_synth_parser(commands)
    for name in set(commands.choices) - own:
        commands.choices[name].add_argument("--log-level", default=argparse.SUPPRESS, metavar="LEVEL", help=log_help)
    return parser


# Commands that run the reconstruction engine (PyTorch): the `engine` extra of the distribution.
ENGINE_COMMANDS = frozenset({"run", "poses", "local", "synth"})


def engine_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return int(ExitCode.INVALID)
    if args.command in ENGINE_COMMANDS and not engine_installed():
        print(
            f"recon-worker {args.command}: the reconstruction engine is not installed "
            "(pip install 'recon-worker[engine]'; add the `cuda` extra for nvdiffrast)",
            file=sys.stderr,
        )
        return int(ExitCode.INVALID)
    level = args.log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        parser.error(f"--log-level {args.log_level!r}: expected DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
