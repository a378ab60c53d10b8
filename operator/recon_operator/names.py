"""Deterministic names of the objects made for a ReconstructionJob (so a restart never duplicates one)."""

from __future__ import annotations

import hashlib

MAX_NAME = 63  # Job names become the `batch.kubernetes.io/job-name` label value, capped at 63 characters.


def shorten(base: str, suffix: str = "", limit: int = MAX_NAME) -> str:
    """`base + suffix`, or a prefix of `base`, a hash of all of it, and `suffix` when that is too long."""
    name = base + suffix
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    head = base[: limit - len(suffix) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{suffix}"


def job_name(cr_name: str, attempt: int) -> str:
    """`<cr-name>-<attempt>`, shortened with a hash of the CR name where needed."""
    return shorten(cr_name, f"-{attempt}")


def poses_job_name(cr_name: str, attempt: int) -> str:
    """`<cr-name>-<attempt>-poses`: the CPU Job that poses the photos before the worker Job of `attempt`.

    Worker Job names end in the attempt's digits, so no CR's worker Job can take this name.
    """
    return shorten(cr_name, f"-{attempt}-poses")


def identity_name(cr_name: str) -> str:
    """Name of the worker's ServiceAccount, Role and RoleBinding."""
    return shorten(cr_name, "-worker")


def label_value(cr_name: str) -> str:
    """The CR name as a label value (63 characters at most)."""
    return shorten(cr_name)
