"""The kubelet's metrics sampler (kubelet/metrics.py): cpu rates from two CRI samples, the summary's
shape, the node's ``/proc`` reading, and ``GET /stats/summary`` on the kubelet's server."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from kubelet import runtime as rt
from kubelet.metrics import CpuSample, MetricsSampler, NodeReading, nanocores, read_proc
from kubelet.server import create_app

pytestmark = pytest.mark.timeout(30)
S = 1_000_000_000  # one second in nanoseconds


def test_nanocores_is_cpu_time_over_wall_time() -> None:
    assert nanocores(CpuSample(0, 0), CpuSample(S // 2, S)) == 500_000_000  # half a core
    assert nanocores(CpuSample(10 * S, 5 * S), CpuSample(14 * S, 7 * S)) == 2 * S  # two cores busy
    assert nanocores(CpuSample(0, 0), CpuSample(1_234_567, S)) == 1_234_567
    assert nanocores(CpuSample(5, S), CpuSample(9, S)) is None  # no time passed
    assert nanocores(CpuSample(9, S), CpuSample(5, 2 * S)) is None  # the counter went back


class StubRuntime:
    """Scripted containers and stats; ``usage[id]`` is the next cumulative cpu counter."""

    def __init__(self) -> None:
        self.containers: list[rt.ContainerStatus] = []
        self.usage: dict[str, tuple[int, int, int]] = {}  # id → (cpu core-ns, working set, timestamp)
        self.broken: set[str] = set()

    def add(self, cid: str, pod: str, container: str, uid: str, state: str = "RUNNING") -> None:
        self.containers.append(rt.ContainerStatus(
            id=cid, sandbox_id="sb-" + uid, name=container, attempt=0, state=state,
            labels={rt.LABEL_POD_UID: uid, rt.LABEL_POD_NAME: pod, rt.LABEL_POD_NAMESPACE: "ns",
                    rt.LABEL_CONTAINER_NAME: container}))

    async def list_containers(self, sandbox_id: str | None = None) -> list[rt.ContainerStatus]:
        return list(self.containers)

    async def container_stats(self, container_id: str) -> rt.ContainerStats:
        if container_id in self.broken:
            raise rt.NotFoundInRuntime(f"container {container_id} is gone")
        cpu, mem, at = self.usage[container_id]
        return rt.ContainerStats(container_id, cpu, mem, at)


class Clock:
    def __init__(self) -> None:
        self.now = 100 * S

    def __call__(self) -> int:
        return self.now


async def test_a_pod_appears_once_every_container_has_two_samples() -> None:
    runtime = StubRuntime()
    runtime.add("c1", "web", "app", "uid-1")
    runtime.add("c2", "web", "side", "uid-1")
    runtime.add("c3", "db", "main", "uid-2", state="EXITED")  # not running: never sampled
    readings = iter([NodeReading(0, 1 << 30), NodeReading(3 * S, 2 << 30)])
    clock = Clock()
    sampler = MetricsSampler(runtime, node_name="n1", resolution=15, clock=clock, read_node=lambda: next(readings))

    runtime.usage = {"c1": (0, 4096, 10 * S), "c2": (0, 8192, 10 * S)}
    await sampler.sample()
    assert sampler.summary()["pods"] == []  # one sample: no rate yet
    assert sampler.summary()["node"] == {"nodeName": "n1", "memory": {"time": "1970-01-01T00:01:40Z",
                                                                        "workingSetBytes": 1 << 30}}

    runtime.usage = {"c1": (S, 5 * 4096, 12 * S), "c2": (S // 10, 8192, 12 * S)}
    clock.now += 2 * S
    await sampler.sample()
    summary = sampler.summary()
    (pod,) = summary["pods"]
    assert pod["podRef"] == {"name": "web", "namespace": "ns", "uid": "uid-1"}
    assert pod["window"] == 2.0 and pod["time"] == "1970-01-01T00:00:12Z"
    assert pod["containers"] == [
        {"name": "app", "cpu": {"time": "1970-01-01T00:00:12Z", "usageNanoCores": S // 2},
         "memory": {"time": "1970-01-01T00:00:12Z", "workingSetBytes": 5 * 4096}},
        {"name": "side", "cpu": {"time": "1970-01-01T00:00:12Z", "usageNanoCores": S // 20},
         "memory": {"time": "1970-01-01T00:00:12Z", "workingSetBytes": 8192}}]
    assert pod["cpu"] == {"usageNanoCores": S // 2 + S // 20}
    # The node: /proc's 3 busy core-seconds over 2 s, at least the pods' sum.
    node = summary["node"]
    assert node["cpu"]["usageNanoCores"] == 3 * S // 2 and node["memory"]["workingSetBytes"] == 2 << 30
    assert node["window"] == 2.0


async def test_a_restarted_container_hides_its_pod_until_it_has_a_rate_and_a_gone_one_drops_out() -> None:
    runtime = StubRuntime()
    runtime.add("c1", "web", "app", "uid-1")
    sampler = MetricsSampler(runtime, node_name="n1", read_node=None)
    runtime.usage = {"c1": (0, 4096, 1 * S)}
    await sampler.sample()
    runtime.usage = {"c1": (S, 4096, 2 * S)}
    await sampler.sample()
    assert [p["podRef"]["name"] for p in sampler.pods()] == ["web"]

    # The same stats again (a runtime's cached sample): the rate stays the one it was.
    await sampler.sample()
    assert sampler.pods()[0]["containers"][0]["cpu"]["usageNanoCores"] == S

    # The container is replaced (a restart: a new id): no rate for the pod until the new one has two samples.
    runtime.containers.clear()
    runtime.add("c1b", "web", "app", "uid-1")
    runtime.usage = {"c1b": (0, 4096, 3 * S)}
    await sampler.sample()
    assert sampler.pods() == [] and set(sampler.containers) == {"c1b"}
    runtime.usage = {"c1b": (S // 4, 4096, 4 * S)}
    await sampler.sample()
    assert sampler.pods()[0]["containers"][0]["cpu"]["usageNanoCores"] == S // 4

    # A container the runtime cannot give stats for is skipped, not fatal.
    runtime.broken.add("c1b")
    await sampler.sample()
    assert sampler.pods() == [] and sampler.summary()["node"] == {"nodeName": "n1"}


def test_read_proc_counts_busy_cpu_and_memory_in_use(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 20 30 1000 50 5 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    (tmp_path / "meminfo").write_text("MemTotal:       2048 kB\nMemFree:         100 kB\nMemAvailable:    1024 kB\n")
    reading = read_proc(str(tmp_path))
    hz = os.sysconf("SC_CLK_TCK")
    assert reading.cpu_busy_ns == 160 * S // hz  # user+nice+system+irq+softirq+steal, not idle or iowait
    assert reading.memory_working_set == 1024 * 1024
    (tmp_path / "stat").write_text("intr 1 2 3\n")
    with pytest.raises(ValueError):
        read_proc(str(tmp_path))


async def test_stats_summary_is_served_by_the_kubelet_api() -> None:
    runtime = StubRuntime()
    runtime.add("c1", "web", "app", "uid-1")
    sampler = MetricsSampler(runtime, node_name="n1", read_node=None)
    runtime.usage = {"c1": (0, 4096, S)}
    await sampler.sample()
    runtime.usage = {"c1": (S, 4096, 2 * S)}
    await sampler.sample()
    view = SimpleNamespace(runtime=runtime, metrics=None, sampler=sampler, pods=list)
    transport = httpx.ASGITransport(app=create_app(view))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://kubelet") as client:
        r = await client.get("/stats/summary")
        assert r.status_code == 200
        body = r.json()
        assert body["node"] == {"nodeName": "n1"}
        assert body["pods"][0]["containers"][0]["cpu"]["usageNanoCores"] == S
    bare = httpx.ASGITransport(app=create_app(SimpleNamespace(runtime=runtime, metrics=None)))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=bare, base_url="http://kubelet") as client:
        assert (await client.get("/stats/summary")).status_code == 404
