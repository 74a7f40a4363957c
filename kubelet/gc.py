"""Garbage collection on the node: dead containers and sandboxes, unused images, orphaned cgroup folders,
network namespaces and log files.

::

    every --container-gc-period (1m, Kubernetes' ContainerGCPeriod):
        containers   EXITED ones beyond the newest --maximum-dead-containers-per-container (1) per
                     (pod uid, container name), older than --minimum-container-ttl-duration (0); the
                     newest of a name always stays (restartCount, lastState and ``logs --previous``
                     are read from it); their log files go with them
        sandboxes    NOTREADY ones without containers that are not their pod's newest sandbox
        cgroups      <cgroup root>/pod<uid> folders of uids that neither the API, a pod worker nor the
                     runtime knows, seen so on two passes in a row (only empty folders can be removed)
        netns        mounts under the runtime's own netns folder that no sandbox uses and no process
                     is in, seen so on two passes in a row at least 10 s apart: unmounted and removed
        log files    <root>/pods/<uid>/logs/<name>/<n>.log* of containers the runtime no longer has
    every --image-gc-period (5m, Kubernetes' ImageGCPeriod):
        images       when the image file system is --image-gc-high-threshold (85) % full or more, unused
                     images are removed, least recently used first, until it is --image-gc-low-threshold
                     (80) % full; never one a container (even an exited one) or a pod bound to this
                     node names, never the sandbox (pause) image or one the runtime pins, never one
                     first seen less than --minimum-image-ttl-duration (2m) ago

Every scan of the disk happens *before* the listing it is compared with (files, then containers;
cgroup folders, then known uids), so something created between the two is never taken for garbage.
``prune_images()`` removes every unused image now (``crictl rmi --prune``); the kubelet API's
``POST /gc/images`` calls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubelet import cgroups, logrotate
from kubelet import runtime as rt

log = logging.getLogger(__name__)

MNT_DETACH = 2
# A RunPodSandbox in flight holds a network namespace that no sandbox lists and no process is in yet (CNI
# set-up, pause start) for well under a second; an orphan must have been one for this long.
NETNS_MIN_AGE = 10.0


@dataclass(frozen=True)
class GCPolicy:
    """The GC's flags (Kubernetes' defaults; durations in seconds)."""

    container_gc_period: float = 60.0
    max_per_pod_container: int = 1
    max_containers: int = -1  # dead containers on the whole node; -1: no limit
    min_container_age: float = 0.0
    image_gc_period: float = 300.0
    image_gc_high_threshold: int = 85
    image_gc_low_threshold: int = 80
    min_image_age: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.image_gc_low_threshold <= self.image_gc_high_threshold <= 100:
            raise ValueError("image GC thresholds: need 0 <= low <= high <= 100")

    @classmethod
    def from_config(cls, config: Any) -> GCPolicy:
        """From a ``KubeletConfig`` (attributes of the same names; missing ones keep the default)."""
        names = cls.__dataclass_fields__
        return cls(**{k: getattr(config, k) for k in names if hasattr(config, k)})


def fs_stats(path: str) -> tuple[int, int]:
    """(capacity, available) bytes of the file system holding ``path`` (what an unprivileged user may use)."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _attempt(c: rt.ContainerStatus) -> int:
    try:
        return int(c.annotations.get(rt.ANNOTATION_RESTART_COUNT, c.attempt))
    except ValueError:
        return c.attempt


def pod_images(pods: Iterable[dict[str, Any]]) -> set[str]:
    """The normalized image names the pods' containers (init and ephemeral ones too) name."""
    out = set()
    for pod in pods:
        spec = pod.get("spec") or {}
        for key in ("containers", "initContainers", "ephemeralContainers"):
            for c in spec.get(key) or []:
                if c.get("image"):
                    out.add(rt.normalize_image(str(c["image"])))
    return out


def _umount(path: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err != 22:  # EINVAL: not a mount point (any more)
            raise OSError(err, os.strerror(err), path)


def mounts_under(folder: str, mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Mount points directly inside ``folder``."""
    prefix = folder.rstrip("/") + "/"
    out = set()
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4:
                point = fields[4].replace("\\040", " ")
                if point.startswith(prefix) and "/" not in point[len(prefix):]:
                    out.add(point)
    return out


def netns_in_use(paths: Iterable[str], proc: str = "/proc") -> set[str]:
    """Those of ``paths`` (netns mounts) that some process is in."""
    by_inode: dict[tuple[int, int], str] = {}
    for p in paths:
        with contextlib.suppress(OSError):
            st = os.stat(p)
            by_inode[(st.st_dev, st.st_ino)] = p
    used: set[str] = set()
    if not by_inode:
        return used
    for pid in os.listdir(proc):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                st = os.stat(f"{proc}/{pid}/ns/net")
                if (st.st_dev, st.st_ino) in by_inode:
                    used.add(by_inode[(st.st_dev, st.st_ino)])
    return used


@dataclass
class _ImageRecord:
    first_detected: float
    last_used: float = 0.0


@dataclass
class GCResult:
    containers: list[str] = field(default_factory=list)
    sandboxes: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    freed_bytes: int = 0


@dataclass
class NodeGC:
    """See the module docstring. ``api_pods`` returns the API's pods bound to this node; ``busy_uids`` the
    uids a pod worker still handles; ``extra_images`` names images to keep that no pod names right now."""

    runtime: rt.Runtime
    policy: GCPolicy = field(default_factory=GCPolicy)
    cgroup_root: str = ""
    root_dir: str = ""
    api_pods: Callable[[], list[dict[str, Any]]] = list
    busy_uids: Callable[[], Iterable[str]] = tuple
    extra_images: Callable[[], Iterable[str]] = tuple
    fs_stats: Callable[[str], tuple[int, int]] = fs_stats
    clock: Callable[[], float] = time.time
    hierarchies: Callable[[], dict[str, Path]] = cgroups.hierarchies
    remove_cgroups: Callable[[str], list[Any]] = cgroups.remove_pod_cgroups
    umount: Callable[[str], None] = _umount
    netns_users: Callable[[Iterable[str]], set[str]] = netns_in_use
    list_mounts: Callable[[str], set[str]] = mounts_under
    images: dict[str, _ImageRecord] = field(default_factory=dict)
    _suspects: dict[str, tuple[int, float]] = field(default_factory=dict)  # key → (passes seen orphaned, first)
    passes: int = 0

    # -- containers and sandboxes ----------------------------------------------------------------

    async def collect_containers(self) -> tuple[list[str], list[str]]:
        """Remove dead containers beyond the policy and dead sandboxes nobody needs; returns the removed ids."""
        now_ns = int(self.clock() * 1e9)
        min_age_ns = int(self.policy.min_container_age * 1e9)
        containers = await self.runtime.list_containers()
        units: dict[tuple[str, str], list[rt.ContainerStatus]] = {}
        for c in containers:
            uid = c.labels.get(rt.LABEL_POD_UID, "")
            if uid:
                units.setdefault((uid, c.labels.get(rt.LABEL_CONTAINER_NAME, c.name)), []).append(c)
        keep = max(1, self.policy.max_per_pod_container)
        evictable: list[rt.ContainerStatus] = []
        for history in units.values():
            history.sort(key=lambda c: (_attempt(c), c.created_at), reverse=True)
            newest = history[0]
            dead = [c for c in history if c.state == "EXITED" and c is not newest]
            # The newest of the name counts as one of those kept when it is dead itself.
            room = keep - (1 if newest.state == "EXITED" else 0)
            evictable += [c for c in dead[max(0, room):] if now_ns - c.created_at >= min_age_ns]
        removed = [await self._remove_container(c) for c in evictable]
        if self.policy.max_containers >= 0:
            gone = set(removed)
            left = [c for history in units.values() for c in history[1:] if c.state == "EXITED" and c.id not in gone]
            left.sort(key=lambda c: c.created_at)
            extra = len(left) - self.policy.max_containers
            removed += [await self._remove_container(c) for c in left[:max(0, extra)]
                        if now_ns - c.created_at >= min_age_ns]
        sandboxes = await self._collect_sandboxes(containers, set(removed), now_ns, min_age_ns)
        return [r for r in removed if r], sandboxes

    async def _remove_container(self, c: rt.ContainerStatus) -> str:
        try:
            await self.runtime.remove_container(c.id)
        except rt.RuntimeFailure as exc:
            log.warning("gc: cannot remove container %s: %s", c.id[:12], exc)
            return ""
        if c.log_path:
            await asyncio.to_thread(logrotate.remove_logs, c.log_path)
        log.info("gc: removed dead container %s (%s, attempt %d)", c.id[:12], c.name, _attempt(c))
        return c.id

    async def _collect_sandboxes(self, containers: list[rt.ContainerStatus], removed: set[str], now_ns: int,
                                 min_age_ns: int) -> list[str]:
        used = {c.sandbox_id for c in containers if c.id not in removed}
        by_pod: dict[str, list[rt.SandboxStatus]] = {}
        for s in await self.runtime.list_sandboxes():
            by_pod.setdefault(s.pod_uid, []).append(s)
        out = []
        for history in by_pod.values():
            history.sort(key=lambda s: (s.attempt, s.created_at), reverse=True)
            for s in history[1:]:
                if s.state == "NOTREADY" and s.id not in used and now_ns - s.created_at >= min_age_ns:
                    try:
                        await self.runtime.remove_sandbox(s.id)
                    except rt.RuntimeFailure as exc:
                        log.warning("gc: cannot remove sandbox %s: %s", s.id[:12], exc)
                        continue
                    log.info("gc: removed dead sandbox %s of pod %s", s.id[:12], s.pod_uid)
                    out.append(s.id)
        return out

    # -- orphans: cgroup folders, network namespaces, log files ----------------------------------

    def _second_sighting(self, seen: set[str], prefix: str, min_age: float = 0.0) -> set[str]:
        """Record ``seen`` (keys starting with ``prefix``) as orphaned on this pass; return those orphaned on
        the previous pass too, first seen at least ``min_age`` seconds ago."""
        for key in [k for k in self._suspects if k.startswith(prefix) and k not in seen]:
            del self._suspects[key]
        now = self.clock()
        for key in seen:
            count, first = self._suspects.get(key, (0, now))
            self._suspects[key] = (count + 1, first)
        return {key for key in seen if self._suspects[key][0] >= 2 and now - self._suspects[key][1] >= min_age}

    def _pod_cgroup_folders(self) -> set[str]:
        """The uids of every ``pod<uid>`` folder under the cgroup root, in any hierarchy."""
        if not self.cgroup_root:
            return set()
        rel = self.cgroup_root.strip("/")
        uids = set()
        for mount in set(self.hierarchies().values()):
            with contextlib.suppress(OSError):
                for entry in os.scandir(mount / rel):
                    if entry.is_dir(follow_symlinks=False) and entry.name.startswith("pod") and len(entry.name) > 3:
                        uids.add(entry.name[3:])
        return uids

    async def collect_orphans(self) -> tuple[list[str], list[str], list[str]]:
        """Remove orphaned cgroup folders, netns mounts and log files; returns what was removed."""
        folders = await asyncio.to_thread(self._pod_cgroup_folders)
        log_files = await asyncio.to_thread(self._log_files)
        info: rt.RuntimeInfo | None = None
        try:
            info = await self.runtime.runtime_status()
        except rt.RuntimeFailure:
            pass
        netns_dir = info.netns_dir if info else ""
        mounts: set[str] = set()
        if netns_dir:
            with contextlib.suppress(OSError):
                mounts = await asyncio.to_thread(self.list_mounts, netns_dir)
        # Now the lists the scans are compared with.
        sandboxes = await self.runtime.list_sandboxes()
        containers = await self.runtime.list_containers()
        known = {str((p.get("metadata") or {}).get("uid") or "") for p in self.api_pods()}
        known |= set(self.busy_uids()) | {s.pod_uid for s in sandboxes}
        removed_cgroups = await self._collect_cgroups(folders - known)
        removed_netns: list[str] = []
        if netns_dir:
            used = set()
            for s in sandboxes:
                if s.state == "READY":
                    with contextlib.suppress(rt.NotFoundInRuntime):
                        used.add(await self.runtime.sandbox_netns(s.id))
            removed_netns = await self._collect_netns(netns_dir, mounts - used)
        live_logs = {c.log_path for c in containers if c.log_path}
        removed_logs = await asyncio.to_thread(self._remove_log_files, log_files, live_logs)
        return removed_cgroups, removed_netns, removed_logs

    async def _collect_cgroups(self, orphans: set[str]) -> list[str]:
        out = []
        for uid in sorted(self._second_sighting({f"cgroup:{u}" for u in orphans}, "cgroup:")):
            parent = f"{self.cgroup_root.rstrip('/')}/pod{uid.removeprefix('cgroup:')}"
            try:
                busy = await asyncio.to_thread(self.remove_cgroups, parent)
            except (OSError, ValueError) as exc:
                busy = [exc]
            if busy:
                log.warning("gc: orphaned cgroup %s still busy: %s", parent, busy[:3])
                continue
            log.info("gc: removed orphaned cgroup folders of %s", parent)
            out.append(parent)
        return out

    async def _collect_netns(self, netns_dir: str, unused: set[str]) -> list[str]:
        candidates = self._second_sighting({f"netns:{p}" for p in unused}, "netns:", NETNS_MIN_AGE)
        paths = {c.removeprefix("netns:") for c in candidates}
        if not paths:
            return []
        in_use = await asyncio.to_thread(self.netns_users, paths)
        out = []
        for path in sorted(paths - in_use):
            try:
                await asyncio.to_thread(self.umount, path)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            except OSError as exc:
                log.warning("gc: cannot remove orphaned netns %s: %s", path, exc)
                continue
            log.info("gc: removed orphaned network namespace %s", path)
            out.append(path)
        return out

    def _log_files(self) -> list[str]:
        """Every container log file (current, rotated) under ``<root>/pods/*/logs/<name>/``."""
        if not self.root_dir:
            return []
        pods = Path(self.root_dir) / "pods"
        return [str(p) for p in pods.glob("*/logs/*/*.log*") if p.is_file()]

    @staticmethod
    def _remove_log_files(files: list[str], live: set[str]) -> list[str]:
        out = []
        for f in files:
            folder, name = os.path.split(f)
            base = os.path.join(folder, name[: name.index(".log") + 4])
            if base not in live:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f)
                    out.append(f)
        return out

    # -- images ----------------------------------------------------------------------------------

    async def _image_usage(self) -> tuple[list[rt.ImageInfo], set[str], set[str]]:
        """(images, ids in use, ids never to remove); updates first-detected and last-used times."""
        images = await self.runtime.list_images()
        containers = await self.runtime.list_containers()
        sandbox_image = ""
        with contextlib.suppress(rt.RuntimeFailure):
            sandbox_image = (await self.runtime.runtime_status()).sandbox_image
        refs = {c.image for c in containers} | {c.image_ref for c in containers}
        refs |= pod_images(self.api_pods()) | {rt.normalize_image(i) for i in self.extra_images()}
        now = self.clock()
        in_use, pinned = set(), set()
        for im in images:
            names = {im.id, *im.repo_tags, *im.repo_digests}
            record = self.images.setdefault(im.id, _ImageRecord(first_detected=now))
            if names & refs:
                in_use.add(im.id)
                record.last_used = now
            if im.pinned or (sandbox_image and sandbox_image in im.repo_tags):
                pinned.add(im.id)
        for gone in set(self.images) - {im.id for im in images}:
            del self.images[gone]
        return images, in_use, pinned

    async def _free(self, amount: float, *, min_age: float) -> tuple[list[str], int]:
        images, in_use, pinned = await self._image_usage()
        now = self.clock()
        candidates = [im for im in images if im.id not in in_use and im.id not in pinned
                      and now - self.images[im.id].first_detected >= min_age]
        candidates.sort(key=lambda im: (self.images[im.id].last_used, self.images[im.id].first_detected))
        removed, freed = [], 0
        for im in candidates:
            if freed >= amount:
                break
            try:
                await self.runtime.remove_image(im.id)
            except rt.RuntimeFailure as exc:
                log.warning("gc: cannot remove image %s: %s", im.id[:19], exc)
                continue
            self.images.pop(im.id, None)
            log.info("gc: removed unused image %s (%s, %d bytes)", ",".join(im.repo_tags) or im.id[:19],
                     im.id[:19], im.size)
            removed.append(im.id)
            freed += im.size
        return removed, freed

    async def collect_images(self) -> tuple[list[str], int]:
        """Image GC at the thresholds; returns the removed image ids and the bytes they held."""
        filesystems = await self.runtime.image_fs_info()
        if not filesystems or not filesystems[0].mountpoint:
            await self._image_usage()
            return [], 0
        try:
            capacity, available = await asyncio.to_thread(self.fs_stats, filesystems[0].mountpoint)
        except OSError as exc:
            log.warning("gc: cannot measure the image file system %s: %s", filesystems[0].mountpoint, exc)
            return [], 0
        if capacity <= 0:
            return [], 0
        usage = 100 - available * 100 // capacity
        if usage < self.policy.image_gc_high_threshold or self.policy.image_gc_high_threshold >= 100:
            await self._image_usage()  # keep last-used times fresh
            return [], 0
        amount = capacity * (100 - self.policy.image_gc_low_threshold) // 100 - available
        log.info("gc: image file system %d%% full (high threshold %d%%): freeing %d bytes", usage,
                 self.policy.image_gc_high_threshold, amount)
        removed, freed = await self._free(amount, min_age=self.policy.min_image_age)
        if freed < amount:
            log.warning("gc: freed %d of the %d bytes wanted: the other images are in use or too new", freed, amount)
        return removed, freed

    async def collect_images_logged(self) -> None:
        """``collect_images`` for a background task: failures are logged, never raised."""
        try:
            await self.collect_images()
        except (rt.RuntimeFailure, OSError) as exc:
            log.warning("image gc failed: %s", exc)

    async def prune_images(self) -> tuple[list[str], int]:
        """Remove every image no container or pod uses (pinned and sandbox images stay), whatever its age."""
        return await self._free(float("inf"), min_age=0.0)

    # -- loop ------------------------------------------------------------------------------------

    async def collect(self, *, images: bool = False) -> GCResult:
        """One pass: containers, sandboxes and orphans (and images if asked)."""
        result = GCResult()
        result.containers, result.sandboxes = await self.collect_containers()
        result.cgroups, result.netns, result.logs = await self.collect_orphans()
        if images:
            result.images, result.freed_bytes = await self.collect_images()
        self.passes += 1
        return result

    async def run(self) -> None:
        """A pass every container GC period, with images every image GC period, until cancelled."""
        next_images = time.monotonic() + self.policy.image_gc_period
        while True:
            await asyncio.sleep(self.policy.container_gc_period)
            due = time.monotonic() >= next_images
            try:
                await self.collect(images=due)
            except (rt.RuntimeFailure, OSError) as exc:
                log.warning("gc pass failed: %s", exc)
            if due:
                next_images = time.monotonic() + self.policy.image_gc_period


def gc_routes(kubelet: Any) -> list[Any]:
    """The kubelet API's GC endpoints (mounted by ``kubelet/server.py``):

    - ``POST /gc``: one pass now (containers, sandboxes, orphans, images at the thresholds) → what it removed;
    - ``POST /gc/images``: remove every unused image now, like ``crictl rmi --prune`` → the removed ids.
    """
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    def node_gc() -> NodeGC | None:
        return getattr(kubelet, "gc", None)

    async def collect(request: Request) -> Response:
        gc = node_gc()
        if gc is None:
            return PlainTextResponse("this kubelet has no garbage collector", status_code=404)
        try:
            result = await gc.collect(images=True)
        except (rt.RuntimeFailure, OSError) as exc:
            return PlainTextResponse(f"gc failed: {exc}", status_code=502)
        return JSONResponse({"containers": result.containers, "sandboxes": result.sandboxes,
                             "cgroups": result.cgroups, "netns": result.netns, "logs": result.logs,
                             "images": result.images, "freedBytes": result.freed_bytes})

    async def prune(request: Request) -> Response:
        gc = node_gc()
        if gc is None:
            return PlainTextResponse("this kubelet has no garbage collector", status_code=404)
        try:
            removed, freed = await gc.prune_images()
        except rt.RuntimeFailure as exc:
            return PlainTextResponse(f"image gc failed: {exc}", status_code=502)
        return JSONResponse({"images": removed, "freedBytes": freed})

    return [Route("/gc", collect, methods=["POST"]), Route("/gc/images", prune, methods=["POST"])]
