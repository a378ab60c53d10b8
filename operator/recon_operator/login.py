"""Logging in with a kubeconfig whose user is a `tokenFile` (a projected ServiceAccount token on disk).

Kopf's own kubeconfig reader (`kopf.login_with_kubeconfig`) takes `token` and client certificates but
ignores `tokenFile`, so such an identity would talk to the API server as `system:anonymous`. The local
control plane's node agent gives every pod exactly that kind of kubeconfig (docs/local-cluster.md), as
do `kubectl create token`-style setups. The kubernetes client library's loader reads the file; the token
is read again on every (re-)login, so a refreshed token file is picked up when the old one expires.
"""

from __future__ import annotations

import os
from typing import Any

import kopf
import kubernetes


def login_with_token_file(**_: Any) -> kopf.ConnectionInfo | None:
    """Credentials from $KUBECONFIG when its current user has a `tokenFile`; None for any other kubeconfig."""
    path = os.environ.get("KUBECONFIG")
    if not path:
        return None
    loader = kubernetes.config.kube_config._get_kube_config_loader(filename=path)
    user = loader._user
    if user is None or "tokenFile" not in user:
        return None
    configuration = kubernetes.client.Configuration()
    loader.load_and_set(configuration)
    # The client stores it as "Bearer <token>" under "BearerToken" (older releases: "authorization").
    stored = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization") or ""
    token = str(stored).removeprefix("Bearer ").strip()
    if not token:
        raise kopf.LoginError(f"{path}: tokenFile {user['tokenFile']} is empty")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme="Bearer",
        token=token,
        default_namespace=None,
    )
