"""The de-duplicating requeue: a burst of events for one resource becomes one reconcile."""

from __future__ import annotations

import threading
from collections.abc import Hashable

from recon_operator.requeue import Requeue


def test_keys_waiting_are_not_queued_twice_and_all_keys_are_served() -> None:
    gate = threading.Event()
    seen: list[Hashable] = []
    done = threading.Semaphore(0)

    def work(key: Hashable) -> None:
        gate.wait(timeout=30)  # hold the only worker so the burst below piles up behind it
        seen.append(key)
        done.release()

    requeue = Requeue(work, threads=1)
    try:
        requeue.add("first")
        for _ in range(50):
            requeue.add("busy")
        requeue.add("other")
        gate.set()
        for _ in range(3):
            assert done.acquire(timeout=30)
        assert sorted(map(str, seen)) == ["busy", "first", "other"]
        assert not done.acquire(timeout=0.5)  # nothing else was queued
    finally:
        requeue.stop()
