"""The published result as the operator accepts it: manifest.json parsed, and every listed file checked.

Succeeded is never taken from a status field: it needs the Job's own completion and a manifest that
lists files which exist at the listed sizes (the operator does not download them to hash them; the
sha256 of each must be a well-formed digest). `status.outputs` is derived from that manifest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ListedFile:
    name: str  # relative to the output prefix
    size: int
    sha256: str


def parse_manifest(data: bytes) -> list[ListedFile]:
    """The files a manifest lists; ValueError naming the first defect."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise ValueError("has no list of files")
    files = []
    for index, entry in enumerate(manifest["files"]):
        where = f"files[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not an object")
        name, size, digest = entry.get("name"), entry.get("size"), entry.get("sha256")
        if not isinstance(name, str) or not name or name.startswith("/") or name == "manifest.json":
            raise ValueError(f"{where}.name {name!r} is not a file name inside the output prefix")
        if any(part in ("", ".", "..") for part in name.split("/")) or any(ord(c) < 32 for c in name):
            raise ValueError(f"{where}.name {name!r} is not a file name inside the output prefix")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"{where} ({name}): size {size!r} is not a byte count")
        if not isinstance(digest, str) or not SHA256.match(digest):
            raise ValueError(f"{where} ({name}): sha256 {digest!r} is not a hex SHA-256 digest")
        files.append(ListedFile(name, size, digest))
    return files


def listing_problem(files: list[ListedFile], found: Mapping[str, int | None]) -> str | None:
    """Why the published files disagree with the manifest (`found`: name -> size, None when absent)."""
    for listed in files:
        size = found.get(listed.name)
        if size is None:
            return f"lists {listed.name}, which does not exist"
        if size != listed.size:
            return f"lists {listed.name} with {listed.size} bytes, but it has {size}"
    return None


def outputs_status(manifest_uri: str, prefix_uri: str, files: list[ListedFile]) -> dict[str, Any]:
    """status.outputs for a verified manifest."""
    base = prefix_uri.rstrip("/") + "/"
    return {
        "manifest": manifest_uri,
        "files": [{"name": f.name, "uri": base + f.name, "size": f.size, "sha256": f.sha256} for f in files],
    }
