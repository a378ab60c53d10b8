"""What the operator's settings allow a ReconstructionJob to ask for. Pure functions.

Whoever may create a ReconstructionJob gets pods and storage requests made with the operator's rights,
so the CR's scheduling powers (priority class, tolerations, image, runtime class) and the places the
preflight talks to (storage endpoints, file:// paths) are bounded by settings. A CR outside them fails
before anything is created, with reason `PolicyViolation` and a message naming the field and the setting.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from recon_operator.settings import OperatorSettings
from recon_operator.spec import ReconstructionJobSpec

# AWS's own S3 endpoints: s3.amazonaws.com, s3.<region>.amazonaws.com, s3-<region>..., dualstack, China.
AWS_ENDPOINT = re.compile(r"^s3([.-][a-z0-9-]+)*\.amazonaws\.com(\.cn)?$")
DEFAULT_PORTS = {"http": 80, "https": 443}


def _matches(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def endpoint_key(endpoint: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) endpoint URL, lower-cased, default port filled; None if not one."""
    try:
        parts = urlsplit(endpoint.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    if parts.path.strip("/") or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def endpoint_allowed(endpoint: str, settings: OperatorSettings) -> bool:
    """Whether `spec.storage.endpoint` may be used: the configured endpoint, a listed one, or AWS's (https)."""
    key = endpoint_key(endpoint)
    if key is None:
        return False
    allowed = [settings.s3_endpoint, *settings.allowed_endpoints]
    if any(known and endpoint_key(known) == key for known in allowed):
        return True
    return settings.allow_aws_endpoints and key[0] == "https" and key[2] == 443 and bool(AWS_ENDPOINT.match(key[1]))


def scheduling_violations(spec: ReconstructionJobSpec, settings: OperatorSettings) -> list[str]:
    """Each scheduling or image request of `spec` the settings do not allow, naming field and setting."""
    found = []
    scheduling = spec.scheduling
    priority = scheduling.priority_class_name
    if priority:
        listed = priority in settings.allowed_priority_classes
        if priority.startswith("system-") and not listed:
            found.append(
                f"spec.scheduling.priorityClassName {priority!r}: system-* priority classes are reserved "
                "for the cluster (list it by name in allowedPriorityClasses to allow it)"
            )
        elif not listed and not _matches(priority, settings.allowed_priority_classes):
            allowed = ", ".join(settings.allowed_priority_classes) or "none"
            found.append(f"spec.scheduling.priorityClassName {priority!r} is not allowed (allowed: {allowed})")
    for index, toleration in enumerate(scheduling.tolerations):
        key = str(toleration.get("key") or "")
        allowed_keys = settings.allowed_toleration_keys
        if (not key and "*" not in allowed_keys) or (key and not _matches(key, allowed_keys)):
            shown = repr(key) if key else "with no key (tolerates every taint)"
            keys = ", ".join(allowed_keys) or "none"
            found.append(f"spec.scheduling.tolerations[{index}] {shown} is not allowed (allowed keys: {keys})")
    runtime = scheduling.runtime_class_name
    if runtime and not settings.worker_runtime_class_name and not _matches(runtime, settings.allowed_runtime_classes):
        classes = ", ".join(settings.allowed_runtime_classes) or "none"
        found.append(f"spec.scheduling.runtimeClassName {runtime!r} is not allowed (allowed: {classes})")
    image = spec.image
    if image and image != settings.worker_image:
        prefixes = settings.allowed_image_prefixes
        if not any(image.startswith(prefix) for prefix in prefixes):
            found.append(
                f"spec.image {image!r} is not allowed: "
                + (f"it must start with one of {', '.join(prefixes)}" if prefixes else "image overrides are off")
                + " (allowedImagePrefixes)"
            )
    return found


def storage_violations(spec: ReconstructionJobSpec, settings: OperatorSettings) -> list[str]:
    """Each storage location of `spec` the operator may not contact or touch."""
    found = []
    endpoint = spec.storage.endpoint
    if endpoint and not endpoint_allowed(endpoint, settings):
        found.append(
            f"spec.storage.endpoint {endpoint!r} is not allowed (the operator's S3 endpoint, "
            + ("AWS S3, " if settings.allow_aws_endpoints else "")
            + "and allowedEndpoints are)"
        )
    for field, uri in (("spec.input.uri", spec.input.uri), ("spec.output.uri", spec.output.uri)):
        if uri.startswith("file://") and not settings.allow_file_uris:
            found.append(f"{field} {uri!r}: file:// URIs are off in this cluster (allowFileURIs)")
    return found


def violations(spec: ReconstructionJobSpec, settings: OperatorSettings) -> list[str]:
    return [*scheduling_violations(spec, settings), *storage_violations(spec, settings)]
