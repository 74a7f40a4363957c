"""Unit tests of the probes (kubelet/prober.py) and their use by the pod worker.

The probe functions run against servers of the test's own on 127.0.0.1 (HTTP, TCP, gRPC health) and
``FakeRuntime.exec_handler`` (exec). The pod-level tests drive ``PodSyncer`` + ``PodWorkers`` on a
``FakeRuntime`` with probe results wired to pod syncs as the kubelet wires them; probe periods are
shrunk to tens of milliseconds (the prober takes float seconds) and every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from test_kubelet_support import FakeApiClient, make_pod

from kubelet import prober
from kubelet import runtime as rt
from kubelet.fake_runtime import FakeRuntime
from kubelet.pod_worker import PodSyncer, PodWorkers, SyncSettings
from kubelet.prober import LIVENESS, READINESS, STARTUP, ProbeError, ProbeSpec, Result
from kubelet.status import EventRecorder, StatusManager
from kubelet.volumes import VolumeManager

pytestmark = pytest.mark.timeout(30)


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def holds(predicate: Callable[[], Any], seconds: float, what: str) -> None:
    """``predicate`` is true on every poll for ``seconds`` (a bounded poll, not a sleep)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} no longer holds"
        await asyncio.sleep(0.01)


# --- a local HTTP server -------------------------------------------------------------------------


class HttpServer:
    """HTTP/1.1 on 127.0.0.1: ``codes[path]`` answers (default 200); ``/hang`` never answers; records requests."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self._hung = asyncio.Event()

    async def start(self) -> HttpServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._hung.set()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode()
            headers: dict[str, str] = {}
            while (h := (await reader.readline()).decode().strip()):
                name, _, value = h.partition(":")
                headers[name.strip().lower()] = value.strip()
            path = line.split()[1]
            self.requests.append((path, headers))
            if path == "/hang":
                await self._hung.wait()
                return
            if path == "/garbage":
                writer.write(b"nonsense\r\n\r\n")
            else:
                code = self.codes.get(path, 200)
                writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await writer.drain()
        except (OSError, IndexError):
            pass
        finally:
            writer.close()


@pytest.fixture()
async def http() -> AsyncIterator[HttpServer]:
    server = await HttpServer().start()
    yield server
    await server.stop()


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


# --- the probe functions -------------------------------------------------------------------------


async def test_http_get_codes_headers_and_failures(http: HttpServer) -> None:
    http.codes.update({"/redirect": 302, "/missing": 404, "/broken": 500, "/last-ok": 399})
    ok = await prober.http_get("127.0.0.1", http.port, "/healthz",
                               headers=[{"name": "X-Probe", "value": "yes"}, {"name": "Host", "value": "web.local"}])
    assert ok == (Result.SUCCESS, "")
    path, headers = http.requests[-1]
    assert path == "/healthz" and headers["x-probe"] == "yes" and headers["host"] == "web.local"
    assert headers["user-agent"].startswith("kube-probe/")
    assert (await prober.http_get("127.0.0.1", http.port, "redirect"))[0] is Result.SUCCESS  # no leading / is fine
    assert (await prober.http_get("127.0.0.1", http.port, "/last-ok"))[0] is Result.SUCCESS
    assert await prober.http_get("127.0.0.1", http.port, "/missing") == (
        Result.FAILURE, "HTTP probe failed with statuscode: 404")
    assert (await prober.http_get("127.0.0.1", http.port, "/broken"))[1] == "HTTP probe failed with statuscode: 500"
    result, message = await prober.http_get("127.0.0.1", http.port, "/garbage")
    assert result is Result.FAILURE and "malformed" in message

    started = time.monotonic()
    result, message = await prober.http_get("127.0.0.1", http.port, "/hang", timeout=0.2)
    assert result is Result.FAILURE and "context deadline exceeded" in message
    assert time.monotonic() - started < 1.5

    port = closed_port()
    result, message = await prober.http_get("127.0.0.1", port, "/")
    assert result is Result.FAILURE
    assert message == f'Get "http://127.0.0.1:{port}/": dial tcp 127.0.0.1:{port}: connect: connection refused'
    with pytest.raises(ProbeError):
        await prober.http_get("127.0.0.1", http.port, "/", headers=[{"name": "X", "value": "a\r\nB: c"}])


async def test_tcp_socket_open_and_closed(http: HttpServer) -> None:
    assert await prober.tcp_socket("127.0.0.1", http.port) == (Result.SUCCESS, "")
    port = closed_port()
    assert await prober.tcp_socket("127.0.0.1", port) == (
        Result.FAILURE, f"dial tcp 127.0.0.1:{port}: connect: connection refused")


async def test_exec_probe_exit_codes_timeouts_and_errors() -> None:
    runtime = FakeRuntime()
    cid = await running_container(runtime)
    answers: dict[str, Any] = {"ok": rt.ExecResult(0, b"fine\n", b""), "bad": rt.ExecResult(1, b"", b"no file\n"),
                               "quiet": rt.ExecResult(2, b"", b""),
                               "slow": rt.RuntimeFailure("ExecSync: timeout 1s exceeded: context deadline exceeded"),
                               "gone": rt.RuntimeFailure("ExecSync: container is not running")}

    def handler(container_id: str, command: list[str]) -> rt.ExecResult:
        answer = answers[command[0]]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    runtime.exec_handler = handler
    assert await prober.exec_command(runtime, cid, ["ok"], timeout=0.5) == (Result.SUCCESS, "fine")
    assert runtime.calls_to("exec_sync")[-1] == (cid, ["ok"], 1)  # whole seconds for the CRI, at least 1
    assert await prober.exec_command(runtime, cid, ["bad"]) == (Result.FAILURE, "no file")
    assert await prober.exec_command(runtime, cid, ["quiet"]) == (
        Result.FAILURE, "command ['quiet'] exited with code 2")
    assert await prober.exec_command(runtime, cid, ["slow"]) == (Result.FAILURE, "command ['slow'] timed out")
    assert (await prober.exec_command(runtime, cid, ["gone"]))[0] is Result.UNKNOWN  # not counted
    assert (await prober.exec_command(runtime, cid, []))[0] is Result.UNKNOWN


async def test_grpc_health_probe() -> None:
    import grpc

    statuses = {"": 1, "down": 2}

    def check(request: bytes, context: Any) -> bytes:
        service = request[2:].decode() if request else ""
        if service not in statuses:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return bytes([0x08, statuses[service]])

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        assert await prober.grpc_health("127.0.0.1", port) == (Result.SUCCESS, "")
        assert await prober.grpc_health("127.0.0.1", port, "down") == (
            Result.FAILURE, 'service unhealthy (responded with "NOT_SERVING")')
        result, message = await prober.grpc_health("127.0.0.1", port, "nope")
        assert result is Result.FAILURE and "NOT_FOUND" in message
    finally:
        await server.stop(None)
    result, _ = await prober.grpc_health("127.0.0.1", closed_port(), timeout=0.3)
    assert result is Result.FAILURE


def test_ports_and_specs() -> None:
    container = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}
    assert prober.resolve_port(80, container) == 80
    assert prober.resolve_port("81", container) == 81
    assert prober.resolve_port("http", container) == 8080
    with pytest.raises(ProbeError, match="unable to find port named 'grpc'"):
        prober.resolve_port("grpc", container)
    with pytest.raises(ProbeError):
        prober.resolve_port(70000, container)

    spec = ProbeSpec.parse(READINESS, {"tcpSocket": {"port": 80}, "successThreshold": 3, "periodSeconds": 2})
    assert spec is not None and (spec.success_threshold, spec.period, spec.timeout, spec.failure_threshold) == (
        3, 2.0, 1.0, 3)
    live = ProbeSpec.parse(LIVENESS, {"tcpSocket": {"port": 80}, "successThreshold": 3,
                                      "terminationGracePeriodSeconds": 4})
    assert live is not None and live.success_threshold == 1 and live.termination_grace == 4  # must be 1
    assert ProbeSpec.parse(STARTUP, None) is None
    assert set(prober.probe_specs({"readinessProbe": {"exec": {}}, "startupProbe": {"exec": {}}})) == {
        READINESS, STARTUP}


async def running_container(runtime: FakeRuntime) -> str:
    from kubelet.runtime import ContainerConfig, SandboxConfig

    sandbox = SandboxConfig(pod_uid="u", name="p", namespace="default")
    sid = await runtime.run_sandbox(sandbox)
    cid = await runtime.create_container(sid, ContainerConfig(name="c", image="busybox"), sandbox)
    await runtime.start_container(cid)
    return cid


# --- pods with probes: PodSyncer + PodWorkers on a FakeRuntime -----------------------------------


class Checks:
    """An exec handler: ``["check", NAME]`` exits 0 while ``ok[NAME]``; records (monotonic time, container, NAME)."""

    def __init__(self, **ok: bool) -> None:
        self.ok = dict(ok)
        self.calls: list[tuple[float, str, str]] = []

    def __call__(self, container_id: str, command: list[str]) -> rt.ExecResult:
        name = command[1]
        self.calls.append((time.monotonic(), container_id, name))
        if self.ok.get(name):
            return rt.ExecResult(0, b"", b"")
        return rt.ExecResult(1, b"", f"{name} not ok\n".encode())

    def times(self, name: str, container_id: str | None = None) -> list[float]:
        return [t for t, c, n in self.calls if n == name and container_id in (None, c)]


def exec_probe(name: str, **fields: Any) -> dict[str, Any]:
    return {"exec": {"command": ["check", name]}, **fields}


class Node:
    """A pod syncer and its workers on fakes; probe result changes sync the pod, as in the kubelet."""

    def __init__(self, tmp_path: Path, pod: dict[str, Any], checks: Checks | None = None,
                 fast_interval: float = prober.DEFAULT_FAST_INTERVAL,
                 handler: Callable[[str, list[str]], rt.ExecResult] | None = None) -> None:
        self.client = FakeApiClient(pod)
        self.name, self.uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        self.runtime = FakeRuntime(pod_cidr="10.88.7.0/24")
        self.checks = checks or Checks()
        self.runtime.exec_handler = handler or self.checks
        self.recorder = EventRecorder(self.client, "node-1")
        self.syncer = PodSyncer(
            client=self.client, runtime=self.runtime, volumes=VolumeManager(tmp_path / "kubelet"),
            statuses=StatusManager(self.client), recorder=self.recorder,
            settings=SyncSettings(node_name="node-1", cgroup_root="/minik8s-test", crash_backoff_base=0.05,
                                  crash_backoff_max=0.2, readiness_fast_interval=fast_interval),
            host_ip="10.88.7.1", remove_cgroups=lambda parent: [])
        self.workers = PodWorkers(self.syncer)
        self.syncer.probes.on_change = self.dispatch

    def dispatch(self, uid: str) -> None:
        pod = self.client.obj("pods", "default", self.name)
        if pod is not None and pod["metadata"]["uid"] == uid:
            self.workers.update(uid, pod)

    def pod(self) -> dict[str, Any]:
        found = self.client.obj("pods", "default", self.name)
        assert found is not None
        return found

    async def start(self, wait_running: bool = True) -> Node:
        self.dispatch(self.uid)
        await eventually(lambda: self.container() is not None and (
            not wait_running or self.cstatus().get("state", {}).get("running")), what="container running")
        return self

    async def stop(self) -> None:
        await self.workers.stop()
        await self.syncer.probes.stop()

    def container(self) -> Any:
        found = [c for c in self.runtime.containers.values() if c.config.name == "main"]
        return max(found, key=lambda c: c.config.attempt) if found else None

    def cstatus(self) -> dict[str, Any]:
        statuses = (self.pod().get("status") or {}).get("containerStatuses") or [{}]
        return dict(statuses[0])

    def condition(self, kind: str) -> str:
        return next((c["status"] for c in self.pod()["status"].get("conditions") or [] if c["type"] == kind), "")

    def events(self, reason: str) -> list[str]:
        return [e.message for e in self.recorder.recorded if e.reason == reason]


@pytest.fixture()
def nodes() -> list[Node]:
    return []


@pytest.fixture(autouse=True)
async def _stop_nodes(nodes: list[Node]) -> AsyncIterator[None]:
    yield
    for n in nodes:
        await n.stop()


async def start(nodes: list[Node], tmp_path: Path, container: dict[str, Any], checks: Checks,
                restart_policy: str = "Always", wait_running: bool = True, **kw: Any) -> Node:
    pod = make_pod("web", uid="uid-web", restart_policy=restart_policy, containers=[
        {"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"],
         **container}])
    node = Node(tmp_path, pod, checks, **kw)
    nodes.append(node)
    return await node.start(wait_running)


async def test_readiness_fast_until_first_success_then_period(tmp_path: Path, nodes: list[Node]) -> None:
    checks = Checks(ready=False)
    n = await start(nodes, tmp_path, {"readinessProbe": exec_probe("ready", periodSeconds=10)}, checks)
    # Running but not ready: the readiness probe has not passed.
    s = n.cstatus()
    assert "running" in s["state"] and s["started"] is True and s["ready"] is False
    assert n.pod()["status"]["phase"] == "Running"
    assert n.condition("ContainersReady") == "False" and n.condition("Ready") == "False"
    # It is probed every 50 ms (not every periodSeconds=10) until its first success.
    await eventually(lambda: len(checks.times("ready")) >= 6, what="fast readiness probes")
    gaps = [b - a for a, b in zip(checks.times("ready"), checks.times("ready")[1:], strict=False)]
    assert statistics.median(gaps) < 0.08, gaps
    assert n.events("Unhealthy") == ["Readiness probe failed: ready not ok"]  # once per period, not per probe

    checks.ok["ready"] = True
    flipped = time.monotonic()
    await eventually(lambda: n.cstatus().get("ready") is True, what="ready")
    took = time.monotonic() - flipped
    assert took < 0.5, took  # ≈ one fast interval plus a sync
    assert n.condition("ContainersReady") == "True" and n.condition("Ready") == "True"
    # From now on: every periodSeconds (10 s), so no further probe for a while.
    count = len(checks.times("ready"))
    await holds(lambda: len(checks.times("ready")) == count, 0.3, "no probe within the period")
    assert n.runtime.calls_to("stop_container") == []


async def test_readiness_success_threshold_and_losing_readiness(tmp_path: Path, nodes: list[Node]) -> None:
    checks = Checks(ready=True)
    n = await start(nodes, tmp_path, {"readinessProbe": exec_probe(
        "ready", periodSeconds=0.03, successThreshold=3, failureThreshold=2)}, checks)
    await eventually(lambda: n.cstatus().get("ready") is True, what="ready")
    cid = n.container().id
    assert len(checks.times("ready", cid)) >= 3  # three successes in a row first
    checks.ok["ready"] = False
    await eventually(lambda: n.cstatus().get("ready") is False, what="not ready again")
    assert n.condition("Ready") == "False"
    assert n.container().id == cid and n.runtime.calls_to("stop_container") == []  # readiness never kills


async def test_initial_delay(tmp_path: Path, nodes: list[Node]) -> None:
    checks = Checks(ready=True)
    n = await start(nodes, tmp_path, {"readinessProbe": exec_probe("ready", initialDelaySeconds=0.4)}, checks)
    started = n.container().started_at / 1e9
    await eventually(lambda: n.cstatus().get("ready") is True, what="ready")
    first = checks.calls[0][0] - time.monotonic() + time.time()  # the first probe, in wall-clock time
    assert first >= started + 0.4 - 0.01, first - started


async def test_liveness_failure_threshold_kills_and_restarts(tmp_path: Path, nodes: list[Node]) -> None:
    checks = Checks(live=True)
    n = await start(nodes, tmp_path, {"livenessProbe": exec_probe(
        "live", periodSeconds=0.03, failureThreshold=3)}, checks)
    first = n.container()
    await eventually(lambda: len(checks.times("live", first.id)) >= 2, what="liveness probes")
    assert n.cstatus()["ready"] is True  # liveness says nothing of readiness
    checks.ok["live"] = False
    await eventually(lambda: n.cstatus().get("restartCount") == 1 and "running" in n.cstatus()["state"],
                     what="restarted")
    # Exactly failureThreshold failures in a row, then the kill (the worker stops probing the old container).
    calls = [ok for _, c, name in checks.calls if c == first.id for ok in [name]]
    assert len(calls) >= 3
    assert n.runtime.containers[first.id].state == "EXITED"
    assert ("stop_container", (first.id, 30)) in n.runtime.calls  # the pod's grace period
    assert n.container().id != first.id and n.container().config.attempt == 1
    assert n.events("Killing") == ["Container main failed liveness probe, will be restarted"]
    assert "Liveness probe failed: live not ok" in n.events("Unhealthy")
    assert n.cstatus()["lastState"]["terminated"]["exitCode"] == 143
    # The new container is probed by a new worker, from scratch.
    second = n.container().id
    await eventually(lambda: checks.times("live", second), what="probing the new container")


async def test_liveness_counts_consecutive_failures_only(tmp_path: Path, nodes: list[Node]) -> None:
    flip = iter([False, False, True] * 4)  # never three failures in a row
    checks = Checks()

    def handler(container_id: str, command: list[str]) -> rt.ExecResult:
        checks.ok["live"] = next(flip, True)
        return checks(container_id, command)

    n = await start(nodes, tmp_path, {"livenessProbe": exec_probe("live", periodSeconds=0.02)}, checks,
                    handler=handler)
    await eventually(lambda: len(checks.times("live")) >= 12, what="a dozen probes")
    assert n.runtime.calls_to("stop_container") == [] and n.cstatus()["restartCount"] == 0


async def test_liveness_kill_with_never_is_not_restarted(tmp_path: Path, nodes: list[Node]) -> None:
    checks = Checks(live=False)
    n = await start(nodes, tmp_path, {"livenessProbe": exec_probe(
        "live", periodSeconds=0.02, failureThreshold=1, terminationGracePeriodSeconds=3)}, checks,
        restart_policy="Never", wait_running=False)
    await eventually(lambda: n.pod()["status"]["phase"] == "Failed", what="Failed")
    assert len(n.runtime.calls_to("create_container")) == 1
    assert n.runtime.calls_to("stop_container")[0][1] == 3  # the probe's own grace period wins
    assert n.events("Killing") == ["Container main failed liveness probe"]
    assert n.syncer.probes.workers() == []


async def test_startup_probe_gates_liveness_and_readiness(tmp_path: Path, nodes: list[Node]) -> None:
    checks = Checks(started=False, live=False, ready=True)
    n = await start(nodes, tmp_path, {
        "startupProbe": exec_probe("started", periodSeconds=0.02, failureThreshold=1000),
        "livenessProbe": exec_probe("live", periodSeconds=0.02, failureThreshold=1),
        "readinessProbe": exec_probe("ready", periodSeconds=10)}, checks)
    await eventually(lambda: len(checks.times("started")) >= 10, what="startup probes")
    # While it has not started: no liveness (which would kill it at once) nor readiness probe runs.
    assert checks.times("live") == [] and checks.times("ready") == []
    s = n.cstatus()
    assert s["started"] is False and s["ready"] is False and "running" in s["state"]
    checks.ok.update(started=True, live=True)
    await eventually(lambda: n.cstatus().get("started") is True and n.cstatus().get("ready") is True,
                     what="started and ready")
    await eventually(lambda: len(checks.times("live")) >= 2, what="liveness probes after the start")
    count = len(checks.times("started"))
    await holds(lambda: len(checks.times("started")) == count, 0.1, "no startup probe once started")
    assert n.runtime.calls_to("stop_container") == [] and n.cstatus()["restartCount"] == 0


async def test_failing_startup_probe_kills_and_restarts(tmp_path: Path, nodes: list[Node]) -> None:
    checks = Checks(started=False)
    n = await start(nodes, tmp_path, {"startupProbe": exec_probe("started", periodSeconds=0.02,
                                                                  failureThreshold=3)}, checks)
    await eventually(lambda: n.cstatus().get("restartCount", 0) >= 1, what="restart")
    assert n.events("Killing")[0] == "Container main failed startup probe, will be restarted"
    assert "Startup probe failed: started not ok" in n.events("Unhealthy")


async def test_http_readiness_on_a_named_port(tmp_path: Path, nodes: list[Node], http: HttpServer) -> None:
    http.codes["/ready"] = 503
    n = await start(nodes, tmp_path, {
        "ports": [{"name": "web", "containerPort": http.port}],
        "readinessProbe": {"httpGet": {"host": "127.0.0.1", "port": "web", "path": "/ready",
                                       "httpHeaders": [{"name": "X-Who", "value": "kubelet"}]}}}, Checks())
    await eventually(lambda: len(http.requests) >= 2, what="HTTP probes")
    assert n.cstatus()["ready"] is False
    assert http.requests[0][1]["x-who"] == "kubelet"
    http.codes["/ready"] = 200
    await eventually(lambda: n.cstatus().get("ready") is True, what="ready over HTTP")


async def test_probe_workers_stop_with_the_container_and_the_pod(tmp_path: Path, nodes: list[Node]) -> None:
    checks = Checks(ready=True, live=True)
    n = await start(nodes, tmp_path, {"readinessProbe": exec_probe("ready", periodSeconds=0.02),
                                      "livenessProbe": exec_probe("live", periodSeconds=0.02)}, checks)
    probes = n.syncer.probes
    assert {w.kind for w in probes.workers("uid-web")} == {READINESS, LIVENESS}
    first = n.container().id
    n.runtime.exit_container(first, 1)  # it crashed: restarted, new workers for the new container
    n.dispatch("uid-web")
    await eventually(lambda: n.cstatus().get("restartCount") == 1, what="restart")
    await eventually(lambda: {w.container_id for w in probes.workers("uid-web")} == {n.container().id},
                     what="workers follow the new container")
    assert probes.results.get(first, READINESS) is None
    n.workers.update("uid-web", n.pod(), kill=True, grace=0)  # as the kubelet kills a pod
    await eventually(lambda: n.workers.is_terminated("uid-web"), what="pod terminated")
    assert probes.workers() == [] and len(probes.results) == 0
    count = len(checks.calls)
    await holds(lambda: len(checks.calls) == count, 0.1, "no probes after the pod went")


async def test_adopted_ready_container_stays_ready(tmp_path: Path, nodes: list[Node]) -> None:
    checks = Checks(ready=True)
    n = await start(nodes, tmp_path, {"readinessProbe": exec_probe("ready", periodSeconds=10)}, checks)
    await eventually(lambda: n.cstatus().get("ready") is True, what="ready")
    # A new kubelet (new probe manager, new status manager) adopts the running container.
    await n.syncer.probes.stop()
    n.syncer.probes = prober.ProbeManager(runtime=n.runtime, recorder=n.recorder, on_change=n.dispatch)
    n.syncer.statuses = StatusManager(n.client)
    writes = len(n.client.writes("pods"))
    await n.syncer.sync_pod(n.pod())
    assert n.cstatus()["ready"] is True and len(n.client.writes("pods")) == writes  # no flip, no write


async def test_a_pod_without_an_ip_is_never_probed_on_this_host() -> None:
    spec = ProbeSpec.parse(READINESS, {"tcpSocket": {"port": 80}})
    assert spec is not None
    with pytest.raises(ProbeError, match="no IP"):
        await prober.run_probe(spec, runtime=FakeRuntime(), container={"name": "c"}, container_id="x", pod_ip="")
