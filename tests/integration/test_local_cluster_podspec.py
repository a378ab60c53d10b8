"""What the node agent gives a container, decided without a cluster (localcluster.podspec)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from localcluster.podspec import ConfigError, PathMap, container_env, expand, field_ref, resource_field_ref

POD: dict[str, Any] = {
    "metadata": {"name": "worker-0", "namespace": "recon", "uid": "u-1", "labels": {"app": "recon"}},
    "spec": {"nodeName": "local-node", "serviceAccountName": "spot-worker"},
    "status": {"podIP": "127.0.0.1"},
}
CONFIGMAPS = {("recon", "settings"): {"data": {"PRESET": "draft", "LEVEL": "2"}}}
SECRETS = {("recon", "creds"): {"data": {"KEY": base64.b64encode(b"s3cr3t").decode()}}}


def env_of(container: dict[str, Any], base: dict[str, str] | None = None) -> dict[str, str]:
    return container_env(
        POD,
        container,
        lambda ns, name: CONFIGMAPS.get((ns, name)),
        lambda ns, name: SECRETS.get((ns, name)),
        {"cpu": "2", "memory": "24Gi"},
        base,
    )


def test_expand_substitutes_defined_variables_and_keeps_the_rest() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-two-$(C)-$(A)"


def test_env_follows_kubelet_order_and_expansion() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "creds"}}],
        "env": [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GREETING", "value": "$(POD) uses $(CFG_PRESET) with $(KEY)"},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
        ],
    }
    env = env_of(container, {"HOSTNAME": "worker-0"})
    assert env["CFG_PRESET"] == "draft" and env["KEY"] == "s3cr3t" and env["LEVEL"] == "2"
    assert env["GREETING"] == "worker-0 uses draft with s3cr3t"
    assert env["HOSTNAME"] == "worker-0"


def test_missing_references_raise_unless_optional() -> None:
    missing_key = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}]}
    with pytest.raises(ConfigError, match="couldn't find key nope in Secret recon/creds"):
        env_of(missing_key)
    missing_map = {"envFrom": [{"configMapRef": {"name": "absent"}}]}
    with pytest.raises(ConfigError, match='configmap "absent" not found'):
        env_of(missing_map)
    optional = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", "optional": True}}}]}
    assert "X" not in env_of(optional)


def test_field_refs() -> None:
    assert field_ref(POD, "metadata.namespace") == "recon"
    assert field_ref(POD, "spec.serviceAccountName") == "spot-worker"
    assert field_ref(POD, "metadata.labels['app']") == "recon"
    assert field_ref(POD, "status.podIP") == "127.0.0.1"
    with pytest.raises(ConfigError, match="unsupported fieldRef"):
        field_ref(POD, "spec.nonsense")


def test_resource_field_ref_uses_limits_else_node_allocatable() -> None:
    container = {"resources": {"limits": {"memory": "2Gi"}}}
    assert resource_field_ref(container, {"resource": "limits.memory", "divisor": "1Mi"}, {"memory": "24Gi"}) == "2048"
    assert resource_field_ref(container, {"resource": "limits.cpu"}, {"cpu": "2"}) == "2"
    assert resource_field_ref({}, {"resource": "limits.cpu", "divisor": "1m"}, {"cpu": "500m"}) == "500"


def test_resource_field_ref_of_an_unset_request_is_zero_as_in_kubelet() -> None:
    allocatable = {"memory": "24Gi"}
    assert resource_field_ref({}, {"resource": "requests.memory"}, allocatable) == "0"
    requested = {"resources": {"requests": {"memory": "3Gi"}, "limits": {"memory": "4Gi"}}}
    assert resource_field_ref(requested, {"resource": "requests.memory"}, allocatable) == str(3 * 2**30)
    # The API server stores an unset divisor as "0", which kubelet reads as 1.
    assert resource_field_ref(requested, {"resource": "requests.memory", "divisor": "0"}, allocatable) == str(3 * 2**30)


def test_resource_field_ref_reads_the_named_container() -> None:
    worker = {"name": "worker", "resources": {"requests": {"memory": "3Gi"}}}
    sidecar = {"name": "sidecar", "env": [
        {"name": "M", "valueFrom": {"resourceFieldRef": {"containerName": "worker", "resource": "requests.memory"}}}
    ]}  # fmt: skip
    pod = {**POD, "spec": {**POD["spec"], "containers": [worker, sidecar]}}
    env = container_env(pod, sidecar, lambda ns, n: None, lambda ns, n: None, {"memory": "24Gi"})
    assert env["M"] == str(3 * 2**30)


def test_path_map_rewrites_container_paths_under_mounts() -> None:
    paths = PathMap({"/scratch": "/tmp/pod/volumes/scratch", "/scratch/cache": "/tmp/pod/volumes/cache"})
    assert paths.rewrite("/scratch") == "/tmp/pod/volumes/scratch"
    assert paths.rewrite("/scratch/out/mesh.glb") == "/tmp/pod/volumes/scratch/out/mesh.glb"
    assert paths.rewrite("/scratch/cache/x") == "/tmp/pod/volumes/cache/x"  # longest mount wins
    assert paths.rewrite("--out=/scratch/mesh.glb") == "--out=/tmp/pod/volumes/scratch/mesh.glb"
    assert paths.rewrite("/scratchpad") == "/scratchpad"
    assert paths.rewrite("s3://bucket/scratch") == "s3://bucket/scratch"
