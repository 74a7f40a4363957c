"""The Function and Activation kinds (docs/serverless.md, "Objects"): registry names, defaults,
validation with Kubernetes' wording, strict field knowledge, printer columns and discovery."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from apiserver import discovery, tables
from minik8s.api import apply_defaults, registry, unknown_fields, validate
from minik8s.api.samples import sample
from minik8s.errors import Cause

pytestmark = pytest.mark.timeout(10)

FN = registry.lookup("functions")
ACT = registry.lookup("activations")
DIGEST = "sha256:" + "ab" * 32


def test_names_on_the_wire() -> None:
    assert (FN.api_version, FN.plural, FN.singular, FN.namespaced) == ("minik8s.io/v1", "functions", "function", True)
    assert registry.lookup("fn") is FN and registry.lookup("function.minik8s.io") is FN
    assert "code" in FN.subresources and "status" in FN.subresources
    assert (ACT.api_version, ACT.kind, ACT.plural, ACT.singular, ACT.namespaced) == \
        ("minik8s.io/v1", "Activation", "activations", "activation", True)
    assert registry.lookup("act") is ACT and registry.lookup("Activation") is ACT
    assert ACT.subresources == ()
    shorts = [s for r in registry.RESOURCES for s in r.short_names]
    assert len(shorts) == len(set(shorts)), "a short name is used twice"


# --- defaults ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "expected"), [
    ({}, {"runtime": "python", "entryPoint": "run", "minScale": 0, "maxScale": 10, "targetConcurrency": 2,
          "idleTimeout": 60, "timeout": 60}),
    ({"minScale": 3, "timeout": 5, "entryPoint": "main"},
     {"runtime": "python", "entryPoint": "main", "minScale": 3, "maxScale": 10, "targetConcurrency": 2,
      "idleTimeout": 60, "timeout": 5}),
    # A minScale above the default maximum lifts the default maximum with it.
    ({"minScale": 20}, {"runtime": "python", "entryPoint": "run", "minScale": 20, "maxScale": 20,
                        "targetConcurrency": 2, "idleTimeout": 60, "timeout": 60}),
    ({"maxScale": 1, "targetConcurrency": 7, "idleTimeout": 0.5},
     {"runtime": "python", "entryPoint": "run", "minScale": 0, "maxScale": 1, "targetConcurrency": 7,
      "idleTimeout": 0.5, "timeout": 60}),
])
def test_function_defaults(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    fn = {"metadata": {"name": "f"}, "spec": dict(spec)}
    apply_defaults(fn, FN)
    assert fn["spec"] == expected
    assert validate(fn, FN) == []
    again = copy.deepcopy(fn)
    apply_defaults(again, FN)
    assert again == fn


# --- validation --------------------------------------------------------------------------------------

def _fn(**spec: Any) -> dict[str, Any]:
    obj = sample("Function")
    obj["spec"].update(spec)
    return obj


def _inv(field: str, value: str, detail: str) -> Cause:
    return Cause(field, f"Invalid value: {value}: {detail}", "FieldValueInvalid")


FUNCTION_CASES: list[tuple[str, dict[str, Any], Cause]] = [
    ("runtime", {"runtime": "go"},
     Cause("spec.runtime", 'Unsupported value: "go": supported values: "python"', "FieldValueNotSupported")),
    ("digest-short", {"codeDigest": "sha256:abc"},
     _inv("spec.codeDigest", '"sha256:abc"', "must be a digest of the form 'sha256:<64 lower-case hex digits>'")),
    ("digest-upper", {"codeDigest": "sha256:" + "AB" * 32},
     _inv("spec.codeDigest", '"sha256:' + "AB" * 32 + '"',
          "must be a digest of the form 'sha256:<64 lower-case hex digits>'")),
    ("entry", {"entryPoint": "not-an-id"}, _inv("spec.entryPoint", '"not-an-id"', "must be a Python identifier")),
    ("entry-digit", {"entryPoint": "1run"}, _inv("spec.entryPoint", '"1run"', "must be a Python identifier")),
    ("min-neg", {"minScale": -1}, _inv("spec.minScale", "-1", "must be greater than or equal to 0")),
    ("min-gt-max", {"minScale": 3, "maxScale": 2},
     _inv("spec.maxScale", "2", "must be greater than or equal to `minScale`")),
    ("max-zero", {"minScale": 0, "maxScale": 0}, _inv("spec.maxScale", "0", "must be greater than or equal to 1")),
    ("max-huge", {"maxScale": 1001}, _inv("spec.maxScale", "1001", "must be less than or equal to 1000")),
    ("min-huge", {"minScale": 1001, "maxScale": 1000},
     _inv("spec.minScale", "1001", "must be less than or equal to 1000")),
    ("max-type", {"maxScale": "5"},
     Cause("spec.maxScale", 'Invalid value: "5": must be an integer', "FieldValueTypeInvalid")),
    ("target", {"targetConcurrency": 0},
     _inv("spec.targetConcurrency", "0", "must be greater than or equal to 1")),
    ("idle-zero", {"idleTimeout": 0}, _inv("spec.idleTimeout", "0", "must be greater than 0")),
    ("idle-neg", {"idleTimeout": -1}, _inv("spec.idleTimeout", "-1", "must be greater than 0")),
    ("timeout-zero", {"timeout": 0}, _inv("spec.timeout", "0", "must be greater than 0")),
    ("timeout-huge", {"timeout": 901}, _inv("spec.timeout", "901", "must be less than or equal to 900")),
    ("timeout-type", {"timeout": True},
     Cause("spec.timeout", "Invalid value: true: must be a finite number", "FieldValueTypeInvalid")),
    ("env-name", {"env": [{"name": "1BAD", "value": "x"}]},
     Cause("spec.env[0].name", 'Invalid value: "1BAD": a valid environment variable name must consist of '
           "alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  "
           "or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')",
           "FieldValueInvalid")),
    ("resources", {"resources": {"requests": {"cpu": "lots"}}},
     _inv("spec.resources.requests[cpu]", '"lots"',
          "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in FUNCTION_CASES], ids=[c[0] for c in FUNCTION_CASES])
def test_function_validation(spec: dict[str, Any], expected: Cause) -> None:
    causes = validate(_fn(**spec), FN)
    assert expected in causes, causes


@pytest.mark.parametrize("spec", [
    {"codeDigest": DIGEST}, {"minScale": 1000, "maxScale": 1000}, {"timeout": 900}, {"timeout": 0.5},
    {"idleTimeout": 1e-3}, {"entryPoint": "_private2"}, {"maxScale": 1, "minScale": 1},
])
def test_function_edges_that_pass(spec: dict[str, Any]) -> None:
    assert validate(_fn(**spec), FN) == []


def test_function_name_must_be_a_service_name() -> None:
    fn = _fn()
    fn["metadata"]["name"] = "1add"
    [cause] = validate(fn, FN)
    assert cause.field == "metadata.name" and "DNS-1035" in cause.message


def test_function_without_spec_is_required() -> None:
    assert validate({"metadata": {"name": "f"}}, FN) == [Cause("spec", "Required value", "FieldValueRequired")]


def test_every_status_field_of_the_contract_is_known_and_checked() -> None:
    fn = sample("Function")
    fn["status"] = {"codeDigest": DIGEST, "image": "127.0.0.1:5000/minik8s-functions/default/hello@" + DIGEST,
                    "replicas": 1, "readyReplicas": 1, "desiredScale": 2, "lastActiveTime": "2026-01-01T00:00:00Z",
                    "url": "http://127.0.0.1:18081/function/default/hello", "observedGeneration": 3,
                    "conditions": [{"type": "Built", "status": "True", "reason": "Built", "message": "ok",
                                    "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3},
                                   {"type": "Ready", "status": "True", "reason": "ScaledToZero"}]}
    assert unknown_fields(fn, FN) == []
    assert validate(fn, FN) == []
    fn["status"].update(desiredScale=-1, codeDigest="md5:x", bogus=1)
    assert unknown_fields(fn, FN) == ["status.bogus"]
    fields = {c.field for c in validate(fn, FN)}
    assert fields == {"status.desiredScale", "status.codeDigest"}


def _act(**spec: Any) -> dict[str, Any]:
    obj = sample("Activation")
    obj["spec"].update(spec)
    return obj


ACTIVATION_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], Cause]] = [
    ("function-missing", lambda o: o["spec"].pop("function"),
     Cause("spec.function", "Required value", "FieldValueRequired")),
    ("spec-missing", lambda o: o.pop("spec"), Cause("spec.function", "Required value", "FieldValueRequired")),
    ("status", lambda o: o["spec"].update(status="weird"),
     Cause("spec.status", 'Unsupported value: "weird": supported values: "bad-request", "error", "success", '
           '"timeout", "unavailable"', "FieldValueNotSupported")),
    ("duration", lambda o: o["spec"].update(durationMs=-2),
     _inv("spec.durationMs", "-2", "must be greater than or equal to 0")),
    ("code", lambda o: o["spec"].update(statusCode=1000),
     _inv("spec.statusCode", "1000", "must be between 0 and 999, inclusive")),
    ("result", lambda o: o["spec"].update(result="x" * 4097),
     Cause("spec.result", "Too long: must have at most 4096 characters", "FieldValueTooLong")),
    ("logs", lambda o: o["spec"].update(logs="x" * 16385),
     Cause("spec.logs", "Too long: must have at most 16384 characters", "FieldValueTooLong")),
    ("async", lambda o: o["spec"].update({"async": "yes"}),
     Cause("spec.async", 'Invalid value: "yes": must be a boolean', "FieldValueTypeInvalid")),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in ACTIVATION_CASES],
                         ids=[c[0] for c in ACTIVATION_CASES])
def test_activation_validation(change: Callable[[dict[str, Any]], Any], expected: Cause) -> None:
    obj = _act()
    change(obj)
    causes = validate(obj, ACT)
    assert expected in causes, causes


def test_activation_sample_and_limits_pass() -> None:
    obj = _act(result="x" * 4096, logs="y" * 16384, status="timeout", statusCode=504, truncated=True)
    obj["spec"]["async"] = True
    assert validate(obj, ACT) == [] and unknown_fields(obj, ACT) == []
    obj["spec"]["extra"] = 1
    assert unknown_fields(obj, ACT) == ["spec.extra"]


# --- printing and discovery --------------------------------------------------------------------------

def _cells(rt: registry.ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    names = [c[0] for c in tables.columns_of(rt)]
    return dict(zip(names, tables.row_of(rt, obj)["cells"], strict=True))


def test_function_columns() -> None:
    fn = sample("Function")
    apply_defaults(fn, FN)
    fn["status"] = {"readyReplicas": 1, "replicas": 1, "desiredScale": 2, "url": "http://gw/function/default/hello",
                    "image": "reg/x@" + DIGEST, "conditions": [{"type": "Built", "status": "True"}]}
    cells = _cells(FN, fn)
    assert list(cells)[:6] == ["Name", "Ready", "Scale", "Code", "URL", "Age"]
    assert cells["Ready"] == "1/2" and cells["Scale"] == "0-5" and cells["Built"] == "True"
    assert cells["Code"] == fn["spec"]["codeDigest"][7:19] and cells["URL"] == "http://gw/function/default/hello"
    bare = _cells(FN, {"metadata": {"name": "x"}, "spec": {}})
    assert bare["Ready"] == "0/0" and bare["Code"] == "<none>" and bare["URL"] == "<none>"


def test_activation_columns() -> None:
    cells = _cells(ACT, _act(durationMs=1234.56, initMs=3.21))
    assert list(cells)[:7] == ["Name", "Function", "Status", "Code", "Duration", "Init", "Age"]
    assert (cells["Function"], cells["Status"], cells["Code"]) == ("hello", "success", 200)
    assert (cells["Duration"], cells["Init"]) == ("1235ms", "3.2ms")
    assert _cells(ACT, {"metadata": {"name": "a"}})["Duration"] == "<none>"


def test_discovery_lists_functions_code_and_activations() -> None:
    doc = discovery.resource_list("minik8s.io", "v1")
    assert doc is not None
    by_name = {r["name"]: r for r in doc["resources"]}
    assert by_name["functions"]["shortNames"] == ["fn", "func"]
    assert by_name["functions/code"]["verbs"] == ["create"]
    assert by_name["functions/status"]["verbs"] == ["get", "patch", "update"]
    assert by_name["activations"]["kind"] == "Activation" and by_name["activations"]["shortNames"] == ["act"]
    assert "activations/status" not in by_name
    # The gateway keeps them: the apiserver only proxies reads and deletes (no watch, no writes).
    assert by_name["activations"]["verbs"] == ["delete", "get", "list"]
    assert not ACT.in_etcd and ACT not in registry.STORED and registry.lookup("functions") in registry.STORED
