"""Activation records: one per function call, kept by the gateway in a SQLite database of its own.

::

    gateway ── record(dict) ──▶ deque (at most 10 000; when full the oldest is dropped and counted)
                                  │ every flush_interval seconds (and once more on stop)
                                  ▼
               ActivationStore.write(batch)   in a thread (asyncio.to_thread), ONE transaction:
                 INSERT OR IGNORE every record (executemany; a retried id is written once)
                 then, per function just written, DELETE what lies beyond ``retention``
                 (oldest spec.start first)
                                  │ sqlite error (disk full, locked): the batch goes back in the queue
    function deleted (informer) ─▶ forget(ns, name): its queued records dropped, its rows deleted
    the gateway's GET/DELETE /-/activations… read and delete rows (serverless/gateway.py)

**Why not etcd**: writing every call as an apiserver object cost the gateway about half its CPU
(a create per call, then a retention delete per call), plus the apiserver's and etcd's. A record is
a finished fact that only its function's readers ask for: it needs neither watch nor
resourceVersions, so the gateway keeps it next to itself (``--state-dir/activations.db``) and the
apiserver proxies reads to it (docs/serverless.md, Activation).

**Loss window**: records still in the queue (calls finished within the last flush interval) and
the batch being written are lost if the process is killed (``kill -9``); a normal stop flushes
them, bounded by ``stop_timeout``. A committed batch survives a crash of the process (WAL).

A record is a dict with ``id``, ``namespace``, ``function`` and the other ``spec`` fields of an
Activation (docs/serverless.md, Objects): ``start``, ``durationMs``, ``initMs``, ``status``,
``statusCode``, ``result``, ``truncated``, ``logs``, ``pod``, ``async``, and ``trigger`` (the
Trigger's name) only when a trigger's rule made the call (serverless/triggers.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("minik8s.serverless.activations")

API_VERSION = "minik8s.io/v1"
FUNCTION_LABEL = "minik8s.io/function"
DB_NAME = "activations.db"
MAX_QUEUE = 10_000
STOP_TIMEOUT = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS activations (
    seq       INTEGER PRIMARY KEY,   -- write order: ties of start are broken by it
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,         -- the activation id
    function  TEXT NOT NULL,
    start     TEXT NOT NULL,         -- spec.start (RFC 3339, fixed width: sorts as text)
    object    BLOB NOT NULL          -- the whole Activation object, JSON
);
CREATE UNIQUE INDEX IF NOT EXISTS activations_by_name ON activations (namespace, name);
CREATE INDEX IF NOT EXISTS activations_by_function ON activations (namespace, function, start, seq);
CREATE INDEX IF NOT EXISTS activations_by_start ON activations (start, seq);
"""
_INSERT = "INSERT OR IGNORE INTO activations (namespace, name, function, start, object) VALUES (?, ?, ?, ?, ?)"
# Rows of one function beyond the newest N (the index walks them newest first).
_TRIM = """
DELETE FROM activations WHERE namespace = ?1 AND function = ?2 AND seq NOT IN (
    SELECT seq FROM activations WHERE namespace = ?1 AND function = ?2 ORDER BY start DESC, seq DESC LIMIT ?3)
"""


def _created(start: str) -> str:
    """``creationTimestamp`` (whole seconds) of a record's ``start``."""
    head = start.split(".", 1)[0].rstrip("Z")
    return f"{head}Z" if head else ""


def _uid(activation_id: str) -> str | None:
    try:
        return str(uuid.UUID(hex=activation_id))
    except ValueError:
        return None


def activation_object(record: dict[str, Any]) -> dict[str, Any]:
    """The Activation object of one record (``id`` → metadata.name, the rest → spec)."""
    spec = {k: v for k, v in record.items() if k not in ("id", "namespace")}
    meta: dict[str, Any] = {"name": record["id"], "namespace": record["namespace"],
                            "labels": {FUNCTION_LABEL: record["function"]},
                            "creationTimestamp": _created(str(record.get("start") or ""))}
    uid = _uid(str(record["id"]))
    if uid:
        meta["uid"] = uid
    meta["resourceVersion"] = "1"
    return {"apiVersion": API_VERSION, "kind": "Activation", "metadata": meta, "spec": spec}


class ActivationStore:
    """The SQLite database (WAL) of one gateway. Blocking: call it from a thread (the recorder and
    the gateway do, with ``asyncio.to_thread``). One connection writes and one reads, each behind a
    lock, so a long read never waits on a flush and WAL lets both run at once.

    Reads answer raw JSON (``bytes``) of the stored objects: the gateway serves them without
    decoding them again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        # A second connection on ":memory:" would be another database.
        self._reader = self._connect() if str(path) != ":memory:" else self._writer
        if self._reader is self._writer:
            self._read_lock = self._write_lock

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL: a committed transaction survives a crash of this process (not of the host).
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        if self._reader is not self._writer:
            with self._read_lock:
                self._reader.close()

    # --- writes ------------------------------------------------------------------------------------

    def write(self, records: list[dict[str, Any]], retention: int) -> int:
        """Insert ``records`` and trim each function written to its newest ``retention`` rows, in one
        transaction. Returns the rows inserted (a record whose id is already stored is skipped)."""
        rows = [(r["namespace"], r["id"], r["function"], str(r.get("start") or ""),
                 orjson.dumps(activation_object(r))) for r in records]
        touched = sorted({(r["namespace"], r["function"]) for r in records})
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(_INSERT, rows)
                inserted = conn.total_changes - before
                for ns, fn in touched:
                    conn.execute(_TRIM, (ns, fn, retention))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return inserted

    def delete(self, namespace: str, name: str) -> bytes | None:
        """Delete one record; its object (JSON), or None when there was none."""
        with self._write_lock:
            row = self._writer.execute("DELETE FROM activations WHERE namespace = ? AND name = ? RETURNING object",
                                       (namespace, name)).fetchone()
        return bytes(row[0]) if row else None

    def delete_function(self, namespace: str, function: str) -> int:
        """Delete every record of one function; how many."""
        with self._write_lock:
            cur = self._writer.execute("DELETE FROM activations WHERE namespace = ? AND function = ?",
                                       (namespace, function))
            return cur.rowcount

    def prune(self, keep: set[str]) -> int:
        """Delete the records of every function not in ``keep`` ("NS/NAME"): those deleted while the
        gateway was down. How many rows went."""
        with self._read_lock:
            present = self._reader.execute("SELECT DISTINCT namespace, function FROM activations").fetchall()
        gone = 0
        for ns, fn in present:
            if f"{ns}/{fn}" not in keep:
                gone += self.delete_function(ns, fn)
        return gone

    # --- reads -------------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> bytes | None:
        with self._read_lock:
            row = self._reader.execute("SELECT object FROM activations WHERE namespace = ? AND name = ?",
                                       (namespace, name)).fetchone()
        return bytes(row[0]) if row else None

    def list(self, namespace: str | None = None, function: str | None = None,
             limit: int | None = None) -> tuple[list[bytes], str]:
        """Objects (JSON) newest first (by spec.start, then write order), and the list's
        resourceVersion (the last write's sequence number)."""
        where: list[str] = []
        args: list[str | int] = []
        if namespace is not None:
            where.append("namespace = ?")
            args.append(namespace)
        if function is not None:
            where.append("function = ?")
            args.append(function)
        sql = "SELECT object FROM activations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start DESC, seq DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        with self._read_lock:
            rows = self._reader.execute(sql, args).fetchall()
            last = self._reader.execute("SELECT COALESCE(MAX(seq), 0) FROM activations").fetchone()[0]
        return [bytes(r[0]) for r in rows], str(last)

    def count(self) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT COUNT(*) FROM activations").fetchone()[0])


class ActivationRecorder:
    """Queues records and writes them to ``store`` (see the module docstring)."""

    def __init__(self, store: ActivationStore, *, flush_interval: float = 1.0, retention: int = 1000,
                 max_queue: int = MAX_QUEUE, stop_timeout: float = STOP_TIMEOUT,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.retention = retention
        self.max_queue = max_queue
        self.stop_timeout = stop_timeout
        self._queue: deque[dict[str, Any]] = deque()
        self._stop = asyncio.Event()
        self.dropped = Counter("gateway_activations_dropped_total",
                               "Activation records dropped (queue full)", ["reason"], registry=metrics_registry)
        self.written = Counter("gateway_activations_written_total", "Activation records written",
                               registry=metrics_registry)

    def __len__(self) -> int:
        return len(self._queue)

    def record(self, activation: dict[str, Any]) -> None:
        """Queue one record; never blocks. When the queue is full the oldest record is dropped."""
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self.dropped.labels("queue-full").inc()
        self._queue.append(activation)

    async def flush(self) -> int:
        """Write every queued record in one transaction; returns how many rows were inserted.
        On a database error the batch goes back in front of the queue (the bound still applies)
        and the error is raised."""
        batch = list(self._queue)
        self._queue.clear()
        if not batch:
            return 0
        try:
            done = await asyncio.to_thread(self.store.write, batch, self.retention)
        except BaseException:
            self._requeue(batch)
            raise
        self.written.inc(done)
        return done

    def _requeue(self, batch: list[dict[str, Any]]) -> None:
        merged = [*batch, *self._queue]
        overflow = max(0, len(merged) - self.max_queue)
        if overflow:
            self.dropped.labels("queue-full").inc(overflow)
        self._queue = deque(merged[overflow:])

    async def forget(self, namespace: str, function: str) -> int:
        """Function NS/NAME was deleted: drop its queued records and delete its rows."""
        self._queue = deque(r for r in self._queue if (r["namespace"], r["function"]) != (namespace, function))
        return await asyncio.to_thread(self.store.delete_function, namespace, function)

    async def prune(self, keep: Iterable[str]) -> int:
        """Delete the rows of functions that no longer exist (``keep``: every existing "NS/NAME")."""
        return await asyncio.to_thread(self.store.prune, set(keep))

    async def run(self) -> None:
        """Flush every ``flush_interval`` until :meth:`stop`; then flush what is left, for at most
        ``stop_timeout`` seconds."""
        self._stop.clear()
        try:
            while not self._stop.is_set():
                await self._wait(self.flush_interval)
                await self._flush_logged()
        finally:
            if self._queue:
                try:
                    await asyncio.wait_for(self.flush(), self.stop_timeout)
                except TimeoutError:
                    log.warning("stopping: %d activation records not written in %gs", len(self._queue),
                                self.stop_timeout)
                except Exception:
                    log.exception("stopping: %d activation records not written", len(self._queue))

    def stop(self) -> None:
        self._stop.set()

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("writing %d activation records failed; retrying at the next flush", len(self._queue))
