"""What the benchmark tools share when they write their results into the docs.

Each tool keeps its records in a JSON list under docs/benchmarks/ and owns one `## ...` section of
docs/benchmarks.md, which it rewrites whole; the other sections stay as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def gather_records(records: Path, results: list[str], keep: bool) -> list[dict[str, Any]]:
    """The records to publish: those already in `records` when `keep`, then each results file; written back."""
    gathered: list[dict[str, Any]] = json.loads(records.read_text()) if keep and records.exists() else []
    gathered += [json.loads(Path(p).read_text()) for p in results]
    records.parent.mkdir(parents=True, exist_ok=True)
    records.write_text(json.dumps(gathered, indent=1) + "\n")
    return gathered


def replace_section(markdown: Path, section: str, lines: list[str]) -> None:
    """Rewrite `section` (a `## ` heading, the first of `lines`) of `markdown`, or add it at the end."""
    text = markdown.read_text() if markdown.exists() else "# Benchmarks\n"
    head, found, rest = text.partition(section)
    tail = rest[rest.find("\n## ") :] if found and "\n## " in rest else ""
    markdown.write_text(head.rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n" + tail)
