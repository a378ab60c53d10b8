"""`recon-operator` / `python -m recon_operator`: run the operator (a single replica; Kopf has no leader election)."""

from __future__ import annotations

import logging

import kopf


def main() -> None:
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
