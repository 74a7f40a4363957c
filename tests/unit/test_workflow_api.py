"""The Workflow, WorkflowExecution, Trigger and Rule kinds (docs/workflows.md): registry names, defaults,
validation (the workflow language's causes, schedules, rule targets), the 422 Status the apiserver's
object layer answers, printer columns and discovery."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from apiserver import discovery, tables
from apiserver.objects import Objects
from minik8s.api import apply_defaults, registry, unknown_fields, validate
from minik8s.api.samples import sample
from minik8s.errors import Cause, Invalid
from minik8s.timeutil import now, rfc3339

pytestmark = pytest.mark.timeout(10)

WF = registry.lookup("workflows")
WFX = registry.lookup("workflowexecutions")
TR = registry.lookup("triggers")
RULE = registry.lookup("rules")


def test_names_on_the_wire() -> None:
    for rt, kind, plural in ((WFX, "WorkflowExecution", "workflowexecutions"), (TR, "Trigger", "triggers"),
                             (RULE, "Rule", "rules")):
        assert (rt.api_version, rt.kind, rt.plural, rt.namespaced, rt.in_etcd) == \
            ("minik8s.io/v1", kind, plural, True, True)
        assert registry.lookup(kind) is rt and registry.lookup(rt.singular) is rt
        assert registry.lookup(f"{plural}.minik8s.io") is rt
    assert registry.lookup("wfx") is WFX and registry.lookup("wf") is WF
    assert WFX.subresources == ("status",) and TR.subresources == ("status",) and RULE.subresources == ()
    shorts = [s for r in registry.RESOURCES for s in r.short_names]
    assert len(shorts) == len(set(shorts)), "a short name is used twice"


# --- defaults -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "enabled"), [({"trigger": "t", "function": "f"}, True),
                                                ({"trigger": "t", "workflow": "w", "enabled": False}, False),
                                                ({"trigger": "t", "workflow": "w", "enabled": None}, True)])
def test_rule_enabled_defaults_to_true(spec: dict[str, Any], enabled: bool) -> None:
    rule = {"metadata": {"name": "r"}, "spec": dict(spec)}
    apply_defaults(rule, RULE)
    assert rule["spec"]["enabled"] is enabled
    assert validate(rule, RULE) == []
    again = copy.deepcopy(rule)
    apply_defaults(again, RULE)
    assert again == rule


# --- validation -----------------------------------------------------------------------------------------

def _with(kind: str, change: Callable[[dict[str, Any]], Any]) -> list[Cause]:
    obj = sample(kind)
    change(obj)
    return validate(obj, registry.lookup(kind))


def _spec(**fields: Any) -> Callable[[dict[str, Any]], Any]:
    def change(obj: dict[str, Any]) -> None:
        for k, v in fields.items():
            if v is DEL:
                obj["spec"].pop(k, None)
            else:
                obj["spec"][k] = v
    return change


DEL = object()
_INV, _REQ = "FieldValueInvalid", "FieldValueRequired"

CASES: list[tuple[str, str, Callable[[dict[str, Any]], Any], Cause]] = [
    ("wf-next", "Workflow", lambda o: o["spec"]["states"]["check"].update(next="Nowhere"),
     Cause("spec.states.check.next", '"Nowhere" is not a state', _INV)),
    ("wf-orphan", "Workflow", lambda o: o["spec"]["states"].update(orphan={"type": "Succeed"}),
     Cause("spec.states.orphan", "unreachable from startAt", _INV)),
    ("wf-cycle", "Workflow", lambda o: o["spec"]["states"]["ship"].update(end=None, next="check"),
     Cause("spec.states.check", "cycle check → ship → check has no Wait or Choice", _INV)),
    ("wf-function", "Workflow", lambda o: o["spec"]["states"]["check"].pop("function"),
     Cause("spec.states.check.function", "Required value: the name of a Function in the same namespace", _REQ)),
    ("wf-type", "Workflow", lambda o: o["spec"]["states"]["check"].update(type="Map"),
     Cause("spec.states.check.type",
           'Unsupported value: "Map": supported values: Choice, Fail, Parallel, Pass, Succeed, Task, Wait',
           "FieldValueNotSupported")),
    ("wf-state-unknown", "Workflow", lambda o: o["spec"]["states"]["check"].update(bogus=1),
     Cause("spec.states.check.bogus", 'unknown field "bogus" for a Task state', _INV)),
    ("wf-no-spec", "Workflow", lambda o: o.pop("spec"), Cause("spec", "Required value", _REQ)),
    ("wfx-workflow", "WorkflowExecution", _spec(workflow=DEL), Cause("spec.workflow", "Required value", _REQ)),
    ("wfx-workflow-name", "WorkflowExecution", _spec(workflow="Bad_Name"),
     Cause("spec.workflow", 'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case '
           "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
           "'example.com', regex used for validation is "
           "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')", _INV)),
    ("wfx-definition", "WorkflowExecution", _spec(definition=DEL),
     Cause("spec.definition", "Required value: a copy of the Workflow's spec", _REQ)),
    ("wfx-definition-bad", "WorkflowExecution",
     lambda o: o["spec"]["definition"]["states"]["check"].update(next="x"),
     Cause("spec.definition.states.check", 'state "check" has both next and end: true; exactly one is allowed', _INV)),
    ("wfx-phase", "WorkflowExecution", lambda o: o["status"].update(phase="Done"),
     Cause("status.phase", 'Unsupported value: "Done": supported values: "Failed", "Pending", "Running", "Succeeded"',
           "FieldValueNotSupported")),
    ("wfx-trace-status", "WorkflowExecution", lambda o: o["status"]["trace"][0].update(status="Odd"),
     Cause("status.trace[0].status", 'Unsupported value: "Odd": supported values: "Caught", "Failed", "Retrying", '
           '"Running", "Succeeded"', "FieldValueNotSupported")),
    ("wfx-trace-attempt", "WorkflowExecution", lambda o: o["status"]["trace"][0].update(attempt=-1),
     Cause("status.trace[0].attempt", "Invalid value: -1: must be greater than or equal to 0", _INV)),
    ("trigger-every", "Trigger", _spec(schedule="@every 10ms"),
     Cause("spec.schedule", 'Invalid value: "@every 10ms": the interval must be at least 100ms', _INV)),
    ("trigger-cron-range", "Trigger", _spec(schedule="0 61 * * * *"),
     Cause("spec.schedule", 'Invalid value: "0 61 * * * *": minute 61 is out of range 0-59', _INV)),
    ("trigger-cron-fields", "Trigger", _spec(schedule="*/5 * * * *"),
     Cause("spec.schedule", 'Invalid value: "*/5 * * * *": a cron schedule has 6 fields '
           "(second minute hour day month weekday), not 5", _INV)),
    ("trigger-type", "Trigger", _spec(schedule=5),
     Cause("spec.schedule", "Invalid value: 5: must be a string", "FieldValueTypeInvalid")),
    ("trigger-fire-count", "Trigger", lambda o: o.update(status={"fireCount": -1}),
     Cause("status.fireCount", "Invalid value: -1: must be greater than or equal to 0", _INV)),
    ("rule-trigger", "Rule", _spec(trigger=DEL), Cause("spec.trigger", "Required value", _REQ)),
    ("rule-no-target", "Rule", _spec(function=DEL),
     Cause("spec.function", "Required value: exactly one of `function` or `workflow` is required", _REQ)),
    ("rule-two-targets", "Rule", _spec(workflow="order"),
     Cause("spec.workflow", "Forbidden: may not be set together with `function`: a rule has exactly one target",
           "FieldValueForbidden")),
    ("rule-enabled", "Rule", _spec(enabled="yes"),
     Cause("spec.enabled", 'Invalid value: "yes": must be a boolean', "FieldValueTypeInvalid")),
    ("rule-function-name", "Rule", _spec(function="9lives"),
     Cause("spec.function", 'Invalid value: "9lives": a DNS-1035 label must consist of lower case alphanumeric '
           "characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. "
           "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')", _INV)),
]


@pytest.mark.parametrize(("kind", "change", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation(kind: str, change: Callable[[dict[str, Any]], Any], expected: Cause) -> None:
    causes = _with(kind, change)
    assert expected in causes, causes


@pytest.mark.parametrize("kind", ["Workflow", "WorkflowExecution", "Trigger", "Rule"])
def test_samples_are_valid_and_known(kind: str) -> None:
    obj = sample(kind)
    rt = registry.lookup(kind)
    apply_defaults(obj, rt)
    assert validate(obj, rt) == [] and unknown_fields(obj, rt) == []


@pytest.mark.parametrize("schedule", ["@every 2s", "@every 100ms", "@every 1m", "*/5 * * * * *", "0 0 8 * * 1-5",
                                      "0 0,30 9-17 * * *", "0 0 0 1 1,7 *"])
def test_schedules_that_pass(schedule: str) -> None:
    trigger = sample("Trigger")
    trigger["spec"]["schedule"] = schedule
    assert validate(trigger, TR) == []


def test_a_trigger_without_schedule_is_valid() -> None:
    assert validate({"metadata": {"name": "t"}, "spec": {}}, TR) == []
    assert validate({"metadata": {"name": "t"}}, TR) == []


def test_an_execution_spec_is_immutable_but_its_status_moves() -> None:
    old = sample("WorkflowExecution")
    new = copy.deepcopy(old)
    new["status"] = {"phase": "Succeeded", "output": {"ok": True}}
    assert validate(new, WFX, old=old) == []
    new["spec"]["input"] = {"id": 8}
    causes = validate(new, WFX, old=old)
    assert [c.field for c in causes] == ["spec"] and causes[0].message.endswith("field is immutable")


def test_unknown_fields_of_the_new_kinds() -> None:
    rule = sample("Rule")
    rule["spec"]["target"] = "x"
    assert unknown_fields(rule, RULE) == ["spec.target"]
    trig = sample("Trigger")
    trig["status"] = {"fireCount": 1, "fired": 2}
    assert unknown_fields(trig, TR) == ["status.fired"]
    wfx = sample("WorkflowExecution")
    wfx["status"]["trace"][0]["extra"] = 1
    assert unknown_fields(wfx, WFX) == ["status.trace[0].extra"]


# --- the 422 answer -------------------------------------------------------------------------------------

def _objects() -> Objects:
    # Validation needs no storage: the store and allocators are never touched on this path.
    return Objects(None, {}, ip_alloc=None, port_alloc=None, ip_range="", event_ttl=0)  # type: ignore[arg-type]


def test_a_bad_workflow_is_a_422_status_with_the_language_causes() -> None:
    obj = sample("Workflow")
    obj["spec"]["states"]["check"]["catch"] = [{"errorEquals": ["States.ALL"], "next": "Nowhere"}]
    obj["spec"]["states"]["lost"] = {"type": "Pass", "end": True}
    with pytest.raises(Invalid) as e:
        _objects()._validate(WF, obj)
    status = e.value.to_status()
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 422, "Invalid")
    assert status["details"]["kind"] == "Workflow" and status["details"]["group"] == "minik8s.io"
    assert status["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": '"Nowhere" is not a state',
         "field": "spec.states.check.catch[0].next"},
        {"reason": "FieldValueInvalid", "message": "unreachable from startAt", "field": "spec.states.lost"}]
    assert 'spec.states.check.catch[0].next: "Nowhere" is not a state' in status["message"]


def test_a_bad_rule_and_trigger_are_422() -> None:
    rule = sample("Rule")
    del rule["spec"]["function"]
    with pytest.raises(Invalid) as e:
        _objects()._validate(RULE, rule)
    assert [c.field for c in e.value.causes] == ["spec.function"]
    trig = sample("Trigger")
    trig["spec"]["schedule"] = "@every soon"
    with pytest.raises(Invalid) as e:
        _objects()._validate(TR, trig)
    assert [c.field for c in e.value.causes] == ["spec.schedule"]


# --- printing and discovery -----------------------------------------------------------------------------

def _cells(rt: registry.ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    names = [c[0] for c in tables.columns_of(rt)]
    return dict(zip(names, tables.row_of(rt, obj)["cells"], strict=True))


def test_workflow_columns() -> None:
    cells = _cells(WF, sample("Workflow"))
    assert cells == {"Name": "order", "Start": "check", "States": 2, "Age": cells["Age"]}


def test_execution_columns() -> None:
    x = sample("WorkflowExecution")
    x["status"]["startTime"] = rfc3339()
    cells = _cells(WFX, x)
    assert list(cells) == ["Name", "Workflow", "Phase", "Current", "Started", "Duration"]
    assert (cells["Name"], cells["Workflow"], cells["Phase"], cells["Current"]) == \
        ("order-0a1b2c3d", "order", "Running", "check")
    x["status"].update(phase="Succeeded", current=[], startTime="2026-01-02T03:04:05Z",
                       completionTime="2026-01-02T03:06:10Z")
    cells = _cells(WFX, x)
    assert (cells["Phase"], cells["Current"], cells["Duration"]) == ("Succeeded", "<none>", "2m5s")
    bare = _cells(WFX, {"metadata": {"name": "x"}})
    assert (bare["Phase"], bare["Started"], bare["Duration"]) == ("Pending", "<none>", "<none>")


def test_trigger_and_rule_columns() -> None:
    t = sample("Trigger")
    cells = _cells(TR, t)
    assert list(cells) == ["Name", "Schedule", "Fired", "Last", "Age"]
    assert (cells["Schedule"], cells["Fired"], cells["Last"]) == ("@every 2s", 0, "<never>")
    t["status"] = {"fireCount": 12, "lastFireTime": rfc3339(now())}
    cells = _cells(TR, t)
    assert cells["Fired"] == 12 and cells["Last"] in ("0s", "1s")
    assert _cells(TR, {"metadata": {"name": "manual"}, "spec": {}})["Schedule"] == "<none>"
    r = sample("Rule")
    cells = _cells(RULE, r)
    assert list(cells) == ["Name", "Trigger", "Target", "Enabled", "Age"]
    assert (cells["Trigger"], cells["Target"], cells["Enabled"]) == ("tick", "function/hello", "true")
    r["spec"] = {"trigger": "tick", "workflow": "order", "enabled": False}
    cells = _cells(RULE, r)
    assert (cells["Target"], cells["Enabled"]) == ("workflow/order", "false")


def test_discovery_lists_the_new_kinds() -> None:
    doc = discovery.resource_list("minik8s.io", "v1")
    assert doc is not None
    by_name = {r["name"]: r for r in doc["resources"]}
    assert by_name["workflowexecutions"]["kind"] == "WorkflowExecution"
    assert by_name["workflowexecutions"]["shortNames"] == ["wfx"]
    assert by_name["workflowexecutions/status"]["verbs"] == ["get", "patch", "update"]
    assert by_name["triggers"]["kind"] == "Trigger" and "triggers/status" in by_name
    assert by_name["rules"]["kind"] == "Rule" and "rules/status" not in by_name
    assert by_name["rules"]["namespaced"] is True and "watch" in by_name["rules"]["verbs"]
