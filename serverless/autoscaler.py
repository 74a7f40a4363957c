"""The autoscaler: a small KPA (Knative Pod Autoscaler) for functions; the only writer of their scale.

::

    gateway ── request_started(key) / request_finished(key) ──▶ ConcurrencyWindow per function
                                                                 (time-weighted in-flight, 1 s buckets)
    every --tick seconds, per built function:
        stable = average concurrency over --stable-window
        panic  = average over the panic window (stable * --panic-window-percentage / 100)
        observe_panic()  enter panic when panic / target ≥ threshold * max(1, ready);
                         leave it only after a stable window without being over the threshold
        decide()         ceil(stable / target), never below the panic peak while panicking,
                         at least 1 while active, 0 after idleTimeout idle with nothing in flight,
                         clamped to [minScale, maxScale]
        scale-down delay the highest decision of the last --scale-down-delay seconds
        PATCH deployments/NAME/scale        only when the value changes
        PATCH functions/NAME/status         {desiredScale, lastActiveTime} only when they change
    poke(key)  (activator: a request is held) → scale 0 → 1 now; one write however many pokes

Concurrency is sampled on each change, not on a timer: each start/finish closes the time slice
at the old in-flight value, so a bucket holds the exact time-weighted mean of its second and a
burst shorter than a second still counts.

On a restart, :meth:`Autoscaler.restore` reads ``status.lastActiveTime`` and ``status.desiredScale``
of each Function: idle time counts from the recorded activity (not from the restart), and for one
stable window the autoscaler does not go below the recorded scale (its windows are empty, which
would otherwise look like no load).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from minik8s.api import registry
from minik8s.errors import ApiError, ConnectionFailed, NotFound
from minik8s.timeutil import parse_rfc3339
from serverless.activator import Clock, SystemClock

log = logging.getLogger("minik8s.serverless.autoscaler")

# Function spec defaults (docs/serverless.md, Objects).
DEFAULT_MIN_SCALE = 0
DEFAULT_MAX_SCALE = 10
DEFAULT_TARGET_CONCURRENCY = 2
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 60.0

_EPSILON = 1e-9


@dataclass(frozen=True)
class ScaleSpec:
    """What one Function's spec says about scaling."""

    min_scale: int = DEFAULT_MIN_SCALE
    max_scale: int = DEFAULT_MAX_SCALE
    target: float = DEFAULT_TARGET_CONCURRENCY
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT

    @staticmethod
    def of(function: dict[str, Any]) -> ScaleSpec:
        spec = function.get("spec") or {}

        def num(name: str, default: float) -> float:
            value = spec.get(name)
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default

        lo = max(0, int(num("minScale", DEFAULT_MIN_SCALE)))
        hi = max(1, int(num("maxScale", DEFAULT_MAX_SCALE)))
        return ScaleSpec(min_scale=min(lo, hi), max_scale=hi,
                         target=max(1.0, num("targetConcurrency", DEFAULT_TARGET_CONCURRENCY)),
                         idle_timeout=max(_EPSILON, num("idleTimeout", DEFAULT_IDLE_TIMEOUT)))


@dataclass(frozen=True)
class ScaleParams:
    """The gateway's autoscaling flags (Knative's defaults)."""

    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    scale_down_delay: float = 0.0

    @property
    def panic_window(self) -> float:
        return max(1.0, self.stable_window * self.panic_window_percentage / 100.0)

    @property
    def panic_threshold(self) -> float:
        return self.panic_threshold_percentage / 100.0


@dataclass(frozen=True)
class PanicState:
    """``since``: when the current panic began (None: calm); ``last_over``: the last tick over the
    threshold; ``peak``: the highest panic-window scale seen during this panic."""

    since: float | None = None
    last_over: float | None = None
    peak: int = 0

    @property
    def panicking(self) -> bool:
        return self.since is not None


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - _EPSILON))


def observe_panic(prev: PanicState, *, now: float, stable: float, panic: float, ready: int, spec: ScaleSpec,
                  params: ScaleParams) -> PanicState:
    """The panic state after one tick (pure).

    Over the threshold when ``panic / target ≥ threshold * max(1, ready)``; a panic ends only once a
    whole stable window has passed since the last tick over the threshold.
    """
    panic_scale = _ceil(panic / spec.target)
    wanted = max(panic_scale, _ceil(stable / spec.target))
    over = panic / spec.target >= params.panic_threshold * max(1, ready) and panic > 0
    if over:
        return PanicState(since=prev.since if prev.since is not None else now, last_over=now,
                          peak=max(prev.peak, wanted))
    if prev.since is not None and prev.last_over is not None and now - prev.last_over < params.stable_window:
        return replace(prev, peak=max(prev.peak, wanted))
    return PanicState()


def decide(*, spec: ScaleSpec, stable: float, in_flight: int, idle_for: float, panic: PanicState,
           floor: int = 0) -> int:
    """The scale a function should have now (pure).

    ``stable``: average concurrency over the stable window; ``in_flight``: calls running now;
    ``idle_for``: seconds since the last request started or finished; ``panic``: the state from
    :func:`observe_panic`; ``floor``: a lower bound kept after a restart. Zero only after
    ``idle_timeout`` idle seconds with nothing in flight; otherwise at least one. Always within
    ``[min_scale, max_scale]``.
    """
    if in_flight == 0 and idle_for >= spec.idle_timeout:
        want = 0
    else:
        want = _ceil(stable / spec.target)
        if panic.panicking:
            want = max(want, panic.peak)  # no scale-down while panicking
        want = max(want, 1, floor)
    return min(spec.max_scale, max(spec.min_scale, want))


class ConcurrencyWindow:
    """Time-weighted in-flight concurrency in one-second buckets, kept for ``keep`` seconds."""

    def __init__(self, now: float, keep: float) -> None:
        self.keep = keep
        self.start = now
        self.last = now
        self.in_flight = 0
        self._area: dict[int, float] = {}

    def set(self, now: float, in_flight: int) -> None:
        """In-flight changed to ``in_flight`` at ``now``."""
        self._advance(now)
        self.in_flight = in_flight

    def average(self, now: float, window: float) -> float:
        """Mean concurrency over ``(now - window, now]`` (over the time since start when shorter)."""
        self._advance(now)
        lo = now - window
        total = 0.0
        for sec, area in self._area.items():
            if sec + 1 <= lo:
                continue
            # The oldest bucket may straddle the window's edge: count the part inside it.
            total += area * min(1.0, (sec + 1) - lo) if sec < lo else area
        span = min(window, now - self.start)
        return total / max(span, 1.0)

    def _advance(self, now: float) -> None:
        t = self.last
        if now <= t:
            return
        if self.in_flight:
            t = max(t, math.floor(now - self.keep))  # older seconds would be pruned anyway
            while t < now:
                sec = math.floor(t)
                end = min(now, sec + 1.0)
                self._area[sec] = self._area.get(sec, 0.0) + self.in_flight * (end - t)
                t = end
        self.last = now
        oldest = math.floor(now - self.keep) - 1
        for sec in [s for s in self._area if s < oldest]:
            del self._area[sec]


class ScaleClient(Protocol):
    """The writes (and the one read) the autoscaler makes; ``AsyncApiClient`` has them."""

    async def get(self, rt: Any, name: str, namespace: str | None = None) -> dict[str, Any]: ...

    async def patch(self, rt: Any, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> dict[str, Any]: ...


class FunctionLookup(Protocol):
    """Read-only Function cache (an informer's ``Indexer``), keyed ``NS/NAME``."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def keys(self) -> list[str]: ...


@dataclass(eq=False)
class _State:
    window: ConcurrencyWindow
    in_flight: int = 0
    last_active: float | None = None  # clock.monotonic() of the last start/finish
    last_active_wall: float | None = None  # the same moment by clock.time(), for status.lastActiveTime
    restored_active: str | None = None  # status.lastActiveTime as a previous gateway left it
    scale: int | None = None  # what the Deployment's replicas are, as far as we know
    panic: PanicState = field(default_factory=PanicState)
    floor: int = 0
    floor_until: float = 0.0
    recent: deque[tuple[float, int]] = field(default_factory=deque)
    written_status: tuple[int | None, str | None] = (None, None)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Metrics:
    def __init__(self, reg: CollectorRegistry | None) -> None:
        self.scale_writes = Counter("gateway_scale_writes_total", "Writes of deployments/NAME/scale",
                                    ["namespace", "function"], registry=reg)
        self.desired = Gauge("gateway_desired_scale", "The autoscaler's last decision", ["namespace", "function"],
                             registry=reg)
        self.panicking = Gauge("gateway_autoscaler_panic", "1 while the function is in panic mode",
                               ["namespace", "function"], registry=reg)


def _split(key: str) -> tuple[str, str]:
    ns, _, name = key.partition("/")
    return ns, name


def _rfc3339_wall(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Autoscaler:
    """Per-function scale decisions from in-process metrics (see the module docstring).

    ``functions`` is the Function cache; ``ready_count(key)`` the activator's ready instances;
    ``client`` writes scale and status. ``tick`` is the period of :meth:`run`.
    """

    def __init__(self, client: ScaleClient, functions: FunctionLookup, *, ready_count: Callable[[str], int],
                 params: ScaleParams | None = None, tick: float = 2.0, clock: Clock | None = None,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.client = client
        self.functions = functions
        self.ready_count = ready_count
        self.params = params or ScaleParams()
        self.tick = tick
        self.clock: Clock = clock or SystemClock()
        self.metrics = Metrics(metrics_registry)
        self._states: dict[str, _State] = {}
        self._stop = asyncio.Event()
        self._deployments = registry.lookup("deployments")
        self._functions_rt = registry.lookup("functions")

    # --- metrics from the gateway ---------------------------------------------------------------

    def request_started(self, key: str) -> None:
        st = self._state(key)
        now = self.clock.monotonic()
        st.in_flight += 1
        st.window.set(now, st.in_flight)
        st.last_active, st.last_active_wall = now, self.clock.time()

    def request_finished(self, key: str) -> None:
        st = self._state(key)
        now = self.clock.monotonic()
        st.in_flight = max(0, st.in_flight - 1)
        st.window.set(now, st.in_flight)
        st.last_active, st.last_active_wall = now, self.clock.time()

    # --- function lifecycle (the Function informer's handlers) ----------------------------------

    def restore(self, function: dict[str, Any]) -> None:
        """Take what a previous gateway recorded in ``status``; call once when a Function is first seen."""
        meta = function.get("metadata") or {}
        key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        status = function.get("status") or {}
        st = self._state(key)
        now = self.clock.monotonic()
        active = parse_rfc3339(str(status.get("lastActiveTime") or ""))
        if active is not None and st.last_active is None:
            ago = max(0.0, self.clock.time() - active.timestamp())
            st.last_active = now - ago
            st.restored_active = str(status.get("lastActiveTime"))
        desired = status.get("desiredScale")
        if isinstance(desired, int) and not isinstance(desired, bool) and desired >= 0:
            if st.scale is None:
                st.scale = desired
            st.floor, st.floor_until = desired, now + self.params.stable_window
            st.written_status = (desired, status.get("lastActiveTime"))

    def forget(self, key: str) -> None:
        self._states.pop(key, None)
        ns, name = _split(key)
        for gauge in (self.metrics.desired, self.metrics.panicking):
            try:
                gauge.remove(ns, name)
            except KeyError:
                pass

    # --- scale from zero -----------------------------------------------------------------------

    async def poke(self, key: str) -> None:
        """A request is held for ``key``: make sure the Deployment has at least one replica.

        Single flight: pokes of one function queue on its lock, and once one of them has seen or
        written a scale ≥ 1 the rest return without any API call.
        """
        st = self._state(key)
        if st.scale is not None and st.scale >= 1:
            return
        ns, name = _split(key)
        async with st.lock:
            if st.scale is not None and st.scale >= 1:
                return
            try:
                deployment = await self.client.get(self._deployments, name, ns)
            except NotFound:
                log.info("poke %s: no Deployment yet", key)
                return
            replicas = (deployment.get("spec") or {}).get("replicas")
            if isinstance(replicas, int) and replicas >= 1:
                st.scale = replicas
                return
            await self._write_scale(key, st, 1)

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every ``tick`` seconds until :meth:`stop`; a failing tick is logged and retried next time."""
        self._stop.clear()
        while not self._stop.is_set():
            try:
                await self.tick_once()
            except (ApiError, ConnectionFailed) as exc:
                log.warning("autoscaler tick: %s", exc)
            except Exception:
                log.exception("autoscaler tick failed")
            try:
                await asyncio.wait_for(self._stop.wait(), self.tick)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stop.set()

    async def tick_once(self) -> dict[str, int]:
        """One decision for every built function; returns key → decided scale."""
        decided: dict[str, int] = {}
        for key in list(self.functions.keys()):
            function = self.functions.get(key)
            if function is None or not (function.get("status") or {}).get("image"):
                continue  # no Deployment to scale yet
            try:
                decided[key] = await self._tick_function(key, function)
            except (ApiError, ConnectionFailed) as exc:
                log.warning("autoscaling %s: %s", key, exc)
        return decided

    def decision(self, key: str, function: dict[str, Any]) -> int:
        """This tick's scale for ``key`` (updates panic state and the scale-down-delay history)."""
        st = self._state(key)
        spec = ScaleSpec.of(function)
        now = self.clock.monotonic()
        p = self.params
        stable = st.window.average(now, p.stable_window)
        panic = st.window.average(now, p.panic_window)
        st.panic = observe_panic(st.panic, now=now, stable=stable, panic=panic, ready=self.ready_count(key),
                                 spec=spec, params=p)
        # Never active (no call since we started, none recorded in status.lastActiveTime): idle for ever, so
        # a new function stays at minScale instead of starting an instance nobody asked for.
        idle_for = math.inf if st.last_active is None else now - st.last_active
        floor = st.floor if now < st.floor_until else 0
        want = decide(spec=spec, stable=stable, in_flight=st.in_flight, idle_for=idle_for,
                      panic=st.panic, floor=floor)
        if p.scale_down_delay > 0:
            st.recent.append((now, want))
            while st.recent and st.recent[0][0] < now - p.scale_down_delay:
                st.recent.popleft()
            want = max(w for _, w in st.recent)
        ns, name = _split(key)
        self.metrics.desired.labels(ns, name).set(want)
        self.metrics.panicking.labels(ns, name).set(1 if st.panic.panicking else 0)
        return want

    async def _tick_function(self, key: str, function: dict[str, Any]) -> int:
        st = self._state(key)
        want = self.decision(key, function)
        async with st.lock:
            if want != st.scale:
                await self._write_scale(key, st, want)
        await self._write_status(key, st, want)
        return want

    async def _write_scale(self, key: str, st: _State, replicas: int) -> None:
        ns, name = _split(key)
        try:
            await self.client.patch(self._deployments, name, {"spec": {"replicas": replicas}}, namespace=ns,
                                    patch_type="merge", subresource="scale")
        except NotFound:
            st.scale = None
            log.info("scale %s: no Deployment yet", key)
            return
        log.info("scaled %s from %s to %d", key, st.scale, replicas)
        st.scale = replicas
        self.metrics.scale_writes.labels(ns, name).inc()

    async def _write_status(self, key: str, st: _State, desired: int) -> None:
        # Second precision (RFC 3339 as Kubernetes writes it): under steady load this changes at
        # most once a second, and the write happens at most once a tick.
        active = _rfc3339_wall(st.last_active_wall) if st.last_active_wall is not None else st.restored_active
        wanted = (desired, active)
        if wanted == st.written_status:
            return
        status: dict[str, Any] = {"desiredScale": desired}
        if active is not None:
            status["lastActiveTime"] = active
        ns, name = _split(key)
        try:
            await self.client.patch(self._functions_rt, name, {"status": status}, namespace=ns,
                                    patch_type="merge", subresource="status")
        except NotFound:
            return
        st.written_status = wanted

    def _state(self, key: str) -> _State:
        st = self._states.get(key)
        if st is None:
            keep = self.params.stable_window + 2
            st = self._states[key] = _State(window=ConcurrencyWindow(self.clock.monotonic(), keep))
        return st
