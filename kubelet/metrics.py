"""Resource metrics: what the pods (and the node) use now, served as ``GET /stats/summary``.

::

    every --metrics-resolution (15 s):
      runtime.list_containers() ─ RUNNING ones ─▶ runtime.container_stats(id)   (CRI ContainerStats)
          cpu.usage_core_nano_seconds, twice ─▶ nanocores = Δusage / Δt      memory.working_set_bytes as is
      /proc/stat, /proc/meminfo ─▶ the node's cpu (nanocores) and memory working set (MemTotal - MemAvailable)
    GET /stats/summary ─▶ {"node": {...}, "pods": [...]}          read by the apiserver's metrics.k8s.io API

A pod is in the summary once every running container of it has two cpu samples (a rate); until then
it is left out, as metrics-server leaves it out. A container that stopped drops out at the next sample.
The node's numbers come from ``/proc``: on a machine that runs other things (or inside a container
that shows the host's ``/proc``) that is the whole machine, never less than the sum of the pods.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from kubelet import runtime as rt

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION = 15.0  # seconds; metrics-server's --metric-resolution
MIN_RESOLUTION = 0.1


class StatsSource(Protocol):
    """The two runtime calls the sampler makes (``kubelet.runtime.Runtime`` has them)."""

    async def list_containers(self, sandbox_id: str | None = None) -> list[rt.ContainerStatus]: ...

    async def container_stats(self, container_id: str) -> rt.ContainerStats: ...


@dataclass(frozen=True)
class CpuSample:
    """A cumulative cpu counter (core-nanoseconds) read at ``at`` (unix nanoseconds)."""

    usage_ns: int
    at: int


def nanocores(previous: CpuSample, current: CpuSample) -> int | None:
    """The cpu rate between two samples in nanocores (1e9 = one core busy), or None when the two
    cannot give one (no time passed, or the counter went back: a different process)."""
    elapsed = current.at - previous.at
    used = current.usage_ns - previous.usage_ns
    if elapsed <= 0 or used < 0:
        return None
    return used * 1_000_000_000 // elapsed


@dataclass(frozen=True)
class NodeReading:
    """One read of ``/proc``: busy cpu time (core-nanoseconds, since boot) and memory in use (bytes)."""

    cpu_busy_ns: int
    memory_working_set: int


def read_proc(proc: str = "/proc") -> NodeReading:
    """Busy cpu from ``/proc/stat`` (all but idle and iowait), memory as MemTotal - MemAvailable.
    Raises ``OSError``/``ValueError`` when ``/proc`` cannot be read."""
    with open(os.path.join(proc, "stat")) as f:
        first = f.readline().split()
    if not first or first[0] != "cpu":
        raise ValueError("/proc/stat does not start with the cpu line")
    ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal (guest is in user)
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    hz = os.sysconf("SC_CLK_TCK") or 100
    info: dict[str, int] = {}
    with open(os.path.join(proc, "meminfo")) as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                info[key] = int(parts[0]) * 1024
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    return NodeReading(cpu_busy_ns=busy * 1_000_000_000 // hz, memory_working_set=max(0, total - available))


@dataclass
class _Container:
    pod_uid: str
    pod_name: str
    namespace: str
    name: str
    last: rt.ContainerStats
    previous: rt.ContainerStats | None = None

    def rate(self) -> int | None:
        if self.previous is None:
            return None
        return nanocores(CpuSample(self.previous.cpu_usage_core_nanoseconds, self.previous.timestamp),
                         CpuSample(self.last.cpu_usage_core_nanoseconds, self.last.timestamp))

    def window(self) -> float:
        return (self.last.timestamp - self.previous.timestamp) / 1e9 if self.previous is not None else 0.0


def rfc3339_ns(unix_ns: int) -> str:
    return datetime.fromtimestamp(unix_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MetricsSampler:
    """Samples every running container's CRI stats (and ``/proc``) each ``resolution`` seconds.

    ``sample()`` takes one sample now; ``run()`` samples until cancelled; ``summary()`` is the
    kubelet's ``/stats/summary`` document from the last two samples. A runtime error on one
    container skips that container this time; a runtime that does not answer skips the sample.
    """

    def __init__(self, runtime: StatsSource, *, node_name: str, resolution: float = DEFAULT_RESOLUTION,
                 clock: Callable[[], int] = time.time_ns,
                 read_node: Callable[[], NodeReading] | None = read_proc) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self.resolution = max(MIN_RESOLUTION, resolution)
        self.clock = clock
        self.read_node = read_node
        self.containers: dict[str, _Container] = {}  # container id → its last two samples
        self._node: tuple[NodeReading, int] | None = None
        self._node_previous: tuple[NodeReading, int] | None = None

    async def _stats(self, container_id: str) -> rt.ContainerStats | None:
        try:
            return await self.runtime.container_stats(container_id)
        except rt.RuntimeFailure as exc:
            log.debug("no stats for container %s: %s", container_id, exc)
            return None

    async def sample(self) -> None:
        """One sample of every running container and of the node. Raises ``RuntimeFailure`` when the
        runtime cannot list its containers."""
        running = [c for c in await self.runtime.list_containers()
                   if c.state == "RUNNING" and c.labels.get(rt.LABEL_POD_UID)]
        found = await asyncio.gather(*(self._stats(c.id) for c in running))
        fresh: dict[str, _Container] = {}
        for c, stats in zip(running, found, strict=True):
            if stats is None:
                continue
            if not stats.timestamp:
                stats = rt.ContainerStats(stats.container_id, stats.cpu_usage_core_nanoseconds,
                                          stats.memory_working_set_bytes, self.clock())
            known = self.containers.get(c.id)
            if known is None:
                fresh[c.id] = _Container(pod_uid=c.labels[rt.LABEL_POD_UID],
                                         pod_name=c.labels.get(rt.LABEL_POD_NAME, ""),
                                         namespace=c.labels.get(rt.LABEL_POD_NAMESPACE, ""),
                                         name=c.labels.get(rt.LABEL_CONTAINER_NAME, c.name), last=stats)
                continue
            if stats.timestamp > known.last.timestamp:  # else the runtime gave its cached sample again
                known.previous, known.last = known.last, stats
            fresh[c.id] = known
        self.containers = fresh
        if self.read_node is not None:
            try:
                reading = await asyncio.to_thread(self.read_node)
            except (OSError, ValueError) as exc:
                log.debug("cannot read the node's usage: %s", exc)
            else:
                self._node_previous, self._node = self._node, (reading, self.clock())

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except rt.RuntimeFailure as exc:
                log.warning("metrics sample failed: %s", exc)
            await asyncio.sleep(self.resolution)

    def pods(self) -> list[dict[str, Any]]:
        """The summary's ``pods``: only pods whose every running container has a cpu rate."""
        by_pod: dict[str, list[_Container]] = {}
        for c in self.containers.values():
            by_pod.setdefault(c.pod_uid, []).append(c)
        out = []
        for uid, containers in sorted(by_pod.items()):
            rates = [c.rate() for c in containers]
            if any(r is None for r in rates):
                continue
            containers_doc = []
            for c, rate in sorted(zip(containers, rates, strict=True), key=lambda cr: cr[0].name):
                at = rfc3339_ns(c.last.timestamp)
                containers_doc.append({"name": c.name, "cpu": {"time": at, "usageNanoCores": rate},
                                       "memory": {"time": at, "workingSetBytes": c.last.memory_working_set_bytes}})
            first = containers[0]
            out.append({"podRef": {"name": first.pod_name, "namespace": first.namespace, "uid": uid},
                        "containers": containers_doc,
                        "cpu": {"usageNanoCores": sum(r or 0 for r in rates)},
                        "memory": {"workingSetBytes": sum(c.last.memory_working_set_bytes for c in containers)},
                        "window": round(max(c.window() for c in containers), 3),
                        "time": rfc3339_ns(max(c.last.timestamp for c in containers))})
        return out

    def node(self, pods: list[dict[str, Any]]) -> dict[str, Any]:
        """The summary's ``node``: ``/proc``'s view, never below the pods' sum; cpu once there are two reads."""
        doc: dict[str, Any] = {"nodeName": self.node_name}
        if self._node is None:
            return doc
        reading, at = self._node
        stamp = rfc3339_ns(at)
        pods_cpu = sum(int(p["cpu"]["usageNanoCores"]) for p in pods)
        pods_memory = sum(int(p["memory"]["workingSetBytes"]) for p in pods)
        doc["memory"] = {"time": stamp, "workingSetBytes": max(reading.memory_working_set, pods_memory)}
        if self._node_previous is not None:
            before, then = self._node_previous
            rate = nanocores(CpuSample(before.cpu_busy_ns, then), CpuSample(reading.cpu_busy_ns, at))
            if rate is not None:
                doc["cpu"] = {"time": stamp, "usageNanoCores": max(rate, pods_cpu)}
                doc["window"] = round((at - then) / 1e9, 3)
        return doc

    def summary(self) -> dict[str, Any]:
        pods = self.pods()
        return {"node": self.node(pods), "pods": pods}


def stats_routes(kubelet: Any) -> list[Any]:
    """``GET /stats/summary`` (mounted by ``kubelet/server.py``): the kubelet's ``sampler``'s summary."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def summary(request: Request) -> Response:
        sampler: MetricsSampler | None = getattr(kubelet, "sampler", None)
        if sampler is None:
            return PlainTextResponse("this kubelet does not sample metrics", status_code=404)
        return JSONResponse(sampler.summary())

    return [Route("/stats/summary", summary)]
