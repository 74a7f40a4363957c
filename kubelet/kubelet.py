"""The kubelet: one sync loop feeding one pod worker per pod uid.

::

    Informer(pods, spec.nodeName=<node>) ──add/update/delete──┐
    runtime relist (every relist period) ──pods that changed──┼──▶ sync loop ──▶ PodWorkers.update(uid, pod | None)
    resync ticker (every sync-frequency) ──every pod──────────┘        (dispatch: API object by uid, else kill)
    NodeStatusManager ── register, heartbeat every node-status-update-frequency
    EventRecorder     ── writes Events in the background
    MetricsSampler    ── CRI stats every --metrics-resolution → /stats/summary (kubelet/metrics.py)
    server            ── the kubelet API on 127.0.0.1:--port (logs, exec, healthz, metrics, stats/summary)

Three sources, one decision: ``_dispatch(uid)`` looks the uid up in the informer's cache. A pod
there is synced (or terminated, when it carries a ``deletionTimestamp``); a uid the runtime has but
the API does not is killed. Workers are keyed by uid, so a pod deleted and created again with the
same name is a new worker and the old one still cleans up after itself.

On start the kubelet waits for the informer's first list and one runtime relist before it
dispatches anything: what it finds in the runtime under a known pod uid is adopted (the level-
triggered sync sees it running and leaves it), and only uids unknown to the API are killed. On
exit it stops its own tasks and leaves every pod running for the next kubelet to adopt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubelet import cgroups
from kubelet import runtime as rt
from kubelet.gc import GCPolicy, NodeGC
from kubelet.logrotate import LogRotator
from kubelet.metrics import MetricsSampler
from kubelet.node_status import MachineObserver, NodeStatusManager, PressureMonitor, parse_eviction, parse_reserved
from kubelet.pod_worker import FORCE_KILL_GRACE, Metrics, PodSyncer, PodWorkers, SyncSettings
from kubelet.status import EventRecorder, StatusManager
from kubelet.volumes import VolumeManager
from minik8s.api import registry
from minik8s.client.informer import Informer
from minik8s.errors import ApiError, ConnectionFailed

log = logging.getLogger(__name__)

PODS = registry.lookup("pods")
RESYNC = "*resync*"  # a sync-loop token that is never a uid


@dataclass(frozen=True)
class KubeletConfig:
    """Everything ``minik8s-kubelet``'s flags set. Durations in seconds; defaults are Kubernetes'
    unless a comment says why not."""

    apiserver: str = "http://127.0.0.1:18080"
    node_name: str = field(default_factory=lambda: socket.gethostname().lower())
    cri_socket: str = ""
    root_dir: str = ""
    pod_cidr: str = ""
    cgroup_root: str = "/minik8s"
    port: int = 10250
    system_reserved: str = "cpu=500m,memory=512Mi"
    node_labels: tuple[tuple[str, str], ...] = ()
    max_pods: int = 110
    node_status_update_frequency: float = 10.0
    # Node health and garbage collection (kubelet/node_status.py, gc.py, logrotate.py): Kubernetes' defaults.
    eviction_hard: str = ("memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,"
                          "imagefs.available<15%,imagefs.inodesFree<5%")
    eviction_pressure_transition_period: float = 300.0
    container_log_max_size: int = 10 * 1024 * 1024
    container_log_max_files: int = 5
    container_log_monitor_interval: float = 10.0
    container_gc_period: float = 60.0
    max_per_pod_container: int = 1
    max_containers: int = -1
    min_container_age: float = 0.0
    image_gc_period: float = 300.0
    image_gc_high_threshold: int = 85
    image_gc_low_threshold: int = 80
    min_image_age: float = 120.0
    # Kubernetes resyncs every 1m; we use 10s because our runtime relist and this resync are the
    # only way a missed event is noticed, and a 10s pass over a handful of pods costs nothing.
    sync_frequency: float = 10.0
    runtime_relist_period: float = 1.0  # Kubernetes' PLEG relist period
    image_pull_backoff: float = 10.0
    image_pull_backoff_max: float = 300.0
    crash_backoff_base: float = 10.0
    crash_backoff_max: float = 300.0
    runtime_request_timeout: float = 10.0
    # Readiness probing right after a container starts, until its first success (Kubernetes: periodSeconds).
    readiness_fast_interval: float = 0.05
    # Resource metrics (kubelet/metrics.py): how often CRI stats are sampled (metrics-server's default).
    metrics_resolution: float = 15.0
    # Cluster DNS (kubelet/dns.py): the nameserver(s) and domain of ClusterFirst pods; none = the node's resolv.conf.
    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    log_level: str = "info"

    def settings(self) -> SyncSettings:
        return SyncSettings(node_name=self.node_name, cgroup_root=self.cgroup_root,
                            crash_backoff_base=self.crash_backoff_base, crash_backoff_max=self.crash_backoff_max,
                            image_pull_backoff_base=self.image_pull_backoff,
                            image_pull_backoff_max=self.image_pull_backoff_max,
                            readiness_fast_interval=self.readiness_fast_interval,
                            cluster_dns=self.cluster_dns, cluster_domain=self.cluster_domain)


def _uid(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


class Kubelet:
    """See the module docstring. ``run()`` until ``request_stop()``; ``shutdown()`` leaves pods running."""

    def __init__(self, config: KubeletConfig, *, client: Any, runtime: rt.Runtime,
                 clock: Callable[[], float] = time.time,
                 remove_cgroups: Callable[[str], list[Any]] = cgroups.remove_pod_cgroups,
                 node: NodeStatusManager | None = None, serve: bool = True) -> None:
        self.config = config
        self.client = client
        self.runtime = runtime
        self.metrics = Metrics()
        self.volumes = VolumeManager(config.root_dir)
        self.statuses = StatusManager(client)
        self.recorder = EventRecorder(client, config.node_name, clock=clock)
        self.node = node or NodeStatusManager(
            client=client, runtime=runtime, node_name=config.node_name, pod_cidr=config.pod_cidr,
            kubelet_port=config.port, reserved=parse_reserved(config.system_reserved),
            labels=dict(config.node_labels), max_pods=config.max_pods,
            update_frequency=config.node_status_update_frequency,
            pressure=PressureMonitor(
                MachineObserver(config.root_dir, runtime), parse_eviction(config.eviction_hard),
                config.eviction_pressure_transition_period,
                on_disk_pressure=lambda: self._spawn(self.gc.collect_images_logged(), "gc-images")))
        self.gc = NodeGC(runtime, GCPolicy.from_config(config), cgroup_root=config.cgroup_root,
                         root_dir=config.root_dir, api_pods=self.pods, busy_uids=lambda: self.workers.uids())
        self.sampler = MetricsSampler(runtime, node_name=config.node_name, resolution=config.metrics_resolution)
        self.log_rotator = LogRotator(runtime, config.container_log_max_size, config.container_log_max_files,
                                      config.container_log_monitor_interval)
        self.syncer = PodSyncer(client=client, runtime=runtime, volumes=self.volumes, statuses=self.statuses,
                                recorder=self.recorder, settings=config.settings(), host_ip=self.node.internal_ip,
                                clock=clock, metrics=self.metrics, remove_cgroups=remove_cgroups)
        self.workers = PodWorkers(self.syncer, metrics=self.metrics)
        self.informer = Informer(client, PODS, field_selector=f"spec.nodeName={config.node_name}", name="pods")
        self.informer.indexer.add_index("uid", lambda o: [_uid(o)])
        self.informer.add_handler(on_add=self._on_add, on_update=self._on_update, on_delete=self._on_delete)
        self.serve = serve
        self.runtime_pods: dict[str, tuple[Any, ...]] = {}  # uid → fingerprint of its runtime state
        self._last_relist = 0.0
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self._server: Any = None
        self.started = asyncio.Event()
        self.syncer.probes.on_change = self._queue.put_nowait  # a probe result changed: sync that pod

    # -- lookups ---------------------------------------------------------------------------------

    def pod_by_uid(self, uid: str) -> dict[str, Any] | None:
        found = self.informer.indexer.by_index("uid", uid)
        return found[0] if found else None

    def pods(self) -> list[dict[str, Any]]:
        """The API's pods bound to this node (the informer's read-only copies)."""
        return self.informer.indexer.list()

    async def find_container(self, namespace: str, pod_name: str, container: str = "",
                             previous: bool = False) -> rt.ContainerStatus:
        """The runtime's record of a pod's container (its newest run, or the one before with ``previous``).

        ``container`` may be empty for a pod with one container. Raises ``LookupError`` with a
        one-line message (kubectl's wording) when there is no such pod, container or run.
        """
        pod = self.informer.indexer.get(f"{namespace}/{pod_name}")
        if pod is None:
            raise LookupError(f'pods "{pod_name}" not found')
        names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
        if not container:
            if len(names) != 1:
                raise LookupError(f"a container name must be specified for pod {pod_name}, choose one of: "
                                  f"[{' '.join(names)}]")
            container = names[0]
        if container not in names:
            raise LookupError(f"container {container} is not valid for pod {pod_name}")
        uid = _uid(pod)
        runs: list[rt.ContainerStatus] = []
        for s in await self.runtime.list_sandboxes():
            if s.pod_uid == uid:
                runs += [c for c in await self.runtime.list_containers(s.id)
                         if c.labels.get(rt.LABEL_CONTAINER_NAME, c.name) == container]
        runs.sort(key=lambda c: (c.attempt, c.created_at), reverse=True)
        index = 1 if previous else 0
        policy = str((pod.get("spec") or {}).get("restartPolicy") or "Always")
        if previous and runs and runs[0].state == "EXITED" and (
                policy == "Always" or (policy == "OnFailure" and runs[0].exit_code != 0)):
            index = 0  # waiting to restart (CrashLoopBackOff): its lastState is the newest run, as in Kubernetes
        if len(runs) <= index:
            what = "previous terminated" if previous else "running or terminated"
            raise LookupError(f'{what} container "{container}" in pod "{pod_name}" not found')
        return runs[index]

    # -- event sources ---------------------------------------------------------------------------

    def _on_add(self, pod: dict[str, Any]) -> None:
        self._queue.put_nowait(_uid(pod))

    def _on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if _uid(old) != _uid(new):
            self._queue.put_nowait(_uid(old))  # the name was taken by a new pod: the old one is gone
        self._queue.put_nowait(_uid(new))

    def _on_delete(self, pod: dict[str, Any]) -> None:
        self._queue.put_nowait(_uid(pod))

    async def relist(self) -> set[str]:
        """Read the runtime's sandboxes and containers; returns the pod uids whose state changed."""
        sandboxes = await self.runtime.list_sandboxes()
        containers = await self.runtime.list_containers()
        state: dict[str, list[tuple[str, ...]]] = {}
        for s in sandboxes:
            state.setdefault(s.pod_uid, []).append(("sandbox", s.id, s.state))
        for c in containers:
            uid = c.labels.get(rt.LABEL_POD_UID)
            if uid:
                state.setdefault(uid, []).append(("container", c.id, c.state))
        fresh = {uid: tuple(sorted(items)) for uid, items in state.items() if uid}
        changed = {uid for uid in fresh.keys() | self.runtime_pods.keys()
                   if fresh.get(uid) != self.runtime_pods.get(uid)}
        self.runtime_pods = fresh
        self._last_relist = time.monotonic()
        return changed

    def dispatch(self, uid: str) -> None:
        """The one decision for a uid: sync the API's pod, or kill what the API no longer has."""
        if not uid:
            return
        pod = self.pod_by_uid(uid)
        if pod is not None:
            self.workers.update(uid, pod)
        elif self.workers.terminated_at(uid) > self._last_relist:
            return  # cleaned up after the last relist: what that relist saw is gone already
        elif uid in self.workers or uid in self.runtime_pods:
            self.workers.update(uid, None, kill=True, grace=FORCE_KILL_GRACE)

    def resync(self) -> set[str]:
        """Dispatch every pod the API or the runtime knows (and every live worker); returns those uids."""
        uids = {_uid(p) for p in self.informer.indexer.list()} | set(self.runtime_pods) | set(self.workers.uids())
        for uid in sorted(uids):
            self.dispatch(uid)
        return uids

    def housekeeping(self, known: set[str]) -> None:
        """Remove folders (and cgroups) of pods that neither the API, the runtime nor a worker knows:
        left behind when a kubelet died in the middle of a cleanup. Blocking: run it in a thread."""
        for uid in self.volumes.known_pod_uids():
            if uid not in known and uid not in self.workers:
                log.info("removing the folder of pod %s, which neither the API nor the runtime knows", uid)
                self.volumes.teardown(uid)
                with contextlib.suppress(OSError, ValueError):
                    self.syncer.remove_cgroups(self.syncer.cgroup_parent(uid))

    # -- loops -----------------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            uid = await self._queue.get()
            if uid == RESYNC:
                known = self.resync()
                try:
                    await asyncio.to_thread(self.housekeeping, known)
                except OSError as exc:
                    log.warning("housekeeping failed: %s", exc)
            else:
                self.dispatch(uid)

    async def _relist_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.runtime_relist_period)
            try:
                changed = await self.relist()
            except rt.RuntimeFailure as exc:
                self.metrics.relists.labels("error").inc()
                log.warning("runtime relist failed: %s", exc)
                continue
            self.metrics.relists.labels("ok").inc()
            for uid in sorted(changed):
                self._queue.put_nowait(uid)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sync_frequency)
            self._queue.put_nowait(RESYNC)

    async def _register(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.node.register()
                return
            except (ApiError, ConnectionFailed) as exc:
                log.warning("cannot register node %s (retrying in %.1fs): %s", self.config.node_name, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def start(self) -> None:
        """Serve the kubelet API, register the Node, list pods and the runtime, adopt, start the loops."""
        if self.serve:
            from kubelet.server import start_server  # starlette/uvicorn only when serving

            self._server = await start_server(self, port=self.config.port)
        await self._register()
        self._spawn(self.informer.run(), "informer")
        self._spawn(self.recorder.run(), "events")
        self._spawn(self.node.run(), "node-status")
        self._spawn(self.gc.run(), "gc")
        self._spawn(self.log_rotator.run(), "log-rotation")
        self._spawn(self.sampler.run(), "metrics")
        await self.informer.wait_synced()
        while True:
            try:
                await self.relist()
                break
            except rt.RuntimeFailure as exc:
                # Without one relist we cannot tell adopted pods from new ones: wait for the runtime.
                log.warning("container runtime not answering yet: %s", exc)
                await asyncio.sleep(min(self.config.runtime_relist_period * 2, 5.0))
        log.info("adopting: %d pods in the API for this node, %d pods in the runtime",
                 len(self.informer.indexer), len(self.runtime_pods))
        self.resync()
        self._spawn(self._sync_loop(), "sync-loop")
        self._spawn(self._relist_loop(), "relist")
        self._spawn(self._resync_loop(), "resync")
        self.started.set()

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"kubelet-{name}"))

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """``start()``, then wait for ``request_stop()`` (or a loop dying), then ``shutdown()``."""
        try:
            await self.start()
            stopper = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stopper, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for t in done:
                if t is not stopper and not t.cancelled() and t.exception() is not None:
                    log.error("kubelet task %s died: %r", t.get_name(), t.exception())
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop the loops, the workers and the server. Pods keep running (a new kubelet adopts them)."""
        self.informer.stop()
        pending = set(self._tasks)
        for _ in range(5):
            for t in pending:
                t.cancel()
            # A task may swallow one cancellation (a library catching it at the wrong moment):
            # cancel again rather than hang the exit.
            _, pending = await asyncio.wait(pending, timeout=1.0)
            if not pending:
                break
            log.warning("tasks still stopping: %s", sorted(t.get_name() for t in pending))
        self._tasks.clear()
        await self.workers.stop()
        self.syncer.oom.close()  # its eventfd readers belong to this loop
        await self.syncer.probes.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self.recorder.flush()
        if self._server is not None:
            await self._server.stop()
            self._server = None
