"""Deployments against a real apiserver and etcd, with the ReplicaSet and Deployment controllers of the
controller-manager running in-process. No kubelet: a stand-in marks every pod Running and Ready
through ``/status``. A watch sampler checks every pod state the cluster passes through during the
rolling update: never more than replicas + maxSurge pods, never fewer than replicas − maxUnavailable
ready ones. ``minictl rollout undo|status|history`` and ``minictl scale`` run against the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner

from controllers.manager import ControllerManager, ManagerConfig
from minictl.main import Session, cli
from minik8s.api import registry
from minik8s.client.rest import AsyncApiClient
from minik8s.errors import ApiError
from minik8s.testing import ApiserverProcess

pytestmark = pytest.mark.timeout(120)
PODS, DEPLOYMENTS, REPLICASETS = (registry.lookup(r) for r in ("pods", "deployments", "replicasets"))
NS = "default"


async def _mark_ready(api: AsyncApiClient, pod: dict[str, Any], n: int) -> None:
    status = {"phase": "Running", "podIP": f"10.99.{n // 250}.{n % 250 + 1}",
              "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}
    mine = {**pod, "status": {**(pod.get("status") or {}), **status}}
    with contextlib.suppress(ApiError):
        await api.replace_status(mine)


async def fake_kubelet(api: AsyncApiClient) -> None:
    """Every pod that is not yet Ready becomes Running and Ready (as a kubelet with instant probes)."""
    n = 0
    while True:
        pods, _ = await api.list(PODS, NS)
        for pod in pods:
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])
            if not ready and not pod["metadata"].get("deletionTimestamp"):
                n += 1
                await _mark_ready(api, pod, n)
        await asyncio.sleep(0.05)


class Sampler:
    """Follows the pods of app=web on a watch and records (pods, ready pods) after every event."""

    def __init__(self) -> None:
        self.pods: dict[str, bool] = {}
        self.samples: list[tuple[int, int]] = []
        self.armed = False

    async def run(self, api: AsyncApiClient, rv: str) -> None:
        async for etype, pod in api.watch(PODS, NS, resource_version=rv, label_selector="app=web",
                                          timeout_seconds=110):
            if etype == "BOOKMARK":
                continue
            name = pod["metadata"]["name"]
            if etype == "DELETED" or pod["metadata"].get("deletionTimestamp"):
                self.pods.pop(name, None)
            else:
                self.pods[name] = any(c.get("type") == "Ready" and c.get("status") == "True"
                                      for c in (pod.get("status") or {}).get("conditions") or [])
            if self.armed:
                self.samples.append((len(self.pods), sum(self.pods.values())))


@pytest.fixture()
async def api(cluster: ApiserverProcess) -> AsyncIterator[AsyncApiClient]:
    async with AsyncApiClient(cluster.url) as client:
        manager = ControllerManager(client, ManagerConfig(controllers=("replicaset", "deployment"), port=0))
        tasks = [asyncio.create_task(manager.run()), asyncio.create_task(fake_kubelet(client))]
        try:
            yield client
        finally:
            manager.stop()
            tasks[1].cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def deployment(name: str, image: str, replicas: int, surge: int, unavailable: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


async def eventually(fn: Any, *, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def rolled_out(api: AsyncApiClient, name: str) -> dict[str, Any] | None:
    d = await api.get(DEPLOYMENTS, name, NS)
    st, want = d.get("status") or {}, d["spec"]["replicas"]
    done = (st.get("observedGeneration", 0) >= d["metadata"]["generation"] and st.get("updatedReplicas") == want
            and st.get("replicas") == want and st.get("availableReplicas") == want)
    return d if done else None


def minictl(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["-s", url, *args], obj=Session())


async def test_rolling_update_holds_its_bounds_and_undo_restores_the_template(api: AsyncApiClient,
                                                                             cluster: ApiserverProcess) -> None:
    replicas, surge, unavailable = 4, 1, 1
    await api.create(deployment("web", "web:1", replicas, surge, unavailable))
    try:
        d1 = await eventually(lambda: rolled_out(api, "web"), what="first rollout")
    except TimeoutError as exc:
        # What each level believed when it stalled (a missed watch event would show as a stale status here).
        d = await api.get(DEPLOYMENTS, "web", NS)
        rss, _ = await api.list(REPLICASETS, NS)
        pods, _ = await api.list(PODS, NS)
        raise AssertionError(f"{exc}: deployment status {d.get('status')}; replicasets "
                             f"{[(r['metadata']['name'], r['spec'].get('replicas'), r.get('status')) for r in rss]}; "
                             f"pods {[(p['metadata']['name'], (p.get('status') or {}).get('phase')) for p in pods]}"
                             ) from None
    assert d1["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"

    pods, rv = await api.list(PODS, NS, label_selector="app=web")
    sampler = Sampler()
    sampler.pods = {p["metadata"]["name"]: True for p in pods}
    sampler_task = asyncio.create_task(sampler.run(api, rv))
    try:
        await eventually(lambda: asyncio.sleep(0, result=len(sampler.pods) == replicas), what="sampler caught up")
        sampler.armed = True
        await api.patch(DEPLOYMENTS, "web", {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "web:2"}]}}}}, namespace=NS, patch_type="strategic")
        d2 = await eventually(lambda: rolled_out(api, "web"), what="rolling update")
        await eventually(lambda: asyncio.sleep(0, result=len(sampler.pods) == replicas and
                                               all(sampler.pods.values())), what="sampler settled")
    finally:
        sampler_task.cancel()
        await asyncio.gather(sampler_task, return_exceptions=True)
    assert d2["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert sampler.samples, "the sampler saw no pod changes during the rollout"
    assert max(total for total, _ in sampler.samples) <= replicas + surge, sampler.samples
    assert min(ready for _, ready in sampler.samples) >= replicas - unavailable, sampler.samples
    assert max(total for total, _ in sampler.samples) > replicas  # it did surge

    rss, _ = await api.list(REPLICASETS, NS)
    assert len(rss) == 2
    by_image = {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs for rs in rss}
    assert by_image["web:1"]["spec"]["replicas"] == 0 and by_image["web:2"]["spec"]["replicas"] == replicas
    pods, _ = await api.list(PODS, NS, label_selector="app=web")
    hash2 = by_image["web:2"]["metadata"]["labels"]["pod-template-hash"]
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in pods} == {hash2}

    # minictl: status, history, undo back to revision 1's template (as revision 3), scale.
    out = await asyncio.to_thread(minictl, cluster.url, "rollout", "status", "deployment/web", "--timeout", "10")
    assert out.exit_code == 0 and 'deployment "web" successfully rolled out' in out.output
    out = await asyncio.to_thread(minictl, cluster.url, "rollout", "history", "deployment/web")
    assert out.exit_code == 0 and out.output.split("\n")[1].split() == ["REVISION", "CHANGE-CAUSE"]
    assert [line.split()[0] for line in out.output.strip().split("\n")[2:]] == ["1", "2"]
    out = await asyncio.to_thread(minictl, cluster.url, "rollout", "undo", "deployment/web")
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "deployment.apps/web rolled back"
    out = await asyncio.to_thread(minictl, cluster.url, "rollout", "status", "deployment/web", "--timeout", "60")
    assert out.exit_code == 0, out.output
    assert out.output.strip().endswith('deployment "web" successfully rolled out')
    d3 = await rolled_out(api, "web")
    assert d3 is not None
    assert d3["spec"]["template"]["spec"]["containers"][0]["image"] == "web:1"
    assert "pod-template-hash" not in d3["spec"]["template"]["metadata"]["labels"]
    assert d3["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    rs1 = await api.get(REPLICASETS, by_image["web:1"]["metadata"]["name"], NS)
    assert rs1["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert rs1["spec"]["replicas"] == replicas

    out = await asyncio.to_thread(minictl, cluster.url, "scale", "deployment/web", "--replicas=2")
    assert out.exit_code == 0 and out.output.strip() == "deployment.apps/web scaled"
    await eventually(lambda: rolled_out(api, "web"), what="scale to 2")
    pods = await eventually(lambda: _pods_if(api, 2), what="2 pods")
    assert len(pods) == 2

    await api.delete(DEPLOYMENTS, "web", NS)
    for rs in (await api.list(REPLICASETS, NS))[0]:
        await api.delete(REPLICASETS, rs["metadata"]["name"], NS)
    for pod in (await api.list(PODS, NS))[0]:
        await api.delete(PODS, pod["metadata"]["name"], NS, grace_period_seconds=0)


async def _pods_if(api: AsyncApiClient, n: int) -> list[dict[str, Any]] | None:
    pods, _ = await api.list(PODS, NS, label_selector="app=web")
    return pods if len(pods) == n else None
