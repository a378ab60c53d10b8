"""Operator settings, read once from `RECON_OPERATOR_*` environment variables (docs/operator.md lists them)."""

from __future__ import annotations

import json
import shlex
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Everything the operator needs besides the CR itself; defaults suit a production cluster."""

    model_config = SettingsConfigDict(
        env_prefix="RECON_OPERATOR_", env_parse_none_str="null", frozen=True, extra="ignore"
    )

    # Comma-separated namespaces to watch; empty watches the whole cluster.
    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    worker_image: str = "ghcr.io/recon-dev/recon-worker:0.1.0"
    # JSON list (`["recon-worker", "run"]`) or a space-separated string. The local test cluster runs
    # pod commands as local processes, so tests point this at small real Python commands.
    worker_command: Annotated[tuple[str, ...], NoDecode] = ("recon-worker", "run")
    image_pull_policy: str = "IfNotPresent"
    # Cluster-wide placement of worker pods (the chart's worker.nodeSelector/tolerations/runtimeClassName),
    # JSON in the environment. The CR's spec.scheduling adds to them; the admin's keys and runtime class win.
    worker_node_selector: dict[str, str] = {}
    worker_tolerations: tuple[dict[str, Any], ...] = ()
    worker_runtime_class_name: str | None = None
    # What a CR may ask for (policy.py): whoever can create a ReconstructionJob gets pods through the
    # operator's own rights, so these bound it. Patterns are fnmatch globs, JSON lists in the environment.
    # PriorityClasses named system-* are refused unless listed by their exact name.
    allowed_priority_classes: tuple[str, ...] = ("*",)
    # Toleration keys a CR may add; "*" also allows a toleration with no key (it tolerates every taint).
    allowed_toleration_keys: tuple[str, ...] = ("nvidia.com/gpu",)
    # spec.image must start with one of these (e.g. "registry.example.com/recon/"); empty: no override.
    allowed_image_prefixes: tuple[str, ...] = ()
    # RuntimeClasses a CR may name when the admin sets none (worker_runtime_class_name wins when set).
    allowed_runtime_classes: tuple[str, ...] = ("*",)
    # Storage endpoints a CR may name in spec.storage.endpoint besides s3_endpoint (and AWS's when
    # allow_aws_endpoints): the operator's preflight signs and sends requests to them.
    allowed_endpoints: tuple[str, ...] = ()
    allow_aws_endpoints: bool = True
    # file:// input and output URIs name the operator's (and the node's) own filesystem: off in a cluster;
    # the local test cluster, the demo and the operator benchmark turn them on.
    allow_file_uris: bool = False
    # Used for preflight and handed to the worker when the CR names no spec.storage.endpoint.
    s3_endpoint: str | None = None
    s3_region: str | None = None
    # Requests and limits when the CR leaves spec.resources.cpu/memory unset (None: no limit).
    default_cpu: str | None = "4"
    default_memory: str | None = "16Gi"
    scratch_size: str = "50Gi"
    # The CPU Job that poses a photo capture by structure from motion before the GPU Job starts
    # (`recon-worker poses`): its command, requests and limits (None: no limit) and placement (JSON in the
    # environment). It requests no GPU and ignores the CR's GPU placement (selector, tolerations, runtime
    # class, Kueue queue); the CR's priority class applies to it too.
    poses_command: Annotated[tuple[str, ...], NoDecode] = ("recon-worker", "poses")
    poses_cpu: str | None = "2"
    poses_memory: str | None = "8Gi"
    poses_node_selector: dict[str, str] = {}
    poses_tolerations: tuple[dict[str, Any], ...] = ()
    run_as_user: int = Field(1000, ge=1)
    # Kept for `kubectl logs` and post-mortems after the attempt finishes; the CR keeps the record.
    job_ttl_seconds: int = Field(86400, ge=0)
    # Level-based healing: every CR is re-derived this often even without a watch event.
    reconcile_interval_s: float = Field(10.0, gt=0)
    # Preflight against an unreachable store is retried with exponential backoff, then fails.
    preflight_retries: int = Field(6, ge=1)
    preflight_backoff_s: float = Field(5.0, gt=0)
    preflight_timeout_s: float = Field(20.0, gt=0)
    handler_timeout_s: float = Field(120.0, gt=0)
    # Threads for Kopf's create/resume/update handlers, and for re-deriving status after Job/Pod events.
    handler_threads: int = Field(24, ge=1)
    requeue_threads: int = Field(4, ge=1)
    # Watch Kueue's Workloads (kueue.x-k8s.io/v1beta2) to show, on a queued ReconstructionJob, Kueue's
    # reason for not admitting it, its preemption, and the ClusterQueue and flavors that admitted it.
    # Needs Kueue's CRDs and RBAC to list/watch workloads (the chart's kueue.enabled sets both).
    kueue_workloads: bool = False
    # 0: any free port (tests); "null" serves no metrics.
    metrics_port: int | None = Field(9090, ge=0, le=65535)
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("worker_command", "poses_command", mode="before")
    @classmethod
    def _split_command(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return tuple(json.loads(text)) if text.startswith("[") else tuple(shlex.split(text))
        return value
