"""Activation records in the gateway's SQLite store (serverless/activations.py): one transaction per
flush, retention per function in SQL, the loss window, deletion with the function, the bounded queue."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from serverless.activations import DB_NAME, ActivationRecorder, ActivationStore, activation_object

pytestmark = pytest.mark.timeout(20)


def rec(i: int, fn: str = "add", ns: str = "default", second: int | None = None) -> dict[str, Any]:
    s = i if second is None else second
    return {"id": f"{i:032x}", "namespace": ns, "function": fn, "start": f"2024-01-01T00:{s // 60:02d}:"
            f"{s % 60:02d}.000000Z", "durationMs": 1.0, "initMs": 0.0, "status": "success", "statusCode": 200,
            "result": str(i), "truncated": False, "logs": "", "pod": "p", "async": False}


def names(items: list[bytes]) -> list[int]:
    return [int(orjson.loads(i)["metadata"]["name"], 16) for i in items]


@pytest.fixture()
def store(tmp_path: Path) -> Any:
    s = ActivationStore(tmp_path / "gw" / DB_NAME)
    yield s
    s.close()


def test_the_database_is_in_wal_mode_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / DB_NAME
    first = ActivationStore(path)
    assert first.write([rec(1), rec(2)], retention=10) == 2
    first.close()  # (a crashed process closes nothing: a committed transaction is on disk either way)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    again = ActivationStore(path)
    items, rv = again.list("default")
    assert names(items) == [2, 1] and rv == "2"
    assert orjson.loads(again.get("default", f"{1:032x}") or b"") == activation_object(rec(1))
    again.close()


def test_a_write_is_one_transaction_with_its_retention(store: ActivationStore) -> None:
    statements: list[str] = []
    store._writer.set_trace_callback(statements.append)
    store.write([rec(i) for i in range(1, 6)] + [rec(9, fn="other")], retention=3)
    store._writer.set_trace_callback(None)
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT"
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    assert sum(s.startswith("INSERT") for s in statements) == 6  # executemany: traced per row, one transaction
    assert names(store.list("default", "add")[0]) == [5, 4, 3]
    assert names(store.list("default", "other")[0]) == [9]


def test_retention_keeps_the_newest_by_start_per_function(store: ActivationStore) -> None:
    # Written out of order (async calls finish late): retention goes by spec.start, not by write order.
    store.write([rec(5), rec(1), rec(4)], retention=3)
    store.write([rec(2), rec(3), rec(7, fn="b", ns="prod")], retention=3)
    assert names(store.list("default", "add")[0]) == [5, 4, 3]
    assert names(store.list("prod")[0]) == [7]
    # Only the functions just written are trimmed: "prod/b" stays as it was under a smaller retention.
    store.write([rec(6)], retention=1)
    assert names(store.list("default", "add")[0]) == [6] and store.count() == 2


def test_a_record_written_twice_is_stored_once(store: ActivationStore) -> None:
    assert store.write([rec(1)], retention=10) == 1
    assert store.write([rec(1), rec(2)], retention=10) == 1
    assert store.count() == 2


def test_reads_and_deletes(store: ActivationStore) -> None:
    store.write([rec(1), rec(2), rec(3, fn="other"), rec(4, ns="prod")], retention=10)
    assert names(store.list()[0]) == [4, 3, 2, 1]
    assert names(store.list("default", limit=2)[0]) == [3, 2]
    assert store.list("default", "nothing") == ([], "4")
    gone = store.delete("default", f"{2:032x}")
    assert gone is not None and orjson.loads(gone)["metadata"]["name"] == f"{2:032x}"
    assert store.delete("default", f"{2:032x}") is None and store.get("default", f"{2:032x}") is None
    assert store.delete_function("default", "add") == 1
    assert names(store.list()[0]) == [4, 3]
    assert store.prune({"prod/other"}) == 2 and store.count() == 0


async def test_flush_writes_the_queue_and_the_bound_drops_the_oldest(store: ActivationStore) -> None:
    recorder = ActivationRecorder(store, max_queue=3, retention=10)
    for i in range(1, 6):
        recorder.record(rec(i))
    assert len(recorder) == 3 and recorder.dropped.labels("queue-full")._value.get() == 2
    assert await recorder.flush() == 3
    assert len(recorder) == 0 and names(store.list()[0]) == [5, 4, 3]
    assert recorder.written._value.get() == 3
    assert await recorder.flush() == 0


async def test_a_failed_flush_keeps_the_batch_for_the_next(store: ActivationStore) -> None:
    recorder = ActivationRecorder(store, retention=10)
    recorder.record(rec(1))
    real = store.write

    def broken(records: list[dict[str, Any]], retention: int) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    store.write = broken  # type: ignore[method-assign]
    with pytest.raises(sqlite3.OperationalError):
        await recorder.flush()
    recorder.record(rec(2))
    assert len(recorder) == 2
    store.write = real  # type: ignore[method-assign]
    assert await recorder.flush() == 2 and store.count() == 2


async def test_loss_window_is_the_unflushed_queue_and_a_stop_flushes(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    store = ActivationStore(path)
    recorder = ActivationRecorder(store, flush_interval=3600)
    task = asyncio.create_task(recorder.run())
    recorder.record(rec(1))
    await recorder.flush()
    recorder.record(rec(2))  # finished within the flush interval: only in memory
    # As after kill -9: another process opening the database sees what was flushed, nothing else.
    other = ActivationStore(path)
    assert names(other.list()[0]) == [1]
    recorder.stop()  # a normal stop writes the rest
    await asyncio.wait_for(task, 5)
    assert names(other.list()[0]) == [2, 1]
    other.close()
    store.close()


async def test_flushes_come_every_interval(store: ActivationStore) -> None:
    recorder = ActivationRecorder(store, flush_interval=0.05)
    task = asyncio.create_task(recorder.run())
    recorder.record(rec(1))
    for _ in range(100):
        if store.count():
            break
        await asyncio.sleep(0.01)
    assert store.count() == 1
    recorder.stop()
    await asyncio.wait_for(task, 5)


async def test_forget_deletes_rows_and_queued_records_of_a_deleted_function(store: ActivationStore) -> None:
    recorder = ActivationRecorder(store)
    recorder.record(rec(1))
    recorder.record(rec(2, fn="other"))
    await recorder.flush()
    recorder.record(rec(3))
    recorder.record(rec(4, fn="other"))
    assert await recorder.forget("default", "add") == 1
    assert len(recorder) == 1
    await recorder.flush()
    assert names(store.list()[0]) == [4, 2]
    assert await recorder.prune(["default/add"]) == 2 and store.count() == 0
