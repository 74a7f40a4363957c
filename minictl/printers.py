"""How minictl prints: server-side Tables like kubectl, objects as YAML/JSON/names, ages, errors.

Table layout follows kubectl's tabwriter: upper-case headers, each column padded to its widest
cell, columns separated by three spaces, the last column not padded.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import yaml

from minik8s.api.registry import ResourceType
from minik8s.errors import ApiError, Invalid

COLUMN_GAP = "   "


def resource_label(rt: ResourceType) -> str:
    """kubectl's name for a kind in messages: ``pod``, ``deployment.apps``, ``function.minik8s.io``."""
    return f"{rt.singular}.{rt.group}" if rt.group else rt.singular


def cell_text(value: Any) -> str:
    if value is None:
        return "<none>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(cell_text(v) for v in value) if value else "<none>"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


class TablePrinter:
    """Turns ``meta.k8s.io/v1`` Tables into kubectl's text, one kind at a time.

    ``wide`` shows priority > 0 columns; ``all_namespaces`` adds NAMESPACE first; ``show_labels``
    adds LABELS last; ``name_prefix`` ("pod/") prefixes names when several kinds are printed.
    Widths are remembered from :meth:`lines` so that watch rows printed later line up.
    """

    def __init__(self, table: dict[str, Any], *, wide: bool = False, all_namespaces: bool = False,
                 show_labels: bool = False, name_prefix: str = "", no_headers: bool = False) -> None:
        self.defs: list[dict[str, Any]] = list(table.get("columnDefinitions") or [])
        self.wide, self.all_namespaces, self.show_labels = wide, all_namespaces, show_labels
        self.name_prefix, self.no_headers = name_prefix, no_headers
        self.visible = [i for i, d in enumerate(self.defs) if wide or int(d.get("priority") or 0) == 0]
        name_cols = [i for i, d in enumerate(self.defs) if d.get("format") == "name"]
        self.name_col = name_cols[0] if name_cols else 0
        self.widths: list[int] = []

    def header(self) -> list[str]:
        cols = [str(self.defs[i].get("name", "")).upper() for i in self.visible]
        if self.all_namespaces:
            cols.insert(0, "NAMESPACE")
        if self.show_labels:
            cols.append("LABELS")
        return cols

    def row(self, row: dict[str, Any]) -> list[str]:
        cells = list(row.get("cells") or [])
        out = []
        for i in self.visible:
            text = cell_text(cells[i]) if i < len(cells) else ""
            if i == self.name_col and self.name_prefix:
                text = self.name_prefix + text
            out.append(text)
        meta = (row.get("object") or {}).get("metadata") or {}
        if self.all_namespaces:
            out.insert(0, str(meta.get("namespace") or ""))
        if self.show_labels:
            labels = meta.get("labels") or {}
            out.append(",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>")
        return out

    def lines(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """The header (unless ``no_headers``) and a line per row, aligned."""
        grid = [] if self.no_headers else [self.header()]
        grid.extend(self.row(r) for r in rows)
        width = max((len(g) for g in grid), default=0)
        self.widths = [max(len(g[c]) for g in grid if c < len(g)) for c in range(width)]
        return [self._join(g) for g in grid]

    def watch_line(self, row: dict[str, Any]) -> str:
        """One row for ``get -w``, padded to the widths of the first table printed."""
        cells = self.row(row)
        if len(self.widths) < len(cells):
            self.widths = [max(len(h), len(c)) for h, c in zip(self.header(), cells, strict=False)]
        return self._join(cells)

    def _join(self, cells: list[str]) -> str:
        padded = [c.ljust(self.widths[i]) if i < len(self.widths) else c for i, c in enumerate(cells[:-1])]
        return COLUMN_GAP.join([*padded, *cells[-1:]]).rstrip()


def aligned(rows: list[list[str]], gap: str = COLUMN_GAP) -> list[str]:
    """Plain text columns (for tables minictl builds itself, such as api-resources)."""
    if not rows:
        return []
    widths = [max(len(r[c]) for r in rows if c < len(r)) for c in range(max(len(r) for r in rows))]
    return [gap.join([c.ljust(widths[i]) for i, c in enumerate(r[:-1])] + r[-1:]).rstrip() for r in rows]


def to_yaml(obj: Any) -> str:
    return str(yaml.safe_dump(obj, default_flow_style=False, sort_keys=True, allow_unicode=True))


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=4, sort_keys=False, ensure_ascii=False)


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def human_duration(seconds: float) -> str:
    """kubectl's short age: 45s, 3m12s, 42m, 5h3m, 20h, 3d4h, 120d, 3y20d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    if y < 8:
        return f"{y}y{d % 365}d" if d % 365 else f"{y}y"
    return f"{y}y"


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def age(value: Any, now: dt.datetime | None = None) -> str:
    t = parse_time(value)
    if t is None:
        return "<unknown>"
    return human_duration(((now or dt.datetime.now(dt.UTC)) - t).total_seconds())


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def format_api_error(err: ApiError) -> str:
    """kubectl's line for a server error (422 is built from details, as kubectl does)."""
    if isinstance(err, Invalid) and err.kind:
        what = f'The {err.kind} "{err.name}"' if err.name else f"The {err.kind}"
        if len(err.causes) == 1:
            return one_line(f"{what} is invalid: {err.causes[0].describe()}")
        if err.causes:
            return one_line(f"{what} is invalid: [{', '.join(c.describe() for c in err.causes)}]")
    return one_line(f"Error from server ({err.reason}): {err.message}")
