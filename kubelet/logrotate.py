"""Container log rotation by size, as Kubernetes' container log manager does it.

::

    every --container-log-monitor-interval (10s), for each RUNNING container with a log file:
        remove leftover *.tmp files
        remove the oldest rotated files, so that after this rotation at most max-files files remain
        gzip every rotated file but the newest          (main/0.log.20240501-100000.123456.gz)
        if main/0.log > --container-log-max-size (10Mi):
            rename it to main/0.log.<UTC timestamp>      (containerd keeps writing to the renamed file…)
            ReopenContainerLog                           (…until it opens a new main/0.log)
            if the runtime refuses, rename it back       (never lose the current log)

So one container's logs take at most ``max_files`` files of about ``max_size`` each (plus what the
container writes during one monitor interval). ``logs`` reads the current file only, as in Kubernetes;
``logs --follow`` follows the new file after a rotation (``kubelet/logs.py``). A removed container's
files (current and rotated) are deleted by ``remove_logs`` (the GC calls it).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import gzip
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubelet import runtime as rt

log = logging.getLogger(__name__)

TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"  # Kubernetes' "20060102-150405", plus microseconds (fast rotations)
COMPRESS_SUFFIX = ".gz"
TMP_SUFFIX = ".tmp"


def rotated_files(path: str) -> list[str]:
    """The rotated files of the log at ``path`` (compressed or not, no temporaries), oldest first."""
    prefix = path + "."
    found = [p for p in glob.glob(glob.escape(path) + ".*")
             if p.startswith(prefix) and not p.endswith(TMP_SUFFIX)]
    # The timestamp is fixed-width and sorts as text; ".gz" never changes the order of two stamps.
    return sorted(found, key=lambda p: p[len(prefix):].removesuffix(COMPRESS_SUFFIX))


def remove_logs(path: str) -> None:
    """Remove a container's log file and every rotated or temporary file of it. Blocking."""
    for p in [path, *glob.glob(glob.escape(path) + ".*")]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)


def _compress(path: str) -> None:
    """gzip ``path`` to ``path.gz`` through a temporary file, then remove ``path``."""
    tmp = path + COMPRESS_SUFFIX + TMP_SUFFIX
    with open(path, "rb") as src, gzip.open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.rename(tmp, path + COMPRESS_SUFFIX)
    os.remove(path)


@dataclass
class LogRotator:
    """Rotates the CRI log files of the runtime's running containers. ``run()`` until cancelled."""

    runtime: rt.Runtime
    max_size: int = 10 * 1024 * 1024  # --container-log-max-size
    max_files: int = 5  # --container-log-max-files (the current file included; at least 2)
    interval: float = 10.0  # --container-log-monitor-interval
    clock: Callable[[], float] = time.time
    rotations: int = 0
    _last_stamp: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.max_size <= 0:
            raise ValueError("container-log-max-size must be positive")
        if self.max_files < 2:
            raise ValueError("container-log-max-files must be at least 2")

    def _stamp(self) -> str:
        now = self.clock()
        stamp = time.strftime(TIMESTAMP_FORMAT, time.gmtime(now)) + f".{int(now * 1e6) % 1_000_000:06d}"
        if stamp <= self._last_stamp:  # two rotations within a microsecond, or a clock step back
            stamp = self._last_stamp + "0"
        self._last_stamp = stamp
        return stamp

    def cleanup(self, path: str) -> None:
        """Before a rotation: no temporaries, at most ``max_files - 2`` rotated files (the rotation adds one),
        every rotated file but the newest compressed. Blocking."""
        for tmp in glob.glob(glob.escape(path) + ".*" + TMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        rotated = rotated_files(path)
        keep = self.max_files - 2
        excess, rotated = rotated[: max(0, len(rotated) - keep)], rotated[max(0, len(rotated) - keep):]
        for old in excess:
            with contextlib.suppress(FileNotFoundError):
                os.remove(old)
        for old in rotated[:-1]:
            if not old.endswith(COMPRESS_SUFFIX):
                try:
                    _compress(old)
                except FileNotFoundError:
                    pass

    async def rotate(self, c: rt.ContainerStatus) -> bool:
        """Rotate ``c``'s log if it is over the size; True when it was rotated."""
        path = c.log_path
        if not path or c.state != "RUNNING":
            return False
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return False
        if size <= self.max_size:
            return False
        await asyncio.to_thread(self.cleanup, path)
        rotated = f"{path}.{self._stamp()}"
        os.rename(path, rotated)
        try:
            await self.runtime.reopen_container_log(c.id)
        except rt.RuntimeFailure as exc:
            # Exited meanwhile, or the runtime is down: put the file back, so no log is lost.
            log.info("container %s: cannot reopen its log (%s); keeping it unrotated", c.id[:12], exc)
            with contextlib.suppress(OSError):
                if os.path.exists(path):  # the runtime made a new file after all: keep both
                    return False
                os.rename(rotated, path)
            return False
        self.rotations += 1
        log.debug("rotated %s (%d bytes)", path, size)
        return True

    async def rotate_all(self) -> int:
        """One pass over every running container; returns how many logs were rotated."""
        done = 0
        for c in await self.runtime.list_containers():
            try:
                done += await self.rotate(c)
            except OSError as exc:
                log.warning("container %s: log rotation failed: %s", c.id[:12], exc)
        return done

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.rotate_all()
            except rt.RuntimeFailure as exc:
                log.warning("log rotation: cannot list containers: %s", exc)
