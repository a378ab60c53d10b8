"""kubectl-recon's pure decisions: the manifest `submit` creates, `--set`, names, retries, exit codes."""

from __future__ import annotations

import json

import pytest

from recon_kubectl.resource import (
    RETRY_OF_ANNOTATION,
    UsageError,
    apply_settings,
    check_name,
    exit_code_of,
    job_name_for,
    parse_setting,
    reconstruction_job,
    retry_of,
)
from tests.crd import validate


def test_set_values_are_json_else_strings() -> None:
    assert parse_setting("quality.refinement.iterations=100") == (["quality", "refinement", "iterations"], 100)
    assert parse_setting('quality.export.formats=["glb"]') == (["quality", "export", "formats"], ["glb"])
    assert parse_setting("resources.memory=8Gi") == (["resources", "memory"], "8Gi")
    for bad in ("novalue", "=5", "a..b=1"):
        with pytest.raises(UsageError, match="--set expects"):
            parse_setting(bad)


def test_set_refuses_to_descend_into_a_scalar() -> None:
    with pytest.raises(UsageError, match=r"spec\.resources is not an object"):
        apply_settings({"resources": 1}, [(["resources", "gpus"], 0)])


@pytest.mark.parametrize(
    ("source", "name"),
    [("/home/me/captures/My Spot/", "my-spot"), ("s3://captures/spot/", "spot"), ("/x/2024_05", "c-2024-05")],
)
def test_names_come_from_the_folder(source: str, name: str) -> None:
    assert job_name_for(source) == name
    check_name(name)


def test_a_folder_name_with_no_usable_characters_still_gives_a_name() -> None:
    name = job_name_for("/tmp/___/")
    assert name.startswith("capture-") and check_name(name)


def test_bad_names_are_refused_with_the_rule() -> None:
    with pytest.raises(UsageError, match="lower-case letters"):
        check_name("Spot")


def test_submitted_manifest_is_valid_against_the_crd() -> None:
    manifest = reconstruction_job(
        "spot",
        "s3://captures/spot/",
        "s3://results/spot/",
        preset="draft",
        transforms_file="transforms_train.json",
        credentials_secret="s3",
        settings=[(["quality", "refinement", "iterations"], 5), (["resources", "gpus"], 0)],
    )
    assert manifest["spec"]["quality"] == {"preset": "draft", "refinement": {"iterations": 5}}
    assert manifest["spec"]["storage"] == {"credentialsSecret": "s3"}
    assert validate(manifest) == []


def test_retry_keeps_name_and_spec_and_clears_suspend_and_cancel() -> None:
    old = {
        "metadata": {
            "name": "spot",
            "uid": "u-1",
            "labels": {"team": "a"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "recon.dev/operator-status": "{}",
                "note": "x",
            },
        },
        "spec": {"input": {"uri": "s3://c/spot/"}, "output": {"uri": "s3://r/spot/"}, "suspend": True, "cancel": True},
        "status": {"phase": "Cancelled"},
    }
    new = retry_of(old)
    assert new["metadata"] == {
        "name": "spot",
        "labels": {"team": "a"},
        "annotations": {"note": "x", RETRY_OF_ANNOTATION: "u-1"},
    }
    assert new["spec"] == {"input": {"uri": "s3://c/spot/"}, "output": {"uri": "s3://r/spot/"}}
    assert "status" not in new
    json.dumps(new)


@pytest.mark.parametrize(
    ("phase", "reason", "code"),
    [("Succeeded", "Succeeded", 0), ("Failed", "InputsInvalid", 2), ("Failed", "OOMKilled", 1), ("Cancelled", "", 1)],
)
def test_exit_codes_scripts_can_use(phase: str, reason: str, code: int) -> None:
    assert exit_code_of(phase, reason) == code
