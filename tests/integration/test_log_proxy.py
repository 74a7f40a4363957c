"""``pods/{name}/log`` and ``pods/{name}/exec`` through the real apiserver to a fake kubelet of our own.

The fake kubelet is a small HTTP server on 127.0.0.1 that speaks the kubelet API of docs/node.md; a Node
object points at its port (``status.daemonEndpoints.kubeletEndpoint.Port``). ``kubectl logs`` and ``minictl
logs`` / ``exec`` run against the session apiserver through it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner

from minictl.main import Session, cli
from minik8s.testing import ApiserverProcess, free_port

pytestmark = pytest.mark.timeout(120)
KUBECTL = "/usr/bin/kubectl"
LINES = [f"line {i}" for i in range(1, 6)]


class FakeKubelet(ThreadingHTTPServer):
    """Serves ``/containerLogs`` and ``/exec``; records each request as (method, path, query, body)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self.follow_ended = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: FakeKubelet

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.server.requests.append(("GET", url.path, query, None))
        parts = url.path.split("/")
        if len(parts) != 5 or parts[1] != "containerLogs":
            self._send(404, b"404 page not found")
            return
        container = parts[4]
        if container == "broken":
            self._send(500, b"failed to read the log file: no such file")
            return
        lines = LINES[-int(query["tailLines"][0]):] if "tailLines" in query else LINES
        text = "".join(f"{container}: {line}\n" for line in lines).encode()
        if query.get("follow") != ["true"]:
            self._send(200, text)
            return
        # Follow: chunked, a new line every 50 ms until the client goes away (the write then fails).
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i in range(1200):
                chunk = text if i == 0 else f"{container}: more {i}\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass
        finally:
            self.server.follow_ended.set()

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        self.server.requests.append(("POST", url.path, parse_qs(url.query), body))
        cmd = body.get("command") or []
        answer = {"stdout": " ".join(cmd[1:]) + "\n" if cmd[:1] == ["echo"] else "",
                  "stderr": "warn\n" if cmd[:1] == ["false"] else "", "exitCode": 1 if cmd[:1] == ["false"] else 0}
        self._send(200, json.dumps(answer).encode(), "application/json")


@pytest.fixture(scope="module")
def kubelet() -> Iterator[FakeKubelet]:
    server = FakeKubelet()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def http(base: str, method: str, path: str, **kw: Any) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=10) as c:
        return c.request(method, path, **kw)


@pytest.fixture(scope="module")
def setup(apiserver: ApiserverProcess, kubelet: FakeKubelet) -> Iterator[dict[str, str]]:
    """A namespace, a node pointing at the fake kubelet, a node without a port, and pods on them."""
    ns, node, portless = (f"logs-{uuid.uuid4().hex[:6]}", f"logs-node-{uuid.uuid4().hex[:6]}",
                          f"logs-noport-{uuid.uuid4().hex[:6]}")
    base = apiserver.url
    assert http(base, "POST", "/api/v1/namespaces",
                json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).status_code == 201
    for name, port in ((node, kubelet.port), (portless, None)):
        status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True"}]}
        if port:
            status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": port}}
        r = http(base, "POST", "/api/v1/nodes",
                 json={"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": status})
        assert r.status_code == 201, r.text

    def pod(name: str, containers: list[str], node_name: str | None, init: list[str] | None = None) -> None:
        spec: dict[str, Any] = {"containers": [{"name": c, "image": "busybox"} for c in containers]}
        if init:
            spec["initContainers"] = [{"name": c, "image": "busybox"} for c in init]
        if node_name:
            spec["nodeName"] = node_name
        r = http(base, "POST", f"/api/v1/namespaces/{ns}/pods",
                 json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
        assert r.status_code == 201, r.text

    pod("one", ["main"], node)
    pod("two", ["web", "side"], node, init=["setup"])
    pod("broken", ["broken"], node)
    pod("pending", ["main"], None)
    pod("orphan", ["main"], portless)
    try:
        yield {"ns": ns, "base": base}
    finally:
        http(base, "DELETE", f"/api/v1/namespaces/{ns}")
        for name in (node, portless):
            http(base, "DELETE", f"/api/v1/nodes/{name}")


def log_path(ns: str, pod: str) -> str:
    return f"/api/v1/namespaces/{ns}/pods/{pod}/log"


def test_logs_of_the_only_container_with_options(setup: dict[str, str], kubelet: FakeKubelet) -> None:
    r = http(setup["base"], "GET", log_path(setup["ns"], "one"),
             params={"tailLines": "2", "timestamps": "true", "previous": "false"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "main: line 4\nmain: line 5\n"
    _, path, query, _ = kubelet.requests[-1]
    assert path == f"/containerLogs/{setup['ns']}/one/main"
    assert query == {"tailLines": ["2"], "timestamps": ["true"], "previous": ["false"]}


def test_logs_of_a_pod_with_several_containers_needs_a_name(setup: dict[str, str]) -> None:
    r = http(setup["base"], "GET", log_path(setup["ns"], "two"))
    assert r.status_code == 400
    assert r.json()["message"] == ("a container name must be specified for pod two, choose one of: [web side] "
                                   "or one of the init containers: [setup]")
    r = http(setup["base"], "GET", log_path(setup["ns"], "two"), params={"container": "side"})
    assert r.status_code == 200 and r.text.startswith("side: line 1\n")
    r = http(setup["base"], "GET", log_path(setup["ns"], "two"), params={"container": "nope"})
    assert r.status_code == 400 and r.json()["message"] == "container nope is not valid for pod two"


def test_logs_errors_are_clear_statuses(setup: dict[str, str]) -> None:
    base, ns = setup["base"], setup["ns"]
    r = http(base, "GET", log_path(ns, "pending"))
    assert (r.status_code, r.json()["message"]) == (400, 'pod "pending" is not scheduled yet')
    r = http(base, "GET", log_path(ns, "orphan"))
    assert r.status_code == 503 and "does not report its kubelet port" in r.json()["message"]
    r = http(base, "GET", log_path(ns, "ghost"))
    assert r.status_code == 404
    r = http(base, "GET", log_path(ns, "broken"))
    assert r.status_code == 500 and r.json()["message"] == "failed to read the log file: no such file"
    r = http(base, "GET", log_path(ns, "one"), params={"tailLines": "-3"})
    assert r.status_code == 400


def test_logs_from_a_kubelet_that_is_down(apiserver: ApiserverProcess) -> None:
    ns, node = f"logs-down-{uuid.uuid4().hex[:6]}", f"logs-down-{uuid.uuid4().hex[:6]}"
    base = apiserver.url
    http(base, "POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    endpoints = {"kubeletEndpoint": {"Port": free_port()}}
    http(base, "POST", "/api/v1/nodes", json={"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
                                              "status": {"daemonEndpoints": endpoints}})
    try:
        http(base, "POST", f"/api/v1/namespaces/{ns}/pods", json={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
        r = http(base, "GET", log_path(ns, "p"))
        assert r.status_code == 503 and r.json()["message"].startswith("cannot reach the kubelet at 127.0.0.1:")
    finally:
        http(base, "DELETE", f"/api/v1/namespaces/{ns}")
        http(base, "DELETE", f"/api/v1/nodes/{node}")


def test_follow_streams_until_the_client_leaves(setup: dict[str, str], kubelet: FakeKubelet) -> None:
    kubelet.follow_ended.clear()
    with httpx.Client(base_url=setup["base"], timeout=10) as c, \
            c.stream("GET", log_path(setup["ns"], "one"), params={"follow": "true"}) as r:
        assert r.status_code == 200
        seen = ""
        for chunk in r.iter_text():
            seen += chunk
            if "more 3" in seen:
                break
    assert seen.startswith("main: line 1\n")
    # The client went away: the apiserver closes its kubelet stream too (the fake notices on its next write).
    assert kubelet.follow_ended.wait(10)


def test_exec_runs_through_the_kubelet(setup: dict[str, str], kubelet: FakeKubelet) -> None:
    path = f"/api/v1/namespaces/{setup['ns']}/pods/two/exec"
    r = http(setup["base"], "POST", path, json={"command": ["echo", "hi", "there"], "container": "web", "timeout": 5})
    assert r.status_code == 200, r.text
    assert r.json() == {"stdout": "hi there\n", "stderr": "", "exitCode": 0}
    assert kubelet.requests[-1][1:] == (f"/exec/{setup['ns']}/two/web", {}, {"command": ["echo", "hi", "there"],
                                                                            "timeout": 5.0})
    r = http(setup["base"], "POST", path, json={"command": ["echo"]})
    assert r.status_code == 400 and "a container name must be specified" in r.json()["message"]
    r = http(setup["base"], "POST", path, json={"container": "web"})
    assert r.status_code == 400 and "at least one command" in r.json()["message"]


def test_upgrade_requests_still_get_upgrade_required(setup: dict[str, str]) -> None:
    path = f"/api/v1/namespaces/{setup['ns']}/pods/one/exec"
    r = http(setup["base"], "POST", path, params={"command": "ls", "stdout": "true"},
             headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1"})
    assert (r.status_code, r.json()["message"]) == (400, "Upgrade request required")
    r = http(setup["base"], "GET", path, params={"command": "ls"})
    assert (r.status_code, r.json()["message"]) == (400, "Upgrade request required")


def _kubectl(base: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "m",
        "clusters": [{"name": "m", "cluster": {"server": base}}], "users": [{"name": "m", "user": {}}],
        "contexts": [{"name": "m", "context": {"cluster": "m", "user": "m"}}]}))
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    return subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(home / "cache"),
                           "--request-timeout", "20s", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)


def test_kubectl_logs(setup: dict[str, str], tmp_path: Path) -> None:
    ns = setup["ns"]
    r = _kubectl(setup["base"], tmp_path, "logs", "-n", ns, "one")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(f"main: {line}\n" for line in LINES)
    r = _kubectl(setup["base"], tmp_path, "logs", "-n", ns, "two", "-c", "side", "--tail", "1")
    assert (r.returncode, r.stdout) == (0, "side: line 5\n"), r.stderr
    r = _kubectl(setup["base"], tmp_path, "logs", "-n", ns, "pending")
    assert r.returncode != 0 and 'pod "pending" is not scheduled yet' in r.stderr


def test_minictl_logs_and_exec_through_the_real_apiserver(setup: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("MINIK8S_HOME", str(tmp_path))

    def minictl(*args: str) -> Any:
        return CliRunner().invoke(cli, ["-s", setup["base"], "-n", setup["ns"], *args], obj=Session())

    result = minictl("logs", "two", "-c", "web", "--tail", "2")
    assert (result.exit_code, result.stdout) == (0, "web: line 4\nweb: line 5\n"), result.output
    result = minictl("exec", "one", "--", "echo", "hello")
    assert (result.exit_code, result.stdout) == (0, "hello\n"), result.output
    result = minictl("exec", "one", "--", "false")
    assert (result.exit_code, result.stderr) == (1, "warn\n")
    result = minictl("logs", "pending")
    assert result.exit_code == 1
    assert result.stderr == 'Error from server (BadRequest): pod "pending" is not scheduled yet\n'

