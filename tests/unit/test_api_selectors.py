"""Label and field selectors, names and quantities."""

from __future__ import annotations

from fractions import Fraction

import pytest

from minik8s.api import (
    names,
    parse_field_selector,
    parse_label_selector,
    parse_quantity,
    selector_from_dict,
    selector_from_labels,
    selector_to_string,
)
from minik8s.api.quantity import format_cpu, format_memory, is_quantity
from minik8s.errors import BadRequest

LABELS = {"app": "web", "tier": "front", "env": "prod"}


@pytest.mark.parametrize(("text", "matches"), [
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app!=web", False),
    ("app=db", False),
    ("missing!=x", True),
    ("env in (prod,staging)", True),
    ("env in (staging)", False),
    ("env notin (prod)", False),
    ("missing notin (prod)", True),
    ("app", True),
    ("!app", False),
    ("!missing", True),
    ("app=web,tier=front, env in (prod, qa)", True),
    ("app=web,tier=back", False),
    ("example.com/key", False),
])
def test_label_selector_string_form(text: str, matches: bool):
    assert parse_label_selector(text).matches(LABELS) is matches


@pytest.mark.parametrize("text", ["app=a b", "a b", "Bad Key=x", "env in (", "env in ()", "env within (a)",
                                  "=x", "app=x=y", "env in (a,b))", "a/b/c"])
def test_bad_label_selectors_are_bad_requests(text: str):
    with pytest.raises(BadRequest) as err:
        parse_label_selector(text)
    assert err.value.message.startswith("unable to parse requirement:")
    assert err.value.code == 400


def test_label_selector_objects():
    sel = selector_from_dict({"matchLabels": {"app": "web"},
                              "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "qa"]},
                                                   {"key": "canary", "operator": "DoesNotExist"}]})
    assert sel.matches(LABELS)
    assert not sel.matches({**LABELS, "canary": "1"})
    assert not sel.matches(None)
    assert str(sel) == "app=web,!canary,env in (prod,qa)" or str(sel) == "!canary,app=web,env in (prod,qa)"
    assert parse_label_selector(str(sel)) == sel
    assert selector_from_dict({}).empty and selector_from_dict({}).matches({})
    nothing = selector_from_dict(None)
    assert not nothing.empty and not nothing.matches(LABELS)
    assert selector_to_string({"matchLabels": {"b": "2", "a": "1"}}) == "a=1,b=2"
    assert selector_from_labels({"app": "web"}).matches(LABELS)
    with pytest.raises(BadRequest):
        selector_from_dict({"matchExpressions": [{"key": "a", "operator": "Near"}]})
    with pytest.raises(BadRequest):
        selector_from_dict({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})


POD = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "node-1"},
       "status": {"phase": "Running", "podIP": "10.244.1.5"}}


def test_field_selectors():
    assert parse_field_selector("spec.nodeName=node-1", "Pod").matches(POD)
    assert not parse_field_selector("spec.nodeName!=node-1", "Pod").matches(POD)
    assert parse_field_selector("metadata.name==web,status.phase!=Pending", "pods").matches(POD)
    assert parse_field_selector("spec.nodeName=", "Pod").matches({"metadata": {"name": "x"}})
    assert parse_field_selector("", "Pod").empty
    assert parse_field_selector("metadata.name=web", "Deployment").matches(POD)
    assert parse_field_selector("spec.unschedulable=false", "Node").matches({"spec": {}})
    assert parse_field_selector("spec.unschedulable=true", "Node").matches({"spec": {"unschedulable": True}})
    event = {"involvedObject": {"kind": "Pod", "name": "web"}, "source": {"component": "kubelet"},
             "reason": "Started", "type": "Normal"}
    sel = parse_field_selector("involvedObject.kind=Pod,involvedObject.name=web,source=kubelet,type=Normal", "Event")
    assert sel.matches(event)
    assert sel.equals_value("involvedObject.name") == "web"
    assert parse_field_selector(r"metadata.name=a\,b", "Pod").matches({"metadata": {"name": "a,b"}})


@pytest.mark.parametrize(("text", "kind", "message"), [
    ("spec.nodeName=x", "Deployment", "field label not supported: spec.nodeName"),
    ("spec.bogus=x", "Pod", "field label not supported: spec.bogus"),
    ("metadata.name", "Pod", "unable to parse requirement:"),
])
def test_bad_field_selectors(text: str, kind: str, message: str):
    with pytest.raises(BadRequest) as err:
        parse_field_selector(text, kind)
    assert err.value.message.startswith(message)


def test_names():
    assert names.dns1123_label("web-1") == []
    assert names.dns1123_label("a" * 64) == ["must be no more than 63 characters"]
    assert names.dns1123_subdomain("example.com") == []
    assert names.dns1123_subdomain("Bad_Name") == [
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
        "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
    assert names.qualified_name("example.com/My_Name") == []
    assert names.qualified_name("/x") == ["prefix part must be non-empty"]
    assert names.qualified_name("Bad.Prefix/x")[0].startswith("prefix part a lowercase RFC 1123 subdomain")
    assert names.qualified_name("x/")[0] == "name part must be non-empty"
    assert names.label_value("") == []
    assert names.iana_svc_name("http") == []
    assert "must contain at least one letter (a-z)" in names.iana_svc_name("8080")
    assert names.dns1123_label(5) == ["must be a string"]


@pytest.mark.parametrize(("text", "value"), [
    ("100m", Fraction(1, 10)), ("1", Fraction(1)), ("1.5", Fraction(3, 2)), ("1Ki", Fraction(1024)),
    ("1Gi", Fraction(2**30)), ("1e3", Fraction(1000)), ("1E-3", Fraction(1, 1000)), ("5n", Fraction(5, 10**9)),
    ("2u", Fraction(2, 10**6)), ("3k", Fraction(3000)), ("1M", Fraction(10**6)), ("1.5G", Fraction(15 * 10**8)),
    ("-1", Fraction(-1)), ("+2", Fraction(2)), (".5", Fraction(1, 2)), (2, Fraction(2)), (0.25, Fraction(1, 4)),
    ("1Ei", Fraction(2**60)), ("1P", Fraction(10**15)),
])
def test_parse_quantity(text: str | int | float, value: Fraction):
    assert parse_quantity(text) == value
    assert is_quantity(text)


@pytest.mark.parametrize("text", ["", "abc", "1x", "1KiB", "1e", "1e999999", "--1", "1.2.3", True, None, [1],
                                  float("nan"), "m"])
def test_bad_quantities(text):
    with pytest.raises(ValueError):
        parse_quantity(text)
    assert not is_quantity(text)


def test_format_quantities():
    assert format_cpu(Fraction(2)) == "2"
    assert format_cpu(Fraction(1, 4)) == "250m"
    assert format_cpu(Fraction(1234567, 10**9)) == "1234567n"
    assert format_memory(Fraction(512 * 2**20)) == "512Mi"
    assert format_memory(Fraction(5 * 1024)) == "5Ki"
    assert format_memory(Fraction(1000)) == "1000"
    assert format_memory(Fraction(0)) == "0"
