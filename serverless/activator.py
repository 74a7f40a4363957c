"""The activator: which function instances can take a request now, and holding requests until one can.

::

    Endpoints NS/NAME ──update(key, endpoints)──▶ instances of "NS/NAME" (pod IP → Instance)
        addresses          → ready at once
        notReadyAddresses  → one probe loop per IP: GET http://IP:8080/healthz every probe_period
                             until 200 (→ ready) or the IP leaves the Endpoints
        IP gone            → removed: never picked again (calls already sent to it finish)

    acquire(key, timeout)
        a ready instance?   → the one with the fewest calls in flight (in_flight += 1)
        none                → hold: on_cold(key) once for this request, then wait on the
                              function's "ready" asyncio.Event (set by update()/a probe, never polled)
        hold queue full     → QueueFull      (the gateway answers 503)
        waited past timeout → HoldTimeout    (the gateway answers 504)
    release(instance)       → in_flight -= 1

Errors::

    ActivatorError
     ├── QueueFull     the function already holds ``queue_size`` requests
     └── HoldTimeout   no instance became ready within ``timeout`` seconds

Time comes from a :class:`Clock` (``monotonic()``, ``time()``, ``async sleep()``) so unit tests can
hold requests under a fake clock and show they are released by an Endpoints event, not by time.
The activator keeps no lock: everything runs on one event loop and no method awaits between
choosing an instance and counting it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from serverless.forward import Forwarder, ForwardError

log = logging.getLogger("minik8s.serverless.activator")

FUNCTION_PORT = 8080
# Knative's activator probes a not-yet-ready pod this often; a cold start then waits at most this
# long after the runtime is up, instead of the kubelet's 1 s readiness period plus the watch delay.
PROBE_PERIOD = 0.01
# One probe must not outlive a stuck pod; the loop then simply tries again.
PROBE_TIMEOUT = 1.0


class ActivatorError(Exception):
    """A request the activator could not place on an instance."""


class QueueFull(ActivatorError):
    """The function's hold queue is full (HTTP 503)."""


class HoldTimeout(ActivatorError):
    """No instance became ready while the request was held (HTTP 504)."""


class ShuttingDown(ActivatorError):
    """The gateway is stopping: held requests end at once instead of outliving it (HTTP 503)."""


class Clock(Protocol):
    """Time as the serverless parts see it; :class:`SystemClock` in production, a fake in tests."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(eq=False)
class Instance:
    """One pod of a function. ``in_flight`` counts calls placed on it and not yet released."""

    key: str
    ip: str
    port: int = FUNCTION_PORT
    pod: str = ""
    ready: bool = False
    in_flight: int = 0
    served: int = 0  # calls ever placed on it: spreads ties between equally idle instances
    removed: bool = False
    # Endpoints listed it under ``addresses`` at least once: a later move to notReadyAddresses is a
    # real readiness failure, while an IP we found ready by probing may still be "notReady" there.
    listed_ready: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


Prober = Callable[[Instance], Awaitable[bool]]
ColdCallback = Callable[[str], Any]


class HttpProber:
    """``GET http://IP:PORT/healthz`` → True on 200; any error or other status → False. ``http`` is the
    gateway's :class:`serverless.forward.Forwarder` (the probes share its connection pool)."""

    def __init__(self, http: Forwarder, *, timeout: float = PROBE_TIMEOUT) -> None:
        self.http = http
        self.timeout = timeout

    async def __call__(self, instance: Instance) -> bool:
        try:
            response = await self.http.get(f"{instance.url}/healthz", timeout=self.timeout)
        except ForwardError:
            return False
        return response.status == 200


@dataclass(eq=False)
class _Function:
    instances: dict[str, Instance] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0
    probes: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def pick(self) -> Instance | None:
        best: Instance | None = None
        for inst in self.instances.values():
            if inst.ready and not inst.removed and (
                    best is None or (inst.in_flight, inst.served) < (best.in_flight, best.served)):
                best = inst
        return best

    def refresh(self) -> None:
        """Keep ``ready`` set exactly while some instance can take a call."""
        if any(i.ready and not i.removed for i in self.instances.values()):
            self.ready.set()
        else:
            self.ready.clear()


def endpoint_addresses(endpoints: dict[str, Any]) -> tuple[dict[str, tuple[int, str]], dict[str, tuple[int, str]]]:
    """(ready, not ready) addresses of an Endpoints object: IP → (port, pod name).

    The port is the subset's port named ``http`` (the function Service's), else its first port,
    else 8080.
    """
    ready: dict[str, tuple[int, str]] = {}
    not_ready: dict[str, tuple[int, str]] = {}
    for subset in endpoints.get("subsets") or []:
        ports = subset.get("ports") or []
        named = [p for p in ports if p.get("name") == "http"] or ports
        port = int(named[0].get("port") or FUNCTION_PORT) if named else FUNCTION_PORT
        for field_name, into in (("addresses", ready), ("notReadyAddresses", not_ready)):
            for addr in subset.get(field_name) or []:
                ip = addr.get("ip")
                if ip:
                    into[str(ip)] = (port, str((addr.get("targetRef") or {}).get("name") or ""))
    for ip in ready:
        not_ready.pop(ip, None)
    return ready, not_ready


class Activator:
    """Instances per function and the hold queue in front of them (see the module docstring).

    ``queue_size`` bounds the requests held per function; ``on_cold(key)`` is called (a coroutine
    function is scheduled as a task) once for every request that has to wait — the autoscaler's
    single-flight ``poke``. ``prober`` checks a not-ready IP; ``clock`` gives time and sleeps.
    """

    def __init__(self, *, prober: Prober, on_cold: ColdCallback | None = None, queue_size: int = 1000,
                 clock: Clock | None = None, probe_period: float = PROBE_PERIOD) -> None:
        self.prober = prober
        self.on_cold = on_cold
        self.queue_size = queue_size
        self.clock: Clock = clock or SystemClock()
        self.probe_period = probe_period
        self._functions: dict[str, _Function] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shutting_down = asyncio.Event()
        self.cold_starts = 0  # requests that had to be held (the gateway exports it)

    # --- what the Endpoints watch feeds ---------------------------------------------------------

    def update(self, key: str, endpoints: dict[str, Any]) -> None:
        """Take the current Endpoints of function ``key`` ("NS/NAME"): add, promote, demote, drop IPs."""
        fn = self._function(key)
        ready, not_ready = endpoint_addresses(endpoints)
        for ip in [ip for ip in fn.instances if ip not in ready and ip not in not_ready]:
            self._drop(fn, ip)
        for ip, (port, pod) in ready.items():
            inst = fn.instances.get(ip)
            if inst is None:
                inst = fn.instances[ip] = Instance(key, ip, port, pod)
            inst.port, inst.pod = port, pod or inst.pod
            inst.listed_ready = True
            self._stop_probe(fn, ip)
            inst.ready = True
        for ip, (port, pod) in not_ready.items():
            inst = fn.instances.get(ip)
            if inst is None:
                inst = fn.instances[ip] = Instance(key, ip, port, pod)
            inst.port, inst.pod = port, pod or inst.pod
            if inst.listed_ready:
                # The kubelet saw it fail readiness after it had passed: trust that over our probe.
                inst.ready = False
                inst.listed_ready = False
            if not inst.ready:
                self._start_probe(fn, inst)
        fn.refresh()

    def remove(self, key: str) -> None:
        """The function's Endpoints (or the function) is gone: drop every instance."""
        fn = self._functions.get(key)
        if fn is None:
            return
        for ip in list(fn.instances):
            self._drop(fn, ip)
        fn.refresh()
        if fn.held == 0:
            del self._functions[key]

    def mark_unreachable(self, instance: Instance) -> None:
        """A connection to ``instance`` was refused: stop sending to it and probe it again."""
        fn = self._functions.get(instance.key)
        if fn is None or fn.instances.get(instance.ip) is not instance or instance.removed:
            return
        instance.ready = False
        self._start_probe(fn, instance)
        fn.refresh()

    # --- what the gateway calls -----------------------------------------------------------------

    def ready_count(self, key: str) -> int:
        fn = self._functions.get(key)
        return 0 if fn is None else sum(1 for i in fn.instances.values() if i.ready and not i.removed)

    def held_count(self, key: str) -> int:
        fn = self._functions.get(key)
        return 0 if fn is None else fn.held

    def instances(self, key: str) -> list[Instance]:
        fn = self._functions.get(key)
        return [] if fn is None else list(fn.instances.values())

    async def acquire(self, key: str, timeout: float) -> Instance:
        """A ready instance of ``key`` with one more call counted on it; hold while there is none.

        Raises :class:`QueueFull` when ``queue_size`` requests are already held for ``key``, and
        :class:`HoldTimeout` when none became ready within ``timeout`` seconds (clock time).
        Every successful acquire must be paired with :meth:`release`.
        """
        fn = self._function(key)
        inst = fn.pick()
        if inst is not None:
            return self._take(inst)
        if self._shutting_down.is_set():
            raise ShuttingDown("the gateway is shutting down")
        if fn.held >= self.queue_size:
            raise QueueFull(f"function {key} already holds {fn.held} requests")
        fn.held += 1
        self.cold_starts += 1
        try:
            self._notify_cold(key)
            return await self._hold(key, fn, timeout)
        finally:
            fn.held -= 1
            if fn.held == 0 and not fn.instances and self._functions.get(key) is fn:
                del self._functions[key]

    def release(self, instance: Instance) -> None:
        instance.in_flight = max(0, instance.in_flight - 1)

    def shut_down(self) -> None:
        """Refuse new holds and end every held request with :class:`ShuttingDown` (a stopping gateway
        answers them 503 rather than leaving them to be cut off by the HTTP server's grace period)."""
        self._shutting_down.set()

    async def stop(self) -> None:
        """Cancel probe loops and pending cold callbacks."""
        tasks = [*self._tasks, *(t for fn in self._functions.values() for t in fn.probes.values())]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- internals ------------------------------------------------------------------------------

    def _function(self, key: str) -> _Function:
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = _Function()
        return fn

    @staticmethod
    def _take(inst: Instance) -> Instance:
        inst.in_flight += 1
        inst.served += 1
        return inst

    async def _hold(self, key: str, fn: _Function, timeout: float) -> Instance:
        async def ready() -> Instance:
            while True:
                await fn.ready.wait()
                inst = fn.pick()
                if inst is not None:
                    return self._take(inst)
                # Set but already cleared again by the time we ran (the instance left): wait more.
                fn.refresh()

        waiter = asyncio.ensure_future(ready())
        timer = asyncio.ensure_future(self.clock.sleep(timeout))
        closing = asyncio.ensure_future(self._shutting_down.wait())
        try:
            await asyncio.wait({waiter, timer, closing}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # The caller went away: give back an instance taken in the same instant.
            timer.cancel()
            waiter.cancel()
            closing.cancel()
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())
            raise
        timer.cancel()
        closing.cancel()
        if waiter.done():
            return waiter.result()
        if self._shutting_down.is_set():
            waiter.cancel()
            raise ShuttingDown("the gateway is shutting down")
        # A cancelled waiter takes nothing: ``ready`` counts an instance only in the step it returns.
        waiter.cancel()
        raise HoldTimeout(f"no instance of function {key} became ready within {timeout:g}s")

    def _notify_cold(self, key: str) -> None:
        if self.on_cold is None:
            return
        try:
            result = self.on_cold(key)
        except Exception:
            log.exception("cold-start callback for %s failed", key)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._cold_done)

    def _cold_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)  # type: ignore[arg-type]
        if not task.cancelled() and task.exception() is not None:
            log.warning("cold-start callback failed: %s", task.exception())

    def _drop(self, fn: _Function, ip: str) -> None:
        inst = fn.instances.pop(ip, None)
        self._stop_probe(fn, ip)
        if inst is not None:
            inst.removed = True
            inst.ready = False

    def _start_probe(self, fn: _Function, inst: Instance) -> None:
        # One loop per IP at most: a flood of Endpoints updates never multiplies the probing.
        if inst.ip in fn.probes:
            return
        task = asyncio.ensure_future(self._probe_loop(fn, inst))
        fn.probes[inst.ip] = task
        ip = inst.ip

        def done(t: asyncio.Task[None]) -> None:
            if fn.probes.get(ip) is t:
                del fn.probes[ip]

        task.add_done_callback(done)

    @staticmethod
    def _stop_probe(fn: _Function, ip: str) -> None:
        task = fn.probes.pop(ip, None)
        if task is not None:
            task.cancel()

    async def _probe_loop(self, fn: _Function, inst: Instance) -> None:
        while not inst.removed and not inst.ready:
            try:
                ok = await self.prober(inst)
            except Exception:  # a broken prober counts as "not ready yet"
                log.exception("probing %s failed", inst.url)
                ok = False
            if ok and not inst.removed:
                log.debug("instance %s of %s answered its probe: ready", inst.ip, inst.key)
                inst.ready = True
                fn.refresh()
                return
            await self.clock.sleep(self.probe_period)
