"""List-then-watch informers: a local, always-converging cache of one resource, plus event handlers.

::

    run()
     └─ list ──▶ replace the cache (fire add / update / delete for the differences) ──▶ synced
         └─ watch from the list's resourceVersion ──▶ apply each event to the cache, fire handlers
              ├─ stream ended (server timeout)     → watch again from the last resourceVersion seen
              ├─ Gone (410: too old)                → list again
              └─ any other error / connection lost → back off (capped, jittered) and watch again
    resync task: every ``resync_period`` seconds, on_update(obj, obj) for every cached object

Objects are shared, not copied: :class:`Indexer` reads and handler arguments are the cached
objects themselves and are **read-only** by contract (as in client-go and kopf). Copy
(``copy.deepcopy``) before changing anything, then write through the API; never mutate them.

Handlers run one at a time in event order, on the informer's task; a slow handler delays the
cache. Keep them short (enqueue a key). A handler may be a plain function or a coroutine function;
its exceptions are logged and do not stop the informer.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Protocol

from minik8s.api.registry import ResourceType
from minik8s.client.backoff import Backoff
from minik8s.errors import ApiError, ConnectionFailed, Gone

log = logging.getLogger(__name__)

Obj = dict[str, Any]
AddHandler = Callable[[Obj], Any]
UpdateHandler = Callable[[Obj, Obj], Any]
DeleteHandler = Callable[[Obj], Any]
IndexFunc = Callable[[Obj], Iterable[str]]
ObjList = list[Obj]
KeyList = list[str]

# Watches are re-opened every few minutes on purpose (as client-go does): a silently dead TCP
# connection then costs at most this long, and the random spread keeps clients from moving together.
WATCH_TIMEOUT_RANGE = (240, 360)


class ListWatcher(Protocol):
    """The two calls an informer needs (``AsyncApiClient`` has them; unit tests pass a fake)."""

    async def list(self, rt: ResourceType, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> tuple[list[Obj], str]: ...

    def watch(self, rt: ResourceType, namespace: str | None = None, *, resource_version: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None,
              timeout_seconds: int | None = None, table: bool = False) -> AsyncIterator[tuple[str, Obj]]: ...


def object_key(obj: Obj) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace"), meta.get("name", "")
    return f"{ns}/{name}" if ns else str(name)


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Indexer:
    """A key → object cache with secondary indexes. Returned objects are shared and read-only.

    ``add_index("node", fn)`` with ``fn(obj) -> [values]`` lets ``by_index("node", "n1")`` find
    every object whose ``fn`` produced "n1". Indexes stay current as objects come and go.
    """

    def __init__(self) -> None:
        self._items: dict[str, Obj] = {}
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {}

    def get(self, key: str) -> Obj | None:
        return self._items.get(key)

    def list(self) -> list[Obj]:
        return list(self._items.values())

    def keys(self) -> KeyList:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def add_index(self, name: str, fn: IndexFunc) -> None:
        """Register an index; existing objects are indexed at once."""
        self._index_funcs[name] = fn
        self._indexes[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, key, obj)

    def by_index(self, name: str, value: str) -> ObjList:
        """Objects whose index function ``name`` yielded ``value``. ``KeyError`` for an unknown index."""
        keys = self._indexes[name].get(value, set())
        return [self._items[k] for k in sorted(keys)]

    def put(self, obj: Obj) -> Obj | None:
        """Store ``obj`` under its key; returns the object it replaced."""
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name in self._index_funcs:
            self._index_one(name, key, obj)
        return old

    def remove(self, key: str) -> Obj | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _index_one(self, name: str, key: str, obj: Obj) -> None:
        try:
            values = list(self._index_funcs[name](obj))
        except Exception:
            log.exception("index function %s failed on %s", name, key)
            return
        for value in values:
            self._indexes[name].setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, fn in self._index_funcs.items():
            try:
                values = list(fn(obj))
            except Exception:  # noqa: BLE001 - an index function that fails leaves the object out of it
                continue
            index = self._indexes[name]
            for value in values:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]


class Informer:
    """Keeps :attr:`indexer` in step with one resource and calls handlers on changes.

    ``namespace`` None watches all namespaces. ``resync_period`` (seconds, 0 = off) re-delivers
    every cached object as ``on_update(obj, obj)``, so level-triggered controllers revisit
    everything now and then. ``backoff`` sets the retry delays after errors.
    """

    def __init__(self, client: ListWatcher, rt: ResourceType, *, namespace: str | None = None,
                 label_selector: str | None = None, field_selector: str | None = None,
                 resync_period: float = 0.0, backoff: Backoff | None = None, name: str = "") -> None:
        self.client = client
        self.rt = rt
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.backoff = backoff or Backoff(initial=0.5, cap=30.0)
        self.name = name or rt.plural
        self.indexer = Indexer()
        self.resource_version = ""
        self._handlers: list[tuple[AddHandler | None, UpdateHandler | None, DeleteHandler | None]] = []
        self._synced = asyncio.Event()
        self._stop = asyncio.Event()
        self.relists = 0  # how many times it listed (1 + re-lists after Gone); for tests and metrics
        self._pending: set[asyncio.Task[None]] = set()

    def add_handler(self, *, on_add: AddHandler | None = None, on_update: UpdateHandler | None = None,
                    on_delete: DeleteHandler | None = None) -> None:
        """Register handlers. One added after sync first gets ``on_add`` for every cached object."""
        self._handlers.append((on_add, on_update, on_delete))
        if self._synced.is_set() and on_add is not None:
            for obj in self.indexer.list():
                self._call_soon(on_add, obj)

    def has_synced(self) -> bool:
        """True once the first list is in the cache (and its handlers have been called)."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for :meth:`has_synced`; False if ``timeout`` seconds pass first."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        """Ask :meth:`run` to return (it cancels its own watch). The cache stays; a later
        :meth:`run` resumes watching from the last resourceVersion (re-listing if that is too old)."""
        self._stop.set()

    async def run(self) -> None:
        """List, watch, re-list, retry — until :meth:`stop` is called or the task is cancelled."""
        self._stop.clear()
        tasks = [asyncio.create_task(self._list_and_watch(), name=f"informer-{self.name}")]
        if self.resync_period > 0:
            tasks.append(asyncio.create_task(self._resync_loop(), name=f"informer-{self.name}-resync"))
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in [stopper, *tasks]:
                t.cancel()
            await asyncio.gather(stopper, *tasks, return_exceptions=True)

    async def _list_and_watch(self) -> None:
        # A restarted informer resumes its watch where it stopped; only a first run (or Gone) lists.
        need_list = not (self._synced.is_set() and self.resource_version)
        while not self._stop.is_set():
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    self.backoff.reset()
                started = asyncio.get_running_loop().time()
                events = await self._watch_once()
                if events == 0 and asyncio.get_running_loop().time() - started < 1.0:
                    # A server that ends streams at once would otherwise make us spin.
                    await asyncio.sleep(self.backoff.next())
            except Gone:
                log.info("informer %s: resourceVersion %s is too old; re-listing", self.name, self.resource_version)
                need_list = True
            except (ApiError, ConnectionFailed) as exc:
                delay = self.backoff.next()
                log.warning("informer %s: %s; retrying in %.1fs", self.name, exc, delay)
                await asyncio.sleep(delay)

    async def _watch_once(self) -> int:
        """Follow one watch stream to its end; returns how many events it brought."""
        count = 0
        timeout = random.randint(*WATCH_TIMEOUT_RANGE)
        async for etype, obj in self.client.watch(
                self.rt, self.namespace, resource_version=self.resource_version or None,
                label_selector=self.label_selector, field_selector=self.field_selector, timeout_seconds=timeout):
            self.backoff.reset()
            count += 1
            rv = _rv(obj)
            if etype == "BOOKMARK":
                if rv:
                    self.resource_version = rv
                continue
            await self._apply(etype, obj)
            if rv:
                self.resource_version = rv
        return count

    async def _apply(self, etype: str, obj: Obj) -> None:
        key = object_key(obj)
        if etype in ("ADDED", "MODIFIED"):
            old = self.indexer.put(obj)
            if old is None:
                await self._fire_add(obj)
            else:
                await self._fire_update(old, obj)
        elif etype == "DELETED":
            old = self.indexer.remove(key)
            await self._fire_delete(obj if obj.get("metadata") else (old or obj))
        else:
            log.warning("informer %s: ignoring watch event of type %r", self.name, etype)

    async def _relist(self) -> None:
        items, rv = await self.client.list(self.rt, self.namespace, label_selector=self.label_selector,
                                           field_selector=self.field_selector)
        self.relists += 1
        fresh = {object_key(o): o for o in items}
        gone = [k for k in self.indexer if k not in fresh]
        for key in gone:
            old = self.indexer.remove(key)
            if old is not None:
                await self._fire_delete(old)
        for obj in items:
            old = self.indexer.put(obj)
            if old is None:
                await self._fire_add(obj)
            elif _rv(old) != _rv(obj) or old != obj:
                await self._fire_update(old, obj)
        self.resource_version = rv
        self._synced.set()

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync_period)
            if not self._synced.is_set():
                continue
            for obj in self.indexer.list():
                await self._fire_update(obj, obj)

    async def _fire_add(self, obj: Obj) -> None:
        for on_add, _, _ in list(self._handlers):
            if on_add is not None:
                await self._call(on_add, obj)

    async def _fire_update(self, old: Obj, new: Obj) -> None:
        for _, on_update, _ in list(self._handlers):
            if on_update is not None:
                await self._call(on_update, old, new)

    async def _fire_delete(self, obj: Obj) -> None:
        for _, _, on_delete in list(self._handlers):
            if on_delete is not None:
                await self._call(on_delete, obj)

    async def _call(self, fn: Callable[..., Any], *args: Obj) -> None:
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("informer %s: handler %r failed", self.name, fn)

    def _call_soon(self, fn: Callable[..., Any], obj: Obj) -> None:
        task = asyncio.get_running_loop().create_task(self._call(fn, obj))
        self._pending.add(task)  # keep a reference until it ends (the loop holds tasks only weakly)
        task.add_done_callback(self._pending.discard)
