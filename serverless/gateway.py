"""The HTTP trigger gateway: an ASGI app that calls functions and accepts their code.

::

    POST /function/NS/NAME[?async=true]
      Function in the cache?  no → 404        status.image?  no → 503 "not built yet"
      autoscaler.request_started ─▶ activator.acquire (held while cold; 503 queue full, 504 held too long)
        ─▶ POST http://IP:8080/  (one shared aiohttp session, serverless/forward.py; total timeout =
                                  spec.timeout + 1 s; the answer is read fully)
             connection refused / connect timeout → the call never started: mark the instance
                                                    unreachable and retry once on another
             past the timeout → 504        other transport error → 502
      ─▶ the instance's status, body, content type + X-Minik8s-Activation-Id
         (async: 202 {"activationId"} at once, the call runs in a background task)
      ─▶ activator.release, autoscaler.request_finished, one activation record
    POST /trigger/NS/NAME   body = payload JSON (default {}) ─▶ serverless/triggers.py fires the trigger's
                            enabled rules → 202 {"firings": [{"rule", "function"|"workflow",
                            "activationId"|"executionId"}]}; unknown trigger 404, bad JSON 400
    POST /workflow/NS/NAME[?async=true]   body = input JSON (default {}) ─▶ serverless/workflows.py starts an
                            execution; sync: waits (--workflow-sync-timeout) on the driver's completion →
                            200 output JSON | 500 {"error","cause","execution"} | 504 still running;
                            async: 202 {"executionId"}; header X-Minik8s-Execution-Id; unknown workflow 404
    POST /-/code/NS/NAME?filename=F&entryPoint=E   builder.store_code in a thread → 201 FunctionCode
                                                   (CodeError → Status 400 / 413)
    GET    /-/activations[/NS][?labelSelector=minik8s.io/function=NAME&limit=N]   ActivationList, newest first
    GET    /-/activations/NS/ID      DELETE /-/activations/NS/ID                   Activation (404 Status)
                                   the records of serverless/activations.py, read in a thread
    GET /healthz   200 once the caches are synced      GET /metrics   Prometheus text

The call path is served with plain ASGI messages (no Starlette Request/Response objects): it is
the warm path, and the gateway's own share of a call's CPU is kept small (the rest is uvicorn and
the aiohttp forward). Errors of the call path are JSON ``{"error": message}``; those of the code and
activation paths are Kubernetes ``Status`` bodies (the apiserver proxies them to ``minictl`` and
kubectl verbatim).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from minik8s.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
)
from serverless.activations import FUNCTION_LABEL, ActivationStore
from serverless.activator import Activator, Clock, HoldTimeout, QueueFull, ShuttingDown, SystemClock
from serverless.autoscaler import DEFAULT_TIMEOUT
from serverless.code import CodeError
from serverless.forward import Forwarder, ForwardError, ForwardTimeout, Reply, Unreachable

log = logging.getLogger("minik8s.serverless.gateway")

ACTIVATION_HEADER = "X-Minik8s-Activation-Id"
ACTIVATION_HEADER_RAW = ACTIVATION_HEADER.lower().encode()
EXECUTION_HEADER = "X-Minik8s-Execution-Id"
LOGS_HEADER = "X-Minik8s-Logs"
DURATION_HEADER = "X-Minik8s-Duration-Ms"
MAX_RESULT_CHARS = 4096
MAX_LOG_CHARS = 16384
# Slack on top of spec.timeout: the runtime answers 504 itself at the timeout; this catches a hung pod.
TIMEOUT_SLACK = 1.0
DEFAULT_MAX_CODE_BYTES = 8 * 1024 * 1024
# Background (async) calls still running at shutdown get this long before they are cancelled.
DRAIN_TIMEOUT = 5.0


class FunctionLookup(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...


class RequestMetrics(Protocol):
    """What the autoscaler learns from the gateway."""

    def request_started(self, key: str) -> None: ...

    def request_finished(self, key: str) -> None: ...


class Recorder(Protocol):
    def record(self, activation: dict[str, Any]) -> None: ...


class TriggerFirer(Protocol):
    """serverless/triggers.py: raises ``NotFound`` (unknown trigger) or ``ServiceUnavailable``."""

    async def fire(self, ns: str, name: str, payload: Any, *, source: str = "http") -> list[dict[str, Any]]: ...


class WorkflowRunner(Protocol):
    """serverless/workflows.py's driver: ``start`` answers the execution's name; ``call`` also waits for
    its end ((name, the finished WorkflowExecution or None past the sync timeout)). Both raise ``NotFound``
    for an unknown workflow, ``ServiceUnavailable`` while the gateway stops."""

    async def start(self, namespace: str, workflow: str, input: Any, *,
                    labels: dict[str, str] | None = None) -> str: ...

    async def call(self, namespace: str, workflow: str, input: Any) -> tuple[str, dict[str, Any] | None]: ...


class CodeStore(Protocol):
    """The builder's upload half: checks and stores code, raises ``CodeError``; blocking."""

    def store_code(self, data: bytes, *, filename: str, entry_point: str, max_bytes: int) -> Any: ...


class Metrics:
    def __init__(self, reg: CollectorRegistry | None) -> None:
        labels = ["namespace", "function"]
        self.requests = Counter("gateway_requests_total", "Function calls by HTTP code", [*labels, "code"],
                                registry=reg)
        self.in_flight = Gauge("gateway_requests_in_flight", "Function calls running now", labels, registry=reg)
        self.held = Gauge("gateway_requests_held", "Calls waiting for a ready instance", labels, registry=reg)
        self.cold_starts = Counter("gateway_cold_starts_total", "Calls that had to wait for an instance", labels,
                                   registry=reg)
        self.duration = Histogram("gateway_request_duration_seconds", "Function call latency at the gateway",
                                  labels, registry=reg,
                                  buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        # labels() hashes and locks on every call: the warm path looks its children up here instead.
        self._children: dict[tuple[Any, ...], Any] = {}

    def in_flight_of(self, ns: str, name: str) -> Any:
        key = ("in_flight", ns, name)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.in_flight.labels(ns, name)
        return child

    def duration_of(self, ns: str, name: str) -> Any:
        key = ("duration", ns, name)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.duration.labels(ns, name)
        return child

    def requests_of(self, ns: str, name: str, code: int) -> Any:
        key = ("requests", ns, name, code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(ns, name, str(code))
        return child


@dataclass
class Outcome:
    """How one call ended: what the client gets and what the activation records."""

    status_code: int
    body: bytes
    content_type: str = "application/json"
    state: str = "success"  # success | error | bad-request | timeout | unavailable
    pod: str = ""
    logs: str = ""
    init_ms: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _failure(code: int, state: str, message: str, **kw: Any) -> Outcome:
    return Outcome(code, orjson.dumps({"error": message}), state=state, **kw)


def state_of(code: int) -> str:
    """The activation ``status`` of an instance's HTTP answer."""
    if 200 <= code < 300:
        return "success"
    if code == 504:
        return "timeout"
    if code == 503:
        return "unavailable"
    if 400 <= code < 500:
        return "bad-request"
    return "error"


def decode_logs(header: str | None) -> str:
    """The instance's ``X-Minik8s-Logs`` (base64 of UTF-8) as text, at most 16384 chars."""
    if not header:
        return ""
    try:
        raw = base64.b64decode(header)
    except (binascii.Error, ValueError):
        return ""
    return raw.decode("utf-8", errors="replace")[:MAX_LOG_CHARS]


_SECOND: list[Any] = [None, ""]  # (the whole second last formatted, its text): one strftime per second


def _timestamp(t: float) -> str:
    """RFC 3339 with microseconds, UTC (``2024-01-01T00:00:01.123456Z``)."""
    whole = int(t)
    if _SECOND[0] != whole:
        _SECOND[0], _SECOND[1] = whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_SECOND[1]}.{min(999_999, int((t - whole) * 1_000_000)):06d}Z"


def _is_async(query_string: bytes) -> bool:
    """``?async=true`` (or 1 / yes) in a raw query string."""
    for pair in query_string.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"async":
            return unquote_to_bytes(value).decode("latin-1").lower() in ("1", "true", "yes")
    return False


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else default


class Gateway:
    """The ASGI app (see the module docstring). ``ready()`` tells ``/healthz`` the caches are synced.

    ``http`` is the one client every forwarded call shares (its pool keeps connections to the
    pods alive); the gateway never closes it. ``store`` holds the activation records the
    ``/-/activations`` routes serve (none: they answer 503).
    """

    def __init__(self, *, functions: FunctionLookup, activator: Activator, autoscaler: RequestMetrics,
                 recorder: Recorder, http: Forwarder, builder: CodeStore | None = None,
                 store: ActivationStore | None = None,
                 activator_timeout: float = 60.0, max_code_bytes: int = DEFAULT_MAX_CODE_BYTES,
                 ready: Callable[[], bool] | None = None, clock: Clock | None = None,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.functions = functions
        self.activator = activator
        self.autoscaler = autoscaler
        self.recorder = recorder
        self.http = http
        self.builder = builder
        self.store = store
        self.activator_timeout = activator_timeout
        self.max_code_bytes = max_code_bytes
        self.ready = ready or (lambda: True)
        self.clock: Clock = clock or SystemClock()
        self.registry = metrics_registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self._background: set[asyncio.Task[Outcome]] = set()
        self.triggers: TriggerFirer | None = None  # set by the daemon once its scheduler exists
        self.workflows: WorkflowRunner | None = None  # set by the daemon: its workflow driver

    # --- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if scope["method"] == "POST" and path.startswith("/function/"):
                parts = path.strip("/").split("/")
                if len(parts) == 3:
                    # The warm path: plain ASGI messages, no Request/Response objects.
                    await self._call_asgi(scope, receive, send, parts[1], parts[2])
                    return
            response = await self.handle(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def handle(self, request: Request) -> Response:
        parts = request.url.path.strip("/").split("/")
        method = request.method
        try:
            if len(parts) == 3 and parts[0] == "trigger":
                if method != "POST":
                    return _json({"error": f"method {method} not allowed; use POST"}, 405, {"Allow": "POST"})
                return await self.fire_trigger(request, parts[1], parts[2])
            if len(parts) == 3 and parts[0] == "workflow":
                if method != "POST":
                    return _json({"error": f"method {method} not allowed; use POST"}, 405, {"Allow": "POST"})
                return await self.run_workflow(request, parts[1], parts[2])
            if len(parts) == 3 and parts[0] == "function":
                if method != "POST":
                    return _json({"error": f"method {method} not allowed; use POST"}, 405, {"Allow": "POST"})
                return await self.call(request, parts[1], parts[2])
            if len(parts) == 4 and parts[:2] == ["-", "code"]:
                if method != "POST":
                    return _json(MethodNotAllowed(f"method {method} not allowed; use POST").to_status(), 405)
                return await self.upload(request, parts[2], parts[3])
            if parts[:2] == ["-", "activations"] and len(parts) <= 4:
                return await self.activations(request, parts[2:])
            if parts == ["healthz"] and method in ("GET", "HEAD"):
                ok = self.ready()
                return Response("ok" if ok else "caches not synced", 200 if ok else 503, media_type="text/plain")
            if parts == ["metrics"] and method == "GET":
                return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
        except Exception:
            log.exception("%s %s failed", method, request.url.path)
            return _json({"error": "internal error in the gateway"}, 500)
        return _json({"error": f"no route for {method} {request.url.path}"}, 404)

    # --- calls ----------------------------------------------------------------------------------

    async def call(self, request: Request, ns: str, name: str) -> Response:
        """``POST /function/NS/NAME``: see the module docstring (``__call__`` takes :meth:`_call_asgi`)."""
        status, headers, body = await self.call_raw(ns, name, await request.body(),
                                                    request.scope.get("query_string", b""),
                                                    request.headers.get("content-type"))
        return Response(body, status, headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers})

    async def _call_asgi(self, scope: Scope, receive: Receive, send: Send, ns: str, name: str) -> None:
        try:
            chunks: list[bytes] = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            content_type = None
            for k, v in scope["headers"]:
                if k == b"content-type":
                    content_type = v.decode("latin-1")
                    break
            status, headers, body = await self.call_raw(ns, name, b"".join(chunks), scope.get("query_string", b""),
                                                        content_type)
        except Exception:
            log.exception("POST %s failed", scope["path"])
            status, body = 500, orjson.dumps({"error": "internal error in the gateway"})
            headers = [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def call_raw(self, ns: str, name: str, body: bytes, query_string: bytes,
                       content_type: str | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One call: (status, headers without content-length, body)."""
        key = f"{ns}/{name}"
        function = self.functions.get(key)
        if function is None:
            self.metrics.requests_of(ns, name, 404).inc()
            return 404, [(b"content-type", b"application/json")], orjson.dumps({"error": f"function {key} not found"})
        activation_id = uuid.uuid4().hex
        raw_id = activation_id.encode()
        content_type = content_type or "application/json"
        if query_string and _is_async(query_string):
            self._run_in_background(key, function, body, activation_id, content_type)
            return 202, [(b"content-type", b"application/json"), (ACTIVATION_HEADER_RAW, raw_id)], \
                orjson.dumps({"activationId": activation_id})
        outcome = await self.run_call(key, function, body, activation_id, content_type, is_async=False)
        headers = [(b"content-type", outcome.content_type.encode("latin-1")), (ACTIVATION_HEADER_RAW, raw_id)]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in outcome.headers.items()]
        return outcome.status_code, headers, outcome.body

    async def call_async(self, ns: str, name: str, body: bytes, *, trigger: str | None = None) -> str:
        """Start one async call (as ``?async=true``) of a JSON ``body``; its activation id. The record
        names ``trigger`` (``spec.trigger``) when a trigger made the call. ``NotFound``: no such function."""
        key = f"{ns}/{name}"
        function = self.functions.get(key)
        if function is None:
            self.metrics.requests_of(ns, name, 404).inc()
            raise NotFound(f"function {key} not found")
        activation_id = uuid.uuid4().hex
        self._run_in_background(key, function, body, activation_id, "application/json", trigger=trigger)
        return activation_id

    def _run_in_background(self, key: str, function: dict[str, Any], body: bytes, activation_id: str,
                           content_type: str, *, trigger: str | None = None) -> None:
        task = asyncio.ensure_future(self.run_call(key, function, body, activation_id, content_type,
                                                   is_async=True, trigger=trigger))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run_call(self, key: str, function: dict[str, Any], body: bytes, activation_id: str,
                       content_type: str, *, is_async: bool, trigger: str | None = None) -> Outcome:
        """One call from start to activation record; never raises (errors become an Outcome)."""
        ns, _, name = key.partition("/")
        start_wall, start = self.clock.time(), self.clock.monotonic()
        self.autoscaler.request_started(key)
        in_flight = self.metrics.in_flight_of(ns, name)
        in_flight.inc()
        try:
            if not (function.get("status") or {}).get("image"):
                outcome = _failure(503, "unavailable", f"function {key} is not built yet")
            else:
                timeout = _number((function.get("spec") or {}).get("timeout"), DEFAULT_TIMEOUT)
                outcome = await self._invoke(key, body, activation_id, content_type, timeout)
        except Exception as exc:  # a bug must still produce an answer and a record
            log.exception("call %s of %s failed", activation_id, key)
            outcome = _failure(500, "error", f"gateway error: {exc}")
        finally:
            self.autoscaler.request_finished(key)
            in_flight.dec()
        elapsed = self.clock.monotonic() - start
        self.metrics.requests_of(ns, name, outcome.status_code).inc()
        self.metrics.duration_of(ns, name).observe(elapsed)
        text = outcome.body.decode("utf-8", errors="replace")
        record = {
            "id": activation_id, "namespace": ns, "function": name, "start": _timestamp(start_wall),
            "durationMs": round(elapsed * 1000.0, 3), "initMs": round(outcome.init_ms, 3),
            "status": outcome.state, "statusCode": outcome.status_code, "result": text[:MAX_RESULT_CHARS],
            "truncated": len(text) > MAX_RESULT_CHARS, "logs": outcome.logs, "pod": outcome.pod, "async": is_async,
        }
        if trigger:
            record["trigger"] = trigger
        self.recorder.record(record)
        return outcome

    async def _invoke(self, key: str, body: bytes, activation_id: str, content_type: str,
                      timeout: float) -> Outcome:
        ns, _, name = key.partition("/")
        hold_deadline = self.clock.monotonic() + self.activator_timeout
        init_ms = 0.0
        retried = False
        while True:
            cold = self.activator.ready_count(key) == 0
            began = self.clock.monotonic()
            if cold:
                self.metrics.held.labels(ns, name).inc()
                self.metrics.cold_starts.labels(ns, name).inc()
            try:
                instance = await self.activator.acquire(key, max(0.0, hold_deadline - began))
            except QueueFull:
                return _failure(503, "unavailable", f"function {key} has too many requests waiting for an instance",
                                init_ms=init_ms)
            except ShuttingDown:
                return _failure(503, "unavailable", "the gateway is restarting; send the request again",
                                init_ms=init_ms)
            except HoldTimeout:
                waited = self.clock.monotonic() - began
                return _failure(504, "timeout", f"no instance of function {key} became ready within "
                                f"{self.activator_timeout:g}s", init_ms=init_ms + waited * 1000.0)
            finally:
                if cold:
                    self.metrics.held.labels(ns, name).dec()
            if cold:
                init_ms += (self.clock.monotonic() - began) * 1000.0
            try:
                response = await self._forward(instance.url, body, activation_id, content_type, timeout)
            except Unreachable as exc:
                # The call never reached the function, so running it elsewhere is safe.
                self.activator.mark_unreachable(instance)
                if not retried:
                    retried = True
                    log.info("instance %s of %s unreachable (%s); retrying once", instance.ip, key, exc)
                    continue
                return _failure(502, "error", f"function {key}: instance {instance.ip} is unreachable: {exc}",
                                pod=instance.pod, init_ms=init_ms)
            except (TimeoutError, ForwardTimeout):
                return _failure(504, "timeout", f"function {key} timed out after {timeout:g}s",
                                pod=instance.pod, init_ms=init_ms)
            except ForwardError as exc:
                return _failure(502, "error", f"function {key}: instance {instance.ip} failed: {exc}",
                                pod=instance.pod, init_ms=init_ms)
            finally:
                self.activator.release(instance)
            answer = response.headers
            duration = answer.get(DURATION_HEADER)
            headers = {DURATION_HEADER: duration} if duration is not None else {}
            return Outcome(response.status, response.body,
                           content_type=answer.get("Content-Type") or "application/octet-stream",
                           state=state_of(response.status), pod=instance.pod,
                           logs=decode_logs(answer.get(LOGS_HEADER)), init_ms=init_ms, headers=headers)

    async def _forward(self, url: str, body: bytes, activation_id: str, content_type: str,
                       timeout: float) -> Reply:
        # One total timeout bounds connect, send and the whole answer.
        return await self.http.post(f"{url}/", body, {"Content-Type": content_type, ACTIVATION_HEADER: activation_id},
                                    timeout=timeout + TIMEOUT_SLACK)

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Wait (bounded) for background calls, then cancel the rest; their records are still queued."""
        if not self._background:
            return
        _, pending = await asyncio.wait(set(self._background), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def invoke(self, ns: str, name: str, body: bytes) -> tuple[int, bytes, str]:
        """One synchronous call of a JSON ``body`` through the whole call path (the activator holds it while
        the function is cold; an activation record is written): (status, body, activation id). An unknown
        function answers 404 and no id (no call was made)."""
        key = f"{ns}/{name}"
        function = self.functions.get(key)
        if function is None:
            self.metrics.requests_of(ns, name, 404).inc()
            return 404, orjson.dumps({"error": f"function {key} not found"}), ""
        activation_id = uuid.uuid4().hex
        outcome = await self.run_call(key, function, body, activation_id, "application/json", is_async=False)
        return outcome.status_code, outcome.body, activation_id

    # --- workflows ------------------------------------------------------------------------------

    async def run_workflow(self, request: Request, ns: str, name: str) -> Response:
        """``POST /workflow/NS/NAME[?async=true]``: start an execution with the body as input (see the
        module docstring)."""
        if self.workflows is None:
            return _json({"error": "this gateway runs no workflow driver"}, 503)
        raw = await request.body()
        try:
            data = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError as exc:
            return _json({"error": f"the input is not valid JSON: {exc}"}, 400)
        try:
            if _is_async(request.scope.get("query_string", b"")):
                execution = await self.workflows.start(ns, name, data)
                return _json({"executionId": execution}, 202, {EXECUTION_HEADER: execution})
            execution, final = await self.workflows.call(ns, name, data)
        except NotFound as err:
            message = f"workflow {ns}/{name} not found" if err.kind == "workflows" else err.message
            return _json({"error": message}, 404)
        except ApiError as err:
            return _json({"error": err.message}, err.code)
        headers = {EXECUTION_HEADER: execution}
        if final is None:
            return _json({"error": f"execution {execution} did not finish in time; it goes on "
                                   f"(minictl workflow describe {execution})", "execution": execution}, 504, headers)
        status = final.get("status") or {}
        if status.get("phase") == "Succeeded":
            return Response(orjson.dumps(status.get("output")), 200, media_type="application/json", headers=headers)
        return _json({"error": status.get("error") or "States.Runtime", "cause": status.get("cause") or "",
                      "execution": execution}, 500, headers)

    # --- triggers -------------------------------------------------------------------------------

    async def fire_trigger(self, request: Request, ns: str, name: str) -> Response:
        """``POST /trigger/NS/NAME``: fire the trigger with the body as payload (empty body = ``{}``)."""
        if self.triggers is None:
            return _json({"error": "this gateway runs no trigger scheduler"}, 503)
        raw = await request.body()
        try:
            payload = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError as exc:
            return _json({"error": f"the payload is not valid JSON: {exc}"}, 400)
        try:
            firings = await self.triggers.fire(ns, name, payload, source="http")
        except ApiError as err:
            return _json({"error": err.message}, err.code)
        return _json({"firings": firings}, 202)

    # --- code upload ----------------------------------------------------------------------------

    async def upload(self, request: Request, ns: str, name: str) -> Response:
        """``POST /-/code/NS/NAME``: check and store code; answers FunctionCode or a Status."""
        if self.builder is None:
            return _json(ServiceUnavailable("this gateway has no builder").to_status(), 503)
        filename = request.query_params.get("filename") or "main.py"
        entry_point = request.query_params.get("entryPoint") or "run"
        # Read one byte past the limit at most: the builder then rejects it with its own message,
        # and an oversized upload never sits in memory whole.
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > self.max_code_bytes:
                del data[self.max_code_bytes + 1:]
                break
        try:
            info = await asyncio.to_thread(self.builder.store_code, bytes(data), filename=filename,
                                           entry_point=entry_point, max_bytes=self.max_code_bytes)
        except CodeError as exc:
            err: ApiError = RequestEntityTooLarge(str(exc)) if exc.code == 413 else BadRequest(str(exc))
            return _json(err.to_status(), err.code)
        except Exception as exc:
            log.exception("storing code of %s/%s failed", ns, name)
            return _json(ServiceUnavailable(f"cannot store the code of {ns}/{name}: {exc}").to_status(), 503)
        log.info("stored code of %s/%s: %s (%d bytes)", ns, name, info.digest, info.size)
        return _json({"kind": "FunctionCode", "apiVersion": "minik8s.io/v1", "codeDigest": info.digest,
                      "size": info.size, "files": info.files, "requirements": info.requirements}, 201)

    # --- activation records ---------------------------------------------------------------------

    async def activations(self, request: Request, rest: list[str]) -> Response:
        """``GET /-/activations[/NS[/ID]]`` and ``DELETE /-/activations/NS/ID``: the records in the
        store, in Kubernetes shapes (an ActivationList newest first, an Activation, a Status)."""
        try:
            return await self._activations(request, rest)
        except ApiError as err:
            return _json(err.to_status(), err.code)

    async def _activations(self, request: Request, rest: list[str]) -> Response:
        method = request.method
        if self.store is None:
            raise ServiceUnavailable("this gateway keeps no activation records")
        if not all(rest):
            raise NotFound("the server could not find the requested resource")
        store = self.store
        if len(rest) == 2:
            ns, name = rest
            if method == "GET":
                raw = await asyncio.to_thread(store.get, ns, name)
            elif method == "DELETE":
                raw = await asyncio.to_thread(store.delete, ns, name)
            else:
                raise MethodNotAllowed(f"method {method} not allowed on an activation; use GET or DELETE")
            if raw is None:
                raise NotFound(f'{ACTIVATIONS_QUALIFIED} "{name}" not found', kind="activations", name=name,
                               group="minik8s.io")
            return Response(raw, 200, media_type="application/json")
        if method != "GET":
            raise MethodNotAllowed(f"method {method} not allowed on a list of activations; use GET")
        q = request.query_params
        function = function_of_selector(q.get("labelSelector", ""))
        if q.get("fieldSelector", "").strip():
            raise BadRequest("fieldSelector is not supported on activations")
        limit = _limit(q.get("limit", ""))
        items, rv = await asyncio.to_thread(store.list, rest[0] if rest else None, function, limit)
        body = b"".join((b'{"kind":"ActivationList","apiVersion":"minik8s.io/v1","metadata":{"resourceVersion":',
                         orjson.dumps(rv), b'},"items":[', b",".join(items), b"]}"))
        return Response(body, 200, media_type="application/json")


ACTIVATIONS_QUALIFIED = "activations.minik8s.io"
_SELECTOR = re.compile(r"\s*" + re.escape(FUNCTION_LABEL) + r"\s*==?\s*([^\s,=!]*)\s*")


def function_of_selector(selector: str) -> str | None:
    """The function a ``labelSelector`` names (``minik8s.io/function=NAME`` or ``==``); None for an
    empty one. Any other selector is a ``BadRequest``: the records carry only that label."""
    if not selector.strip():
        return None
    m = _SELECTOR.fullmatch(selector)
    if m is None:
        raise BadRequest(f'labelSelector "{selector}" is not supported on activations: '
                         f"only {FUNCTION_LABEL}=NAME")
    return m.group(1)


def _limit(text: str) -> int | None:
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"limit must be a non-negative integer, not {text!r}") from None
    if value < 0:
        raise BadRequest(f"limit must be a non-negative integer, not {text!r}")
    return value or None
