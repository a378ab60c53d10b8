"""The task document and quality presets: the contract between operator and worker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recon_worker.presets import PRESETS, QualitySettings, resolve_quality
from recon_worker.task import TASK_API_VERSION, TaskError, load_task
from tests.crd import REPO, openapi_schema


def task(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "apiVersion": TASK_API_VERSION,
        "kind": "ReconstructionTask",
        "job": {"namespace": "ns", "name": "spot", "uid": "1234", "attempt": 1},
        "input": {"uri": "s3://captures/spot/"},
        "output": {"uri": "s3://meshes/spot/"},
    }
    doc.update(changes)
    return doc


def test_minimal_task_gets_defaults() -> None:
    doc = load_task(json.dumps(task()))
    assert doc.input.transforms_file == "transforms.json"
    assert doc.quality == QualitySettings()
    assert doc.compute.gpus == 1 and doc.compute.min_gpu_memory_gib == 12


def test_unknown_version_is_refused() -> None:
    with pytest.raises(TaskError, match=r"unsupported task apiVersion 'recon.dev/v2'"):
        load_task(json.dumps(task(apiVersion="recon.dev/v2")))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"input": {"uri": "http://x/y"}}, "input.uri"),
        ({"output": {"uri": "s3://captures/spot/out/"}}, "must not be, or lie inside"),
        ({"quality": {"preset": "ultra"}}, "quality.preset"),
        ({"compute": {"gpus": -1}}, "compute.gpus"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_task_names_the_field(changes: dict[str, object], words: str) -> None:
    with pytest.raises(TaskError, match="invalid task document") as info:
        load_task(json.dumps(task(**changes)))
    assert words in str(info.value)


# Issue 11 point 4: URIs that a string test would call different, but that name the input's place.
NON_CANONICAL_URIS = [
    ("s3://captures//spot/out/", "an empty segment"),
    ("s3://captures/spot#/", "'#' or '?'"),
    ("s3://captures/spot?/", "'#' or '?'"),
    ("s3://captures/spot/./out/", "'.' or '..'"),
    ("s3://captures/other/../spot/out/", "'.' or '..'"),
    ("s3://captures/spot/\x1b[2J/", "control character"),
    ("file:///data//spot/out/", "an empty segment"),
    ("file:///data/spot#/", "'#' or '?'"),
    ("file:///data/spot/%2e%2e/spot/out/", "'.' or '..'"),
]


@pytest.mark.parametrize(("uri", "words"), NON_CANONICAL_URIS)
def test_non_canonical_output_uris_are_refused(uri: str, words: str) -> None:
    base = "file:///data/spot/" if uri.startswith("file") else "s3://captures/spot/"
    with pytest.raises(TaskError, match="invalid task document") as info:
        load_task(json.dumps(task(input={"uri": base}, output={"uri": uri})))
    assert "output.uri" in str(info.value) and words in str(info.value)
    assert "\x1b[" not in str(info.value)  # escaped when shown


def test_percent_encoded_file_uris_name_the_decoded_path() -> None:
    with pytest.raises(TaskError, match="must not be, or lie inside"):
        load_task(json.dumps(task(input={"uri": "file:///data/my%20spot/"}, output={"uri": "file:///data/my spot/o/"})))


def test_task_that_is_not_json() -> None:
    with pytest.raises(TaskError, match="not valid JSON"):
        load_task("{")


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_settings(name: str) -> None:
    assert resolve_quality(name).preset == name  # type: ignore[arg-type]


def test_overrides_replace_single_settings() -> None:
    settings = resolve_quality("draft", {"refinement": {"iterations": 7}, "export": {"formats": ["ply"]}})
    assert settings.refinement.iterations == 7
    assert settings.refinement.render_resolution == PRESETS["draft"]["refinement"]["renderResolution"]
    assert settings.export.formats == ("ply",)


def test_crd_quality_overrides_are_settings_fields() -> None:
    # Every override the CRD accepts must mean something to the worker's settings model.
    quality = openapi_schema()["properties"]["spec"]["properties"]["quality"]["properties"]
    for group in ("reconstruction", "refinement", "export"):
        for name in quality[group]["properties"]:
            resolve_quality("standard", {group: {name: PRESETS["standard"][group][name]}})


def test_presets_are_ordered_by_cost() -> None:
    its = [PRESETS[p]["refinement"]["iterations"] for p in ("draft", "standard", "high")]
    assert its == sorted(its)


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(REPO / "tools" / "generate.py"), "--check"], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_operator_and_worker_resolve_quality_alike(preset: str) -> None:
    # The operator cannot import the worker, so it merges overrides onto its generated copy of the presets
    # with its own few lines; both must give the settings the worker would have chosen.
    from recon_operator.presets import resolve_quality as operator_resolve
    from recon_operator.spec import Quality

    overrides = {"reconstruction": {"resolution": 48}, "refinement": {"iterations": 7}, "export": {"formats": ["ply"]}}
    by_operator = QualitySettings.model_validate(operator_resolve(Quality(preset=preset, **overrides)))
    assert by_operator == resolve_quality(preset, overrides)  # type: ignore[arg-type]
