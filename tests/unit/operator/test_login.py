"""Login with a `tokenFile` kubeconfig user (the local node agent's pods), which Kopf's own reader ignores."""

from __future__ import annotations

import base64
from pathlib import Path

import kopf
import pytest
import yaml

from recon_operator.login import login_with_token_file

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()


def kubeconfig(path: Path, user: dict[str, str]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": CA}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_token_file_user_logs_in_with_the_files_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("abc.def.ghi\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "config", {"tokenFile": str(tmp_path / "token")})))
    info = login_with_token_file()
    assert info is not None
    assert info.server == "https://127.0.0.1:6443"
    assert info.scheme == "Bearer"
    assert info.token == "abc.def.ghi"
    assert info.ca_path is not None and Path(info.ca_path).read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_a_refreshed_token_file_is_read_on_the_next_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "config", {"tokenFile": str(token)})))
    assert (info := login_with_token_file()) is not None and info.token == "first"
    token.write_text("second")
    assert (info := login_with_token_file()) is not None and info.token == "second"


def test_other_kubeconfigs_are_left_to_kopf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "config", {"token": "inline"})))
    assert login_with_token_file() is None
    monkeypatch.delenv("KUBECONFIG")
    assert login_with_token_file() is None


def test_an_empty_token_file_is_a_login_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "config", {"tokenFile": str(tmp_path / "token")})))
    with pytest.raises(kopf.LoginError, match="token"):
        login_with_token_file()
