"""Quality presets: `spec.quality` (preset + overrides) resolved into the worker's full settings.

The preset values are the worker's own table, copied into `data/presets.json` by `tools/generate.py`
(the operator must not import the worker), so the two never drift apart.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from recon_operator.spec import Quality


@cache
def preset_table() -> dict[str, dict[str, Any]]:
    """`{"draft": {...}, "standard": {...}, "high": {...}}`, nested camelCase as in `spec.quality`."""
    text = resources.files("recon_operator").joinpath("data/presets.json").read_text(encoding="utf-8")
    table: dict[str, dict[str, Any]] = json.loads(text)
    return table


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied recursively; lists and scalars replace (a formats list is a value)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_quality(quality: Quality) -> dict[str, Any]:
    """Full `QualitySettings` of the task document: `{preset, reconstruction, refinement, export}`."""
    table = preset_table()
    if quality.preset not in table:
        raise ValueError(f"spec.quality.preset {quality.preset!r} is not one of {', '.join(sorted(table))}")
    overrides = {"reconstruction": quality.reconstruction, "refinement": quality.refinement, "export": quality.export}
    resolved = deep_merge(table[quality.preset], overrides)
    return {"preset": quality.preset, **resolved}
