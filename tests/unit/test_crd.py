"""The ReconstructionJob CRD: structural, documented, and strict about bad documents."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.crd import REPO, load_crd, load_examples, openapi_schema, structural_problems, validate


def minimal() -> dict[str, Any]:
    return {
        "apiVersion": "recon.dev/v1alpha1",
        "kind": "ReconstructionJob",
        "metadata": {"name": "spot"},
        "spec": {"input": {"uri": "s3://captures/spot/"}, "output": {"uri": "s3://meshes/spot/"}},
    }


def with_spec(**changes: Any) -> dict[str, Any]:
    doc = minimal()
    doc["spec"].update(changes)
    return doc


def test_crd_names_and_version() -> None:
    crd = load_crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "reconstructionjobs.recon.dev"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"]) == ("ReconstructionJob", "reconstructionjobs")
    assert set(names["shortNames"]) == {"rj", "recon"}
    assert crd["spec"]["scope"] == "Namespaced"
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_schema_is_structural_and_every_field_is_described() -> None:
    assert structural_problems(openapi_schema()) == []


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in load_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert [n for n, c in columns.items() if not c.get("priority")] == ["Phase", "Progress", "Stage", "PSNR", "Age"]
    assert [n for n, c in columns.items() if c.get("priority") == 1] == ["Reason", "Message"]
    # A number column prints every digit (30.061671654310217): PSNR shows the worker's one-decimal string.
    assert columns["PSNR"]["jsonPath"] == ".status.metrics.psnrText" and columns["PSNR"]["type"] == "string"


def test_every_status_field_the_parts_write_is_declared() -> None:
    status = openapi_schema()["properties"]["status"]["properties"]
    operator_fields = {"phase", "conditions", "reason", "message", "attempts", "jobName", "startTime"}
    worker_fields = {"progress", "stage", "metrics", "outputs", "worker"}
    assert operator_fields | worker_fields | {"completionTime", "observedGeneration"} <= set(status)
    assert set(status["metrics"]["properties"]) >= {
        "psnr", "ssim", "maskIoU", "chamferL1", "fScore", "faces", "vertices", "watertight", "durationSeconds",
        "gpuSeconds",
    }  # fmt: skip
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_examples_exist() -> None:
    assert {"minimal.yaml", "full.yaml", "minio.yaml"} <= set(load_examples())


@pytest.mark.parametrize("name", sorted(load_examples()))
def test_example_is_valid(name: str) -> None:
    for doc in load_examples()[name]:
        assert validate(doc) == [], name


def test_full_example_sets_every_spec_field() -> None:
    def paths(node: dict[str, Any], prefix: str) -> set[str]:
        out = {prefix}
        for key, child in node.get("properties", {}).items():
            if not child.get("x-kubernetes-preserve-unknown-fields"):
                out |= paths(child.get("items", child), f"{prefix}.{key}")
        return out

    def doc_paths(value: Any, prefix: str) -> set[str]:
        out = {prefix}
        if isinstance(value, dict):
            for key, child in value.items():
                out |= doc_paths(child, f"{prefix}.{key}")
        elif isinstance(value, list):
            for item in value:
                out |= doc_paths(item, prefix)
        return out

    [full] = load_examples()["full.yaml"]
    declared = paths(openapi_schema()["properties"]["spec"], "spec")
    assert declared - doc_paths(full["spec"], "spec") == set()


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        ({"output": {"uri": "s3://meshes/x/"}}, "spec", "'input' is a required property"),
        ({"input": {"uri": "http://captures/x/"}, "output": {"uri": "s3://meshes/x/"}}, "spec.input.uri", "s3://"),
        ({"input": {"uri": "s3://captures/x/"}, "output": {"uri": "ftp://meshes/x/"}}, "spec.output.uri", "s3://"),
        ({"input": {"uri": "s3://a/x/"}, "output": {"uri": "s3://a/x/"}}, "spec", "must differ"),
        ({"input": {"uri": "s3://a/x/"}, "output": {"uri": "s3://a/x/out/"}}, "spec", "inside"),
        ({"input": {"uri": "s3://A_B/x/"}, "output": {"uri": "s3://m/x/"}}, "spec.input.uri", "bucket"),
    ],
    ids=["missing-input", "input-scheme", "output-scheme", "same-uri", "output-inside-input", "bad-bucket"],
)
def test_invalid_uris_are_rejected_naming_the_field(document: dict[str, Any], field: str, words: str) -> None:
    doc = minimal()
    doc["spec"] = document
    errors = validate(doc)
    assert any(e.startswith(field) and words in e for e in errors), errors


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"resources": {"gpus": -1}}, "spec.resources.gpus"),
        ({"resources": {"gpus": 9}}, "spec.resources.gpus"),
        ({"quality": {"preset": "ultra"}}, "spec.quality.preset"),
        ({"quality": {"refinement": {"textureSize": 1000}}}, "spec.quality.refinement.textureSize"),
        ({"quality": {"export": {"formats": ["fbx"]}}}, "spec.quality.export.formats.0"),
        ({"gates": {"minMaskIoU": 1.5}}, "spec.gates.minMaskIoU"),
        ({"backoffLimit": -1}, "spec.backoffLimit"),
        ({"activeDeadlineSeconds": 10}, "spec.activeDeadlineSeconds"),
        ({"resources": {"memory": "lots"}}, "spec.resources.memory"),
        ({"storage": {"endpoint": "minio:9000"}}, "spec.storage.endpoint"),
        ({"storage": {"accessKey": "AKIA..."}}, "spec.storage"),
        ({"scheduling": {"tolerations": [{"operator": "Maybe"}]}}, "spec.scheduling.tolerations.0.operator"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_out_of_bounds_values_are_rejected_naming_the_field(changes: dict[str, Any], field: str) -> None:
    errors = validate(with_spec(**changes))
    assert any(e.startswith(field + ":") for e in errors), errors


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"resources": {"gpuResourceName": "memory"}}, "spec.resources.gpuResourceName", "does not match"),
        ({"resources": {"gpuResourceName": "kubernetes.io/x"}}, "spec.resources.gpuResourceName", "extended"),
        (
            {"scheduling": {"tolerations": [{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]}},
            "spec.scheduling.tolerations.0",
            "NoExecute",
        ),
        ({"scheduling": {"tolerations": [{"operator": "Exists", "value": "x"}]}}, "spec.scheduling.tolerations.0", ""),
        ({"scheduling": {"tolerations": [{"operator": "Equal", "value": "x"}]}}, "spec.scheduling.tolerations.0", ""),
        ({"scheduling": {"nodeSelector": {"bad key!": "x"}}}, "spec.scheduling.nodeSelector", "label keys"),
        ({"scheduling": {"nodeSelector": {"ok/key": "bad value!"}}}, "spec.scheduling.nodeSelector.ok/key", ""),
        ({"scheduling": {"affinity": {"nodeAfinity": {}}}}, "spec.scheduling.affinity", "nodeAfinity"),
    ],
    ids=[
        "gpu-memory",
        "gpu-k8s-domain",
        "toleration-seconds",
        "exists-value",
        "no-key-equal",
        "selector-key",
        "selector-value",
        "affinity-key",
    ],
)
def test_values_the_job_api_refuses_are_refused_at_apply_time(changes: dict[str, Any], field: str, words: str) -> None:
    # Issue 11 point 5: these used to pass the CRD and leave the CR with no status forever.
    errors = validate(with_spec(**changes))
    assert any(e.startswith(field + ":") and words in e for e in errors), errors


def test_scheduling_the_job_api_accepts_passes() -> None:
    scheduling = {
        "nodeSelector": {"kubernetes.io/hostname": "gpu-1", "pool": "a100"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
        ],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
    }
    assert validate(with_spec(scheduling=scheduling, resources={"gpuResourceName": "nvidia.com/mig-3g.40gb"})) == []


def test_storage_without_s3_is_rejected() -> None:
    doc = with_spec(input={"uri": "file:///data/cap/"}, output={"uri": "file:///data/out/"}, storage={"region": "x"})
    assert any("spec.storage applies only to s3://" in e for e in validate(doc))


def test_input_and_output_are_immutable() -> None:
    old = minimal()
    new = copy.deepcopy(old)
    new["spec"]["input"]["uri"] = "s3://captures/other/"
    assert any(e.startswith("spec.input:") and "immutable" in e for e in validate(new, old=old))
    new = copy.deepcopy(old)
    new["spec"]["output"]["uri"] = "s3://meshes/other/"
    assert any(e.startswith("spec.output:") and "immutable" in e for e in validate(new, old=old))
    new = copy.deepcopy(old)
    new["spec"]["suspend"] = True
    assert validate(new, old=old) == []


def test_cancel_cannot_be_undone() -> None:
    old = minimal()
    cancelled = copy.deepcopy(old)
    cancelled["spec"]["cancel"] = True
    assert validate(cancelled, old=old) == []
    undone = copy.deepcopy(cancelled)
    undone["spec"]["cancel"] = False
    assert any(e.startswith("spec.cancel:") and "cannot be undone" in e for e in validate(undone, old=cancelled))


def test_kueue_doc_shows_the_example_files_the_tests_apply() -> None:
    """docs/kueue.md quotes every file of examples/kueue verbatim (tests/integration/test_kueue.py applies them)."""
    doc = (REPO / "docs" / "kueue.md").read_text()
    files = sorted((REPO / "examples" / "kueue").glob("*.yaml"))
    assert files
    for path in files:
        assert f"```yaml\n{path.read_text()}```" in doc, f"docs/kueue.md does not quote {path.name} as it is"


def test_kueue_example_reconstruction_job_is_valid() -> None:
    doc = yaml.safe_load((REPO / "examples" / "kueue" / "reconstruction-job.yaml").read_text())
    assert validate(doc) == []
    assert doc["spec"]["scheduling"]["queueName"] and doc["metadata"]["labels"]["kueue.x-k8s.io/priority-class"]


# Issue 11 point 4: URIs that a string prefix test calls different but that name the input's place.
@pytest.mark.parametrize(
    ("output", "words"),
    [
        ("s3://captures//spot/out/", "without empty ('//') segments"),
        ("s3://captures/spot#/", "'#', '?'"),
        ("s3://captures/spot?/", "'#', '?'"),
        ("s3://captures/spot/\x1b/", "control characters"),
        ("s3://captures/spot/./out/", "'.' or '..' segments"),
        ("s3://captures/x/../spot/out/", "'.' or '..' segments"),
        ("s3://captures/spot/..", "'.' or '..' segments"),
        ("file:///data//spot/out/", "without empty ('//') segments"),
        ("file:///data/spot#/", "'#', '?'"),
        ("file:///data/spot/%2e%2e/x/", "control characters"),
    ],
)
def test_non_canonical_uris_are_rejected(output: str, words: str) -> None:
    base = "file:///data/spot/" if output.startswith("file") else "s3://captures/spot/"
    errors = validate(with_spec(input={"uri": base}, output={"uri": output}))
    assert any(e.startswith("spec.output.uri") and words in e for e in errors), errors


@pytest.mark.parametrize(
    "uri",
    ["s3://captures", "s3://captures/", "s3://captures/a/b", "s3://captures/a/.b/c d/", "file:///", "file:///a/b"],
)
def test_canonical_uris_are_accepted(uri: str) -> None:
    output = "s3://meshes/out/" if uri.startswith("file") else "file:///out/"
    assert validate(with_spec(input={"uri": uri}, output={"uri": output})) == []


@pytest.mark.parametrize(
    ("input_fields", "words"),
    [
        ({"masks": "model"}, "masks model needs spec.input.maskModel"),
        ({"poses": "estimate", "masks": "files"}, "masks files needs a transforms file"),
        ({"poses": "guess"}, "spec.input.poses"),
        ({"maskModel": "models/m.onnx", "masks": "model"}, "spec.input.maskModel"),
        ({"minRegistered": 0}, "spec.input.minRegistered"),
    ],
    ids=["model-without-file", "estimate-with-files", "bad-poses", "relative-model", "zero-share"],
)
def test_capture_form_fields_are_checked(input_fields: dict[str, Any], words: str) -> None:
    doc = minimal()
    doc["spec"]["input"].update(input_fields)
    errors = validate(doc)
    assert any(words in e for e in errors), errors


def test_capture_form_fields_accept_a_photo_folder_with_a_model() -> None:
    doc = minimal()
    doc["spec"]["input"].update(poses="estimate", masks="model", maskModel="/models/matting.onnx")
    assert validate(doc) == []
