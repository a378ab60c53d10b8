"""The operator's login (Kopf's `login_via_client`) with the kubeconfigs it meets, in a fresh process each
time: the kubernetes client reads $KUBECONFIG when it is imported, as in the operator's own process."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
LOGIN = """
import json, logging, kopf
from recon_operator.handlers import login
for _ in range(int(__import__("sys").argv[1])):
    info = login(logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
    ca = open(info.ca_path).read()  # a temporary file of the client's, gone when this process ends
    print(json.dumps({"server": info.server, "scheme": info.scheme, "token": info.token, "ca": ca}))
    input()  # the test rewrites the token file between logins
"""


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


def logins(config: Path, count: int = 1, between: list[str] | None = None, token: Path | None = None) -> list[Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
    env["KUBECONFIG"] = str(config)
    process = subprocess.Popen(
        [sys.executable, "-c", LOGIN, str(count)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    found = []
    for index in range(count):
        found.append(json.loads(process.stdout.readline()))
        if between and token is not None and index < len(between):
            token.write_text(between[index])
        process.stdin.write("\n")
        process.stdin.flush()
    assert process.wait(timeout=60) == 0
    return found


def test_a_token_file_user_logs_in_with_the_files_token_and_rereads_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first.token")  # as the kubelet and the node agent write it: no newline
    config = kubeconfig(tmp_path / "config", {"tokenFile": str(token)})
    first, second = logins(config, count=2, between=["second.token"], token=token)
    assert (first["server"], first["scheme"], first["token"]) == ("https://127.0.0.1:6443", "Bearer", "first.token")
    assert first["ca"].startswith("-----BEGIN CERTIFICATE-----")
    assert second["token"] == "second.token"  # a refreshed (projected) token is used on the next login


def test_an_inline_token_user_logs_in_too(tmp_path: Path) -> None:
    (info,) = logins(kubeconfig(tmp_path / "config", {"token": "inline.token"}))
    assert (info["scheme"], info["token"]) == ("Bearer", "inline.token")


def test_the_operator_has_no_login_code_of_its_own() -> None:
    """login.py used private APIs of the kubernetes client; Kopf's public login replaces it."""
    import recon_operator

    package = Path(recon_operator.__file__).parent
    assert not (package / "login.py").exists()
    assert "_get_kube_config_loader" not in "".join(p.read_text() for p in package.glob("*.py"))
