"""ReconstructionJobs through the API, for the integration tests: read one, wait for its status, list its
Jobs, and talk to the API as its worker's ServiceAccount.

A wait that times out fails with the resource's last status, the evidence a reader needs first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubernetes import client
from localinstall import GROUP, PLURAL, VERSION

from localcluster.kube import raw, wait_for

__all__ = ["GROUP", "PLURAL", "VERSION", "get", "jobs_of", "wait_phase", "wait_status", "worker_api"]


def get(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return raw(custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)


def wait_status(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 90,
) -> dict[str, Any]:
    """The status of `namespace/name` once `check` holds for it (polled every 0.5 s)."""

    def reached() -> dict[str, Any] | None:
        status = get(custom, namespace, name).get("status") or {}
        return status if check(status) else None

    try:
        found: dict[str, Any] = wait_for(f"{namespace}/{name}: {what}", reached, timeout, interval=0.5)
    except Exception as exc:
        raise AssertionError(f"{exc}; last status: {json.dumps(get(custom, namespace, name).get('status'))}") from None
    return found


def wait_phase(
    custom: client.CustomObjectsApi, namespace: str, name: str, phase: str, timeout: float = 90
) -> dict[str, Any]:
    return wait_status(custom, namespace, name, lambda s: s.get("phase") == phase, f"phase {phase}", timeout)


def jobs_of(batch: client.BatchV1Api, namespace: str, name: str) -> list[Any]:
    """The batch/v1 Jobs the operator made for the ReconstructionJob `name` (by its label)."""
    return list(batch.list_namespaced_job(namespace, label_selector=f"recon.dev/job={name}").items)


def worker_api(core: client.CoreV1Api, namespace: str, account: str) -> client.CustomObjectsApi:
    """The CustomObjects API as the worker's ServiceAccount `account` (a fresh 10-minute token)."""
    request = {"spec": {"audiences": [], "expirationSeconds": 600}}
    token = raw(core.create_namespaced_service_account_token, account, namespace, request)["status"]["token"]
    configuration = client.Configuration()
    admin = core.api_client.configuration
    configuration.host, configuration.ssl_ca_cert = admin.host, admin.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.CustomObjectsApi(client.ApiClient(configuration))
