"""The kubelet API on ``127.0.0.1:--port``, served by uvicorn in the kubelet's own event loop.

::

    GET  /healthz                                          "ok"
    GET  /containerLogs/{ns}/{pod}/{container}?follow=&tailLines=&previous=&timestamps=&sinceSeconds=
                                                           text/plain; streamed while the container runs with follow
    POST /exec/{ns}/{pod}/{container}   {"command": [...], "timeout": s}  →  {"stdout", "stderr", "exitCode"}
    GET  /pods                                             the pods this kubelet runs (a PodList)
    GET  /metrics                                          Prometheus text
    GET  /stats/summary                                    cpu and memory of the node and its pods (kubelet/metrics.py)
    POST /gc, POST /gc/images                              a GC pass now; prune unused images (kubelet/gc.py)

The apiserver proxies ``pods/{name}/log`` and ``pods/{name}/exec`` here. Errors are one-line
``text/plain`` bodies with 400 (bad query), 404 (no such pod / container / run) or 502 (the runtime
failed) — the apiserver passes them on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from kubelet import logs
from kubelet import runtime as rt
from kubelet.gc import gc_routes
from kubelet.metrics import stats_routes
from kubelet.pod_worker import Metrics

log = logging.getLogger(__name__)

MAX_EXEC_TIMEOUT = 600
# How often a follow checks whether its container still runs (kubectl logs -f ends when it exits).
FOLLOW_CHECK_INTERVAL = 1.0


class KubeletView(Protocol):
    """What the server needs from the kubelet (``Kubelet`` has it; tests pass a small fake)."""

    runtime: rt.Runtime
    metrics: Metrics

    async def find_container(self, namespace: str, pod_name: str, container: str = "",
                             previous: bool = False) -> rt.ContainerStatus: ...

    def pods(self) -> list[dict[str, Any]]: ...


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "y", "t")


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {value!r}") from None
    if number < 0:
        raise ValueError(f"{name} must be non-negative")
    return number


def create_app(kubelet: KubeletView, *, follow_check_interval: float = FOLLOW_CHECK_INTERVAL) -> Starlette:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(kubelet.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def pods(request: Request) -> Response:
        return JSONResponse({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": kubelet.pods()})

    async def container_logs(request: Request) -> Response:
        p = request.path_params
        q = request.query_params
        try:
            tail = _int(request, "tailLines")
            since_seconds = _int(request, "sinceSeconds")
        except ValueError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        previous, follow, timestamps = _bool(q.get("previous")), _bool(q.get("follow")), _bool(q.get("timestamps"))
        try:
            c = await kubelet.find_container(p["namespace"], p["pod"], p.get("container", ""), previous)
        except LookupError as exc:
            return PlainTextResponse(str(exc.args[0] if exc.args else exc), status_code=404)
        except rt.RuntimeFailure as exc:
            return PlainTextResponse(str(exc), status_code=502)
        since = time.time() - since_seconds if since_seconds is not None else None
        if not c.log_path:
            return PlainTextResponse("")
        if not follow or c.state != "RUNNING":
            lines = await asyncio.to_thread(lambda: list(logs.read_log(c.log_path, tail_lines=tail, since=since,
                                                                      timestamps=timestamps)))
            return PlainTextResponse("".join(lines))
        return StreamingResponse(_follow(kubelet.runtime, c, tail, since, timestamps, follow_check_interval),
                                 media_type="text/plain; charset=utf-8")

    async def exec_(request: Request) -> Response:
        p = request.path_params
        try:
            body = await request.json()
        except ValueError:
            return PlainTextResponse("the body must be JSON: {\"command\": [...], \"timeout\": seconds}",
                                     status_code=400)
        command = body.get("command") if isinstance(body, dict) else None
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
            return PlainTextResponse("command must be a non-empty list of strings", status_code=400)
        timeout = body.get("timeout", 0) or 0
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
            return PlainTextResponse("timeout must be a non-negative number of seconds", status_code=400)
        try:
            c = await kubelet.find_container(p["namespace"], p["pod"], p.get("container", ""))
        except LookupError as exc:
            return PlainTextResponse(str(exc.args[0] if exc.args else exc), status_code=404)
        if c.state != "RUNNING":
            return PlainTextResponse(f"container {c.name} is not running", status_code=400)
        try:
            result = await kubelet.runtime.exec_sync(c.id, command, min(int(timeout), MAX_EXEC_TIMEOUT))
        except rt.RuntimeFailure as exc:
            return PlainTextResponse(str(exc), status_code=502)
        return JSONResponse({"stdout": result.stdout.decode("utf-8", errors="replace"),
                             "stderr": result.stderr.decode("utf-8", errors="replace"),
                             "exitCode": result.exit_code})

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/pods", pods),
        Route("/containerLogs/{namespace}/{pod}/{container}", container_logs),
        Route("/containerLogs/{namespace}/{pod}", container_logs),
        Route("/exec/{namespace}/{pod}/{container}", exec_, methods=["POST"]),
        Route("/exec/{namespace}/{pod}", exec_, methods=["POST"]),
        *gc_routes(kubelet),
        *stats_routes(kubelet),
    ]
    return Starlette(routes=routes)


async def _follow(runtime: rt.Runtime, c: rt.ContainerStatus, tail: int | None, since: float | None,
                  timestamps: bool, interval: float) -> AsyncIterator[str]:
    """Lines of a running container's log until it stops (or the client goes away)."""
    stop = asyncio.Event()

    async def watch() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                state = (await runtime.container_status(c.id)).state
            except rt.RuntimeFailure:
                state = "EXITED"
            if state != "RUNNING":
                stop.set()
                return

    watcher = asyncio.create_task(watch())
    try:
        async for line in logs.follow_log(c.log_path, tail_lines=tail, since=since, timestamps=timestamps,
                                          stop=stop):
            yield line
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the kubelet's loop: the kubelet owns the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RunningServer:
    def __init__(self, server: _EmbeddedServer, task: asyncio.Task[None], sock: socket.socket) -> None:
        self.server, self.task, self.sock = server, task, sock

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def stop(self) -> None:
        self.server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(self.task)
        except Exception:  # noqa: BLE001 - a server that will not stop (or failed) is cancelled
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self.sock.close()


async def start_server(kubelet: KubeletView, *, port: int, host: str = "127.0.0.1",
                       follow_check_interval: float = FOLLOW_CHECK_INTERVAL) -> RunningServer:
    """Serve the kubelet API on ``host:port`` (loopback: it has no authentication); returns once listening.

    Raises ``OSError`` when the port cannot be bound.
    """
    # Bound here, not by uvicorn: uvicorn answers a busy port with sys.exit, which would end the loop.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"the kubelet API cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    app = create_app(kubelet, follow_check_interval=follow_check_interval)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="kubelet-server")
    while not server.started:
        if task.done():
            sock.close()
            raise OSError(f"the kubelet API on {host}:{port} did not start")
        await asyncio.sleep(0.01)
    log.info("kubelet API listening on http://%s:%d", host, sock.getsockname()[1])
    return RunningServer(server, task, sock)
