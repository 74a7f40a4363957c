"""apiserver.storage against a real etcd (the ``etcd`` / ``fresh_etcd`` fixtures)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from apiserver.storage import (
    KeyExists,
    KeyNotFound,
    RevisionCompacted,
    RevisionConflict,
    StorageUnavailable,
    Store,
    WatchEvent,
)
from minik8s.testing import EtcdProcess, free_port


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


async def next_event(events: AsyncIterator[WatchEvent], timeout: float = 10) -> WatchEvent:
    return await asyncio.wait_for(events.__anext__(), timeout)


def open_watches(store: Store) -> int:
    # aetcd keeps one callback per live etcd watch on its shared stream.
    watcher = store._client._watcher
    return len(watcher._callbacks) if watcher is not None else 0


@pytest.fixture()
def prefix() -> str:
    return f"/registry/t{uuid.uuid4().hex[:10]}/"


@pytest.fixture()
async def store(etcd: EtcdProcess) -> AsyncIterator[Store]:
    s = await Store.connect([etcd.endpoint], timeout=5)
    yield s
    await s.close()


async def test_create_get_list(store: Store, prefix: str) -> None:
    created = await store.create(prefix + "default/a", pod("a", x=1))
    assert created["metadata"]["name"] == "a" and rv(created) > 0
    assert await store.get(prefix + "default/a") == created
    # resourceVersion is not stored; the returned one is the key's mod revision.
    raw = await store.get_raw(prefix + "default/a")
    assert raw is not None and b"resourceVersion" not in raw and b" " not in raw

    with pytest.raises(KeyExists) as exc:
        await store.create(prefix + "default/a", pod("a", x=2))
    assert exc.value.current == created and exc.value.key == prefix + "default/a"

    await store.create(prefix + "default/c", pod("c"))
    await store.create(prefix + "default/b", pod("b"))
    items, list_rev = await store.list(prefix)
    assert [i["metadata"]["name"] for i in items] == ["a", "b", "c"]
    assert list_rev == await store.current_revision()
    assert all(rv(i) <= list_rev for i in items)

    with pytest.raises(KeyNotFound):
        await store.get(prefix + "default/zzz")
    assert await store.list(prefix + "nothing/") == ([], list_rev)


async def test_list_pages_at_one_revision(store: Store, prefix: str) -> None:
    for i in range(1203):             # more than two pages
        await store.put_raw(f"{prefix}k{i:05d}", b'{"metadata":{"name":"k%d"}}' % i)
    items, rev = await store.list(prefix)
    assert len(items) == 1203 and items[0]["metadata"]["name"] == "k0" and items[-1]["metadata"]["name"] == "k1202"
    await store.put_raw(f"{prefix}k99999", b'{"metadata":{}}')
    old, old_rev = await store.list(prefix, revision=rev)
    assert old_rev == rev and old == items


async def test_update_conflict_and_not_found(store: Store, prefix: str) -> None:
    key = prefix + "default/a"
    v1 = await store.create(key, pod("a", n=1))
    v2 = await store.update(key, pod("a", n=2), expected_rv=rv(v1))
    assert rv(v2) > rv(v1) and v2["spec"] == {"n": 2}

    with pytest.raises(RevisionConflict) as exc:
        await store.update(key, pod("a", n=3), expected_rv=rv(v1))
    assert exc.value.current == v2

    v3 = await store.update(key, {**pod("a", n=3), "metadata": {**v1["metadata"]}}, expected_rv=None)
    assert v3["spec"] == {"n": 3} and rv(v3) > rv(v2)       # a stale resourceVersion in the body is ignored

    with pytest.raises(KeyNotFound):
        await store.update(prefix + "default/missing", pod("missing"), expected_rv=None)
    with pytest.raises(KeyNotFound):
        await store.update(prefix + "default/missing", pod("missing"), expected_rv=5)


async def test_guaranteed_update_concurrent_incrementers(store: Store, prefix: str) -> None:
    key = prefix + "default/counter"
    await store.create(key, {"metadata": {"name": "counter"}, "count": 0})

    def incr(obj: dict[str, Any]) -> dict[str, Any]:
        obj["count"] += 1
        return obj

    async def worker(s: Store) -> None:
        for _ in range(25):
            await s.guaranteed_update(key, incr)

    # Eight incrementers sharing one store (the apiserver's case) ...
    await asyncio.wait_for(asyncio.gather(*(worker(store) for _ in range(8))), 60)
    assert (await store.get(key))["count"] == 200

    # ... and eight spread over two connections (two apiservers on one etcd), so that they really race.
    stores = [await Store.connect([store._client._host + ":" + str(store._client._port)], timeout=5)
              for _ in range(2)]
    try:
        await asyncio.wait_for(asyncio.gather(*(worker(s) for s in stores for _ in range(4))), 60)
    finally:
        for s in stores:
            await s.close()
    assert (await store.get(key))["count"] == 400


async def test_guaranteed_update_noop_async_and_errors(store: Store, prefix: str) -> None:
    key = prefix + "default/a"
    v1 = await store.create(key, pod("a", n=1))

    assert await store.guaranteed_update(key, lambda obj: None) == v1
    assert await store.guaranteed_update(key, lambda obj: obj) == v1          # unchanged: no write
    assert rv(await store.get(key)) == rv(v1)

    async def set_two(obj: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        obj["spec"]["n"] = 2
        return obj

    v2 = await store.guaranteed_update(key, set_two)
    assert v2["spec"] == {"n": 2} and rv(v2) > rv(v1)

    def boom(obj: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await store.guaranteed_update(key, boom)
    with pytest.raises(KeyNotFound):
        await store.guaranteed_update(prefix + "default/missing", lambda obj: obj)

    # The object handed to try_update is a copy: changing it and returning None writes nothing.
    def mutate_but_skip(obj: dict[str, Any]) -> None:
        obj["spec"]["n"] = 99

    assert (await store.guaranteed_update(key, mutate_but_skip))["spec"] == {"n": 2}


async def test_delete_with_expected_rv(store: Store, prefix: str) -> None:
    key = prefix + "default/a"
    v1 = await store.create(key, pod("a"))
    v2 = await store.update(key, pod("a", n=2), expected_rv=rv(v1))
    with pytest.raises(RevisionConflict) as exc:
        await store.delete(key, expected_rv=rv(v1))
    assert exc.value.current == v2
    gone = await store.delete(key, expected_rv=rv(v2))
    assert gone["spec"] == {"n": 2} and rv(gone) == await store.current_revision() > rv(v2)
    with pytest.raises(KeyNotFound):
        await store.delete(key)
    with pytest.raises(KeyNotFound):
        await store.get(key)
    await store.create(key, pod("a"))
    assert (await store.delete(key))["metadata"]["name"] == "a"       # unconditional


async def test_lease_expiry(store: Store, prefix: str) -> None:
    key = prefix + "default/event"
    created = await store.create(key, pod("event"), lease_ttl=1)
    events = store.watch(prefix, start_revision=rv(created) + 1)
    try:
        # An update without lease_ttl keeps the lease: the key still expires.
        await store.update(key, pod("event", n=2), expected_rv=rv(created))
        assert (await next_event(events)).type == "MODIFIED"
        deleted = await next_event(events, timeout=20)     # etcd rounds short TTLs up to ~2 s
        assert deleted.type == "DELETED" and deleted.object["spec"] == {"n": 2}
    finally:
        await events.aclose()
    with pytest.raises(KeyNotFound):
        await store.get(key)


async def test_guaranteed_update_keep_lease(store: Store, prefix: str) -> None:
    key = prefix + "default/kept"
    await store.create(key, pod("kept"), lease_ttl=60)
    await store.guaranteed_update(key, lambda o: {**o, "spec": {"n": 1}})
    kv = await store._get_kv(key)
    assert kv.lease != 0
    await store.guaranteed_update(key, lambda o: {**o, "spec": {"n": 2}}, keep_lease=False)
    kv = await store._get_kv(key)
    assert kv.lease == 0


async def test_raw_watch_with_prev_kv_and_cleanup(store: Store, prefix: str) -> None:
    start = await store.current_revision() + 1
    before = open_watches(store)
    events = store.watch(prefix, start_revision=start)
    key = prefix + "default/a"
    v1 = await store.create(key, pod("a", n=1))       # before the first __anext__: still seen (start_revision)
    v2 = await store.update(key, pod("a", n=2), expected_rv=rv(v1))
    await store.create(prefix.rstrip("/") + "x/other", pod("other"))   # outside the prefix
    gone = await store.delete(key)

    added = await next_event(events)
    assert (added.type, added.object, added.prev_object, added.revision, added.key) == ("ADDED", v1, None, rv(v1), key)
    modified = await next_event(events)
    assert (modified.type, modified.object, modified.prev_object) == ("MODIFIED", v2, v1)
    deleted = await next_event(events)
    assert deleted.type == "DELETED" and deleted.object == gone and deleted.prev_object == v2
    assert deleted.revision == rv(gone)
    assert open_watches(store) == before + 1
    await events.aclose()
    assert open_watches(store) == before

    # A consumer task cancelled while waiting also removes its etcd watch.
    watch2 = store.watch(prefix, start_revision=await store.current_revision() + 1)
    task = asyncio.create_task(next_event(watch2, timeout=30))
    deadline = time.monotonic() + 10
    while open_watches(store) != before + 1:
        assert time.monotonic() < deadline, "watch not opened"
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 10
    while open_watches(store) != before:
        assert time.monotonic() < deadline, "cancelled watch left open"
        await asyncio.sleep(0.01)


async def test_compaction(fresh_etcd: EtcdProcess, prefix: str) -> None:
    store = await Store.connect([fresh_etcd.endpoint], timeout=5)
    try:
        assert await store.compacted_revision() == 0
        revs = [rv(await store.create(f"{prefix}k{i}", pod(f"k{i}"))) for i in range(5)]
        await store.compact(revs[3])
        assert await store.compacted_revision() == revs[3]
        await store.compact(revs[1])                          # older than the last compaction: no-op
        with pytest.raises(RevisionCompacted) as exc:
            async for _ in store.watch(prefix, start_revision=revs[1]):
                pass
        assert exc.value.compacted_revision == revs[3]
        with pytest.raises(RevisionCompacted):
            await store.list(prefix, revision=revs[2])

        # A revision at the compaction point is still readable and watchable.
        items, _ = await store.list(prefix, revision=revs[3])
        assert len(items) == 4
        events = store.watch(prefix, start_revision=revs[3])
        try:
            assert (await next_event(events)).revision == revs[3]
            assert (await next_event(events)).revision == revs[4]
        finally:
            await events.aclose()

        # Another process learns the compacted revision exactly, and learns of a later compaction
        # only from an error.
        other = await Store.connect([fresh_etcd.endpoint], timeout=5)
        try:
            assert await other.compacted_revision() == revs[3]
            await store.compact(revs[4])
            assert await other.compacted_revision() == revs[3]
            with pytest.raises(RevisionCompacted) as exc2:
                await other.list(prefix, revision=revs[3])
            assert exc2.value.compacted_revision == revs[4]
            assert await other.compacted_revision() == revs[4]
        finally:
            await other.close()
    finally:
        await store.close()


async def test_unavailable_does_not_hang(fresh_etcd: EtcdProcess, prefix: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await Store.connect([f"127.0.0.1:{free_port()}"], timeout=2)
    assert time.monotonic() - t0 < 10

    store = await Store.connect([fresh_etcd.endpoint], timeout=2)
    try:
        await store.create(prefix + "a", pod("a"))
        events = store.watch(prefix, start_revision=await store.current_revision() + 1)
        waiting = asyncio.create_task(next_event(events, timeout=30))
        await asyncio.sleep(0.2)                  # let the watch reach etcd before stopping it
        fresh_etcd.stop()
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(store.get(prefix + "a"), 15)
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(waiting, 30)
        fresh_etcd.start()
        deadline = time.monotonic() + 30
        while True:                               # gRPC reconnects by itself
            try:
                assert (await store.get(prefix + "a"))["metadata"]["name"] == "a"
                break
            except StorageUnavailable:
                assert time.monotonic() < deadline, "no reconnect"
                await asyncio.sleep(0.1)
    finally:
        await store.close()
