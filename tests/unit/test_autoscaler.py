"""The autoscaler: the pure decision (stable, panic, idle to zero, bounds, restart), the concurrency
window, and the writes it makes (scale only on change, status at most once a tick, single-flight poke)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from minik8s.errors import NotFound
from serverless.autoscaler import (
    Autoscaler,
    ConcurrencyWindow,
    PanicState,
    ScaleParams,
    ScaleSpec,
    decide,
    observe_panic,
)

pytestmark = pytest.mark.timeout(10)

KEY = "default/add"
SPEC = ScaleSpec(min_scale=0, max_scale=10, target=2, idle_timeout=60)
PARAMS = ScaleParams()  # stable 60 s, panic window 6 s, threshold 2.0
CALM = PanicState()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:  # unused by the autoscaler
        raise AssertionError("the autoscaler must not sleep on the clock")

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- decide() -----------------------------------------------------------------------------------


def test_stable_decision_is_ceil_of_concurrency_over_target() -> None:
    assert decide(spec=SPEC, stable=3.0, in_flight=3, idle_for=0, panic=CALM) == 2
    assert decide(spec=SPEC, stable=4.0, in_flight=4, idle_for=0, panic=CALM) == 2
    assert decide(spec=SPEC, stable=4.1, in_flight=4, idle_for=0, panic=CALM) == 3


def test_recent_activity_keeps_one_instance_and_idle_goes_to_zero() -> None:
    assert decide(spec=SPEC, stable=0.0, in_flight=0, idle_for=59.9, panic=CALM) == 1
    assert decide(spec=SPEC, stable=0.4, in_flight=0, idle_for=60.0, panic=CALM) == 0
    # Something still in flight (a long call) is never idle.
    assert decide(spec=SPEC, stable=0.0, in_flight=1, idle_for=600.0, panic=CALM) == 1


def test_bounds_clamp_every_decision() -> None:
    bounded = ScaleSpec(min_scale=2, max_scale=4, target=1, idle_timeout=60)
    assert decide(spec=bounded, stable=0.0, in_flight=0, idle_for=1e6, panic=CALM) == 2
    assert decide(spec=bounded, stable=100.0, in_flight=100, idle_for=0, panic=CALM) == 4


def test_restart_floor_holds_the_recorded_scale_but_not_against_idle() -> None:
    assert decide(spec=SPEC, stable=0.0, in_flight=0, idle_for=5, panic=CALM, floor=4) == 4
    assert decide(spec=SPEC, stable=0.0, in_flight=0, idle_for=61, panic=CALM, floor=4) == 0


def test_panic_starts_over_threshold_and_never_scales_down_until_a_calm_stable_window() -> None:
    # 1 ready instance, panic-window concurrency 8 with target 2 → 4 ≥ 2.0 x 1: panic.
    st = observe_panic(CALM, now=0, stable=1.0, panic=8.0, ready=1, spec=SPEC, params=PARAMS)
    assert st.panicking and st.peak == 4
    assert decide(spec=SPEC, stable=1.0, in_flight=8, idle_for=0, panic=st) == 4
    # Load falls: still panicking, the peak holds (no scale-down in panic).
    st = observe_panic(st, now=30, stable=1.0, panic=1.0, ready=4, spec=SPEC, params=PARAMS)
    assert st.panicking
    assert decide(spec=SPEC, stable=1.0, in_flight=1, idle_for=0, panic=st) == 4
    # A whole stable window after the last tick over the threshold: calm again.
    st = observe_panic(st, now=60, stable=1.0, panic=1.0, ready=4, spec=SPEC, params=PARAMS)
    assert not st.panicking
    assert decide(spec=SPEC, stable=1.0, in_flight=1, idle_for=0, panic=st) == 1


def test_no_panic_below_threshold() -> None:
    st = observe_panic(CALM, now=0, stable=3.0, panic=6.0, ready=2, spec=SPEC, params=PARAMS)
    assert not st.panicking  # 6/2 = 3 < 2.0 x 2


def test_spec_defaults_and_bad_values() -> None:
    assert ScaleSpec.of({"spec": {}}) == ScaleSpec(0, 10, 2, 60)
    assert ScaleSpec.of({"spec": {"minScale": 5, "maxScale": 3, "targetConcurrency": 0}}) == ScaleSpec(3, 3, 1, 60)


# --- ConcurrencyWindow ----------------------------------------------------------------------------


def test_window_is_time_weighted() -> None:
    w = ConcurrencyWindow(0.0, keep=62)
    w.set(0.0, 4)
    w.set(0.5, 0)  # four calls for half a second
    assert w.average(1.0, 1.0) == pytest.approx(2.0)
    assert w.average(10.0, 10.0) == pytest.approx(0.2)
    w.set(10.0, 1)
    assert w.average(70.0, 60.0) == pytest.approx(1.0)  # the old burst is out of the window


# --- the Autoscaler with a fake client ------------------------------------------------------------


class FakeClient:
    """Records writes; deployment replicas answer GETs; ``gate`` (when set) blocks every call."""

    def __init__(self, replicas: int | None = 0) -> None:
        self.replicas = replicas
        self.calls: list[tuple[str, str, Any]] = []
        self.gate: asyncio.Event | None = None

    async def get(self, rt: Any, name: str, namespace: str | None = None) -> dict[str, Any]:
        self.calls.append(("get", rt.plural, name))
        if self.gate is not None:
            await self.gate.wait()
        if self.replicas is None:
            raise NotFound("no deployment")
        return {"spec": {"replicas": self.replicas}}

    async def patch(self, rt: Any, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> dict[str, Any]:
        assert patch_type == "merge"
        self.calls.append((f"patch/{subresource}", rt.plural, patch))
        if self.gate is not None:
            await self.gate.wait()
        if subresource == "scale":
            self.replicas = patch["spec"]["replicas"]
        return {}

    def writes(self, what: str) -> list[Any]:
        return [c[2] for c in self.calls if c[0] == what]


class Functions(dict[str, dict[str, Any]]):
    def keys(self) -> list[str]:  # type: ignore[override]
        return list(super().keys())


def function(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "add", "namespace": "default"}, "spec": spec or {},
            "status": {"image": "reg/minik8s-functions/default/add@sha256:00", **(status or {})}}


def make(client: FakeClient, fn: dict[str, Any], ready: int = 1, **params: Any) -> tuple[Autoscaler, FakeClock]:
    clock = FakeClock()
    scaler = Autoscaler(client, Functions({KEY: fn}), ready_count=lambda _k: ready,
                        params=ScaleParams(**params), clock=clock)
    return scaler, clock


async def test_scale_is_written_only_on_change_and_status_at_most_once_a_tick() -> None:
    client = FakeClient(replicas=0)
    scaler, clock = make(client, function())
    for _ in range(6):
        scaler.request_started(KEY)
    clock.advance(3)
    assert await scaler.tick_once() == {KEY: 3}
    clock.advance(2)
    assert await scaler.tick_once() == {KEY: 3}
    assert client.writes("patch/scale") == [{"spec": {"replicas": 3}}]
    statuses = client.writes("patch/status")
    assert statuses == [{"status": {"desiredScale": 3, "lastActiveTime": "2023-11-14T22:30:00Z"}}]
    assert await scaler.tick_once() == {KEY: 3}
    assert len(client.writes("patch/status")) == 1  # nothing changed: no write


async def test_idle_function_goes_to_zero_after_idle_timeout() -> None:
    client = FakeClient(replicas=1)
    scaler, clock = make(client, function({"idleTimeout": 10}))
    scaler.request_started(KEY)
    clock.advance(1)
    scaler.request_finished(KEY)
    await scaler.tick_once()
    clock.advance(9.5)
    assert await scaler.tick_once() == {KEY: 1}
    clock.advance(1)
    assert await scaler.tick_once() == {KEY: 0}
    assert client.writes("patch/scale")[-1] == {"spec": {"replicas": 0}}


async def test_unbuilt_functions_are_left_alone() -> None:
    client = FakeClient()
    fn = function()
    del fn["status"]["image"]
    scaler, _ = make(client, fn)
    assert await scaler.tick_once() == {}
    assert client.calls == []


async def test_concurrent_pokes_make_exactly_one_scale_write() -> None:
    client = FakeClient(replicas=0)
    client.gate = asyncio.Event()
    scaler, _ = make(client, function(), ready=0)
    pokes = [asyncio.create_task(scaler.poke(KEY)) for _ in range(20)]
    for _ in range(10):
        await asyncio.sleep(0)
    client.gate.set()
    await asyncio.wait_for(asyncio.gather(*pokes), 2)
    assert client.writes("patch/scale") == [{"spec": {"replicas": 1}}]
    assert len([c for c in client.calls if c[0] == "get"]) == 1
    await scaler.poke(KEY)  # known ≥ 1 now: no call at all
    assert len(client.calls) == 2


async def test_poke_does_not_write_when_the_deployment_already_runs() -> None:
    client = FakeClient(replicas=2)
    scaler, _ = make(client, function(), ready=0)
    await scaler.poke(KEY)
    assert client.writes("patch/scale") == []


async def test_restart_reads_status_so_it_neither_drops_to_zero_early_nor_thrashes() -> None:
    client = FakeClient(replicas=3)
    fn = function(status={"desiredScale": 3, "lastActiveTime": "2023-11-14T22:29:50Z"})  # 10 s before "now"
    scaler, clock = make(client, fn)
    scaler.restore(fn)
    # Empty windows look like no load; the recorded scale holds and the recorded activity counts.
    assert await scaler.tick_once() == {KEY: 3}
    assert client.writes("patch/scale") == []
    assert client.writes("patch/status") == []  # same desiredScale, same lastActiveTime
    clock.advance(49)  # 59 s since the recorded activity
    assert await scaler.tick_once() == {KEY: 3}
    clock.advance(2)  # 61 s: idle timeout reached
    assert await scaler.tick_once() == {KEY: 0}
    assert client.writes("patch/scale") == [{"spec": {"replicas": 0}}]


async def test_scale_down_delay_keeps_the_highest_recent_decision() -> None:
    client = FakeClient(replicas=0)
    scaler, clock = make(client, function({"idleTimeout": 5}), scale_down_delay=30)
    scaler.request_started(KEY)
    scaler.request_finished(KEY)
    assert await scaler.tick_once() == {KEY: 1}
    clock.advance(10)
    assert await scaler.tick_once() == {KEY: 1}  # idle, but within the delay
    clock.advance(25)
    assert await scaler.tick_once() == {KEY: 0}


async def test_a_new_function_never_called_stays_at_zero() -> None:
    client = FakeClient(replicas=0)
    scaler, clock = make(client, function())
    assert await scaler.tick_once() == {KEY: 0}
    clock.advance(5)
    assert await scaler.tick_once() == {KEY: 0}
    # (It may write 0 once to learn the scale it owns; never more.)
    assert all(w["spec"]["replicas"] == 0 for w in client.writes("patch/scale"))
    # Its first call makes it active: one instance until the idle timeout.
    scaler.request_started(KEY)
    assert await scaler.tick_once() == {KEY: 1}
