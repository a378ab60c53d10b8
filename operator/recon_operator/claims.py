"""Output-prefix claims: two ReconstructionJobs must never publish into one prefix. Pure functions.

Whoever starts an attempt first holds the prefix until it ends (Succeeded, Failed, Cancelled): a CR
whose output prefix contains, or lies inside, the prefix of another active CR that is older or has
already started an attempt fails with `OutputConflict` before anything is created. The order (creation
time, then uid) is the same on every operator replica and after restarts, so of two CRs applied at once
the younger always yields. A finished CR releases its prefix: a new CR may then publish there again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from recon_operator.phases import TERMINAL, Phase

Obj = Mapping[str, Any]


def prefix_key(uri: str) -> str:
    """`uri` as a folder prefix for comparison: scheme and bucket kept, repeated slashes folded, one trailing /."""
    scheme, _, rest = uri.strip().partition("://")
    return f"{scheme.lower()}://" + re.sub(r"/+", "/", rest).rstrip("/") + "/"


def overlaps(a: str, b: str) -> bool:
    first, second = prefix_key(a), prefix_key(b)
    return first.startswith(second) or second.startswith(first)


def _order(body: Obj) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("uid") or "")


def _active(status: Obj) -> bool:
    return status.get("phase") not in {phase.value for phase in TERMINAL}


def output_conflict(body: Obj, others: Iterable[tuple[Obj, Obj]]) -> str | None:
    """Why `body` may not publish where its spec says; None when its output prefix is free.

    `others`: (body, trusted operator-owned status) of every ReconstructionJob the operator knows.
    """
    meta = body["metadata"]
    mine = str(body["spec"]["output"]["uri"])
    for other, status in others:
        other_meta = other.get("metadata") or {}
        if other_meta.get("uid") == meta.get("uid") or other_meta.get("deletionTimestamp"):
            continue
        theirs = str(((other.get("spec") or {}).get("output") or {}).get("uri") or "")
        if not theirs or not overlaps(mine, theirs) or not _active(status):
            continue
        started = int(status.get("attempts") or 0) > 0 and status.get("phase") != Phase.SUSPENDED.value
        if started or _order(other) < _order(body):
            who = f"{other_meta.get('namespace')}/{other_meta.get('name')}"
            return (
                f"spec.output.uri {mine} overlaps {theirs}, the output of ReconstructionJob {who}, which is "
                f"{status.get('phase') or 'being created'}: wait until it ends or publish elsewhere"
            )
    return None
