"""Pod workers: one per pod uid, each converging the runtime on the newest desired state of its pod.

::

    Kubelet sync loop ──update(uid, pod | None, kill)──▶ PodWorkers
                                                           └─ one task per uid (mailbox of one: the newest pod;
                                                              a kill is sticky and is never dropped)
                                                                 ├─ PodSyncer.sync_pod(pod)       → requeue after s
                                                                 └─ PodSyncer.terminate_pod(...)  → worker ends

``PodSyncer.sync_pod`` is level-triggered: it reads what the runtime has for the pod (by the pod-uid
label, so a restarted kubelet adopts what it finds) and does the next steps towards the spec —
volumes, image pulls per ``imagePullPolicy``, RunPodSandbox, Create/StartContainer in spec order,
restarts per ``restartPolicy`` with crash back-off — then writes the pod's status if it changed.

``PodSyncer.terminate_pod`` stops the containers (SIGTERM, grace period, SIGKILL), stops and removes
the sandboxes, removes the pod's cgroup folders and volume folders, then deletes the API object
with ``gracePeriodSeconds=0`` and a uid precondition.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kubelet import cgroups, dns, lifecycle
from kubelet import runtime as rt
from kubelet.prober import DEFAULT_FAST_INTERVAL, ProbeManager
from kubelet.status import ContainerView, EventRecorder, StatusManager, compute_pod_status
from kubelet.volumes import VolumeError, VolumeManager
from minik8s.api import registry
from minik8s.api.quantity import parse_quantity
from minik8s.errors import Conflict, NotFound

log = logging.getLogger(__name__)

PODS = registry.lookup("pods")

PUSH_HINT = "push it with: minictl image push IMAGE.tar"
# Registry hosts the cluster's containerd resolves (through the cluster registry). Any other host
# fails before asking the runtime, so a typo'd registry gives the hint at once instead of a timeout.
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
CPU_PERIOD_US = 100_000  # the CFS period Kubernetes uses
MIN_CPU_QUOTA_US = 1_000  # the kernel refuses smaller quotas
MIN_CPU_SHARES = 2
# A pod whose API object vanished (force delete) or that the API never knew gets this short grace
# period: its owner asked not to wait, but the processes still get a SIGTERM first (Kubernetes' floor).
FORCE_KILL_GRACE = 2
DEFAULT_GRACE = 30
# How containerd words a StartContainer cut short because its caller (a kubelet being killed) went away.
INTERRUPTED_START = ("context canceled", "signal: killed")


# --- metrics -------------------------------------------------------------------------------------


class Metrics:
    """The kubelet's Prometheus metrics, in a registry of their own (tests make many kubelets)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.syncs = Counter("kubelet_pod_worker_syncs", "Pod syncs by kind and result", ["op", "result"],
                             registry=self.registry)
        self.sync_duration = Histogram("kubelet_pod_worker_duration_seconds", "Duration of one pod sync",
                                       ["op"], registry=self.registry)
        self.pod_start = Histogram(
            "kubelet_pod_start_duration_seconds",
            "From the kubelet first seeing a pod to all its containers running",
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300), registry=self.registry)
        self.runtime_errors = Counter("kubelet_runtime_operations_errors", "Runtime calls that failed",
                                      ["operation"], registry=self.registry)
        self.workers = Gauge("kubelet_pod_workers", "Pod workers alive", registry=self.registry)
        self.relists = Counter("kubelet_pleg_relists", "Runtime relists", ["result"], registry=self.registry)


# --- back-off ------------------------------------------------------------------------------------


class BackOff:
    """Kubernetes' ``flowcontrol.Backoff``: per key, a delay that doubles from ``base`` to ``cap``.

    An entry idle for more than ``2 * cap`` starts over from ``base`` (a container that ran fine for
    ten minutes is not punished for an old crash loop). Times are wall-clock seconds.
    """

    def __init__(self, base: float, cap: float, clock: Callable[[], float] = time.time) -> None:
        self.base, self.cap, self.clock = base, cap, clock
        self._entries: dict[str, tuple[float, float]] = {}  # key → (delay, last update)

    def _live(self, key: str, event_time: float) -> tuple[float, float] | None:
        entry = self._entries.get(key)
        if entry is None or event_time - entry[1] > 2 * self.cap:
            return None
        return entry

    def next(self, key: str, event_time: float) -> float:
        """Count one more failure at ``event_time``; returns the new delay."""
        entry = self._live(key, event_time)
        delay = self.base if entry is None else min(entry[0] * 2, self.cap)
        self._entries[key] = (delay, event_time)
        return delay

    def remaining_since(self, key: str, event_time: float) -> float:
        """Seconds still to wait when the failure happened at ``event_time`` (0: go ahead)."""
        entry = self._live(key, event_time)
        if entry is None:
            return 0.0
        return max(0.0, entry[0] - (self.clock() - event_time))

    def remaining_since_update(self, key: str) -> float:
        """Seconds still to wait since the last counted failure (0: go ahead)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return self.remaining_since(key, entry[1])

    def delay(self, key: str) -> float:
        entry = self._entries.get(key)
        return entry[0] if entry else 0.0

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]


# --- pure helpers --------------------------------------------------------------------------------


def registry_host(image: str) -> str:
    """The registry host of an image reference (docker's rule: a first part with '.' or ':' or 'localhost')."""
    first, sep, _rest = image.split("@", 1)[0].partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def millicores(value: Any) -> int:
    """A cpu quantity in millicores, rounded up (``0.1`` → 100, ``"1"`` → 1000)."""
    return math.ceil(parse_quantity(value) * 1000)


def cpu_shares(request_millis: int) -> int:
    """``cpu.shares`` for a request: 1024 per core, at least 2 (Kubernetes' ``MilliCPUToShares``)."""
    return max(MIN_CPU_SHARES, request_millis * 1024 // 1000)


def cpu_quota(limit_millis: int, period: int = CPU_PERIOD_US) -> int:
    """``cpu.cfs_quota_us`` for a limit (Kubernetes' ``MilliCPUToQuota``); 0 for no limit."""
    if limit_millis <= 0:
        return 0
    return max(MIN_CPU_QUOTA_US, limit_millis * period // 1000)


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, unknown ones kept, ``$$`` is ``$``."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)
    return _VAR_REF.sub(sub, text)


def _field_ref(pod: dict[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
              "spec.serviceAccountName": spec.get("serviceAccountName"), "status.podIP": pod_ip,
              "status.hostIP": host_ip}
    if path in simple:
        return str(simple[path] or "")
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise ValueError(f"unsupported fieldRef {path!r}")


def _resource_ref(container: dict[str, Any], ref: dict[str, Any]) -> str:
    resource = str(ref.get("resource") or "")
    kind, _, name = resource.partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if value is None:
        return "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(parse_quantity(value) / divisor))


def container_env(pod: dict[str, Any], container: dict[str, Any], *, pod_ip: str,
                  host_ip: str) -> list[tuple[str, str]]:
    """The container's environment in order: ``value`` (with ``$(VAR)`` expansion), ``fieldRef``,
    ``resourceFieldRef``. Raises ``ValueError`` for a reference the kubelet cannot resolve."""
    out: dict[str, str] = {}
    for e in container.get("env") or []:
        name = str(e.get("name") or "")
        source = e.get("valueFrom") or {}
        if "fieldRef" in source:
            value = _field_ref(pod, str((source["fieldRef"] or {}).get("fieldPath") or ""), pod_ip, host_ip)
        elif "resourceFieldRef" in source:
            value = _resource_ref(container, source["resourceFieldRef"] or {})
        elif source:
            raise ValueError(f"env {name!r}: only fieldRef and resourceFieldRef sources are supported")
        else:
            value = expand(str(e.get("value") or ""), out)
        out[name] = value
    return list(out.items())


def _attempt(c: rt.ContainerStatus) -> int:
    try:
        return int(c.annotations.get(rt.ANNOTATION_RESTART_COUNT, c.attempt))
    except ValueError:
        return c.attempt


def _newest_first(items: list[rt.ContainerStatus]) -> list[rt.ContainerStatus]:
    return sorted(items, key=lambda c: (_attempt(c), c.created_at), reverse=True)


# --- the per-pod logic ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncSettings:
    """What the pod logic needs from the kubelet's configuration (seconds for durations)."""

    node_name: str
    cgroup_root: str = "/minik8s"
    crash_backoff_base: float = 10.0
    crash_backoff_max: float = 300.0
    image_pull_backoff_base: float = 10.0
    image_pull_backoff_max: float = 300.0
    # How many exited containers of each name are kept (for ``logs --previous`` and lastState).
    keep_exited_per_container: int = 1
    # Readiness is probed this often right after a container starts, until its first success.
    readiness_fast_interval: float = DEFAULT_FAST_INTERVAL
    # Cluster DNS for ClusterFirst pods (kubelet/dns.py); empty: pods get the node's resolv.conf.
    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"


class PodSyncer:
    """The per-pod steps; stateless apart from back-offs and caches that a restart may lose.

    ``sync_pod`` returns the seconds after which it wants to run again (a back-off ends), or None.
    Errors propagate (the worker retries with its own back-off); runtime failures of one container
    are turned into that container's waiting reason instead, so the other containers still start.
    """

    def __init__(self, *, client: Any, runtime: rt.Runtime, volumes: VolumeManager, statuses: StatusManager,
                 recorder: EventRecorder, settings: SyncSettings, host_ip: str,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None,
                 remove_cgroups: Callable[[str], list[Any]] = cgroups.remove_pod_cgroups) -> None:
        self.client = client
        self.runtime = runtime
        self.volumes = volumes
        self.statuses = statuses
        self.recorder = recorder
        self.settings = settings
        self.host_ip = host_ip
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.remove_cgroups = remove_cgroups
        self.crash_backoff = BackOff(settings.crash_backoff_base, settings.crash_backoff_max, clock)
        self.pull_backoff = BackOff(settings.image_pull_backoff_base, settings.image_pull_backoff_max, clock)
        self._sandbox_ids: dict[str, str] = {}
        self._first_seen: dict[str, float] = {}
        self._started: set[str] = set()
        self._pull_errors: dict[str, str] = {}  # back-off key → why the last pull failed
        self.oom = lifecycle.OomWatcher()  # OOM kills per container, from its memory cgroup
        self._oom_reported: set[str] = set()  # container ids whose OOM kill has its event
        # Liveness/readiness/startup probe workers and their results; the kubelet sets ``probes.on_change``.
        self.probes = ProbeManager(runtime=runtime, recorder=recorder, fast_interval=settings.readiness_fast_interval)

    # -- configs ---------------------------------------------------------------------------------

    def cgroup_parent(self, uid: str) -> str:
        return f"{self.settings.cgroup_root.rstrip('/')}/pod{uid}"

    def sandbox_config(self, pod: dict[str, Any], attempt: int) -> rt.SandboxConfig:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = str(meta["uid"])
        ports = []
        for c in spec.get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("hostPort"):
                    ports.append(rt.PortMapping(container_port=int(p["containerPort"]), host_port=int(p["hostPort"]),
                                                protocol=str(p.get("protocol") or "TCP"),
                                                host_ip=str(p.get("hostIP") or "")))
        grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE)
        namespace = str(meta.get("namespace") or "default")
        pdns = dns.pod_dns(spec, namespace, cluster_dns=self.settings.cluster_dns,
                           cluster_domain=self.settings.cluster_domain)
        return rt.SandboxConfig(
            pod_uid=uid, name=str(meta["name"]), namespace=str(meta.get("namespace") or "default"),
            attempt=attempt, hostname=str(spec.get("hostname") or meta["name"])[:63],
            log_directory=str(self.volumes.log_dir(uid)), cgroup_parent=self.cgroup_parent(uid),
            port_mappings=tuple(ports),
            # Empty DNS settings (policy Default without dnsConfig) make containerd copy the node's resolv.conf.
            dns_servers=pdns.servers, dns_searches=pdns.searches, dns_options=pdns.options,
            host_network=bool(spec.get("hostNetwork")),
            labels={k: v for k, v in (meta.get("labels") or {}).items()},
            annotations={**(meta.get("annotations") or {}), rt.ANNOTATION_TERMINATION_GRACE: str(grace)},
        )

    def container_config(self, pod: dict[str, Any], container: dict[str, Any], *, image_ref: str, attempt: int,
                         pod_ip: str, volume_paths: dict[str, str]) -> rt.ContainerConfig:
        """The runtime config of one container. Raises ``ValueError``/``VolumeError`` for a bad spec."""
        name = str(container["name"])
        env = container_env(pod, container, pod_ip=pod_ip, host_ip=self.host_ip)
        env_map = dict(env)
        res = container.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        cpu_limit = millicores(limits["cpu"]) if "cpu" in limits else 0
        cpu_request = millicores(requests["cpu"]) if "cpu" in requests else cpu_limit
        memory = math.ceil(parse_quantity(limits["memory"])) if "memory" in limits else 0
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE)
        return rt.ContainerConfig(
            name=name, image=image_ref,
            command=tuple(expand(str(a), env_map) for a in container.get("command") or []),
            args=tuple(expand(str(a), env_map) for a in container.get("args") or []),
            working_dir=str(container.get("workingDir") or ""), envs=tuple(env),
            mounts=self.volumes.mounts_for(container, volume_paths),
            log_path=f"{name}/{attempt}.log", attempt=attempt,
            cpu_period=CPU_PERIOD_US if cpu_limit else 0, cpu_quota=cpu_quota(cpu_limit),
            cpu_shares=cpu_shares(cpu_request), memory_limit_bytes=memory,
            annotations={rt.ANNOTATION_RESTART_COUNT: str(attempt), rt.ANNOTATION_TERMINATION_GRACE: str(grace)},
        )

    # -- runtime views ---------------------------------------------------------------------------

    async def _sandboxes(self, uid: str) -> list[rt.SandboxStatus]:
        """The pod's sandboxes, newest first. Uses the id it knows when it can (one status call)."""
        known = self._sandbox_ids.get(uid)
        if known:
            try:
                s = await self.runtime.sandbox_status(known)
                if s.state == "READY":
                    return [s]
            except rt.NotFoundInRuntime:
                self._sandbox_ids.pop(uid, None)
        found = [s for s in await self.runtime.list_sandboxes() if s.pod_uid == uid]
        found.sort(key=lambda s: (s.attempt, s.created_at), reverse=True)
        if found:
            self._sandbox_ids[uid] = found[0].id
        return found

    async def _containers(self, uid: str, sandboxes: list[rt.SandboxStatus]) -> dict[str, list[rt.ContainerStatus]]:
        """The pod's containers by name, newest first, over all its sandboxes."""
        by_name: dict[str, list[rt.ContainerStatus]] = {}
        for s in sandboxes:
            for c in await self.runtime.list_containers(s.id):
                if c.labels.get(rt.LABEL_POD_UID, uid) != uid:
                    continue
                by_name.setdefault(c.labels.get(rt.LABEL_CONTAINER_NAME, c.name), []).append(c)
        return {name: _newest_first(items) for name, items in by_name.items()}

    # -- sync ------------------------------------------------------------------------------------

    def _should_restart(self, policy: str, c: rt.ContainerStatus) -> bool:
        if policy == "Always":
            return True
        if policy == "OnFailure":
            return c.exit_code != 0
        return False

    async def sync_pod(self, pod: dict[str, Any]) -> float | None:
        """Converge the runtime on ``pod`` (not being deleted) and write its status. See the class."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = str(meta["uid"])
        self._first_seen.setdefault(uid, self.clock())
        policy = str(spec.get("restartPolicy") or "Always")
        spec_containers = list(spec.get("containers") or [])
        views = {str(c["name"]): ContainerView(name=str(c["name"]), image=str(c.get("image") or ""))
                 for c in spec_containers}
        requeue: list[float] = []

        sandboxes = await self._prune_sandboxes(uid, await self._sandboxes(uid))
        current = sandboxes[0] if sandboxes else None
        by_name = await self._containers(uid, sandboxes)
        self._observe_ooms(pod, by_name)
        await self._drop_interrupted_starts(uid, by_name)
        for name, view in views.items():
            history = by_name.get(name, [])
            view.current = history[0] if history else None
            view.previous = history[1] if len(history) > 1 else None
            view.restart_count = _attempt(view.current) if view.current else 0

        # A pod the API already calls finished is never started again (e.g. after a node restart).
        terminal_in_api = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        done = terminal_in_api or (bool(views) and all(
            v.current is not None and v.current.state == "EXITED" and not self._should_restart(policy, v.current)
            for v in views.values()))
        if done:
            if current is not None and current.state == "READY":
                await self.runtime.stop_sandbox(current.id)  # frees the pod IP, as Kubernetes does
                current = await self.runtime.sandbox_status(current.id)
            await self._write_status(pod, current, list(views.values()))
            return None

        try:
            volume_paths = await asyncio.to_thread(self.volumes.setup, pod)
        except (VolumeError, OSError) as exc:
            self.recorder.event(pod, "Warning", "FailedMount", str(exc))
            await self._write_status(pod, current, list(views.values()))
            raise

        if current is None or current.state != "READY":
            current = await self._new_sandbox(pod, current, by_name, views)
            if current is None:
                await self._write_status(pod, None, list(views.values()))
                return None
        sandbox_config = self.sandbox_config(pod, current.attempt)
        await self._kill_unhealthy(pod, views, current)

        for container in spec_containers:
            view = views[str(container["name"])]
            delay = await self._sync_container(pod, container, view, current, sandbox_config, policy, volume_paths)
            if delay:
                requeue.append(delay)

        await self._gc_containers(uid, by_name)
        status = await self._write_status(pod, current, list(views.values()))
        if status.get("phase") == "Running" and uid not in self._started and all(
                s["state"].get("running") for s in status["containerStatuses"]):
            self._started.add(uid)
            self.metrics.pod_start.observe(max(0.0, self.clock() - self._first_seen[uid]))
        return min(requeue) if requeue else None

    async def _prune_sandboxes(self, uid: str, sandboxes: list[rt.SandboxStatus]) -> list[rt.SandboxStatus]:
        """Keep the newest ready sandbox of the pod (first in the list); remove any other ready one.

        A second ready sandbox only exists when a kubelet died while RunPodSandbox was in flight and
        its successor started another: the duplicate's containers and IP must not leak.
        """
        ready = [s for s in sandboxes if s.state == "READY"]
        if len(ready) <= 1:
            return sorted(sandboxes, key=lambda s: s.state != "READY") if ready else sandboxes
        keep = ready[0]
        for extra in ready[1:]:
            log.warning("pod %s: removing duplicate sandbox %s (keeping %s)", uid, extra.id, keep.id)
            containers = await self.runtime.list_containers(extra.id)
            for c in containers:
                if c.state in ("RUNNING", "CREATED", "UNKNOWN"):
                    await self.runtime.stop_container(c.id, 0)
            await self.runtime.stop_sandbox(extra.id)
            for c in containers:
                await self.runtime.remove_container(c.id)
            await self.runtime.remove_sandbox(extra.id)
        self._sandbox_ids[uid] = keep.id
        return [keep] + [s for s in sandboxes if s.state != "READY"]

    def _observe_ooms(self, pod: dict[str, Any], by_name: dict[str, list[rt.ContainerStatus]]) -> None:
        """Watch running containers' memory cgroups; report exited ones the OOM killer ended (an event each)."""
        uid = str(pod["metadata"]["uid"])
        for name, history in by_name.items():
            for i, c in enumerate(history):
                if c.state == "RUNNING":
                    self.oom.watch(c.id, cgroups.container_cgroup_path(self.cgroup_parent(uid), c.id))
                    continue
                history[i] = c = lifecycle.classify_exit(c, self.oom.ooms(c.id))
                if c.state != "EXITED" or c.reason != lifecycle.OOM_REASON or c.id in self._oom_reported:
                    continue
                self._oom_reported.add(c.id)
                counted = self.oom.ooms(c.id)
                limit = self._memory_limit(pod, name)
                self.recorder.event(
                    pod, "Warning", "OOMKilling",
                    f"Memory cgroup out of memory: container {name} was killed (exit code {c.exit_code}"
                    f"{f', memory limit {limit}' if limit else ''}"
                    f"{f', the cgroup counted {counted} OOM kill(s)' if counted else ''})", container=name)

    async def _drop_interrupted_starts(self, uid: str, by_name: dict[str, list[rt.ContainerStatus]]) -> None:
        """Remove the newest run of a container if it never started and failed before this kubelet began.

        A kubelet killed during StartContainer takes the start down with it (containerd runs the shim
        under the request's context: "failed to start shim: signal: killed", "context canceled").
        That is not the container's failure (a kubelet's own calls are never cancelled, they time
        out): such a run is removed and created again with the same attempt number, so the pod's
        restartCount and crash back-off stay truthful.
        """
        for history in by_name.values():
            c = history[0] if history else None
            if (c is not None and c.state == "EXITED" and not c.started_at and c.reason == "StartError"
                    and any(m in c.message for m in INTERRUPTED_START)):
                log.info("pod %s: removing container %s, whose start the previous kubelet's exit interrupted: %s",
                         uid, c.id, c.message)
                await self.runtime.remove_container(c.id)
                del history[0]

    @staticmethod
    def _memory_limit(pod: dict[str, Any], name: str) -> str:
        for c in (pod.get("spec") or {}).get("containers") or []:
            if c.get("name") == name:
                return str(((c.get("resources") or {}).get("limits") or {}).get("memory") or "")
        return ""

    async def _new_sandbox(self, pod: dict[str, Any], old: rt.SandboxStatus | None,
                           by_name: dict[str, list[rt.ContainerStatus]],
                           views: dict[str, ContainerView]) -> rt.SandboxStatus | None:
        """Run a sandbox (the first, or a new one after the old one died); None when there should be none."""
        policy = str((pod.get("spec") or {}).get("restartPolicy") or "Always")
        attempt = 0
        if old is not None:
            attempt = old.attempt + 1
            # The old sandbox died: its containers go down with it, and with Never the pod does not
            # come back (as in Kubernetes, which creates no new sandbox once containers have run).
            self.recorder.event(pod, "Normal", "SandboxChanged",
                                "Pod sandbox changed, it will be killed and re-created.")
            for history in by_name.values():
                for c in history:
                    if c.state in ("RUNNING", "CREATED", "UNKNOWN"):
                        await self.runtime.stop_container(c.id, 0)
            await self.runtime.stop_sandbox(old.id)
            if policy == "Never" and any(by_name.values()):
                return None
            for view in views.values():
                if view.current is not None:
                    view.current = await self._refresh(view.current)
        config = self.sandbox_config(pod, attempt)
        try:
            sandbox_id = await self.runtime.run_sandbox(config)
        except rt.RuntimeFailure as exc:
            self.metrics.runtime_errors.labels("run_sandbox").inc()
            self.recorder.event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}")
            raise
        self._sandbox_ids[config.pod_uid] = sandbox_id
        return await self.runtime.sandbox_status(sandbox_id)

    async def _refresh(self, c: rt.ContainerStatus) -> rt.ContainerStatus:
        try:
            return await self.runtime.container_status(c.id)
        except rt.NotFoundInRuntime:
            return c

    async def _sync_container(self, pod: dict[str, Any], container: dict[str, Any], view: ContainerView,
                              sandbox: rt.SandboxStatus, sandbox_config: rt.SandboxConfig, policy: str,
                              volume_paths: dict[str, str]) -> float | None:
        """Bring one container towards running; returns a requeue delay when a back-off holds it."""
        cur = view.current
        name = view.name
        if cur is not None and cur.sandbox_id == sandbox.id:
            if cur.state == "RUNNING":
                return None
            if cur.state == "CREATED":  # created but never started (a kubelet restart in between)
                await self._start(pod, name, cur.id, view)
                return None
        attempt = 0
        if cur is not None:
            if cur.state in ("EXITED", "UNKNOWN") and not self._should_restart(policy, cur):
                return None
            attempt = _attempt(cur) + 1
            if cur.sandbox_id == sandbox.id:
                # It ended in place: restart with the crash back-off (the first restart is immediate).
                key = f"{pod['metadata']['uid']}/{name}"
                finished = (cur.finished_at or cur.created_at) / 1e9 or self.clock()
                remaining = self.crash_backoff.remaining_since(key, finished)
                if remaining > 0:
                    delay = self.crash_backoff.delay(key)
                    meta = pod["metadata"]
                    view.waiting = ("CrashLoopBackOff", f"back-off {delay:g}s restarting failed container={name} "
                                    f"pod={meta['name']}_{meta.get('namespace')}({meta['uid']})")
                    self.recorder.event(pod, "Warning", "BackOff",
                                        f"Back-off restarting failed container {name} in pod {meta['name']}",
                                        container=name)
                    return remaining
                self.crash_backoff.next(key, finished)

        image_ref, pull_delay = await self._ensure_image(pod, container, view)
        if image_ref is None:
            return pull_delay
        try:
            config = self.container_config(pod, container, image_ref=image_ref, attempt=attempt, pod_ip=sandbox.ip,
                                           volume_paths=volume_paths)
        except (ValueError, VolumeError) as exc:
            view.waiting = ("CreateContainerConfigError", str(exc))
            self.recorder.event(pod, "Warning", "Failed", f"Error: {exc}", container=name)
            return self.settings.crash_backoff_base
        try:
            cid = await self.runtime.create_container(sandbox.id, config, sandbox_config)
        except rt.RuntimeFailure as exc:
            self.metrics.runtime_errors.labels("create_container").inc()
            view.waiting = ("CreateContainerError", str(exc))
            self.recorder.event(pod, "Warning", "Failed", f"Error: {exc}", container=name)
            return self.settings.crash_backoff_base
        self.recorder.event(pod, "Normal", "Created", f"Created container {name}", container=name)
        view.previous = cur if cur is not None and cur.state == "EXITED" else view.previous
        view.restart_count = attempt
        await self._start(pod, name, cid, view)
        return None

    async def _start(self, pod: dict[str, Any], name: str, cid: str, view: ContainerView) -> None:
        try:
            await self.runtime.start_container(cid)
        except rt.RuntimeFailure as exc:
            # The container stays behind EXITED (or CREATED): the next sync applies the crash back-off.
            self.metrics.runtime_errors.labels("start_container").inc()
            self.recorder.event(pod, "Warning", "Failed", f"Error: {exc}", container=name)
        else:
            self.recorder.event(pod, "Normal", "Started", f"Started container {name}", container=name)
            self.oom.watch(cid, cgroups.container_cgroup_path(self.cgroup_parent(str(pod["metadata"]["uid"])), cid))
        view.current = await self._refresh_id(cid, view.current)

    async def _refresh_id(self, cid: str, fallback: rt.ContainerStatus | None) -> rt.ContainerStatus | None:
        try:
            return await self.runtime.container_status(cid)
        except rt.NotFoundInRuntime:
            return fallback

    async def _ensure_image(self, pod: dict[str, Any], container: dict[str, Any],
                            view: ContainerView) -> tuple[str | None, float | None]:
        """The image reference to create the container with, or (None, requeue delay) with ``view.waiting`` set."""
        image = str(container.get("image") or "")
        name = view.name
        uid = str(pod["metadata"]["uid"])
        policy = str(container.get("imagePullPolicy") or "IfNotPresent")
        if not image:
            view.waiting = ("InvalidImageName", "no image given")
            return None, None
        key = f"{uid}/{image}"
        host = registry_host(image)
        if host not in DOCKER_HUB_HOSTS:
            return None, self._pull_failed(
                pod, view, key, image, f"registry {host} is not served by this cluster (only docker.io names, "
                                       f"from the cluster registry)")
        if policy == "Never" or policy == "IfNotPresent":
            ref = await self.runtime.image_ref(image)
            if ref:
                self.recorder.event(pod, "Normal", "Pulled",
                                    f'Container image "{image}" already present on machine', container=name)
                return ref, None
            if policy == "Never":
                message = f'Container image "{image}" is not present with pull policy of Never'
                view.waiting = ("ErrImageNeverPull", message)
                self.recorder.event(pod, "Warning", "ErrImageNeverPull", message, container=name)
                return None, None
        remaining = self.pull_backoff.remaining_since_update(key)
        if remaining > 0:
            why = self._pull_errors.get(key, "")
            view.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image}": {why}{"; " if why else ""}'
                                                f'{PUSH_HINT}')
            self.recorder.event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"', container=name)
            return None, remaining
        self.recorder.event(pod, "Normal", "Pulling", f'Pulling image "{image}"', container=name)
        started = time.monotonic()
        try:
            ref = await self.runtime.pull_image(image)
        except rt.RuntimeFailure as exc:
            self.metrics.runtime_errors.labels("pull_image").inc()
            return None, self._pull_failed(pod, view, key, image, str(exc))
        self.pull_backoff.reset(key)
        self._pull_errors.pop(key, None)
        self.recorder.event(pod, "Normal", "Pulled",
                            f'Successfully pulled image "{image}" in {time.monotonic() - started:.3f}s',
                            container=name)
        return ref, None

    def _pull_failed(self, pod: dict[str, Any], view: ContainerView, key: str, image: str, reason: str) -> float:
        """ErrImagePull on a fresh failure, ImagePullBackOff while its back-off runs; returns the requeue delay."""
        remaining = self.pull_backoff.remaining_since_update(key)
        if remaining > 0:
            view.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image}": {reason}; {PUSH_HINT}')
            self.recorder.event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"', container=view.name)
            return remaining
        delay = self.pull_backoff.next(key, self.clock())
        self._pull_errors[key] = reason
        message = f'failed to pull image "{image}": {reason}; {PUSH_HINT}'
        view.waiting = ("ErrImagePull", message)
        self.recorder.event(pod, "Warning", "Failed", f'Failed to pull image "{image}": {reason}; {PUSH_HINT}',
                            container=view.name)
        self.recorder.event(pod, "Warning", "Failed", "Error: ErrImagePull", container=view.name)
        return delay

    async def _gc_containers(self, uid: str, by_name: dict[str, list[rt.ContainerStatus]]) -> None:
        """Remove exited containers beyond the newest few per name (their logs go with them)."""
        keep = 1 + self.settings.keep_exited_per_container
        for history in by_name.values():
            for c in history[keep:]:
                if c.state == "EXITED":
                    await self.runtime.remove_container(c.id)

    async def _kill_unhealthy(self, pod: dict[str, Any], views: dict[str, ContainerView],
                              sandbox: rt.SandboxStatus) -> None:
        """Kill running containers whose liveness or startup probe failed; the container loop then restarts
        them per restartPolicy (with the crash back-off), as Kubernetes' computePodActions does."""
        uid = str(pod["metadata"]["uid"])
        spec = pod.get("spec") or {}
        specs = {str(c.get("name")): c for c in spec.get("containers") or []}
        for view in views.values():
            cur = view.current
            if cur is None or cur.state != "RUNNING" or cur.sandbox_id != sandbox.id:
                continue
            probe = self.probes.failed(uid, view.name, cur.id)
            if probe is None:
                continue
            restart = str(spec.get("restartPolicy") or "Always") != "Never"
            self.recorder.event(pod, "Normal", "Killing", f"Container {view.name} failed {probe.kind} probe"
                                f"{', will be restarted' if restart else ''}", container=view.name)
            grace = probe.termination_grace if probe.termination_grace is not None else termination_grace(pod)
            pod_ip = self.host_ip if spec.get("hostNetwork") else sandbox.ip
            await self._kill_container(pod, cur, specs, pod_ip, grace)
            self.probes.remove_container(uid, view.name)  # after the kill: a failed kill is tried again
            view.current = await self._refresh(cur)

    async def _write_status(self, pod: dict[str, Any], sandbox: rt.SandboxStatus | None,
                            views: list[ContainerView]) -> dict[str, Any]:
        # Probe workers follow the containers that run now; their results give ready / started.
        running = {v.name: v.current for v in views if v.current is not None and v.waiting is None}
        pod_ip = self.host_ip if (pod.get("spec") or {}).get("hostNetwork") else (sandbox.ip if sandbox else "")
        for name, (started, ready) in self.probes.sync(pod, running, pod_ip).items():
            view = next(v for v in views if v.name == name)
            view.started, view.ready = started, ready
        status = compute_pod_status(pod, sandbox=sandbox, views=views, host_ip=self.host_ip)
        await self.statuses.set_status(pod, status)
        return status

    # -- terminate -------------------------------------------------------------------------------

    async def terminate_pod(self, uid: str, pod: dict[str, Any] | None, grace: int, *, in_api: bool = True) -> None:
        """Stop and remove everything of pod ``uid`` in the runtime and on disk; then delete its API object.

        ``pod`` is the last API object seen (None if the kubelet never saw one: events name it);
        ``in_api`` False means the API dropped it already (force delete), so no DELETE is sent.
        Idempotent: a second call finds nothing to stop and a NotFound on delete. Errors propagate
        (the worker retries).
        """
        self.probes.remove_pod(uid)  # no probing (nor Unhealthy events) of containers being stopped
        sandboxes = [s for s in await self.runtime.list_sandboxes() if s.pod_uid == uid]
        containers: list[rt.ContainerStatus] = []
        for s in sandboxes:
            containers += await self.runtime.list_containers(s.id)
        live = [c for c in containers if c.state in ("RUNNING", "CREATED", "UNKNOWN")]
        if pod is not None:
            for c in live:
                if c.state == "RUNNING":
                    name = c.labels.get(rt.LABEL_CONTAINER_NAME, c.name)
                    self.recorder.event(pod, "Normal", "Killing", f"Stopping container {name}", container=name)
        # Containers stop in parallel, each with the whole grace period (as in Kubernetes): its preStop
        # hook first (bounded by the grace period and counted in it), then SIGTERM, then SIGKILL.
        specs = {str(c.get("name")): c for c in ((pod or {}).get("spec") or {}).get("containers") or []}
        pod_ip = next((s.ip for s in sandboxes if s.state == "READY" and s.ip), "")
        if (pod or {}).get("spec", {}).get("hostNetwork"):
            pod_ip = self.host_ip
        await asyncio.gather(*(self._kill_container(pod, c, specs, pod_ip, grace) for c in live))
        for c in containers:
            self.oom.forget(c.id)
            self._oom_reported.discard(c.id)
        for s in sandboxes:
            await self.runtime.stop_sandbox(s.id)
        for c in containers:
            await self.runtime.remove_container(c.id)
        for s in sandboxes:
            await self.runtime.remove_sandbox(s.id)
        try:
            busy = await asyncio.to_thread(self.remove_cgroups, self.cgroup_parent(uid))
        except (OSError, ValueError) as exc:
            busy = [str(exc)]
        if busy:
            # Not fatal for the API object: the folders are retried by the kubelet's housekeeping.
            log.warning("pod %s: cgroup folders still busy: %s", uid, busy[:3])
        await asyncio.to_thread(self.volumes.teardown, uid)
        self.forget(uid)
        if pod is not None and in_api:
            meta = pod["metadata"]
            try:
                await self.client.delete(PODS, meta["name"], meta.get("namespace"), grace_period_seconds=0,
                                         preconditions={"uid": uid})
            except (NotFound, Conflict):
                pass  # gone already, or the name belongs to a new pod now

    async def _kill_container(self, pod: dict[str, Any] | None, c: rt.ContainerStatus,
                              specs: dict[str, dict[str, Any]], pod_ip: str, grace: int) -> None:
        """preStop (if the spec has one and the container runs), then StopContainer with the grace left."""
        name = c.labels.get(rt.LABEL_CONTAINER_NAME, c.name)
        spec = specs.get(name)
        timeout = max(0, grace)
        if pod is not None and spec is not None and c.state == "RUNNING" and grace > 0 and lifecycle.pre_stop(spec):
            started = self.clock()
            failure = await lifecycle.run_pre_stop(self.runtime, spec, c.id, pod_ip, grace)
            took = max(0.0, self.clock() - started)
            if failure:
                self.recorder.event(pod, "Warning", "FailedPreStopHook", f"PreStopHook failed: {failure}",
                                    container=name)
            timeout = lifecycle.remaining_grace(grace, took)
            log.info("pod %s: preStop hook of %s took %.2fs; %ds left before SIGKILL", c.labels.get(
                rt.LABEL_POD_UID, ""), name, took, timeout)
        await self.runtime.stop_container(c.id, timeout)

    def forget(self, uid: str) -> None:
        self._sandbox_ids.pop(uid, None)
        self._first_seen.pop(uid, None)
        self._started.discard(uid)
        self.probes.remove_pod(uid)
        self.statuses.forget(uid)
        self.crash_backoff.forget_prefix(f"{uid}/")
        self.pull_backoff.forget_prefix(f"{uid}/")
        for key in [k for k in self._pull_errors if k.startswith(f"{uid}/")]:
            del self._pull_errors[key]


def termination_grace(pod: dict[str, Any] | None) -> int:
    """The grace period for killing ``pod``: ``deletionGracePeriodSeconds`` when it is being deleted,
    else its spec's (a pod only the runtime knows gets ``FORCE_KILL_GRACE``)."""
    if pod is None:
        return FORCE_KILL_GRACE
    meta = pod.get("metadata") or {}
    value = meta.get("deletionGracePeriodSeconds")
    if not isinstance(value, int):
        value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE)
    return value if isinstance(value, int) and value >= 0 else DEFAULT_GRACE


# --- the workers ---------------------------------------------------------------------------------


@dataclass
class _Worker:
    uid: str
    pod: dict[str, Any] | None
    wake: asyncio.Event
    kill: bool = False
    grace: int | None = None
    gone_from_api: bool = False
    task: asyncio.Task[None] | None = None
    current: asyncio.Task[Any] | None = None
    current_is_kill: bool = False
    timer: asyncio.TimerHandle | None = None
    failures: int = 0


class PodWorkers:
    """One asyncio task per pod uid; see the module docstring.

    Guarantees: a worker runs one operation at a time; an update arriving meanwhile replaces any
    older pending one (only the newest pod is synced); a kill is sticky — once asked for, the pod is
    terminated even if later updates say otherwise, and a kill arriving during a sync cancels that
    sync. After ``terminate_pod`` succeeds the worker ends and later non-kill updates for the uid are
    ignored (its API object may linger for a moment).
    """

    def __init__(self, syncer: PodSyncer, *, error_backoff_base: float = 1.0, error_backoff_max: float = 60.0,
                 metrics: Metrics | None = None) -> None:
        self.syncer = syncer
        self.error_backoff_base = error_backoff_base
        self.error_backoff_max = error_backoff_max
        self.metrics = metrics or syncer.metrics
        self._workers: dict[str, _Worker] = {}
        self._terminated: dict[str, float] = {}  # uid → when; pruned after an hour

    def __contains__(self, uid: object) -> bool:
        return uid in self._workers

    def uids(self) -> list[str]:
        return list(self._workers)

    def is_terminated(self, uid: str) -> bool:
        return uid in self._terminated

    def terminated_at(self, uid: str) -> float:
        """``time.monotonic()`` when the pod's termination finished (0.0: not terminated)."""
        return self._terminated.get(uid, 0.0)

    def update(self, uid: str, pod: dict[str, Any] | None, *, kill: bool = False, grace: int | None = None) -> None:
        """Give the worker of ``uid`` its newest desired state (starting the worker if needed)."""
        meta = (pod or {}).get("metadata") or {}
        kill = kill or pod is None or bool(meta.get("deletionTimestamp"))
        if uid in self._terminated and not kill:
            return
        w = self._workers.get(uid)
        if w is None:
            w = _Worker(uid=uid, pod=pod, wake=asyncio.Event())
            self._workers[uid] = w
            self._terminated.pop(uid, None)
            w.task = asyncio.get_running_loop().create_task(self._run(w), name=f"pod-worker-{uid}")
            self.metrics.workers.set(len(self._workers))
        if pod is not None:
            w.pod = pod
        else:
            w.gone_from_api = True
        if kill:
            w.kill = True
            g = grace if grace is not None else termination_grace(pod)
            w.grace = g if w.grace is None else min(w.grace, g)  # a shorter grace period wins
            if w.current is not None and not w.current_is_kill and not w.current.done():
                w.current.cancel()  # a sync in progress must not delay (or undo) the kill
        w.wake.set()

    def _wake_later(self, w: _Worker, delay: float) -> None:
        if w.timer is not None:
            w.timer.cancel()
        w.timer = asyncio.get_running_loop().call_later(max(0.0, delay), w.wake.set)

    async def _run(self, w: _Worker) -> None:
        try:
            while True:
                await w.wake.wait()
                w.wake.clear()
                if w.timer is not None:
                    w.timer.cancel()
                    w.timer = None
                kill = w.kill
                pod = w.pod
                op = "terminate" if kill else "sync"
                if kill:
                    grace = w.grace if w.grace is not None else termination_grace(pod)
                    coro: Any = self.syncer.terminate_pod(w.uid, pod, grace, in_api=not w.gone_from_api)
                else:
                    assert pod is not None
                    coro = self.syncer.sync_pod(pod)
                started = time.monotonic()
                w.current, w.current_is_kill = asyncio.ensure_future(coro), kill
                await asyncio.wait([w.current])
                task, w.current = w.current, None
                self.metrics.sync_duration.labels(op).observe(time.monotonic() - started)
                if task.cancelled():
                    self.metrics.syncs.labels(op, "cancelled").inc()
                    continue  # a kill arrived: the loop takes it next (wake is set)
                exc = task.exception()
                if exc is not None:
                    w.failures += 1
                    delay = min(self.error_backoff_max, self.error_backoff_base * 2 ** min(w.failures - 1, 20))
                    self.metrics.syncs.labels(op, "error").inc()
                    log.warning("pod %s: %s failed (retry in %.1fs): %s", w.uid, op, delay, exc,
                                exc_info=not isinstance(exc, rt.RuntimeFailure | VolumeError))
                    self._wake_later(w, delay)
                    continue
                w.failures = 0
                self.metrics.syncs.labels(op, "ok").inc()
                if kill:
                    self._terminated[w.uid] = time.monotonic()
                    return
                requeue = task.result()
                if requeue:
                    self._wake_later(w, requeue)
        finally:
            if w.timer is not None:
                w.timer.cancel()
            if w.current is not None:
                w.current.cancel()
            if self._workers.get(w.uid) is w:
                del self._workers[w.uid]
            self.metrics.workers.set(len(self._workers))
            self._prune()

    def _prune(self) -> None:
        cutoff = time.monotonic() - 3600
        for uid in [u for u, t in self._terminated.items() if t < cutoff]:
            del self._terminated[uid]

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no worker runs an operation or has one pending (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [w for w in self._workers.values() if w.current is not None or w.wake.is_set()]
            if not busy:
                return
            await asyncio.sleep(0.005)
        raise TimeoutError("pod workers still busy")

    async def stop(self) -> None:
        """End every worker task (the kubelet is exiting). Pods keep running; nothing is torn down."""
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
