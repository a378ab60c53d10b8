"""`recon-operator` / `python -m recon_operator`: run the operator (a single replica; Kopf has no leader election)."""

from __future__ import annotations

import ctypes
import logging
import os

import kopf

M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas(count: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas (unless MALLOC_ARENA_MAX says otherwise).

    Kopf runs blocking handlers on a thread pool; each thread would get its own arena, and their
    fragmentation more than doubles the operator's resident memory under a burst of resources.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    libc.mallopt(M_ARENA_MAX, count)


def main() -> None:
    limit_malloc_arenas()
    from recon_operator import handlers  # registers the handlers and reads the settings

    settings = handlers.SETTINGS
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per handler call and object is noise at hundreds of jobs; failures still log as warnings.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        standalone=True,  # no peering objects: exactly one replica must run (the chart's Deployment says so)
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
    )


if __name__ == "__main__":
    main()
