"""Kubeconfig files: admin, per-component client certificates, and per-pod ServiceAccount tokens."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write(path: Path, server: str, ca: Path, user: dict[str, Any], name: str, namespace: str | None) -> None:
    context: dict[str, Any] = {"cluster": "local", "user": name}
    if namespace:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": "local", "context": context}],
        "current-context": "local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)


def write_cert_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, name: str) -> None:
    """Kubeconfig for a client-certificate identity; certificates are embedded so the file stands alone."""
    user = {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}
    _write(path, server, ca, user, name, None)


def write_token_kubeconfig(path: Path, server: str, ca: Path, token_file: Path, name: str, namespace: str) -> None:
    """Kubeconfig whose token is read from `token_file` (refreshed in place by the node agent)."""
    _write(path, server, ca, {"tokenFile": str(token_file)}, name, namespace)
