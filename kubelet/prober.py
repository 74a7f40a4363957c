"""Container probes — liveness, readiness, startup — in Kubernetes' prober-manager pattern.

::

    PodSyncer (each status write) ──ProbeManager.sync(pod, views, pod_ip)──▶ one ProbeWorker task per
        (pod uid, container name, kind), started when the container runs, stopped when it stops or the pod goes
                                         │  httpGet / tcpSocket / exec / grpc, every periodSeconds
                                         ▼
    ResultsCache (container id, kind) → Success | Failure ──a change──▶ on_change(uid) ──▶ the pod is synced
    PodSyncer: containerStatuses[].ready / started from the cache; liveness or startup Failure → the
    container is killed (the pod's grace period) and restarted per restartPolicy with the crash back-off.

As in Kubernetes: a result changes only after ``failureThreshold`` / ``successThreshold`` equal results
in a row; readiness starts as Failure, liveness as Success, startup as "not yet"; while a startup probe
has not succeeded the container's liveness and readiness probes do not run; a liveness or startup
Failure puts its worker on hold until a new container replaces the old one. A probe that cannot run
(an unknown port name, a runtime error) is reported as an ``Unhealthy`` event and not counted.

Not as in Kubernetes: readiness is probed every ``fast_interval`` (50 ms) right after the container starts
(and after ``initialDelaySeconds``) until its first success, then every ``periodSeconds``, so a ready
pod is known within tens of milliseconds. ``Unhealthy`` events come at most once per period per probe.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import os
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubelet import runtime as rt
from kubelet.status import container_id as runtime_container_id

log = logging.getLogger(__name__)

LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
KINDS = ((STARTUP, "startupProbe"), (LIVENESS, "livenessProbe"), (READINESS, "readinessProbe"))
USER_AGENT = "kube-probe/1.30"
MAX_OUTPUT = 10 * 1024  # bytes of a probe's output kept for its message (Kubernetes' limit)
EXEC_MARGIN = 1.0  # seconds past timeoutSeconds before the kubelet gives up on an exec probe itself
DEFAULT_FAST_INTERVAL = 0.05


class Result(enum.Enum):
    SUCCESS = "Success"
    FAILURE = "Failure"
    UNKNOWN = "Unknown"  # the probe could not run (not counted)


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a container spec, with Kubernetes' defaults (the apiserver sets them too)."""

    kind: str
    action: Mapping[str, Any]
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: int | None = None  # the probe's terminationGracePeriodSeconds (liveness/startup kills)

    @classmethod
    def parse(cls, kind: str, raw: Any) -> ProbeSpec | None:
        if not isinstance(raw, dict):
            return None

        def num(key: str, default: float, low: float) -> float:
            value = raw.get(key)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                return default
            return max(low, float(value))

        grace = raw.get("terminationGracePeriodSeconds")
        success = int(num("successThreshold", 1, 1))
        return cls(kind=kind, action=raw, initial_delay=num("initialDelaySeconds", 0.0, 0.0),
                   period=num("periodSeconds", 10.0, 0.001), timeout=num("timeoutSeconds", 1.0, 0.001),
                   # liveness and startup must have successThreshold 1 (the apiserver says so too)
                   success_threshold=success if kind == READINESS else 1,
                   failure_threshold=int(num("failureThreshold", 3, 1)),
                   termination_grace=grace if isinstance(grace, int) and not isinstance(grace, bool) and grace > 0
                   else None)


def probe_specs(container: Mapping[str, Any]) -> dict[str, ProbeSpec]:
    """The container's probes by kind (only those it has)."""
    out = {}
    for kind, key in KINDS:
        spec = ProbeSpec.parse(kind, container.get(key))
        if spec is not None:
            out[kind] = spec
    return out


# --- the probes ----------------------------------------------------------------------------------


class ProbeError(Exception):
    """The probe could not be run as specified (e.g. an unknown port name)."""


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) and not isinstance(port, bool):
        number = port
    elif isinstance(port, str) and port.isdigit():
        number = int(port)
    elif isinstance(port, str) and port:
        for p in container.get("ports") or []:
            if p.get("name") == port:
                number = int(p.get("containerPort") or 0)
                break
        else:
            raise ProbeError(f"unable to find port named {port!r} in the ports of container "
                             f"{container.get('name')!r}")
    else:
        raise ProbeError(f"bad port {port!r}")
    if not 0 < number < 65536:
        raise ProbeError(f"invalid port number {number}")
    return number


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dial_error(host: str, port: int, exc: OSError) -> str:
    why = (os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__).lower()
    return f"dial tcp {_hostport(host, port)}: connect: {why}"


def _clean(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise ProbeError(f"line break in an HTTP header: {text!r}")
    return text


async def http_get(host: str, port: int, path: str = "/", *, scheme: str = "HTTP",
                   headers: Iterable[Mapping[str, Any]] = (), timeout: float = 1.0) -> tuple[Result, str]:
    """GET ``scheme://host:port/path``; 200-399 is success (redirects are not followed). HTTPS is not verified."""
    if not path.startswith("/"):
        path = "/" + path
    https = scheme.upper() == "HTTPS"
    url = f"{'https' if https else 'http'}://{_hostport(host, port)}{path}"
    fixed = {"host": ("Host", _hostport(host, port)), "user-agent": ("User-Agent", USER_AGENT),
             "accept": ("Accept", "*/*")}
    extra: list[tuple[str, str]] = []
    for h in headers:
        name, value = _clean(str(h.get("name") or "")), _clean(str(h.get("value") or ""))
        if not name:
            continue
        if name.lower() in fixed:
            fixed[name.lower()] = (name, value)  # the user's Host / User-Agent / Accept win
        else:
            extra.append((name, value))
    lines = [f"GET {_clean(path)} HTTP/1.1", *(f"{n}: {v}" for n, v in [*fixed.values(), *extra]),
             "Connection: close", "", ""]
    context: ssl.SSLContext | None = None
    if https:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # as Kubernetes: probes do not verify certificates
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(host, port, ssl=context)
            except OSError as exc:
                return Result.FAILURE, f'Get "{url}": {_dial_error(host, port, exc)}'
            writer.write("\r\n".join(lines).encode("latin-1"))
            await writer.drain()
            status_line = await reader.readline()
            while (await reader.readline()).strip():
                pass  # the headers; the body is not needed
    except TimeoutError:
        return Result.FAILURE, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting ' \
                               f'headers)'
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return Result.FAILURE, f'Get "{url}": {exc or type(exc).__name__}'
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return Result.FAILURE, f'Get "{url}": malformed HTTP response {status_line[:80]!r}'
    code = int(parts[1])
    if 200 <= code < 400:
        return Result.SUCCESS, ""
    return Result.FAILURE, f"HTTP probe failed with statuscode: {code}"


async def tcp_socket(host: str, port: int, *, timeout: float = 1.0) -> tuple[Result, str]:
    """Success when a TCP connection to ``host:port`` opens within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return Result.FAILURE, f"dial tcp {_hostport(host, port)}: i/o timeout"
    except OSError as exc:
        return Result.FAILURE, _dial_error(host, port, exc)
    writer.close()
    return Result.SUCCESS, ""


async def exec_command(runtime: rt.Runtime, container_id: str, command: list[str], *,
                       timeout: float = 1.0) -> tuple[Result, str]:
    """Run ``command`` in the container (CRI ExecSync); exit code 0 is success."""
    if not command:
        return Result.UNKNOWN, "exec probe without a command"
    seconds = max(1, math.ceil(timeout))
    try:
        result = await asyncio.wait_for(runtime.exec_sync(container_id, command, seconds), seconds + EXEC_MARGIN)
    except TimeoutError:
        return Result.FAILURE, f"command {command!r} timed out"
    except rt.RuntimeFailure as exc:
        text = str(exc)
        if "timeout" in text.lower() or "deadline" in text.lower():
            return Result.FAILURE, f"command {command!r} timed out"
        return Result.UNKNOWN, text
    output = (result.stdout + result.stderr)[:MAX_OUTPUT].decode(errors="replace").strip()
    if result.exit_code == 0:
        return Result.SUCCESS, output
    return Result.FAILURE, output or f"command {command!r} exited with code {result.exit_code}"


_SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _health_request(service: str) -> bytes:
    data = service.encode()
    if not data:
        return b""
    length, varint = len(data), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x0a" + bytes(varint) + data  # field 1 (service), length-delimited


def _health_status(data: bytes) -> int:
    # HealthCheckResponse{status = 1 (enum)}: the tag 0x08 then one varint byte (values 0..3).
    return data[1] if len(data) >= 2 and data[0] == 0x08 else 0


async def grpc_health(host: str, port: int, service: str = "", *, timeout: float = 1.0) -> tuple[Result, str]:
    """The gRPC health checking protocol (``grpc.health.v1.Health/Check``); SERVING is success."""
    import grpc  # only when a pod has a grpc probe

    target = _hostport(host, port)
    async with grpc.aio.insecure_channel(target) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            reply = await check(_health_request(service), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Result.FAILURE, f"timeout: health rpc did not complete within {timeout:g}s"
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                return Result.FAILURE, f"failed to connect service {target!r} within {timeout:g}s: {exc.details()}"
            return Result.FAILURE, f"error: health rpc probe failed: {exc.code().name}: {exc.details()}"
    status = _health_status(bytes(reply))
    if status == 1:
        return Result.SUCCESS, ""
    return Result.FAILURE, f'service unhealthy (responded with "{_SERVING_STATUS.get(status, status)}")'


def _host(given: Any, pod_ip: str) -> str:
    host = str(given or pod_ip)
    if not host:
        raise ProbeError("the pod has no IP (yet) to probe")  # never let "" mean this host
    return host


async def run_probe(spec: ProbeSpec, *, runtime: rt.Runtime, container: Mapping[str, Any], container_id: str,
                    pod_ip: str) -> tuple[Result, str]:
    """Run ``spec`` once against the container. Raises ``ProbeError`` when it cannot be run."""
    action = spec.action
    if isinstance(action.get("exec"), dict):
        command = [str(a) for a in action["exec"].get("command") or []]
        return await exec_command(runtime, container_id, command, timeout=spec.timeout)
    if isinstance(action.get("httpGet"), dict):
        http = action["httpGet"]
        return await http_get(_host(http.get("host"), pod_ip), resolve_port(http.get("port"), container),
                              str(http.get("path") or "/"), scheme=str(http.get("scheme") or "HTTP"),
                              headers=[h for h in http.get("httpHeaders") or [] if isinstance(h, dict)],
                              timeout=spec.timeout)
    if isinstance(action.get("tcpSocket"), dict):
        tcp = action["tcpSocket"]
        return await tcp_socket(_host(tcp.get("host"), pod_ip), resolve_port(tcp.get("port"), container),
                                timeout=spec.timeout)
    if isinstance(action.get("grpc"), dict):
        g = action["grpc"]
        return await grpc_health(_host(None, pod_ip), resolve_port(g.get("port"), container),
                                 str(g.get("service") or ""), timeout=spec.timeout)
    raise ProbeError("the probe has no exec, httpGet, tcpSocket or grpc action")


# --- results and workers -------------------------------------------------------------------------


class ResultsCache:
    """(container id, kind) → the current result: what the status code reads (Kubernetes' results.Manager)."""

    def __init__(self) -> None:
        self._results: dict[tuple[str, str], Result] = {}

    def get(self, container_id: str, kind: str) -> Result | None:
        return self._results.get((container_id, kind))

    def set(self, container_id: str, kind: str, result: Result) -> bool:
        """Store ``result``; True when it differs from what was there."""
        key = (container_id, kind)
        changed = self._results.get(key) != result
        self._results[key] = result
        return changed

    def remove(self, container_id: str, kind: str) -> None:
        self._results.pop((container_id, kind), None)

    def __len__(self) -> int:
        return len(self._results)


_INITIAL = {READINESS: Result.FAILURE, LIVENESS: Result.SUCCESS}  # startup: no entry until its first result


@dataclass
class ProbeWorker:
    """Probes one container with one probe, in a task of its own, until stopped."""

    manager: ProbeManager
    uid: str
    pod: dict[str, Any]
    container: Mapping[str, Any]
    container_id: str
    started_at: float  # wall-clock seconds the container started
    pod_ip: str
    spec: ProbeSpec
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last: Result | None = None
    run_length: int = 0
    on_hold: bool = False
    succeeded_once: bool = False
    probes: int = 0
    last_event: float = -math.inf
    stopped: bool = False

    @property
    def name(self) -> str:
        return str(self.container.get("name"))

    @property
    def kind(self) -> str:
        return self.spec.kind

    def interval(self) -> float:
        if self.kind == READINESS and not self.succeeded_once:
            return min(self.spec.period, self.manager.fast_interval)
        return self.spec.period

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` or until woken (a startup probe succeeded)."""
        # asyncio.wait, not asyncio.timeout: on 3.11 a timeout expiring as the task is cancelled can
        # swallow the cancellation.
        waiter = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait([waiter], timeout=max(0.0, seconds))
        finally:
            waiter.cancel()
        self.wake.clear()

    async def run(self) -> None:
        m = self.manager
        while not self.stopped:  # a cancellation swallowed by a probe's own timeout still ends the loop
            due = self.started_at + self.spec.initial_delay - m.clock()
            if due > 0:
                await self._pause(due)
                continue
            if self.kind == STARTUP and m.results.get(self.container_id, STARTUP) is Result.SUCCESS:
                return  # started: the startup probe is done for this container
            if self.kind != STARTUP and not m.started(self.uid, self.name, self.container_id):
                await self._pause(self.interval())
                continue
            await self.probe_once()
            if self.on_hold:
                return  # a failed liveness/startup probe: a new container gets a new worker
            await self._pause(self.interval())

    async def probe_once(self) -> None:
        m = self.manager
        self.probes += 1
        try:
            result, message = await run_probe(self.spec, runtime=m.runtime, container=self.container,
                                              container_id=self.container_id, pod_ip=self.pod_ip)
        except ProbeError as exc:
            result, message = Result.UNKNOWN, str(exc)
        except Exception as exc:  # a probe must never end its worker
            log.warning("pod %s container %s: %s probe crashed", self.uid, self.name, self.kind, exc_info=True)
            result, message = Result.UNKNOWN, f"{type(exc).__name__}: {exc}"
        if self.stopped:
            return  # stopped while probing (a cancellation lost in a timeout): leave the results alone
        if result is Result.UNKNOWN:
            self._event(f"{self.kind.capitalize()} probe errored: {message}")
            return
        if result is self.last:
            self.run_length += 1
        else:
            self.last, self.run_length = result, 1
        if result is Result.FAILURE:
            log.debug("pod %s container %s: %s probe failed: %s", self.uid, self.name, self.kind, message)
            self._event(f"{self.kind.capitalize()} probe failed: {message}")
        threshold = self.spec.failure_threshold if result is Result.FAILURE else self.spec.success_threshold
        if self.run_length < threshold:
            return
        if result is Result.SUCCESS:
            self.succeeded_once = True
        if m.results.set(self.container_id, self.kind, result):
            log.info("pod %s container %s: %s probe now %s", self.uid, self.name, self.kind, result.value)
            if self.kind == STARTUP and result is Result.SUCCESS:
                m.wake_container(self.uid, self.name)
            m.changed(self.uid)
        if result is Result.FAILURE and self.kind in (LIVENESS, STARTUP):
            self.on_hold, self.run_length = True, 0

    def _event(self, message: str) -> None:
        now = time.monotonic()
        if now - self.last_event < self.spec.period:
            return  # at most one event per period (readiness is probed much faster at first)
        self.last_event = now
        self.manager.recorder.event(self.pod, "Warning", "Unhealthy", message, container=self.name)


class ProbeManager:
    """Starts and stops probe workers as containers come and go; keeps their results; see the module docstring.

    ``on_change(uid)`` is called (in the event loop) whenever a result of one of the pod's containers
    changes; the kubelet syncs the pod then, which writes its status and kills failed containers.
    """

    def __init__(self, *, runtime: rt.Runtime, recorder: Any, fast_interval: float = DEFAULT_FAST_INTERVAL,
                 on_change: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.recorder = recorder
        self.fast_interval = fast_interval
        self.on_change = on_change
        self.clock = clock
        self.results = ResultsCache()
        self._workers: dict[tuple[str, str, str], ProbeWorker] = {}

    def workers(self, uid: str | None = None) -> list[ProbeWorker]:
        return [w for (u, _, _), w in self._workers.items() if uid is None or u == uid]

    def worker(self, uid: str, name: str, kind: str) -> ProbeWorker | None:
        return self._workers.get((uid, name, kind))

    def changed(self, uid: str) -> None:
        if self.on_change is not None:
            self.on_change(uid)

    # -- what the workers and the pod worker read ----------------------------------------------

    def started(self, uid: str, name: str, container_id: str) -> bool:
        """False while the container has a startup probe that has not succeeded."""
        w = self._workers.get((uid, name, STARTUP))
        if w is None or w.container_id != container_id:
            return True
        return self.results.get(container_id, STARTUP) is Result.SUCCESS

    def failed(self, uid: str, name: str, container_id: str) -> ProbeSpec | None:
        """The liveness or startup probe whose failure means the container must be killed, if any."""
        for kind in (STARTUP, LIVENESS):
            w = self._workers.get((uid, name, kind))
            if w is not None and w.container_id == container_id and \
                    self.results.get(container_id, kind) is Result.FAILURE:
                return w.spec
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    def sync(self, pod: dict[str, Any], running: Mapping[str, rt.ContainerStatus],
             pod_ip: str) -> dict[str, tuple[bool, bool]]:
        """Make the workers match the pod's containers (name → newest runtime record): a worker per probe
        of each running container, none for the rest. Returns (started, ready) per running container.

        A container whose id the pod's API status already calls started / ready (a restarted kubelet
        adopting it) starts from there instead of from "not yet", so adoption does not flip it to not ready.
        """
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        reported = {str(s.get("containerID") or ""): s for s in (pod.get("status") or {}).get("containerStatuses")
                    or [] if isinstance(s, dict)}
        wanted: dict[tuple[str, str, str], tuple[Mapping[str, Any], rt.ContainerStatus, ProbeSpec]] = {}
        out: dict[str, tuple[bool, bool]] = {}
        for container in (pod.get("spec") or {}).get("containers") or []:
            name = str(container.get("name"))
            current = running.get(name)
            if current is None or current.state != "RUNNING":
                continue
            specs = probe_specs(container)
            for kind, spec in specs.items():
                wanted[(uid, name, kind)] = (container, current, spec)
        for key, old in list(self._workers.items()):
            if key[0] == uid and (key not in wanted or wanted[key][1].id != old.container_id):
                self._stop(key)
        for key, (container, current, spec) in wanted.items():
            existing = self._workers.get(key)
            if existing is not None:
                existing.pod = pod  # events name the newest pod object
                continue
            started = current.started_at / 1e9 if current.started_at else self.clock()
            w = ProbeWorker(manager=self, uid=uid, pod=pod, container=container, container_id=current.id,
                            started_at=started, pod_ip=pod_ip, spec=spec)
            before = reported.get(runtime_container_id(current)) or {}
            initial = _INITIAL.get(spec.kind)
            if (spec.kind == READINESS and before.get("ready") is True) or \
                    (spec.kind == STARTUP and before.get("started") is True):
                initial, w.succeeded_once = Result.SUCCESS, True
            if initial is not None:
                self.results.set(current.id, spec.kind, initial)
            w.task = asyncio.get_running_loop().create_task(w.run(), name=f"probe-{spec.kind}-{uid}-{key[1]}")
            self._workers[key] = w
        for container in (pod.get("spec") or {}).get("containers") or []:
            name = str(container.get("name"))
            current = running.get(name)
            if current is None or current.state != "RUNNING":
                continue
            specs = probe_specs(container)
            started_ok = STARTUP not in specs or self.results.get(current.id, STARTUP) is Result.SUCCESS
            ready = READINESS not in specs or self.results.get(current.id, READINESS) is Result.SUCCESS
            out[name] = (started_ok, started_ok and ready)
        return out

    def wake_container(self, uid: str, name: str) -> None:
        for kind in (LIVENESS, READINESS):
            w = self._workers.get((uid, name, kind))
            if w is not None:
                w.wake.set()

    def _stop(self, key: tuple[str, str, str]) -> None:
        w = self._workers.pop(key)
        w.stopped = True
        w.wake.set()
        if w.task is not None:
            w.task.cancel()
        self.results.remove(w.container_id, w.kind)

    def remove_container(self, uid: str, name: str) -> None:
        for kind, _ in KINDS:
            if (uid, name, kind) in self._workers:
                self._stop((uid, name, kind))

    def remove_pod(self, uid: str) -> None:
        for key in [k for k in self._workers if k[0] == uid]:
            self._stop(key)

    async def stop(self) -> None:
        """Cancel every worker (the kubelet is exiting)."""
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        for key in list(self._workers):
            self._stop(key)
        await asyncio.gather(*tasks, return_exceptions=True)
