"""The JSONPath subset of ``-o jsonpath=``, and small printer helpers."""

from __future__ import annotations

import pytest

from minictl.jsonpath import JsonPathError, render
from minictl.printers import TablePrinter, human_duration

DATA = {
    "kind": "List",
    "items": [
        {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "web"}},
         "spec": {"containers": [{"name": "c1", "image": "busybox"}, {"name": "c2", "image": "python:3.11"}]},
         "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"},
                                                         {"type": "Scheduled", "status": "True"}]}},
        {"metadata": {"name": "b"}, "spec": {"replicas": 3, "paused": False}, "status": {}},
    ],
}


@pytest.mark.parametrize(("template", "expected"), [
    ("{.kind}", "List"),
    ("{.items[*].metadata.name}", "a b"),
    ("{.items[0].status.podIP}", "10.0.0.1"),
    ("{.items[-1].metadata.name}", "b"),
    ("{.items[0:1].metadata.name}", "a"),
    ("{.items[1].spec.replicas}", "3"),
    ("{.items[1].spec.paused}", "false"),
    ("{.items[1].metadata}", '{"name":"b"}'),
    ("{.items[0].metadata.labels['app.kubernetes.io/name']}", "web"),
    ('{.items[0].status.conditions[?(@.type=="Ready")].status}', "True"),
    ("{.items[0].status.conditions[?(@.type!='Ready')].type}", "Scheduled"),
    ("{.items[?(@.spec.replicas>2)].metadata.name}", "b"),
    ("{.items[?(@.status.podIP)].metadata.name}", "a"),
    ("{.items[0].spec.containers[*].image}", "busybox python:3.11"),
    ("{..image}", "busybox python:3.11"),
    ("{.items[1].status.podIP}", ""),
    ("{.nope.deeper}", ""),
    ("name: {$.items[0].metadata.name}!", "name: a!"),
    ('{range .items[*]}{.metadata.name}{"\\t"}{.status.podIP}{"\\n"}{end}', "a\t10.0.0.1\nb\t\n"),
    ("{range .items[*]}[{range .spec.containers[*]}{.name},{end}]{end}", "[c1,c2,][]"),
])
def test_templates(template, expected):
    assert render(template, DATA) == expected


@pytest.mark.parametrize("template", ["{.items[", "{range .items[*]}{.a}", "{end}", "{.a", "{foo}",
                                      "{.items[x]}", '{"unterminated}'])
def test_bad_templates(template):
    with pytest.raises(JsonPathError):
        render(template, DATA)


@pytest.mark.parametrize(("seconds", "text"), [
    (5, "5s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (3 * 3600 + 120, "3h2m"), (20 * 3600, "20h"),
    (3 * 86400 + 3600, "3d1h"), (40 * 86400, "40d"), (-5, "<invalid>"),
])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_table_watch_rows_line_up_with_the_first_table():
    table = {"columnDefinitions": [{"name": "Name", "format": "name", "priority": 0},
                                   {"name": "Status", "priority": 0}, {"name": "IP", "priority": 1}]}
    printer = TablePrinter(table)
    assert printer.lines([{"cells": ["longname", "Running", "10.0.0.1"]}]) == [
        "NAME       STATUS", "longname   Running"]
    assert printer.watch_line({"cells": ["a", "Pending", None]}) == "a          Pending"
