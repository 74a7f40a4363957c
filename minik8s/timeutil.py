"""Timestamps in the Kubernetes wire format (RFC 3339, UTC, second precision) and kubectl's ages."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(t: datetime | None = None) -> str:
    """``2026-11-21T23:59:59Z`` (Kubernetes' ``metav1.Time``)."""
    return (t or now()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime | None:
    """Parse a Kubernetes timestamp; None when it is missing or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """Age as kubectl prints it (``5s``, ``3m20s``, ``5h3m``, ``4d``, ``2y10d``)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d" if h % 24 == 0 else f"{h // 24}d{h % 24}h"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        y = h // (24 * 365)
        d = (h % (24 * 365)) // 24
        return f"{y}y" if d == 0 else f"{y}y{d}d"
    return f"{h // (24 * 365)}y"


def age(timestamp: str | None) -> str:
    t = parse_rfc3339(timestamp or "")
    return "<unknown>" if t is None else human_duration((now() - t).total_seconds())
