"""Level-based healing: every few seconds, re-derive every ReconstructionJob from a fresh listing.

A missed watch event, a failed status patch or a restart mid-flight heals within one interval, and
deadlines and TTLs are checked even when nothing changes. A plain background thread rather than a
Kopf timer: Kopf puts a finalizer on every object with a timer, which would block deleting a CR while
the operator is down.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

import kopf
import kubernetes

from recon_operator.labels import JOB_LABEL
from recon_operator.names import label_value
from recon_operator.reconciler import Reconciler, raw_json
from recon_operator.spec import API_GROUP, API_VERSION, PLURAL
from recon_operator.workloads import KUEUE_GROUP, KUEUE_VERSION, WORKLOADS

log = logging.getLogger("recon_operator.healer")
Key = tuple[str, str]


class Healer(threading.Thread):
    def __init__(self, reconciler: Reconciler, namespaces: tuple[str, ...], interval_s: float) -> None:
        super().__init__(name="recon-healer", daemon=True)
        self.reconciler = reconciler
        self.namespaces = namespaces
        self.interval_s = interval_s
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.sweep()
            except Exception:  # the next sweep retries; a crash here would end healing for good
                log.exception("healing sweep failed")

    def _list(self, namespace: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        api = self.reconciler.api
        custom = kubernetes.client.CustomObjectsApi(api)
        batch = kubernetes.client.BatchV1Api(api)
        core = kubernetes.client.CoreV1Api(api)
        # Plain JSON (_preload_content=False): client models of every pod would cost memory and CPU.
        if namespace is None:
            crs = custom.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL, _preload_content=False)
            jobs = batch.list_job_for_all_namespaces(label_selector=JOB_LABEL, _preload_content=False)
            pods = core.list_pod_for_all_namespaces(label_selector=JOB_LABEL, _preload_content=False)
        else:
            crs = custom.list_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, _preload_content=False
            )
            jobs = batch.list_namespaced_job(namespace, label_selector=JOB_LABEL, _preload_content=False)
            pods = core.list_namespaced_pod(namespace, label_selector=JOB_LABEL, _preload_content=False)
        return _items(crs), _items(jobs), _items(pods)

    def _list_workloads(self, namespace: str | None) -> list[dict[str, Any]]:
        """Kueue's Workloads, when the operator shows Kueue's admission state (settings.kueue_workloads)."""
        if not self.reconciler.settings.kueue_workloads:
            return []
        custom = kubernetes.client.CustomObjectsApi(self.reconciler.api)
        if namespace is None:
            response = custom.list_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, WORKLOADS, _preload_content=False)
        else:
            response = custom.list_namespaced_custom_object(
                KUEUE_GROUP, KUEUE_VERSION, namespace, WORKLOADS, _preload_content=False
            )
        return _items(response)

    def sweep(self) -> None:
        namespaces = self.namespaces or (None,)
        listed = [self._list(namespace) for namespace in namespaces]
        claims = [body for crs, _, _ in listed for body in crs]  # output-prefix claims span namespaces
        for namespace, (crs, jobs, pods) in zip(namespaces, listed, strict=True):
            jobs_by: dict[Key, list[dict[str, Any]]] = defaultdict(list)
            pods_by: dict[Key, list[dict[str, Any]]] = defaultdict(list)
            for job in jobs:
                jobs_by[(job["metadata"]["namespace"], job["metadata"]["labels"][JOB_LABEL])].append(job)
            for pod in pods:
                pods_by[(pod["metadata"]["namespace"], pod["metadata"]["labels"][JOB_LABEL])].append(pod)
            workloads_by: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for workload in self._list_workloads(namespace):
                for ref in workload["metadata"].get("ownerReferences") or []:
                    workloads_by[ref.get("uid", "")].append(workload)
            for body in crs:
                if self.stopping.is_set():
                    return
                meta = body["metadata"]
                if meta.get("deletionTimestamp"):
                    continue
                key = (meta["namespace"], label_value(meta["name"]))
                workloads = [w for job in jobs_by[key] for w in workloads_by.get(job["metadata"]["uid"], [])]
                try:
                    self.reconciler.run(
                        body,
                        jobs_by[key],
                        pods_by[key],
                        allow_create=True,
                        retry=0,
                        claims=claims,
                        workloads=workloads,
                        listing=True,
                    )
                except kopf.TemporaryError:
                    pass  # preflight retries belong to the create handler's backoff
                except Exception:
                    log.exception(f"healing {meta['namespace']}/{meta['name']} failed")


def _items(response: object) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = raw_json(response)["items"]
    return items
