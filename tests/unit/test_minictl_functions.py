"""``minictl function`` against an in-memory apiserver and gateway (httpx.MockTransport): what is uploaded
and written, what is printed on stdout and stderr, one-line errors and exit codes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from minictl import functions
from minictl.functions import build_state, example_body, human_size, zip_folder
from minictl.main import Session, cli

pytestmark = [pytest.mark.timeout(30)]

GATEWAY = "http://gw:18081"
ADD = "def run(x, y):\n    return x + y\n"
BASE = r"/apis/minik8s\.io/v1/namespaces/([^/]+)"


def status(code: int, reason: str, message: str) -> httpx.Response:
    return httpx.Response(code, json={"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                                      "message": message, "code": code})


class Fake:
    """The apiserver's functions, activations, deployments and code routes, and the gateway's triggers.

    ``build`` decides what the builder does with a Function written with a codeDigest: "ok" (status built
    at once), "fail" (Built False, BuildFailed) or "never".
    """

    def __init__(self) -> None:
        self.functions: dict[tuple[str, str], dict[str, Any]] = {}
        self.activations: dict[tuple[str, str], dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.uploads: list[httpx.Request] = []
        self.calls: list[httpx.Request] = []
        self.rv = 10
        self.build = "ok"
        self.upload_error: httpx.Response | None = None
        self.conflicts = 0
        self.gateway: Any = lambda request: httpx.Response(200, json=8, headers={"X-Minik8s-Activation-Id": "a" * 32})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "gw":
            self.calls.append(request)
            return self.gateway(request)  # type: ignore[no-any-return]
        path, method = request.url.path, request.method
        if m := re.fullmatch(BASE + r"/functions/([^/]+)/code", path):
            self.uploads.append(request)
            request.read()
            if self.upload_error is not None:
                return self.upload_error
            digest = "sha256:" + hashlib.sha256(request.content).hexdigest()
            return httpx.Response(201, json={"kind": "FunctionCode", "codeDigest": digest,
                                             "size": len(request.content), "files": 1, "requirements": False})
        if m := re.fullmatch(BASE + r"/functions(?:/([^/]+))?", path):
            ns, name = m.groups()
            if method == "GET" and request.url.params.get("watch"):
                return httpx.Response(200, content=b"")
            return self.crud(request, self.functions, ns, name, "Function")
        if m := re.fullmatch(BASE + r"/activations(?:/([^/]+))?", path):
            ns, name = m.groups()
            return self.crud(request, self.activations, ns, name, "Activation")
        if m := re.fullmatch(r"/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)", path):
            key = m.groups()
            if key not in self.deployments:
                return status(404, "NotFound", f'deployments.apps "{key[1]}" not found')
            return httpx.Response(200, json=self.deployments[key])
        return status(404, "NotFound", "the server could not find the requested resource")

    def crud(self, request: httpx.Request, store: dict[tuple[str, str], dict[str, Any]], ns: str, name: str | None,
             kind: str) -> httpx.Response:
        plural = kind.lower() + "s"
        if request.method == "GET" and name:
            if (ns, name) not in store:
                return status(404, "NotFound", f'{plural}.minik8s.io "{name}" not found')
            if "as=Table" in request.headers.get("accept", ""):
                return httpx.Response(200, json=self.table([store[(ns, name)]]))
            return httpx.Response(200, json=store[(ns, name)])
        if request.method == "GET":
            items = [o for (n, _), o in sorted(store.items()) if n == ns]
            sel = request.url.params.get("labelSelector")
            if sel:
                k, v = sel.split("=")
                items = [o for o in items if (o["metadata"].get("labels") or {}).get(k) == v]
            if "as=Table" in request.headers.get("accept", ""):
                return httpx.Response(200, json=self.table(items))
            return httpx.Response(200, json={"kind": f"{kind}List", "apiVersion": "minik8s.io/v1",
                                             "metadata": {"resourceVersion": str(self.rv)}, "items": items})
        if request.method == "POST":
            obj = json.loads(request.content)
            key = (ns, obj["metadata"]["name"])
            if key in store:
                return status(409, "AlreadyExists", f'{plural}.minik8s.io "{key[1]}" already exists')
            obj["metadata"]["generation"] = 1
            return self.stored(store, key, obj, 201)
        if request.method == "PUT":
            obj = json.loads(request.content)
            key = (ns, str(name))
            if self.conflicts:
                self.conflicts -= 1
                self.rv += 1
                store[key]["metadata"]["resourceVersion"] = str(self.rv)  # someone else wrote it
                return status(409, "Conflict", "the object has been modified")
            if obj["metadata"].get("resourceVersion") != store[key]["metadata"]["resourceVersion"]:
                return status(409, "Conflict", "the object has been modified")
            if obj.get("spec") != store[key].get("spec"):
                obj["metadata"]["generation"] = int(store[key]["metadata"].get("generation") or 1) + 1
            return self.stored(store, key, obj, 200)
        if request.method == "DELETE":
            if (ns, name) not in store:
                return status(404, "NotFound", f'{plural}.minik8s.io "{name}" not found')
            return httpx.Response(200, json=store.pop((ns, str(name))))
        return status(405, "MethodNotAllowed", "no")

    def stored(self, store: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str], obj: dict[str, Any],
               code: int) -> httpx.Response:
        self.rv += 1
        meta = obj["metadata"]
        meta.update(namespace=key[0], resourceVersion=str(self.rv), uid=meta.get("uid") or f"uid-{self.rv}",
                    creationTimestamp=meta.get("creationTimestamp") or "2024-01-01T00:00:00Z")
        if obj.get("kind") == "Function":
            self.builder(obj)
        store[key] = obj
        return httpx.Response(code, json=obj)

    def builder(self, fn: dict[str, Any]) -> None:
        digest = fn.get("spec", {}).get("codeDigest")
        if not digest or self.build == "never":
            return
        ns, name = fn["metadata"]["namespace"], fn["metadata"]["name"]
        st = fn.setdefault("status", {})
        st["observedGeneration"] = fn["metadata"]["generation"]
        if self.build == "fail":
            st["conditions"] = [{"type": "Built", "status": "False", "reason": "BuildFailed",
                                 "message": "pip install failed: No matching distribution found for nope"}]
            return
        st.update(codeDigest=digest, image=f"127.0.0.1:15000/minik8s-functions/{ns}/{name}@sha256:{'b' * 64}",
                  url=f"{GATEWAY}/function/{ns}/{name}", replicas=0, readyReplicas=0,
                  conditions=[{"type": "Built", "status": "True", "reason": "Built"},
                              {"type": "Ready", "status": "True", "reason": "ScaledToZero"}])

    @staticmethod
    def table(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
                "columnDefinitions": [{"name": "Name", "type": "string", "format": "name", "priority": 0},
                                      {"name": "URL", "type": "string", "format": "", "priority": 0}],
                "rows": [{"cells": [o["metadata"]["name"], (o.get("status") or {}).get("url", "")],
                          "object": {"metadata": o["metadata"]}} for o in items]}

    def add_function(self, name: str = "add", ns: str = "default", **spec: Any) -> dict[str, Any]:
        obj = {"apiVersion": "minik8s.io/v1", "kind": "Function",
               "metadata": {"name": name, "namespace": ns, "generation": 1},
               "spec": {"codeDigest": "sha256:" + "c" * 64, **spec}}
        self.stored(self.functions, (ns, name), obj, 201)
        return obj

    def add_activation(self, name: str, fn: str = "add", ns: str = "default", **spec: Any) -> None:
        obj = {"apiVersion": "minik8s.io/v1", "kind": "Activation",
               "metadata": {"name": name, "namespace": ns, "labels": {"minik8s.io/function": fn}},
               "spec": {"function": fn, **spec}}
        self.activations[(ns, name)] = obj


@pytest.fixture()
def fake() -> Fake:
    return Fake()


@pytest.fixture()
def run(fake: Fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("MINIK8S_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINIK8S_SERVER", raising=False)
    monkeypatch.delenv("MINIK8S_DEBUG", raising=False)

    def invoke(*args: str, input: str | None = None) -> Any:
        return CliRunner().invoke(cli, ["-s", "http://api", *args], obj=Session(transport=httpx.MockTransport(fake)),
                                  input=input)
    return invoke


@pytest.fixture()
def add_py(tmp_path: Path) -> Path:
    path = tmp_path / "add.py"
    path.write_text(ADD)
    return path


def one_error_line(result: Any) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if not line.startswith(("uploading", "building"))]
    assert len(lines) == 1, result.stderr
    return str(lines[0])


# ---- create ----------------------------------------------------------------------------------------------------

def test_create_uploads_creates_waits_and_prints_the_url_and_curl_line(run: Any, fake: Fake, add_py: Path) -> None:
    res = run("function", "create", "add", "--file", str(add_py), "--max-scale", "3", "--idle-timeout", "30",
              "--env", "A=1", "--env", "B=x=y")
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines() == [f"uploading add.py ({len(ADD)} B)…", "building…"]
    (upload,) = fake.uploads
    assert upload.method == "POST" and upload.url.path == "/apis/minik8s.io/v1/namespaces/default/functions/add/code"
    assert dict(upload.url.params) == {"filename": "add.py"}
    assert upload.content == ADD.encode() and upload.headers["content-type"] == "application/octet-stream"
    fn = fake.functions[("default", "add")]
    assert fn["spec"] == {"codeDigest": "sha256:" + hashlib.sha256(ADD.encode()).hexdigest(), "maxScale": 3,
                          "idleTimeout": 30, "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}]}
    url = f"{GATEWAY}/function/default/add"
    assert res.stdout.splitlines() == [
        "function.minik8s.io/add created",
        f"URL: {url}",
        f"curl -X POST -H 'Content-Type: application/json' -d '{{\"x\": 3, \"y\": 5}}' {url}"]


def test_create_with_entry_point_namespace_and_no_wait(run: Any, fake: Fake, add_py: Path) -> None:
    res = run("function", "create", "add", "-n", "team", "--file", str(add_py), "--entry-point", "run",
              "--timeout", "2.5", "--no-wait")
    assert res.exit_code == 0, res.output
    assert res.stdout == "function.minik8s.io/add created\n"
    assert "building" not in res.stderr
    assert fake.uploads[0].url.params["entryPoint"] == "run"
    assert fake.functions[("team", "add")]["spec"]["timeout"] == 2.5


def test_create_an_existing_function_is_one_line_before_any_upload(run: Any, fake: Fake, add_py: Path) -> None:
    fake.add_function()
    line = one_error_line(run("function", "create", "add", "--file", str(add_py)))
    assert 'functions.minik8s.io "add" already exists' in line and "minictl function update add" in line
    assert not fake.uploads


def test_refused_code_is_the_servers_one_line_and_nothing_is_created(run: Any, fake: Fake, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def run(:\n")
    fake.upload_error = status(400, "BadRequest", "main.py line 1: invalid syntax")
    line = one_error_line(run("function", "create", "bad", "--file", str(bad)))
    assert line == "Error from server (BadRequest): main.py line 1: invalid syntax"
    assert not fake.functions


def test_no_gateway_is_the_apiservers_503_line(run: Any, fake: Fake, add_py: Path) -> None:
    fake.upload_error = status(503, "ServiceUnavailable", "no serverless gateway is configured")
    line = one_error_line(run("function", "create", "add", "--file", str(add_py)))
    assert line == "Error from server (ServiceUnavailable): no serverless gateway is configured"


def test_a_failed_build_is_one_line_and_exit_1(run: Any, fake: Fake, add_py: Path) -> None:
    fake.build = "fail"
    res = run("function", "create", "add", "--file", str(add_py))
    assert one_error_line(res) == ("error: function default/add: build failed: pip install failed: No matching "
                                   "distribution found for nope")
    assert res.stdout == "function.minik8s.io/add created\n"


def test_the_build_wait_is_bounded(run: Any, fake: Fake, add_py: Path) -> None:
    fake.build = "never"
    line = one_error_line(run("function", "create", "add", "--file", str(add_py), "--wait-timeout", "0.3"))
    assert line.startswith("error: timed out after 0s waiting for function default/add to be built")


def test_an_upload_answer_without_a_digest_is_one_line(run: Any, fake: Fake, add_py: Path) -> None:
    fake.upload_error = httpx.Response(201, json={"kind": "FunctionCode"})
    line = one_error_line(run("function", "create", "add", "--file", str(add_py)))
    assert line.startswith("error: the apiserver answered the upload without a codeDigest")


@pytest.mark.parametrize("args, words", [
    ([], "no code"),
    (["--file", "missing.py"], "cannot read missing.py"),
    (["--file", "a.zip"], "for an archive use --zip"),
    (["--file", "x.py", "--zip", "y.zip"], "either --file or --zip"),
    (["--file", "x.py", "--env", "NOEQUALS"], "--env takes NAME=VALUE"),
    (["--file", "x.py", "--max-scale", "0"], "--max-scale"),
    (["--file", "x.py", "--timeout", "901"], "--timeout"),
])
def test_bad_flags_are_one_line(run: Any, fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                args: list[str], words: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.py").write_text(ADD)
    line = one_error_line(run("function", "create", "f", *args))
    assert line.startswith("error: ") and words in line, line
    assert not fake.functions


def test_a_dropped_large_upload_suggests_the_size_limit(run: Any, fake: Fake, tmp_path: Path) -> None:
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(2 * 1024 * 1024))

    def drop(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/code"):
            raise httpx.WriteError("broken pipe")
        return fake(request)
    res = CliRunner().invoke(cli, ["-s", "http://api", "function", "create", "big", "--zip", str(big)],
                             obj=Session(transport=httpx.MockTransport(drop)))
    line = one_error_line(res)
    assert "too large" in line and "2.0 MiB" in line


# ---- zip and manifests -----------------------------------------------------------------------------------------

def test_zip_of_a_folder_is_reproducible_and_leaves_caches_out(tmp_path: Path) -> None:
    src = tmp_path / "hello"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "main.py").write_text("import pkg\n\ndef run():\n    return pkg.X\n")
    (src / "pkg" / "__init__.py").write_text("X = 1\n")
    (src / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (src / "requirements.txt").write_text("humanize\n")
    first = zip_folder(src)
    os.utime(src / "main.py", (1, 1))
    assert zip_folder(src) == first
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert zf.namelist() == ["main.py", "pkg/__init__.py", "requirements.txt"]
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    (src / "link.py").symlink_to(src / "main.py")
    with pytest.raises(Exception, match="symlink"):
        zip_folder(src)


def test_create_from_a_folder_uploads_a_zip(run: Any, fake: Fake) -> None:
    folder = Path(__file__).resolve().parents[2] / "examples" / "functions" / "hello-deps"
    res = run("function", "create", "hello", "--zip", str(folder), "--no-wait")
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith("uploading hello-deps/ (")
    (upload,) = fake.uploads
    assert upload.url.params["filename"] == "hello-deps.zip"
    assert upload.content == zip_folder(folder)
    with zipfile.ZipFile(io.BytesIO(upload.content)) as zf:
        assert zf.namelist() == ["main.py", "requirements.txt"]


def test_create_from_the_example_manifest(run: Any, fake: Fake) -> None:
    manifest = Path(__file__).resolve().parents[2] / "examples" / "functions" / "add.yaml"
    res = run("function", "create", "-f", str(manifest))
    assert res.exit_code == 0, res.output
    assert fake.uploads[0].content == (manifest.parent / "add.py").read_bytes()
    assert fake.uploads[0].url.params["filename"] == "add.py"
    fn = fake.functions[("default", "add")]
    assert fn["spec"]["maxScale"] == 5 and fn["spec"]["timeout"] == 10 and fn["spec"]["entryPoint"] == "run"
    assert fn["spec"]["codeDigest"].startswith("sha256:")
    assert fn["metadata"]["annotations"] == {"minik8s.io/code-file": "add.py"}
    assert "curl -X POST" in res.stdout and '{"x": 3, "y": 5}' in res.stdout


def test_manifest_name_and_namespace_rules(run: Any, fake: Fake, tmp_path: Path) -> None:
    (tmp_path / "code.py").write_text(ADD)
    (tmp_path / "fn.yaml").write_text("apiVersion: minik8s.io/v1\nkind: Function\nmetadata:\n  name: sum\n"
                                      "  namespace: team\n  annotations: {minik8s.io/code-file: code.py}\n"
                                      "spec:\n  maxScale: 2\n")
    line = one_error_line(run("function", "create", "other", "-f", str(tmp_path / "fn.yaml")))
    assert "differ" in line
    line = one_error_line(run("function", "create", "-n", "prod", "-f", str(tmp_path / "fn.yaml")))
    assert "does not match the namespace" in line
    res = run("function", "create", "-f", str(tmp_path / "fn.yaml"), "--max-scale", "4", "--no-wait")
    assert res.exit_code == 0, res.output
    assert fake.functions[("team", "sum")]["spec"]["maxScale"] == 4  # flags win over the manifest
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    assert "exactly one Function" in one_error_line(run("function", "create", "-f", str(tmp_path / "pod.yaml")))


# ---- update ----------------------------------------------------------------------------------------------------

def test_update_changes_only_what_is_given_and_retries_conflicts(run: Any, fake: Fake, add_py: Path) -> None:
    fake.add_function(maxScale=7, entryPoint="run", env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    fake.conflicts = 1
    res = run("function", "update", "add", "--min-scale", "1", "--env", "A-", "--env", "C=3", "--no-wait")
    assert res.exit_code == 0, res.output
    assert res.stdout == "function.minik8s.io/add configured\n"
    assert not fake.uploads
    spec = fake.functions[("default", "add")]["spec"]
    assert spec == {"codeDigest": "sha256:" + "c" * 64, "maxScale": 7, "entryPoint": "run", "minScale": 1,
                    "env": [{"name": "B", "value": "2"}, {"name": "C", "value": "3"}]}


def test_update_with_new_code_waits_for_that_code(run: Any, fake: Fake, add_py: Path) -> None:
    fake.add_function(entryPoint="run")
    res = run("function", "update", "add", "--file", str(add_py))
    assert res.exit_code == 0, res.output
    assert fake.uploads[0].url.params["entryPoint"] == "run"  # the live entry point is checked against the code
    fn = fake.functions[("default", "add")]
    assert fn["status"]["codeDigest"] == fn["spec"]["codeDigest"] == "sha256:" + hashlib.sha256(
        ADD.encode()).hexdigest()
    assert res.stdout.splitlines()[0] == "function.minik8s.io/add configured"
    assert res.stdout.splitlines()[-1].startswith("curl -X POST")


def test_update_with_nothing_new_is_unchanged_and_prints_the_url(run: Any, fake: Fake) -> None:
    fake.add_function()
    res = run("function", "update", "add")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[:2] == ["function.minik8s.io/add unchanged",
                                           f"URL: {GATEWAY}/function/default/add"]
    assert res.stdout.splitlines()[2].endswith("-d '{}' " + f"{GATEWAY}/function/default/add")


def test_update_of_a_missing_function_is_one_line_and_uploads_nothing(run: Any, fake: Fake, add_py: Path) -> None:
    line = one_error_line(run("function", "update", "nope", "--file", str(add_py)))
    assert line == 'Error from server (NotFound): functions.minik8s.io "nope" not found'
    assert not fake.uploads


def test_build_state_ignores_a_failure_of_an_older_generation() -> None:
    fn: dict[str, Any] = {"metadata": {"generation": 3}, "spec": {"codeDigest": "sha256:new"},
          "status": {"observedGeneration": 2, "codeDigest": "sha256:old", "image": "x",
                     "conditions": [{"type": "Built", "status": "False", "reason": "BuildFailed", "message": "m"}]}}
    assert build_state(fn, 3) == ("building", "")
    assert build_state(fn, 2) == ("failed", "m")
    fn["status"].update(observedGeneration=3, codeDigest="sha256:new",
                        conditions=[{"type": "Built", "status": "True"}])
    assert build_state(fn, 3) == ("built", "x")


# ---- get, describe, delete -------------------------------------------------------------------------------------

def test_get_table_and_the_generic_get(run: Any, fake: Fake) -> None:
    fake.add_function("add")
    fake.build = "fail"
    fake.add_function("broken")
    res = run("function", "get")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "SCALE", "CODE", "URL", "AGE"]
    assert lines[1].split()[:5] == ["add", "True", "0/0", "c" * 12, f"{GATEWAY}/function/default/add"]
    assert lines[2].split()[:6] == ["broken", "Unknown", "0/0", "c" * 12, "(build", "failed)"]
    one = run("function", "get", "add")
    assert len(one.stdout.splitlines()) == 2
    generic = run("get", "functions")
    assert generic.exit_code == 0 and "add" in generic.stdout and "broken" in generic.stdout
    empty = run("function", "get", "-n", "elsewhere")
    assert empty.exit_code == 0 and empty.stdout == "" and "No resources found in elsewhere namespace." in empty.stderr


def test_describe_shows_spec_status_deployment_and_recent_calls(run: Any, fake: Fake) -> None:
    fake.add_function(maxScale=3, env=[{"name": "A", "value": "1"}])
    fake.deployments[("default", "add")] = {"spec": {"replicas": 2}, "status": {"readyReplicas": 1,
                                                                                 "updatedReplicas": 2}}
    fake.add_activation("a" * 32, status="success", statusCode=200, durationMs=3.25, initMs=0,
                        start="2024-01-01T00:00:01.123456Z")
    res = run("function", "describe", "add")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for want in ("Name:", "add", "max 3", "A=1", f"URL:            {GATEWAY}/function/default/add",
                 "Deployment:     2 desired, 1 ready, 2 up to date", "Built", "ScaledToZero",
                 "Recent activations:", "a" * 32, "3.2ms", "2024-01-01T00:00:01.123Z"):
        assert want in out, (want, out)
    assert "error" not in res.stderr.lower()


def test_delete(run: Any, fake: Fake) -> None:
    fake.add_function()
    res = run("function", "delete", "add")
    assert res.exit_code == 0 and res.stdout == 'function.minik8s.io "add" deleted\n'
    assert not fake.functions
    assert one_error_line(run("function", "delete", "add")).startswith("Error from server (NotFound)")


# ---- invoke ----------------------------------------------------------------------------------------------------

def test_invoke_posts_the_json_and_prints_the_answer(run: Any, fake: Fake) -> None:
    fake.add_function()
    res = run("function", "invoke", "add", "-d", '{"x": 40, "y": 2}')
    assert res.exit_code == 0, res.output
    assert res.stdout == "8\n"
    (call,) = fake.calls
    assert str(call.url) == f"{GATEWAY}/function/default/add"
    assert json.loads(call.content) == {"x": 40, "y": 2}
    assert call.headers["content-type"] == "application/json"
    res = run("function", "invoke", "add")
    assert json.loads(fake.calls[-1].content) == {}


def test_invoke_data_from_a_file(run: Any, fake: Fake, tmp_path: Path) -> None:
    fake.add_function()
    (tmp_path / "body.json").write_text('{"x": 1, "y": 2}')
    assert run("function", "invoke", "add", "-d", f"@{tmp_path / 'body.json'}").exit_code == 0
    assert json.loads(fake.calls[-1].content) == {"x": 1, "y": 2}


def test_invoke_says_when_it_waits_for_a_cold_start(run: Any, fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(functions, "COLD_START_NOTICE_AFTER", 0.01)
    fake.add_function()
    said = threading.Event()
    real_progress = functions._progress

    def progress(message: str) -> None:
        real_progress(message)
        said.set()
    monkeypatch.setattr(functions, "_progress", progress)

    def slow(request: httpx.Request) -> httpx.Response:
        assert said.wait(10), "no cold-start notice while the call was held"
        return httpx.Response(200, json=8)
    fake.gateway = slow
    res = run("function", "invoke", "add")
    assert res.exit_code == 0, res.output
    assert res.stderr == "waiting for a cold start…\n" and res.stdout == "8\n"


def test_invoke_of_a_warm_function_says_nothing_on_stderr(run: Any, fake: Fake) -> None:
    fn = fake.add_function()
    fn["status"]["readyReplicas"] = 1
    res = run("function", "invoke", "add")
    assert res.exit_code == 0 and res.stderr == ""


def test_invoke_errors_are_one_line(run: Any, fake: Fake) -> None:
    fake.add_function()
    fake.gateway = lambda request: httpx.Response(
        500, json={"error": "division by zero", "type": "ZeroDivisionError", "traceback": "Traceback …"},
        headers={"X-Minik8s-Activation-Id": "f" * 32})
    line = one_error_line(run("function", "invoke", "add"))
    assert line == (f"error: add answered 500: ZeroDivisionError: division by zero (activation {'f' * 32}: "
                    f"minictl function logs {'f' * 32})")
    assert "Traceback" not in line
    fake.gateway = lambda request: httpx.Response(504, json={"error": "timed out after 2s"})
    assert one_error_line(run("function", "invoke", "add")) == "error: add answered 504: timed out after 2s"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")
    fake.gateway = refuse
    line = one_error_line(run("function", "invoke", "add"))
    assert line.startswith(f"error: cannot reach the function gateway at {GATEWAY}/function/default/add")
    assert one_error_line(run("function", "invoke", "add", "-d", "{nope")).startswith("error: -d is not valid JSON")
    assert one_error_line(run("function", "invoke", "nope")).startswith("Error from server (NotFound)")
    fake.build = "never"
    fake.add_function("unbuilt")
    assert "has no URL yet" in one_error_line(run("function", "invoke", "unbuilt"))


def test_invoke_async_prints_the_activation_id(run: Any, fake: Fake) -> None:
    fake.add_function()
    fake.gateway = lambda request: httpx.Response(202, json={"activationId": "e" * 32})
    res = run("function", "invoke", "add", "--async", "-d", '{"x": 1, "y": 2}')
    assert res.exit_code == 0 and res.stdout == "e" * 32 + "\n"
    assert fake.calls[-1].url.params["async"] == "true"


# ---- activations and logs --------------------------------------------------------------------------------------

def test_activations_newest_first_with_a_limit(run: Any, fake: Fake) -> None:
    for i in range(5):
        fake.add_activation(f"{i:032x}", status="success" if i != 3 else "error", statusCode=200 if i != 3 else 500,
                            durationMs=1500.0 if i == 4 else 2.0, initMs=812.5 if i == 0 else 0.0,
                            start=f"2024-01-01T00:00:0{i}.000001Z")
    fake.add_activation("9" * 32, fn="other", start="2024-01-01T00:00:09Z", status="success")
    res = run("function", "activations", "add", "--limit", "3")
    assert res.exit_code == 0, res.output
    rows = [line.split() for line in res.stdout.splitlines()]
    assert rows[0] == ["ID", "STATUS", "CODE", "DURATION", "INIT", "START"]
    assert [r[0] for r in rows[1:]] == [f"{4:032x}", f"{3:032x}", f"{2:032x}"]
    assert rows[1][1:] == ["success", "200", "1.50s", "-", "2024-01-01T00:00:04.000Z"]
    assert rows[2][1:3] == ["error", "500"]
    everything = run("function", "activations", "add", "--limit", "0").stdout.splitlines()
    assert len(everything) == 6 and everything[-1].split()[4] == "812.5ms"
    none = run("function", "activations", "ghost")
    assert none.exit_code == 0 and none.stdout == "" and "No activations found" in none.stderr


def test_logs_print_the_output_then_the_result_or_the_error(run: Any, fake: Fake) -> None:
    fake.add_activation("a" * 32, status="success", statusCode=200, durationMs=2.5, logs="adding 3 and 5\n",
                        result="8")
    res = run("function", "logs", "a" * 32)
    assert res.exit_code == 0, res.output
    assert res.stdout == "adding 3 and 5\n=> success 200 in 2.5ms: 8\n"
    body = json.dumps({"error": "division by zero", "type": "ZeroDivisionError",
                       "traceback": "Traceback (most recent call last):\n  ...\nZeroDivisionError: division by zero\n"})
    fake.add_activation("b" * 32, status="error", statusCode=500, durationMs=1.0, result=body)
    out = run("function", "logs", "b" * 32).stdout
    assert out.startswith("Traceback (most recent call last):")
    assert out.splitlines()[-1] == "=> error 500 in 1.0ms: ZeroDivisionError: division by zero"
    assert one_error_line(run("function", "logs", "c" * 32)).startswith("Error from server (NotFound)")


# ---- small pieces ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, body", [
    (ADD, '{"x": 3, "y": 5}'),
    ("def run(event, context):\n    return event\n", "{}"),
    ("def run(name, greeting='hi', *, loud=False, times):\n    pass\n", '{"name": 3, "times": 5}'),
    ("def other(x):\n    pass\n", "{}"),
    ("def run(:\n", "{}"),
])
def test_example_body(source: str, body: str) -> None:
    assert example_body(source.encode(), "run") == body


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 1023, 1536, 3 * 1024 * 1024)] == ["0 B", "1023 B", "1.5 KiB", "3.0 MiB"]


def test_help_names_every_command(run: Any) -> None:
    res = run("function", "--help")
    assert res.exit_code == 0
    for name in ("create", "update", "delete", "get", "describe", "invoke", "activations", "logs"):
        assert name in res.stdout
    assert "minik8s.io/code-file" in run("function", "create", "--help").stdout
