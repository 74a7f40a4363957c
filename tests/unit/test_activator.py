"""The activator: instances from Endpoints, fewest-in-flight choice, holding while cold, probing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from serverless.activator import (
    Activator,
    HoldTimeout,
    Instance,
    QueueFull,
    ShuttingDown,
    SystemClock,
    endpoint_addresses,
)

pytestmark = pytest.mark.timeout(10)

KEY = "default/add"


class FakeClock:
    """Time stands still until the test calls :meth:`advance`; sleepers wake only then."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, fut))
        await fut

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, fut in list(self._sleepers):
            if deadline <= self.now and not fut.done():
                fut.set_result(None)
        self._sleepers = [(d, f) for d, f in self._sleepers if not f.done()]


def endpoints(ready: Sequence[str] = (), not_ready: Sequence[str] = (), port: int = 8080) -> dict[str, Any]:
    subset: dict[str, Any] = {"ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
    if ready:
        subset["addresses"] = [{"ip": ip, "targetRef": {"kind": "Pod", "name": f"pod-{ip}"}} for ip in ready]
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip, "targetRef": {"kind": "Pod", "name": f"pod-{ip}"}}
                                       for ip in not_ready]
    return {"metadata": {"name": "add", "namespace": "default"}, "subsets": [subset]}


async def never_ready(_: Instance) -> bool:
    return False


async def settle(rounds: int = 20) -> None:
    """Let every runnable task run (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def test_endpoint_addresses_reads_ready_and_not_ready() -> None:
    ready, not_ready = endpoint_addresses(endpoints(["10.0.0.1"], ["10.0.0.2"], port=9000))
    assert ready == {"10.0.0.1": (9000, "pod-10.0.0.1")}
    assert not_ready == {"10.0.0.2": (9000, "pod-10.0.0.2")}


async def test_warm_acquire_picks_the_instance_with_fewest_in_flight() -> None:
    act = Activator(prober=never_ready, clock=FakeClock())
    act.update(KEY, endpoints(["10.0.0.1", "10.0.0.2"]))
    a = await act.acquire(KEY, 1)
    b = await act.acquire(KEY, 1)
    assert {a.ip, b.ip} == {"10.0.0.1", "10.0.0.2"}
    act.release(a)
    c = await act.acquire(KEY, 1)
    assert c is a  # a has 0 in flight, b has 1
    assert (a.in_flight, b.in_flight) == (1, 1)
    assert a.pod == f"pod-{a.ip}"


async def test_held_request_is_released_by_the_endpoints_event_not_by_time() -> None:
    clock = FakeClock()
    colds: list[str] = []
    act = Activator(prober=never_ready, clock=clock, on_cold=colds.append)
    held = [asyncio.create_task(act.acquire(KEY, 60)) for _ in range(3)]
    await settle()
    # Nothing completes before the event, and time never moves in this test.
    assert not any(t.done() for t in held)
    assert act.held_count(KEY) == 3
    assert colds == [KEY, KEY, KEY]  # once per held request; the autoscaler's poke is single-flight
    act.update(KEY, endpoints(not_ready=["10.0.0.9"]))  # known IP, not ready: still held
    await settle()
    assert not any(t.done() for t in held)
    act.update(KEY, endpoints(["10.0.0.9"]))
    got = await asyncio.wait_for(asyncio.gather(*held), 1)
    assert [i.ip for i in got] == ["10.0.0.9"] * 3
    assert got[0].in_flight == 3
    assert clock.now == 1000.0
    assert act.held_count(KEY) == 0


async def test_held_request_times_out_on_the_clock() -> None:
    clock = FakeClock()
    act = Activator(prober=never_ready, clock=clock)
    task = asyncio.create_task(act.acquire(KEY, 5))
    await settle()
    clock.advance(4.9)
    await settle()
    assert not task.done()
    clock.advance(0.2)
    with pytest.raises(HoldTimeout):
        await asyncio.wait_for(task, 1)
    assert act.held_count(KEY) == 0
    # A late instance is not counted for the request that gave up.
    act.update(KEY, endpoints(["10.0.0.1"]))
    assert act.instances(KEY)[0].in_flight == 0


async def test_a_full_hold_queue_is_refused_at_once() -> None:
    act = Activator(prober=never_ready, clock=FakeClock(), queue_size=2)
    held = [asyncio.create_task(act.acquire(KEY, 60)) for _ in range(2)]
    await settle()
    with pytest.raises(QueueFull):
        await act.acquire(KEY, 60)
    for t in held:
        t.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    assert act.held_count(KEY) == 0


async def test_a_cancelled_held_request_takes_nothing() -> None:
    act = Activator(prober=never_ready, clock=FakeClock())
    task = asyncio.create_task(act.acquire(KEY, 60))
    await settle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    act.update(KEY, endpoints(["10.0.0.1"]))
    assert act.instances(KEY)[0].in_flight == 0


async def test_an_ip_that_leaves_the_endpoints_is_never_picked_again() -> None:
    act = Activator(prober=never_ready, clock=FakeClock())
    act.update(KEY, endpoints(["10.0.0.1", "10.0.0.2"]))
    first = await act.acquire(KEY, 1)
    gone = first.ip
    act.update(KEY, endpoints([ip for ip in ("10.0.0.1", "10.0.0.2") if ip != gone]))
    assert first.removed
    for _ in range(5):
        assert (await act.acquire(KEY, 1)).ip != gone
    act.release(first)  # a call already on the removed instance still ends normally
    act.update(KEY, endpoints())
    assert act.ready_count(KEY) == 0


async def test_a_not_ready_ip_is_probed_until_it_answers() -> None:
    answers = iter([False, False, True])
    probed: list[str] = []

    async def prober(inst: Instance) -> bool:
        probed.append(inst.ip)
        return next(answers)

    act = Activator(prober=prober, clock=SystemClock(), probe_period=0.001)
    task = asyncio.create_task(act.acquire(KEY, 5))
    act.update(KEY, endpoints(not_ready=["10.0.0.3"]))
    inst = await asyncio.wait_for(task, 2)
    assert inst.ip == "10.0.0.3" and inst.ready
    assert probed == ["10.0.0.3"] * 3
    # The kubelet catches up later; the instance stays ready and no new probe starts.
    act.update(KEY, endpoints(["10.0.0.3"]))
    assert act.ready_count(KEY) == 1
    await act.stop()


async def test_probing_stops_when_the_ip_leaves() -> None:
    clock = FakeClock()
    calls = 0

    async def prober(_: Instance) -> bool:
        nonlocal calls
        calls += 1
        return False

    act = Activator(prober=prober, clock=clock)
    act.update(KEY, endpoints(not_ready=["10.0.0.4"]))
    act.update(KEY, endpoints(not_ready=["10.0.0.4"]))  # no second loop for the same IP
    await settle()
    clock.advance(0.01)
    await settle()
    assert calls == 2
    act.update(KEY, endpoints())
    await settle()
    clock.advance(1)
    await settle()
    assert calls == 2
    assert act.instances(KEY) == []


async def test_a_ready_instance_that_fails_readiness_is_demoted() -> None:
    clock = FakeClock()
    act = Activator(prober=never_ready, clock=clock)
    act.update(KEY, endpoints(["10.0.0.5"]))
    assert act.ready_count(KEY) == 1
    act.update(KEY, endpoints(not_ready=["10.0.0.5"]))
    assert act.ready_count(KEY) == 0
    await act.stop()


async def test_an_unreachable_instance_is_set_aside_and_probed() -> None:
    act = Activator(prober=never_ready, clock=FakeClock())
    act.update(KEY, endpoints(["10.0.0.6", "10.0.0.7"]))
    bad = await act.acquire(KEY, 1)
    act.release(bad)
    act.mark_unreachable(bad)
    assert act.ready_count(KEY) == 1
    assert (await act.acquire(KEY, 1)).ip != bad.ip
    await act.stop()


async def test_an_async_cold_callback_runs_as_a_task() -> None:
    poked = asyncio.Event()

    async def poke(key: str) -> None:
        assert key == KEY
        poked.set()

    act = Activator(prober=never_ready, clock=FakeClock(), on_cold=poke)
    task = asyncio.create_task(act.acquire(KEY, 60))
    await asyncio.wait_for(poked.wait(), 1)
    act.update(KEY, endpoints(["10.0.0.8"]))
    assert (await asyncio.wait_for(task, 1)).ip == "10.0.0.8"


async def test_shut_down_ends_held_requests_at_once_and_refuses_new_holds() -> None:
    act = Activator(prober=never_ready, clock=FakeClock())
    held = asyncio.ensure_future(act.acquire(KEY, 60))
    await settle()
    assert not held.done()
    act.shut_down()
    await settle()
    assert held.done() and isinstance(held.exception(), ShuttingDown)
    with pytest.raises(ShuttingDown):
        await act.acquire(KEY, 60)
    # A warm instance still serves calls already on their way.
    act.update(KEY, endpoints(["10.0.0.1"]))
    assert (await act.acquire(KEY, 1)).ip == "10.0.0.1"
