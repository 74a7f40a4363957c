"""Container logs in the CRI log format, as containerd writes them.

Each line of a log file is ``<RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>``: ``F`` ends a
logical line, ``P`` is a fragment (containerd splits long lines) that the next lines of the same
stream continue. ``read_log`` yields the logical lines of a file (each ending in ``\\n``, but a final
unfinished fragment); ``follow_log`` does the same, then keeps yielding lines as they are written
until asked to stop.

    2024-05-01T10:00:00.123456789Z stdout P hello,
    2024-05-01T10:00:00.123456789Z stdout F  world        →  "hello, world\\n"
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class LogLine:
    timestamp: str  # RFC3339Nano, as in the file (of the line's first fragment)
    stream: str  # "stdout" | "stderr"
    text: str  # the whole logical line, with its "\n" (none for an unfinished final fragment)

    @property
    def time_ns(self) -> int:
        return parse_timestamp(self.timestamp)

    def render(self, timestamps: bool = False) -> str:
        return f"{self.timestamp} {self.text}" if timestamps else self.text


def parse_timestamp(value: str) -> int:
    """An RFC3339(Nano) timestamp as unix nanoseconds (``Z`` or a numeric offset; 0 to 9 fraction digits)."""
    main, frac, rest = value, "", ""
    if "." in value:
        main, _, tail = value.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        frac, rest = tail[:digits], tail[digits:]
    else:
        for i in range(10, len(value)):  # the zone starts after the date and time
            if value[i] in "Z+-":
                main, rest = value[:i], value[i:]
                break
    if rest in ("Z", "z", ""):
        rest = "+00:00"
    seconds = datetime.fromisoformat(main + rest).timestamp()
    return int(seconds) * 1_000_000_000 + int((frac + "000000000")[:9])


def _since_ns(since: datetime | float | int | None) -> int | None:
    if since is None:
        return None
    if isinstance(since, datetime):
        aware = since if since.tzinfo else since.replace(tzinfo=UTC)
        return int(aware.timestamp()) * 1_000_000_000 + aware.microsecond * 1000
    return int(since * 1_000_000_000)  # unix seconds


class _Assembler:
    """Turns physical CRI lines into logical ``LogLine``s, joining ``P`` fragments per stream."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[str, list[str]]] = {}

    def feed(self, raw: bytes) -> LogLine | None:
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[1] not in ("stdout", "stderr"):
            return None  # not a CRI log line
        timestamp, stream, tag = parts[0], parts[1], parts[2]
        text = parts[3] if len(parts) == 4 else ""
        first_ts, fragments = self._pending.pop(stream, (timestamp, []))
        fragments.append(text)
        if tag.split(":", 1)[0] == "P":
            self._pending[stream] = (first_ts, fragments)
            return None
        return LogLine(first_ts, stream, "".join(fragments) + "\n")

    def flush(self) -> list[LogLine]:
        """Unfinished fragments as lines without ``\\n`` (the end of a finished file)."""
        out = [LogLine(ts, stream, "".join(frags)) for stream, (ts, frags) in self._pending.items()]
        self._pending.clear()
        return sorted(out, key=lambda line: line.timestamp)


def iter_log_lines(raw_lines: Iterable[bytes], *, flush: bool = True) -> Iterator[LogLine]:
    """The logical lines of physical CRI log lines."""
    assembler = _Assembler()
    for raw in raw_lines:
        line = assembler.feed(raw)
        if line is not None:
            yield line
    if flush:
        yield from assembler.flush()


def _select(
    lines: Iterable[LogLine], tail_lines: int | None, since: datetime | float | int | None
) -> Iterable[LogLine]:
    since_ns = _since_ns(since)
    if since_ns is not None:
        lines = (line for line in lines if line.time_ns >= since_ns)
    if tail_lines is not None:
        return deque(lines, maxlen=max(0, tail_lines))
    return lines


def read_log(
    path: str | os.PathLike[str],
    *,
    tail_lines: int | None = None,
    since: datetime | float | int | None = None,
    timestamps: bool = False,
) -> Iterator[str]:
    """The logical lines of the CRI log file at ``path`` (none if it does not exist).

    ``tail_lines``: only the last N; ``since``: only lines at or after it (a datetime, naive = UTC, or
    unix seconds); ``timestamps``: prefix each line with its RFC3339Nano timestamp and a space.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below; a missing file is no log
    except FileNotFoundError:
        return
    with f:
        for line in _select(iter_log_lines(f), tail_lines, since):
            yield line.render(timestamps)


async def follow_log(
    path: str | os.PathLike[str],
    *,
    tail_lines: int | None = None,
    since: datetime | float | int | None = None,
    timestamps: bool = False,
    stop: asyncio.Event | None = None,
    poll_interval: float = 0.1,
) -> AsyncIterator[str]:
    """Like ``read_log``, then every new logical line as it is written, until ``stop`` is set (or the
    caller stops iterating). Waits for the file to appear; starts over if it is truncated or replaced.
    Unfinished fragments are yielded when ``stop`` is set.
    """
    stop = stop or asyncio.Event()

    async def wait() -> bool:
        """Sleep one poll interval; True when asked to stop."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives
        # just as the inner wait finishes, and a follow must end when its reader goes away.
        try:
            async with asyncio.timeout(poll_interval):
                await stop.wait()
        except TimeoutError:
            return False
        return True

    while True:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed in the finally below
            break
        except FileNotFoundError:
            if await wait():
                return
    try:
        assembler = _Assembler()
        # What is there already (whole physical lines only), with tail/since applied.
        data = f.read()
        complete, _, partial = data.rpartition(b"\n")
        buffer = partial
        initial = (assembler.feed(raw) for raw in complete.split(b"\n") if complete)
        for line in _select((line for line in initial if line is not None), tail_lines, since):
            yield line.render(timestamps)
        since_ns = _since_ns(since)
        inode = os.fstat(f.fileno()).st_ino
        while True:
            chunk = f.read(_READ_CHUNK)
            if chunk:
                buffer += chunk
                *raws, buffer = buffer.split(b"\n")
                for raw in raws:
                    got = assembler.feed(raw)
                    if got is not None and (since_ns is None or got.time_ns >= since_ns):
                        yield got.render(timestamps)
                continue
            if await wait():
                for line in assembler.flush():
                    yield line.render(timestamps)
                return
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if st.st_ino != inode or st.st_size < f.tell():  # rotated or truncated: read the new file
                f.close()
                f = open(path, "rb")  # noqa: SIM115 - closed in the finally below
                inode, buffer, assembler = os.fstat(f.fileno()).st_ino, b"", _Assembler()
    finally:
        f.close()
