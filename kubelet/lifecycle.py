"""Container lifecycle pieces the pod worker uses: preStop hooks, grace accounting, OOM detection.

::

    terminate_pod ──per running container, in parallel──▶ run_pre_stop (exec | httpGet | sleep; bounded by grace)
                                                         └─▶ stop_container(remaining_grace(...))  SIGTERM … SIGKILL
    container started / adopted ──▶ OomWatcher.watch(cid, cgroup)   eventfd on memory.oom_control (cgroup v1)
    container EXITED ──▶ classify_exit(c, ooms)  "OOMKilled" from the CRI reason or the cgroup's OOM counter

Grace accounting is Kubernetes': the preStop hook runs with the whole grace period as its timeout,
its (whole-second) duration is subtracted, and the container then gets what is left but at least
``MIN_GRACE_AFTER_HOOK`` seconds. CRI ``StopContainer`` sends SIGTERM and SIGKILLs after that many
seconds.

OOM: containerd's CRI reports ``OOMKilled`` when its shim saw the memory cgroup's OOM notification.
The kubelet does not rely on that alone: ``OomWatcher`` registers its own eventfd on each running
container's ``memory.oom_control`` (``cgroup.event_control``) and reads the cgroup's ``oom_kill``
counter when it fires, before containerd removes the cgroup of the exited container. A container
that died of SIGKILL (exit 137, CRI reason ``Error``) is reported ``OOMKilled`` only if that counter
moved; one killed by someone else keeps ``Error``. On cgroup v1 the counter is per cgroup (a parent
does not count its children's kills), so it must be the container's own cgroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kubelet import cgroups
from kubelet import runtime as rt

log = logging.getLogger(__name__)

# Kubernetes' minimumGracePeriodInSeconds: what a container gets after a preStop hook at the least.
MIN_GRACE_AFTER_HOOK = 2
OOM_REASON = "OOMKilled"
SIGKILL_EXIT = 137


# --- preStop -------------------------------------------------------------------------------------


def pre_stop(container: dict[str, Any] | None) -> dict[str, Any] | None:
    """The container spec's ``lifecycle.preStop`` handler, or None."""
    handler = ((container or {}).get("lifecycle") or {}).get("preStop")
    return handler if isinstance(handler, dict) and handler else None


def _port(value: Any, container: dict[str, Any]) -> int:
    """An httpGet port: a number, or the name of one of the container's ports."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for p in container.get("ports") or []:
        if p.get("name") == value:
            return int(p["containerPort"])
    raise ValueError(f"port {value!r} is neither a number nor a named port of the container")


def http_get_url(handler: dict[str, Any], container: dict[str, Any], pod_ip: str) -> tuple[str, dict[str, str]]:
    """The URL and headers of an ``httpGet`` handler (host defaults to the pod IP, as in Kubernetes)."""
    host = str(handler.get("host") or pod_ip)
    if not host:
        raise ValueError("the pod has no IP to send the hook to")
    scheme = str(handler.get("scheme") or "HTTP").lower()
    path = str(handler.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    headers = {str(h.get("name")): str(h.get("value") or "") for h in handler.get("httpHeaders") or []}
    return f"{scheme}://{host}:{_port(handler.get('port'), container)}{path}", headers


async def run_pre_stop(runtime: rt.Runtime, container: dict[str, Any], container_id: str, pod_ip: str,
                       timeout: float) -> str:
    """Run the container's preStop hook, at most ``timeout`` seconds; returns "" or why it failed."""
    handler = pre_stop(container) or {}
    try:
        async with asyncio.timeout(max(timeout, 0.001)):
            if "exec" in handler:
                command = [str(a) for a in (handler["exec"] or {}).get("command") or []]
                if not command:
                    return "exec hook without a command"
                result = await runtime.exec_sync(container_id, command, max(1, int(timeout)))
                if result.exit_code != 0:
                    out = (result.stdout + result.stderr).decode(errors="replace").strip()[-200:]
                    return f"command {command!r} exited with {result.exit_code}: {out}"
                return ""
            if "httpGet" in handler:
                url, headers = http_get_url(handler["httpGet"] or {}, container, pod_ip)
                async with httpx.AsyncClient(timeout=max(timeout, 0.001), verify=False, trust_env=False) as client:
                    response = await client.get(url, headers=headers)
                if not 200 <= response.status_code < 400:
                    return f"GET {url}: HTTP {response.status_code}"
                return ""
            if "sleep" in handler:
                await asyncio.sleep(max(0.0, float((handler["sleep"] or {}).get("seconds") or 0)))
                return ""
            return "unsupported preStop handler (exec, httpGet and sleep are)"
    except TimeoutError:
        return f"did not finish within the grace period ({timeout:g}s)"
    except (rt.RuntimeFailure, httpx.HTTPError, ValueError, OSError) as exc:
        return str(exc) or type(exc).__name__


def remaining_grace(grace: int, hook_seconds: float) -> int:
    """Seconds left for SIGTERM → SIGKILL after a preStop hook that took ``hook_seconds`` (Kubernetes' rule)."""
    return max(MIN_GRACE_AFTER_HOOK, grace - int(max(0.0, hook_seconds)))


# --- OOM -----------------------------------------------------------------------------------------


def classify_exit(c: rt.ContainerStatus, oom_kills: int) -> rt.ContainerStatus:
    """``c`` with reason ``OOMKilled`` when its memory cgroup counted an OOM kill and it died of it."""
    if c.state != "EXITED" or c.reason == OOM_REASON or oom_kills <= 0 or c.exit_code == 0:
        return c
    return dataclasses.replace(c, reason=OOM_REASON)


@dataclass
class _Watch:
    efd: int
    ofd: int
    base: int  # oom_kill when the watch started
    signals: int = 0
    kills: int = 0


def _oom_kill(ofd: int) -> int:
    os.lseek(ofd, 0, os.SEEK_SET)
    text = os.read(ofd, 4096).decode()
    values = dict(line.split() for line in text.splitlines() if line.strip())
    return int(values.get("oom_kill", "0"))


class OomWatcher:
    """OOM kills per container, from each container's memory cgroup (see the module docstring).

    ``watch`` is cheap to call again (a no-op for a container already watched); a watch ends by
    itself when the cgroup goes away. ``ooms(cid)`` is the number of OOM kills counted in the
    container's cgroup since the watch began (it survives the cgroup). Works without a running
    loop or cgroup v1 too: ``watch`` then returns False and nothing is counted.
    """

    MAX_REMEMBERED = 4096

    def __init__(self, cgroup_dir: Callable[[str, str], Path] = cgroups.cgroup_dir) -> None:
        self.cgroup_dir = cgroup_dir
        self._watches: dict[str, _Watch] = {}
        self._kills: dict[str, int] = {}

    def watching(self, container_id: str) -> bool:
        return container_id in self._watches

    def ooms(self, container_id: str) -> int:
        return self._kills.get(container_id, 0)

    def watch(self, container_id: str, cgroup_path: str) -> bool:
        if container_id in self._watches:
            return True
        try:
            loop = asyncio.get_running_loop()
            folder = self.cgroup_dir("memory", cgroup_path)
        except (RuntimeError, OSError, ValueError):
            return False
        efd = ofd = -1
        try:
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            ofd = os.open(folder / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            fd = os.open(folder / "cgroup.event_control", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, f"{efd} {ofd}".encode())
            finally:
                os.close(fd)
            w = _Watch(efd=efd, ofd=ofd, base=_oom_kill(ofd))
            loop.add_reader(efd, self._wake, container_id)
        except (OSError, ValueError) as exc:
            for f in (efd, ofd):
                if f >= 0:
                    with contextlib.suppress(OSError):
                        os.close(f)
            log.debug("no OOM watch for container %s: %s", container_id, exc)
            return False
        self._watches[container_id] = w
        return True

    def _wake(self, container_id: str) -> None:
        w = self._watches.get(container_id)
        if w is None:
            return
        with contextlib.suppress(BlockingIOError):
            w.signals += os.eventfd_read(w.efd)
        try:
            w.kills = max(w.kills, _oom_kill(w.ofd) - w.base)
            if w.signals and not w.kills:
                # Notified while the cgroup is still there: an OOM in progress; the kill follows at once.
                w.kills = 1
        except OSError:
            # The cgroup is gone (its removal signals too): more than that one signal means an OOM came first.
            if w.signals >= 2:
                w.kills = max(w.kills, 1)
            self._close(container_id)
        if w.kills:
            self._kills[container_id] = w.kills
            while len(self._kills) > self.MAX_REMEMBERED:
                self._kills.pop(next(iter(self._kills)))

    def _close(self, container_id: str) -> None:
        w = self._watches.pop(container_id, None)
        if w is None:
            return
        with contextlib.suppress(RuntimeError, ValueError):
            asyncio.get_running_loop().remove_reader(w.efd)
        for f in (w.efd, w.ofd):
            with contextlib.suppress(OSError):
                os.close(f)

    def forget(self, container_id: str) -> None:
        self._close(container_id)
        self._kills.pop(container_id, None)

    def close(self) -> None:
        for cid in list(self._watches):
            self._close(cid)
