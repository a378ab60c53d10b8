"""The Krew manifest template and the archive script agree on platforms and placeholders."""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO

KREW = REPO / "kubectl-recon" / "krew"


def test_every_platform_of_the_manifest_is_built_and_filled_by_the_script() -> None:
    manifest = yaml.safe_load((KREW / "recon.yaml").read_text())
    assert manifest["kind"] == "Plugin" and manifest["metadata"]["name"] == "recon"
    script = (KREW / "build-archive.sh").read_text()
    built = set(re.findall(r"^\s+([a-z]+-[a-z0-9]+)\) tags=", script, re.MULTILINE))
    platforms = set()
    for entry in manifest["spec"]["platforms"]:
        labels = entry["selector"]["matchLabels"]
        platform = f"{labels['os']}-{labels['arch']}"
        platforms.add(platform)
        assert entry["uri"] == f"{{{{URI_{platform}}}}}" and entry["sha256"] == f"{{{{SHA256_{platform}}}}}"
        assert entry["bin"] == "kubectl-recon"
    assert platforms == built == {"linux-amd64", "linux-arm64", "darwin-amd64", "darwin-arm64"}
    assert manifest["spec"]["version"] == "{{VERSION}}"
