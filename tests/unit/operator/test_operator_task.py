"""Task documents and quality presets, checked against the worker's own contract (data/task.schema.json)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from recon_operator.presets import deep_merge, preset_table, resolve_quality
from recon_operator.settings import OperatorSettings
from recon_operator.spec import Quality, ReconstructionJobSpec, ResourceCoordinates
from recon_operator.task import build_task

OWNER = ResourceCoordinates(namespace="ns", name="bunny", uid="uid-1")


@pytest.fixture(scope="module")
def validator() -> jsonschema.Validator:
    schema = json.loads(resources.files("recon_operator").joinpath("data/task.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def task(settings: OperatorSettings | None = None, attempt: int = 1, **spec: Any) -> dict[str, Any]:
    raw = {"input": {"uri": "s3://in/cap/"}, "output": {"uri": "s3://out/res/"}, **spec}
    return build_task(
        ReconstructionJobSpec.model_validate(raw), OWNER, attempt, settings or OperatorSettings.model_validate({})
    )


SPECS: list[dict[str, Any]] = [
    {},
    {"quality": {"preset": "draft"}},
    {"quality": {"preset": "high", "refinement": {"iterations": 0, "textureSize": 4096}}},
    {"quality": {"preset": "standard", "export": {"formats": ["ply"], "targetFaces": 500}}},
    {"quality": {"reconstruction": {"resolution": 32}}},
    {"gates": {"minPSNR": 25.5, "minMaskIoU": 0.9, "requireWatertight": False, "enforce": True}},
    {"storage": {"endpoint": "http://minio:9000", "region": "eu-west-1", "credentialsSecret": "c"}},
    {"resources": {"gpus": 0, "minGpuMemoryGiB": 0}},
    {"input": {"uri": "file:///data/cap/", "transformsFile": "transforms_train.json"}, "output": {"uri": "file:///o/"}},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: json.dumps(s)[:60])
def test_every_task_document_satisfies_the_worker_schema(validator: jsonschema.Validator, spec: dict[str, Any]) -> None:
    validator.validate(task(**spec))


def test_attempt_and_coordinates(validator: jsonschema.Validator) -> None:
    doc = task(attempt=3)
    validator.validate(doc)
    assert doc["job"] == {"namespace": "ns", "name": "bunny", "uid": "uid-1", "attempt": 3}


def test_operator_endpoint_is_used_when_the_spec_names_none() -> None:
    settings = OperatorSettings.model_validate({"s3_endpoint": "http://127.0.0.1:9000"})
    assert task(settings)["storage"] == {"endpoint": "http://127.0.0.1:9000"}
    assert task(settings, storage={"endpoint": "http://other:1"})["storage"]["endpoint"] == "http://other:1"


def test_credentials_never_enter_the_document() -> None:
    text = json.dumps(task(storage={"credentialsSecret": "secret-name"}))
    assert "secret-name" not in text and "AWS_" not in text


def test_presets_cover_the_crd_enum() -> None:
    assert set(preset_table()) == {"draft", "standard", "high"}


def test_resolve_quality_overrides_single_settings_and_keeps_the_rest() -> None:
    resolved = resolve_quality(Quality.model_validate({"preset": "high", "refinement": {"iterations": 5}}))
    high = preset_table()["high"]
    assert resolved["preset"] == "high"
    assert resolved["refinement"]["iterations"] == 5
    assert resolved["refinement"]["textureSize"] == high["refinement"]["textureSize"]
    assert resolved["reconstruction"] == high["reconstruction"]


def test_deep_merge_replaces_lists_and_recurses_into_mappings() -> None:
    merged = deep_merge({"a": {"x": 1, "y": [1, 2]}, "b": 2}, {"a": {"y": [3]}, "c": 4})
    assert merged == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 4}


def test_an_override_the_worker_refuses_is_caught_by_the_schema(validator: jsonschema.Validator) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(task(quality={"refinement": {"unknownKnob": 1}}))
