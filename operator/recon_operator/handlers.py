"""Kopf handlers: thin glue that observes, calls `reconcile.decide`, and carries out its decision.

Every path (create, resume, spec change, the healing sweep, and events of owned Jobs and Pods) runs
the same level-based `Reconciler.run`, serialized per ReconstructionJob. Reads come from Kopf indexes
(in-memory caches fed by watches); the API is read fresh only before creating a Job or declaring one
gone, so a stale cache can never create a duplicate.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import kopf

from recon_operator.healer import Healer
from recon_operator.labels import JOB_LABEL
from recon_operator.names import label_value
from recon_operator.reconciler import Reconciler
from recon_operator.requeue import Requeue
from recon_operator.settings import OperatorSettings
from recon_operator.spec import API_GROUP, API_VERSION, KIND, PLURAL
from recon_operator.workloads import KUEUE_GROUP, KUEUE_VERSION, WORKLOADS

# Read at import: decorator arguments (retries, backoff, timeouts) come from it.
SETTINGS = OperatorSettings.model_validate({})
CR = (API_GROUP, API_VERSION, PLURAL)
OWNED = {JOB_LABEL: kopf.PRESENT}
# Kopf passes indexes as extra keyword arguments, which its handler protocols do not declare: handlers
# that take them carry `type: ignore[arg-type]` on the decorator line mypy reports.


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # Kopf's login through the kubernetes client library: in a pod its ServiceAccount, elsewhere $KUBECONFIG
    # (as the process started with it) read by the client's own loader, which understands every kind of
    # user: token, tokenFile (the local node agent's pods, re-read on every re-login), client certificates,
    # exec plugins. Kopf's built-in kubeconfig reader ignores tokenFile.
    # The client library fixes its default kubeconfig path from $KUBECONFIG when it is first imported; an
    # operator started in a process that set $KUBECONFIG later (tests run it in-process) must use the
    # current value, or the login fails and Kopf retries only a minute later.
    from kubernetes.config import kube_config

    if os.environ.get("KUBECONFIG"):
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = os.environ["KUBECONFIG"]
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="recon.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="recon.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Events come from the reconciler's transitions, not from logs
    settings.execution.max_workers = SETTINGS.handler_threads  # handlers are blocking API and S3 calls
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    reconciler = Reconciler.create(SETTINGS)
    memo.reconciler = reconciler
    memo.healer = Healer(reconciler, SETTINGS.namespaces, SETTINGS.reconcile_interval_s)
    memo.healer.start()
    # Shared by every per-object memo (Kopf copies the operator's memo shallowly).
    memo.views = views = IndexViews()
    memo.requeue = Requeue(lambda key: reconcile_owner(reconciler, views, key), threads=SETTINGS.requeue_threads)
    if SETTINGS.metrics_port is not None:
        port = reconciler.metrics.serve(SETTINGS.metrics_port)
        logger.info(f"metrics on :{port}/metrics")


@kopf.on.cleanup()
def stop_background_work(memo: Any, **_: Any) -> None:
    memo.healer.stop()
    memo.requeue.stop()
    memo.reconciler.metrics.stop()


# ---- indexes: the operator's view of the world ----------------------------------------------------
# Indexers and the deletion hook are `async`: they only copy dicts, and Kopf would otherwise hand each
# call (three per watch event) to its thread pool.


@kopf.index(*CR)
async def recon_resources(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, label_value(name)): dict(body)}


@kopf.index("batch", "v1", "jobs", labels=OWNED)
async def recon_jobs(namespace: str | None, body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    owners = [ref for ref in body.metadata.get("ownerReferences") or [] if ref.get("kind") == KIND]
    if not owners:
        return {}
    meta = body["metadata"]
    snapshot = {
        "metadata": {
            k: meta.get(k)
            for k in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "labels",
                "ownerReferences",
                "creationTimestamp",
                "deletionTimestamp",
            )
        },
        "spec": {"suspend": (body.get("spec") or {}).get("suspend", False)},
        "status": dict(body.get("status") or {}),
    }
    return {(namespace, labels[JOB_LABEL]): snapshot}


@kopf.index("", "v1", "pods", labels=OWNED)
async def recon_pods(namespace: str | None, body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    meta = body["metadata"]
    snapshot = {
        "metadata": {
            k: meta.get(k)
            for k in ("name", "uid", "resourceVersion", "ownerReferences", "creationTimestamp", "deletionTimestamp")
        },
        "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
        "status": dict(body.get("status") or {}),
    }
    return {(namespace, labels[JOB_LABEL]): snapshot}


def _owned(index: kopf.Index[Any, Any], key: tuple[str, str]) -> list[Any]:
    return list(index.get(key, []))


def _all(index: kopf.Index[Any, Any]) -> list[Any]:
    """Every ReconstructionJob the operator sees (output-prefix claims are checked against them)."""
    return [body for key in list(index) for body in index.get(key, [])]


# Kueue's Workloads (settings.kueue_workloads): indexed by the Job that owns them, and Jobs indexed by
# name -> owner key, so a Workload's change re-derives its ReconstructionJob's status.
if SETTINGS.kueue_workloads:

    @kopf.index(KUEUE_GROUP, KUEUE_VERSION, WORKLOADS)
    async def recon_workloads(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        meta = body["metadata"]
        jobs = [ref for ref in meta.get("ownerReferences") or [] if ref.get("kind") == "Job"]
        if not jobs:
            return {}
        status = body.get("status") or {}
        snapshot = {
            "metadata": {k: meta.get(k) for k in ("name", "uid", "ownerReferences", "creationTimestamp")},
            "status": {"conditions": status.get("conditions") or [], "admission": status.get("admission")},
        }
        return {(namespace, jobs[0]["name"]): snapshot}

    @kopf.index("batch", "v1", "jobs", labels=OWNED)
    async def recon_job_owners(namespace: str | None, name: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): labels[JOB_LABEL]}

    @kopf.on.event(KUEUE_GROUP, KUEUE_VERSION, WORKLOADS)  # type: ignore[arg-type]
    async def workload_changed(
        namespace: str | None,
        body: kopf.Body,
        memo: Any,
        recon_resources: kopf.Index[Any, Any],
        recon_jobs: kopf.Index[Any, Any],
        recon_pods: kopf.Index[Any, Any],
        recon_workloads: kopf.Index[Any, Any],
        recon_job_owners: kopf.Index[Any, Any],
        **_: Any,
    ) -> None:
        memo.views.bind(recon_resources, recon_jobs, recon_pods, recon_workloads)
        for ref in body["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                for owner in recon_job_owners.get((namespace, ref["name"]), []):
                    memo.requeue.add((str(namespace), owner))


def _workloads(index: kopf.Index[Any, Any] | None, namespace: str, jobs: list[Any]) -> list[Any]:
    """The Workloads of `jobs` (none when Kueue's Workloads are not watched)."""
    if index is None:
        return []
    return [w for job in jobs for w in index.get((namespace, job["metadata"]["name"]), [])]


# ---- the ReconstructionJob itself ------------------------------------------------------------------


@kopf.on.create(
    *CR, retries=SETTINGS.preflight_retries, backoff=SETTINGS.preflight_backoff_s, timeout=SETTINGS.handler_timeout_s
)
@kopf.on.resume(
    *CR, retries=SETTINGS.preflight_retries, backoff=SETTINGS.preflight_backoff_s, timeout=SETTINGS.handler_timeout_s
)
@kopf.on.update(  # type: ignore[arg-type]
    *CR,
    field="spec",
    retries=SETTINGS.preflight_retries,
    backoff=SETTINGS.preflight_backoff_s,
    timeout=SETTINGS.handler_timeout_s,
)
def reconcile_resource(
    body: kopf.Body,
    memo: Any,
    retry: int,
    recon_resources: kopf.Index[Any, Any],
    recon_jobs: kopf.Index[Any, Any],
    recon_pods: kopf.Index[Any, Any],
    **kwargs: Any,
) -> None:
    key = (str(body.metadata.namespace), label_value(str(body.metadata.name)))
    with memo.reconciler.locks.get((key[0], str(body.metadata.name))):  # see reconcile_owner
        jobs = _owned(recon_jobs, key)
        workloads = _workloads(kwargs.get("recon_workloads"), key[0], jobs)
        memo.reconciler.run(
            dict(body),
            jobs,
            _owned(recon_pods, key),
            allow_create=True,
            retry=retry,
            claims=_all(recon_resources),
            workloads=workloads,
        )


@kopf.on.event(*CR)
async def forget_deleted(type: str, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    if type == "DELETED":
        memo.reconciler.forget(namespace, name)


# ---- what it owns: a change of a worker Job or Pod re-derives the owner's status ------------------


@dataclass
class IndexViews:
    """Kopf's indexes, which reach only handlers, kept for the requeue threads (they are live views)."""

    resources: kopf.Index[Any, Any] | None = None
    jobs: kopf.Index[Any, Any] | None = None
    pods: kopf.Index[Any, Any] | None = None
    workloads: kopf.Index[Any, Any] | None = None

    def bind(
        self,
        resources: kopf.Index[Any, Any],
        jobs: kopf.Index[Any, Any],
        pods: kopf.Index[Any, Any],
        workloads: kopf.Index[Any, Any] | None = None,
    ) -> None:
        self.resources, self.jobs, self.pods = resources, jobs, pods
        if workloads is not None:
            self.workloads = workloads


def reconcile_owner(reconciler: Reconciler, views: IndexViews, key: Any) -> None:
    if views.resources is None or views.jobs is None or views.pods is None:
        return
    for body in _owned(views.resources, key):
        # The Jobs and Pods are read under the CR's lock: a snapshot read before it, while another thread
        # decided from newer views, could lack the worker's pod that thread saw running (Running → Pending).
        with reconciler.locks.get((body["metadata"]["namespace"], body["metadata"]["name"])):
            jobs = _owned(views.jobs, key)
            workloads = _workloads(views.workloads, key[0], jobs)
            reconciler.run(body, jobs, _owned(views.pods, key), allow_create=False, retry=0, workloads=workloads)


def _requeue(
    memo: Any,
    namespace: str | None,
    labels: kopf.Labels,
    indexes: tuple[kopf.Index[Any, Any], ...],
    workloads: kopf.Index[Any, Any] | None = None,
) -> None:
    memo.views.bind(*indexes, workloads)
    memo.requeue.add((str(namespace), labels[JOB_LABEL]))


@kopf.on.event("batch", "v1", "jobs", labels=OWNED)  # type: ignore[arg-type]
async def job_changed(
    namespace: str | None,
    labels: kopf.Labels,
    memo: Any,
    recon_resources: kopf.Index[Any, Any],
    recon_jobs: kopf.Index[Any, Any],
    recon_pods: kopf.Index[Any, Any],
    **kwargs: Any,
) -> None:
    _requeue(memo, namespace, labels, (recon_resources, recon_jobs, recon_pods), kwargs.get("recon_workloads"))


@kopf.on.event("", "v1", "pods", labels=OWNED)  # type: ignore[arg-type]
async def pod_changed(
    namespace: str | None,
    labels: kopf.Labels,
    memo: Any,
    recon_resources: kopf.Index[Any, Any],
    recon_jobs: kopf.Index[Any, Any],
    recon_pods: kopf.Index[Any, Any],
    **kwargs: Any,
) -> None:
    _requeue(memo, namespace, labels, (recon_resources, recon_jobs, recon_pods), kwargs.get("recon_workloads"))
