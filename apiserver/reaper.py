"""Namespace deletion: a terminating namespace is emptied, then removed.

Deleting a namespace only marks it (``deletionTimestamp``, phase ``Terminating``) so no new
objects enter it. This loop then deletes what it holds, kind by kind, through the same rules as
a client's DELETE (pods on a node wait for their kubelet), and removes the namespace once it is
empty. It is level-triggered: it looks at every terminating namespace on each pass, so a restart
of the apiserver mid-way simply resumes. Kinds not kept in etcd (activations) are not its business:
the gateway deletes a function's records when the function goes, and the function goes with the
namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from apiserver.objects import Objects
from apiserver.storage import KeyNotFound, RevisionConflict, StorageError
from apiserver.watchcache import WatchCache
from minik8s.api import registry
from minik8s.errors import ApiError

log = logging.getLogger("minik8s.apiserver.namespaces")


class NamespaceReaper:
    def __init__(self, objects: Objects, caches: dict[str, WatchCache], *, interval: float) -> None:
        self.objects = objects
        self.caches = caches
        self.interval = interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.sync_all()
            except Exception:
                log.exception("namespace sync failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def sync_all(self) -> None:
        items, _ = self.caches["namespaces"].snapshot()
        for ns in items:
            if ns.get("metadata", {}).get("deletionTimestamp"):
                await self.sync(ns)

    async def sync(self, ns: dict[str, Any]) -> bool:
        """Delete what namespace ``ns`` holds; remove it when empty. True when it is gone."""
        name = ns["metadata"]["name"]
        remaining = 0
        for rt in registry.STORED:
            if not rt.namespaced:
                continue
            items, _ = await self.objects.list_objects(rt, name)
            for obj in items:
                remaining += 1
                if obj.get("metadata", {}).get("deletionTimestamp"):
                    continue
                with contextlib.suppress(ApiError):
                    await self.objects.delete(rt, name, obj["metadata"]["name"])
        if remaining:
            # Re-check soon: graceful deletions finish on their own clock.
            items_left = 0
            for rt in registry.STORED:
                if rt.namespaced:
                    items_left += len((await self.objects.list_objects(rt, name))[0])
            if items_left:
                return False
        ns_rt = registry.lookup("namespaces")
        try:
            await self.objects.store.delete(ns_rt.key(None, name),
                                            expected_rv=int(ns["metadata"]["resourceVersion"]))
        except (KeyNotFound, RevisionConflict):
            return False
        except StorageError as e:
            log.warning("could not remove namespace %s: %s", name, e)
            return False
        log.info("namespace %s removed", name)
        return True
