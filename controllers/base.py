"""What every controller is made of: shared informers, a keyed work queue, workers, expectations.

::

    InformerFactory ── one Informer per resource (plural), shared by every controller; started once
         │               by the manager; its resync (Kubernetes' --min-resync-period) re-delivers
         │               every cached object as an update now and then
         ▼
    Controller ── handlers enqueue *keys* ──▶ WorkQueue ──▶ N workers: await sync(key)
                                                 ├─ returned  → forget(key) (back-off reset)
                                                 └─ raised    → add_rate_limited(key) (back-off, logged)

    Expectations ── per owner key: creations/deletions the controller has asked for but not yet
                    seen in its informer; a controller syncs an owner only when they are satisfied
                    (all seen) or expired (5 minutes, as Kubernetes), so it never overshoots.

A subclass sets ``name``, registers handlers on informers from the factory in ``__init__``, lists
the informers it must wait for in :meth:`Controller.informers`, and implements ``async def sync(key)``
— level-triggered: read the current objects from the caches (read-only, never mutated), converge
through ``self.client``, return. A missing object means "done".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from minik8s.api import registry
from minik8s.client.informer import Informer, ListWatcher, object_key
from minik8s.client.workqueue import ItemExponentialRateLimiter, WorkQueue, run_worker

log = logging.getLogger("minik8s.controllers")

Obj = dict[str, Any]

# Kubernetes' ControllerExpectations time out after 5 minutes (ExpectationsTimeout).
EXPECTATIONS_TIMEOUT = 300.0
# Kubernetes' --min-resync-period: 12 h (each informer picks a random period in [12 h, 24 h]).
DEFAULT_RESYNC_PERIOD = 12 * 3600.0


class ControllerClient(ListWatcher, Protocol):
    """The writes controllers make (``AsyncApiClient`` has them; unit tests pass a recording fake)."""

    async def create(self, obj: Obj, *, namespace: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> Obj: ...

    async def get(self, rt: registry.ResourceType, name: str, namespace: str | None = None) -> Obj: ...

    async def replace(self, obj: Obj) -> Obj: ...

    async def replace_status(self, obj: Obj) -> Obj: ...

    async def patch(self, rt: registry.ResourceType, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> Obj: ...

    async def delete(self, rt: registry.ResourceType, name: str, namespace: str | None = None, *,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, str] | None = None) -> Obj: ...


class _NoWatch:
    """A stand-in list/watch for factories whose informers are filled by hand (unit tests)."""

    async def list(self, rt: registry.ResourceType, namespace: str | None = None, *,
                   label_selector: str | None = None, field_selector: str | None = None) -> tuple[list[Obj], str]:
        return [], "0"

    async def watch(self, rt: registry.ResourceType, namespace: str | None = None, *,
                    resource_version: str | None = None, label_selector: str | None = None,
                    field_selector: str | None = None, timeout_seconds: int | None = None,
                    table: bool = False) -> AsyncIterator[tuple[str, Obj]]:
        await asyncio.Event().wait()
        yield "", {}  # pragma: no cover - never reached


class InformerFactory:
    """One :class:`Informer` per resource, shared by every controller that asks for it.

    ``informer("pods")`` creates it on first use; :meth:`run` starts every informer created so far
    (ask for all informers before running). Unit tests never run it: they put objects straight into
    ``informer(x).indexer``.
    """

    def __init__(self, client: ListWatcher | None = None, *, resync_period: float = DEFAULT_RESYNC_PERIOD) -> None:
        self.client: ListWatcher = client if client is not None else _NoWatch()
        self.resync_period = resync_period
        self._informers: dict[str, Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def informer(self, resource: str) -> Informer:
        rt = registry.lookup(resource)
        inf = self._informers.get(rt.plural)
        if inf is None:
            inf = Informer(self.client, rt, resync_period=self.resync_period, name=f"cm-{rt.plural}")
            self._informers[rt.plural] = inf
        return inf

    @property
    def informers(self) -> dict[str, Informer]:
        return dict(self._informers)

    def start(self) -> None:
        """Start every informer not yet started (tasks live until :meth:`stop`)."""
        running = {t.get_name() for t in self._tasks if not t.done()}
        for plural, inf in self._informers.items():
            name = f"informer-{plural}"
            if name not in running:
                self._tasks.append(asyncio.create_task(inf.run(), name=name))

    async def wait_synced(self, timeout: float | None = None) -> bool:
        results = await asyncio.gather(*(inf.wait_synced(timeout) for inf in self._informers.values()))
        return all(results)

    async def stop(self) -> None:
        for inf in self._informers.values():
            inf.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


@dataclass
class _Expectation:
    adds: int = 0
    deletes: set[str] = field(default_factory=set)
    stamp: float = 0.0


class Expectations:
    """Kubernetes' (UID-tracking) ControllerExpectations, keyed by owner key.

    ``expect_creations(owner, n)`` before creating n objects; the informer handler calls
    ``creation_observed(owner)`` for each one it sees. ``expect_deletions(owner, keys)`` before
    deleting; ``deletion_observed(owner, key)`` when the informer sees each one go (or start
    terminating). A failed write must lower the expectation (``creation_observed`` /
    ``deletion_observed`` at once) since no event will come.
    :meth:`satisfied` is true when nothing is pending, nothing was ever recorded, or the record is
    older than ``timeout`` (a lost event must not wedge an owner forever).
    """

    def __init__(self, *, timeout: float = EXPECTATIONS_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._items: dict[str, _Expectation] = {}

    def expect_creations(self, owner: str, count: int) -> None:
        e = self._items.setdefault(owner, _Expectation())
        e.adds = count
        e.stamp = self.clock()

    def expect_deletions(self, owner: str, keys: Iterable[str]) -> None:
        e = self._items.setdefault(owner, _Expectation())
        e.deletes = set(keys)
        e.stamp = self.clock()

    def creation_observed(self, owner: str) -> None:
        e = self._items.get(owner)
        if e is not None and e.adds > 0:
            e.adds -= 1

    def deletion_observed(self, owner: str, key: str) -> None:
        e = self._items.get(owner)
        if e is not None:
            e.deletes.discard(key)

    def pending(self, owner: str) -> tuple[int, int]:
        e = self._items.get(owner)
        return (e.adds, len(e.deletes)) if e is not None else (0, 0)

    def satisfied(self, owner: str) -> bool:
        e = self._items.get(owner)
        if e is None:
            return True
        if e.adds <= 0 and not e.deletes:
            return True
        if self.clock() - e.stamp > self.timeout:
            log.info("expectations of %s expired (adds %d, deletes %d pending)", owner, e.adds, len(e.deletes))
            return True
        return False

    def forget(self, owner: str) -> None:
        """The owner is gone: drop its record."""
        self._items.pop(owner, None)


class Controller:
    """Base of every controller: see the module docstring. :meth:`run` until :meth:`stop`."""

    name = "controller"

    def __init__(self, client: ControllerClient, factory: InformerFactory, *, workers: int = 1,
                 rate_limiter: ItemExponentialRateLimiter | None = None) -> None:
        self.client = client
        self.factory = factory
        self.workers = max(1, workers)
        self.queue = WorkQueue(rate_limiter=rate_limiter)
        self.syncs = 0  # finished syncs, for metrics
        self.sync_errors = 0
        self._stop = asyncio.Event()

    # --- for subclasses -------------------------------------------------------------------------

    def informers(self) -> list[Informer]:
        """The informers whose caches must be synced before the first ``sync``."""
        return []

    async def sync(self, key: str) -> None:
        raise NotImplementedError

    def enqueue(self, obj: Obj) -> None:
        self.queue.add(object_key(obj))

    def enqueue_key(self, key: str) -> None:
        self.queue.add(key)

    def enqueue_after(self, key: str, delay: float) -> None:
        self.queue.add_after(key, delay)

    # --- lifecycle ------------------------------------------------------------------------------

    async def _sync_counted(self, key: Hashable) -> None:
        try:
            await self.sync(str(key))
        except asyncio.CancelledError:
            raise
        except Exception:
            self.sync_errors += 1
            raise
        finally:
            self.syncs += 1

    async def run(self) -> None:
        """Wait for this controller's informers (the factory must be started), then run the workers."""
        self._stop.clear()
        for inf in self.informers():
            while not await inf.wait_synced(0.5):
                if self._stop.is_set():
                    return
        log.info("controller %s synced; starting %d workers", self.name, self.workers)
        tasks = [asyncio.create_task(run_worker(self.queue, self._sync_counted, name=self.name),
                                     name=f"{self.name}-worker-{i}") for i in range(self.workers)]
        try:
            await self._stop.wait()
        finally:
            self.queue.shut_down()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    async def drain(self, *, max_rounds: int = 100) -> None:
        """Test helper: sync every queued key (no workers, no back-off delays) until the queue is empty."""
        for _ in range(max_rounds):
            if not len(self.queue):
                return
            key = await self.queue.get()
            try:
                await self.sync(str(key))
                self.queue.forget(key)
            finally:
                self.queue.done(key)


def owner_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def controller_ref(obj: Obj) -> Obj | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def make_controller_ref(owner: Obj, *, block_owner_deletion: bool = True) -> Obj:
    meta = owner.get("metadata") or {}
    return {"apiVersion": owner.get("apiVersion", ""), "kind": owner.get("kind", ""), "name": meta.get("name", ""),
            "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": block_owner_deletion}


def is_terminating(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))
