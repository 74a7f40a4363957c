"""``minictl describe``: a readable ``Key:  value`` dump of an object and its events.

Follows kubectl's generic describer: Name, Namespace, Labels, Annotations first, then API Version,
Kind, the rest of Metadata, Spec, Status (and any other top-level field), camelCase keys written
as words ("Creation Timestamp", "Pod IP"), and finally an ``Events:`` table.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from minictl.printers import age, aligned, cell_text, parse_time

_HIDDEN_METADATA = ("name", "namespace", "labels", "annotations", "managedFields")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def words(key: str) -> str:
    """``creationTimestamp`` → ``Creation Timestamp``; ``podIP`` → ``Pod IP``."""
    if key in _ACRONYMS:
        return _ACRONYMS[key]
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key)
    return spaced[:1].upper() + spaced[1:]


_ACRONYMS = {"uid": "UID", "dnsPolicy": "DNS Policy", "url": "URL", "ip": "IP"}


def describe(obj: dict[str, Any], events: list[dict[str, Any]], now: dt.datetime | None = None) -> str:
    meta = obj.get("metadata") or {}
    lines: list[str] = []
    head: list[tuple[str, list[str]]] = [("Name:", [str(meta.get("name", ""))])]
    if meta.get("namespace"):
        head.append(("Namespace:", [str(meta["namespace"])]))
    head.append(("Labels:", _pairs(meta.get("labels"))))
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != _LAST_APPLIED}
    head.append(("Annotations:", _pairs(annotations)))
    head.append(("API Version:", [str(obj.get("apiVersion", ""))]))
    head.append(("Kind:", [str(obj.get("kind", ""))]))
    width = max(len(k) for k, _ in head) + 2
    for key, values in head:
        lines.append(key.ljust(width) + values[0])
        lines.extend(" " * width + v for v in values[1:])
    rest_meta = {k: v for k, v in meta.items() if k not in _HIDDEN_METADATA}
    if rest_meta:
        lines.append("Metadata:")
        _dump(rest_meta, 1, lines)
    for key in obj:
        if key in ("apiVersion", "kind", "metadata"):
            continue
        value = obj[key]
        if isinstance(value, (dict, list)) and value:
            lines.append(f"{words(key)}:")
            _dump(value, 1, lines)
        else:
            lines.append(f"{words(key)}:  {_scalar(value)}")
    lines.extend(events_lines(events, now))
    return "\n".join(lines)


def _pairs(mapping: Any) -> list[str]:
    if not isinstance(mapping, dict) or not mapping:
        return ["<none>"]
    return [f"{k}={v}" for k, v in sorted(mapping.items())]


def _scalar(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "<none>" if value is None else ""
    return cell_text(value)


def _dump(value: Any, level: int, lines: list[str]) -> None:
    pad = "  " * level
    if isinstance(value, dict):
        scalars = [k for k, v in value.items() if not (isinstance(v, (dict, list)) and v)]
        width = max((len(words(k)) for k in scalars), default=0) + 3
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{words(k)}:")
                _dump(v, level + 1, lines)
            else:
                lines.append(f"{pad}{(words(k) + ':').ljust(width)}{_scalar(v)}".rstrip())
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                _dump(item, level, lines)
            else:
                lines.append(f"{pad}{_scalar(item)}")


def events_lines(events: list[dict[str, Any]], now: dt.datetime | None = None) -> list[str]:
    """kubectl's ``Events:`` block (``Events:  <none>`` when there are none), oldest first."""
    if not events:
        return ["Events:  <none>"]
    rows = [["Type", "Reason", "Age", "From", "Message"], ["----", "------", "----", "----", "-------"]]
    for ev in sorted(events, key=_event_time):
        first, last = _event_time(ev, first=True), _event_time(ev)
        count = int(ev.get("count") or (ev.get("series") or {}).get("count") or 1)
        when = age(last.isoformat(), now)
        if count > 1:
            when = f"{when} (x{count} over {age(first.isoformat(), now)})"
        source = ev.get("source") or {}
        origin = source.get("component") or ev.get("reportingComponent") or ev.get("reportingController") or ""
        if source.get("host"):
            origin = f"{origin}, {source['host']}" if origin else str(source["host"])
        rows.append([str(ev.get("type") or ""), str(ev.get("reason") or ""), when, origin,
                     " ".join(str(ev.get("message") or "").split())])
    return ["Events:", *("  " + line for line in aligned(rows, gap="  "))]


def _event_time(ev: dict[str, Any], first: bool = False) -> dt.datetime:
    order = ("firstTimestamp", "eventTime", "lastTimestamp") if first else ("lastTimestamp", "eventTime",
                                                                            "firstTimestamp")
    for key in (*order, "creationTimestamp"):
        value = ev.get(key) if key != "creationTimestamp" else (ev.get("metadata") or {}).get(key)
        t = parse_time(value)
        if t is not None:
            return t
    return dt.datetime.fromtimestamp(0, dt.UTC)
