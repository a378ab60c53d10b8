"""The thin handlers: what they read, and when."""

from __future__ import annotations

import threading
from typing import Any

from recon_operator.handlers import IndexViews, reconcile_owner
from recon_operator.reconciler import KeyedLocks

KEY = ("ns", "bunny")
CR = {"metadata": {"name": "bunny", "namespace": "ns", "uid": "u1"}}


class LockWatchingIndex(dict[Any, list[Any]]):
    """A Kopf index stand-in that records, on every read, whether another thread holds the CR's lock."""

    def __init__(self, locks: KeyedLocks, items: list[Any], reads: list[bool]) -> None:
        super().__init__({KEY: items})
        self.locks, self.reads = locks, reads

    def get(self, key: Any, default: Any = None) -> Any:
        self.reads.append(held_by_another_thread(self.locks.get(("ns", "bunny"))))
        return super().get(key, default)


def held_by_another_thread(lock: Any) -> bool:
    taken: list[bool] = []

    def probe() -> None:
        taken.append(lock.acquire(blocking=False))
        if taken[0]:
            lock.release()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return not taken[0]


class RecordingReconciler:
    def __init__(self) -> None:
        self.locks = KeyedLocks()
        self.runs: list[tuple[list[Any], list[Any]]] = []

    def run(self, body: Any, jobs: list[Any], pods: list[Any], **_: Any) -> None:
        self.runs.append((jobs, pods))


def test_a_requeued_reconcile_reads_the_jobs_and_pods_under_the_crs_lock() -> None:
    # Read before the lock, a snapshot could predate the worker's pod that another thread, deciding first,
    # saw running: decided from afterwards it moved the CR from Running back to Pending (the poses flake).
    reconciler = RecordingReconciler()
    reads: list[bool] = []
    jobs, pods = [{"metadata": {"name": "bunny-1"}}], [{"metadata": {"name": "bunny-1-x"}}]
    views = IndexViews(
        resources=LockWatchingIndex(reconciler.locks, [CR], []),  # type: ignore[arg-type]
        jobs=LockWatchingIndex(reconciler.locks, jobs, reads),  # type: ignore[arg-type]
        pods=LockWatchingIndex(reconciler.locks, pods, reads),  # type: ignore[arg-type]
    )
    reconcile_owner(reconciler, views, KEY)  # type: ignore[arg-type]
    assert reconciler.runs == [(jobs, pods)]
    assert reads == [True, True]
