"""The worker's least-privilege identity: a ServiceAccount that may only get and patch its own CR's status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf

from recon_operator.labels import child_labels
from recon_operator.names import identity_name
from recon_operator.spec import API_GROUP, PLURAL


def build_identity(owner: Mapping[str, Any]) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding for the ReconstructionJob `owner`, all owned by it."""
    meta = owner["metadata"]
    cr_name, namespace = meta["name"], meta["namespace"]
    name = identity_name(cr_name)
    labels = child_labels(cr_name, "worker-identity")

    def metadata() -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": dict(labels)}

    service_account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata()}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(),
        "rules": [
            {
                "apiGroups": [API_GROUP],
                "resources": [f"{PLURAL}/status"],
                "resourceNames": [cr_name],
                "verbs": ["get", "patch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    objects: list[dict[str, Any]] = [service_account, role, binding]
    kopf.adopt(objects, owner=kopf.Body(cast("kopf.RawBody", dict(owner))))
    return objects
