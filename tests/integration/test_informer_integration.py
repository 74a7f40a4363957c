"""Informers against the real apiserver (real etcd): list-then-watch, handler calls, re-list after Gone."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid

import pytest

from minik8s.api.registry import lookup
from minik8s.client.backoff import Backoff
from minik8s.client.informer import Informer
from minik8s.client.rest import AsyncApiClient
from minik8s.testing import ApiserverProcess

pytestmark = pytest.mark.timeout(90)
PODS = lookup("pods")
NAMESPACES = lookup("namespaces")


def pod(name: str, ns: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"v": "1"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


class Seen:
    """Handler calls as (what, name) in order, with a way to wait for one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def handlers(self) -> dict:
        return {"on_add": lambda o: self._note("add", o),
                "on_update": lambda old, new: self._note("update", new) if old is not new else None,
                "on_delete": lambda o: self._note("delete", o)}

    def _note(self, what: str, obj: dict) -> None:
        self.calls.append((what, obj["metadata"]["name"]))
        self._changed.set()

    async def wait_for(self, call: tuple[str, str], timeout: float = 10) -> None:
        async def loop() -> None:
            while call not in self.calls:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(loop(), timeout)


async def new_namespace(client: AsyncApiClient) -> str:
    ns = f"inf-{uuid.uuid4().hex[:8]}"
    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    return ns


async def test_list_then_watch_delivers_adds_updates_deletes(apiserver):
    async with AsyncApiClient(apiserver.url) as client:
        ns = await new_namespace(client)
        await client.create(pod("before", ns))
        informer = Informer(client, PODS, namespace=ns)
        seen = Seen()
        informer.add_handler(**seen.handlers())
        task = asyncio.create_task(informer.run())
        try:
            assert await informer.wait_synced(10)
            assert seen.calls == [("add", "before")]
            assert informer.indexer.keys() == [f"{ns}/before"]

            await client.create(pod("after", ns))
            await seen.wait_for(("add", "after"))
            await client.update_with_retry(PODS, "after", ns, lambda o: o["metadata"]["labels"].update(v="2"))
            await seen.wait_for(("update", "after"))
            assert informer.indexer.get(f"{ns}/after")["metadata"]["labels"]["v"] == "2"
            await client.delete(PODS, "before", ns, grace_period_seconds=0)
            await seen.wait_for(("delete", "before"))
            assert informer.indexer.keys() == [f"{ns}/after"]
        finally:
            informer.stop()
            await asyncio.wait_for(task, 10)


async def test_relists_after_gone_and_fires_the_differences(fresh_etcd):
    # A tiny watch-cache window sends old resourceVersions to etcd's history; compacting that
    # history makes them "too old" (410), as happens to a client that was away too long.
    with ApiserverProcess(fresh_etcd.endpoint, extra_args=["--compaction-interval", "0",
                                                           "--watch-cache-window", "5"]) as server:
        async with AsyncApiClient(server.url) as client:
            ns = await new_namespace(client)
            await client.create(pod("stays", ns))
            await client.create(pod("goes", ns))
            informer = Informer(client, PODS, namespace=ns, backoff=Backoff(initial=0.05, cap=0.2))
            seen = Seen()
            informer.add_handler(**seen.handlers())
            task = asyncio.create_task(informer.run())
            assert await informer.wait_synced(10)
            informer.stop()
            await asyncio.wait_for(task, 10)
            assert informer.relists == 1

            # While it is stopped: more changes than the window holds.
            await client.delete(PODS, "goes", ns, grace_period_seconds=0)
            for i in range(8):
                await client.create(pod(f"new-{i}", ns))
            await client.update_with_retry(PODS, "stays", ns, lambda o: o["metadata"]["labels"].update(v="9"))
            _, now = await client.list(PODS, ns)
            subprocess.run([shutil.which("etcdctl") or "/usr/bin/etcdctl", "--endpoints", fresh_etcd.url,
                            "compact", now], check=True, capture_output=True, timeout=20)

            task = asyncio.create_task(informer.run())
            try:
                await seen.wait_for(("add", "new-7"))
                await seen.wait_for(("update", "stays"))
                await seen.wait_for(("delete", "goes"))
                assert informer.relists == 2  # resumed the watch, got 410 Gone, listed again
                assert sorted(informer.indexer.keys()) == sorted(
                    [f"{ns}/stays"] + [f"{ns}/new-{i}" for i in range(8)])
                assert informer.indexer.get(f"{ns}/stays")["metadata"]["labels"]["v"] == "9"
            finally:
                informer.stop()
                await asyncio.wait_for(task, 10)
