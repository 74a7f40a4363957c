"""The gateway app, called in-process, in front of a real activator and tiny HTTP "instances" on
127.0.0.1: forwarding (aiohttp), async calls, activation records and their routes, error mapping,
code upload."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from serverless.activations import ActivationStore, activation_object
from serverless.activator import Activator, HttpProber
from serverless.code import CodeError
from serverless.forward import Forwarder, ForwardError, ForwardTimeout, Unreachable
from serverless.gateway import Gateway, _is_async, decode_logs, function_of_selector, state_of

pytestmark = pytest.mark.timeout(20)

KEY = "default/add"


class InstanceHandler(BaseHTTPRequestHandler):
    """A function instance: echoes its JSON body; ``{"sleep": s}``, ``{"status": n}`` and ``{"big": n}``
    change what it does. Every answer carries X-Minik8s-Logs."""

    def do_GET(self) -> None:
        self._answer(200, b'{"ok": true}')

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw or b"{}")
        time.sleep(float(body.get("sleep", 0)))
        if "big" in body:
            out = json.dumps("x" * int(body["big"])).encode()
        else:
            out = json.dumps({"echo": body, "activation": self.headers.get("X-Minik8s-Activation-Id")}).encode()
        logs = base64.b64encode(b"hello from the function\n").decode()
        self._answer(int(body.get("status", 200)), out, {"X-Minik8s-Logs": logs, "X-Minik8s-Duration-Ms": "1.5"})

    def _answer(self, code: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_instance(ip: str) -> Iterator[int]:
    server = ThreadingHTTPServer((ip, 0), InstanceHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def instance_port() -> Iterator[int]:
    with serve_instance("127.0.0.1") as port:
        yield port


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def endpoints(ready: list[tuple[str, int, str]]) -> dict[str, Any]:
    return {"subsets": [{"addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "name": pod}}],
                         "ports": [{"name": "http", "port": port}]} for ip, port, pod in ready]}


class ListRecorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, activation: dict[str, Any]) -> None:
        self.records.append(activation)


class CountingMetrics:
    def __init__(self) -> None:
        self.started = 0
        self.finished = 0

    def request_started(self, key: str) -> None:
        self.started += 1

    def request_finished(self, key: str) -> None:
        self.finished += 1


@dataclass(frozen=True)
class Info:
    digest: str
    size: int
    files: int
    requirements: bool


class StubBuilder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str, str, int]] = []

    def store_code(self, data: bytes, *, filename: str, entry_point: str, max_bytes: int) -> Info:
        self.calls.append((len(data), filename, entry_point, max_bytes))
        if len(data) > max_bytes:
            raise CodeError(413, f"the upload is larger than {max_bytes} bytes")
        if b"def " not in data:
            raise CodeError(400, f"main.py has no top-level def {entry_point}")
        return Info("sha256:" + "a" * 64, len(data), 1, False)


@dataclass
class Env:
    http: httpx.AsyncClient
    gateway: Gateway
    activator: Activator
    functions: dict[str, dict[str, Any]]
    recorder: ListRecorder
    metrics: CountingMetrics
    builder: StubBuilder
    store: ActivationStore


def function(name: str = "add", *, image: bool = True, timeout: float = 60) -> dict[str, Any]:
    status = {"image": f"reg/minik8s-functions/default/{name}@sha256:00"} if image else {}
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {"timeout": timeout}, "status": status}


@pytest.fixture()
async def env() -> AsyncIterator[Env]:
    pods = Forwarder()
    activator = Activator(prober=HttpProber(pods), queue_size=4)
    functions = {KEY: function()}
    recorder, metrics, builder = ListRecorder(), CountingMetrics(), StubBuilder()
    store = ActivationStore(":memory:")
    gateway = Gateway(functions=functions, activator=activator, autoscaler=metrics, recorder=recorder, http=pods,
                      builder=builder, store=store, activator_timeout=0.3, max_code_bytes=1000)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway")
    yield Env(client, gateway, activator, functions, recorder, metrics, builder, store)
    await client.aclose()
    await gateway.drain()
    await activator.stop()
    await pods.close()
    store.close()


async def test_a_call_is_forwarded_and_recorded(env: Env, instance_port: int) -> None:
    env.activator.update(KEY, endpoints([("127.0.0.1", instance_port, "add-pod-1")]))
    r = await env.http.post("/function/default/add", json={"x": 1})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    activation = r.headers["X-Minik8s-Activation-Id"]
    assert len(activation) == 32 and int(activation, 16) >= 0
    assert r.json() == {"echo": {"x": 1}, "activation": activation}
    [rec] = env.recorder.records
    assert rec["id"] == activation and rec["namespace"] == "default" and rec["function"] == "add"
    assert rec["status"] == "success" and rec["statusCode"] == 200
    assert rec["logs"] == "hello from the function\n"
    assert rec["pod"] == "add-pod-1"
    assert rec["initMs"] == 0 and rec["durationMs"] > 0 and rec["async"] is False
    assert json.loads(rec["result"]) == r.json() and rec["truncated"] is False
    assert rec["start"].endswith("Z") and "." in rec["start"]
    assert (env.metrics.started, env.metrics.finished) == (1, 1)
    assert env.activator.instances(KEY)[0].in_flight == 0
    obj = activation_object(rec)
    assert obj["metadata"] == {"name": activation, "namespace": "default", "labels": {"minik8s.io/function": "add"},
                               "creationTimestamp": rec["start"].split(".")[0] + "Z",
                               "uid": f"{activation[:8]}-{activation[8:12]}-{activation[12:16]}-"
                                      f"{activation[16:20]}-{activation[20:]}", "resourceVersion": "1"}
    assert obj["kind"] == "Activation" and obj["apiVersion"] == "minik8s.io/v1" and obj["spec"]["function"] == "add"
    assert "id" not in obj["spec"] and "namespace" not in obj["spec"]


async def test_long_results_are_truncated_in_the_record_not_in_the_answer(env: Env, instance_port: int) -> None:
    env.activator.update(KEY, endpoints([("127.0.0.1", instance_port, "p")]))
    r = await env.http.post("/function/default/add", json={"big": 5000})
    assert len(r.text) == 5002
    rec = env.recorder.records[0]
    assert len(rec["result"]) == 4096 and rec["truncated"] is True


async def test_a_function_error_passes_through(env: Env, instance_port: int) -> None:
    env.activator.update(KEY, endpoints([("127.0.0.1", instance_port, "p")]))
    r = await env.http.post("/function/default/add", json={"status": 500})
    assert r.status_code == 500
    assert env.recorder.records[0]["status"] == "error"
    r = await env.http.post("/function/default/add", json={"status": 400})
    assert r.status_code == 400
    assert env.recorder.records[1]["status"] == "bad-request"


async def test_async_call_answers_202_and_records_the_result(env: Env, instance_port: int) -> None:
    env.activator.update(KEY, endpoints([("127.0.0.1", instance_port, "p")]))
    r = await env.http.post("/function/default/add?async=true", json={"sleep": 0.2})
    assert r.status_code == 202
    activation = r.json()["activationId"]
    assert env.recorder.records == []  # the call is still running
    await env.gateway.drain()
    [rec] = env.recorder.records
    assert rec["id"] == activation and rec["async"] is True and rec["status"] == "success"
    assert rec["durationMs"] >= 200


async def test_unknown_and_unbuilt_functions(env: Env) -> None:
    r = await env.http.post("/function/default/nope")
    assert r.status_code == 404 and r.json() == {"error": "function default/nope not found"}
    env.functions["default/raw"] = function("raw", image=False)
    r = await env.http.post("/function/default/raw")
    assert r.status_code == 503 and r.json() == {"error": "function default/raw is not built yet"}
    assert env.recorder.records[-1]["status"] == "unavailable"


async def test_held_too_long_is_504_and_a_full_queue_is_503(env: Env) -> None:
    held = [asyncio.create_task(env.http.post("/function/default/add")) for _ in range(4)]
    while env.activator.held_count(KEY) < 4:
        await asyncio.sleep(0.005)
    r = await env.http.post("/function/default/add")
    assert r.status_code == 503 and "too many requests" in r.json()["error"]
    answers = await asyncio.gather(*held)
    assert [a.status_code for a in answers] == [504] * 4
    assert "became ready within 0.3s" in answers[0].json()["error"]
    timeouts = [rec for rec in env.recorder.records if rec["status"] == "timeout"]
    assert len(timeouts) == 4 and all(rec["initMs"] >= 250 for rec in timeouts)


async def test_a_cold_call_goes_through_once_an_instance_is_ready(env: Env, instance_port: int) -> None:
    call = asyncio.create_task(env.http.post("/function/default/add", json={"x": 2}))
    while env.activator.held_count(KEY) < 1:
        await asyncio.sleep(0.005)
    env.activator.update(KEY, endpoints([("127.0.0.1", instance_port, "p")]))
    r = await call
    assert r.status_code == 200 and r.json()["echo"] == {"x": 2}
    assert env.recorder.records[0]["initMs"] > 0


async def test_the_instance_timeout_is_504(env: Env, instance_port: int) -> None:
    env.functions[KEY] = function(timeout=0.1)
    env.activator.update(KEY, endpoints([("127.0.0.1", instance_port, "p")]))
    r = await env.http.post("/function/default/add", json={"sleep": 3})
    assert r.status_code == 504 and r.json() == {"error": "function default/add timed out after 0.1s"}
    assert env.recorder.records[0]["status"] == "timeout"


async def test_a_refused_connection_is_retried_once_on_another_instance(env: Env) -> None:
    # Instances are keyed by IP: the live one listens on another loopback address (all of 127/8 is local).
    with serve_instance("127.0.0.2") as alive_port:
        env.activator.update(KEY, endpoints([("127.0.0.1", closed_port(), "dead"),
                                             ("127.0.0.2", alive_port, "alive")]))
        r = await env.http.post("/function/default/add", json={"x": 3})
    assert r.status_code == 200
    assert env.recorder.records[0]["pod"] == "alive"
    dead = next(i for i in env.activator.instances(KEY) if i.pod == "dead")
    assert not dead.ready and dead.in_flight == 0


async def test_unreachable_twice_is_502(env: Env) -> None:
    env.activator.update(KEY, endpoints([("127.0.0.1", closed_port(), "a"), ("127.0.0.3", closed_port(), "b")]))
    r = await env.http.post("/function/default/add")
    assert r.status_code == 502 and "unreachable" in r.json()["error"]


async def test_code_upload_answers_function_code(env: Env) -> None:
    r = await env.http.post("/-/code/default/add?filename=add.py&entryPoint=main", content=b"def main():\n  pass\n")
    assert r.status_code == 201
    assert r.json() == {"kind": "FunctionCode", "apiVersion": "minik8s.io/v1", "codeDigest": "sha256:" + "a" * 64,
                        "size": 19, "files": 1, "requirements": False}
    assert env.builder.calls == [(19, "add.py", "main", 1000)]


async def test_bad_code_is_a_status_400_and_too_large_a_status_413(env: Env) -> None:
    r = await env.http.post("/-/code/default/add?filename=add.py", content=b"x = 1\n")
    assert r.status_code == 400
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "BadRequest" and body["code"] == 400
    assert body["message"] == "main.py has no top-level def run"
    r = await env.http.post("/-/code/default/add?filename=add.py", content=b"def run(): pass\n" * 500)
    assert r.status_code == 413
    assert r.json()["reason"] == "RequestEntityTooLarge"
    assert env.builder.calls[-1][0] == 1001  # never more than one byte past the limit


async def test_healthz_metrics_and_unknown_routes(env: Env, instance_port: int) -> None:
    env.activator.update(KEY, endpoints([("127.0.0.1", instance_port, "p")]))
    await env.http.post("/function/default/add")
    assert (await env.http.get("/healthz")).status_code == 200
    text = (await env.http.get("/metrics")).text
    assert 'gateway_requests_total{code="200",function="add",namespace="default"} 1.0' in text
    assert (await env.http.get("/nope")).status_code == 404
    assert (await env.http.get("/function/default/add")).status_code == 405


def test_helpers() -> None:
    assert [_is_async(q) for q in (b"async=true", b"x=1&async=1", b"async=YES", b"async=false", b"", b"asyncx=1")] == [
        True, True, True, False, False, False]
    assert decode_logs(base64.b64encode("é\n".encode()).decode()) == "é\n"
    assert decode_logs("***") == "" and decode_logs(None) == ""
    assert [state_of(c) for c in (200, 400, 500, 503, 504)] == [
        "success", "bad-request", "error", "unavailable", "timeout"]


# --- the activation routes ---------------------------------------------------------------------------

def record(i: int, fn: str = "add", ns: str = "default") -> dict[str, Any]:
    return {"id": f"{i:032x}", "namespace": ns, "function": fn, "start": f"2024-01-01T00:00:{i:02d}.000000Z",
            "durationMs": 1.0, "initMs": 0.0, "status": "success", "statusCode": 200, "result": str(i),
            "truncated": False, "logs": "", "pod": "p", "async": False}


async def test_activations_are_listed_newest_first_by_function_and_namespace(env: Env) -> None:
    env.store.write([record(1), record(3), record(2), record(4, fn="other"), record(5, ns="prod")], retention=10)
    r = await env.http.get("/-/activations/default")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["kind"] == "ActivationList" and doc["apiVersion"] == "minik8s.io/v1"
    assert doc["metadata"]["resourceVersion"] == "5"
    assert [i["metadata"]["name"][-1] for i in doc["items"]] == ["4", "3", "2", "1"]
    r = await env.http.get("/-/activations/default", params={"labelSelector": "minik8s.io/function=add", "limit": "2"})
    assert [i["spec"]["result"] for i in r.json()["items"]] == ["3", "2"]
    r = await env.http.get("/-/activations/default", params={"labelSelector": "minik8s.io/function==other"})
    assert [i["spec"]["function"] for i in r.json()["items"]] == ["other"]
    everywhere = (await env.http.get("/-/activations")).json()["items"]
    assert {i["metadata"]["namespace"] for i in everywhere} == {"default", "prod"} and len(everywhere) == 5
    assert (await env.http.get("/-/activations/nowhere")).json()["items"] == []


async def test_one_activation_is_read_and_deleted(env: Env) -> None:
    env.store.write([record(1)], retention=10)
    name = f"{1:032x}"
    r = await env.http.get(f"/-/activations/default/{name}")
    assert r.status_code == 200 and r.json() == activation_object(record(1))
    r = await env.http.delete(f"/-/activations/default/{name}")
    assert r.status_code == 200 and r.json()["metadata"]["name"] == name
    for method in ("GET", "DELETE"):
        r = await env.http.request(method, f"/-/activations/default/{name}")
        assert r.status_code == 404
        assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": f'activations.minik8s.io "{name}" not found', "reason": "NotFound",
                            "code": 404, "details": {"name": name, "group": "minik8s.io", "kind": "activations"}}


async def test_activation_routes_refuse_what_they_do_not_serve(env: Env) -> None:
    for params in ({"labelSelector": "app=web"}, {"labelSelector": "minik8s.io/function!=add"},
                   {"labelSelector": "minik8s.io/function=add,app=web"}, {"fieldSelector": "metadata.name=x"},
                   {"limit": "-1"}, {"limit": "many"}):
        r = await env.http.get("/-/activations/default", params=params)
        assert r.status_code == 400 and r.json()["kind"] == "Status", params
    assert (await env.http.post("/-/activations/default", json={})).status_code == 405
    assert (await env.http.delete("/-/activations/default")).status_code == 405
    assert (await env.http.put("/-/activations/default/x", json={})).status_code == 405
    assert (await env.http.get("/-/activations/default/x/y")).status_code == 404
    env.gateway.store = None
    r = await env.http.get("/-/activations/default")
    assert r.status_code == 503 and r.json()["reason"] == "ServiceUnavailable"


def test_function_of_selector() -> None:
    assert function_of_selector("") is None and function_of_selector("  ") is None
    assert function_of_selector("minik8s.io/function=add") == "add"
    assert function_of_selector(" minik8s.io/function == add ") == "add"


# --- the forwarder (aiohttp) ---------------------------------------------------------------------------

async def test_forwarder_reads_the_whole_answer_and_maps_errors(instance_port: int) -> None:
    fwd = Forwarder()
    try:
        url = f"http://127.0.0.1:{instance_port}/"
        reply = await fwd.post(url, json.dumps({"big": 100_000}).encode(), {"Content-Type": "application/json"},
                               timeout=5)
        assert reply.status == 200 and len(reply.body) == 100_002
        assert reply.headers["x-minik8s-duration-ms"] == "1.5" and reply.headers["Content-Type"] == "application/json"
        reply = await fwd.post(url, b'{"status": 418}', {"Content-Type": "application/json"}, timeout=5)
        assert reply.status == 418
        assert (await fwd.get(f"http://127.0.0.1:{instance_port}/healthz", timeout=5)).status == 200
        with pytest.raises(Unreachable):
            await fwd.post(f"http://127.0.0.1:{closed_port()}/", b"{}", {}, timeout=5)
        with pytest.raises(ForwardTimeout):
            await fwd.post(url, b'{"sleep": 2}', {"Content-Type": "application/json"}, timeout=0.2)
        assert issubclass(Unreachable, ForwardError) and issubclass(ForwardTimeout, ForwardError)
    finally:
        await fwd.close()


async def test_forwarder_passes_bodies_as_sent_and_adds_no_encoding(instance_port: int) -> None:
    seen: list[dict[str, str]] = []

    class Gzipped(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(dict(self.headers))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = b"\x1f\x8b not really gzip"
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gzipped)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    fwd = Forwarder()
    try:
        reply = await fwd.post(f"http://127.0.0.1:{server.server_address[1]}/", b"{}",
                               {"Content-Type": "application/json", "X-Minik8s-Activation-Id": "a" * 32}, timeout=5)
        assert reply.body == b"\x1f\x8b not really gzip"  # auto_decompress=False
        assert "Accept-Encoding" not in seen[0] and seen[0]["X-Minik8s-Activation-Id"] == "a" * 32
    finally:
        await fwd.close()
        server.shutdown()
        server.server_close()
