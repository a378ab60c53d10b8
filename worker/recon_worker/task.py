"""The task document: the one contract between the operator and the worker.

The operator writes it (JSON, in the `RECON_TASK` environment variable or a mounted file); the worker
validates it here before doing anything else and refuses unknown versions. Field names are camelCase
on the wire, as in the CRD. Credentials are never part of it: they arrive as `AWS_*` environment
variables from the job's Secret.

A JSON Schema of this model is generated into the operator (`tools/generate.py`) so the operator's
unit tests check every document it builds against the worker's contract.
"""

from __future__ import annotations

import json
import re
from typing import Final, Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from recon_worker.names import printable
from recon_worker.presets import QualitySettings

TASK_API_VERSION: Final = "recon.dev/v1alpha1"
TASK_KIND: Final = "ReconstructionTask"

# s3://bucket/optional/prefix/ (bucket names per the S3 naming rules) or file:///absolute/path/
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?P<path>/.*)?$")
_FILE_URI = re.compile(r"^file://(?P<path>/.*)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def key_problem(key: str) -> str | None:
    """Why an object key or path (segments joined by '/', no leading '/') is not canonical, or None.

    Canonical keys name one place each, so a prefix test on them decides containment: no empty segment
    ('//'), no '.' or '..' segment, no '#' or '?' (URL syntax that tools strip), no control character.
    """
    if _CONTROL.search(key):
        return "holds a control character"
    if "#" in key or "?" in key:
        return "holds '#' or '?'"
    segments = key.split("/")
    if segments and segments[-1] == "":
        segments.pop()  # one trailing '/' marks a folder
    if "" in segments:
        return "has an empty segment ('//')"
    if "." in segments or ".." in segments:
        return "has a '.' or '..' segment"
    return None


def location_of(uri: str) -> str:
    """The place a URI names, canonical and ending in '/': `s3://bucket/a/b/` or `file:///a/b/` (decoded).

    Raises ValueError naming what is wrong: two URIs name the same place exactly when these agree.
    """
    shown = printable(uri)
    if _CONTROL.search(uri):
        raise ValueError(f"{shown} holds a control character")
    if (match := _S3_URI.match(uri)) is not None:
        scheme_and_root, path = f"s3://{match['bucket']}/", (match["path"] or "/")[1:]
    elif (match := _FILE_URI.match(uri)) is not None:
        # file:// paths are percent-encoded (Path.as_uri); the decoded path is the place.
        scheme_and_root, path = "file:///", unquote(match["path"][1:])
        if "#" in match["path"] or "?" in match["path"]:
            raise ValueError(f"{shown} is not a canonical URI: its path holds '#' or '?'")
    elif uri.startswith("s3://"):
        raise ValueError(
            f"{shown} is not a valid S3 URI: the bucket name must be 3-63 lowercase letters, digits, '.' or '-'"
        )
    else:
        raise ValueError(f"{shown} must start with s3:// or file:/// (an absolute local path)")
    if path and (reason := key_problem(path)) is not None:
        raise ValueError(f"{shown} is not a canonical URI: its path {reason}")
    return scheme_and_root + (path.rstrip("/") + "/" if path else "")


def check_uri(uri: str) -> str:
    """Accept canonical `s3://bucket/prefix/` or `file:///abs/path/` (see `location_of`); raise ValueError."""
    location_of(uri)
    return uri


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ResourceRef(_Model):
    """Coordinates of the ReconstructionJob this task runs for (absent in `recon-worker local`)."""

    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    uid: str = Field(min_length=1)
    attempt: int = Field(1, ge=1, description="1 for the first Job of this resource, +1 for each new one.")


class InputSpec(_Model):
    uri: str = Field(description="Capture folder: s3://bucket/prefix/ or file:///abs/path/.")
    transforms_file: str = Field("transforms.json", min_length=1)
    poses: Literal["auto", "given", "estimate"] = Field(
        "auto", description="given: from the transforms file; estimate: structure from motion; auto: given if present."
    )
    masks: Literal["auto", "alpha", "files", "backdrop", "model"] = Field(
        "auto", description="Mask provider (recon_worker.masks); auto: mask_path, else alpha, else backdrop."
    )
    mask_model: str | None = Field(None, min_length=1, description="ONNX matting model file (masks: model).")
    min_registered: float = Field(0.8, gt=0, le=1, description="Share of photos SfM must register.")
    matching: Literal["exhaustive", "sequential"] = Field("exhaustive", description="SfM feature matching.")

    @model_validator(mode="after")
    def _model_has_a_file(self) -> InputSpec:
        if self.masks == "model" and not self.mask_model:
            raise ValueError("masks: model needs maskModel, the path of an ONNX file mounted into the pod")
        return self

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        return check_uri(value)


class OutputSpec(_Model):
    uri: str = Field(description="Where results are published: s3://bucket/prefix/ or file:///abs/path/.")

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        return check_uri(value)


class StorageSpec(_Model):
    endpoint: str | None = Field(None, description="S3-compatible endpoint URL; None for AWS.")
    region: str | None = None


class Gates(_Model):
    min_psnr: float | None = Field(None, alias="minPSNR", ge=0)
    min_mask_iou: float | None = Field(None, alias="minMaskIoU", ge=0, le=1)
    require_watertight: bool = True
    enforce: bool = Field(False, description="A failed gate fails the job instead of degrading it.")


class ComputeSpec(_Model):
    gpus: int = Field(1, ge=0, description="0: run on the CPU.")
    min_gpu_memory_gib: float = Field(12, alias="minGpuMemoryGiB", ge=0)


class TaskDocument(_Model):
    api_version: Literal["recon.dev/v1alpha1"] = Field(TASK_API_VERSION, alias="apiVersion")
    kind: Literal["ReconstructionTask"] = TASK_KIND
    job: ResourceRef | None = None
    input: InputSpec
    output: OutputSpec
    storage: StorageSpec = StorageSpec()
    quality: QualitySettings = QualitySettings()
    gates: Gates = Gates()
    compute: ComputeSpec = ComputeSpec()

    @model_validator(mode="after")
    def _output_differs_from_input(self) -> TaskDocument:
        inp, out = location_of(self.input.uri), location_of(self.output.uri)
        if out.startswith(inp) or inp.startswith(out):
            raise ValueError(f"output.uri {self.output.uri!r} must not be, or lie inside, input.uri {self.input.uri!r}")
        return self


class TaskError(ValueError):
    """The task document is unreadable or invalid (the worker exits 2)."""


def load_task(text: str) -> TaskDocument:
    """Parse and validate a task document; errors name each bad field by its JSON path."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskError(f"task document is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise TaskError("task document must be a JSON object")
    version = raw.get("apiVersion")
    if version != TASK_API_VERSION:
        raise TaskError(f"unsupported task apiVersion {version!r}; this worker reads {TASK_API_VERSION!r}")
    try:
        return TaskDocument.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()]
        raise TaskError("invalid task document: " + "; ".join(problems)) from None
