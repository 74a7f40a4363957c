"""A small interpreter for kubectl's JSONPath templates (``-o jsonpath=…``). No ``eval``.

Supported, as kubectl writes them::

    text outside braces                       printed as is
    {.metadata.name}  {$.a}  {@.a}            field paths (missing fields print nothing)
    {.items[*].metadata.name}                 [*] every element, [0], [-1], [1:3] slices
    {.metadata.labels['app.kubernetes.io/name']}   quoted keys
    {..name}                                   recursive descent
    {.status.conditions[?(@.type=="Ready")].status}   filters with == != < <= > >= or existence
    {range .items[*]}{.metadata.name}{"\\n"}{end}     loops; @ is the current element
    {"literal\\t"}                              string literals with escapes

Several results of one action are joined by a space; strings print raw, numbers and booleans as
JSON, maps and lists as compact JSON (as kubectl does).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


class JsonPathError(ValueError):
    """A template that cannot be parsed."""


@dataclass
class _Text:
    text: str


@dataclass
class _Path:
    steps: list[tuple[str, Any]]


@dataclass
class _Range:
    path: _Path
    body: list[Any] = field(default_factory=list)


Node = _Text | _Path | _Range


def render(template: str, data: Any) -> str:
    """Apply ``template`` to ``data``; raises ``JsonPathError`` for a bad template."""
    nodes = _parse_template(template)
    out: list[str] = []
    _run(nodes, data, data, out)
    return "".join(out)


def _parse_template(template: str) -> list[Node]:
    root: list[Node] = []
    stack: list[list[Node]] = [root]
    i = 0
    while i < len(template):
        start = template.find("{", i)
        if start < 0:
            stack[-1].append(_Text(template[i:]))
            break
        if start > i:
            stack[-1].append(_Text(template[i:start]))
        end = _matching_brace(template, start)
        action = template[start + 1:end].strip()
        i = end + 1
        if action == "end":
            if len(stack) == 1:
                raise JsonPathError(f"error parsing jsonpath {template}: not in range, nothing to end")
            stack.pop()
        elif action.startswith("range ") or action == "range":
            rng = _Range(_parse_path(action[5:].strip(), template))
            stack[-1].append(rng)
            stack.append(rng.body)
        elif action.startswith(('"', "'")):
            stack[-1].append(_Text(_unquote(action, template)))
        else:
            stack[-1].append(_parse_path(action, template))
    if len(stack) != 1:
        raise JsonPathError(f"error parsing jsonpath {template}: unclosed range (missing {{end}})")
    return root


def _matching_brace(s: str, start: int) -> int:
    quote = ""
    i = start + 1
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "}":
            return i
        i += 1
    raise JsonPathError(f"error parsing jsonpath {s}: unclosed action")


def _unquote(literal: str, template: str) -> str:
    if len(literal) < 2 or literal[-1] != literal[0]:
        raise JsonPathError(f"error parsing jsonpath {template}: unterminated string {literal}")
    body = literal[1:-1]
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), body)


_NAME = re.compile(r"[A-Za-z0-9_\-$]+")


def _parse_path(expr: str, template: str) -> _Path:
    steps: list[tuple[str, Any]] = []
    i = 0
    if expr.startswith("$"):
        steps.append(("root", None))
        i = 1
    elif expr.startswith("@"):
        i = 1
    if i == len(expr) and steps:
        return _Path(steps)
    if i < len(expr) and expr[i] not in ".[":
        raise JsonPathError(f"error parsing jsonpath {template}: unrecognized identifier {expr}")
    while i < len(expr):
        if expr.startswith("..", i):
            m = _NAME.match(expr, i + 2)
            if not m:
                raise JsonPathError(f"error parsing jsonpath {template}: bad recursive descent in {expr}")
            steps.append(("descend", m.group(0)))
            i = m.end()
        elif expr[i] == ".":
            if expr.startswith(".*", i):
                steps.append(("all", None))
                i += 2
                continue
            m = _NAME.match(expr, i + 1)
            if not m:
                if i + 1 == len(expr):  # "{.}": the current object
                    break
                raise JsonPathError(f"error parsing jsonpath {template}: bad field name in {expr}")
            steps.append(("field", m.group(0)))
            i = m.end()
        elif expr[i] == "[":
            close = _closing_bracket(expr, i, template)
            steps.append(_parse_bracket(expr[i + 1:close].strip(), template))
            i = close + 1
        else:
            raise JsonPathError(f"error parsing jsonpath {template}: unexpected {expr[i]!r} in {expr}")
    return _Path(steps)


def _closing_bracket(expr: str, start: int, template: str) -> int:
    depth, quote = 0, ""
    for j in range(start, len(expr)):
        c = expr[j]
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return j
    raise JsonPathError(f"error parsing jsonpath {template}: unclosed [ in {expr}")


_FILTER = re.compile(r"^\?\(\s*(@[^=!<>]*?)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\)$")


def _parse_bracket(inner: str, template: str) -> tuple[str, Any]:
    if inner == "*":
        return ("all", None)
    if inner[:1] in "\"'":
        return ("field", _unquote(inner, template))
    if inner.startswith("?"):
        m = _FILTER.match(inner)
        if not m:
            raise JsonPathError(f"error parsing jsonpath {template}: bad filter [{inner}]")
        left = _parse_path(m.group(1), template)
        op, right = m.group(2), m.group(3)
        value: Any = None
        if op:
            if right[:1] in "\"'":
                value = _unquote(right, template)
            else:
                try:
                    value = json.loads(right)
                except ValueError as exc:
                    raise JsonPathError(f"error parsing jsonpath {template}: bad value {right}") from exc
        return ("filter", (left, op, value))
    if ":" in inner:
        parts = inner.split(":")
        if len(parts) > 3:
            raise JsonPathError(f"error parsing jsonpath {template}: bad slice [{inner}]")
        try:
            nums = [int(p) if p.strip() else None for p in parts]
        except ValueError as exc:
            raise JsonPathError(f"error parsing jsonpath {template}: bad slice [{inner}]") from exc
        return ("slice", slice(*nums))
    try:
        return ("index", int(inner))
    except ValueError as exc:
        raise JsonPathError(f"error parsing jsonpath {template}: bad index [{inner}]") from exc


def _evaluate(path: _Path, root: Any, current: Any) -> list[Any]:
    values = [current]
    for kind, arg in path.steps:
        nxt: list[Any] = []
        for v in values:
            if kind == "root":
                nxt.append(root)
            elif kind == "field":
                if isinstance(v, dict) and arg in v:
                    nxt.append(v[arg])
            elif kind == "all":
                if isinstance(v, list):
                    nxt.extend(v)
                elif isinstance(v, dict):
                    nxt.extend(v[k] for k in sorted(v))
            elif kind == "index":
                if isinstance(v, list) and -len(v) <= arg < len(v):
                    nxt.append(v[arg])
            elif kind == "slice":
                if isinstance(v, list):
                    nxt.extend(v[arg])
            elif kind == "descend":
                nxt.extend(_descend(v, arg))
            elif kind == "filter" and isinstance(v, list):
                nxt.extend(item for item in v if _matches(item, arg, root))
        values = nxt
    return values


def _descend(value: Any, name: str) -> list[Any]:
    found: list[Any] = []
    if isinstance(value, dict):
        if name in value:
            found.append(value[name])
        for k in sorted(value):
            found.extend(_descend(value[k], name))
    elif isinstance(value, list):
        for item in value:
            found.extend(_descend(item, name))
    return found


def _matches(item: Any, flt: tuple[_Path, str | None, Any], root: Any) -> bool:
    left_path, op, right = flt
    lefts = _evaluate(left_path, root, item)
    if op is None:
        return bool(lefts)
    for left in lefts:
        try:
            if ((op == "==" and left == right) or (op == "!=" and left != right) or (op == "<" and left < right)
                    or (op == "<=" and left <= right) or (op == ">" and left > right)
                    or (op == ">=" and left >= right)):
                return True
        except TypeError:
            continue
    return False


def _format(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return json.dumps(value)


def _run(nodes: list[Node], root: Any, current: Any, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Path):
            out.append(" ".join(_format(v) for v in _evaluate(node, root, current)))
        else:
            for value in _evaluate(node.path, root, current):
                _run(node.body, root, value, out)
