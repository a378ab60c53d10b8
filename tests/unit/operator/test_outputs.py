"""outputs.py: what makes a published result acceptable (issue 11 point 3: Succeeded needs a verified manifest)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from recon_operator.outputs import ListedFile, listing_problem, outputs_status, parse_manifest

DIGEST = "a" * 64


def manifest(*files: dict[str, Any]) -> bytes:
    return json.dumps({"files": list(files)}).encode()


def test_a_manifest_lists_its_files() -> None:
    files = parse_manifest(manifest({"name": "mesh.glb", "uri": "s3://o/r/mesh.glb", "size": 3, "sha256": DIGEST}))
    assert files == [ListedFile("mesh.glb", 3, DIGEST)]
    assert listing_problem(files, {"mesh.glb": 3}) is None
    assert outputs_status("s3://o/r/manifest.json", "s3://o/r/", files) == {
        "manifest": "s3://o/r/manifest.json",
        "files": [{"name": "mesh.glb", "uri": "s3://o/r/mesh.glb", "size": 3, "sha256": DIGEST}],
    }


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not json", "is not JSON"),
        (b"[]", "has no list of files"),
        (b'{"files": {}}', "has no list of files"),
        (manifest({"name": "../x", "size": 1, "sha256": DIGEST}), "'../x' is not a file name"),
        (manifest({"name": "/abs", "size": 1, "sha256": DIGEST}), "'/abs' is not a file name"),
        (manifest({"name": "a\nb", "size": 1, "sha256": DIGEST}), "is not a file name"),
        (manifest({"name": "m.glb", "size": -1, "sha256": DIGEST}), "size -1 is not a byte count"),
        (manifest({"name": "m.glb", "size": 1, "sha256": "xyz"}), "sha256 'xyz' is not a hex SHA-256"),
    ],
    ids=["json", "list", "files-map", "dotdot", "absolute", "control", "size", "sha"],
)
def test_defects_are_named(data: bytes, words: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_manifest(data)
    assert words in str(raised.value)


def test_listed_files_must_exist_at_their_size() -> None:
    files = [ListedFile("mesh.glb", 3, DIGEST), ListedFile("report.json", 10, DIGEST)]
    assert listing_problem(files, {"mesh.glb": 3, "report.json": None}) == "lists report.json, which does not exist"
    assert listing_problem(files, {"mesh.glb": 4, "report.json": 10}) == "lists mesh.glb with 3 bytes, but it has 4"
