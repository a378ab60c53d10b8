"""What `kubectl recon get` prints: the columns of `kubectl get rj`, and a job's stage timings and gates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

COLUMNS = ("NAME", "PHASE", "PROGRESS", "STAGE", "PSNR", "AGE")


def age(created: str | None, now: datetime | None = None) -> str:
    """kubectl's short ages: 45s, 12m, 3h, 5d."""
    if not created:
        return "<unknown>"
    then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def row(resource: Mapping[str, Any], now: datetime | None = None) -> list[str]:
    status = resource.get("status") or {}
    psnr = (status.get("metrics") or {}).get("psnr")
    return [
        resource["metadata"]["name"],
        str(status.get("phase") or ""),
        "" if status.get("progress") is None else str(status["progress"]),
        str(status.get("stage") or ""),
        "" if psnr is None else f"{float(psnr):.1f}",
        age(resource["metadata"].get("creationTimestamp"), now),
    ]


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str] = COLUMNS) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def details(resource: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> str:
    """Reason, message, stage timings and gate results (the last two from the published manifest)."""
    status = resource.get("status") or {}
    lines = []
    if status.get("reason") or status.get("message"):
        lines.append(f"reason:  {status.get('reason', '')}: {status.get('message', '')}".rstrip(": "))
    if manifest is None:
        lines.append("outputs: not published yet")
        return "\n".join(lines)
    seconds = manifest.get("stageSeconds") or {}
    if seconds:
        total = sum(float(v) for v in seconds.values())
        timings = ", ".join(f"{stage} {float(s):.1f}s" for stage, s in seconds.items())
        lines.append(f"stages:  {timings} (total {total:.1f}s)")
    gates = (manifest.get("metrics") or {}).get("gates") or {}
    if gates:
        verdict = "passed" if gates.get("passed", True) else "FAILED"
        failures = "; ".join(map(str, gates.get("failures") or []))
        lines.append(f"gates:   {verdict}" + (f" ({failures})" if failures else ""))
    metrics = manifest.get("metrics") or {}
    shown = [(k, metrics[k]) for k in ("psnr", "ssim", "maskIoU", "chamferL1", "fScore", "faces") if k in metrics]
    if shown:
        lines.append("metrics: " + ", ".join(f"{k} {_number(v)}" for k, v in shown))
    lines.append(f"files:   {len(manifest.get('files') or [])} published")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
