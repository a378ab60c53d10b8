"""Reporting to the ReconstructionJob: merge patches of the worker's own status fields.

The worker owns `status.progress`, `.stage`, `.metrics` and `.worker`; the operator owns everything
else (`.outputs` too: it writes them from the manifest once it has verified it). Patches are JSON merge
patches on the status subresource, so fields the worker never names are left alone. The patch builders
are pure; `StatusReporter` rate-limits and sends them, and a failing patch is logged and retried with
the next one, never raised into the pipeline.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recon_worker.presets import deep_merge
from recon_worker.progress import ProgressEvent
from recon_worker.task import ResourceRef

log = logging.getLogger("recon_worker.status")

GROUP, VERSION, PLURAL = "recon.dev", "v1alpha1", "reconstructionjobs"
WORKER_FIELDS = frozenset({"progress", "stage", "metrics", "worker"})
# status.metrics keys of the CRD and the JSON type each must have.
METRIC_TYPES: Mapping[str, type] = {
    "psnr": float,
    "ssim": float,
    "maskIoU": float,
    "chamferL1": float,
    "fScore": float,
    "faces": int,
    "vertices": int,
    "watertight": bool,
    "durationSeconds": float,
    "gpuSeconds": float,
}


@dataclass(frozen=True)
class WorkerInfo:
    pod: str | None
    node: str | None
    gpu: str  # GPU model, or "cpu"
    gpu_memory_gib: float | None
    renderer: str  # nvdiffrast or pytorch3d

    @classmethod
    def from_env(cls, gpu: str, gpu_memory_gib: float | None, renderer: str) -> WorkerInfo:
        # POD_NAME / NODE_NAME come from the downward API in the operator's pod template.
        return cls(os.environ.get("POD_NAME"), os.environ.get("NODE_NAME"), gpu, gpu_memory_gib, renderer)


def progress_patch(event: ProgressEvent) -> dict[str, Any]:
    return {"progress": event.percent, "stage": event.stage}


def worker_patch(info: WorkerInfo) -> dict[str, Any]:
    worker: dict[str, Any] = {"gpu": info.gpu, "renderer": info.renderer}
    if info.pod:
        worker["pod"] = info.pod
    if info.node:
        worker["node"] = info.node
    if info.gpu_memory_gib is not None:
        worker["gpuMemoryGiB"] = round(info.gpu_memory_gib, 2)
    return {"worker": worker}


def metrics_patch(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The CRD's metric keys only, with their JSON types; None, NaN and infinities are left out; plus
    `psnrText`, the PSNR with one decimal."""
    out: dict[str, Any] = {}
    for key, kind in METRIC_TYPES.items():
        value = metrics.get(key)
        if value is None or isinstance(value, dict | list | str):
            continue
        if kind is bool:
            out[key] = bool(value)
        elif kind is int:
            out[key] = int(value)
        elif math.isfinite(float(value)):
            out[key] = float(value)
    if "psnr" in out:
        # What `kubectl get rj` shows: a printer column cannot round a number, so the CRD's PSNR column
        # reads this string.
        out["psnrText"] = f"{out['psnr']:.1f}"
    return {"metrics": out}


def status_body(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The merge-patch body; refuses any field the operator owns."""
    foreign = set(fields) - WORKER_FIELDS
    if foreign:
        raise ValueError(f"the worker must not patch status fields {sorted(foreign)}: the operator owns them")
    return {"status": dict(fields)}


Send = Callable[[dict[str, Any]], None]


def kubernetes_sender(ref: ResourceRef, timeout: float = 5.0) -> Send | None:
    """A function sending a merge patch to this job's status; None when no cluster credentials are found.

    In-cluster config when the pod has a ServiceAccount token, else the kubeconfig named by KUBECONFIG
    (the local test cluster's node agent hands each pod one).
    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        path = os.environ.get("KUBECONFIG")
        if not path:
            log.warning(
                "no in-cluster config and no KUBECONFIG: status of %s/%s will not be reported", ref.namespace, ref.name
            )
            return None
        try:
            config.load_kube_config(config_file=path)
        except (config.ConfigException, OSError) as exc:
            log.warning("cannot load KUBECONFIG %s (%s): status will not be reported", path, exc)
            return None
    api = client.CustomObjectsApi()

    def send(body: dict[str, Any]) -> None:
        api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            ref.namespace,
            PLURAL,
            ref.name,
            body,
            _content_type="application/merge-patch+json",
            _request_timeout=timeout,
        )

    return send


@dataclass
class StatusReporter:
    """Coalesces status updates and sends at most one patch per `min_interval` seconds.

    Stage changes and `close()` always send. A failed send keeps its fields pending for the next one.
    """

    send: Send
    min_interval: float = 5.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    pending: dict[str, Any] = field(default_factory=dict)
    sent: int = 0
    failures: int = 0
    _last_sent: float = -math.inf

    def update(self, fields: Mapping[str, Any], *, force: bool = False) -> None:
        self.pending = deep_merge(self.pending, dict(fields))
        if force or self.clock() - self._last_sent >= self.min_interval:
            self.flush()

    def on_progress(self, event: ProgressEvent) -> None:
        self.update(progress_patch(event), force=event.stage_changed)

    def flush(self) -> bool:
        if not self.pending:
            return True
        body = status_body(self.pending)
        self._last_sent = self.clock()  # also after a failure: the next attempt waits its turn
        try:
            self.send(body)
        except Exception as exc:
            self.failures += 1
            log.warning("status patch failed (will retry with the next update): %s", _short(exc))
            return False
        self.sent += 1
        self.pending = {}
        return True

    def close(self, attempts: int = 3, backoff: float = 1.0) -> None:
        """Send what is pending, retrying a few times: the final state matters most."""
        for attempt in range(attempts):
            if self.flush():
                return
            if attempt + 1 < attempts:
                self.sleep(backoff * 2**attempt)
        log.error("giving up on the status patch after %d attempts; the operator still sees the pod's exit", attempts)


def _short(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    return f"HTTP {status} {reason}" if status else f"{type(exc).__name__}: {exc}"[:300]
