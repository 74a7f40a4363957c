"""The HorizontalPodAutoscaler in the controller-manager (in process) against a real apiserver and etcd.

No kubelet: a small task plays the node (marks the Deployment's pods Running and Ready through /status),
and the metrics come from a fake source put in place of the controller's metrics.k8s.io reader (it
answers a fixed cpu usage for every pod of the selector, read from the API). Everything else is real:
the Deployment and ReplicaSet controllers make the pods, the HPA reads and patches ``/scale``, writes
its status and Events, and ``kubectl get hpa``'s table comes from the apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from controllers.hpa import HorizontalController, MetricsError, PodMetric
from controllers.manager import ControllerManager, ManagerConfig
from minik8s.api import registry
from minik8s.client.rest import AsyncApiClient
from minik8s.errors import Conflict, NotFound
from minik8s.testing import ApiserverProcess, EtcdProcess
from minik8s.timeutil import rfc3339

pytestmark = pytest.mark.timeout(120)
PODS, DEPLOY, HPA, EVENTS = (registry.lookup(x) for x in ("pods", "deployments", "hpa", "events"))
SCALE_UP_PERIOD = 2  # the HPA's scaleUp policy: one pod per 2 s


@pytest.fixture(scope="module")
def cluster() -> Iterator[ApiserverProcess]:
    with EtcdProcess() as etcd, ApiserverProcess(etcd.endpoint, extra_args=["--compaction-interval", "0"]) as api:
        yield api


@pytest.fixture()
async def api(cluster: ApiserverProcess) -> AsyncIterator[AsyncApiClient]:
    async with AsyncApiClient(cluster.url) as client:
        yield client


@pytest.fixture()
async def ns(api: AsyncApiClient) -> str:
    name = f"hpa-{uuid.uuid4().hex[:8]}"
    await api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


class FakeMetrics:
    """metrics.k8s.io stand-in: every live pod of the selector uses ``cpu_milli`` (None: no metrics at all)."""

    def __init__(self, api: AsyncApiClient) -> None:
        self.api = api
        self.cpu_milli: int | None = None

    async def pod_metrics(self, resource: str, namespace: str, selector: str) -> dict[str, PodMetric]:
        if self.cpu_milli is None:
            raise MetricsError("unable to get metrics for resource cpu: no metrics returned from resource "
                               "metrics API")
        items, _ = await self.api.list(PODS, namespace, label_selector=selector)
        return {p["metadata"]["name"]: PodMetric(self.cpu_milli, time.time(), 1.0) for p in items}


async def play_node(api: AsyncApiClient, ns: str) -> None:
    """Mark every pod of ``ns`` Running and Ready (started a minute ago), as a kubelet would."""
    started = rfc3339()
    while True:
        items, _ = await api.list(PODS, ns)
        for pod in items:
            if (pod.get("status") or {}).get("phase") == "Running" or pod["metadata"].get("deletionTimestamp"):
                continue
            pod["status"] = {"phase": "Running", "startTime": started, "podIP": "10.0.0.1",
                             "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}]}
            with contextlib.suppress(Conflict, NotFound):
                await api.replace_status(pod)
        await asyncio.sleep(0.1)


@pytest.fixture()
async def hpa_manager(api: AsyncApiClient, ns: str) -> AsyncIterator[tuple[ControllerManager, FakeMetrics]]:
    config = ManagerConfig(port=0, hpa_sync_period=0.5, hpa_downscale_stabilization=3.0,
                           hpa_cpu_initialization_period=0.0, hpa_initial_readiness_delay=0.0)
    m = ControllerManager(api, config)
    hpa = m.controllers["horizontalpodautoscaling"]
    assert isinstance(hpa, HorizontalController)
    metrics = FakeMetrics(api)
    hpa.metrics = metrics
    task = asyncio.create_task(m.run())
    node = asyncio.create_task(play_node(api, ns))
    try:
        yield m, metrics
    finally:
        node.cancel()
        m.stop()
        await asyncio.wait_for(task, 10)
        with contextlib.suppress(asyncio.CancelledError):
            await node


async def eventually(fn: Any, *, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "c", "image": "busybox",
                         "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}}]}}}}


def hpa(name: str) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": 1, "maxReplicas": 3,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": 50}}}],
                     "behavior": {"scaleUp": {"policies": [
                         {"type": "Pods", "value": 1, "periodSeconds": SCALE_UP_PERIOD}]}}}}


class ReplicaWatch:
    """Every change of the Deployment's ``spec.replicas``, with its monotonic time, from a watch."""

    def __init__(self, api: AsyncApiClient, ns: str, name: str) -> None:
        self.api, self.ns, self.name = api, ns, name
        self.steps: list[tuple[float, int]] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self, rv: str) -> None:
        async for _, obj in self.api.watch(DEPLOY, self.ns, resource_version=rv, timeout_seconds=300):
            if obj.get("metadata", {}).get("name") != self.name:
                continue
            n = int(obj["spec"]["replicas"])
            if not self.steps or self.steps[-1][1] != n:
                self.steps.append((time.monotonic(), n))

    async def __aenter__(self) -> ReplicaWatch:
        items, rv = await self.api.list(DEPLOY, self.ns)
        for d in items:
            if d["metadata"]["name"] == self.name:
                self.steps.append((time.monotonic(), int(d["spec"]["replicas"])))
        self.task = asyncio.create_task(self._run(rv))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def counts(self) -> list[int]:
        return [n for _, n in self.steps]


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions") or []}


async def test_hpa_scales_a_deployment_up_within_its_policy_and_back_down(
        api: AsyncApiClient, ns: str, hpa_manager: tuple[ControllerManager, FakeMetrics]) -> None:
    _, metrics = hpa_manager
    await api.create(deployment("web"), namespace=ns)
    async with ReplicaWatch(api, ns, "web") as watch:
        metrics.cpu_milli = 150  # 150 % of the 100m request against 50 %: wants 3x the pods
        await api.create(hpa("web"), namespace=ns)

        async def at_max() -> dict[str, Any] | None:
            h = await api.get(HPA, "web", ns)
            st = h.get("status") or {}
            return h if st.get("currentReplicas") == 3 and st.get("desiredReplicas") == 3 else None

        h = await eventually(at_max, what="the HPA to report 3 current and desired replicas")
        assert watch.counts()[:3] == [1, 2, 3], watch.steps
        # One pod per SCALE_UP_PERIOD: the second step waits for the first to leave the policy's period.
        gap = watch.steps[2][0] - watch.steps[1][0]
        assert gap >= SCALE_UP_PERIOD - 0.3, watch.steps
        assert h["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"] == 150
        assert h["status"]["lastScaleTime"]
        assert conditions(h)["ScalingActive"] == ("True", "ValidMetricFound")
        assert conditions(h)["ScalingLimited"] == ("True", "TooManyReplicas")
        assert conditions(h)["AbleToScale"][0] == "True"

        table = await api.get_table(HPA, ns, "web")
        row = table["rows"][0]["cells"]
        assert row[1:6] == ["Deployment/web", "cpu: 150%/50%", 1, 3, 3], row

        events, _ = await api.list(EVENTS, ns)
        rescales = [e["message"] for e in events if e["reason"] == "SuccessfulRescale"]
        assert "New size: 2; reason: cpu resource utilization (percentage of request) above target" in rescales
        assert "New size: 3; reason: cpu resource utilization (percentage of request) above target" in rescales

        # The load ends: after the 3 s downscale stabilization, straight to the minimum (100 % per 15 s).
        metrics.cpu_milli = 5
        low_since = time.monotonic()

        async def at_min() -> dict[str, Any] | None:
            h = await api.get(HPA, "web", ns)
            return h if (h.get("status") or {}).get("currentReplicas") == 1 else None

        h = await eventually(at_min, what="the HPA to scale back to 1")
        down = [(t, n) for t, n in watch.steps if t >= low_since]
        assert [n for _, n in down] == [1], watch.steps
        assert down[0][0] - low_since >= 3.0 - 0.6, (down, low_since)
        assert conditions(h)["ScalingLimited"] == ("False", "DesiredWithinRange")


async def test_hpa_without_metrics_reports_scaling_inactive_and_keeps_the_count(
        api: AsyncApiClient, ns: str, hpa_manager: tuple[ControllerManager, FakeMetrics]) -> None:
    _, metrics = hpa_manager
    metrics.cpu_milli = None
    await api.create(deployment("quiet"), namespace=ns)
    await api.create(hpa("quiet"), namespace=ns)

    async def inactive() -> dict[str, Any] | None:
        h = await api.get(HPA, "quiet", ns)
        return h if conditions(h).get("ScalingActive") == ("False", "FailedGetResourceMetric") else None

    h = await eventually(inactive, what="ScalingActive=False FailedGetResourceMetric")
    assert h["status"]["currentReplicas"] == 1
    assert conditions(h)["AbleToScale"] == ("True", "SucceededGetScale")
    events, _ = await api.list(EVENTS, ns)
    assert {"FailedGetResourceMetric", "FailedComputeMetricsReplicas"} <= {e["reason"] for e in events}
    d = await api.get(DEPLOY, "quiet", ns)
    assert d["spec"]["replicas"] == 1
    table = await api.get_table(HPA, ns, "quiet")
    assert table["rows"][0]["cells"][2] == "cpu: <unknown>/50%"


async def test_hpa_of_a_missing_target_reports_failed_get_scale(
        api: AsyncApiClient, ns: str, hpa_manager: tuple[ControllerManager, FakeMetrics]) -> None:
    await api.create(hpa("nothing"), namespace=ns)

    async def failed() -> dict[str, Any] | None:
        h = await api.get(HPA, "nothing", ns)
        return h if conditions(h).get("AbleToScale") == ("False", "FailedGetScale") else None

    await eventually(failed, what="AbleToScale=False FailedGetScale")


async def test_the_real_metrics_reader_finds_the_metrics_api(api: AsyncApiClient, ns: str) -> None:
    """The controller's own reader against the apiserver's metrics.k8s.io: with no node there are no
    metrics (an empty PodMetricsList), which it reports as Kubernetes does, not as a failed request."""
    from controllers.hpa import ApiMetricsSource
    with pytest.raises(MetricsError, match="no metrics returned from resource metrics API"):
        await ApiMetricsSource(api).pod_metrics("cpu", ns, "app=web")
