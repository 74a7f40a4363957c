"""One in-memory cache per resource prefix: one etcd watch, many API watchers.

A ``WatchCache`` lists its prefix, then applies one etcd watch to a map (key → object) and appends
every event to a ring buffer of ``window`` events. API watchers are cursors into that ring: the
writer never waits for them, and they hold no queue of their own, so memory is bounded by the
window whatever the number or speed of watchers. A watcher whose cursor falls out of the ring
(more than ``window`` events behind) ends with ``SubscriberExpired`` (a ``RevisionCompacted``:
answer 410 Gone, the client re-lists).

Exactness: a watcher resuming from resourceVersion N receives exactly the events with revision
> N, in order, once each. N inside the ring: served from the ring. N older than the ring: a raw
etcd watch from N + 1 serves it until a revision boundary at or after the ring's start, then the
watcher moves to the ring (so after an apiserver restart, resumed watchers soon share one etcd
watch again); if etcd compacted N + 1 away, ``RevisionCompacted``. N newer than the cache: the
watcher starts at the ring's end and skips events up to N. On start the cache replays up to
``window`` revisions of history into the ring, so clients resuming right after a restart are
mostly served from memory.

Progress without events: the cache's revision is the newest event it applied, which may lag the
store revision when the prefix is quiet. ``wait_for_revision`` then asks etcd, in one keys-only
read, whether anything under the prefix changed since (``Store.changes_since``); if not, the
cache is known current at that store revision and its ``revision`` moves up to it. (etcd 3.4.23's
progress requests may overtake events, so they are not used.)

Objects in events and snapshots are shared between all readers: treat them as immutable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from apiserver.storage import RevisionCompacted, StorageError, StorageUnavailable, Store, WatchEvent

log = logging.getLogger(__name__)


class SubscriberExpired(RevisionCompacted):
    """A watcher fell more than the window behind, or the cache had to re-list: re-list (410)."""


class WatchCache:
    """The cache of one prefix (e.g. ``/registry/pods/``). ``await start()`` before use, ``stop()`` after."""

    def __init__(self, store: Store, prefix: str, *, window: int = 10000, start_timeout: float = 30.0) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self._store = store
        self._prefix = prefix
        self._window = window
        self._start_timeout = start_timeout
        self._objects: dict[str, dict[str, Any]] = {}
        self._ring: list[WatchEvent | None] = [None] * window
        self._first_seq = 0           # sequence number of the oldest event in the ring
        self._next_seq = 0            # sequence number the next event will get
        self._buffer_start = 0        # every event with a revision above this is in the ring
        self._rev = 0                 # the map's revision: the list's, or the newest applied event's
        self._rev_events = 0          # events applied at revision _rev (to resume a watch without duplicates)
        self._proven = 0              # a store revision at which etcd's content was seen to equal the map
        self._gen = 0                 # bumped by a re-list: watchers of an older generation are expired
        self._changed = asyncio.Event()
        self._probe_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._subscribers = 0

    # ---------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """List the prefix, start the etcd watch, and wait (bounded) until the cache is current.

        Raises ``StorageError`` (e.g. ``StorageUnavailable``) if the first list fails.
        """
        if self._task is not None:
            raise RuntimeError("WatchCache already started")
        now = await self._store.current_revision()
        since = max(now - self._window, await self._store.compacted_revision(), 1)
        listed: tuple[list[tuple[str, dict[str, Any]]], int] | None = None
        if since < now:
            # Start in the past so that the ring holds recent history for watchers resuming after a restart.
            with contextlib.suppress(RevisionCompacted):
                listed = await self._store.list_with_keys(self._prefix, revision=since)
        if listed is None:
            listed = await self._store.list_with_keys(self._prefix)
        self._reset(*listed)
        self._task = asyncio.create_task(self._run(), name=f"watchcache {self._prefix}")
        try:
            await self.wait_for_revision(now, self._start_timeout)
        except (TimeoutError, StorageError) as exc:
            log.warning("watch cache %s not current after start: %s", self._prefix, exc)

    async def stop(self) -> None:
        """Stop the etcd watch; open watchers end (without an error)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._wake()

    # ---------------------------------------------------------------- reading

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def revision(self) -> int:
        """The revision the cache is current at (for BOOKMARKs and list resourceVersions)."""
        return max(self._rev, self._proven)

    @property
    def oldest_revision(self) -> int:
        """Watchers resuming from this revision or newer are served from memory."""
        return self._buffer_start

    @property
    def subscribers(self) -> int:
        """Number of open watchers."""
        return self._subscribers

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached object at ``key`` (shared, do not change it), or None."""
        return self._objects.get(key)

    def snapshot(self) -> tuple[list[dict[str, Any]], int]:
        """The current objects (sorted by key; shared, do not change them) and the cache revision."""
        return [obj for _, obj in sorted(self._objects.items())], self.revision

    async def wait_for_revision(self, rev: int, timeout: float) -> None:
        """Return once the cache is current at ``rev`` or later (so a list after a write sees it).

        Raises ``TimeoutError`` after ``timeout`` seconds (e.g. ``rev`` beyond the store's revision or
        etcd unreachable), ``StorageUnavailable`` if the cache is stopped.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.revision < rev:
            if self._stopped:
                raise StorageUnavailable(f"watch cache {self._prefix} stopped")
            with contextlib.suppress(StorageError):
                await asyncio.wait_for(self._probe(rev), max(deadline - loop.time(), 0.001))
            if self.revision >= rev:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"watch cache {self._prefix} at revision {self.revision}, not {rev}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def _probe(self, rev: int) -> None:
        """Ask etcd whether the prefix changed since the map's revision; if not, the map is current."""
        async with self._probe_lock:
            if self.revision >= rev:      # a probe that finished while this one queued was enough
                return
            map_rev, gen = self._rev, self._gen
            count, changed, store_rev = await self._store.changes_since(self._prefix, map_rev)
            # Valid only if nothing was applied meanwhile: then the map is still the state at map_rev.
            if (self._rev == map_rev and self._gen == gen and changed == 0 and count == len(self._objects)
                    and store_rev > self._proven):
                self._proven = store_rev
                self._wake()

    async def watch(self, from_rv: int | None, *,
                    bookmark_after: float | None = None) -> AsyncGenerator[WatchEvent, None]:
        """Events of this prefix for one API watcher (Kubernetes semantics).

        ``from_rv`` None or 0: an ``ADDED`` (at the cache revision) for every current object, then
        every later event. ``from_rv`` N: exactly the events with revision > N, in order, then live.
        Raises ``RevisionCompacted`` if N is older than etcd's history, ``SubscriberExpired`` if the
        watcher falls more than the window behind or the cache re-lists, ``StorageUnavailable`` if
        a raw catch-up watch breaks. Ends quietly when the cache stops. Close it (``aclose``) or
        cancel its task when done. Nothing happens before the first ``__anext__``.

        ``bookmark_after`` (seconds): after that long without events, yield ``WatchEvent("BOOKMARK",
        {"metadata": {"resourceVersion": …}}, None, rev)``. It is exact: it is only sent when every
        event up to ``rev`` has been yielded, so a client resuming from it misses nothing (unlike
        ``revision``, which may be ahead of what this watcher has yielded so far).
        """
        if self._task is None:
            raise RuntimeError("WatchCache not started")
        self._subscribers += 1
        try:
            if not from_rv:
                items, min_rev = sorted(self._objects.items()), self.revision
                cursor, gen = self._next_seq, self._gen
                for key, obj in items:
                    yield WatchEvent("ADDED", obj, None, min_rev, key)
            elif from_rv >= self._buffer_start:
                min_rev, gen = from_rv, self._gen
                cursor = self._seq_after(from_rv)
            else:
                # Older than the ring: etcd's own history, until a revision boundary the ring covers.
                last, switched = from_rv, False
                async with contextlib.aclosing(self._store.watch(self._prefix, start_revision=from_rv + 1)) as raw:
                    async for ev in raw:
                        if ev.revision > last and last >= self._buffer_start and not self._stopped:
                            switched = True       # ev itself is (or will be) in the ring
                            break
                        yield ev
                        last = ev.revision
                if not switched:
                    return
                min_rev, gen = last, self._gen
                cursor = self._seq_after(last)
            while True:
                if self._stopped:
                    return
                if gen != self._gen:
                    raise SubscriberExpired(self._buffer_start, requested=min_rev,
                                            message=f"watch cache {self._prefix} re-listed; re-list")
                if cursor < self._first_seq:
                    raise SubscriberExpired(self._buffer_start, requested=min_rev,
                                            message=f"watcher fell more than {self._window} events behind; re-list")
                if cursor < self._next_seq:
                    item = self._ring[cursor % self._window]
                    cursor += 1
                    assert item is not None
                    if item.revision > min_rev:
                        yield item
                    continue
                if bookmark_after is None:
                    await self._changed.wait()
                    continue
                try:
                    await asyncio.wait_for(self._changed.wait(), bookmark_after)
                except TimeoutError:
                    # Caught up with the ring: everything up to the cache revision has been yielded.
                    mark = max(self.revision, min_rev)
                    yield WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": str(mark)}}, None, mark)
        finally:
            self._subscribers -= 1

    def _seq_after(self, rev: int) -> int:
        """Sequence number of the first ring event with revision > ``rev`` (``_next_seq`` if none)."""
        lo, hi = self._first_seq, self._next_seq
        while lo < hi:
            mid = (lo + hi) // 2
            ev = self._ring[mid % self._window]
            assert ev is not None
            if ev.revision > rev:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # ---------------------------------------------------------------- writing (the one etcd watch)

    def _reset(self, items: list[tuple[str, dict[str, Any]]], rev: int) -> None:
        self._objects = dict(items)
        self._ring = [None] * self._window
        self._first_seq = self._next_seq
        self._buffer_start = rev
        self._rev, self._rev_events, self._proven = rev, 0, rev
        self._gen += 1
        self._wake()

    def _apply(self, ev: WatchEvent) -> None:
        if ev.type == "DELETED":
            self._objects.pop(ev.key, None)
        else:
            self._objects[ev.key] = ev.object
        if self._next_seq - self._first_seq == self._window:
            evicted = self._ring[self._first_seq % self._window]
            assert evicted is not None
            self._buffer_start = max(self._buffer_start, evicted.revision)
            self._first_seq += 1
        self._ring[self._next_seq % self._window] = ev
        self._next_seq += 1
        if ev.revision == self._rev:
            self._rev_events += 1
        else:
            self._rev, self._rev_events = ev.revision, 1
        self._wake()

    def _wake(self) -> None:
        # set() resolves every current waiter; clear() at once turns the Event into a broadcast pulse.
        self._changed.set()
        self._changed.clear()

    async def _run(self) -> None:
        """Apply the etcd watch forever; resume after breaks from the last applied event."""
        backoff = 0.05
        while not self._stopped:
            # Resume at the last applied revision and skip what was applied of it: a transaction's
            # events are then neither lost nor repeated, whatever etcd's batching.
            start, skip = (self._rev, self._rev_events) if self._rev_events else (self._rev + 1, 0)
            try:
                async with contextlib.aclosing(self._store.watch(self._prefix, start_revision=start)) as events:
                    async for ev in events:
                        if skip and ev.revision == start:
                            skip -= 1
                            continue
                        skip = 0
                        self._apply(ev)
                        backoff = 0.05
                if self._store.closed:
                    return
            except RevisionCompacted as exc:
                # Events between our revision and etcd's history are lost: re-list, expire every watcher.
                log.warning("watch cache %s: %s; re-listing", self._prefix, exc)
                try:
                    self._reset(*await self._store.list_with_keys(self._prefix))
                    continue
                except StorageError as err:
                    log.warning("watch cache %s: re-list failed: %s", self._prefix, err)
            except StorageError as exc:
                log.warning("watch cache %s: etcd watch broke: %s; resuming from %d", self._prefix, exc, start)
            except Exception:
                log.exception("watch cache %s: unexpected error; resuming", self._prefix)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
