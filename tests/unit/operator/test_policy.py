"""policy.py: the scheduling powers and storage places a CR may ask for (issue 11 points 7 and 8)."""

from __future__ import annotations

from typing import Any

from recon_operator.policy import endpoint_allowed, scheduling_violations, storage_violations
from recon_operator.settings import OperatorSettings
from recon_operator.spec import ReconstructionJobSpec


def spec(**fields: Any) -> ReconstructionJobSpec:
    base = {"input": {"uri": "s3://in/c/"}, "output": {"uri": "s3://out/r/"}}
    return ReconstructionJobSpec.model_validate({**base, **fields})


def settings(**values: Any) -> OperatorSettings:
    return OperatorSettings.model_validate(values)


def test_defaults_allow_an_ordinary_gpu_job() -> None:
    asked = spec(
        scheduling={
            "priorityClassName": "batch-low",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "runtimeClassName": "nvidia",
        }
    )
    assert scheduling_violations(asked, settings()) == []
    assert storage_violations(asked, settings()) == []


def test_system_priority_classes_are_refused_unless_listed_by_name() -> None:
    asked = spec(scheduling={"priorityClassName": "system-node-critical"})
    (found,) = scheduling_violations(asked, settings())
    assert "priorityClassName 'system-node-critical'" in found and "reserved" in found
    assert scheduling_violations(asked, settings(allowed_priority_classes=["system-*"]))  # a glob is not enough
    assert scheduling_violations(asked, settings(allowed_priority_classes=["system-node-critical"])) == []


def test_priority_classes_outside_the_list_are_refused() -> None:
    limited = settings(allowed_priority_classes=["batch-*"])
    assert scheduling_violations(spec(scheduling={"priorityClassName": "batch-low"}), limited) == []
    (found,) = scheduling_violations(spec(scheduling={"priorityClassName": "gold"}), limited)
    assert "'gold' is not allowed (allowed: batch-*)" in found


def test_tolerations_need_an_allowed_key_and_tolerate_all_needs_star() -> None:
    everything = spec(scheduling={"tolerations": [{"operator": "Exists"}]})
    (found,) = scheduling_violations(everything, settings())
    assert "tolerations[0] with no key (tolerates every taint)" in found
    assert scheduling_violations(everything, settings(allowed_toleration_keys=["*"])) == []
    control = spec(scheduling={"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]})
    (found,) = scheduling_violations(control, settings())
    assert "'node-role.kubernetes.io/control-plane' is not allowed (allowed keys: nvidia.com/gpu)" in found


def test_image_override_is_off_unless_a_prefix_allows_it() -> None:
    mine = spec(image="evil.example/miner:1")
    (found,) = scheduling_violations(mine, settings())
    assert "spec.image 'evil.example/miner:1'" in found and "image overrides are off" in found
    assert scheduling_violations(spec(image=settings().worker_image), settings()) == []  # the default, spelt out
    allowed = settings(allowed_image_prefixes=["registry.example/recon/"])
    assert scheduling_violations(spec(image="registry.example/recon/worker:2"), allowed) == []
    assert scheduling_violations(spec(image="registry.example/reconx/worker:2"), allowed)


def test_the_admins_runtime_class_wins_and_others_are_bounded() -> None:
    kata = spec(scheduling={"runtimeClassName": "kata"})
    assert scheduling_violations(kata, settings(worker_runtime_class_name="nvidia")) == []  # ignored: admin's wins
    (found,) = scheduling_violations(kata, settings(allowed_runtime_classes=["nvidia"]))
    assert "runtimeClassName 'kata' is not allowed" in found


def test_endpoints_the_configured_one_listed_ones_and_aws() -> None:
    ours = settings(s3_endpoint="http://minio.storage:9000", allowed_endpoints=["https://s3.example.com"])
    assert endpoint_allowed("http://MINIO.storage:9000/", ours)
    assert endpoint_allowed("https://s3.example.com:443", ours)
    assert endpoint_allowed("https://s3.eu-west-1.amazonaws.com", ours)
    assert endpoint_allowed("https://s3.dualstack.us-east-1.amazonaws.com", ours)
    assert not endpoint_allowed("https://s3.eu-west-1.amazonaws.com", settings(allow_aws_endpoints=False))
    for bad in (
        "http://127.0.0.1:9000",
        "http://169.254.169.254",
        "http://s3.eu-west-1.amazonaws.com",  # AWS, but not over https
        "https://s3.amazonaws.com.evil.example",
        "http://user@minio.storage:9000",
        "http://minio.storage:9001",
        "http://minio.storage:9000/other-path",
    ):
        assert not endpoint_allowed(bad, ours), bad


def test_storage_violations_name_the_field() -> None:
    (found,) = storage_violations(spec(storage={"endpoint": "http://127.0.0.1:1"}), settings())
    assert found.startswith("spec.storage.endpoint 'http://127.0.0.1:1' is not allowed")
    local = spec(input={"uri": "file:///etc/"}, output={"uri": "file:///tmp/out/"})
    found_all = storage_violations(local, settings())
    assert [f.split(" ")[0] for f in found_all] == ["spec.input.uri", "spec.output.uri"]
    assert storage_violations(local, settings(allow_file_uris=True)) == []
