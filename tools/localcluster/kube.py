"""Thin helpers over the kubernetes client that work on plain dicts (the JSON the API returns).

Plain dicts keep the node agent close to the wire format kubelet speaks, and independent of how a
given client release models objects.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
    """Call a generated API method and return the decoded JSON body."""
    response = call(*args, _preload_content=False, **kwargs)
    data = response.data
    return json.loads(data) if data else {}


def watch_events(
    list_call: Callable[..., Any], resource_version: str, timeout: int = 300, **kwargs: Any
) -> Iterator[Obj]:
    """One watch request: yields {"type", "object"} events until the server closes it.

    Raises ApiException(410) when `resource_version` is too old; callers then list again.
    """
    response = list_call(
        watch=True,
        resource_version=resource_version,
        timeout_seconds=timeout,
        allow_watch_bookmarks=True,
        _preload_content=False,
        _request_timeout=timeout + 30,
        **kwargs,
    )
    try:
        buffer = b""
        for chunk in response.stream(amt=None, decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    raise ApiException(status=status.get("code", 500), reason=status.get("message", ""))
                yield event
    finally:
        response.release_conn()


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def install_crds(api: client.ApiClient, files: list[Path], timeout: float) -> list[str]:
    """Server-side apply every CustomResourceDefinition in `files`, then wait until each is Established."""
    ext = client.ApiextensionsV1Api(api)
    names: list[str] = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc.get("kind") != "CustomResourceDefinition":
                raise ValueError(f"{path}: expected only CustomResourceDefinition documents, found {doc.get('kind')}")
            name = doc["metadata"]["name"]
            try:
                ext.patch_custom_resource_definition(
                    name,
                    doc,
                    field_manager="localcluster",
                    force=True,
                    _content_type="application/apply-patch+yaml",  # JSON is YAML: the body is sent as JSON
                )
            except ApiException as err:
                raise RuntimeError(f"{path}: the apiserver rejected CRD {name}: {err.body or err.reason}") from err
            names.append(name)
    for name in names:
        wait_for(f"CRD {name} to be Established", functools.partial(_crd_established, ext, name), timeout)
    return names


def _crd_established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    crd = raw(ext.read_custom_resource_definition, name)
    conditions = crd.get("status", {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def node_ready(api: client.ApiClient, name: str) -> bool:
    """Ready condition True and no not-ready taint left (the node lifecycle controller removes it)."""
    try:
        node = raw(client.CoreV1Api(api).read_node, name)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    taints = node.get("spec", {}).get("taints") or []
    return ready and not any(t["key"].startswith("node.kubernetes.io/not-ready") for t in taints)


def wait_node_ready(api: client.ApiClient, name: str, timeout: float, alive: Callable[[], None]) -> None:
    def check() -> bool:
        alive()  # raises, with the agent's log, if the agent died
        return node_ready(api, name)

    wait_for(f"node {name} to be Ready", check, timeout)


def wait_service_account(api: client.ApiClient, namespace: str, name: str, timeout: float) -> None:
    core = client.CoreV1Api(api)

    def exists() -> bool:
        try:
            raw(core.read_namespaced_service_account, name, namespace)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    wait_for(f"ServiceAccount {namespace}/{name}", exists, timeout)


def job_finished(api: client.ApiClient, namespace: str, name: str) -> Obj | None:
    """The Job once it has a Complete or Failed condition, else None."""
    job = raw(client.BatchV1Api(api).read_namespaced_job, name, namespace)
    conditions = job.get("status", {}).get("conditions") or []
    done = any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)
    return job if done else None


def wait_job_finished(api: client.ApiClient, namespace: str, name: str, timeout: float = 120) -> Obj:
    job: Obj = wait_for(
        f"Job {namespace}/{name} to finish", functools.partial(job_finished, api, namespace, name), timeout
    )
    return job
