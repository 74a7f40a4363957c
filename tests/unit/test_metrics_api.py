"""The ``metrics.k8s.io/v1beta1`` API (apiserver/resource_metrics.py) and ``minictl top`` (minictl/top.py):
quantities, summary → PodMetrics / NodeMetrics, request routing over a fake object store, discovery, and
the tables minictl prints."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from apiserver import discovery, resource_metrics
from apiserver.resource_metrics import cpu_quantity, go_duration, memory_quantity, node_metrics, pod_metrics
from minictl import top
from minictl.main import Session, cli
from minik8s.api import registry
from minik8s.errors import MethodNotAllowed, NotFound

pytestmark = pytest.mark.timeout(30)


def test_quantities_as_metrics_server_writes_them() -> None:
    assert cpu_quantity(1_234_567) == "1234567n"
    assert cpu_quantity(0) == "0"
    assert memory_quantity(5120 * 1024) == "5120Ki"
    assert memory_quantity(1000) == "1000"
    assert memory_quantity(0) == "0"
    assert [go_duration(s) for s in (15, 1.0, 1.5, 0.25, 90, 3725.5, 0)] == [
        "15s", "1s", "1.5s", "250ms", "1m30s", "1h2m5.5s", "0s"]


POD = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
       "spec": {"nodeName": "n1"}}
ENTRY = {"podRef": {"name": "web", "namespace": "ns", "uid": "u1"}, "window": 15.0, "time": "2026-01-02T03:04:05Z",
         "containers": [{"name": "app", "cpu": {"time": "2026-01-02T03:04:05Z", "usageNanoCores": 1_234_567},
                         "memory": {"time": "2026-01-02T03:04:05Z", "workingSetBytes": 5120 * 1024}}]}
NODE = {"metadata": {"name": "n1", "labels": {"zone": "a"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                   "allocatable": {"cpu": "2", "memory": "4Gi"}}}
SUMMARY: dict[str, Any] = {
    "node": {"nodeName": "n1", "cpu": {"time": "2026-01-02T03:04:05Z", "usageNanoCores": 500_000_000},
             "memory": {"time": "2026-01-02T03:04:05Z", "workingSetBytes": 1 << 30}, "window": 15.0},
    "pods": [ENTRY]}


def test_a_summary_entry_becomes_pod_metrics() -> None:
    m = pod_metrics(POD, ENTRY)
    assert m["kind"] == "PodMetrics" and m["apiVersion"] == "metrics.k8s.io/v1beta1"
    assert {k: v for k, v in m["metadata"].items() if k != "creationTimestamp"} == {
        "name": "web", "namespace": "ns", "labels": {"app": "web"}}
    assert m["timestamp"] == "2026-01-02T03:04:05Z" and m["window"] == "15s"
    assert m["containers"] == [{"name": "app", "usage": {"cpu": "1234567n", "memory": "5120Ki"}}]


def test_node_metrics_need_a_cpu_rate() -> None:
    m = node_metrics(NODE, SUMMARY["node"])
    assert m is not None and m["kind"] == "NodeMetrics" and m["metadata"]["name"] == "n1"
    assert m["usage"] == {"cpu": "500000000n", "memory": "1048576Ki"} and m["window"] == "15s"
    assert node_metrics(NODE, {"nodeName": "n1", "memory": {"workingSetBytes": 1}}) is None


class FakeObjects:
    """Pods and nodes in memory; records each list's selectors."""

    def __init__(self, pods: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> None:
        self.pods, self.nodes = pods, nodes
        self.lists: list[tuple[str, str | None, str, str]] = []

    def _of(self, rt: registry.ResourceType) -> list[dict[str, Any]]:
        return self.pods if rt.plural == "pods" else self.nodes

    async def get(self, rt: registry.ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        for o in self._of(rt):
            if o["metadata"]["name"] == name and o["metadata"].get("namespace") == namespace:
                return o
        raise NotFound(f'{rt.plural} "{name}" not found')

    async def list_objects(self, rt: registry.ResourceType, namespace: str | None, *, label_selector: str = "",
                           field_selector: str = "", resource_version: str = "") -> tuple[list[dict[str, Any]], str]:
        self.lists.append((rt.plural, namespace, label_selector, field_selector))
        items = [o for o in self._of(rt) if namespace in (None, o["metadata"].get("namespace"))]
        if label_selector:
            key, _, value = label_selector.partition("=")
            items = [o for o in items if (o["metadata"].get("labels") or {}).get(key) == value]
        return items, "1"


@pytest.fixture()
def kubelets(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """node name → the summary its kubelet answers (a node missing here does not answer)."""
    answers: dict[str, dict[str, Any]] = {"n1": SUMMARY}

    async def summaries(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {n["metadata"]["name"]: answers[n["metadata"]["name"]] for n in nodes
                if n["metadata"]["name"] in answers and resource_metrics.is_ready(n)}

    monkeypatch.setattr(resource_metrics, "_summaries", summaries)
    return answers


async def test_pod_metrics_list_and_get_through_the_api(kubelets: dict[str, dict[str, Any]]) -> None:
    fresh = {"metadata": {"name": "new", "namespace": "ns", "uid": "u2"}, "spec": {"nodeName": "n1"}}
    pending = {"metadata": {"name": "pending", "namespace": "ns", "uid": "u3"}, "spec": {}}
    objects = FakeObjects([POD, fresh, pending], [NODE])
    base = "/apis/metrics.k8s.io/v1beta1"
    listed = await resource_metrics.serve(objects, "GET", f"{base}/namespaces/ns/pods", {"labelSelector": "app=web"})
    assert listed["kind"] == "PodMetricsList" and [m["metadata"]["name"] for m in listed["items"]] == ["web"]
    assert ("pods", "ns", "app=web", "") in objects.lists
    everywhere = await resource_metrics.serve(objects, "GET", f"{base}/pods", {})
    assert [m["metadata"]["name"] for m in everywhere["items"]] == ["web"]  # "new" has no rate yet
    one = await resource_metrics.serve(objects, "GET", f"{base}/namespaces/ns/pods/web", {})
    assert one["containers"][0]["usage"]["cpu"] == "1234567n"
    for name in ("new", "pending", "ghost"):
        with pytest.raises(NotFound, match=rf'podmetrics\.metrics\.k8s\.io "{name}" not found'):
            await resource_metrics.serve(objects, "GET", f"{base}/namespaces/ns/pods/{name}", {})
    with pytest.raises(MethodNotAllowed):
        await resource_metrics.serve(objects, "DELETE", f"{base}/namespaces/ns/pods/web", {})
    with pytest.raises(MethodNotAllowed):
        await resource_metrics.serve(objects, "GET", f"{base}/pods", {"watch": "true"})
    with pytest.raises(NotFound):
        await resource_metrics.serve(objects, "GET", f"{base}/services", {})


async def test_node_metrics_only_for_nodes_whose_kubelet_answers(kubelets: dict[str, dict[str, Any]]) -> None:
    silent = {"metadata": {"name": "n2"}, "status": NODE["status"]}
    objects = FakeObjects([], [NODE, silent])
    base = "/apis/metrics.k8s.io/v1beta1"
    listed = await resource_metrics.serve(objects, "GET", f"{base}/nodes", {"labelSelector": "zone=a"})
    assert listed["kind"] == "NodeMetricsList" and [m["metadata"]["name"] for m in listed["items"]] == ["n1"]
    assert (await resource_metrics.serve(objects, "GET", f"{base}/nodes/n1", {}))["usage"]["cpu"] == "500000000n"
    with pytest.raises(NotFound, match=r'nodemetrics\.metrics\.k8s\.io "n2" not found'):
        await resource_metrics.serve(objects, "GET", f"{base}/nodes/n2", {})


def test_discovery_lists_the_metrics_group() -> None:
    groups = {g["name"]: g for g in discovery.api_group_list()["groups"]}
    assert groups["metrics.k8s.io"]["preferredVersion"]["groupVersion"] == "metrics.k8s.io/v1beta1"
    assert discovery.api_group("metrics.k8s.io")["kind"] == "APIGroup"  # type: ignore[index]
    resources = discovery.resource_list("metrics.k8s.io", "v1beta1")
    assert resources is not None
    assert {(r["name"], r["kind"], r["namespaced"]) for r in resources["resources"]} == {
        ("nodes", "NodeMetrics", False), ("pods", "PodMetrics", True)}
    assert all(r["verbs"] == ["get", "list"] for r in resources["resources"])
    assert resource_metrics.owns("/apis/metrics.k8s.io/v1beta1/nodes")
    assert not resource_metrics.owns("/apis/metrics.k8s.io/v1beta1")


# -- minictl top ----------------------------------------------------------------------------------------


def test_top_formats_as_kubectl_does() -> None:
    assert top.format_cpu("1234567n") == "2m"  # kubectl rounds millicores up
    assert top.format_cpu("199999999n") == "200m"
    assert top.format_cpu("0") == "0m"
    assert top.format_memory("5120Ki") == "5Mi"
    assert top.format_memory("1048575") == "0Mi"
    assert top.percent("500000000n", "2", cpu=True) == "25%"
    assert top.percent("1048576Ki", "4Gi", cpu=False) == "25%"
    assert top.percent("1", None, cpu=True) == "<unknown>"
    two = {"metadata": {"name": "two", "namespace": "ns"}, "containers": [
        {"name": "a", "usage": {"cpu": "100m", "memory": "10Mi"}}, {"name": "b", "usage": {"cpu": "50m",
                                                                                         "memory": "30Mi"}}]}
    one = pod_metrics(POD, ENTRY)
    assert top.pod_rows([one, two], all_namespaces=False, containers=False, sort_by="cpu") == [
        ["NAME", "CPU(cores)", "MEMORY(bytes)"], ["two", "150m", "40Mi"], ["web", "2m", "5Mi"]]
    assert top.pod_rows([two], all_namespaces=True, containers=True, sort_by=None) == [
        ["NAMESPACE", "POD", "NAME", "CPU(cores)", "MEMORY(bytes)"],
        ["ns", "two", "a", "100m", "10Mi"], ["ns", "two", "b", "50m", "30Mi"]]


def _transport(routes: dict[str, Any]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = routes.get(request.url.path)
        if body is None:
            return httpx.Response(404, json={"kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound",
                                             "message": "the server could not find the requested resource"})
        return httpx.Response(200, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    return httpx.MockTransport(handler)


def _run(routes: dict[str, Any], *args: str) -> Any:
    session = Session(transport=_transport(routes), server_flag="http://api")
    return CliRunner().invoke(cli, list(args), obj=session)


def test_minictl_top_pod_and_node() -> None:
    routes = {"/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods": {"items": [pod_metrics(POD, ENTRY)]},
              "/apis/metrics.k8s.io/v1beta1/nodes": {"items": [node_metrics(NODE, SUMMARY["node"])]},
              "/api/v1/nodes": {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [NODE]},
              "/api/v1/namespaces/empty/pods": {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []},
              "/apis/metrics.k8s.io/v1beta1/namespaces/empty/pods": {"items": []},
              "/api/v1/namespaces/young/pods": {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [POD]},
              "/apis/metrics.k8s.io/v1beta1/namespaces/young/pods": {"items": []}}
    res = _run(routes, "top", "pod", "-n", "ns")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == ["NAME   CPU(cores)   MEMORY(bytes)", "web    2m           5Mi"]
    res = _run(routes, "top", "node")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == ["NAME   CPU(cores)   CPU(%)   MEMORY(bytes)   MEMORY(%)",
                                       "n1     500m         25%      1024Mi          25%"]
    res = _run(routes, "top", "pod", "-n", "empty")
    assert res.exit_code == 0 and "No resources found in empty namespace." in res.output
    res = _run(routes, "top", "pod", "-n", "young")
    assert res.exit_code == 1 and "error: metrics not available yet" in res.output
    res = _run({}, "top", "pod", "-n", "ns")
    assert res.exit_code == 1 and "error: Metrics API not available" in res.output
