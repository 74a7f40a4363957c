"""``minik8s-gateway``: flags and ``MINIK8S_GATEWAY_*`` env vars → GatewayConfig → one asyncio loop.

::

    informers: functions, endpoints (-l minik8s.io/function)
        endpoints NS/NAME of a known Function ─▶ activator.update / remove
        functions                              ─▶ autoscaler.restore (first sight) / forget
    uvicorn (uvloop, httptools) serving Gateway on --bind-address:--port
    autoscaler.run()          every --tick seconds
    recorder.run()            activation records to --state-dir/activations.db (SQLite) every
                              --activation-flush-interval seconds; served at /-/activations
    FunctionController.run()  builds images, owns Deployment/Service NAME
    informers: triggers, rules ─▶ TriggerScheduler (serverless/triggers.py): one timer per scheduled
                              trigger, started once both caches are synced; POST /trigger/NS/NAME
    WorkflowDriver.run()      (serverless/workflows.py) informer on workflowexecutions; drives each
                              Running one (at most --workflow-workers) from its recorded status;
                              Tasks go through the gateway's call path; POST /workflow/NS/NAME

The first SIGTERM/SIGINT stops gently: executions stop where they are recorded (resumed by the next
gateway), uvicorn stops accepting and lets calls in flight finish,
background calls get a bounded drain, the activation queue is flushed (bounded), the rest stop.
A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import uvicorn
import uvloop
from prometheus_client import CollectorRegistry

from minik8s.api import registry
from minik8s.client.config import ConfigError, load_config
from minik8s.client.informer import Informer, object_key
from minik8s.client.rest import AsyncApiClient
from minik8s.cluster.layout import resolve_home
from minik8s.daemon import setup_logging, stop_on_signals
from serverless.activations import DB_NAME, ActivationRecorder, ActivationStore
from serverless.activator import Activator, HttpProber
from serverless.autoscaler import Autoscaler, ScaleParams
from serverless.forward import Forwarder
from serverless.gateway import DEFAULT_MAX_CODE_BYTES, Gateway
from serverless.triggers import TriggerScheduler
from serverless.workflows import DEFAULT_SYNC_TIMEOUT, DEFAULT_WORKERS, WorkflowDriver

log = logging.getLogger("minik8s.serverless")

FUNCTION_LABEL = "minik8s.io/function"
# Connections open at once to function pods: enough for a few hundred concurrent calls.
HTTP_CONNECTIONS = 1000
# Calls in flight get this long to finish after the first signal (then uvicorn closes them).
GRACEFUL_SHUTDOWN = 10


@dataclass(frozen=True)
class GatewayConfig:
    """Flags of ``minik8s-gateway`` (docs/serverless.md, Gateway), with their defaults."""

    apiserver: str = ""
    registry: str = ""
    host: str = "127.0.0.1"
    port: int = 18081
    advertise_url: str = ""
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    tick: float = 2.0
    scale_down_delay: float = 0.0
    activator_queue: int = 1000
    activator_timeout: float = 60.0
    activation_flush_interval: float = 1.0
    activation_retention: int = 1000
    state_dir: str = ""  # activations.db lives here; "" = $MINIK8S_HOME/gateway
    max_code_bytes: int = DEFAULT_MAX_CODE_BYTES
    workflow_workers: int = DEFAULT_WORKERS
    workflow_sync_timeout: float = DEFAULT_SYNC_TIMEOUT
    log_level: str = "info"


DEFAULTS = GatewayConfig()


@click.command(context_settings={"auto_envvar_prefix": "MINIK8S_GATEWAY", "show_default": True})
@click.option("--apiserver", default=None,
              help="The apiserver URL (default: MINIK8S_SERVER, then $MINIK8S_HOME/config).")
@click.option("--registry", "registry_url", required=True, help="The cluster registry URL, e.g. http://127.0.0.1:15000.")
@click.option("--bind-address", default=DEFAULTS.host, help="Address the gateway listens on.")
@click.option("--port", default=DEFAULTS.port, type=click.IntRange(0, 65535), help="Port the gateway listens on.")
@click.option("--advertise-url", default=None, help="The gateway URL written to status.url "
                                                    "[default: http://127.0.0.1:PORT].")
@click.option("--stable-window", default=DEFAULTS.stable_window, type=click.FloatRange(min=1),
              help="Seconds the autoscaler averages concurrency over.")
@click.option("--panic-window-percentage", default=DEFAULTS.panic_window_percentage,
              type=click.FloatRange(min=1, max=100), help="The panic window as a percentage of the stable window.")
@click.option("--panic-threshold-percentage", default=DEFAULTS.panic_threshold_percentage,
              type=click.FloatRange(min=110), help="Panic when the panic-window demand reaches this percentage "
                                                   "of the ready instances.")
@click.option("--tick", default=DEFAULTS.tick, type=click.FloatRange(min=0.05, min_open=False),
              help="Seconds between autoscaler decisions.")
@click.option("--scale-down-delay", default=DEFAULTS.scale_down_delay, type=click.FloatRange(min=0),
              help="Seconds a higher decision is kept before scaling down.")
@click.option("--activator-queue", default=DEFAULTS.activator_queue, type=click.IntRange(1),
              help="Requests held per function while no instance is ready.")
@click.option("--activator-timeout", default=DEFAULTS.activator_timeout, type=click.FloatRange(min=0.1),
              help="Seconds a held request waits for an instance.")
@click.option("--activation-flush-interval", default=DEFAULTS.activation_flush_interval,
              type=click.FloatRange(min=0.01), help="Seconds between writes of activation records.")
@click.option("--activation-retention", default=DEFAULTS.activation_retention, type=click.IntRange(1),
              help="Activation records kept per function.")
@click.option("--state-dir", default=None, help="Folder of the gateway's own state (activations.db) "
                                                "[default: $MINIK8S_HOME/gateway].")
@click.option("--max-code-bytes", default=DEFAULTS.max_code_bytes, type=click.IntRange(1),
              help="Largest accepted code upload.")
@click.option("--workflow-workers", default=DEFAULTS.workflow_workers, type=click.IntRange(1),
              help="Workflow executions driven at once (the others wait, Pending).")
@click.option("--workflow-sync-timeout", default=DEFAULTS.workflow_sync_timeout, type=click.FloatRange(min=0.1),
              help="Seconds POST /workflow/NS/NAME waits for its execution to finish (then 504; it goes on).")
@click.option("--log-level", default=DEFAULTS.log_level, type=click.Choice(["debug", "info", "warning", "error"]))
def main(apiserver: str | None, registry_url: str, bind_address: str, port: int, advertise_url: str | None,
         stable_window: float, panic_window_percentage: float, panic_threshold_percentage: float, tick: float,
         scale_down_delay: float, activator_queue: int, activator_timeout: float, activation_flush_interval: float,
         activation_retention: int, state_dir: str | None, max_code_bytes: int, workflow_workers: int,
         workflow_sync_timeout: float, log_level: str) -> None:
    """Run the serverless gateway: HTTP trigger, activator, autoscaler, activations, function controller."""
    setup_logging(log_level)
    try:
        server = load_config(server=apiserver).server
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    config = GatewayConfig(
        apiserver=server, registry=registry_url, host=bind_address, port=port,
        advertise_url=(advertise_url or f"http://127.0.0.1:{port}").rstrip("/"), stable_window=stable_window,
        panic_window_percentage=panic_window_percentage, panic_threshold_percentage=panic_threshold_percentage,
        tick=tick, scale_down_delay=scale_down_delay, activator_queue=activator_queue,
        activator_timeout=activator_timeout, activation_flush_interval=activation_flush_interval,
        activation_retention=activation_retention, state_dir=str(default_state_dir(state_dir)),
        max_code_bytes=max_code_bytes, workflow_workers=workflow_workers,
        workflow_sync_timeout=workflow_sync_timeout, log_level=log_level)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config))


def default_state_dir(state_dir: str | None = None) -> Path:
    """``--state-dir`` as an absolute path; without one, ``gateway`` under the cluster home."""
    return Path(state_dir).expanduser().resolve() if state_dir else resolve_home() / "gateway"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: this process has one stop sequence (see serve())."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _function_key_of_endpoints(endpoints: dict[str, Any]) -> str | None:
    """``NS/NAME`` when this Endpoints object is the one of Function NAME's Service."""
    meta = endpoints.get("metadata") or {}
    if (meta.get("labels") or {}).get(FUNCTION_LABEL) != meta.get("name"):
        return None
    return object_key(endpoints)


class GatewayDaemon:
    """Every part of the gateway process wired together; :meth:`run` until :meth:`stop`."""

    def __init__(self, client: AsyncApiClient, config: GatewayConfig, *, builder: Any = None,
                 controller: Any = None) -> None:
        self.config = config
        self.client = client
        self.metrics = CollectorRegistry()
        self.http = Forwarder(limit=HTTP_CONNECTIONS)
        self.store = ActivationStore(Path(config.state_dir or default_state_dir()) / DB_NAME)
        self.functions = Informer(client, registry.lookup("functions"), name="gw-functions")
        self.endpoints = Informer(client, registry.lookup("endpoints"), label_selector=FUNCTION_LABEL,
                                  name="gw-endpoints")
        self.autoscaler = Autoscaler(
            client, self.functions.indexer, ready_count=lambda key: self.activator.ready_count(key),
            params=ScaleParams(stable_window=config.stable_window,
                               panic_window_percentage=config.panic_window_percentage,
                               panic_threshold_percentage=config.panic_threshold_percentage,
                               scale_down_delay=config.scale_down_delay),
            tick=config.tick, metrics_registry=self.metrics)
        self.activator = Activator(prober=HttpProber(self.http), on_cold=self.autoscaler.poke,
                                   queue_size=config.activator_queue)
        self.recorder = ActivationRecorder(self.store, flush_interval=config.activation_flush_interval,
                                           retention=config.activation_retention, metrics_registry=self.metrics)
        self.builder = builder
        self.controller = controller
        self.gateway = Gateway(functions=self.functions.indexer, activator=self.activator,
                               autoscaler=self.autoscaler, recorder=self.recorder, http=self.http,
                               builder=builder, store=self.store, activator_timeout=config.activator_timeout,
                               max_code_bytes=config.max_code_bytes, ready=self.ready,
                               metrics_registry=self.metrics)
        # Executions call functions through the gateway's own call path (activator, activation records).
        self.workflows = WorkflowDriver(client, self.gateway, workers=config.workflow_workers,
                                        sync_timeout=config.workflow_sync_timeout)
        self.gateway.workflows = self.workflows
        self.trigger_informer = Informer(client, registry.lookup("triggers"), name="gw-triggers")
        self.rule_informer = Informer(client, registry.lookup("rules"), name="gw-rules")
        self.scheduler = TriggerScheduler(client, triggers=self.trigger_informer.indexer,
                                          rules=self.rule_informer.indexer, functions=self.gateway,
                                          metrics_registry=self.metrics)
        self.gateway.triggers = self.scheduler
        self.scheduler.workflows = self.workflows
        self.trigger_informer.add_handler(on_add=self.scheduler.trigger_changed,
                                          on_update=lambda _old, new: self.scheduler.trigger_changed(new),
                                          on_delete=self.scheduler.trigger_deleted)
        self.functions.add_handler(on_add=self._function_added, on_delete=self._function_deleted)
        self.endpoints.add_handler(on_add=self._endpoints_changed,
                                   on_update=lambda _old, new: self._endpoints_changed(new),
                                   on_delete=self._endpoints_deleted)
        self.server = _Server(uvicorn.Config(
            self.gateway, host=config.host, port=config.port, loop="uvloop", http="httptools",
            access_log=False, lifespan="off", log_level=config.log_level, server_header=False, proxy_headers=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN))
        self._stop = asyncio.Event()
        self._forgets: set[asyncio.Task[Any]] = set()

    def ready(self) -> bool:
        return self.functions.has_synced() and self.endpoints.has_synced()

    # --- informer handlers: short, they only update in-memory state -----------------------------

    def _function_added(self, function: dict[str, Any]) -> None:
        key = object_key(function)
        self.autoscaler.restore(function)
        # Endpoints may have arrived before their Function (the two informers race at start).
        endpoints = self.endpoints.indexer.get(key)
        if endpoints is not None:
            self.activator.update(key, endpoints)

    def _function_deleted(self, function: dict[str, Any]) -> None:
        key = object_key(function)
        self.autoscaler.forget(key)
        self.activator.remove(key)
        ns, _, name = key.partition("/")
        self._spawn(self.recorder.forget(ns, name), f"forget activations of {key}")

    def _spawn(self, work: Any, what: str) -> None:
        async def logged() -> None:
            try:
                await work
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.ensure_future(logged())
        self._forgets.add(task)
        task.add_done_callback(self._forgets.discard)

    async def _prune_activations(self) -> None:
        """Once the functions are listed: drop the records of functions deleted while we were down."""
        while not self.functions.has_synced():
            if self._stop.is_set():
                return
            await asyncio.sleep(0.1)
        gone = await self.recorder.prune(self.functions.indexer.keys())
        if gone:
            log.info("deleted %d activation records of functions that no longer exist", gone)

    async def _start_triggers(self) -> None:
        """Timers start once triggers AND rules are listed: a first firing must see every rule."""
        for informer in (self.trigger_informer, self.rule_informer):
            while not await informer.wait_synced(timeout=1.0):
                if self._stop.is_set():
                    return
        self.scheduler.start()

    def _endpoints_changed(self, endpoints: dict[str, Any]) -> None:
        key = _function_key_of_endpoints(endpoints)
        if key is not None and key in self.functions.indexer:
            self.activator.update(key, endpoints)

    def _endpoints_deleted(self, endpoints: dict[str, Any]) -> None:
        key = _function_key_of_endpoints(endpoints)
        if key is not None:
            self.activator.remove(key)

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        self._stop.clear()
        background = [asyncio.create_task(self.functions.run(), name="gw-functions"),
                      asyncio.create_task(self.endpoints.run(), name="gw-endpoints"),
                      asyncio.create_task(self.autoscaler.run(), name="autoscaler"),
                      asyncio.create_task(self.trigger_informer.run(), name="gw-triggers"),
                      asyncio.create_task(self.rule_informer.run(), name="gw-rules")]
        self._spawn(self._prune_activations(), "pruning activation records")
        self._spawn(self._start_triggers(), "starting the trigger scheduler")
        recorder = asyncio.create_task(self.recorder.run(), name="activations")
        workflows = asyncio.create_task(self.workflows.run(), name="workflow-driver")
        controller = asyncio.create_task(self.controller.run(), name="function-controller") \
            if self.controller is not None else None
        server = asyncio.create_task(self.server.serve(), name="gateway-http")
        log.info("gateway serving on http://%s:%d (advertised as %s)", self.config.host, self.config.port,
                 self.config.advertise_url)
        try:
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stopper, server], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if server.done() and not self._stop.is_set():
                log.error("the HTTP server ended: %s", server.exception() if not server.cancelled() else "cancelled")
        finally:
            # Order: stop taking calls and let those in flight end, then flush their records. Held (cold)
            # requests end at once with a 503: their instance may be seconds away. Executions stop first,
            # before their Tasks could see that 503: they stay Running and the next gateway resumes them.
            # Triggers stop before both: no firing starts a call or an execution during the stop.
            await self.scheduler.stop()
            self.workflows.stop()
            await asyncio.gather(workflows, return_exceptions=True)
            self.activator.shut_down()
            self.server.should_exit = True
            await asyncio.gather(server, return_exceptions=True)
            await self.gateway.drain()
            if self.controller is not None:
                self.controller.stop()
            self.autoscaler.stop()
            self.recorder.stop()
            self.functions.stop()
            self.endpoints.stop()
            self.trigger_informer.stop()
            self.rule_informer.stop()
            await asyncio.gather(recorder, *background, *([controller] if controller else []),
                                 return_exceptions=True)
            await self.activator.stop()
            await asyncio.gather(*self._forgets, return_exceptions=True)
            await self.http.close()
            await asyncio.to_thread(self.store.close)

    def stop(self) -> None:
        self._stop.set()


async def serve(config: GatewayConfig) -> None:
    """Run the whole gateway until a signal; the builder and the function controller included."""
    # Imported here: they are the heavy half (image building) and a unit test of the wiring needs neither.
    from serverless.builder import Builder
    from serverless.controller import FunctionController

    async with AsyncApiClient(config.apiserver) as client:
        builder = Builder(config.registry)
        try:
            controller = FunctionController(client, builder, advertise_url=config.advertise_url)
            daemon = GatewayDaemon(client, config, builder=builder, controller=controller)
            stop_on_signals(daemon.stop, log)
            log.info("gateway starting against %s, registry %s", config.apiserver, config.registry)
            await daemon.run()
        finally:
            builder.close()


if __name__ == "__main__":
    main()
