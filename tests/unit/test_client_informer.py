"""The informer against a scripted fake list/watch: cache, handlers, re-list on Gone, back-off, resync."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator

import pytest

from minik8s.api.registry import lookup
from minik8s.client.backoff import Backoff
from minik8s.client.informer import Indexer, Informer, object_key
from minik8s.errors import ConnectionFailed, Gone

pytestmark = pytest.mark.timeout(10)
PODS = lookup("pods")


def pod(name: str, rv: str, ns: str = "default", node: str = "") -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv}, "spec": {"nodeName": node}}


class FakeListWatcher:
    """``lists`` are answered in order; ``watches`` is a list of scripts (events, then an exception or end)."""

    def __init__(self, lists, watches) -> None:
        self.lists = list(lists)
        self.watches = list(watches)
        self.list_calls = 0
        self.watch_rvs: list[str | None] = []
        self.idle = asyncio.Event()

    async def list(self, rt, namespace=None, *, label_selector=None, field_selector=None):
        self.list_calls += 1
        result = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
        if isinstance(result, Exception):
            raise result
        items, rv = result
        return copy.deepcopy(items), rv

    async def watch(self, rt, namespace=None, *, resource_version=None, label_selector=None, field_selector=None,
                    timeout_seconds=None, table=False) -> AsyncIterator[tuple[str, dict]]:
        self.watch_rvs.append(resource_version)
        if not self.watches:
            self.idle.set()
            await asyncio.Event().wait()  # block like a quiet stream
        script = self.watches.pop(0)
        for step in script:
            if isinstance(step, Exception):
                raise step
            yield step[0], copy.deepcopy(step[1])


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add(self, obj):
        self.calls.append(("add", obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

    def update(self, old, new):
        self.calls.append(("update", new["metadata"]["name"], old["metadata"]["resourceVersion"],
                           new["metadata"]["resourceVersion"]))

    def delete(self, obj):
        self.calls.append(("delete", obj["metadata"]["name"]))


def fast_backoff() -> Backoff:
    return Backoff(initial=0.001, cap=0.002)


async def run_until_idle(informer: Informer, fake: FakeListWatcher) -> None:
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(fake.idle.wait(), 5)
    informer.stop()
    await asyncio.wait_for(task, 5)


async def test_list_then_watch_fills_cache_and_calls_handlers():
    fake = FakeListWatcher([([pod("a", "1")], "10")], [[
        ("ADDED", pod("b", "11")),
        ("MODIFIED", pod("a", "12")),
        ("BOOKMARK", {"metadata": {"resourceVersion": "13"}}),
        ("DELETED", pod("b", "14")),
    ]])
    informer = Informer(fake, PODS, backoff=fast_backoff())
    rec = Recorder()
    informer.add_handler(on_add=rec.add, on_update=rec.update, on_delete=rec.delete)
    await run_until_idle(informer, fake)
    assert rec.calls == [("add", "a", "1"), ("add", "b", "11"), ("update", "a", "1", "12"), ("delete", "b")]
    assert informer.indexer.keys() == ["default/a"]
    assert fake.watch_rvs == ["10", "14"]  # re-watch continues from the last event
    assert informer.has_synced()


async def test_gone_relists_and_fires_the_differences():
    fake = FakeListWatcher(
        [([pod("a", "1"), pod("b", "2")], "10"), ([pod("a", "1"), pod("b", "20"), pod("c", "21")], "30")],
        [[Gone("too old")]])
    informer = Informer(fake, PODS, backoff=fast_backoff())
    rec = Recorder()
    informer.add_handler(on_add=rec.add, on_update=rec.update, on_delete=rec.delete)
    fake.lists[1][0].remove(fake.lists[1][0][0])  # "a" disappeared while we were away
    await run_until_idle(informer, fake)
    assert fake.list_calls == 2 and informer.relists == 2
    assert rec.calls[2:] == [("delete", "a"), ("update", "b", "2", "20"), ("add", "c", "21")]
    assert sorted(informer.indexer.keys()) == ["default/b", "default/c"]
    assert fake.watch_rvs == ["10", "30"]


async def test_errors_back_off_and_watch_again_from_the_last_version():
    fake = FakeListWatcher([([], "5")], [
        [("ADDED", pod("a", "6")), ConnectionFailed("reset")],
        [ConnectionFailed("refused")],
    ])
    informer = Informer(fake, PODS, backoff=fast_backoff())
    rec = Recorder()
    informer.add_handler(on_add=rec.add)
    await run_until_idle(informer, fake)
    assert fake.list_calls == 1
    assert fake.watch_rvs == ["5", "6", "6"]
    assert rec.calls == [("add", "a", "6")]


async def test_failed_list_is_retried():
    fake = FakeListWatcher([ConnectionFailed("down"), ([pod("a", "1")], "2")], [])
    informer = Informer(fake, PODS, backoff=fast_backoff())
    task = asyncio.create_task(informer.run())
    assert await informer.wait_synced(5)
    await asyncio.wait_for(fake.idle.wait(), 5)
    informer.stop()
    await task
    assert fake.list_calls == 2


async def test_wait_synced_times_out():
    informer = Informer(FakeListWatcher([([], "1")], []), PODS)
    assert await informer.wait_synced(0.01) is False


async def test_handler_errors_do_not_stop_the_informer_and_async_handlers_work():
    fake = FakeListWatcher([([pod("a", "1"), pod("b", "2")], "3")], [])
    informer = Informer(fake, PODS)
    seen: list[str] = []

    def broken(obj):
        raise RuntimeError("boom")

    async def good(obj):
        seen.append(obj["metadata"]["name"])

    informer.add_handler(on_add=broken)
    informer.add_handler(on_add=good)
    await run_until_idle(informer, fake)
    assert seen == ["a", "b"]


async def test_resync_redelivers_cached_objects_as_updates():
    fake = FakeListWatcher([([pod("a", "1")], "3")], [])
    informer = Informer(fake, PODS, resync_period=0.01)
    updates: list[tuple[str, str]] = []
    got_two = asyncio.Event()

    def on_update(old, new):
        assert old is new
        updates.append((new["metadata"]["name"], new["metadata"]["resourceVersion"]))
        if len(updates) >= 2:
            got_two.set()

    informer.add_handler(on_update=on_update)
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(got_two.wait(), 5)
    informer.stop()
    await task
    assert updates[:2] == [("a", "1"), ("a", "1")]


async def test_handler_added_after_sync_gets_adds_for_the_cache():
    fake = FakeListWatcher([([pod("a", "1")], "3")], [])
    informer = Informer(fake, PODS)
    task = asyncio.create_task(informer.run())
    await informer.wait_synced(5)
    got = asyncio.Event()
    informer.add_handler(on_add=lambda obj: got.set())
    await asyncio.wait_for(got.wait(), 5)
    informer.stop()
    await task


async def test_run_is_cancellable():
    fake = FakeListWatcher([([], "1")], [])
    informer = Informer(fake, PODS)
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(fake.idle.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_indexer_indexes_follow_changes():
    idx = Indexer()
    idx.put(pod("a", "1", node="n1"))
    idx.add_index("node", lambda o: [o["spec"]["nodeName"]] if o["spec"]["nodeName"] else [])
    idx.put(pod("b", "2", node="n1"))
    idx.put(pod("c", "3", ns="other"))
    assert [o["metadata"]["name"] for o in idx.by_index("node", "n1")] == ["a", "b"]
    idx.put(pod("a", "4", node="n2"))
    assert [o["metadata"]["name"] for o in idx.by_index("node", "n1")] == ["b"]
    assert [o["metadata"]["name"] for o in idx.by_index("node", "n2")] == ["a"]
    idx.remove("default/b")
    assert idx.by_index("node", "n1") == []
    assert sorted(idx.keys()) == ["default/a", "other/c"]
    assert idx.get("other/c")["metadata"]["resourceVersion"] == "3"
    assert len(idx.list()) == 2 and "default/a" in idx
    with pytest.raises(KeyError):
        idx.by_index("nope", "x")


def test_object_keys():
    assert object_key({"metadata": {"name": "n", "namespace": "ns"}}) == "ns/n"
    assert object_key({"metadata": {"name": "node1"}}) == "node1"
