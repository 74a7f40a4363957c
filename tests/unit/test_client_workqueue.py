"""The keyed work queue: dedup, no concurrent processing of one key, rate-limited requeue, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from minik8s.client.backoff import Backoff
from minik8s.client.workqueue import ItemExponentialRateLimiter, QueueShutDown, WorkQueue, run_worker

pytestmark = pytest.mark.timeout(10)


async def test_keys_are_deduplicated_while_queued():
    q = WorkQueue()
    for key in ("a", "b", "a", "a"):
        q.add(key)
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"


async def test_a_key_being_processed_is_not_handed_out_again_until_done():
    q = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")  # re-added while processing
    assert len(q) == 0
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not second.done()
    q.done(key)
    assert await asyncio.wait_for(second, 1) == "a"
    q.done("a")
    assert len(q) == 0


async def test_done_without_readd_does_not_requeue():
    q = WorkQueue()
    q.add("a")
    q.done(await q.get())
    assert len(q) == 0


async def test_get_waits_for_add():
    q = WorkQueue()
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("k")
    assert await asyncio.wait_for(waiter, 1) == "k"


async def test_cancelled_getter_passes_its_wakeup_on():
    q = WorkQueue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("k")
    first.cancel()  # woken for "k" but cancelled before it could take it
    await asyncio.sleep(0)
    assert await asyncio.wait_for(second, 1) == "k"


def test_rate_limiter_doubles_and_forgets():
    rl = ItemExponentialRateLimiter(base=0.01, cap=0.05)
    assert [rl.when("a") for _ in range(4)] == [0.01, 0.02, 0.04, 0.05]
    assert rl.num_requeues("a") == 4
    rl.forget("a")
    assert rl.when("a") == 0.01


async def test_add_rate_limited_requeues_after_the_delay():
    q = WorkQueue(rate_limiter=ItemExponentialRateLimiter(base=0.02, cap=1))
    loop = asyncio.get_running_loop()
    start = loop.time()
    q.add_rate_limited("a")
    assert len(q) == 0
    assert await asyncio.wait_for(q.get(), 1) == "a"
    assert loop.time() - start >= 0.015
    assert q.num_requeues("a") == 1
    q.forget("a")
    assert q.num_requeues("a") == 0


async def test_add_after_keeps_the_earliest():
    q = WorkQueue()
    q.add_after("a", 5)
    q.add_after("a", 0.01)
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_shutdown_drains_then_raises():
    q = WorkQueue()
    q.add("a")
    q.add_after("b", 0.01)
    waiter_q = WorkQueue()
    waiter = asyncio.create_task(waiter_q.get())
    await asyncio.sleep(0)
    q.shut_down()
    waiter_q.shut_down()
    assert await q.get() == "a"
    with pytest.raises(QueueShutDown):
        await q.get()
    with pytest.raises(QueueShutDown):
        await waiter
    q.add("c")
    assert len(q) == 0


async def test_run_worker_forgets_on_success_and_requeues_on_failure():
    q = WorkQueue(rate_limiter=ItemExponentialRateLimiter(base=0.001, cap=0.01))
    calls: list[str] = []

    async def sync(key):
        calls.append(key)
        if calls.count(key) < 3:
            raise RuntimeError("not yet")
        if key == "a":
            q.shut_down()

    q.add("a")
    await asyncio.wait_for(run_worker(q, sync), 5)
    assert calls == ["a", "a", "a"]
    assert q.num_requeues("a") == 0


async def test_two_workers_never_process_one_key_at_once():
    q = WorkQueue()
    active: set[str] = set()
    overlaps = 0
    processed = 0

    async def sync(key):
        nonlocal overlaps, processed
        if key in active:
            overlaps += 1
        active.add(key)
        await asyncio.sleep(0.01)
        q.add(key) if processed < 3 else None  # re-add while processing
        active.discard(key)
        processed += 1

    workers = [asyncio.create_task(run_worker(q, sync)) for _ in range(2)]
    q.add("k")
    for _ in range(100):
        if processed >= 4 and len(q) == 0 and not active:
            break
        await asyncio.sleep(0.01)
    q.shut_down()
    await asyncio.wait_for(asyncio.gather(*workers), 2)
    assert overlaps == 0
    assert processed >= 4


def test_backoff_is_capped_and_jittered():
    b = Backoff(initial=1, cap=8, jitter=0.5)
    delays = [b.next() for _ in range(6)]
    assert 1 <= delays[0] <= 1.5 and 2 <= delays[1] <= 3
    assert all(d <= 8 for d in delays) and delays[-1] == 8
    b.reset()
    assert b.next() <= 1.5
