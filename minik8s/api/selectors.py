"""Label and field selectors: parsing (string and object forms) and matching.

String forms follow Kubernetes' query parameters::

    labelSelector=app=web,tier!=db,env in (prod,staging),!canary,release
    fieldSelector=spec.nodeName=node-1,status.phase!=Running

Every syntax error raises :class:`minik8s.errors.BadRequest`, which the apiserver answers as 400.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from minik8s.api import names
from minik8s.errors import BadRequest

IN, NOT_IN, EXISTS, DOES_NOT_EXIST, EQUALS, NOT_EQUALS = "In", "NotIn", "Exists", "DoesNotExist", "=", "!="
SELECTOR_OPERATORS = (IN, NOT_IN, EXISTS, DOES_NOT_EXIST)


@dataclass(frozen=True)
class Requirement:
    """One label requirement; ``=``/``!=`` are kept apart from In/NotIn only for printing."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        if self.operator == EXISTS:
            return present
        if self.operator == DOES_NOT_EXIST:
            return not present
        if self.operator in (IN, EQUALS):
            return present and labels[self.key] in self.values
        # NotIn and != also match objects without the key, as in Kubernetes.
        return not present or labels[self.key] not in self.values

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return f"!{self.key}"
        if self.operator in (EQUALS, NOT_EQUALS):
            return f"{self.key}{self.operator}{self.values[0]}"
        word = "in" if self.operator == IN else "notin"
        return f"{self.key} {word} ({','.join(sorted(self.values))})"


class LabelSelector:
    """A conjunction of label requirements.

    ``LabelSelector([])`` is the empty selector and matches everything; :meth:`nothing` matches
    nothing (what a missing selector means on a controller, as in Kubernetes).
    """

    __slots__ = ("_match_nothing", "requirements")

    def __init__(self, requirements: Iterable[Requirement] = (), *, match_nothing: bool = False) -> None:
        self.requirements: tuple[Requirement, ...] = tuple(requirements)
        self._match_nothing = match_nothing

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(match_nothing=True)

    @property
    def empty(self) -> bool:
        """True when the selector has no requirements and so matches every object."""
        return not self.requirements and not self._match_nothing

    def matches(self, labels: Mapping[str, Any] | None) -> bool:
        if self._match_nothing:
            return False
        if not isinstance(labels, Mapping):
            labels = {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in sorted(self.requirements, key=lambda r: r.key))

    def __repr__(self) -> str:
        return "LabelSelector(<nothing>)" if self._match_nothing else f"LabelSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, LabelSelector) and self._match_nothing == other._match_nothing
                and set(self.requirements) == set(other.requirements))

    def __hash__(self) -> int:
        return hash((frozenset(self.requirements), self._match_nothing))


def _bad(detail: str) -> BadRequest:
    return BadRequest(f"unable to parse requirement: {detail}")


def _check_key(key: str) -> None:
    errs = names.qualified_name(key)
    if errs:
        raise _bad(f'invalid label key "{key}": {"; ".join(errs)}')


def _check_value(value: str) -> None:
    errs = names.label_value(value)
    if errs:
        raise _bad(f'invalid label value: "{value}": at key: {"; ".join(errs)}')


def _split_top(text: str) -> list[str]:
    """Split at commas that are not inside ``( )``."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _bad(f"unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise _bad(f"missing ')' in {text!r}")
    parts.append("".join(cur))
    return parts


def _parse_requirement(part: str) -> Requirement:
    p = part.strip()
    if not p:
        raise _bad("found '', expected: identifier")
    if p.startswith("!"):
        key = p[1:].strip()
        _check_key(key)
        return Requirement(key, DOES_NOT_EXIST)
    if "(" in p:
        head, _, rest = p.partition("(")
        if not rest.endswith(")") or ")" in rest[:-1]:
            raise _bad(f"found {part!r}, expected: ')'")
        words = head.split()
        if len(words) != 2 or words[1] not in ("in", "notin"):
            raise _bad(f"found {part!r}, expected: 'in' or 'notin'")
        key = words[0]
        _check_key(key)
        values = tuple(v.strip() for v in rest[:-1].split(",")) if rest[:-1].strip() else ()
        if not values:
            raise _bad(f"for 'in', 'notin' operators, values set can't be empty: {part!r}")
        for v in values:
            _check_value(v)
        return Requirement(key, IN if words[1] == "in" else NOT_IN, tuple(sorted(set(values))))
    for op, canon in (("!=", NOT_EQUALS), ("==", EQUALS), ("=", EQUALS)):
        if op in p:
            key, _, value = p.partition(op)
            key, value = key.strip(), value.strip()
            _check_key(key)
            if "=" in value or "!" in value:
                raise _bad(f"found {part!r}, expected: a single value")
            _check_value(value)
            return Requirement(key, canon, (value,))
    key = p
    if any(c.isspace() for c in key):
        raise _bad(f"found {part!r}, expected: ',' or an operator")
    _check_key(key)
    return Requirement(key, EXISTS)


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the query-string form; ``""`` is the empty selector (matches everything)."""
    if not isinstance(text, str):
        raise BadRequest("unable to parse requirement: a label selector must be a string")
    if not text.strip():
        return LabelSelector()
    return LabelSelector(_parse_requirement(part) for part in _split_top(text))


def selector_from_labels(labels: Mapping[str, Any] | None) -> LabelSelector:
    """The selector of a plain label map (a Service's ``spec.selector``, a pod's ``nodeSelector``)."""
    if labels is None:
        return LabelSelector()
    if not isinstance(labels, Mapping):
        raise BadRequest("unable to parse requirement: a label map must be an object")
    reqs = []
    for k, v in labels.items():
        _check_key(k)
        if not isinstance(v, str):
            raise _bad(f"value of label {k!r} must be a string")
        _check_value(v)
        reqs.append(Requirement(k, EQUALS, (v,)))
    return LabelSelector(reqs)


def selector_from_dict(d: Mapping[str, Any] | None) -> LabelSelector:
    """The selector of a ``LabelSelector`` object (``matchLabels`` and ``matchExpressions``).

    ``None`` matches nothing and ``{}`` matches everything, as in Kubernetes. Malformed input
    raises ``BadRequest``.
    """
    if d is None:
        return LabelSelector.nothing()
    if not isinstance(d, Mapping):
        raise BadRequest("unable to parse requirement: a label selector must be an object")
    reqs = list(selector_from_labels(d.get("matchLabels")).requirements)
    exprs = d.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise _bad("matchExpressions must be a list")
    for e in exprs:
        if not isinstance(e, Mapping):
            raise _bad("each of matchExpressions must be an object")
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if not isinstance(key, str):
            raise _bad("matchExpressions key must be a string")
        _check_key(key)
        if op not in SELECTOR_OPERATORS:
            raise _bad(f'"{op}" is not a valid label selector operator')
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _bad("matchExpressions values must be a list of strings")
        if op in (IN, NOT_IN) and not values:
            raise _bad(f"for 'in', 'notin' operators, values set can't be empty (key {key!r})")
        if op in (EXISTS, DOES_NOT_EXIST) and values:
            raise _bad(f"values set must be empty for exists and does not exist (key {key!r})")
        for v in values:
            _check_value(v)
        reqs.append(Requirement(key, op, tuple(sorted(set(values)))))
    return LabelSelector(reqs)


def selector_to_string(d: Mapping[str, Any] | None) -> str:
    """The query-string form of a ``LabelSelector`` object (what ``labelSelector=`` takes)."""
    return str(selector_from_dict(d or {}))


# --- field selectors -------------------------------------------------------------------------------


def _path(*keys: str) -> Callable[[Mapping[str, Any]], str]:
    def get(obj: Mapping[str, Any]) -> str:
        cur: Any = obj
        for k in keys:
            cur = cur.get(k) if isinstance(cur, Mapping) else None
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)
    return get


def _bool_path(*keys: str) -> Callable[[Mapping[str, Any]], str]:
    inner = _path(*keys)
    return lambda obj: inner(obj) or "false"


_COMMON_FIELDS = {"metadata.name": _path("metadata", "name"), "metadata.namespace": _path("metadata", "namespace")}
_KIND_FIELDS: dict[str, dict[str, Callable[[Mapping[str, Any]], str]]] = {
    "Pod": {"spec.nodeName": _path("spec", "nodeName"), "status.phase": _path("status", "phase"),
            "status.podIP": _path("status", "podIP"), "spec.restartPolicy": _path("spec", "restartPolicy"),
            "spec.schedulerName": _path("spec", "schedulerName")},
    "Event": {**{f"involvedObject.{f}": _path("involvedObject", f)
                 for f in ("kind", "name", "namespace", "uid", "apiVersion", "resourceVersion", "fieldPath")},
              "reason": _path("reason"), "type": _path("type"), "source": _path("source", "component")},
    "Node": {"spec.unschedulable": _bool_path("spec", "unschedulable")},
    "Namespace": {"status.phase": _path("status", "phase")},
}
_KIND_ALIASES = {"pods": "Pod", "events": "Event", "nodes": "Node", "namespaces": "Namespace"}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    operator: str  # "=" or "!="
    value: str
    getter: Callable[[Mapping[str, Any]], str]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (self.getter(obj) == self.value) == (self.operator == EQUALS)

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.field}{self.operator}{escaped}"


class FieldSelector:
    """A conjunction of ``field=value`` / ``field!=value`` requirements over one kind's fields."""

    __slots__ = ("requirements",)

    def __init__(self, requirements: Iterable[FieldRequirement] = ()) -> None:
        self.requirements: tuple[FieldRequirement, ...] = tuple(requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: Mapping[str, Any]) -> bool:
        if not isinstance(obj, Mapping):
            return False
        return all(r.matches(obj) for r in self.requirements)

    def equals_value(self, field: str) -> str | None:
        """The value ``field`` must equal, if the selector pins it (lets the apiserver use an index)."""
        for r in self.requirements:
            if r.field == field and r.operator == EQUALS:
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"


def _split_escaped(text: str, sep: str) -> list[str]:
    """Split at unescaped ``sep``; escapes (``\\,`` ``\\=`` ``\\\\``) are kept for the next step."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\,=":
                raise _bad(f"invalid escape sequence in {text!r}")
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _find_operator(part: str) -> tuple[int, str]:
    """Index and text of the first unescaped operator (``!=``, ``==`` or ``=``)."""
    i = 0
    while i < len(part):
        ch = part[i]
        if ch == "\\":
            i += 2
            continue
        if part.startswith("!=", i):
            return i, "!="
        if part.startswith("==", i):
            return i, "=="
        if ch == "=":
            return i, "="
        i += 1
    return -1, ""


def parse_field_selector(text: str, kind: str) -> FieldSelector:
    """Parse ``fieldSelector`` for objects of ``kind`` (a kind name such as ``Pod``, or its plural).

    Raises ``BadRequest``: ``field label not supported: X`` for a field the kind does not offer,
    ``unable to parse requirement: ...`` for bad syntax.
    """
    if not isinstance(text, str):
        raise BadRequest("unable to parse requirement: a field selector must be a string")
    if not text.strip():
        return FieldSelector()
    kind = _KIND_ALIASES.get(kind, kind)
    allowed = {**_COMMON_FIELDS, **_KIND_FIELDS.get(kind, {})}
    reqs = []
    for part in _split_escaped(text, ","):
        idx, op = _find_operator(part)
        if idx < 0:
            raise _bad(f"found {part!r}, expected: '=', '!=' or '=='")
        field = part[:idx].strip()
        value = _unescape(part[idx + len(op):].strip())
        if not field:
            raise _bad(f"found {part!r}, expected: a field name")
        getter = allowed.get(field)
        if getter is None:
            raise BadRequest(f"field label not supported: {field}")
        reqs.append(FieldRequirement(field, NOT_EQUALS if op == "!=" else EQUALS, value, getter))
    return FieldSelector(reqs)
