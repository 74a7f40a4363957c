"""Randomized checks: validation, defaults and schema walks are total and stable on any JSON."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from minik8s.api import apply_defaults, unknown_fields, unused_fields, validate
from minik8s.api.registry import RESOURCES
from minik8s.api.samples import sample

ITERATIONS = 400
_WEIRD: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, -(2**63) - 1, 10**40, 3.5, float("nan"), float("inf"), -0.0, "", "x",
    "Bad_Name", "100m", "1Gi", "-1", "25%", "None", "0.0.0.0", "a" * 300, [], [None], [1, "a"], [{}], {},
    {"a": 1}, {"": None}, {"name": 5}, [[[]]], "\u2603", "sha256:", "In",
]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.6:
        return copy.deepcopy(rng.choice(_WEIRD))
    if roll < 0.8:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["name", "port", "image", "type", "x", "key", "spec"]): _random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _mutate(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 4)):
        paths = [p for p in _paths(obj) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent: Any = obj
        for k in path[:-1]:
            parent = parent[k]
        action = rng.random()
        if action < 0.7:
            parent[path[-1]] = _random_value(rng)
        elif action < 0.85 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rng.choice(["bogus", "name", "status", "spec", "selector"])] = _random_value(rng)
    return obj


def _no_internal_errors(causes: list[Any]) -> None:
    assert not [c for c in causes if c.reason == "InternalError"], causes


@pytest.mark.parametrize("rt", RESOURCES, ids=lambda r: r.kind)
def test_validate_and_defaults_are_total_and_stable(rt):
    rng = random.Random(f"fuzz-{rt.kind}")
    base = sample(rt.kind)
    for _ in range(ITERATIONS):
        obj = _mutate(base, rng)
        causes = validate(obj, rt)
        _no_internal_errors(causes)
        _no_internal_errors(validate(obj, rt, old=base))
        _no_internal_errors(validate(base, rt, old=obj))
        unknown_fields(obj, rt)
        unused_fields(obj, rt)
        once = copy.deepcopy(obj)
        apply_defaults(once, rt)
        twice = copy.deepcopy(once)
        apply_defaults(twice, rt)
        assert once == twice, "apply_defaults is not idempotent"
        after = validate(once, rt)
        _no_internal_errors(after)
        if not after:
            # What passed once (as stored in etcd) must pass again, also after a JSON round trip.
            stored = json.loads(json.dumps(once))
            apply_defaults(stored, rt)
            assert validate(stored, rt) == []
            assert validate(stored, rt, old=stored) == []


@pytest.mark.parametrize("rt", RESOURCES, ids=lambda r: r.kind)
def test_any_top_level_value_is_handled(rt):
    for value in _WEIRD:
        _no_internal_errors(validate(value, rt))  # type: ignore[arg-type]
        apply_defaults(value, rt)  # type: ignore[arg-type]
        unknown_fields(value, rt)  # type: ignore[arg-type]
        unused_fields(value, rt)  # type: ignore[arg-type]
        obj = sample(rt.kind)
        for key in list(obj):
            broken = dict(obj, **{key: value})
            _no_internal_errors(validate(broken, rt))
            apply_defaults(broken, rt)
            _no_internal_errors(validate(broken, rt))


def test_deep_nesting_does_not_raise():
    rt = next(r for r in RESOURCES if r.kind == "Pod")
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"a": deep}
    obj = sample("Pod")
    obj["spec"]["containers"][0]["bogus"] = deep
    obj["metadata"]["annotations"] = {"x": deep}
    _no_internal_errors(validate(obj, rt))
    assert "spec.containers[0].bogus" in unknown_fields(obj, rt)
    unused_fields(obj, rt)
