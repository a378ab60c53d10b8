"""Cluster-wide worker placement (the chart's worker.* values) merged with the CR's spec.scheduling."""

from __future__ import annotations

from typing import Any

from recon_operator.jobspec import build_job
from recon_operator.settings import OperatorSettings
from recon_operator.spec import ReconstructionJobSpec

GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPOT_TAINT = {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute"}


def pod_spec(scheduling: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    body = {
        "apiVersion": "recon.dev/v1alpha1",
        "kind": "ReconstructionJob",
        "metadata": {"name": "spot", "namespace": "team-a", "uid": "6f1c2d3e-0000-4000-8000-000000000002"},
        "spec": {"input": {"uri": "s3://c/spot/"}, "output": {"uri": "s3://r/spot/"}, "scheduling": scheduling},
    }
    spec = ReconstructionJobSpec.model_validate(body["spec"])
    pod: dict[str, Any] = build_job(body, spec, 1, settings)["spec"]["template"]["spec"]
    return pod


def test_settings_read_worker_placement_from_json_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("RECON_OPERATOR_WORKER_NODE_SELECTOR", '{"gpu": "h100"}')
    monkeypatch.setenv("RECON_OPERATOR_WORKER_TOLERATIONS", '[{"key": "nvidia.com/gpu", "operator": "Exists"}]')
    monkeypatch.setenv("RECON_OPERATOR_WORKER_RUNTIME_CLASS_NAME", "nvidia")
    settings = OperatorSettings()
    assert settings.worker_node_selector == {"gpu": "h100"}
    assert settings.worker_tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists"},)
    assert settings.worker_runtime_class_name == "nvidia"


def test_defaults_apply_when_the_resource_sets_no_placement() -> None:
    settings = OperatorSettings.model_validate(
        {
            "worker_node_selector": {"gpu": "h100"},
            "worker_tolerations": [GPU_TAINT],
            "worker_runtime_class_name": "nvidia",
        }
    )
    pod = pod_spec({}, settings)
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [GPU_TAINT]
    assert pod["runtimeClassName"] == "nvidia"


def test_resource_placement_adds_to_defaults_and_the_admins_win_on_conflicts() -> None:
    # Issue 11 point 7: a CR must not move its pod off the admin's pool or out of the admin's runtime.
    settings = OperatorSettings.model_validate(
        {
            "worker_node_selector": {"gpu": "h100", "pool": "batch"},
            "worker_tolerations": [GPU_TAINT],
            "worker_runtime_class_name": "nvidia",
        }
    )
    pod = pod_spec(
        {"nodeSelector": {"gpu": "a100"}, "tolerations": [SPOT_TAINT, GPU_TAINT], "runtimeClassName": "kata"}, settings
    )
    assert pod["nodeSelector"] == {"gpu": "h100", "pool": "batch"}
    assert pod["tolerations"] == [SPOT_TAINT, GPU_TAINT]  # the default is not repeated
    assert pod["runtimeClassName"] == "nvidia"


def test_no_defaults_leave_the_pod_unconstrained() -> None:
    pod = pod_spec({}, OperatorSettings.model_validate({}))
    assert "nodeSelector" not in pod
    assert "tolerations" not in pod
    assert "runtimeClassName" not in pod
