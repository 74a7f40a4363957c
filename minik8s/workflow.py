"""The workflow language (docs/workflows.md, "Language"): validation, paths, choices, retries, schedules.

One library for both sides: the apiserver validates ``Workflow`` objects with :func:`validate`, the
gateway's workflow driver runs executions with the rest, and the trigger scheduler computes firing
times with :func:`parse_schedule`. Everything here is pure: no I/O, no clock, no ``eval``; paths and
cron expressions are parsed by the small parsers below.

::

    validate(spec)                 → [(field path, message)]   (empty: valid)
    select(data, "$.a[0]")         → value            ┐
    put(data, "$.a.b", value)      → new data         ├ raise PathError
    apply_parameters(params, data) → new value        ┘
    matches(rule, data)            → bool             (a Choice rule)
    choose(state, data)            → next state name or None (no rule matched, no default)
    error_matches(errorEquals, error), find_retrier, find_catcher, retry_delay, state_next
    parse_schedule("@every 2s" | "*/5 * * * * *") → Schedule.next_after(t)   (raises ScheduleError)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from minik8s.api import names

# --- errors and constants -----------------------------------------------------------------------------

STATE_TYPES = ("Choice", "Fail", "Parallel", "Pass", "Succeed", "Task", "Wait")
MAX_STATE_NAME = 80

ERROR_ALL = "States.ALL"
ERROR_TIMEOUT = "States.Timeout"
ERROR_TASK_FAILED = "States.TaskFailed"
ERROR_UNAVAILABLE = "States.Unavailable"
# Raised by the driver itself: a path that selects nothing, a Choice with no match and no default.
ERROR_RUNTIME = "States.Runtime"
ERROR_NO_CHOICE = "States.NoChoiceMatched"
# Errors that are the platform's own; any other error type is a function's (matched by TaskFailed).
PLATFORM_ERRORS = frozenset({ERROR_ALL, ERROR_TIMEOUT, ERROR_TASK_FAILED, ERROR_UNAVAILABLE, ERROR_RUNTIME,
                             ERROR_NO_CHOICE})

RETRY_INTERVAL_SECONDS = 1.0
RETRY_MAX_ATTEMPTS = 3
RETRY_BACKOFF_RATE = 2.0

MIN_EVERY_SECONDS = 0.1


class PathError(ValueError):
    """A path that does not parse, or that selects nothing in the data it is applied to."""


class ScheduleError(ValueError):
    """A schedule (``@every <duration>`` or 6-field cron) that does not parse; the message says why."""


# --- paths ------------------------------------------------------------------------------------------------

Step = str | int
# A dotted name: anything but the characters that end it or start a bracket.
_NAME_RE = re.compile(r"[^.\[\]'\"\s]+")
_INDEX_RE = re.compile(r"\[(\d+)\]")


def parse_path(path: Any) -> tuple[Step, ...]:
    """The steps of ``path``: ``$`` → ``()``, ``$.a[0]['b c']`` → ``("a", 0, "b c")``.

    The grammar is ``$`` followed by any of ``.name``, ``[digits]``, ``['text']`` / ``["text"]``
    (a backslash escapes the quote or itself inside brackets). Raises ``PathError``.
    """
    if not isinstance(path, str):
        raise PathError(f"a path must be a string, not {type(path).__name__}")
    if not path.startswith("$"):
        raise PathError(f"path {path!r} must start with '$'")
    steps: list[Step] = []
    i, n = 1, len(path)
    while i < n:
        c = path[i]
        if c == ".":
            m = _NAME_RE.match(path, i + 1)
            if m is None:
                raise PathError(f"path {path!r}: a name must follow '.' at offset {i}")
            steps.append(m.group(0))
            i = m.end()
        elif c == "[":
            m = _INDEX_RE.match(path, i)
            if m is not None:
                steps.append(int(m.group(1)))
                i = m.end()
                continue
            if i + 1 >= n or path[i + 1] not in "'\"":
                raise PathError(f"path {path!r}: expected a number or a quoted name after '[' at offset {i}")
            quote, j, text = path[i + 1], i + 2, []
            while j < n and path[j] != quote:
                if path[j] == "\\" and j + 1 < n:
                    j += 1
                text.append(path[j])
                j += 1
            if j + 1 >= n or path[j + 1] != "]":
                raise PathError(f"path {path!r}: unterminated [{quote}...{quote}] at offset {i}")
            steps.append("".join(text))
            i = j + 2
        else:
            raise PathError(f"path {path!r}: unexpected {c!r} at offset {i}")
    return tuple(steps)


def _show(steps: Iterable[Step]) -> str:
    out = "$"
    for s in steps:
        if isinstance(s, int):
            out += f"[{s}]"
        elif _NAME_RE.fullmatch(s):
            out += f".{s}"
        else:
            out += "['" + s.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return out


def select(data: Any, path: str) -> Any:
    """The value at ``path`` in ``data`` (not a copy). Raises ``PathError`` when a step is missing."""
    cur = data
    steps = parse_path(path)
    for k, step in enumerate(steps):
        if isinstance(step, int):
            if not isinstance(cur, list) or step >= len(cur):
                raise PathError(f"path {path!r}: no item {_show(steps[:k + 1])}")
            cur = cur[step]
        else:
            if not isinstance(cur, dict) or step not in cur:
                raise PathError(f"path {path!r}: no field {_show(steps[:k + 1])}")
            cur = cur[step]
    return cur


def put(data: Any, path: str | None, value: Any) -> Any:
    """``data`` with ``value`` placed at ``path`` (resultPath semantics); ``data`` itself is not changed.

    ``None`` discards ``value`` (returns ``data``); ``$`` returns ``value``; ``$.a.b`` returns a copy
    of ``data`` with ``a`` and ``b`` set, creating missing objects on the way. An index step must
    name an existing item of a list. Raises ``PathError`` when a step crosses a non-object.
    """
    if path is None:
        return data
    steps = parse_path(path)

    def place(cur: Any, k: int) -> Any:
        if k == len(steps):
            return value
        step = steps[k]
        if isinstance(step, int):
            if not isinstance(cur, list) or step >= len(cur):
                raise PathError(f"path {path!r}: no item {_show(steps[:k + 1])} to set")
            out_list = list(cur)
            out_list[step] = place(cur[step], k + 1)
            return out_list
        if cur is None and k > 0:
            cur = {}
        if not isinstance(cur, dict):
            where = _show(steps[:k])
            raise PathError(f"path {path!r}: {where} is not an object, cannot set {step!r} in it")
        out = dict(cur)
        out[step] = place(cur.get(step), k + 1)
        return out

    return place(data, 0)


def apply_parameters(params: Any, data: Any) -> Any:
    """``params`` with every key ending in ``.$`` replaced by the key without it, valued ``select(data, v)``.

    Applies at every depth of objects and lists; other values are copied as they are. Raises
    ``PathError`` when a ``.$`` value is not a path or selects nothing.
    """
    if isinstance(params, dict):
        out: dict[str, Any] = {}
        for key, v in params.items():
            if isinstance(key, str) and key.endswith(".$"):
                out[key[:-2]] = select(data, v)
            else:
                out[key] = apply_parameters(v, data)
        return out
    if isinstance(params, list):
        return [apply_parameters(v, data) for v in params]
    return params


# --- choice rules -----------------------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_NUMERIC_OPS = {
    "numericEquals": lambda a, b: a == b,
    "numericLessThan": lambda a, b: a < b,
    "numericGreaterThan": lambda a, b: a > b,
    "numericLessThanEquals": lambda a, b: a <= b,
    "numericGreaterThanEquals": lambda a, b: a >= b,
}
_STRING_OPS = {
    "stringEquals": lambda a, b: a == b,
    "stringLessThan": lambda a, b: a < b,
    "stringGreaterThan": lambda a, b: a > b,
    "stringLessThanEquals": lambda a, b: a <= b,
    "stringGreaterThanEquals": lambda a, b: a >= b,
}
_TYPE_TESTS = {
    "isNull": lambda v: v is None,
    "isNumeric": _is_number,
    "isString": lambda v: isinstance(v, str),
    "isBoolean": lambda v: isinstance(v, bool),
}
COMPARISONS = (*_NUMERIC_OPS, *_STRING_OPS, "stringMatches", "booleanEquals", "isPresent", *_TYPE_TESTS)
_MISSING = object()


def _wildcard(pattern: str) -> re.Pattern[str]:
    """``*`` matches any run of characters; ``\\*`` is a literal star and ``\\\\`` a backslash."""
    parts, lit, i = [], [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*\\":
            lit.append(pattern[i + 1])
            i += 2
            continue
        if c == "*":
            parts.append(re.escape("".join(lit)))
            parts.append(".*")
            lit = []
        else:
            lit.append(c)
        i += 1
    parts.append(re.escape("".join(lit)))
    return re.compile("".join(parts), re.DOTALL)


def matches(rule: Mapping[str, Any], data: Any) -> bool:
    """Whether the Choice ``rule`` holds for ``data``.

    A rule is ``{"variable": path, <one comparison>: operand}`` or ``{"and": [rules]}``,
    ``{"or": [rules]}``, ``{"not": rule}``. A variable that selects nothing makes every comparison
    false except ``isPresent`` (which then holds when its operand is false). A value of the wrong
    type for the operator (a string to ``numericEquals``) makes the comparison false. Never raises
    on a rule that :func:`validate` accepted; an unknown operator is false.
    """
    if "and" in rule:
        return all(matches(r, data) for r in rule["and"])
    if "or" in rule:
        return any(matches(r, data) for r in rule["or"])
    if "not" in rule:
        return not matches(rule["not"], data)
    try:
        value = select(data, rule.get("variable", "$"))
    except PathError:
        value = _MISSING
    for op in COMPARISONS:
        if op in rule:
            return _compare(op, value, rule[op])
    return False


def _compare(op: str, value: Any, operand: Any) -> bool:
    if op == "isPresent":
        return (value is not _MISSING) == bool(operand)
    if value is _MISSING:
        return False
    if op in _TYPE_TESTS:
        return _TYPE_TESTS[op](value) == bool(operand)
    if op in _NUMERIC_OPS:
        return _is_number(value) and _is_number(operand) and bool(_NUMERIC_OPS[op](value, operand))
    if op in _STRING_OPS:
        return isinstance(value, str) and isinstance(operand, str) and bool(_STRING_OPS[op](value, operand))
    if op == "stringMatches":
        return isinstance(value, str) and isinstance(operand, str) and bool(_wildcard(operand).fullmatch(value))
    if op == "booleanEquals":
        return isinstance(value, bool) and value is operand
    return False


def choose(state: Mapping[str, Any], data: Any) -> str | None:
    """The ``next`` of the first of a Choice state's ``choices`` that matches, else its ``default``.

    None when nothing matched and there is no default (the driver fails with ``States.NoChoiceMatched``).
    """
    for choice in state.get("choices") or []:
        if isinstance(choice, dict) and matches(choice, data):
            nxt = choice.get("next")
            return nxt if isinstance(nxt, str) else None
    default = state.get("default")
    return default if isinstance(default, str) else None


# --- errors, retries, transitions -------------------------------------------------------------------------

def error_matches(error_equals: Iterable[str], error: str) -> bool:
    """Whether ``error`` is named by ``error_equals``.

    ``States.ALL`` matches every error; ``States.TaskFailed`` matches every error a function raised
    (any type not ``States.*``) as well as itself; any other name matches only itself.
    """
    for name in error_equals:
        if name in (ERROR_ALL, error):
            return True
        if name == ERROR_TASK_FAILED and not error.startswith("States."):
            return True
    return False


def find_retrier(retriers: Any, error: str) -> tuple[int, dict[str, Any]] | None:
    """(index, retrier) of the first entry of a state's ``retry`` that names ``error``; None if none does."""
    for i, r in enumerate(retriers if isinstance(retriers, list) else []):
        if isinstance(r, dict) and error_matches(r.get("errorEquals") or [], error):
            return i, r
    return None


def find_catcher(catchers: Any, error: str) -> dict[str, Any] | None:
    """The first entry of a state's ``catch`` that names ``error``; None if none does."""
    for c in catchers if isinstance(catchers, list) else []:
        if isinstance(c, dict) and error_matches(c.get("errorEquals") or [], error):
            return c
    return None


def retry_delay(retrier: Mapping[str, Any], attempt: int) -> float | None:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry); None when exhausted.

    The delay is ``intervalSeconds * backoffRate ** (attempt - 1)`` (defaults 1 s and 2.0); a
    retrier allows ``maxAttempts`` retries (default 3; 0 never retries).
    """
    interval = retrier.get("intervalSeconds", RETRY_INTERVAL_SECONDS)
    most = retrier.get("maxAttempts", RETRY_MAX_ATTEMPTS)
    rate = retrier.get("backoffRate", RETRY_BACKOFF_RATE)
    interval = float(interval) if _is_number(interval) else RETRY_INTERVAL_SECONDS
    most = most if isinstance(most, int) and not isinstance(most, bool) else RETRY_MAX_ATTEMPTS
    rate = float(rate) if _is_number(rate) else RETRY_BACKOFF_RATE
    if attempt < 1 or attempt > most:
        return None
    return interval * rate ** (attempt - 1)


def state_next(state: Mapping[str, Any]) -> str | None:
    """The state after ``state`` when it succeeds: its ``next``; None when it ends its scope.

    For a Choice use :func:`choose`; Succeed and Fail always end (None).
    """
    if state.get("type") in ("Succeed", "Fail", "Choice") or state.get("end") is True:
        return None
    nxt = state.get("next")
    return nxt if isinstance(nxt, str) else None


# --- schedules --------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# second, minute, hour, day of month, month, day of week (0 = Sunday; 7 is accepted as Sunday too).
_CRON_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31),
                ("month", 1, 12), ("day of week", 0, 7))
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # at most (February in leap years)
_SEARCH_YEARS = 8  # a cron next time further away than this is treated as never (Feb 29 on a Monday: < 28 y)


def parse_duration(text: str) -> float:
    """Seconds in a Go-like duration: ``500ms``, ``2s``, ``1m30s``, ``1.5h``. Raises ``ScheduleError``."""
    t = text.strip()
    pos, total = 0, 0.0
    if not t:
        raise ScheduleError("a duration is required, e.g. 500ms, 2s, 1m")
    while pos < len(t):
        m = _DURATION_RE.match(t, pos)
        if m is None:
            raise ScheduleError(f"{text!r} is not a duration (units: ms, s, m, h; e.g. 500ms, 2s, 1m30s)")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


def _cron_field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{name} {part!r}: the step must be a positive number")
            step = int(step_text)
        if base == "*":
            first, last = lo, hi
        else:
            a, dash, b = base.partition("-")
            if not a.isdigit() or (dash and not b.isdigit()):
                raise ScheduleError(f"{name} {part!r}: expected *, a number, a range a-b, a list, or a step /n")
            first = int(a)
            last = int(b) if dash else (hi if step_text else first)
            for v in (first, last):
                if not lo <= v <= hi:
                    raise ScheduleError(f"{name} {v} is out of range {lo}-{hi}")
            if first > last:
                raise ScheduleError(f"{name} range {base!r} goes backwards")
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule. ``every`` (seconds) for ``@every``; otherwise the six cron fields' sets.

    ``day_or``: cron's rule that when both day of month and day of week are restricted, a day
    matching either fires.
    """

    text: str
    every: float | None = None
    seconds: frozenset[int] = frozenset()
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday
    day_or: bool = False

    def next_after(self, t: datetime) -> datetime:
        """The first firing time strictly after ``t``, in ``t``'s time zone (give UTC).

        ``@every d``: ``t + d``. Cron: the next whole second matching all fields. Raises
        ``ScheduleError`` for a cron that never fires within 8 years (``0 0 0 30 2 *``).
        """
        if self.every is not None:
            return t + timedelta(seconds=self.every)
        cur = t.replace(microsecond=0) + timedelta(seconds=1)
        limit = t + timedelta(days=366 * _SEARCH_YEARS)
        while cur <= limit:
            if cur.month not in self.months:
                year, month = (cur.year + 1, 1) if cur.month == 12 else (cur.year, cur.month + 1)
                cur = cur.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
            elif not self._day_matches(cur):
                cur = cur.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif cur.hour not in self.hours:
                cur = cur.replace(minute=0, second=0) + timedelta(hours=1)
            elif cur.minute not in self.minutes:
                cur = cur.replace(second=0) + timedelta(minutes=1)
            elif cur.second not in self.seconds:
                cur += timedelta(seconds=1)
            else:
                return cur
        raise ScheduleError(f"schedule {self.text!r} does not fire within {_SEARCH_YEARS} years")

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        return (dom or dow) if self.day_or else (dom and dow)


def parse_schedule(text: str) -> Schedule:
    """Parse ``@every <duration>`` (at least 100ms) or a 6-field cron ``sec min hour day month weekday``.

    Cron fields take ``*``, numbers, ranges ``a-b``, lists ``a,b`` and steps ``*/n`` / ``a-b/n`` /
    ``a/n``, each within the field's range. A cron that can never fire (``0 0 0 31 2 *``) is refused.
    Raises ``ScheduleError`` with a readable reason.
    """
    if not isinstance(text, str):
        raise ScheduleError("a schedule must be a string")
    t = text.strip()
    if t.startswith("@every"):
        rest = t[len("@every"):]
        if rest and not rest[0].isspace():
            raise ScheduleError(f"{text!r}: expected '@every <duration>'")
        seconds = parse_duration(rest)
        if not math.isfinite(seconds) or seconds < MIN_EVERY_SECONDS:
            raise ScheduleError(f"{text!r}: the interval must be at least 100ms")
        return Schedule(text=text, every=seconds)
    if t.startswith("@"):
        raise ScheduleError(f"{text!r}: the only @ form is '@every <duration>'")
    parts = t.split()
    if len(parts) != 6:
        raise ScheduleError(f"{text!r}: a cron schedule has 6 fields (second minute hour day month weekday), "
                            f"not {len(parts)}")
    sets = [_cron_field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, _CRON_FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[5])
    day_or = parts[3] != "*" and parts[5] != "*"
    if not day_or and not any(d <= _DAYS_IN_MONTH[m - 1] for d in sets[3] for m in sets[4]):
        raise ScheduleError(f"{text!r}: no month in the schedule has such a day, it would never fire")
    return Schedule(text=text, seconds=sets[0], minutes=sets[1], hours=sets[2], days=sets[3], months=sets[4],
                    weekdays=weekdays, day_or=day_or)


# --- validation -------------------------------------------------------------------------------------------

_COMMON = frozenset({"type", "comment", "inputPath", "outputPath"})
_FIELDS: dict[str, frozenset[str]] = {
    "Task": _COMMON | {"function", "next", "end", "parameters", "resultPath", "timeoutSeconds", "retry", "catch"},
    "Choice": _COMMON | {"choices", "default"},
    "Parallel": _COMMON | {"branches", "next", "end", "parameters", "resultPath", "retry", "catch"},
    "Pass": _COMMON | {"result", "next", "end", "parameters", "resultPath"},
    "Wait": _COMMON | {"seconds", "secondsPath", "next", "end"},
    "Succeed": _COMMON,
    "Fail": frozenset({"type", "comment", "error", "cause"}),
}
_RETRY_FIELDS = frozenset({"errorEquals", "intervalSeconds", "maxAttempts", "backoffRate"})
_CATCH_FIELDS = frozenset({"errorEquals", "next", "resultPath"})
_RULE_FIELDS = frozenset({"variable", "next", "comment", *COMPARISONS})
_MAX_RULE_DEPTH = 32
_MAX_BRANCH_DEPTH = 16

Problem = tuple[str, str]


def _q(v: Any) -> str:
    """A value as JSON, cut short (messages quote what the user wrote)."""
    try:
        text = json.dumps(v, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        text = "<complex value>"
    return text if len(text) <= 100 else text[:97] + "..."


class _Check:
    """Collects (field path, message) pairs for one workflow spec."""

    def __init__(self) -> None:
        self.out: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.out.append((path, message))

    def path(self, value: Any, path: str, *, optional: bool = True) -> None:
        if value is None and optional:
            return
        try:
            parse_path(value)
        except PathError as e:
            self.add(path, f"not a valid path: {e}")

    def number(self, value: Any, path: str, *, minimum: float, strict: bool) -> None:
        if value is None:
            return
        if not _is_number(value) or not math.isfinite(value):
            self.add(path, f"must be a number, not {_q(value)}")
        elif value < minimum or (strict and value == minimum):
            self.add(path, f"must be {'greater than' if strict else 'at least'} {minimum:g}")

    def string(self, value: Any, path: str) -> bool:
        if value is None or isinstance(value, str):
            return True
        self.add(path, f"must be a string, not {_q(value)}")
        return False


def validate(spec: Any, prefix: str = "spec") -> list[Problem]:
    """The problems of a Workflow ``spec`` as (field path, message) pairs; empty when it is valid.

    Field paths start at ``prefix`` (``spec.states.Check.choices[0].next``); messages name what is
    wrong (``"Nowhere" is not a state``, ``unreachable from startAt``, ``cycle A → B → A has no Wait
    or Choice``). Checks: required fields and their types, unknown fields per state type, every
    ``startAt``/``next``/``default``/catch ``next`` names a state of its scope, reachability,
    cycles without a Wait or Choice, paths parse, Parallel branches recursively. Never raises.
    """
    c = _Check()
    if not isinstance(spec, dict):
        c.add(prefix, "Required value" if spec is None else "must be an object")
        return c.out
    for key in spec:
        if key not in ("startAt", "states", "timeoutSeconds"):
            c.add(f"{prefix}.{key}", f"unknown field {_q(key)}")
    c.number(spec.get("timeoutSeconds"), f"{prefix}.timeoutSeconds", minimum=0, strict=True)
    _scope(c, spec, prefix, 0)
    return c.out


def _scope(c: _Check, scope: dict[str, Any], prefix: str, depth: int) -> None:
    """One state machine: the top level, or one Parallel branch."""
    states = scope.get("states")
    if not isinstance(states, dict) or not states:
        c.add(f"{prefix}.states", "Required value: at least one state" if states in (None, {}) else
              "must be an object of state name → state")
        states = {}
    start = scope.get("startAt")
    if start is None or start == "":
        c.add(f"{prefix}.startAt", "Required value")
    elif not isinstance(start, str):
        c.add(f"{prefix}.startAt", f"must be a string, not {_q(start)}")
    elif states and start not in states:
        c.add(f"{prefix}.startAt", f"Invalid value: {_q(start)}: must name a state in `{prefix}.states`")
    edges: dict[str, list[str]] = {}
    for name, state in states.items():
        spath = f"{prefix}.states.{name}"
        if not name or len(name) > MAX_STATE_NAME:
            c.add(spath, f"a state name must have 1 to {MAX_STATE_NAME} characters")
        if not isinstance(state, dict):
            c.add(spath, "must be an object")
            continue
        edges[name] = _state(c, name, state, spath, states, depth)
    if isinstance(start, str) and start in states:
        _graph(c, start, edges, states, prefix)


def _target(c: _Check, value: Any, path: str, states: dict[str, Any]) -> list[str]:
    if not isinstance(value, str):
        c.add(path, "Required value: the name of a state" if value is None else f"must be a string, not {_q(value)}")
        return []
    if value not in states:
        c.add(path, f"{_q(value)} is not a state")
        return []
    return [value]


def _state(c: _Check, name: str, state: dict[str, Any], spath: str, states: dict[str, Any],
           depth: int) -> list[str]:
    """Check one state; return the names it can go to (for the graph checks)."""
    stype = state.get("type")
    if stype not in STATE_TYPES:
        supported = ", ".join(STATE_TYPES)
        c.add(f"{spath}.type", "Required value: one of " + supported if stype is None else
              f"Unsupported value: {_q(stype)}: supported values: {supported}")
        return []
    for key in state:
        if key not in _FIELDS[stype]:
            c.add(f"{spath}.{key}", f"unknown field {_q(key)} for a {stype} state")
    c.string(state.get("comment"), f"{spath}.comment")
    for key in ("inputPath", "outputPath"):
        c.path(state.get(key), f"{spath}.{key}")
    if "resultPath" in state:
        c.path(state.get("resultPath"), f"{spath}.resultPath")  # null: discard the result
    if "parameters" in _FIELDS[stype] and state.get("parameters") is not None:
        _parameters(c, state["parameters"], f"{spath}.parameters")
    targets: list[str] = []
    if stype not in ("Choice", "Succeed", "Fail"):
        end, nxt = state.get("end"), state.get("next")
        if end is not None and not isinstance(end, bool):
            c.add(f"{spath}.end", f"must be a boolean, not {_q(end)}")
        elif end is True and nxt is not None:
            c.add(spath, f"state {_q(name)} has both next and end: true; exactly one is allowed")
        elif end is not True and nxt is None:
            c.add(spath, f"state {_q(name)} needs exactly one of next or end: true")
        elif nxt is not None:
            targets += _target(c, nxt, f"{spath}.next", states)
    if stype == "Task":
        fn = state.get("function")
        if fn is None or fn == "":
            c.add(f"{spath}.function", "Required value: the name of a Function in the same namespace")
        elif c.string(fn, f"{spath}.function"):
            for msg in names.dns1035_label(fn):
                c.add(f"{spath}.function", f"Invalid value: {_q(fn)}: {msg}")
        c.number(state.get("timeoutSeconds"), f"{spath}.timeoutSeconds", minimum=0, strict=True)
    if stype in ("Task", "Parallel"):
        _retry(c, state.get("retry"), f"{spath}.retry")
        targets += _catch(c, state.get("catch"), f"{spath}.catch", states)
    if stype == "Parallel":
        branches = state.get("branches")
        if not isinstance(branches, list) or not branches:
            c.add(f"{spath}.branches", "Required value: at least one branch" if branches in (None, []) else
                  "must be a list of {startAt, states}")
        elif depth >= _MAX_BRANCH_DEPTH:
            c.add(f"{spath}.branches", f"Parallel states may nest at most {_MAX_BRANCH_DEPTH} deep")
        else:
            for i, b in enumerate(branches):
                bpath = f"{spath}.branches[{i}]"
                if not isinstance(b, dict):
                    c.add(bpath, "must be an object with startAt and states")
                    continue
                for key in b:
                    if key not in ("startAt", "states", "comment"):
                        c.add(f"{bpath}.{key}", f"unknown field {_q(key)} for a branch")
                _scope(c, b, bpath, depth + 1)
    if stype == "Choice":
        choices = state.get("choices")
        if not isinstance(choices, list) or not choices:
            c.add(f"{spath}.choices", "Required value: at least one choice" if choices in (None, []) else
                  "must be a list of rules")
        else:
            for i, rule in enumerate(choices):
                rpath = f"{spath}.choices[{i}]"
                _rule(c, rule, rpath, 0, top=True)
                if isinstance(rule, dict):
                    targets += _target(c, rule.get("next"), f"{rpath}.next", states)
        if state.get("default") is not None:
            targets += _target(c, state["default"], f"{spath}.default", states)
    if stype == "Pass" and "result" in state and "parameters" in state:
        c.add(spath, "a Pass state has result or parameters, not both")
    if stype == "Wait":
        seconds, spath_ = state.get("seconds"), state.get("secondsPath")
        if (seconds is None) == (spath_ is None):
            c.add(spath, f"state {_q(name)} needs exactly one of seconds or secondsPath")
        c.number(seconds, f"{spath}.seconds", minimum=0, strict=False)
        c.path(spath_, f"{spath}.secondsPath")
    if stype == "Fail":
        c.string(state.get("error"), f"{spath}.error")
        c.string(state.get("cause"), f"{spath}.cause")
    return targets


def _parameters(c: _Check, params: Any, path: str) -> None:
    if isinstance(params, dict):
        for key, v in params.items():
            if isinstance(key, str) and key.endswith(".$"):
                c.path(v, f"{path}['{key}']", optional=False)
            else:
                _parameters(c, v, f"{path}.{key}")
    elif isinstance(params, list):
        for i, v in enumerate(params):
            _parameters(c, v, f"{path}[{i}]")


def _error_list(c: _Check, value: Any, path: str, last: bool) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(e, str) and e for e in value):
        c.add(path, "Required value: a non-empty list of error names" if value in (None, []) else
              "must be a non-empty list of error names")
        return
    if ERROR_ALL in value and (len(value) > 1 or not last):
        c.add(path, f"{ERROR_ALL} must appear alone, in the last entry")


def _retry(c: _Check, retry: Any, path: str) -> None:
    if retry is None:
        return
    if not isinstance(retry, list):
        c.add(path, "must be a list of retriers")
        return
    for i, r in enumerate(retry):
        rpath = f"{path}[{i}]"
        if not isinstance(r, dict):
            c.add(rpath, "must be an object")
            continue
        for key in r:
            if key not in _RETRY_FIELDS:
                c.add(f"{rpath}.{key}", f"unknown field {_q(key)} for a retrier")
        _error_list(c, r.get("errorEquals"), f"{rpath}.errorEquals", i == len(retry) - 1)
        c.number(r.get("intervalSeconds"), f"{rpath}.intervalSeconds", minimum=0, strict=True)
        c.number(r.get("backoffRate"), f"{rpath}.backoffRate", minimum=1, strict=False)
        most = r.get("maxAttempts")
        if most is not None and (not isinstance(most, int) or isinstance(most, bool) or not 0 <= most <= 1000):
            c.add(f"{rpath}.maxAttempts", f"must be an integer from 0 to 1000, not {_q(most)}")


def _catch(c: _Check, catch: Any, path: str, states: dict[str, Any]) -> list[str]:
    if catch is None:
        return []
    if not isinstance(catch, list):
        c.add(path, "must be a list of catchers")
        return []
    targets: list[str] = []
    for i, r in enumerate(catch):
        rpath = f"{path}[{i}]"
        if not isinstance(r, dict):
            c.add(rpath, "must be an object")
            continue
        for key in r:
            if key not in _CATCH_FIELDS:
                c.add(f"{rpath}.{key}", f"unknown field {_q(key)} for a catcher")
        _error_list(c, r.get("errorEquals"), f"{rpath}.errorEquals", i == len(catch) - 1)
        if "resultPath" in r:
            c.path(r.get("resultPath"), f"{rpath}.resultPath")
        targets += _target(c, r.get("next"), f"{rpath}.next", states)
    return targets


def _rule(c: _Check, rule: Any, path: str, depth: int, *, top: bool) -> None:
    if not isinstance(rule, dict):
        c.add(path, "must be an object (a choice rule)")
        return
    if depth >= _MAX_RULE_DEPTH:
        c.add(path, f"choice rules may nest at most {_MAX_RULE_DEPTH} deep")
        return
    if not top and "next" in rule:
        c.add(f"{path}.next", "only a top-level choice rule has next")
    combinators = [k for k in ("and", "or", "not") if k in rule]
    if combinators:
        for key in rule:
            if key not in (*combinators, "next", "comment"):
                c.add(f"{path}.{key}", f"unknown field {_q(key)} beside {combinators[0]!r}")
        if len(combinators) > 1:
            c.add(path, "a rule has one of and, or, not")
            return
        op = combinators[0]
        sub = rule[op]
        if op == "not":
            _rule(c, sub, f"{path}.not", depth + 1, top=False)
        elif not isinstance(sub, list) or not sub:
            c.add(f"{path}.{op}", "must be a non-empty list of rules")
        else:
            for i, r in enumerate(sub):
                _rule(c, r, f"{path}.{op}[{i}]", depth + 1, top=False)
        return
    for key in rule:
        if key not in _RULE_FIELDS:
            c.add(f"{path}.{key}", f"unknown field {_q(key)} in a choice rule")
    if rule.get("variable") is None:
        c.add(f"{path}.variable", "Required value: a path")
    else:
        c.path(rule.get("variable"), f"{path}.variable")
    ops = [k for k in COMPARISONS if k in rule]
    if len(ops) != 1:
        c.add(path, "a rule has exactly one comparison (e.g. numericEquals, stringEquals, isPresent)"
              if not ops else f"a rule has exactly one comparison, not {', '.join(ops)}")
        return
    op, operand = ops[0], rule[ops[0]]
    if op in _NUMERIC_OPS and (not _is_number(operand) or not math.isfinite(operand)):
        c.add(f"{path}.{op}", f"must be a number, not {_q(operand)}")
    elif (op in _STRING_OPS or op == "stringMatches") and not isinstance(operand, str):
        c.add(f"{path}.{op}", f"must be a string, not {_q(operand)}")
    elif (op in _TYPE_TESTS or op in ("booleanEquals", "isPresent")) and not isinstance(operand, bool):
        c.add(f"{path}.{op}", f"must be a boolean, not {_q(operand)}")


def _graph(c: _Check, start: str, edges: dict[str, list[str]], states: dict[str, Any], prefix: str) -> None:
    """Reachability from ``start``, and cycles that no Wait or Choice interrupts."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    for name in states:
        if name not in seen:
            c.add(f"{prefix}.states.{name}", "unreachable from startAt")
    # A cycle must pass a Wait (it cannot spin) or a Choice (it can leave): drop those, look for cycles.
    breakers = {n for n, s in states.items() if isinstance(s, dict) and s.get("type") in ("Wait", "Choice")}
    sub = {n: [m for m in out if m not in breakers] for n, out in edges.items() if n not in breakers}
    reported: set[str] = set()
    for name in states:  # spec order, so the report is stable
        if name not in sub or name in reported:
            continue
        cycle = _cycle_through(name, sub)
        if cycle:
            reported.update(cycle)
            shown = " → ".join([*cycle, cycle[0]])
            c.add(f"{prefix}.states.{name}", f"cycle {shown} has no Wait or Choice")


def _cycle_through(start: str, edges: dict[str, list[str]]) -> list[str] | None:
    """The shortest path ``start → … → start`` in ``edges`` (as the list of its states), or None."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for m in edges.get(node, []):
                if m == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if m not in parent:
                    parent[m] = node
                    nxt_frontier.append(m)
        frontier = nxt_frontier
    return None
