"""The workflow language (docs/workflows.md, "Language"): validation with messages that name the state,
paths, parameters, choice rules, error matching, retries and schedules."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from minik8s import workflow as wf
from minik8s.workflow import PathError, ScheduleError

pytestmark = pytest.mark.timeout(10)


def base() -> dict[str, Any]:
    """A valid spec using every state type: Check → (Ship | Wait → Check) ..."""
    return {
        "startAt": "Check",
        "timeoutSeconds": 60,
        "states": {
            "Check": {"type": "Task", "function": "check-order", "resultPath": "$.check",
                      "retry": [{"errorEquals": ["States.Timeout"], "maxAttempts": 2},
                                {"errorEquals": ["States.ALL"]}],
                      "catch": [{"errorEquals": ["States.ALL"], "next": "Broken", "resultPath": "$.error"}],
                      "next": "Decide"},
            "Decide": {"type": "Choice",
                       "choices": [{"variable": "$.check.ok", "booleanEquals": True, "next": "Fan"},
                                   {"and": [{"variable": "$.retries", "numericLessThan": 3},
                                            {"not": {"variable": "$.final", "isPresent": True}}],
                                    "next": "Later"}],
                       "default": "Broken"},
            "Later": {"type": "Wait", "seconds": 5, "next": "Check"},
            "Fan": {"type": "Parallel", "resultPath": "$.fan", "next": "Done", "branches": [
                {"startAt": "Ship", "states": {"Ship": {"type": "Task", "function": "ship", "end": True}}},
                {"startAt": "Note", "states": {"Note": {"type": "Pass", "result": {"ok": True}, "end": True}}},
            ]},
            "Done": {"type": "Succeed"},
            "Broken": {"type": "Fail", "error": "OrderFailed", "cause": "the order could not be checked"},
        },
    }


def test_the_base_spec_is_valid() -> None:
    assert wf.validate(base()) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set a dotted path (list indexes as numbers); the value ``DEL`` deletes."""
    def change(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        cur: Any = spec
        for p in parents:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        if value is DEL:
            del cur[last]
        elif isinstance(cur, list):
            cur[int(last)] = value
        else:
            cur[last] = value
    return change


DEL = object()
S = "spec.states"

REJECTIONS: list[tuple[str, Callable[[dict[str, Any]], None], tuple[str, str]]] = [
    ("choice-next", _set("states.Decide.choices.0.next", "Nowhere"),
     (f"{S}.Decide.choices[0].next", '"Nowhere" is not a state')),
    ("default", _set("states.Decide.default", "Gone"), (f"{S}.Decide.default", '"Gone" is not a state')),
    ("task-next", _set("states.Check.next", "Nope"), (f"{S}.Check.next", '"Nope" is not a state')),
    ("catch-next", _set("states.Check.catch.0.next", "X"), (f"{S}.Check.catch[0].next", '"X" is not a state')),
    ("startAt", _set("startAt", "Nowhere"),
     ("spec.startAt", 'Invalid value: "Nowhere": must name a state in `spec.states`')),
    ("startAt-missing", _set("startAt", DEL), ("spec.startAt", "Required value")),
    ("states-missing", _set("states", {}), ("spec.states", "Required value: at least one state")),
    ("orphan", _set("states.Orphan", {"type": "Succeed"}), (f"{S}.Orphan", "unreachable from startAt")),
    ("next-and-end", _set("states.Check.end", True),
     (f"{S}.Check", 'state "Check" has both next and end: true; exactly one is allowed')),
    ("neither", _set("states.Later.next", DEL), (f"{S}.Later", 'state "Later" needs exactly one of next or end: true')),
    ("end-type", _set("states.Done", {"type": "Pass", "end": "yes"}),
     (f"{S}.Done.end", 'must be a boolean, not "yes"')),
    ("type-missing", _set("states.Done", {"end": True}),
     (f"{S}.Done.type", "Required value: one of Choice, Fail, Parallel, Pass, Succeed, Task, Wait")),
    ("type-bad", _set("states.Done.type", "Map"),
     (f"{S}.Done.type", 'Unsupported value: "Map": supported values: Choice, Fail, Parallel, Pass, Succeed, Task, '
                        'Wait')),
    ("unknown-field", _set("states.Check.retries", 3),
     (f"{S}.Check.retries", 'unknown field "retries" for a Task state')),
    ("spec-unknown", _set("timeout", 3), ("spec.timeout", 'unknown field "timeout"')),
    ("succeed-next", _set("states.Done.next", "Check"), (f"{S}.Done.next", 'unknown field "next" for a Succeed state')),
    ("function-missing", _set("states.Check.function", DEL),
     (f"{S}.Check.function", "Required value: the name of a Function in the same namespace")),
    ("function-name", _set("states.Check.function", "Bad_Name"),
     (f"{S}.Check.function", 'Invalid value: "Bad_Name": a DNS-1035 label must consist of lower case alphanumeric '
                             "characters or '-', start with an alphabetic character, and end with an alphanumeric "
                             "character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
                             "'[a-z]([-a-z0-9]*[a-z0-9])?')")),
    ("task-timeout", _set("states.Check.timeoutSeconds", 0), (f"{S}.Check.timeoutSeconds", "must be greater than 0")),
    ("spec-timeout", _set("timeoutSeconds", "1m"), ("spec.timeoutSeconds", 'must be a number, not "1m"')),
    ("inputPath", _set("states.Check.inputPath", "a.b"),
     (f"{S}.Check.inputPath", "not a valid path: path 'a.b' must start with '$'")),
    ("resultPath", _set("states.Check.resultPath", "$.a["),
     (f"{S}.Check.resultPath",
      "not a valid path: path '$.a[': expected a number or a quoted name after '[' at offset 3")),
    ("parameters", _set("states.Check.parameters", {"x": {"y.$": "nope"}}),
     (f"{S}.Check.parameters.x['y.$']", "not a valid path: path 'nope' must start with '$'")),
    ("retry-errors", _set("states.Check.retry.0.errorEquals", []),
     (f"{S}.Check.retry[0].errorEquals", "Required value: a non-empty list of error names")),
    ("retry-all-not-last", _set("states.Check.retry.0.errorEquals", ["States.ALL"]),
     (f"{S}.Check.retry[0].errorEquals", "States.ALL must appear alone, in the last entry")),
    ("retry-all-not-alone", _set("states.Check.retry.1.errorEquals", ["States.ALL", "X"]),
     (f"{S}.Check.retry[1].errorEquals", "States.ALL must appear alone, in the last entry")),
    ("retry-backoff", _set("states.Check.retry.0.backoffRate", 0.5),
     (f"{S}.Check.retry[0].backoffRate", "must be at least 1")),
    ("retry-interval", _set("states.Check.retry.0.intervalSeconds", 0),
     (f"{S}.Check.retry[0].intervalSeconds", "must be greater than 0")),
    ("retry-attempts", _set("states.Check.retry.0.maxAttempts", 1.5),
     (f"{S}.Check.retry[0].maxAttempts", "must be an integer from 0 to 1000, not 1.5")),
    ("retry-unknown", _set("states.Check.retry.0.jitter", True),
     (f"{S}.Check.retry[0].jitter", 'unknown field "jitter" for a retrier')),
    ("retry-type", _set("states.Check.retry", {"errorEquals": ["X"]}),
     (f"{S}.Check.retry", "must be a list of retriers")),
    ("choices-empty", _set("states.Decide.choices", []),
     (f"{S}.Decide.choices", "Required value: at least one choice")),
    ("choice-no-op", _set("states.Decide.choices.0", {"variable": "$.x", "next": "Fan"}),
     (f"{S}.Decide.choices[0]", "a rule has exactly one comparison (e.g. numericEquals, stringEquals, isPresent)")),
    ("choice-two-ops", _set("states.Decide.choices.0.isPresent", True),
     (f"{S}.Decide.choices[0]", "a rule has exactly one comparison, not booleanEquals, isPresent")),
    ("choice-operand", _set("states.Decide.choices.1.and.0.numericLessThan", "3"),
     (f"{S}.Decide.choices[1].and[0].numericLessThan", 'must be a number, not "3"')),
    ("choice-variable", _set("states.Decide.choices.0.variable", DEL),
     (f"{S}.Decide.choices[0].variable", "Required value: a path")),
    ("choice-nested-next", _set("states.Decide.choices.1.and.0.next", "Fan"),
     (f"{S}.Decide.choices[1].and[0].next", "only a top-level choice rule has next")),
    ("choice-unknown-op", _set("states.Decide.choices.0.numericAbout", 3),
     (f"{S}.Decide.choices[0].numericAbout", 'unknown field "numericAbout" in a choice rule')),
    ("choice-and-empty", _set("states.Decide.choices.1.and", []),
     (f"{S}.Decide.choices[1].and", "must be a non-empty list of rules")),
    ("choice-missing-next", _set("states.Decide.choices.0.next", DEL),
     (f"{S}.Decide.choices[0].next", "Required value: the name of a state")),
    ("wait-both", _set("states.Later.secondsPath", "$.delay"),
     (f"{S}.Later", 'state "Later" needs exactly one of seconds or secondsPath')),
    ("wait-negative", _set("states.Later.seconds", -1), (f"{S}.Later.seconds", "must be at least 0")),
    ("fail-error", _set("states.Broken.error", 7), (f"{S}.Broken.error", "must be a string, not 7")),
    ("pass-both", _set("states.Fan.branches.1.states.Note.parameters", {"a": 1}),
     (f"{S}.Fan.branches[1].states.Note", "a Pass state has result or parameters, not both")),
    ("branches-empty", _set("states.Fan.branches", []), (f"{S}.Fan.branches", "Required value: at least one branch")),
    ("branch-next-outside", _set("states.Fan.branches.0.states.Ship", {"type": "Pass", "next": "Done"}),
     (f"{S}.Fan.branches[0].states.Ship.next", '"Done" is not a state')),
    ("branch-startAt", _set("states.Fan.branches.0.startAt", "Done"),
     (f"{S}.Fan.branches[0].startAt",
      'Invalid value: "Done": must name a state in `spec.states.Fan.branches[0].states`')),
    ("branch-orphan", _set("states.Fan.branches.1.states.Lost", {"type": "Succeed"}),
     (f"{S}.Fan.branches[1].states.Lost", "unreachable from startAt")),
    ("branch-unknown", _set("states.Fan.branches.1.next", "Done"),
     (f"{S}.Fan.branches[1].next", 'unknown field "next" for a branch')),
    ("state-not-object", _set("states.Done", "Succeed"), (f"{S}.Done", "must be an object")),
    ("long-name", lambda s: s["states"].update({"x" * 81: {"type": "Succeed"}}),
     (f"{S}.{'x' * 81}", "a state name must have 1 to 80 characters")),
]


@pytest.mark.parametrize(("change", "expected"), [(c, e) for _, c, e in REJECTIONS], ids=[n for n, _, _ in REJECTIONS])
def test_validation_rejects_with_a_message_naming_the_state(change: Callable[[dict[str, Any]], None],
                                                             expected: tuple[str, str]) -> None:
    spec = base()
    change(spec)
    problems = wf.validate(spec)
    assert expected in problems, problems


@pytest.mark.parametrize(("states", "expected"), [
    ({"A": {"type": "Pass", "next": "B"}, "B": {"type": "Pass", "next": "A"}},
     ("spec.states.A", "cycle A → B → A has no Wait or Choice")),
    ({"A": {"type": "Pass", "next": "A"}}, ("spec.states.A", "cycle A → A has no Wait or Choice")),
    # A catch that loops back is a loop too: a function failing forever would spin.
    ({"A": {"type": "Task", "function": "f", "end": True, "catch": [{"errorEquals": ["States.ALL"], "next": "A"}]}},
     ("spec.states.A", "cycle A → A has no Wait or Choice")),
    ({"A": {"type": "Pass", "next": "B"}, "B": {"type": "Pass", "next": "C"}, "C": {"type": "Pass", "next": "B"}},
     ("spec.states.B", "cycle B → C → B has no Wait or Choice")),
])
def test_cycles_without_wait_or_choice_are_refused(states: dict[str, Any], expected: tuple[str, str]) -> None:
    problems = wf.validate({"startAt": "A", "states": states})
    assert problems == [expected]


def test_cycles_through_a_wait_or_a_choice_are_fine() -> None:
    waits = {"A": {"type": "Pass", "next": "W"}, "W": {"type": "Wait", "seconds": 1, "next": "A"}}
    loop = {"A": {"type": "Task", "function": "f", "next": "C"},
            "C": {"type": "Choice", "choices": [{"variable": "$.more", "booleanEquals": True, "next": "A"}],
                  "default": "End"},
            "End": {"type": "Succeed"}}
    assert wf.validate({"startAt": "A", "states": waits}) == []
    assert wf.validate({"startAt": "A", "states": loop}) == []


@pytest.mark.parametrize("spec", [None, [], "x", 3, {"startAt": 1, "states": []}, {"states": {"a": None}},
                                  {"startAt": "a", "states": {"a": {"type": "Choice", "choices": [None, 1, []]}}},
                                  {"startAt": "a", "states": {"a": {"type": "Parallel", "branches": [1, {}],
                                                                    "end": True}}}])
def test_validation_is_total(spec: Any) -> None:
    problems = wf.validate(spec)
    assert problems and all(isinstance(p, str) and isinstance(m, str) for p, m in problems)


def test_deeply_nested_rules_are_refused_not_crashed() -> None:
    rule: dict[str, Any] = {"variable": "$.x", "isPresent": True}
    for _ in range(200):
        rule = {"not": rule}
    rule["next"] = "End"
    spec = {"startAt": "C", "states": {"C": {"type": "Choice", "choices": [rule]}, "End": {"type": "Succeed"}}}
    assert any("nest at most" in m for _, m in wf.validate(spec))


def test_validate_does_not_change_its_argument() -> None:
    spec = base()
    before = copy.deepcopy(spec)
    wf.validate(spec)
    assert spec == before


def test_prefix_names_the_place_of_the_spec() -> None:
    spec = base()
    spec["states"]["Check"]["next"] = "Nope"
    assert ("spec.definition.states.Check.next", '"Nope" is not a state') in wf.validate(spec, "spec.definition")


# --- paths ----------------------------------------------------------------------------------------------

DATA = {"a": {"b": [10, {"c": "deep"}], "x y": 1, "q'uote": 2}, "n": None, "list": [1, 2, 3]}


@pytest.mark.parametrize(("path", "steps", "value"), [
    ("$", (), DATA),
    ("$.a.b", ("a", "b"), [10, {"c": "deep"}]),
    ("$.a.b[1].c", ("a", "b", 1, "c"), "deep"),
    ("$.list[0]", ("list", 0), 1),
    ("$['a']['x y']", ("a", "x y"), 1),
    ('$.a["x y"]', ("a", "x y"), 1),
    ("$.a['q\\'uote']", ("a", "q'uote"), 2),
    ("$.n", ("n",), None),
])
def test_select(path: str, steps: tuple[Any, ...], value: Any) -> None:
    assert wf.parse_path(path) == steps
    assert wf.select(DATA, path) == value


@pytest.mark.parametrize(("path", "message"), [
    ("a.b", "path 'a.b' must start with '$'"),
    ("$.", "path '$.': a name must follow '.' at offset 1"),
    ("$a", "path '$a': unexpected 'a' at offset 1"),
    ("$[x]", "path '$[x]': expected a number or a quoted name after '[' at offset 1"),
    ("$['a'", "path \"$['a'\": unterminated ['...'] at offset 1"),
    ("$.a b", "path '$.a b': unexpected ' ' at offset 3"),
])
def test_bad_paths(path: str, message: str) -> None:
    with pytest.raises(PathError) as e:
        wf.parse_path(path)
    assert str(e.value) == message


@pytest.mark.parametrize(("path", "message"), [
    ("$.missing", "path '$.missing': no field $.missing"),
    ("$.a.b[5]", "path '$.a.b[5]': no item $.a.b[5]"),
    ("$.list.x", "path '$.list.x': no field $.list.x"),
    ("$.a['x y'].z", "path \"$.a['x y'].z\": no field $.a['x y'].z"),
])
def test_select_of_nothing_raises(path: str, message: str) -> None:
    with pytest.raises(PathError) as e:
        wf.select(DATA, path)
    assert str(e.value) == message


@pytest.mark.parametrize(("data", "path", "value", "expected"), [
    ({"a": 1}, "$", {"r": 1}, {"r": 1}),
    ({"a": 1}, None, {"r": 1}, {"a": 1}),
    ({"a": 1}, "$.r", 5, {"a": 1, "r": 5}),
    ({"a": 1}, "$.x.y.z", 5, {"a": 1, "x": {"y": {"z": 5}}}),
    ({"a": {"k": 1}}, "$.a.m", 2, {"a": {"k": 1, "m": 2}}),
    ({"a": {"k": 1}}, "$.a", 2, {"a": 2}),
    ({"l": [1, 2]}, "$.l[1]", 9, {"l": [1, 9]}),
    ({"n": None}, "$.n.x", 1, {"n": {"x": 1}}),
    (3, "$", "x", "x"),
])
def test_put(data: Any, path: str | None, value: Any, expected: Any) -> None:
    before = copy.deepcopy(data)
    assert wf.put(data, path, value) == expected
    assert data == before, "put must not change its input"


@pytest.mark.parametrize(("data", "path"), [(3, "$.a"), ({"a": 3}, "$.a.b"), ({"l": [1]}, "$.l[3]"),
                                            ({"l": 1}, "$.l[0]"), ({}, "nope")])
def test_put_that_cannot_place_raises(data: Any, path: str) -> None:
    with pytest.raises(PathError):
        wf.put(data, path, 1)


def test_parameters_take_paths_at_every_depth() -> None:
    params = {"static": 1, "id.$": "$.order.id", "nested": {"items.$": "$.order.items", "keep": [{"w.$": "$.n"}]},
              "all.$": "$"}
    data = {"order": {"id": 7, "items": ["a"]}, "n": 3}
    assert wf.apply_parameters(params, data) == {
        "static": 1, "id": 7, "nested": {"items": ["a"], "keep": [{"w": 3}]}, "all": data}
    with pytest.raises(PathError):
        wf.apply_parameters({"x.$": "$.missing"}, data)
    with pytest.raises(PathError):
        wf.apply_parameters({"x.$": 5}, data)


# --- choices --------------------------------------------------------------------------------------------

INPUT = {"n": 5, "f": 2.5, "s": "banana", "b": True, "z": None, "l": [1], "o": {"k": "v"}}


@pytest.mark.parametrize(("rule", "expected"), [
    ({"variable": "$.n", "numericEquals": 5}, True),
    ({"variable": "$.n", "numericEquals": 5.0}, True),
    ({"variable": "$.n", "numericEquals": 6}, False),
    ({"variable": "$.f", "numericLessThan": 3}, True),
    ({"variable": "$.f", "numericGreaterThan": 2.5}, False),
    ({"variable": "$.n", "numericLessThanEquals": 5}, True),
    ({"variable": "$.n", "numericGreaterThanEquals": 6}, False),
    ({"variable": "$.s", "numericEquals": 5}, False),  # wrong type: false, not an error
    ({"variable": "$.b", "numericEquals": 1}, False),  # a boolean is not a number
    ({"variable": "$.s", "stringEquals": "banana"}, True),
    ({"variable": "$.s", "stringLessThan": "cherry"}, True),
    ({"variable": "$.s", "stringGreaterThan": "cherry"}, False),
    ({"variable": "$.s", "stringLessThanEquals": "banana"}, True),
    ({"variable": "$.s", "stringGreaterThanEquals": "bananas"}, False),
    ({"variable": "$.n", "stringEquals": "5"}, False),
    ({"variable": "$.s", "stringMatches": "b*na"}, True),
    ({"variable": "$.s", "stringMatches": "*nan*"}, True),
    ({"variable": "$.s", "stringMatches": "b.n*"}, False),  # only * is special
    ({"variable": "$.s", "stringMatches": "ban"}, False),  # the whole string must match
    ({"variable": "$.o.k", "stringMatches": "v\\*"}, False),  # \* is a literal star
    ({"variable": "$.b", "booleanEquals": True}, True),
    ({"variable": "$.b", "booleanEquals": False}, False),
    ({"variable": "$.n", "booleanEquals": True}, False),
    ({"variable": "$.n", "isPresent": True}, True),
    ({"variable": "$.missing", "isPresent": True}, False),
    ({"variable": "$.missing", "isPresent": False}, True),
    ({"variable": "$.z", "isPresent": True}, True),
    ({"variable": "$.z", "isNull": True}, True),
    ({"variable": "$.n", "isNull": False}, True),
    ({"variable": "$.n", "isNumeric": True}, True),
    ({"variable": "$.b", "isNumeric": True}, False),
    ({"variable": "$.s", "isString": True}, True),
    ({"variable": "$.b", "isBoolean": True}, True),
    ({"variable": "$.l", "isString": False}, True),
    # A missing variable makes every comparison but isPresent false (even the negative type tests).
    ({"variable": "$.missing", "numericEquals": 1}, False),
    ({"variable": "$.missing", "isNull": False}, False),
    ({"variable": "$.missing", "isString": False}, False),
    ({"variable": "$.missing", "stringMatches": "*"}, False),
    ({"and": [{"variable": "$.n", "numericEquals": 5}, {"variable": "$.b", "booleanEquals": True}]}, True),
    ({"and": [{"variable": "$.n", "numericEquals": 5}, {"variable": "$.b", "booleanEquals": False}]}, False),
    ({"or": [{"variable": "$.n", "numericEquals": 4}, {"variable": "$.s", "stringEquals": "banana"}]}, True),
    ({"or": [{"variable": "$.n", "numericEquals": 4}, {"variable": "$.missing", "isPresent": True}]}, False),
    ({"not": {"variable": "$.n", "numericEquals": 4}}, True),
    ({"not": {"variable": "$.missing", "numericEquals": 4}}, True),
])
def test_matches(rule: dict[str, Any], expected: bool) -> None:
    assert wf.validate({"startAt": "C", "states": {"C": {"type": "Choice", "choices": [{**rule, "next": "E"}]},
                                                   "E": {"type": "Succeed"}}}) == []
    assert wf.matches(rule, INPUT) is expected


def test_choose_takes_the_first_match_then_the_default() -> None:
    state = {"type": "Choice", "choices": [{"variable": "$.n", "numericGreaterThan": 10, "next": "Big"},
                                           {"variable": "$.n", "numericGreaterThan": 0, "next": "Small"}],
             "default": "Zero"}
    assert wf.choose(state, {"n": 20}) == "Big"
    assert wf.choose(state, {"n": 1}) == "Small"
    assert wf.choose(state, {"n": 0}) == "Zero"
    assert wf.choose({**state, "default": None}, {"n": 0}) is None


# --- errors, retries, transitions -----------------------------------------------------------------------

@pytest.mark.parametrize(("names", "error", "expected"), [
    (["States.ALL"], "ZeroDivisionError", True),
    (["States.ALL"], "States.Timeout", True),
    (["States.TaskFailed"], "ZeroDivisionError", True),
    (["States.TaskFailed"], "States.TaskFailed", True),
    (["States.TaskFailed"], "States.Timeout", False),
    (["States.TaskFailed"], "States.Unavailable", False),
    (["States.Timeout"], "States.Timeout", True),
    (["ValueError", "KeyError"], "KeyError", True),
    (["ValueError"], "KeyError", False),
    ([], "KeyError", False),
])
def test_error_matches(names: list[str], error: str, expected: bool) -> None:
    assert wf.error_matches(names, error) is expected


def test_find_retrier_and_catcher_take_the_first_that_names_the_error() -> None:
    retry = [{"errorEquals": ["States.Timeout"]}, {"errorEquals": ["States.ALL"], "maxAttempts": 1}]
    assert wf.find_retrier(retry, "States.Timeout") == (0, retry[0])
    assert wf.find_retrier(retry, "KeyError") == (1, retry[1])
    assert wf.find_retrier(None, "KeyError") is None
    catch = [{"errorEquals": ["ValueError"], "next": "A"}, {"errorEquals": ["States.TaskFailed"], "next": "B"}]
    assert wf.find_catcher(catch, "KeyError") == catch[1]
    assert wf.find_catcher(catch, "States.Timeout") is None


@pytest.mark.parametrize(("retrier", "delays"), [
    ({}, [1.0, 2.0, 4.0, None]),
    ({"intervalSeconds": 0.5, "maxAttempts": 2, "backoffRate": 3}, [0.5, 1.5, None]),
    ({"maxAttempts": 0}, [None]),
    ({"intervalSeconds": 2, "backoffRate": 1.0, "maxAttempts": 4}, [2.0, 2.0, 2.0, 2.0, None]),
])
def test_retry_delay(retrier: dict[str, Any], delays: list[float | None]) -> None:
    assert [wf.retry_delay(retrier, n) for n in range(1, len(delays) + 1)] == delays
    assert wf.retry_delay(retrier, 0) is None


@pytest.mark.parametrize(("state", "expected"), [
    ({"type": "Task", "function": "f", "next": "B"}, "B"),
    ({"type": "Task", "function": "f", "end": True}, None),
    ({"type": "Pass", "end": False, "next": "C"}, "C"),
    ({"type": "Succeed"}, None),
    ({"type": "Fail"}, None),
    ({"type": "Choice", "choices": []}, None),
])
def test_state_next(state: dict[str, Any], expected: str | None) -> None:
    assert wf.state_next(state) == expected


# --- schedules ------------------------------------------------------------------------------------------

T = datetime(2026, 3, 14, 23, 59, 58, 500000, tzinfo=UTC)  # a Saturday


def _next(text: str, t: datetime, n: int = 1) -> list[datetime]:
    sched, out = wf.parse_schedule(text), []
    for _ in range(n):
        t = sched.next_after(t)
        out.append(t)
    return out


@pytest.mark.parametrize(("text", "start", "expected"), [
    ("@every 2s", T, [T + timedelta(seconds=2), T + timedelta(seconds=4)]),
    ("@every 500ms", T, [T + timedelta(milliseconds=500), T + timedelta(seconds=1)]),
    ("@every 1m30s", T, [T + timedelta(seconds=90), T + timedelta(seconds=180)]),
    ("@every 100ms", T, [T + timedelta(milliseconds=100), T + timedelta(milliseconds=200)]),
    # every second: the next whole second after a fractional time
    ("* * * * * *", T, [datetime(2026, 3, 14, 23, 59, 59, tzinfo=UTC), datetime(2026, 3, 15, 0, 0, 0, tzinfo=UTC)]),
    # */5 across the minute, hour and day boundary
    ("*/5 * * * * *", datetime(2026, 3, 14, 23, 59, 52, tzinfo=UTC),
     [datetime(2026, 3, 14, 23, 59, 55, tzinfo=UTC), datetime(2026, 3, 15, 0, 0, 0, tzinfo=UTC),
      datetime(2026, 3, 15, 0, 0, 5, tzinfo=UTC)]),
    # strictly after: a time that matches is not its own next
    ("0 * * * * *", datetime(2026, 3, 14, 10, 0, 0, tzinfo=UTC),
     [datetime(2026, 3, 14, 10, 1, 0, tzinfo=UTC), datetime(2026, 3, 14, 10, 2, 0, tzinfo=UTC)]),
    ("30 15 * * * *", datetime(2026, 3, 14, 10, 20, 0, tzinfo=UTC),
     [datetime(2026, 3, 14, 11, 15, 30, tzinfo=UTC), datetime(2026, 3, 14, 12, 15, 30, tzinfo=UTC)]),
    ("0 0 9-10 * * *", datetime(2026, 3, 14, 10, 30, 0, tzinfo=UTC),
     [datetime(2026, 3, 15, 9, 0, 0, tzinfo=UTC), datetime(2026, 3, 15, 10, 0, 0, tzinfo=UTC)]),
    ("0 0,30 * * * *", datetime(2026, 3, 14, 10, 29, 59, tzinfo=UTC),
     [datetime(2026, 3, 14, 10, 30, 0, tzinfo=UTC), datetime(2026, 3, 14, 11, 0, 0, tzinfo=UTC)]),
    ("10-20/5 * * * * *", datetime(2026, 3, 14, 10, 0, 12, tzinfo=UTC),
     [datetime(2026, 3, 14, 10, 0, 15, tzinfo=UTC), datetime(2026, 3, 14, 10, 0, 20, tzinfo=UTC),
      datetime(2026, 3, 14, 10, 1, 10, tzinfo=UTC)]),
    ("50/5 * * * * *", datetime(2026, 3, 14, 10, 0, 56, tzinfo=UTC),
     [datetime(2026, 3, 14, 10, 1, 50, tzinfo=UTC)]),
    # Mondays at 08:00 (weekday 1), from a Saturday
    ("0 0 8 * * 1", T, [datetime(2026, 3, 16, 8, 0, 0, tzinfo=UTC), datetime(2026, 3, 23, 8, 0, 0, tzinfo=UTC)]),
    ("0 0 0 * * 7", T, [datetime(2026, 3, 15, 0, 0, 0, tzinfo=UTC)]),  # 7 is Sunday too
    # the 1st of every month, across the year
    ("0 0 0 1 * *", datetime(2026, 12, 5, tzinfo=UTC),
     [datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)]),
    # day of month and day of week both restricted: either fires (cron's rule)
    ("0 0 0 20 * 1", T, [datetime(2026, 3, 16, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC),
                         datetime(2026, 3, 23, tzinfo=UTC)]),
    ("0 0 0 31 * *", datetime(2026, 4, 1, tzinfo=UTC), [datetime(2026, 5, 31, tzinfo=UTC)]),
    ("0 0 0 29 2 *", T, [datetime(2028, 2, 29, tzinfo=UTC)]),
])
def test_schedule_next_times(text: str, start: datetime, expected: list[datetime]) -> None:
    assert _next(text, start, len(expected)) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("@every 50ms", "'@every 50ms': the interval must be at least 100ms"),
    ("@every", "a duration is required, e.g. 500ms, 2s, 1m"),
    ("@every 2", "' 2' is not a duration (units: ms, s, m, h; e.g. 500ms, 2s, 1m30s)"),
    ("@every2s", "'@every2s': expected '@every <duration>'"),
    ("@every 2d", "' 2d' is not a duration (units: ms, s, m, h; e.g. 500ms, 2s, 1m30s)"),
    ("@hourly", "'@hourly': the only @ form is '@every <duration>'"),
    ("* * * * *", "'* * * * *': a cron schedule has 6 fields (second minute hour day month weekday), not 5"),
    ("60 * * * * *", "second 60 is out of range 0-59"),
    ("* * 24 * * *", "hour 24 is out of range 0-23"),
    ("* * * 0 * *", "day of month 0 is out of range 1-31"),
    ("* * * * 13 *", "month 13 is out of range 1-12"),
    ("* * * * * 8", "day of week 8 is out of range 0-7"),
    ("*/0 * * * * *", "second '*/0': the step must be a positive number"),
    ("5-1 * * * * *", "second range '5-1' goes backwards"),
    ("a * * * * *", "second 'a': expected *, a number, a range a-b, a list, or a step /n"),
    ("1,,2 * * * * *", "second '': expected *, a number, a range a-b, a list, or a step /n"),
    ("0 0 0 30 2 *", "'0 0 0 30 2 *': no month in the schedule has such a day, it would never fire"),
    ("", "'': a cron schedule has 6 fields (second minute hour day month weekday), not 0"),
])
def test_bad_schedules(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as e:
        wf.parse_schedule(text)
    assert str(e.value) == message


def test_duration_units() -> None:
    assert wf.parse_duration("1h2m3s4ms") == pytest.approx(3723.004)
    assert wf.parse_duration("1.5s") == 1.5
