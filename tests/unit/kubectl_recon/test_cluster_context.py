"""kubectl-recon reads the kubeconfig like kubectl and names what is wrong with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recon_kubectl.cli import main
from recon_kubectl.cluster import Cluster, ClusterError


def write_kubeconfig(path: Path, namespace: str | None = None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "dev", "context": context}],
                "current-context": "dev",
            }
        )
    )
    return path


def test_namespace_comes_from_the_flag_then_the_context_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "a", namespace="team-a")))
    assert Cluster.connect().namespace == "team-a"
    assert Cluster.connect(namespace="other").namespace == "other"
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "b")))
    assert Cluster.connect().namespace == "default"


def test_an_unknown_context_is_named_with_the_ones_there_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "a")))
    with pytest.raises(ClusterError, match=r"context 'prod' is not in the kubeconfig .* \(contexts: dev\)"):
        Cluster.connect(context="prod")


def test_an_unreachable_server_exits_1_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "a")))
    assert main(["get", "--context", "dev"]) == 1
    assert "cannot reach the cluster at https://127.0.0.1:1 (context dev)" in capsys.readouterr().err


def test_a_local_folder_that_is_no_capture_exits_2_before_any_cluster_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", str(tmp_path), "--upload-to", "s3://captures/", "--output", "s3://results/x/"]) == 2
    assert "holds no transforms.json or transforms_train.json" in capsys.readouterr().err
