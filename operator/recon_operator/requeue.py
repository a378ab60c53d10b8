"""A de-duplicating work queue: ReconstructionJobs whose Jobs or Pods changed, reconciled off the event loop.

A burst of watch events for one resource (its Job and Pod each change several times while starting)
becomes one reconcile if they arrive while it is waiting, and these re-derivations run on their own
threads so they never starve the creation of new Jobs.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Hashable

log = logging.getLogger("recon_operator.requeue")


class Requeue:
    def __init__(self, work: Callable[[Hashable], None], threads: int = 4) -> None:
        """Start `threads` workers that call `work(key)` for each key added."""
        self._work = work
        self._lock = threading.Lock()
        self._pending: set[Hashable] = set()
        self._queue: queue.SimpleQueue[Hashable | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"recon-requeue-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def add(self, key: Hashable) -> None:
        """Schedule `key`; a no-op while it is already waiting (its reconcile will see the latest state)."""
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
        self._queue.put(key)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _serve(self) -> None:
        while True:
            key = self._queue.get()
            if key is None:
                return
            with self._lock:
                self._pending.discard(key)
            try:
                self._work(key)
            except Exception:  # the healing sweep retries; one bad resource must not stop the queue
                log.exception(f"reconciling {key} after a Job/Pod change failed")
