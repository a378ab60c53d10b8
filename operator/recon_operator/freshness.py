"""The newest version of each owned Job and Pod seen, per ReconstructionJob: views never go back in time.

The operator decides from several views that lag each other: the watch-fed Kopf indexes (one watch
stream per kind), the healer's listings, and snapshots a handler thread read before it waited for the
CR's lock while another thread decided from newer ones. A decision from an older version of a pod than
one already acted on moves the phase back (a worker seen Running, then its pod read as still Pending:
`Running → Pending`, the flap CI caught). So every view is freshened under the CR's lock: each object
in it is replaced by the newest version seen of the same object (same uid, the larger resourceVersion,
which is etcd's global revision). Objects missing from a view are not added back (they may be gone);
the record of a CR is dropped when the CR is.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

Obj = Mapping[str, Any]
Key = tuple[str, str]


def revision(obj: Obj) -> int:
    """An object's metadata.resourceVersion as a number; -1 when it has none (then it is never replaced)."""
    value = str(((obj.get("metadata") or {}).get("resourceVersion")) or "")
    return int(value) if value.isdigit() else -1


class NewestSeen:
    """Per ReconstructionJob: uid -> the newest version of that owned Job or Pod seen in any view."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._seen: dict[Key, dict[str, Obj]] = {}

    def freshen(self, key: Key, objects: Sequence[Obj]) -> list[Obj]:
        """`objects` in order, each replaced by the newest version of it seen so far (and recorded)."""
        with self._guard:
            seen = self._seen.setdefault(key, {})
            fresh = []
            for obj in objects:
                uid = str((obj.get("metadata") or {}).get("uid") or "")
                known = seen.get(uid) if uid else None
                if known is not None and revision(known) > revision(obj):
                    fresh.append(known)
                    continue
                if uid and revision(obj) >= 0:
                    seen[uid] = obj
                fresh.append(obj)
            return fresh

    def forget(self, key: Key) -> None:
        with self._guard:
            self._seen.pop(key, None)
