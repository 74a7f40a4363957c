"""The nginx this daemon owns: one master process, its child, with every file under the state folder.

::

    apply(text) ─▶ STATE/nginx.conf.new ─▶ nginx -t ─┬─ fails: NginxError (the running config stays)
                                                    └─ ok: rename over nginx.conf ─▶ SIGHUP to the master
    SIGHUP: the master re-reads the config and starts new workers; old workers stop accepting, finish the
    requests they hold (at most ``worker_shutdown_timeout``) and exit, so a reload fails no request.
    stop(): SIGQUIT (graceful), then SIGTERM, then SIGKILL, each bounded.

The master runs in the foreground (``daemon off``) with its working folder = the state folder and a
parent-death signal, so it never outlives the daemon: supervisord stopping the daemon's process group
stops nginx too, and ``make down`` finds any stray one by its working folder (minik8s/cluster/cleanup.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("minik8s.ingress.nginx")

PR_SET_PDEATHSIG = 1


class NginxError(RuntimeError):
    """nginx refused a config (the message has its own words) or could not be started."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Nginx:
    """Start, reconfigure and stop one nginx master. Not thread-safe; one asyncio task drives it."""

    def __init__(self, binary: str, state_dir: Path) -> None:
        self.binary = binary
        self.state_dir = state_dir.resolve()
        self.conf = self.state_dir / "nginx.conf"
        self.pid_file = self.state_dir / "nginx.pid"
        self.proc: asyncio.subprocess.Process | None = None
        self.text = ""  # the config nginx runs with now
        self.reloads = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def running(self) -> bool:
        return self.pid is not None

    def _args(self, conf: Path) -> list[str]:
        # -e: the error log before the config is read (Debian's default is /var/log/nginx/error.log).
        return [self.binary, "-p", str(self.state_dir), "-c", str(conf), "-e", "stderr"]

    def prepare(self) -> None:
        """Make the folders and stop an nginx that an earlier run of this daemon left (same state folder)."""
        for d in (self.state_dir, self.state_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if Path(cwd) == self.state_dir and title.startswith(b"nginx"):
            log.warning("stopping nginx (pid %d) left by an earlier run", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def test(self, conf: Path) -> None:
        """``nginx -t`` on ``conf``; NginxError with nginx's own message when it is not valid."""
        proc = await asyncio.create_subprocess_exec(
            *self._args(conf), "-t", "-q", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=str(self.state_dir))
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise NginxError("nginx -t did not answer within 30s") from None
        if proc.returncode != 0:
            raise NginxError(out.decode(errors="replace").strip() or f"nginx -t exited {proc.returncode}")

    def _write(self, path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    async def apply(self, text: str) -> bool:
        """Make nginx run with ``text``: checked first, then written atomically and (re)loaded.
        False when it already runs with it. NginxError when nginx rejects it (nothing changes)."""
        if text == self.text and self.running():
            return False
        candidate = self.state_dir / "nginx.conf.new"
        self._write(candidate, text)
        await self.test(candidate)
        os.replace(candidate, self.conf)
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)
            self.reloads += 1
            log.info("nginx (pid %d) reloading its configuration", self.proc.pid)
        else:
            await self._start()
        self.text = text
        return True

    async def _start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self._args(self.conf), stdin=asyncio.subprocess.DEVNULL, cwd=str(self.state_dir),
            preexec_fn=_die_with_parent)
        log.info("nginx started (pid %d) with %s", self.proc.pid, self.conf)

    async def wait_exit(self) -> int | None:
        """Until the master exits (None at once when none runs); its exit status."""
        if self.proc is None:
            return None
        return await self.proc.wait()

    def forget(self) -> None:
        """After the master died on its own: the next ``apply`` starts a new one."""
        self.proc = None
        self.text = ""

    async def stop(self, grace: float = 10.0) -> None:
        """Graceful quit (in-flight requests finish), then harder signals; bounded."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        for sig, wait in ((signal.SIGQUIT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), wait)
                break
            except TimeoutError:
                log.warning("nginx (pid %d) still runs %.0fs after signal %s", proc.pid, wait, sig.name)
        log.info("nginx (pid %d) stopped", proc.pid)
