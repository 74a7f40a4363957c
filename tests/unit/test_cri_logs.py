"""kubelet.logs: CRI log files (``<RFC3339Nano> <stream> <F|P> <text>``) read, tailed, filtered and followed."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubelet.logs import follow_log, iter_log_lines, parse_timestamp, read_log

SAMPLE = (
    "2024-05-01T10:00:00.000000001Z stdout F first\n"
    "2024-05-01T10:00:01.5Z stderr F oops\n"
    "2024-05-01T10:00:02.000000000Z stdout P hello,\n"
    "2024-05-01T10:00:02.100000000Z stderr F interleaved\n"
    "2024-05-01T10:00:02.200000000Z stdout P  wor\n"
    "2024-05-01T10:00:02.300000000Z stdout F ld\n"
    "2024-05-01T10:00:03+00:00 stdout F \n"
    "garbage that is not a CRI line\n"
    "2024-05-01T10:00:04.000000000Z stdout F last one\n"
)


@pytest.fixture()
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "main" / "0.log"
    path.parent.mkdir()
    path.write_text(SAMPLE)
    return path


def test_parse_timestamp() -> None:
    assert parse_timestamp("1970-01-01T00:00:01.000000002Z") == 1_000_000_002
    assert parse_timestamp("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_timestamp("1970-01-01T00:00:01Z") == 1_000_000_000
    assert parse_timestamp("1970-01-01T01:00:01+01:00") == 1_000_000_000
    assert parse_timestamp("1970-01-01T00:00:01.25-00:30") == 1_801_250_000_000


def test_read_log_joins_partial_lines_per_stream(log_file: Path) -> None:
    assert list(read_log(log_file)) == ["first\n", "oops\n", "interleaved\n", "hello, world\n", "\n", "last one\n"]


def test_read_log_timestamps_use_the_first_fragment(log_file: Path) -> None:
    lines = list(read_log(log_file, timestamps=True))
    assert lines[0] == "2024-05-01T10:00:00.000000001Z first\n"
    assert lines[3] == "2024-05-01T10:00:02.000000000Z hello, world\n"


def test_read_log_tail_and_since(log_file: Path) -> None:
    assert list(read_log(log_file, tail_lines=2)) == ["\n", "last one\n"]
    assert list(read_log(log_file, tail_lines=0)) == []
    assert list(read_log(log_file, tail_lines=100)) == list(read_log(log_file))
    since = datetime(2024, 5, 1, 10, 0, 2, tzinfo=UTC)
    assert list(read_log(log_file, since=since)) == ["interleaved\n", "hello, world\n", "\n", "last one\n"]
    assert list(read_log(log_file, since=since.timestamp() + 1.5)) == ["last one\n"]
    assert list(read_log(log_file, since=since.replace(tzinfo=None), tail_lines=1)) == ["last one\n"]


def test_read_log_missing_file_and_unfinished_fragment(tmp_path: Path) -> None:
    assert list(read_log(tmp_path / "nope.log")) == []
    path = tmp_path / "x.log"
    path.write_text("2024-05-01T10:00:00Z stdout F a\n2024-05-01T10:00:01Z stdout P no newline yet")
    assert list(read_log(path)) == ["a\n", "no newline yet"]


def test_iter_log_lines_streams_and_bad_utf8() -> None:
    lines = list(iter_log_lines([b"2024-05-01T10:00:00Z stderr F caf\xc3\xa9 \xff\n"]))
    assert lines[0].stream == "stderr" and lines[0].text == "café \ufffd\n"


async def test_follow_log_yields_existing_then_new_lines_until_stopped(log_file: Path) -> None:
    stop = asyncio.Event()
    got: list[str] = []

    async def consume() -> None:
        async for line in follow_log(log_file, tail_lines=1, stop=stop, poll_interval=0.02):
            got.append(line)

    task = asyncio.create_task(consume())
    await _until(lambda: got == ["last one\n"])
    with open(log_file, "a") as f:
        f.write("2024-05-01T10:00:05Z stdout P new \n")
        f.flush()
        await asyncio.sleep(0.1)
        assert got == ["last one\n"]  # a fragment waits for the rest of its line
        f.write(
            "2024-05-01T10:00:05Z stdout F line\n2024-05-01T10:00:06Z stderr F half"
        )  # a physical line written in two goes
        f.flush()
        await _until(lambda: got == ["last one\n", "new line\n"])
        f.write(" and the rest\n")
    await _until(lambda: got[-1] == "half and the rest\n")
    stop.set()
    await asyncio.wait_for(task, 2)


async def test_follow_log_waits_for_the_file_and_restarts_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    stop = asyncio.Event()
    got: list[str] = []

    async def consume() -> None:
        async for line in follow_log(path, timestamps=True, stop=stop, poll_interval=0.02):
            got.append(line)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    path.write_text("2024-05-01T10:00:00Z stdout F one\n")
    await _until(lambda: got == ["2024-05-01T10:00:00Z one\n"])
    tmp = tmp_path / "0.log.new"
    tmp.write_text("2024-05-01T10:00:09Z stdout F two\n")
    os.replace(tmp, path)
    await _until(lambda: got[-1:] == ["2024-05-01T10:00:09Z two\n"])
    stop.set()
    await asyncio.wait_for(task, 2)


async def test_follow_log_stops_when_asked_even_without_a_file(tmp_path: Path) -> None:
    stop = asyncio.Event()

    async def consume() -> list[str]:
        return [line async for line in follow_log(tmp_path / "never.log", stop=stop, poll_interval=0.02)]

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    stop.set()
    assert await asyncio.wait_for(task, 2) == []


async def _until(cond, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
