"""The ReconstructionJob a `submit` creates, and the spec changes the other verbs mean. Pure functions.

Nothing here talks to a cluster or a bucket, so every decision is unit-tested on its own.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

GROUP, VERSION, PLURAL, KIND = "recon.dev", "v1alpha1", "reconstructionjobs", "ReconstructionJob"
API_VERSION = f"{GROUP}/{VERSION}"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})
# Set on a job that `retry` made, naming the uid of the one it replaced.
RETRY_OF_ANNOTATION = "recon.dev/retry-of"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class UsageError(ValueError):
    """A command line that cannot work (exit 2), with a message naming the culprit."""


def parse_setting(text: str) -> tuple[list[str], Any]:
    """`quality.refinement.iterations=100` -> (["quality", "refinement", "iterations"], 100).

    Values are JSON (`5`, `true`, `["glb"]`, `{"a": 1}`); anything that is not JSON is a string.
    """
    key, sep, raw = text.partition("=")
    path = key.split(".")
    if not sep or not key or any(not part for part in path):
        raise UsageError(f"--set expects SPEC.PATH=VALUE (e.g. quality.refinement.iterations=100), not {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return path, value


def apply_settings(spec: Mapping[str, Any], settings: Sequence[tuple[list[str], Any]]) -> dict[str, Any]:
    """`spec` with each (path, value) set, creating the objects on the way."""
    out = copy.deepcopy(dict(spec))
    for path, value in settings:
        node = out
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {'.'.join(path)}: spec.{'.'.join(path[: depth + 1])} is not an object")
            node = child
        node[path[-1]] = value
    return out


def job_name_for(source: str) -> str:
    """A DNS-1123 name from a folder or URI (`~/captures/My Spot/` -> `my-spot`), at most 52 characters.

    The operator derives `<name>-<attempt>` Job names and `-worker` identities from it, so it stays short.
    """
    base = source.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
    if not name:
        name = "capture-" + hashlib.sha256(source.encode()).hexdigest()[:8]
    if not name[0].isalpha():
        name = "c-" + name
    return name[:52].rstrip("-")


def check_name(name: str) -> str:
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise UsageError(
            f"--name {name!r}: a ReconstructionJob name must be lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return name


def join_uri(base: str, name: str) -> str:
    """`s3://captures` + `spot` -> `s3://captures/spot/`."""
    return f"{base.rstrip('/')}/{name}/"


def reconstruction_job(
    name: str,
    input_uri: str,
    output_uri: str,
    *,
    preset: str | None = None,
    transforms_file: str | None = None,
    endpoint: str | None = None,
    region: str | None = None,
    credentials_secret: str | None = None,
    settings: Sequence[tuple[list[str], Any]] = (),
) -> dict[str, Any]:
    """The manifest `submit` creates; the apiserver validates it against the CRD (and names any bad field)."""
    spec: dict[str, Any] = {"input": {"uri": input_uri}, "output": {"uri": output_uri}}
    if transforms_file:
        spec["input"]["transformsFile"] = transforms_file
    storage = {"endpoint": endpoint, "region": region, "credentialsSecret": credentials_secret}
    if any(storage.values()):
        spec["storage"] = {k: v for k, v in storage.items() if v}
    if preset:
        spec["quality"] = {"preset": preset}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": check_name(name), "labels": {"app.kubernetes.io/created-by": "kubectl-recon"}},
        "spec": apply_settings(spec, settings),
    }


def retry_of(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A new ReconstructionJob with the same name, labels and spec as `resource` (which `retry` deletes first).

    Same name, so a user's scripts and `kubectl get rj NAME` keep working; the old uid is kept in an
    annotation. `spec.suspend` and `spec.cancel` are cleared: a retry is meant to run.
    """
    meta = resource.get("metadata") or {}
    spec = copy.deepcopy(dict(resource.get("spec") or {}))
    spec.pop("suspend", None)
    spec.pop("cancel", None)
    # kubectl's and the operator's own annotations (its status record) belong to the old resource.
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(("kubectl.kubernetes.io/", "recon.dev/"))
    }
    annotations[RETRY_OF_ANNOTATION] = str(meta.get("uid", ""))
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": meta["name"], "labels": dict(meta.get("labels") or {}), "annotations": annotations},
        "spec": spec,
    }


# The spec change each verb means (a JSON merge patch of the resource).
SPEC_CHANGES: dict[str, dict[str, Any]] = {
    "cancel": {"spec": {"cancel": True}},
    "suspend": {"spec": {"suspend": True}},
    "resume": {"spec": {"suspend": False}},
}


def exit_code_of(phase: str | None, reason: str | None) -> int:
    """What a script sees: 0 succeeded, 2 invalid input (the job can never work), 1 any other end."""
    if phase == "Succeeded":
        return 0
    if reason in {"InputsInvalid", "TaskInvalid", "JobRejected", "PosesUnrecoverable"}:
        return 2
    return 1
