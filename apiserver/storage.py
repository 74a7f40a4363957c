"""The apiserver's store: the only module that talks to etcd (through ``aetcd``, asyncio gRPC).

Values are compact JSON of API object dicts. ``metadata.resourceVersion`` is never stored: it is the
key's etcd ``mod_revision``, filled in (as a string) on every object this module returns. Every
returned object is a fresh dict the caller may change, except where a docstring says otherwise.

Errors (the HTTP layer maps them onto ``minik8s.errors`` with the kind and name it knows)::

    StorageError                    anything etcd answered that fits nothing below
     ├── StorageUnavailable         no answer from etcd in time (down, unreachable, deadline passed)
     ├── KeyExists                  create of a key that exists (``.current``: the stored object)
     ├── KeyNotFound                get / update / delete of a key that does not exist
     ├── RevisionConflict           ``expected_rv`` is stale (``.current``: the stored object, if known)
     └── RevisionCompacted          the revision asked for is older than etcd's history
                                    (``.compacted_revision``: the oldest revision still readable)

Notes on ``aetcd`` 1.0 that shaped this module:

- ``Client.transaction`` drops the response header, so the revision of a write is unknown; this
  module builds ``TxnRequest``/``RangeRequest`` messages itself and calls ``client.kvstub`` (the
  stubs exist only after ``client.connect()``), which also gives ``limit``, ``revision``,
  ``keys_only``, ``min_mod_revision`` and ``ignore_lease`` that the client's helpers leave out.
- ``Client.watch`` multiplexes every watch on one gRPC stream and queues events without bound per
  watch; breaking out of its iterator does **not** cancel the etcd watch, only ``Watch.cancel()``
  does. ``Store.watch`` always cancels in ``finally`` (also on task cancellation and ``aclose``).
- A stream failure is delivered to every open watch as an exception (mapped here to
  ``StorageUnavailable``); the next watch opens a new stream. ``Client.close`` ends open watch
  iterators without an error.
- With ``timeout`` every unary call has a gRPC deadline, so a dead etcd gives
  ``StorageUnavailable`` instead of a hang; the watch stream itself has no deadline (it is
  long-lived) and relies on gRPC keepalive pings to notice a dead peer.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import inspect
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aetcd
import aetcd.exceptions
import orjson
from aetcd import rpc
from aetcd.utils import prefix_range_end

log = logging.getLogger(__name__)

_LIST_PAGE = 500          # keys per Range page: keeps each gRPC message well under its size limit
_MAX_MESSAGE = 256 * 1024 * 1024
_CHANNEL_OPTIONS = {
    "grpc.max_receive_message_length": _MAX_MESSAGE,
    "grpc.max_send_message_length": _MAX_MESSAGE,
    # etcd's default keepalive policy allows a ping every 5 s with an open stream and none without.
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 0,
}


# --------------------------------------------------------------------------------------------- errors

class StorageError(Exception):
    """Base of every error raised by this module. ``key`` is the etcd key concerned, if any."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class StorageUnavailable(StorageError):
    """etcd did not answer in time, or the connection broke."""


class KeyExists(StorageError):
    """A create found the key already there; ``current`` is the stored object."""

    def __init__(self, key: str, current: dict[str, Any] | None = None) -> None:
        super().__init__(f"key {key!r} already exists", key=key)
        self.current = current


class KeyNotFound(StorageError):
    """The key does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} not found", key=key)


class RevisionConflict(StorageError):
    """A precondition on the key's revision failed; ``current`` is the stored object, if known."""

    def __init__(self, key: str, current: dict[str, Any] | None = None, *, expected: int | None = None) -> None:
        have = (current or {}).get("metadata", {}).get("resourceVersion")
        super().__init__(f"key {key!r}: expected resourceVersion {expected}, stored {have}", key=key)
        self.current = current
        self.expected = expected


class RevisionCompacted(StorageError):
    """The revision asked for is gone from etcd's history.

    ``compacted_revision`` is the oldest revision still readable (a watch may start there), 0 if
    unknown; ``requested`` the revision that was asked for, 0 if unknown.
    """

    def __init__(self, compacted_revision: int, *, requested: int = 0, message: str = "") -> None:
        super().__init__(message or f"revision {requested or '?'} is compacted; oldest kept is {compacted_revision}")
        self.compacted_revision = compacted_revision
        self.requested = requested


# --------------------------------------------------------------------------------------------- events

@dataclass(frozen=True)
class WatchEvent:
    """One change of one key.

    ``type``: ``ADDED`` (the key was created at ``revision``), ``MODIFIED`` or ``DELETED``.
    ``object``: the object after the change; for ``DELETED`` the last stored object with
    ``metadata.resourceVersion`` set to the delete's revision. ``prev_object``: the object before
    the change (``MODIFIED``/``DELETED``; ``None`` for ``ADDED`` or when etcd no longer had it).
    ``key``: the etcd key. Objects inside events may be shared between many readers: treat them
    as immutable (copy before changing).
    """

    type: str
    object: dict[str, Any]
    prev_object: dict[str, Any] | None
    revision: int
    key: str = ""


# --------------------------------------------------------------------------------------------- helpers

def _b(key: str) -> bytes:
    return key.encode()


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "resourceVersion" in meta:
        return {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
    return obj


def encode(obj: dict[str, Any]) -> bytes:
    """Stored form of ``obj``: compact JSON without ``metadata.resourceVersion``."""
    return orjson.dumps(_without_rv(obj))


def decode(value: bytes, revision: int) -> dict[str, Any]:
    """A fresh object from stored bytes, with ``metadata.resourceVersion = str(revision)``."""
    obj = orjson.loads(value)
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    meta["resourceVersion"] = str(revision)
    return obj


def _translate(exc: BaseException, *, key: str = "") -> StorageError:
    """Map a gRPC / aetcd / timeout error onto this module's errors."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, aetcd.exceptions.RevisionCompactedError):
        return RevisionCompacted(int(exc.compacted_revision))
    if isinstance(exc, (aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError,
                        aetcd.exceptions.WatchTimeoutError, asyncio.TimeoutError, ConnectionError)):
        return StorageUnavailable(f"etcd unavailable: {exc}", key=key)
    cause = exc.__cause__ if isinstance(exc, aetcd.exceptions.ClientError) else exc
    if isinstance(cause, rpc.AioRpcError):
        code, details = cause.code(), cause.details() or ""
        if code in (rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED, rpc.StatusCode.CANCELLED):
            return StorageUnavailable(f"etcd unavailable: {code.name} {details}", key=key)
        if code == rpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return RevisionCompacted(0, message=details)
        return StorageError(f"etcd: {code.name} {details}", key=key)
    return StorageError(f"etcd: {exc!r}", key=key)


def _cmp(key: bytes, target: str, value: int, result: Any = None) -> Any:
    c = rpc.Compare(key=key, result=rpc.Compare.EQUAL if result is None else result)
    if target == "mod":
        c.target, c.mod_revision = rpc.Compare.MOD, value
    else:
        c.target, c.create_revision = rpc.Compare.CREATE, value
    return c


def _exists(key: bytes) -> Any:
    return _cmp(key, "create", 0, rpc.Compare.GREATER)


def _op_range(key: bytes) -> Any:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def _failure_kv(resp: Any) -> Any | None:
    """The key-value read by the failure branch's single range op, or ``None`` if the key is gone."""
    kvs = resp.responses[0].response_range.kvs if resp.responses else []
    return kvs[0] if kvs else None


def _kv_object(kv: Any) -> dict[str, Any]:
    return decode(kv.value, kv.mod_revision)


# --------------------------------------------------------------------------------------------- store

class Store:
    """The API object store on etcd. Create with ``await Store.connect([...])``; ``close()`` when done."""

    def __init__(self, client: aetcd.Client, *, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._compacted = 0          # oldest readable revision, as far as this process knows
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    # ---------------------------------------------------------------- life cycle

    @classmethod
    async def connect(cls, endpoints: list[str], *, timeout: float = 10) -> Store:
        """Connect to etcd at ``endpoints`` (``"host:port"``, an ``http://`` prefix is tolerated).

        Several IPv4 endpoints are all given to gRPC (pick-first, failing over); otherwise the first
        is used. Checks that etcd answers (``StorageUnavailable`` if not within ``timeout``) and
        learns its compacted revision.
        """
        if not endpoints:
            raise ValueError("no etcd endpoints")
        hosts = [e.split("://", 1)[-1].rstrip("/") for e in endpoints]
        host, _, port = hosts[0].rpartition(":")
        if len(hosts) > 1 and all(h.rpartition(":")[0].replace(".", "").isdigit() for h in hosts):
            # aetcd builds the target as f"{host}:{port}"; gRPC's ipv4: scheme takes a list.
            host, _, port = ("ipv4:" + ",".join(hosts)).rpartition(":")
        client = aetcd.Client(host=host, port=int(port), timeout=max(1, round(timeout)), options=_CHANNEL_OPTIONS,
                              connect_wait_timeout=max(1, round(timeout)))
        store = cls(client, timeout=timeout)
        try:
            await store.current_revision()
            await store.refresh_compacted_revision()
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Close the connection; open ``watch`` iterators end."""
        self._closed = True
        with contextlib.suppress(Exception):
            await self._client.close()

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._closed

    async def _kv(self) -> Any:
        try:
            await asyncio.wait_for(self._client.connect(), self._timeout)
        except Exception as exc:
            raise _translate(exc) from exc
        return self._client.kvstub

    async def _call(self, method: str, request: Any, *, key: str = "") -> Any:
        """One unary KV call with a deadline; errors translated."""
        stub = await self._kv()
        try:
            return await getattr(stub, method)(request, timeout=self._timeout, metadata=self._client.metadata)
        except Exception as exc:
            err = _translate(exc, key=key)
            if isinstance(err, RevisionCompacted):
                await self.refresh_compacted_revision()
                err.compacted_revision = self._compacted
                err.requested = getattr(request, "revision", 0)
            raise err from exc

    async def _txn(self, compare: list[Any], success: list[Any], failure: list[Any], *, key: str) -> Any:
        return await self._call("Txn", rpc.TxnRequest(compare=compare, success=success, failure=failure), key=key)

    async def _lease(self, ttl: int) -> int:
        try:
            lease = await self._client.lease(ttl)
        except Exception as exc:
            raise _translate(exc) from exc
        return int(lease.id)

    async def _revoke(self, lease_id: int) -> None:
        with contextlib.suppress(Exception):
            await self._client.revoke_lease(lease_id)

    # ---------------------------------------------------------------- objects

    async def create(self, key: str, obj: dict[str, Any], *, lease_ttl: int | None = None) -> dict[str, Any]:
        """Store ``obj`` at ``key`` if the key does not exist; return it with its resourceVersion.

        With ``lease_ttl`` (seconds) the key is attached to a new lease and disappears after that
        time (a DELETED event is seen). Raises ``KeyExists``.
        """
        k, value = _b(key), encode(obj)
        lease_id = await self._lease(lease_ttl) if lease_ttl else 0
        try:
            resp = await self._txn([_cmp(k, "create", 0)],
                                   [rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value, lease=lease_id))],
                                   [_op_range(k)], key=key)
        except BaseException:
            if lease_id:
                await self._revoke(lease_id)
            raise
        if not resp.succeeded:
            if lease_id:
                await self._revoke(lease_id)
            kv = _failure_kv(resp)
            raise KeyExists(key, _kv_object(kv) if kv is not None else None)
        return decode(value, resp.header.revision)

    async def get(self, key: str) -> dict[str, Any]:
        """The object at ``key``. Raises ``KeyNotFound``."""
        kv = await self._get_kv(key)
        if kv is None:
            raise KeyNotFound(key)
        return _kv_object(kv)

    async def _get_kv(self, key: str) -> Any | None:
        resp = await self._call("Range", rpc.RangeRequest(key=_b(key)), key=key)
        return resp.kvs[0] if resp.kvs else None

    async def list(self, prefix: str, *, revision: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """All objects under ``prefix`` at one revision, sorted by key, and that revision.

        Without ``revision`` the read is linearizable at the current store revision; with it, the
        state at that past revision (``RevisionCompacted`` if it is gone).
        """
        items, rev = await self.list_with_keys(prefix, revision=revision)
        return [obj for _, obj in items], rev

    async def list_with_keys(self, prefix: str, *,
                             revision: int | None = None) -> tuple[builtins.list[tuple[str, dict[str, Any]]], int]:
        """Like ``list`` but each item is ``(key, object)``. Pages through etcd at a pinned revision."""
        start, end = _b(prefix), prefix_range_end(_b(prefix))
        rev = revision or 0
        out: builtins.list[tuple[str, dict[str, Any]]] = []
        while True:
            resp = await self._call("Range", rpc.RangeRequest(key=start, range_end=end, limit=_LIST_PAGE,
                                                              revision=rev), key=prefix)
            if rev == 0:
                rev = resp.header.revision     # later pages read at the first page's revision
            out.extend((kv.key.decode(), _kv_object(kv)) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return out, rev
            start = resp.kvs[-1].key + b"\x00"

    async def update(self, key: str, obj: dict[str, Any], *, expected_rv: int | None,
                     lease_ttl: int | None = None) -> dict[str, Any]:
        """Replace the object at ``key``; return it with its new resourceVersion.

        ``expected_rv`` None (or 0) writes unconditionally, but the key must exist; otherwise the
        key's mod revision must equal it (``RevisionConflict`` with the current object if not).
        ``lease_ttl`` attaches a new lease; without it the key keeps the lease it has (if any).
        Raises ``KeyNotFound``.
        """
        k, value = _b(key), encode(obj)
        lease_id = await self._lease(lease_ttl) if lease_ttl else 0
        put = rpc.PutRequest(key=k, value=value, lease=lease_id, ignore_lease=not lease_id)
        compare = _cmp(k, "mod", expected_rv) if expected_rv else _exists(k)
        try:
            resp = await self._txn([compare], [rpc.RequestOp(request_put=put)], [_op_range(k)], key=key)
        except BaseException:
            if lease_id:
                await self._revoke(lease_id)
            raise
        if resp.succeeded:
            return decode(value, resp.header.revision)
        if lease_id:
            await self._revoke(lease_id)
        kv = _failure_kv(resp)
        if kv is None:
            raise KeyNotFound(key)
        raise RevisionConflict(key, _kv_object(kv), expected=expected_rv)

    async def guaranteed_update(
        self, key: str,
        try_update: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None] | dict[str, Any] | None],
        *, keep_lease: bool = True, max_tries: int = 20,
    ) -> dict[str, Any]:
        """Read-modify-write of ``key``, retried while another writer gets in between.

        ``try_update`` (sync or async) gets a deep copy of the current object (with its
        resourceVersion) and returns the new object, or ``None``/an unchanged object for "no
        write" (then the current object is returned). Its exceptions propagate. ``keep_lease``
        keeps the key's lease; False drops it. Raises ``KeyNotFound``, or ``RevisionConflict``
        after ``max_tries`` lost races.
        """
        # Writers of one key in this process take turns (fair FIFO), so they never conflict with each
        # other; only writers in other processes can make a try fail.
        lock = self._key_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                return await self._guaranteed_update(key, try_update, keep_lease=keep_lease, max_tries=max_tries)
        finally:
            if not lock.locked() and not lock._waiters:   # drop idle locks: keeps the map small
                self._key_locks.pop(key, None)

    async def _guaranteed_update(
        self, key: str,
        try_update: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None] | dict[str, Any] | None],
        *, keep_lease: bool, max_tries: int,
    ) -> dict[str, Any]:
        k = _b(key)
        kv = await self._get_kv(key)
        current: dict[str, Any] | None = None
        for attempt in range(max_tries):
            if attempt >= 2:
                # Lost twice: other writers are busy on this key. Spread out (jittered, growing, at most
                # 50 ms), then read afresh, rather than racing them in lockstep through max_tries.
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** attempt)))
                kv = await self._get_kv(key)
            if kv is None:
                raise KeyNotFound(key)
            current = _kv_object(kv)
            result = try_update(copy.deepcopy(current))
            new = await result if inspect.isawaitable(result) else result
            if new is None or _without_rv(new) == _without_rv(current):
                return current
            value = encode(new)
            put = rpc.PutRequest(key=k, value=value, lease=kv.lease if keep_lease else 0)
            resp = await self._txn([_cmp(k, "mod", kv.mod_revision)], [rpc.RequestOp(request_put=put)],
                                   [_op_range(k)], key=key)
            if resp.succeeded:
                return decode(value, resp.header.revision)
            kv = _failure_kv(resp)       # the winner's version: the first retry uses it without a read
        raise RevisionConflict(key, current)

    async def delete(self, key: str, *, expected_rv: int | None = None) -> dict[str, Any]:
        """Delete ``key``; return the last object with resourceVersion = the delete's revision.

        Raises ``KeyNotFound``, or ``RevisionConflict`` if ``expected_rv`` (when given) is stale.
        """
        k = _b(key)
        compare = _cmp(k, "mod", expected_rv) if expected_rv else _exists(k)
        resp = await self._txn([compare],
                               [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k, prev_kv=True))],
                               [_op_range(k)], key=key)
        if resp.succeeded:
            prev = resp.responses[0].response_delete_range.prev_kvs
            if prev:
                return decode(prev[0].value, resp.header.revision)
            raise KeyNotFound(key)
        kv = _failure_kv(resp)
        if kv is None:
            raise KeyNotFound(key)
        raise RevisionConflict(key, _kv_object(kv), expected=expected_rv)

    # ---------------------------------------------------------------- raw values (allocators)

    async def put_raw(self, key: str, value: bytes) -> int:
        """Store bytes at ``key`` unconditionally; return the write's revision."""
        resp = await self._call("Put", rpc.PutRequest(key=_b(key), value=value), key=key)
        return int(resp.header.revision)

    async def get_raw(self, key: str) -> bytes | None:
        """The bytes at ``key``, or ``None``."""
        kv = await self._get_kv(key)
        return bytes(kv.value) if kv is not None else None

    async def get_raw_with_revision(self, key: str) -> tuple[bytes | None, int]:
        """The bytes at ``key`` (or ``None``) and its mod revision (0 if absent)."""
        kv = await self._get_kv(key)
        return (bytes(kv.value), int(kv.mod_revision)) if kv is not None else (None, 0)

    async def cas_raw(self, key: str, value: bytes, *, expected_rv: int) -> bool:
        """Write bytes if the key's mod revision is ``expected_rv`` (0: the key must not exist)."""
        k = _b(key)
        compare = _cmp(k, "mod", expected_rv) if expected_rv else _cmp(k, "create", 0)
        resp = await self._txn([compare], [rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=value))], [],
                               key=key)
        return bool(resp.succeeded)

    # ---------------------------------------------------------------- revisions

    async def current_revision(self) -> int:
        """The store's current revision (linearizable)."""
        resp = await self._call("Range", rpc.RangeRequest(key=b"\x00", count_only=True))
        return int(resp.header.revision)

    async def changes_since(self, prefix: str, revision: int) -> tuple[int, int, int]:
        """``(keys under prefix now, of those modified after revision, store revision)`` in one read.

        When the second number is 0 and the first equals the number of keys at ``revision``, the
        prefix's content is the same now as at ``revision`` (the watch cache's progress check).
        Only keys are transferred, and only the changed ones.
        """
        k = _b(prefix)
        resp = await self._call("Range", rpc.RangeRequest(key=k, range_end=prefix_range_end(k), keys_only=True,
                                                          min_mod_revision=revision + 1), key=prefix)
        # etcd applies min_mod_revision to the returned kvs but not to count.
        return int(resp.count), len(resp.kvs), int(resp.header.revision)

    async def compact(self, revision: int) -> None:
        """Drop history older than ``revision`` (waits until etcd applied it physically).

        Compacting at or below an earlier compaction is a no-op.
        """
        try:
            await self._call("Compact", rpc.CompactionRequest(revision=revision, physical=True))
        except RevisionCompacted:
            pass
        self._compacted = max(self._compacted, revision)

    async def compacted_revision(self) -> int:
        """The oldest revision still in etcd's history as far as this process knows (0: none known).

        Reads at it, and watches starting at it, work; anything older gives ``RevisionCompacted``.
        Learnt at connect, from this process's ``compact`` calls and from compaction errors; another
        process's later compaction is seen only when it causes an error (or after
        ``refresh_compacted_revision``).
        """
        return self._compacted

    async def refresh_compacted_revision(self) -> int:
        """Find etcd's compacted revision exactly (binary search with ~log2(revision) tiny reads)."""
        stub = await self._kv()

        async def readable(rev: int) -> bool:
            try:
                await stub.Range(rpc.RangeRequest(key=b"\x00", count_only=True, revision=rev),
                                 timeout=self._timeout, metadata=self._client.metadata)
                return True
            except Exception as exc:
                err = _translate(exc)
                if isinstance(err, RevisionCompacted):
                    return False
                raise err from exc

        low = max(1, self._compacted)
        if await readable(low):
            return self._compacted
        high = await self.current_revision()      # always readable
        while high - low > 1:                     # invariant: low compacted, high readable
            mid = (low + high) // 2
            if await readable(mid):
                high = mid
            else:
                low = mid
        self._compacted = max(self._compacted, high)
        return self._compacted

    # ---------------------------------------------------------------- watch

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncGenerator[WatchEvent, None]:
        """Every change under ``prefix`` with revision >= ``start_revision``, in order, then live.

        One etcd watch (with ``prev_kv``), cancelled when the iterator ends, is closed
        (``aclose``) or its task is cancelled. Raises ``RevisionCompacted`` if ``start_revision``
        is (or becomes, before it was delivered) older than etcd's history, and
        ``StorageUnavailable`` when the connection breaks; the iterator ends quietly after
        ``close()``. Events of one revision (a transaction) are never split by an error.
        """
        if start_revision < 1:
            raise ValueError("start_revision must be >= 1")
        if start_revision < self._compacted:
            raise RevisionCompacted(self._compacted, requested=start_revision)
        k = _b(prefix)
        try:
            watch = await self._client.watch(k, range_end=prefix_range_end(k), start_revision=start_revision,
                                             prev_kv=True)
        except Exception as exc:
            raise self._watch_error(exc, start_revision) from exc
        try:
            async for ev in watch:
                yield _event(ev)
        except Exception as exc:
            raise self._watch_error(exc, start_revision) from exc
        finally:
            # Shielded so that a cancelled consumer still removes its watch from etcd; bounded in case
            # the stream is gone and aetcd's request queue does not drain.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(watch.cancel()), self._timeout)
        if not self._closed:
            raise StorageUnavailable(f"etcd watch of {prefix!r} ended")

    def _watch_error(self, exc: BaseException, start_revision: int) -> StorageError:
        err = _translate(exc)
        if isinstance(err, RevisionCompacted):
            self._compacted = max(self._compacted, err.compacted_revision)
            err.requested = start_revision
        return err


def _event(ev: Any) -> WatchEvent:
    """An ``aetcd`` event as a ``WatchEvent``."""
    kv, prev = ev.kv, ev.prev_kv
    if prev is not None and not prev.key:
        prev = None          # aetcd wraps etcd's empty prev_kv message (a create) instead of giving None
    key, rev = kv.key.decode(), int(kv.mod_revision)
    prev_obj = decode(prev.value, prev.mod_revision) if prev is not None else None
    if ev.kind == "DELETE":
        if prev is not None:
            obj = decode(prev.value, rev)
        else:
            # etcd had compacted the previous value away: all that is known is the key.
            obj = {"metadata": {"name": key.rsplit("/", 1)[-1], "resourceVersion": str(rev)}}
        return WatchEvent("DELETED", obj, prev_obj, rev, key)
    kind = "ADDED" if kv.create_revision == kv.mod_revision else "MODIFIED"
    return WatchEvent(kind, decode(kv.value, rev), prev_obj, rev, key)
