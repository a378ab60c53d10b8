"""`kubectl recon`: submit a capture, follow it, fetch the result.

    kubectl recon submit DIR|s3://bucket/capture/ --output s3://bucket/results/NAME/ [--wait]
    kubectl recon get [NAME] [-o json|yaml]
    kubectl recon fetch NAME [DIR] [--open]
    kubectl recon logs NAME [-f] [--attempt N]
    kubectl recon cancel|suspend|resume|retry NAME

Exit codes: 0 succeeded (or done), 1 failed (or an error), 2 invalid input (a bad capture or spec: the
job could never work). Uses your kubeconfig and context like kubectl (`--context`, `-n`); S3 through
boto3's usual settings (AWS_* variables, ~/.aws), `--endpoint`, or `--credentials-secret`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import webbrowser
from pathlib import Path
from typing import Any

from recon_kubectl import __version__
from recon_kubectl.cluster import Cluster, ClusterError, InvalidJob, NotFound
from recon_kubectl.resource import (
    SPEC_CHANGES,
    UsageError,
    exit_code_of,
    job_name_for,
    join_uri,
    parse_setting,
    reconstruction_job,
    retry_of,
)
from recon_kubectl.table import details, format_table, row
from recon_kubectl.transfer import StorageAccess, TransferError, fetch_outputs, read_manifest, upload_capture
from recon_kubectl.watch import wait_for_end

OK, FAILED, INVALID = 0, 1, 2
# Where `submit DIR` uploads and publishes when --upload-to / --output are not given.
UPLOAD_BASE_ENV, OUTPUT_BASE_ENV = "KUBECTL_RECON_UPLOAD_TO", "KUBECTL_RECON_OUTPUT_TO"
TRANSFORMS_FILES = ("transforms.json", "transforms_train.json")


def say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


# ---- commands -----------------------------------------------------------------------------------


def storage_access(args: argparse.Namespace, cluster: Cluster | None) -> StorageAccess:
    credentials = None
    if args.credentials_secret:
        if cluster is None:
            raise UsageError("--credentials-secret needs a cluster to read the Secret from")
        data = cluster.secret_data(args.credentials_secret)
        missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k not in data]
        if missing:
            raise UsageError(f"Secret {args.credentials_secret} lacks {', '.join(missing)}")
        credentials = data
    return StorageAccess(endpoint=args.endpoint, region=args.region, credentials=credentials)


def validate_folder(folder: Path, transforms_file: str | None) -> str:
    """The worker's capture checks on a local folder (no PyTorch); returns the transforms file used."""
    from recon_worker.capture_checks import CaptureLimits, check_capture

    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    chosen = transforms_file or next((n for n in TRANSFORMS_FILES if (folder / n).is_file()), None)
    if chosen is None:
        raise UsageError(f"{folder} holds no {' or '.join(TRANSFORMS_FILES)}: not a capture folder")
    report = check_capture(folder, chosen, CaptureLimits())
    if not report.ok:
        raise CaptureRejected(report.summary())
    return chosen


class CaptureRejected(UsageError):
    """The capture failed the worker's checks; nothing was uploaded."""


def cmd_submit(args: argparse.Namespace) -> int:
    source: str = args.source
    name = args.name or job_name_for(source)
    settings = [parse_setting(s) for s in args.set or []]
    local = "://" not in source
    transforms_file = args.transforms_file
    if local:
        folder = Path(source).expanduser().resolve()
        transforms_file = validate_folder(folder, transforms_file)
        say(args, f"capture {folder}: checks passed ({transforms_file})")
        upload_base = args.upload_to or os.environ.get(UPLOAD_BASE_ENV)
        if not upload_base:
            raise UsageError(
                f"where should {folder} be uploaded? pass --upload-to s3://bucket/prefix/ (or set {UPLOAD_BASE_ENV})"
            )
        input_uri = join_uri(upload_base, name)
    else:
        input_uri = source if source.endswith("/") else source + "/"
    output_uri = args.output or (
        join_uri(os.environ[OUTPUT_BASE_ENV], name) if os.environ.get(OUTPUT_BASE_ENV) else None
    )
    if not output_uri:
        raise UsageError(f"where should the result go? pass --output s3://bucket/prefix/ (or set {OUTPUT_BASE_ENV})")
    manifest = reconstruction_job(
        name,
        input_uri,
        output_uri,
        preset=args.preset,
        transforms_file=transforms_file,
        endpoint=args.endpoint if args.endpoint_in_spec else None,
        region=args.region,
        credentials_secret=args.credentials_secret,
        settings=settings,
    )
    cluster = Cluster.connect(args.context, args.namespace)
    cluster.require_crd()
    try:
        cluster.get_job(name)
        raise ClusterError(f"ReconstructionJob {name} already exists in namespace {cluster.namespace} (pick --name)")
    except NotFound:
        pass
    if local:
        upload_capture(folder, input_uri, storage_access(args, cluster), quiet=args.quiet)
    cluster.create_job(manifest)
    say(args, f"reconstructionjob.recon.dev/{name} created in namespace {cluster.namespace}")
    if not args.wait:
        print(name)
        return OK
    return finish(args, cluster, name)


def finish(args: argparse.Namespace, cluster: Cluster, name: str) -> int:
    status = wait_for_end(cluster, name, timeout_s=args.timeout, quiet=args.quiet)
    phase, reason = status.get("phase"), status.get("reason")
    print(f"{name}: {phase}" + (f" ({reason}: {status.get('message', '')})" if phase != "Succeeded" else ""))
    if phase == "Succeeded":
        for key, value in sorted((status.get("metrics") or {}).items()):
            print(f"  {key:18} {value:.4g}" if isinstance(value, float) else f"  {key:18} {value}")
        resource = cluster.get_job(name)
        output = resource["spec"]["output"]["uri"]
        print(f"  outputs            {output}")
        for item in (status.get("outputs") or {}).get("files") or []:
            print(f"    {item.get('uri')}")
    return exit_code_of(phase, reason)


def cmd_get(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args.context, args.namespace)
    resources = [cluster.get_job(args.name)] if args.name else cluster.list_jobs()
    if args.output in ("json", "yaml"):
        doc: Any = resources[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": resources}
        if args.output == "json":
            print(json.dumps(doc, indent=2))
        else:
            import yaml

            print(yaml.safe_dump(doc, sort_keys=False).rstrip())
        return OK
    if not resources:
        print(f"No ReconstructionJobs in namespace {cluster.namespace}.", file=sys.stderr)
        return OK
    print(format_table([row(r) for r in resources]))
    if args.name:
        manifest = None
        try:
            found = read_manifest(resources[0]["spec"]["output"]["uri"], storage_access(args, cluster))
            manifest = found.model_dump(mode="json", by_alias=True) if found else None
        except TransferError as exc:
            print(f"(outputs not readable: {exc})")
        print(details(resources[0], manifest))
    return OK


def cmd_fetch(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args.context, args.namespace)
    resource = cluster.get_job(args.name)
    dest = Path(args.dir or args.name).expanduser().resolve()
    manifest = fetch_outputs(resource["spec"]["output"]["uri"], dest, storage_access(args, cluster), quiet=args.quiet)
    for item in manifest.files:
        print(f"{item.size:>12,d}  {dest / item.name}")
    say(args, f"{len(manifest.files)} files verified against manifest.json (sha256) in {dest}")
    if args.open:
        webbrowser.open((dest / "report.html").as_uri())
    return OK


def cmd_logs(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args.context, args.namespace)
    resource = cluster.get_job(args.name)
    status = resource.get("status") or {}
    if args.attempt is not None:
        pods = [p for p in cluster.pods_of_attempt(args.name, args.attempt)]
        what = f"attempt {args.attempt}"
    else:
        job = status.get("jobName")
        if not job:
            raise ClusterError(f"{args.name} has no worker Job yet (phase {status.get('phase') or 'Pending'})")
        pods = cluster.worker_pods(job)
        what = f"Job {job}"
    if not pods:
        raise ClusterError(f"{args.name}: {what} has no pods (yet, or any more)")
    pod = str(pods[-1].metadata.name)  # type: ignore[union-attr]
    say(args, f"logs of pod {pod} ({what})")
    for line in cluster.logs(pod, follow=args.follow):
        print(line, flush=args.follow)
    return OK


def cmd_change(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args.context, args.namespace)
    cluster.get_job(args.name)
    cluster.patch_job(args.name, SPEC_CHANGES[args.command])
    say(args, f"reconstructionjob.recon.dev/{args.name}: {args.command} requested")
    return finish(args, cluster, args.name) if args.wait else OK


def cmd_retry(args: argparse.Namespace) -> int:
    cluster = Cluster.connect(args.context, args.namespace)
    old = cluster.get_job(args.name)
    phase = (old.get("status") or {}).get("phase")
    if phase not in ("Failed", "Cancelled") and not args.force:
        raise UsageError(f"{args.name} is {phase or 'Pending'}: retry only a Failed or Cancelled job (or --force)")
    replacement = retry_of(old)
    cluster.delete_job(args.name, old["metadata"]["uid"])
    cluster.create_job(replacement)
    say(args, f"reconstructionjob.recon.dev/{args.name} re-created from its spec (was {phase})")
    return finish(args, cluster, args.name) if args.wait else OK


# ---- the parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument("-n", "--namespace", help="namespace (default: the context's, else default)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes on stderr")
    s3 = argparse.ArgumentParser(add_help=False)
    s3.add_argument("--endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS)")
    s3.add_argument("--region", help="S3 region")
    s3.add_argument("--credentials-secret", metavar="SECRET", help="read S3 keys from this Secret in the namespace")
    wait = argparse.ArgumentParser(add_help=False)
    wait.add_argument("--wait", action="store_true", help="follow the job until it ends; exit 0/1/2 by its result")
    wait.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait: give up after this long")

    parser = argparse.ArgumentParser(
        prog="kubectl recon", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"kubectl-recon {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    submit = commands.add_parser(
        "submit", parents=[common, s3, wait], help="check and upload a capture, create the ReconstructionJob"
    )
    submit.add_argument("source", metavar="DIR|s3://...", help="a local capture folder, or a capture already in S3")
    submit.add_argument("--name", help="the ReconstructionJob's name (default: from the folder's name)")
    submit.add_argument("--preset", choices=["draft", "standard", "high"], help="quality preset (default: standard)")
    submit.add_argument(
        "--set",
        action="append",
        metavar="PATH=VALUE",
        help="set a spec field, VALUE as JSON (e.g. quality.refinement.iterations=100, resources.gpus=0)",
    )
    submit.add_argument("--output", metavar="s3://...", help=f"output prefix (default: ${OUTPUT_BASE_ENV}/NAME/)")
    submit.add_argument("--upload-to", metavar="s3://...", help=f"where a local folder goes (${UPLOAD_BASE_ENV}/NAME/)")
    submit.add_argument("--transforms-file", help="camera file (default: transforms.json, else transforms_train.json)")
    submit.add_argument(
        "--endpoint-in-spec",
        action="store_true",
        help="also write --endpoint into spec.storage (when the cluster reaches S3 at the same address)",
    )
    submit.set_defaults(handler=cmd_submit)

    get = commands.add_parser("get", parents=[common, s3], help="the table of `kubectl get rj`, with details")
    get.add_argument("name", nargs="?", metavar="NAME")
    get.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    get.set_defaults(handler=cmd_get)

    fetch = commands.add_parser("fetch", parents=[common, s3], help="download the outputs, checked by sha256")
    fetch.add_argument("name", metavar="NAME")
    fetch.add_argument("dir", nargs="?", metavar="DIR", help="where to put them (default: ./NAME)")
    fetch.add_argument("--open", action="store_true", help="open report.html afterwards")
    fetch.set_defaults(handler=cmd_fetch)

    logs = commands.add_parser("logs", parents=[common], help="the worker pod's log")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--attempt", type=int, help="an earlier attempt (default: the current one)")
    logs.set_defaults(handler=cmd_logs)

    for verb, text in (
        ("cancel", "stop the job for good (spec.cancel)"),
        ("suspend", "stop the attempt and free its GPU (spec.suspend: true)"),
        ("resume", "start a new attempt of a suspended job (spec.suspend: false)"),
    ):
        change = commands.add_parser(verb, parents=[common, wait], help=text)
        change.add_argument("name", metavar="NAME")
        change.set_defaults(handler=cmd_change)

    retry = commands.add_parser("retry", parents=[common, wait], help="re-create a failed job from the same spec")
    retry.add_argument("name", metavar="NAME")
    retry.add_argument("--force", action="store_true", help="also when it is not Failed or Cancelled")
    retry.set_defaults(handler=cmd_retry)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (CaptureRejected, InvalidJob) as exc:
        print(f"kubectl recon {args.command}: {exc}", file=sys.stderr)
        return INVALID
    except UsageError as exc:
        print(f"kubectl recon {args.command}: {exc}", file=sys.stderr)
        return INVALID
    except (ClusterError, TransferError, TimeoutError) as exc:
        print(f"kubectl recon {args.command}: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
