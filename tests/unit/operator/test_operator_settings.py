"""Operator settings from RECON_OPERATOR_* environment variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from recon_operator.settings import OperatorSettings


def test_defaults_suit_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = OperatorSettings.model_validate({})
    assert settings.worker_command == ("recon-worker", "run")
    assert settings.namespaces == ()


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECON_OPERATOR_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("RECON_OPERATOR_WORKER_COMMAND", "python -c 'print(1)'")
    monkeypatch.setenv("RECON_OPERATOR_WORKER_IMAGE", "reg/w:2")
    monkeypatch.setenv("RECON_OPERATOR_S3_ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("RECON_OPERATOR_RECONCILE_INTERVAL_S", "2.5")
    settings = OperatorSettings()
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.worker_command == ("python", "-c", "print(1)")
    assert settings.worker_image == "reg/w:2"
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.reconcile_interval_s == 2.5


def test_worker_command_as_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECON_OPERATOR_WORKER_COMMAND", '["sh", "-c", "exit 3"]')
    assert OperatorSettings().worker_command == ("sh", "-c", "exit 3")


def test_invalid_values_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECON_OPERATOR_PREFLIGHT_RETRIES", "0")
    with pytest.raises(ValidationError, match="preflight_retries"):
        OperatorSettings()


def test_policy_settings_are_strict_by_default_and_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = OperatorSettings.model_validate({})
    assert defaults.allowed_toleration_keys == ("nvidia.com/gpu",)
    assert defaults.allowed_image_prefixes == () and defaults.allowed_endpoints == ()
    assert defaults.allow_file_uris is False and defaults.allow_aws_endpoints is True
    monkeypatch.setenv("RECON_OPERATOR_ALLOWED_PRIORITY_CLASSES", '["batch-*", "system-cluster-critical"]')
    monkeypatch.setenv("RECON_OPERATOR_ALLOWED_ENDPOINTS", '["http://minio:9000"]')
    monkeypatch.setenv("RECON_OPERATOR_ALLOW_FILE_URIS", "true")
    settings = OperatorSettings()
    assert settings.allowed_priority_classes == ("batch-*", "system-cluster-critical")
    assert settings.allowed_endpoints == ("http://minio:9000",)
    assert settings.allow_file_uris is True
