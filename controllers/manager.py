"""The controller-manager: one shared :class:`InformerFactory`, every enabled controller, and a tiny
loopback HTTP server for ``/healthz`` and ``/metrics``.

::

    ControllerManager.run()
     ├─ build each enabled controller from CONTROLLERS (they ask the factory for informers)
     ├─ factory.start()            one informer per resource, shared
     ├─ controller.run() x N       each waits for its own informers, then runs its workers
     └─ HTTP 127.0.0.1:--port      GET /healthz → ok once every informer synced; GET /metrics → Prometheus text

To add a controller: write a ``Controller`` subclass and add one entry to :data:`CONTROLLERS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from controllers.base import DEFAULT_RESYNC_PERIOD, Controller, ControllerClient, InformerFactory
from controllers.deployment import DeploymentController
from controllers.endpoints import EndpointsController
from controllers.garbagecollector import GarbageCollector
from controllers.hpa import (
    DEFAULT_CPU_INITIALIZATION_PERIOD,
    DEFAULT_DOWNSCALE_STABILIZATION,
    DEFAULT_INITIAL_READINESS_DELAY,
    DEFAULT_SYNC_PERIOD,
    DEFAULT_TOLERANCE,
    HorizontalController,
    HPAClient,
)
from controllers.replicaset import ReplicaSetController

log = logging.getLogger("minik8s.controllers")


@dataclass(frozen=True)
class ManagerConfig:
    """Flags of ``minik8s-controller-manager``, each with Kubernetes' default."""

    controllers: tuple[str, ...] = ("*",)  # --controllers: "*" all, "-name" disables one
    min_resync_period: float = DEFAULT_RESYNC_PERIOD  # --min-resync-period 12h
    concurrent_endpoint_syncs: int = 5
    concurrent_replicaset_syncs: int = 5
    concurrent_deployment_syncs: int = 5
    concurrent_gc_syncs: int = 20
    concurrent_hpa_syncs: int = 5  # --concurrent-horizontal-pod-autoscaler-syncs
    hpa_sync_period: float = DEFAULT_SYNC_PERIOD  # --horizontal-pod-autoscaler-sync-period 15s
    hpa_tolerance: float = DEFAULT_TOLERANCE  # --horizontal-pod-autoscaler-tolerance 0.1
    hpa_downscale_stabilization: float = DEFAULT_DOWNSCALE_STABILIZATION  # ...-downscale-stabilization 5m
    hpa_cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD  # ...-cpu-initialization-period 5m
    hpa_initial_readiness_delay: float = DEFAULT_INITIAL_READINESS_DELAY  # ...-initial-readiness-delay 30s
    host: str = "127.0.0.1"
    port: int = 10252  # the controller-manager's old insecure port; 0 = no HTTP server


ControllerFactory = Callable[[ControllerClient, InformerFactory, ManagerConfig], Controller]

CONTROLLERS: dict[str, ControllerFactory] = {
    "endpoints": lambda c, f, cfg: EndpointsController(c, f, workers=cfg.concurrent_endpoint_syncs),
    "replicaset": lambda c, f, cfg: ReplicaSetController(c, f, workers=cfg.concurrent_replicaset_syncs),
    "deployment": lambda c, f, cfg: DeploymentController(c, f, workers=cfg.concurrent_deployment_syncs),
    "garbagecollector": lambda c, f, cfg: GarbageCollector(c, f, workers=cfg.concurrent_gc_syncs),
    # The HPA reads /scale and metrics.k8s.io with raw requests (AsyncApiClient.request).
    "horizontalpodautoscaling": lambda c, f, cfg: HorizontalController(
        cast(HPAClient, c), f, workers=cfg.concurrent_hpa_syncs, sync_period=cfg.hpa_sync_period,
        tolerance=cfg.hpa_tolerance, downscale_stabilization=cfg.hpa_downscale_stabilization,
        cpu_initialization_period=cfg.hpa_cpu_initialization_period,
        initial_readiness_delay=cfg.hpa_initial_readiness_delay),
}


def enabled(name: str, selection: tuple[str, ...]) -> bool:
    """Kubernetes' --controllers rule: explicit "name" or "-name" wins, else "*" enables."""
    if name in selection:
        return True
    if f"-{name}" in selection:
        return False
    return "*" in selection


class ControllerManager:
    def __init__(self, client: ControllerClient, config: ManagerConfig | None = None) -> None:
        self.config = config or ManagerConfig()
        self.client = client
        self.factory = InformerFactory(client, resync_period=self.config.min_resync_period)
        self.controllers: dict[str, Controller] = {
            name: make(client, self.factory, self.config)
            for name, make in CONTROLLERS.items() if enabled(name, self.config.controllers)}
        self._stop = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    def healthy(self) -> bool:
        return all(inf.has_synced() for inf in self.factory.informers.values())

    def metrics_text(self) -> str:
        lines = ["# HELP controller_syncs_total Finished syncs per controller.",
                 "# TYPE controller_syncs_total counter"]
        lines += [f'controller_syncs_total{{controller="{n}"}} {c.syncs}' for n, c in self.controllers.items()]
        lines += ["# HELP controller_sync_errors_total Syncs that raised (and were requeued).",
                  "# TYPE controller_sync_errors_total counter"]
        lines += [f'controller_sync_errors_total{{controller="{n}"}} {c.sync_errors}'
                  for n, c in self.controllers.items()]
        lines += ["# HELP workqueue_depth Keys waiting in each controller's queue.", "# TYPE workqueue_depth gauge"]
        lines += [f'workqueue_depth{{name="{n}"}} {len(c.queue)}' for n, c in self.controllers.items()]
        lines += ["# HELP informer_objects Objects in each shared informer's cache.",
                  "# TYPE informer_objects gauge"]
        lines += [f'informer_objects{{resource="{p}"}} {len(i.indexer)}' for p, i in self.factory.informers.items()]
        return "\n".join(lines) + "\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else ""
            if path == "/healthz":
                ok = self.healthy()
                status, body = ("200 OK", "ok") if ok else ("503 Service Unavailable", "informers not synced")
            elif path == "/metrics":
                status, body = "200 OK", self.metrics_text()
            else:
                status, body = "404 Not Found", "not found"
            data = body.encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def start_server(self) -> None:
        if self.config.port > 0 and self._server is None:
            try:
                self._server = await asyncio.start_server(self._handle, self.config.host, self.config.port)
            except OSError as exc:  # the controllers matter more than their health page
                log.error("cannot serve /healthz on %s:%d: %s", self.config.host, self.config.port, exc)
                return
            log.info("controller-manager serving /healthz and /metrics on http://%s:%d", self.config.host, self.port)

    async def run(self) -> None:
        """Start informers, controllers and the HTTP server; return after :meth:`stop`."""
        self._stop.clear()
        await self.start_server()
        self.factory.start()
        tasks = [asyncio.create_task(c.run(), name=f"controller-{n}") for n, c in self.controllers.items()]
        log.info("controller-manager running: %s", ", ".join(self.controllers))
        try:
            await self._stop.wait()
        finally:
            for c in self.controllers.values():
                c.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.factory.stop()
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None

    def stop(self) -> None:
        self._stop.set()
