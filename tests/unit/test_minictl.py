"""minictl against an in-memory fake apiserver (httpx.MockTransport): output shapes, error lines, exit codes."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from click.testing import CliRunner

from minictl.main import Session, cli
from minik8s.api import registry

POD_YAML = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  containers:
  - name: c
    image: busybox
    ports:
    - containerPort: 80
"""


class FakeApi:
    """Just enough of the apiserver: CRUD with resourceVersions, Tables, discovery, Status errors."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict] = {}
        self.rv = 100
        self.requests: list[httpx.Request] = []
        self.events: list[dict] = []

    @staticmethod
    def status(code: int, reason: str, message: str, **details: object) -> httpx.Response:
        return httpx.Response(code, json={"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "reason": reason, "message": message, "code": code, "details": details})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/version":
            return httpx.Response(200, json={"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake"})
        if path == "/api/v1" or re.fullmatch(r"/apis/[^/]+/[^/]+", path):
            gv = path[len("/api/"):] if path.startswith("/api/") else path[len("/apis/"):]
            return httpx.Response(200, json={"kind": "APIResourceList", "groupVersion": gv, "resources": [
                {"name": r.plural, "namespaced": r.namespaced, "kind": r.kind, "shortNames": list(r.short_names),
                 "verbs": list(r.verbs)} for r in registry.RESOURCES if r.api_version == gv]
                + [{"name": f"{r.plural}/status", "namespaced": r.namespaced, "kind": r.kind}
                   for r in registry.RESOURCES if r.api_version == gv]})
        if path == "/apis":
            groups = [g for g in registry.groups() if g]
            return httpx.Response(200, json={"kind": "APIGroupList", "groups": [
                {"name": g, "preferredVersion": {"groupVersion": f"{g}/{registry.groups()[g][0]}"}} for g in groups]})
        m = re.fullmatch(r"/(?:api/(v1)|apis/([^/]+)/([^/]+))(?:/namespaces/([^/]+))?/([^/]+)(?:/([^/]+))?", path)
        if not m:
            return self.status(404, "NotFound", "the server could not find the requested resource")
        version, group, gversion, ns, plural, name = m.groups()
        rt = registry.by_plural(group or "", gversion or version, plural)
        if rt is None:
            return self.status(404, "NotFound", "the server could not find the requested resource")
        key = (rt.plural, ns if rt.namespaced else None, name or "")
        table = "as=Table" in request.headers.get("accept", "")
        if request.method == "GET" and request.url.params.get("watch"):
            return httpx.Response(200, content=b"")
        if request.method == "GET" and name:
            if key not in self.objects:
                return self.status(404, "NotFound", f'{rt.qualified} "{name}" not found', kind=rt.plural, name=name)
            obj = self.objects[key]
            return httpx.Response(200, json=self.table(rt, [obj]) if table else obj)
        if request.method == "GET":
            items = [o for (p, n, _), o in sorted(self.objects.items(), key=lambda kv: (kv[0][1] or "", kv[0][2]))
                     if p == rt.plural and (ns is None or n == ns)]
            if rt.kind == "Event":
                items = list(self.events)
            sel = request.url.params.get("labelSelector")
            if sel:
                k, v = sel.split("=")
                items = [o for o in items if o["metadata"].get("labels", {}).get(k) == v]
            if table:
                return httpx.Response(200, json=self.table(rt, items))
            return httpx.Response(200, json={"kind": rt.list_kind, "apiVersion": rt.api_version,
                                             "metadata": {"resourceVersion": str(self.rv)}, "items": items})
        if request.method == "POST":
            obj = json.loads(request.content)
            obj_name = obj["metadata"]["name"]
            key = (rt.plural, ns if rt.namespaced else None, obj_name)
            if key in self.objects:
                return self.status(409, "AlreadyExists", f'{rt.qualified} "{obj_name}" already exists',
                                   kind=rt.plural, name=obj_name)
            image = (obj.get("spec", {}).get("containers") or [{}])[0].get("image", "x")
            if rt.kind == "Pod" and not image:
                return self.status(422, "Invalid", "ignored by kubectl", kind="Pod", name=obj_name, causes=[
                    {"field": "spec.containers[0].image", "message": "Required value", "reason": "FieldValueRequired"}])
            return self.store(rt, key, obj, ns, code=201)
        if request.method == "PUT":
            obj = json.loads(request.content)
            if key not in self.objects:
                return self.status(404, "NotFound", f'{rt.qualified} "{name}" not found')
            if obj["metadata"].get("resourceVersion") != self.objects[key]["metadata"]["resourceVersion"]:
                return self.status(409, "Conflict", "the object has been modified")
            return self.store(rt, key, obj, ns)
        if request.method == "DELETE":
            if key not in self.objects:
                return self.status(404, "NotFound", f'{rt.qualified} "{name}" not found', kind=rt.plural, name=name)
            return httpx.Response(200, json=self.objects.pop(key))
        return self.status(405, "MethodNotAllowed", "no")

    def store(self, rt, key, obj, ns, code=200) -> httpx.Response:
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", f"uid-{self.rv}")
        meta.setdefault("creationTimestamp", "2024-01-01T00:00:00Z")
        if rt.namespaced:
            meta["namespace"] = ns
        for c in obj.get("spec", {}).get("containers", []):
            for p in c.get("ports", []):
                p.setdefault("protocol", "TCP")  # a server-side default, as the real apiserver sets
        obj.setdefault("status", {"phase": "Pending"} if rt.kind == "Pod" else {})
        self.objects[key] = obj
        return httpx.Response(code, json=obj)

    def table(self, rt, objs) -> dict:
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(self.rv)},
                "columnDefinitions": [
                    {"name": "Name", "type": "string", "format": "name", "priority": 0},
                    {"name": "Status", "type": "string", "format": "", "priority": 0},
                    {"name": "Nominated Node", "type": "string", "format": "", "priority": 1},
                    {"name": "Age", "type": "string", "format": "", "priority": 0}],
                "rows": [{"cells": [o["metadata"]["name"], o.get("status", {}).get("phase", "Active"), None, "5m"],
                          "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                     "metadata": o["metadata"]}} for o in objs]}

    def add(self, kind: str, name: str, ns: str | None = "default", labels: dict | None = None, **extra) -> dict:
        rt = registry.lookup(kind)
        meta = {"name": name, **({"labels": labels} if labels else {})}
        obj = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta, **extra}
        self.store(rt, (rt.plural, ns if rt.namespaced else None, name), obj, ns if rt.namespaced else None)
        return obj


@pytest.fixture()
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture()
def run(api, monkeypatch, tmp_path):
    monkeypatch.setenv("MINIK8S_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINIK8S_SERVER", raising=False)
    monkeypatch.delenv("MINIK8S_DEBUG", raising=False)

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, ["-s", "http://fake", *args], obj=Session(transport=httpx.MockTransport(api)),
                                  input=input)
    return invoke


def test_get_prints_a_kubectl_table(run, api):
    api.add("pod", "web-1")
    api.add("pod", "db")
    result = run("get", "pods")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "NAME    STATUS    AGE",
        "db      Pending   5m",
        "web-1   Pending   5m",
    ]


def test_get_wide_all_namespaces_and_labels(run, api):
    api.add("pod", "a", labels={"app": "x", "tier": "db"})
    api.add("pod", "b", ns="other")
    result = run("get", "po", "-A", "-o", "wide", "--show-labels")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "NAMESPACE   NAME   STATUS    NOMINATED NODE   AGE   LABELS",
        "default     a      Pending   <none>           5m    app=x,tier=db",
        "other       b      Pending   <none>           5m    <none>",
    ]
    assert api.requests[-1].url.path == "/api/v1/pods"


def test_get_empty_says_so_on_stderr(run):
    result = run("get", "pods", "-n", "team")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "No resources found in team namespace.\n"


def test_get_several_kinds_prefixes_names(run, api):
    api.add("pod", "p")
    api.add("deploy", "d")
    result = run("get", "all")
    assert result.exit_code == 0
    assert "pod/p " in result.stdout and "deployment.apps/d " in result.stdout
    assert "\n\nNAME" in result.stdout


def test_get_missing_name_is_one_line_and_exit_1(run, api):
    api.add("pod", "a")
    result = run("get", "pod", "a", "nope")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[1].startswith("a ")
    assert result.stderr == 'Error from server (NotFound): pods "nope" not found\n'


def test_get_yaml_json_name(run, api):
    api.add("pod", "a")
    api.add("pod", "b")
    one = run("get", "pod", "a", "-o", "yaml")
    assert one.exit_code == 0 and "kind: Pod" in one.stdout and "name: a" in one.stdout
    many = json.loads(run("get", "pods", "-o", "json").stdout)
    assert many["kind"] == "List" and [i["metadata"]["name"] for i in many["items"]] == ["a", "b"]
    assert all(i["kind"] == "Pod" for i in many["items"])
    assert run("get", "pods", "-o", "name").stdout == "pod/a\npod/b\n"
    assert run("get", "deploy", "-o", "name").stdout == ""


def test_get_jsonpath(run, api):
    api.add("pod", "a", status={"podIP": "10.0.0.5"})
    api.add("pod", "b")
    assert run("get", "pod", "a", "-o", "jsonpath={.status.podIP}").stdout == "10.0.0.5"
    assert run("get", "pods", "-o", "jsonpath={.items[*].metadata.name}").stdout == "a b"
    out = run("get", "pods", "-o", 'jsonpath={range .items[*]}{.metadata.name}{"\\n"}{end}').stdout
    assert out == "a\nb\n"


def test_bad_output_format_and_kind(run):
    result = run("get", "pods", "-o", "xml")
    assert result.exit_code == 1
    assert result.stderr.startswith('error: unable to match a printer suitable for the output format "xml"')
    result = run("get", "gizmos")
    assert result.exit_code == 1
    assert result.stderr == 'error: the server doesn\'t have a resource type "gizmos"\n'


def test_apply_creates_then_is_unchanged_then_configured(run, api, tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD_YAML.format(name="web"))
    first = run("apply", "-f", str(f))
    assert (first.exit_code, first.stdout) == (0, "pod/web created\n")
    second = run("apply", "-f", str(f))
    assert (second.exit_code, second.stdout) == (0, "pod/web unchanged\n")
    f.write_text(POD_YAML.format(name="web").replace("busybox", "python:3.11"))
    third = run("apply", "-f", str(f))
    assert (third.exit_code, third.stdout) == (0, "pod/web configured\n")
    live = api.objects[("pods", "default", "web")]
    assert live["spec"]["containers"][0]["image"] == "python:3.11"
    assert live["spec"]["containers"][0]["ports"][0]["protocol"] == "TCP"  # server default kept
    assert live["status"] == {"phase": "Pending"}
    assert live["metadata"]["uid"]
    puts = [r for r in api.requests if r.method == "PUT"]
    assert len(puts) == 1


def test_apply_removes_fields_the_manifest_dropped(run, api, tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD_YAML.format(name="web"))
    run("apply", "-f", str(f))
    f.write_text(POD_YAML.format(name="web").replace("  labels: {app: web}\n", ""))
    assert run("apply", "-f", str(f)).stdout == "pod/web configured\n"
    assert "labels" not in api.objects[("pods", "default", "web")]["metadata"]


def test_apply_retries_on_conflict(run, api, tmp_path, monkeypatch):
    f = tmp_path / "pod.yaml"
    f.write_text(POD_YAML.format(name="web"))
    run("apply", "-f", str(f))
    original = api.__class__.__call__
    conflicts = [1]

    def flaky(self, request):
        if request.method == "PUT" and conflicts[0]:
            conflicts[0] -= 1
            return self.status(409, "Conflict", "the object has been modified")
        return original(self, request)

    monkeypatch.setattr(FakeApi, "__call__", flaky)
    f.write_text(POD_YAML.format(name="web").replace("busybox", "python:3.11"))
    result = run("apply", "-f", str(f))
    assert (result.exit_code, result.stdout) == (0, "pod/web configured\n")


def test_apply_from_stdin_with_namespace(run, api):
    result = run("apply", "-f", "-", "-n", "team", input=POD_YAML.format(name="x"))
    assert result.exit_code == 0 and result.stdout == "pod/x created\n"
    assert ("pods", "team", "x") in api.objects


def test_apply_invalid_prints_kubectl_422_line(run, tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD_YAML.format(name="bad").replace("image: busybox", "image: ''"))
    result = run("apply", "-f", str(f))
    assert result.exit_code == 1
    assert result.stderr == 'The Pod "bad" is invalid: spec.containers[0].image: Required value\n'


def test_create_twice_is_already_exists(run, tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD_YAML.format(name="web"))
    assert run("create", "-f", str(f)).stdout == "pod/web created\n"
    again = run("create", "-f", str(f))
    assert again.exit_code == 1
    assert again.stderr == 'Error from server (AlreadyExists): pods "web" already exists\n'


def test_bad_file_is_one_line(run, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: [x\n")
    result = run("apply", "-f", str(f))
    assert result.exit_code == 1
    assert re.fullmatch(rf"error: {re.escape(str(f))}: line \d+: .+\n", result.stderr)
    assert "Traceback" not in result.output


def test_unknown_kind_in_file(run, tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("apiVersion: toys/v1\nkind: Gizmo\nmetadata: {name: g}\n---\n" + POD_YAML.format(name="ok"))
    result = run("apply", "-f", str(f))
    assert result.exit_code == 1
    assert result.stdout == "pod/ok created\n"
    assert result.stderr == f'error: unable to recognize "{f}#1": no matches for kind "Gizmo" in version "toys/v1"\n'


def test_delete_by_name_and_missing(run, api):
    api.add("pod", "a")
    result = run("delete", "pod", "a", "b", "--grace-period", "0")
    assert result.exit_code == 1
    assert result.stdout == 'pod "a" deleted\n'
    assert result.stderr == 'Error from server (NotFound): pods "b" not found\n'
    delete = next(r for r in api.requests if r.method == "DELETE")
    assert json.loads(delete.content)["gracePeriodSeconds"] == 0


def test_delete_from_file(run, api, tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD_YAML.format(name="web"))
    run("apply", "-f", str(f))
    result = run("delete", "-f", str(f))
    assert (result.exit_code, result.stdout) == (0, 'pod "web" deleted\n')
    assert not api.objects


def test_describe_shows_fields_and_events(run, api):
    api.add("pod", "web", labels={"app": "web"}, spec={"nodeName": "n1", "containers": [{"name": "c",
                                                                                        "image": "busybox"}]})
    api.events = [{"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "web",
                                                                 "namespace": "default"},
                   "type": "Normal", "reason": "Scheduled", "message": "Successfully assigned default/web to n1",
                   "source": {"component": "default-scheduler"}, "count": 1,
                   "lastTimestamp": "2024-01-01T00:00:00Z"},
                  {"metadata": {"name": "e2"}, "involvedObject": {"kind": "Pod", "name": "other",
                                                                 "namespace": "default"}, "reason": "X"}]
    result = run("describe", "pod", "web")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("Name:         web\nNamespace:    default\nLabels:       app=web\n")
    assert "  Node Name:  n1" in out
    assert "Events:\n  Type    Reason     Age" in out
    assert "default-scheduler  Successfully assigned default/web to n1" in out
    assert "Reason     X" not in out
    ev = next(r for r in api.requests if r.url.path.endswith("/events"))
    assert ev.url.params["fieldSelector"] == "involvedObject.name=web,involvedObject.namespace=default"


def test_api_resources(run):
    result = run("api-resources")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert re.split(r"\s{3,}", lines[0]) == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert any(re.split(r"\s{3,}", x) == ["pods", "po", "v1", "true", "Pod"] for x in lines)
    assert any(re.split(r"\s{3,}", x) == ["deployments", "deploy", "apps/v1", "true", "Deployment"] for x in lines)
    assert not any("/status" in x for x in lines)


def test_version(run):
    result = run("version")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1] == "Server Version: v1.32.0-fake"


def test_connection_failure_is_one_line(monkeypatch, tmp_path):
    def refuse(request):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    result = CliRunner().invoke(cli, ["-s", "http://127.0.0.1:9", "get", "pods"],
                                obj=Session(transport=httpx.MockTransport(refuse)))
    assert result.exit_code == 1
    assert result.stderr == ("error: cannot reach the minik8s apiserver at http://127.0.0.1:9: "
                             "[Errno 111] Connection refused\n")


def test_no_config_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIK8S_HOME", str(tmp_path))
    monkeypatch.delenv("MINIK8S_SERVER", raising=False)
    result = CliRunner().invoke(cli, ["get", "pods"], obj=Session())
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no minik8s apiserver configured") and result.stderr.count("\n") == 1


def test_unexpected_error_has_no_traceback_unless_debug(run, api, monkeypatch):
    import minictl.main as main_mod

    def boom(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(main_mod, "parse_targets", boom)
    result = run("get", "pods")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: internal error: KeyError") and "Traceback" not in result.stderr
    result = run("get", "pods", "--debug")
    assert "Traceback" in result.stderr


def test_usage_errors_are_one_line_exit_1(run):
    result = run("frobnicate")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: No such command") and result.stderr.count("\n") == 1
    result = run("delete", "pods")
    assert result.exit_code == 1
    assert result.stderr == "error: resource(s) were provided, but no name was specified\n"
