"""What a container sees on the local node: environment, paths and devices, from a pod (plain dict).

Pure functions, no API calls: lookups of ConfigMaps and Secrets are passed in.

Paths: a process cannot mount, so every volume is a folder under the pod's folder, and strings that
name a container path are rewritten to the host folder (see PathMap). The process also gets
RECON_VOLUME_<NAME> (upper-cased volume name, non-alphanumerics as `_`) for each mounted volume, and
RECON_TERMINATION_MESSAGE_PATH for the file whose content becomes `state.terminated.message`.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

Obj = dict[str, Any]
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


class ConfigError(Exception):
    """The pod references something that does not resolve (kubelet: CreateContainerConfigError)."""


# ---- $(VAR) expansion, as kubelet does for command, args and env values --------------------------

_EXPANSION = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """`$(NAME)` becomes env[NAME] when defined (else stays as written); `$$` escapes a `$`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _EXPANSION.sub(substitute, value)


# ---- container paths -> host paths ---------------------------------------------------------------


def volume_env_name(volume: str) -> str:
    return "RECON_VOLUME_" + re.sub(r"[^A-Za-z0-9]", "_", volume).upper()


class PathMap:
    """Container paths (mountPath, terminationMessagePath) mapped to host paths, longest prefix first.

    A string is rewritten when it is a mapped path or lies under one (`/scratch` or `/scratch/x`),
    also after a `key=` prefix (`--out=/scratch/x`). Anything else is left unchanged.
    """

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = sorted(((k.rstrip("/") or "/", v) for k, v in mapping.items()), key=lambda kv: -len(kv[0]))

    def _map_path(self, value: str) -> str | None:
        for container_path, host_path in self.mapping:
            if value == container_path:
                return host_path
            if value.startswith(container_path + "/"):
                return host_path + value[len(container_path) :]
        return None

    def rewrite(self, value: str) -> str:
        mapped = self._map_path(value)
        if mapped is not None:
            return mapped
        key, sep, rest = value.partition("=")
        if sep and rest.startswith("/"):
            mapped = self._map_path(rest)
            if mapped is not None:
                return f"{key}={mapped}"
        return value


# ---- downward API ----------------------------------------------------------------------------------

_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_ref(pod: Obj, path: str) -> str:
    """Value of a fieldRef.fieldPath, as kubelet resolves it."""
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", "127.0.0.1"),
        "status.hostIPs": status.get("hostIP", "127.0.0.1"),
        "status.podIP": status.get("podIP", "127.0.0.1"),
        "status.podIPs": status.get("podIP", "127.0.0.1"),
    }
    if path in simple:
        return str(simple[path])
    match = _LABEL_REF.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldRef.fieldPath {path!r}")


def _quantity(text: str) -> Decimal:
    return Decimal(parse_quantity(text))


def resource_field_ref(container: Obj, ref: Obj, allocatable: dict[str, str]) -> str:
    """resourceFieldRef divided by divisor (0 or unset: 1), rounded up: an unset limit is the node's
    allocatable, an unset request 0 (kubelet's defaultPodLimitsForDownwardAPI fills limits only; the API
    server has already copied a limit into an unset request)."""
    resource = ref["resource"]  # e.g. limits.cpu, requests.memory
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name)
    if value is None:
        value = allocatable.get(name, "0") if kind == "limits" else "0"
    # The API server stores an unset divisor as "0"; kubelet reads a zero divisor as 1.
    divisor = _quantity(str(ref.get("divisor") or "1")) or Decimal(1)
    return str(math.ceil(_quantity(str(value)) / divisor))


# ---- environment ---------------------------------------------------------------------------------

Lookup = Callable[[str, str], Obj | None]  # (namespace, name) -> object or None when not found


def decoded_data(obj: Obj, secret: bool) -> dict[str, str]:
    """The string values of a Secret (base64-decoded) or a ConfigMap (data and binaryData)."""
    if secret:
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    merged = dict(obj.get("data") or {})
    merged.update({k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("binaryData") or {}).items()})
    return merged


def container_env(
    pod: Obj,
    container: Obj,
    get_configmap: Lookup,
    get_secret: Lookup,
    allocatable: dict[str, str],
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """envFrom then env, in order, with $(VAR) expansion over what is defined so far (kubelet's rules).

    `base` holds variables defined before the pod's own (the agent's additions); pod values win.
    """
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(base or {})

    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, lookup, secret in (("configMapRef", get_configmap, False), ("secretRef", get_secret, True)):
            ref = source.get(kind)
            if ref is None:
                continue
            obj = lookup(namespace, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                what = "secret" if secret else "configmap"
                raise ConfigError(f'{what} "{ref["name"]}" not found')
            for key, value in decoded_data(obj, secret).items():
                env[prefix + key] = value

    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_ref(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            named = [
                c for c in pod.get("spec", {}).get("containers") or [] if c.get("name") == ref.get("containerName")
            ]
            env[name] = resource_field_ref(named[0] if named else container, ref, allocatable)
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            secret = "secretKeyRef" in source
            ref = source["secretKeyRef" if secret else "configMapKeyRef"]
            what = "secret" if secret else "configmap"
            obj = (get_secret if secret else get_configmap)(namespace, ref["name"])
            data = decoded_data(obj, secret) if obj is not None else None
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                if data is None:
                    raise ConfigError(f'{what} "{ref["name"]}" not found')
                raise ConfigError(f"couldn't find key {ref['key']} in {what.capitalize()} {namespace}/{ref['name']}")
            env[name] = data[ref["key"]]
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
    return env


def requested_gpus(pod: Obj, resource: str = GPU_RESOURCE) -> int:
    """`resource` (nvidia.com/gpu, or a MIG profile such as nvidia.com/mig-1g.10gb) limits summed over
    the app containers (extended resources are limits-only)."""
    total = 0
    for container in pod.get("spec", {}).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        total += int(limits.get(resource, 0))
    return total
