"""The controller-manager (in process) against a real apiserver and etcd, with no kubelet: pod status is
set through /status by the test. Each test works in its own namespace of this module's own cluster."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controllers.manager import ControllerManager, ManagerConfig
from minik8s.api import registry
from minik8s.client.rest import AsyncApiClient
from minik8s.errors import NotFound
from minik8s.testing import ApiserverProcess

pytestmark = pytest.mark.timeout(120)
PODS, RS, SVC, EP, NS = (registry.lookup(x) for x in ("pods", "replicasets", "services", "endpoints", "namespaces"))


@pytest.fixture()
async def api(cluster: ApiserverProcess) -> AsyncIterator[AsyncApiClient]:
    async with AsyncApiClient(cluster.url) as client:
        yield client


@pytest.fixture()
async def ns(api: AsyncApiClient) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture()
async def manager(api: AsyncApiClient) -> AsyncIterator[ControllerManager]:
    m = ControllerManager(api, ManagerConfig(port=0))
    task = asyncio.create_task(m.run())
    try:
        yield m
    finally:
        m.stop()
        await asyncio.wait_for(task, 10)


async def eventually(fn: Any, *, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class CreationCounter:
    """Counts pod creations (ADDED events) in a namespace, and the most pods alive at once."""

    def __init__(self, api: AsyncApiClient, ns: str) -> None:
        self.api, self.ns = api, ns
        self.added, self.alive, self.peak = 0, set[str](), 0
        self.task: asyncio.Task[None] | None = None

    async def _run(self, rv: str) -> None:
        async for etype, obj in self.api.watch(PODS, self.ns, resource_version=rv, timeout_seconds=300):
            name = obj["metadata"]["name"]
            if etype == "ADDED":
                self.added += 1
                self.alive.add(name)
            elif etype == "DELETED" or (etype == "MODIFIED" and obj["metadata"].get("deletionTimestamp")):
                self.alive.discard(name)
            self.peak = max(self.peak, len(self.alive))

    async def __aenter__(self) -> CreationCounter:
        _, rv = await self.api.list(PODS, self.ns)
        self.task = asyncio.create_task(self._run(rv))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def rs_body(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox",
                                                           "ports": [{"name": "http", "containerPort": 8080}]}]}}}}


async def live_pods(api: AsyncApiClient, ns: str, app: str) -> list[dict[str, Any]]:
    items, _ = await api.list(PODS, ns, label_selector=f"app={app}")
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


async def count_is(api: AsyncApiClient, ns: str, app: str, n: int) -> bool:
    return len(await live_pods(api, ns, app)) == n


async def settle(counter: CreationCounter, api: AsyncApiClient, ns: str, app: str, n: int,
                 manager: ControllerManager | None = None) -> None:
    await eventually(lambda: count_is(api, ns, app, n), what=f"{n} pods")
    try:
        await eventually(lambda: _rs_status_is(api, ns, app, n), what=f"status.replicas={n}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; {await _views(api, ns, app, manager)}") from None


async def _views(api: AsyncApiClient, ns: str, app: str, manager: ControllerManager | None) -> str:
    """The API's view and the ReplicaSet controller's (its informer caches, expectations, queue) when a
    status does not converge: a missed watch event shows as a cache that differs from the API."""
    rs = await api.get(RS, app, ns)
    pods = sorted(p["metadata"]["name"] for p in await live_pods(api, ns, app))
    text = f"API: rs rv {rs['metadata']['resourceVersion']} status {rs.get('status')}, live pods {pods}"
    ctl: Any = manager.controllers.get("replicaset") if manager is not None else None
    if ctl is not None:
        key = f"{ns}/{app}"
        cached = ctl.replicasets.indexer.get(key) or {}
        cached_pods = sorted((p["metadata"]["name"], bool(p["metadata"].get("deletionTimestamp")))
                             for p in ctl.pods.indexer.list() if p["metadata"].get("namespace") == ns)
        text += (f"; controller: rs rv {cached.get('metadata', {}).get('resourceVersion')} status "
                 f"{cached.get('status')}, pods {cached_pods}, expectations satisfied "
                 f"{ctl.expectations.satisfied(key)}, queue {len(ctl.queue)}, syncs {ctl.syncs}, "
                 f"pod informer rv {ctl.pods.resource_version}")
    return text


async def _rs_status_is(api: AsyncApiClient, ns: str, name: str, n: int) -> bool:
    rs = await api.get(RS, name, ns)
    return (rs.get("status") or {}).get("replicas") == n and rs["status"].get("observedGeneration") == \
        rs["metadata"]["generation"]


async def test_replicaset_exact_creations_scale_and_replacement(api: AsyncApiClient, ns: str,
                                                                manager: ControllerManager) -> None:
    async with CreationCounter(api, ns) as counter:
        await api.create(rs_body("web", 3), namespace=ns)
        await settle(counter, api, ns, "web", 3, manager)
        assert counter.added == 3
        # scale 3 → 5 → 1: never more than asked
        await api.patch(RS, "web", {"spec": {"replicas": 5}}, namespace=ns)
        await settle(counter, api, ns, "web", 5, manager)
        assert counter.added == 5 and counter.peak == 5
        await api.patch(RS, "web", {"spec": {"replicas": 1}}, namespace=ns)
        await settle(counter, api, ns, "web", 1, manager)
        assert counter.added == 5
        # delete a pod → exactly one replacement
        (victim,) = await live_pods(api, ns, "web")
        await api.delete(PODS, victim["metadata"]["name"], ns)
        await eventually(lambda: _has_other_pod(api, ns, victim["metadata"]["name"]), what="a replacement")
        await settle(counter, api, ns, "web", 1, manager)
        assert counter.added == 6
        # relabel → orphaned (ownerRef removed) and replaced
        (p,) = await live_pods(api, ns, "web")
        await api.patch(PODS, p["metadata"]["name"], {"metadata": {"labels": {"app": "debug"}}}, namespace=ns)

        async def released() -> bool:
            return not (await api.get(PODS, p["metadata"]["name"], ns))["metadata"].get("ownerReferences")
        await eventually(released, what="the relabeled pod released")
        await settle(counter, api, ns, "web", 1, manager)
        assert counter.added == 7
        owners = (await live_pods(api, ns, "web"))[0]["metadata"]["ownerReferences"]
        assert owners[0]["kind"] == "ReplicaSet" and owners[0]["controller"] is True


async def _has_other_pod(api: AsyncApiClient, ns: str, old: str) -> bool:
    return any(p["metadata"]["name"] != old for p in await live_pods(api, ns, "web"))


async def _set_ready(api: AsyncApiClient, ns: str, name: str, ip: str, ready: bool) -> None:
    pod = await api.get(PODS, name, ns)
    pod["status"] = {"phase": "Running", "podIP": ip,
                     "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    await api.replace_status(pod)


async def test_endpoints_follow_pod_readiness(api: AsyncApiClient, ns: str, manager: ControllerManager) -> None:
    await api.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
                      "spec": {"selector": {"app": "ep"}, "ports": [{"port": 80, "targetPort": "http"}]}},
                     namespace=ns)
    for i in range(2):
        await api.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "labels": {"app": "ep"}},
                          "spec": {"containers": [{"name": "c", "image": "busybox",
                                                   "ports": [{"name": "http", "containerPort": 8080}]}]}},
                         namespace=ns)
        await _set_ready(api, ns, f"p{i}", f"10.9.0.{i + 2}", True)

    async def ready_ips() -> tuple[list[str], list[str]] | None:
        try:
            ep = await api.get(EP, "svc", ns)
        except NotFound:
            return None
        subsets = ep.get("subsets") or []
        return (sorted(a["ip"] for s in subsets for a in s.get("addresses") or []),
                sorted(a["ip"] for s in subsets for a in s.get("notReadyAddresses") or []))

    async def ips_are(want: tuple[list[str], list[str]]) -> bool:
        return await ready_ips() == want
    await eventually(lambda: ips_are((["10.9.0.2", "10.9.0.3"], [])), what="both ready")
    ep = await api.get(EP, "svc", ns)
    assert ep["subsets"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    await _set_ready(api, ns, "p1", "10.9.0.3", False)
    await eventually(lambda: ips_are((["10.9.0.2"], ["10.9.0.3"])), what="p1 not ready")
    await _set_ready(api, ns, "p1", "10.9.0.3", True)
    await eventually(lambda: ips_are((["10.9.0.2", "10.9.0.3"], [])), what="p1 ready again")
    await api.delete(SVC, "svc", ns)

    async def ep_gone() -> bool:
        return await ready_ips() is None
    await eventually(ep_gone, what="Endpoints removed with the Service")


async def test_foreground_delete_removes_pods_then_rs(api: AsyncApiClient, ns: str,
                                                      manager: ControllerManager) -> None:
    await api.create(rs_body("fg", 2), namespace=ns)
    await eventually(lambda: count_is(api, ns, "fg", 2), what="2 pods")
    await api.delete(RS, "fg", ns, propagation_policy="Foreground")
    rs = await api.get(RS, "fg", ns)  # still there, waiting for its pods
    assert "foregroundDeletion" in rs["metadata"]["finalizers"]

    async def rs_gone() -> bool:
        try:
            await api.get(RS, "fg", ns)
        except NotFound:
            return True
        return False
    await eventually(rs_gone, what="the ReplicaSet gone")
    assert (await api.list(PODS, ns, label_selector="app=fg"))[0] == []


async def test_orphan_delete_keeps_pods_without_owner_refs(api: AsyncApiClient, ns: str,
                                                           manager: ControllerManager) -> None:
    await api.create(rs_body("or", 2), namespace=ns)
    await eventually(lambda: count_is(api, ns, "or", 2), what="2 pods")
    await api.delete(RS, "or", ns, propagation_policy="Orphan")

    async def rs_gone() -> bool:
        try:
            await api.get(RS, "or", ns)
        except NotFound:
            return True
        return False
    await eventually(rs_gone, what="the ReplicaSet gone")
    pods = await live_pods(api, ns, "or")
    assert len(pods) == 2 and all(not p["metadata"].get("ownerReferences") for p in pods)


async def test_background_delete_collects_pods(api: AsyncApiClient, ns: str, manager: ControllerManager) -> None:
    await api.create(rs_body("bg", 2), namespace=ns)
    await eventually(lambda: count_is(api, ns, "bg", 2), what="2 pods")
    await api.delete(RS, "bg", ns)
    await eventually(lambda: count_is(api, ns, "bg", 0), what="pods collected")
