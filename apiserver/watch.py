"""One client's watch stream: events from the resource's watch cache, filtered and serialised.

A watch with selectors sees an object *enter* its view as ADDED and *leave* it as DELETED, as in
Kubernetes; the watch cache supplies each event's previous object to decide that. Events are
newline-delimited JSON; with a Table ``Accept`` each object is a one-row Table (columns on the
first only). A compacted start revision ends the stream with an ERROR event carrying a 410 Status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from apiserver import tables
from apiserver.storage import RevisionCompacted, WatchEvent
from apiserver.watchcache import WatchCache
from minik8s.api.registry import ResourceType


def translate(event: WatchEvent, visible: Callable[[dict[str, Any]], bool]) -> tuple[str, dict[str, Any]] | None:
    """What a client whose view is ``visible`` sees of ``event`` (None: nothing)."""
    now_in = visible(event.object)
    was_in = event.prev_object is not None and visible(event.prev_object)
    if event.type == "ADDED":
        return ("ADDED", event.object) if now_in else None
    if event.type == "DELETED":
        return ("DELETED", event.object) if (was_in or now_in) else None
    if now_in and was_in:
        return "MODIFIED", event.object
    if now_in:
        return "ADDED", event.object
    if was_in:
        return "DELETED", event.object
    return None


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": kind, "object": obj}) + b"\n"


# Lines of watch-cache objects, encoded once and shared by every watcher that sends them (with
# 1,000 watchers, encoding per watcher was the largest cost of a fan-out). Keyed by the object's
# identity; each entry holds the object itself, so its id cannot be reused while cached. Sound
# because watch-cache objects are immutable (see WatchEvent). Bounded in bytes and entries.
_SHARED: dict[tuple[str, int], tuple[dict[str, Any], bytes]] = {}
_SHARED_MAX_ENTRIES = 1024
_SHARED_MAX_BYTES = 16 * 1024 * 1024
_shared_bytes = 0


def _shared_line(kind: str, obj: dict[str, Any]) -> bytes:
    global _shared_bytes
    key = (kind, id(obj))
    hit = _SHARED.get(key)
    if hit is not None and hit[0] is obj:
        return hit[1]
    line = _line(kind, obj)
    while _SHARED and (len(_SHARED) >= _SHARED_MAX_ENTRIES or _shared_bytes + len(line) > _SHARED_MAX_BYTES):
        _shared_bytes -= len(_SHARED.pop(next(iter(_SHARED)))[1])
    if len(line) <= _SHARED_MAX_BYTES:
        _SHARED[key] = (obj, line)
        _shared_bytes += len(line)
    return line


async def stream(cache: WatchCache, rt: ResourceType, *, namespace: str | None,
                 visible: Callable[[dict[str, Any]], bool], from_rv: int | None, as_table: bool,
                 include_object: str, timeout: float | None, bookmarks: bool,
                 bookmark_interval: float) -> AsyncIterator[bytes]:
    """Yield the encoded events of one watch until ``timeout`` (None: until the client leaves)."""

    def in_view(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if namespace and rt.namespaced and meta.get("namespace") != namespace:
            return False
        return visible(obj)

    first_table = True

    def encode(kind: str, obj: dict[str, Any]) -> bytes:
        nonlocal first_table
        if as_table:
            rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
            obj = tables.table(rt, [obj], rv, include_object=include_object, with_columns=first_table)
            first_table = False
            return _line(kind, obj)
        return _shared_line(kind, obj)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout else None
    # A pump task feeds a queue so that waiting for the next event can end at timeoutSeconds
    # without cancelling the watch iterator itself.
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)

    async def pump() -> None:
        try:
            async for ev in cache.watch(from_rv, bookmark_after=bookmark_interval if bookmarks else None):
                await queue.put(ev)
            await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - handed to the stream, which reports it
            await queue.put(e)

    task = asyncio.create_task(pump())
    try:
        while True:
            if deadline is None:
                item = await queue.get()
            else:
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    return
            if item is _END:
                return
            if isinstance(item, RevisionCompacted):
                yield _line("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": f"too old resource version: {from_rv} ({item.compacted_revision})",
                                      "reason": "Expired", "code": 410})
                return
            if isinstance(item, Exception):
                yield _line("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": f"watch ended: {item}", "reason": "InternalError", "code": 500})
                return
            if item.type == "BOOKMARK":
                # The cache sends these only once every earlier event was delivered: resuming is exact.
                yield _line("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                         "metadata": {"resourceVersion": str(item.revision)}})
                continue
            out = translate(item, in_view)
            if out is not None:
                yield encode(*out)
    finally:
        task.cancel()
        try:
            await task
        except BaseException:  # noqa: BLE001, S110 - the stream is over either way
            pass


_END = object()
