"""The scheduler against a real apiserver and etcd: bindings, Unschedulable conditions and Events, retries.

The cluster is this module's own (fresh etcd + apiserver): the scheduler binds every pending pod it sees to
any Ready node, so sharing the session apiserver would let it touch other tests' pods and nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from minik8s.api import registry
from minik8s.client.rest import AsyncApiClient
from minik8s.testing import ApiserverProcess
from scheduler.binder import scheduled_condition
from scheduler.scheduler import Scheduler, SchedulerConfig
from scheduler.testing import make_node, make_pod

pytestmark = pytest.mark.timeout(120)
PODS, NODES, EVENTS = registry.lookup("pods"), registry.lookup("nodes"), registry.lookup("events")
REPO = Path(__file__).resolve().parents[2]


def _fresh(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k not in ("uid", "resourceVersion")}
    if obj["kind"] == "Pod":
        obj.pop("status", None)
    return obj


@pytest.fixture()
async def api(cluster: ApiserverProcess) -> AsyncIterator[AsyncApiClient]:
    """A client; every node and every pod in ``default`` is removed afterwards, so each test starts empty."""
    async with AsyncApiClient(cluster.url) as client:
        yield client
        for pod in (await client.list(PODS, "default"))[0]:
            with contextlib.suppress(Exception):
                await client.delete(PODS, pod["metadata"]["name"], "default", grace_period_seconds=0)
        for node in (await client.list(NODES))[0]:
            await client.delete(NODES, node["metadata"]["name"])


@pytest.fixture()
async def running(api: AsyncApiClient) -> AsyncIterator[Scheduler]:
    sched = Scheduler(api, SchedulerConfig(retry_period=60.0))
    task = asyncio.create_task(sched.run())
    try:
        yield sched
    finally:
        sched.stop()
        await asyncio.wait_for(task, 10)


async def eventually(fn: Any, *, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll the coroutine function ``fn`` until it returns something truthy (deadline: ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def node_of(api: AsyncApiClient, name: str) -> str:
    return str((await api.get(PODS, name, "default"))["spec"].get("nodeName") or "")


async def unschedulable_message(api: AsyncApiClient, name: str) -> str:
    cond = scheduled_condition(await api.get(PODS, name, "default")) or {}
    return str(cond.get("message") or "") if cond.get("reason") == "Unschedulable" else ""


async def events_for(api: AsyncApiClient, name: str, reason: str) -> list[dict[str, Any]]:
    items, _ = await api.list(EVENTS, "default", field_selector=f"involvedObject.name={name},reason={reason}")
    return items


async def test_pending_pods_get_bound_and_spread(api: AsyncApiClient, running: Scheduler) -> None:
    for i in range(3):
        await api.create(_fresh(make_node(f"n{i}", cpu="2", memory="4Gi")))
    for i in range(6):
        await api.create(_fresh(make_pod(f"web-{i}", cpu="500m", memory="128Mi", owner_uid="rs-web")))

    async def placed() -> dict[str, str] | None:
        nodes = {f"web-{i}": await node_of(api, f"web-{i}") for i in range(6)}
        return nodes if all(nodes.values()) else None

    nodes = await eventually(placed, what="all pods bound")
    assert sorted(nodes.values()) == ["n0", "n0", "n1", "n1", "n2", "n2"]  # two per node: spread by owner
    events = await eventually(lambda: events_for(api, "web-0", "Scheduled"), what="the Scheduled event")
    assert events[0]["message"] == f"Successfully assigned default/web-0 to {nodes['web-0']}"
    assert events[0]["source"]["component"] == "default-scheduler"


async def test_too_big_pod_waits_unschedulable_until_capacity_frees(api: AsyncApiClient,
                                                                     running: Scheduler) -> None:
    await api.create(_fresh(make_node("small", cpu="1", memory="4Gi")))
    await api.create(_fresh(make_pod("hog", cpu="600m")))
    await eventually(lambda: node_of(api, "hog"), what="hog bound")
    await api.create(_fresh(make_pod("big", cpu="800m")))
    message = await eventually(lambda: unschedulable_message(api, "big"), what="the Unschedulable condition")
    assert message == "0/1 nodes are available: 1 Insufficient cpu."
    pod = await api.get(PODS, "big", "default")
    assert pod["status"].get("phase", "Pending") == "Pending" and not pod["spec"].get("nodeName")
    events = await eventually(lambda: events_for(api, "big", "FailedScheduling"), what="FailedScheduling")
    assert events[0]["type"] == "Warning" and events[0]["message"] == message

    await api.delete(PODS, "hog", "default", grace_period_seconds=0)
    assert await eventually(lambda: node_of(api, "big"), what="big bound once hog is gone") == "small"
    cond = await eventually(lambda: _scheduled_true(api, "big"), what="PodScheduled=True")
    assert cond["status"] == "True"


async def _scheduled_true(api: AsyncApiClient, name: str) -> dict[str, Any] | None:
    cond = scheduled_condition(await api.get(PODS, name, "default"))
    return dict(cond) if cond and cond.get("status") == "True" else None


async def test_node_selector_matching_no_node_stays_pending(api: AsyncApiClient, running: Scheduler) -> None:
    await api.create(_fresh(make_node("plain")))
    await api.create(_fresh(make_pod("picky", node_selector={"disktype": "ssd"})))
    message = await eventually(lambda: unschedulable_message(api, "picky"), what="the Unschedulable condition")
    assert message == "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    await asyncio.sleep(0.5)  # a settled state: nothing binds it meanwhile
    assert await node_of(api, "picky") == ""


async def test_the_daemon_binds_a_pending_pod_to_a_node_added_later(api: AsyncApiClient,
                                                                   cluster: ApiserverProcess,
                                                                   tmp_path: Path) -> None:
    """The console script end to end: a pod with no node waits; a new node gets it."""
    await api.create(_fresh(make_node("busy", ready=False)))
    await api.create(_fresh(make_pod("waiting", cpu="100m")))
    log = open(tmp_path / "scheduler.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "scheduler.main", "--apiserver", cluster.url,
                             "--retry-period", "60"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "MINIK8S_HOME": str(tmp_path)})
    try:
        message = await eventually(lambda: unschedulable_message(api, "waiting"), timeout=30,
                                   what="the Unschedulable condition")
        assert message == "0/1 nodes are available: 1 node(s) were not ready."
        await api.create(_fresh(make_node("fresh")))
        assert await eventually(lambda: node_of(api, "waiting"), what="bound to the new node") == "fresh"
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=10)
        finally:
            log.close()
        if proc.poll() is None:
            proc.kill()
    assert code == 0, (tmp_path / "scheduler.log").read_text()[-2000:]
