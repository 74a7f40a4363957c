"""The HTTP trigger gateway: an ASGI app that calls functions and accepts their code.

::

    POST /function/NS/NAME[?async=true]
      Function in the cache?  no → 404        status.image?  no → 503 "not built yet"
      autoscaler.request_started ─▶ activator.acquire (held while cold; 503 queue full, 504 held too long)
        ─▶ POST http://IP:8080/  (one shared httpx.AsyncClient, timeout = spec.timeout + 1 s)
             connection refused / connect timeout → the call never started: mark the instance
                                                    unreachable and retry once on another
             past the timeout → 504        other transport error → 502
      ─▶ the instance's status, body, content type + X-Minik8s-Activation-Id
         (async: 202 {"activationId"} at once, the call runs in a background task)
      ─▶ activator.release, autoscaler.request_finished, one activation record
    POST /-/code/NS/NAME?filename=F&entryPoint=E   builder.store_code in a thread → 201 FunctionCode
                                                   (CodeError → Status 400 / 413)
    GET /healthz   200 once the caches are synced      GET /metrics   Prometheus text

Errors of the call path are JSON ``{"error": message}``; those of the code path are Kubernetes
``Status`` bodies (the apiserver proxies them to ``minictl`` verbatim).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from minik8s.errors import ApiError, BadRequest, MethodNotAllowed, RequestEntityTooLarge, ServiceUnavailable
from serverless.activator import Activator, Clock, HoldTimeout, QueueFull, ShuttingDown, SystemClock
from serverless.autoscaler import DEFAULT_TIMEOUT
from serverless.code import CodeError

log = logging.getLogger("minik8s.serverless.gateway")

ACTIVATION_HEADER = "X-Minik8s-Activation-Id"
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


def _timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else default


class Gateway:
    """The ASGI app (see the module docstring). ``ready()`` tells ``/healthz`` the caches are synced.

    ``http`` is the one client every forwarded call shares (its pool keeps connections to the
    pods alive); the gateway never closes it.
    """

    def __init__(self, *, functions: FunctionLookup, activator: Activator, autoscaler: RequestMetrics,
                 recorder: Recorder, http: httpx.AsyncClient, builder: CodeStore | None = None,
                 activator_timeout: float = 60.0, max_code_bytes: int = DEFAULT_MAX_CODE_BYTES,
                 ready: Callable[[], bool] | None = None, clock: Clock | None = None,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.functions = functions
        self.activator = activator
        self.autoscaler = autoscaler
        self.recorder = recorder
        self.http = http
        self.builder = builder
        self.activator_timeout = activator_timeout
        self.max_code_bytes = max_code_bytes
        self.ready = ready or (lambda: True)
        self.clock: Clock = clock or SystemClock()
        self.registry = metrics_registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self._background: set[asyncio.Task[Outcome]] = set()

    # --- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
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
            if len(parts) == 3 and parts[0] == "function":
                if method != "POST":
                    return _json({"error": f"method {method} not allowed; use POST"}, 405, {"Allow": "POST"})
                return await self.call(request, parts[1], parts[2])
            if len(parts) == 4 and parts[:2] == ["-", "code"]:
                if method != "POST":
                    return _json(MethodNotAllowed(f"method {method} not allowed; use POST").to_status(), 405)
                return await self.upload(request, parts[2], parts[3])
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
        """``POST /function/NS/NAME``: see the module docstring."""
        key = f"{ns}/{name}"
        function = self.functions.get(key)
        if function is None:
            self.metrics.requests.labels(ns, name, "404").inc()
            return _json({"error": f"function {key} not found"}, 404)
        body = await request.body()
        activation_id = uuid.uuid4().hex
        is_async = request.query_params.get("async", "").lower() in ("1", "true", "yes")
        content_type = request.headers.get("content-type") or "application/json"
        if is_async:
            task = asyncio.ensure_future(self.run_call(key, function, body, activation_id, content_type,
                                                       is_async=True))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return _json({"activationId": activation_id}, 202, {ACTIVATION_HEADER: activation_id})
        outcome = await self.run_call(key, function, body, activation_id, content_type, is_async=False)
        headers = {ACTIVATION_HEADER: activation_id, **outcome.headers}
        return Response(outcome.body, outcome.status_code, headers=headers, media_type=outcome.content_type)

    async def run_call(self, key: str, function: dict[str, Any], body: bytes, activation_id: str,
                       content_type: str, *, is_async: bool) -> Outcome:
        """One call from start to activation record; never raises (errors become an Outcome)."""
        ns, _, name = key.partition("/")
        start_wall, start = self.clock.time(), self.clock.monotonic()
        self.autoscaler.request_started(key)
        self.metrics.in_flight.labels(ns, name).inc()
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
            self.metrics.in_flight.labels(ns, name).dec()
        elapsed = self.clock.monotonic() - start
        self.metrics.requests.labels(ns, name, str(outcome.status_code)).inc()
        self.metrics.duration.labels(ns, name).observe(elapsed)
        text = outcome.body.decode("utf-8", errors="replace")
        self.recorder.record({
            "id": activation_id, "namespace": ns, "function": name, "start": _timestamp(start_wall),
            "durationMs": round(elapsed * 1000.0, 3), "initMs": round(outcome.init_ms, 3),
            "status": outcome.state, "statusCode": outcome.status_code, "result": text[:MAX_RESULT_CHARS],
            "truncated": len(text) > MAX_RESULT_CHARS, "logs": outcome.logs, "pod": outcome.pod, "async": is_async,
        })
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
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # The call never reached the function, so running it elsewhere is safe.
                self.activator.mark_unreachable(instance)
                if not retried:
                    retried = True
                    log.info("instance %s of %s unreachable (%s); retrying once", instance.ip, key, exc)
                    continue
                return _failure(502, "error", f"function {key}: instance {instance.ip} is unreachable: {exc}",
                                pod=instance.pod, init_ms=init_ms)
            except (TimeoutError, httpx.TimeoutException):
                return _failure(504, "timeout", f"function {key} timed out after {timeout:g}s",
                                pod=instance.pod, init_ms=init_ms)
            except httpx.HTTPError as exc:
                return _failure(502, "error", f"function {key}: instance {instance.ip} failed: {exc}",
                                pod=instance.pod, init_ms=init_ms)
            finally:
                self.activator.release(instance)
            headers = {DURATION_HEADER: response.headers[DURATION_HEADER]} if DURATION_HEADER in response.headers \
                else {}
            return Outcome(response.status_code, response.content,
                           content_type=response.headers.get("content-type") or "application/octet-stream",
                           state=state_of(response.status_code), pod=instance.pod,
                           logs=decode_logs(response.headers.get(LOGS_HEADER)), init_ms=init_ms, headers=headers)

    async def _forward(self, url: str, body: bytes, activation_id: str, content_type: str,
                       timeout: float) -> httpx.Response:
        limit = timeout + TIMEOUT_SLACK
        async with asyncio.timeout(limit):  # httpx's timeouts are per phase; this bounds the whole call
            return await self.http.post(f"{url}/", content=body, timeout=limit,
                                        headers={"Content-Type": content_type, ACTIVATION_HEADER: activation_id})

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Wait (bounded) for background calls, then cancel the rest; their records are still queued."""
        if not self._background:
            return
        _, pending = await asyncio.wait(set(self._background), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

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
