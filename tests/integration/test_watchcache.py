"""apiserver.watchcache against a real etcd: exact resumption, restart, compaction, fan-out, slow watchers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from apiserver.storage import RevisionCompacted, Store, WatchEvent
from apiserver.watchcache import SubscriberExpired, WatchCache
from minik8s.testing import EtcdProcess


def obj(name: str, n: int = 0) -> dict[str, Any]:
    return {"kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"n": str(n)}}


def rv(o: dict[str, Any]) -> int:
    return int(o["metadata"]["resourceVersion"])


async def take(events: AsyncIterator[WatchEvent], count: int, timeout: float = 10) -> list[WatchEvent]:
    async def collect() -> list[WatchEvent]:
        return [await events.__anext__() for _ in range(count)]
    return await asyncio.wait_for(collect(), timeout)


def summary(events: list[WatchEvent]) -> list[tuple[str, str, int]]:
    return [(e.type, e.object["metadata"]["name"], e.revision) for e in events]


def open_watches(store: Store) -> int:
    watcher = store._client._watcher
    return len(watcher._callbacks) if watcher is not None else 0


async def until(predicate: Any, timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Writer:
    """Makes changes under a prefix and remembers them as the events a watcher must see."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store, self.prefix = store, prefix
        self.log: list[tuple[str, str, int]] = []
        self.n = 0

    async def churn(self, count: int) -> None:
        """``count`` changes: creates, updates and deletes over a few names."""
        for _ in range(count):
            self.n += 1
            name = f"o{self.n % 4}"
            key = self.prefix + "default/" + name
            try:
                cur = await self.store.get(key)
            except Exception:
                cur = None
            if cur is None:
                o = await self.store.create(key, obj(name, self.n))
                self.log.append(("ADDED", name, rv(o)))
            elif self.n % 3 == 0:
                o = await self.store.delete(key)
                self.log.append(("DELETED", name, rv(o)))
            else:
                o = await self.store.update(key, obj(name, self.n), expected_rv=rv(cur))
                self.log.append(("MODIFIED", name, rv(o)))

    def after(self, revision: int) -> list[tuple[str, str, int]]:
        return [e for e in self.log if e[2] > revision]


@pytest.fixture()
def prefix() -> str:
    return f"/registry/w{uuid.uuid4().hex[:10]}/"


@pytest.fixture()
async def store(etcd: EtcdProcess) -> AsyncIterator[Store]:
    s = await Store.connect([etcd.endpoint], timeout=5)
    yield s
    await s.close()


@pytest.fixture()
async def started() -> AsyncIterator[list[WatchCache]]:
    """Caches a test started; stopped at the end."""
    caches: list[WatchCache] = []
    yield caches
    for c in caches:
        await c.stop()


async def new_cache(store: Store, prefix: str, started: list[WatchCache], **kw: Any) -> WatchCache:
    cache = WatchCache(store, prefix, **kw)
    await cache.start()
    started.append(cache)
    return cache


async def test_added_for_existing_then_live(store: Store, prefix: str, started: list[WatchCache]) -> None:
    for name in ("c", "a", "b"):
        await store.create(prefix + "default/" + name, obj(name))
    cache = await new_cache(store, prefix, started)
    items, rev = cache.snapshot()
    assert [i["metadata"]["name"] for i in items] == ["a", "b", "c"]
    assert rev >= max(rv(i) for i in items)

    watch = cache.watch(None)
    try:
        first = await take(watch, 3)
        assert [(e.type, e.object["metadata"]["name"], e.revision) for e in first] == [
            ("ADDED", "a", rev), ("ADDED", "b", rev), ("ADDED", "c", rev)]
        d = await store.create(prefix + "default/d", obj("d"))
        b = await store.update(prefix + "default/b", obj("b", 2), expected_rv=None)
        (ev_d, ev_b) = await take(watch, 2)
        assert (ev_d.type, ev_d.object) == ("ADDED", d)
        assert (ev_b.type, ev_b.object, ev_b.prev_object["data"]) == ("MODIFIED", b, {"n": "0"})
    finally:
        await watch.aclose()
    assert cache.subscribers == 0


async def test_resume_inside_and_outside_window(store: Store, prefix: str, started: list[WatchCache]) -> None:
    writer = Writer(store, prefix)
    cache = await new_cache(store, prefix, started, window=8)
    await writer.churn(30)
    await cache.wait_for_revision(writer.log[-1][2], 10)
    assert cache.oldest_revision > writer.log[0][2]

    # Inside the window: straight from memory.
    inside = writer.log[-5][2]
    watch = cache.watch(inside)
    try:
        assert summary(await take(watch, 4)) == writer.after(inside)
    finally:
        await watch.aclose()

    # Outside the window (not compacted): etcd's history, exactly, then the ring, then live.
    baseline = open_watches(store)
    outside = writer.log[2][2]
    watch = cache.watch(outside)
    try:
        expected = writer.after(outside)
        got = await take(watch, len(expected))
        assert summary(got) == expected
        for _ in range(3):                   # more than the window in all: the catch-up hands over to the ring
            await writer.churn(4)
            assert summary(await take(watch, 4)) == writer.log[-4:]
        await until(lambda: open_watches(store) == baseline, what="the catch-up watch to close")
    finally:
        await watch.aclose()


async def test_restart_resumes_exactly(etcd: EtcdProcess, prefix: str, started: list[WatchCache]) -> None:
    store1 = await Store.connect([etcd.endpoint], timeout=5)
    writer = Writer(store1, prefix)
    cache1 = WatchCache(store1, prefix)
    await cache1.start()
    await writer.churn(10)
    watch = cache1.watch(writer.log[2][2])
    seen = summary(await take(watch, 7))
    assert seen == writer.log[3:]
    last_seen = seen[-1][2]
    await watch.aclose()
    await cache1.stop()
    await store1.close()                    # the apiserver "restarts"

    store2 = await Store.connect([etcd.endpoint], timeout=5)
    try:
        writer.store = store2
        await writer.churn(15)
        # A fresh cache replays recent history into memory; a tiny one serves the client from etcd.
        for window in (10000, 3):
            cache2 = await new_cache(store2, prefix, started, window=window)
            watch = cache2.watch(last_seen)      # the rv the client saw before the restart
            try:
                expected = writer.after(last_seen)
                assert summary(await take(watch, len(expected))) == expected
                await writer.churn(2)
                assert summary(await take(watch, 2)) == writer.log[-2:]
            finally:
                await watch.aclose()
    finally:
        await store2.close()


async def test_compacted_revision_is_gone(fresh_etcd: EtcdProcess, prefix: str, started: list[WatchCache]) -> None:
    store = await Store.connect([fresh_etcd.endpoint], timeout=5)
    try:
        writer = Writer(store, prefix)
        await writer.churn(20)
        await store.compact(writer.log[10][2])
        cache = await new_cache(store, prefix, started, window=4)
        with pytest.raises(RevisionCompacted):
            await take(cache.watch(writer.log[2][2]), 1)
        # The oldest still-kept revision works, exactly.
        from_rv = writer.log[10][2]
        assert summary(await take(cache.watch(from_rv), 9)) == writer.after(from_rv)
    finally:
        for c in started:
            await c.stop()
        started.clear()
        await store.close()


async def test_quiet_prefix_and_future_revision(store: Store, prefix: str, started: list[WatchCache]) -> None:
    await store.create(prefix + "default/a", obj("a"))
    cache = await new_cache(store, prefix, started)
    before = cache.revision
    # Writes elsewhere move the store revision; a quiet prefix is still known current (no timeout).
    other = await store.create(prefix.rstrip("/") + "-other/x", obj("x"))
    await asyncio.wait_for(cache.wait_for_revision(rv(other), 5), 5)
    assert cache.revision >= rv(other) > before
    assert cache.snapshot()[1] >= rv(other)

    # List-after-write: the write is in the snapshot once wait_for_revision returns.
    b = await store.create(prefix + "default/b", obj("b"))
    await cache.wait_for_revision(rv(b), 5)
    assert [i["metadata"]["name"] for i in cache.snapshot()[0]] == ["a", "b"]

    # A resourceVersion newer than the cache: only later events.
    future = rv(await store.create(prefix.rstrip("/") + "-other/y", obj("y")))
    watch = cache.watch(future)
    try:
        c = await store.create(prefix + "default/c", obj("c"))
        (ev,) = await take(watch, 1)
        assert (ev.type, ev.object) == ("ADDED", c)
    finally:
        await watch.aclose()

    with pytest.raises(TimeoutError):
        await cache.wait_for_revision(await store.current_revision() + 1000, 0.3)


async def test_thousand_subscribers(store: Store, prefix: str, started: list[WatchCache]) -> None:
    cache = await new_cache(store, prefix, started)
    start = cache.revision
    watches: list[AsyncGenerator[WatchEvent, None]] = [cache.watch(start) for _ in range(1000)]
    tasks = [asyncio.create_task(take(w, 1, timeout=60)) for w in watches]
    await until(lambda: cache.subscribers == 1000, what="1000 subscribers")
    created = await store.create(prefix + "default/a", obj("a"))
    try:
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert all(r[0].object is results[0][0].object for r in results)   # one shared object
        assert results[0][0].object == created
    finally:
        for w in watches:
            await w.aclose()
    assert cache.subscribers == 0


async def test_slow_subscriber_is_cut_off(store: Store, prefix: str, started: list[WatchCache]) -> None:
    cache = await new_cache(store, prefix, started, window=10)
    writer = Writer(store, prefix)
    start = cache.revision
    slow, fast = cache.watch(start), cache.watch(start)
    try:
        await writer.churn(1)
        assert summary(await take(slow, 1)) == writer.log[:1]          # then it stops reading
        fast_seen = summary(await take(fast, 1))
        for _ in range(3):
            await writer.churn(10)
            fast_seen += summary(await take(fast, 10))                  # the fast one keeps up
        assert fast_seen == writer.log
        with pytest.raises(SubscriberExpired):
            await take(slow, 1)
    finally:
        await slow.aclose()
        await fast.aclose()


async def test_survives_etcd_restart(fresh_etcd: EtcdProcess, prefix: str, started: list[WatchCache]) -> None:
    store = await Store.connect([fresh_etcd.endpoint], timeout=2)
    try:
        writer = Writer(store, prefix)
        cache = await new_cache(store, prefix, started)
        watch = cache.watch(cache.revision)
        await writer.churn(3)
        got = summary(await take(watch, 3))
        fresh_etcd.stop()
        fresh_etcd.start()
        deadline = time.monotonic() + 30
        while True:                          # the store reconnects by itself
            try:
                await writer.churn(3)
                break
            except Exception:
                assert time.monotonic() < deadline, "etcd did not come back"
                await asyncio.sleep(0.1)
        got += summary(await take(watch, 3, timeout=30))
        assert got == writer.log                  # nothing lost, nothing twice
        await watch.aclose()
    finally:
        for c in started:
            await c.stop()
        started.clear()
        await store.close()


async def test_exact_bookmarks(store: Store, prefix: str, started: list[WatchCache]) -> None:
    cache = await new_cache(store, prefix, started)
    a = await store.create(prefix + "default/a", obj("a"))
    watch = cache.watch(rv(a) - 1, bookmark_after=0.05)
    try:
        seen = await take(watch, 1)
        while seen[-1].type == "BOOKMARK":       # the cache may not have the event yet: rv stays behind it
            assert seen[-1].revision < rv(a)
            seen += await take(watch, 1)
        assert seen[-1].type == "ADDED"
        (mark,) = await take(watch, 1)
        assert mark.type == "BOOKMARK"
        assert mark.revision == int(mark.object["metadata"]["resourceVersion"]) >= rv(a)
        other = await store.create(prefix.rstrip("/") + "-other/x", obj("x"))
        await cache.wait_for_revision(rv(other), 5)            # a quiet prefix moves on too
        (mark2,) = await take(watch, 1)
        while mark2.revision < rv(other):
            (mark2,) = await take(watch, 1)
        assert mark2.type == "BOOKMARK"
    finally:
        await watch.aclose()
