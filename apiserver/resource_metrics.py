"""The ``metrics.k8s.io/v1beta1`` API: NodeMetrics and PodMetrics, built by asking the kubelets.

::

    GET /apis/metrics.k8s.io/v1beta1/nodes[/{name}]                     ?labelSelector=
    GET /apis/metrics.k8s.io/v1beta1/pods                               (every namespace)
    GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods[/{name}]      ?labelSelector=&fieldSelector=
      │
      ├─ the Nodes / Pods from the API (selectors apply to them, as metrics-server applies them)
      ├─ each Ready node's kubelet: http://127.0.0.1:<daemonEndpoints.kubeletEndpoint.Port>/stats/summary
      │    (asked at once, all nodes together, with a short timeout; one that does not answer is left out)
      └─ NodeMetrics / PodMetrics (lists: NodeMetricsList / PodMetricsList)

Nothing is stored: every request asks again. A pod the kubelet has no rate for yet (fewer than two
samples) is left out of a list and a 404 on get, as with metrics-server. Usage quantities are
``"<n>n"`` nanocores and ``"<n>Ki"`` bytes (plain bytes when not a whole number of KiB); ``window``
is a Go duration (``"15s"``). No watch, no tables: kubectl top formats the numbers itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from minik8s.api import registry
from minik8s.errors import MethodNotAllowed, NotFound
from minik8s.timeutil import rfc3339

log = logging.getLogger("minik8s.apiserver.metrics")

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
KUBELET_HOST = "127.0.0.1"
KUBELET_TIMEOUT = httpx.Timeout(3.0, connect=2.0)
_PODS = registry.lookup("pods")
_NODES = registry.lookup("nodes")

RESOURCES = [
    {"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics", "verbs": ["get", "list"]},
    {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics", "verbs": ["get", "list"]},
]


def group() -> dict[str, Any]:
    """The group's entry in ``/apis`` (and the body of ``/apis/metrics.k8s.io`` with kind APIGroup)."""
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"name": GROUP, "versions": [version], "preferredVersion": version}


def resource_list() -> dict[str, Any]:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
            "resources": [dict(r) for r in RESOURCES]}


# -- quantities ---------------------------------------------------------------------------------------


def cpu_quantity(nanocores: int) -> str:
    """``1234567n`` (what metrics-server answers); ``0`` for none."""
    n = max(0, int(nanocores))
    return f"{n}n" if n else "0"


def memory_quantity(size: int) -> str:
    """``5120Ki`` when a whole number of KiB (working sets are pages), else plain bytes."""
    n = max(0, int(size))
    if n == 0:
        return "0"
    return f"{n // 1024}Ki" if n % 1024 == 0 else str(n)


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String()`` writes it (``15s``, ``1.5s``, ``500ms``, ``1m30s``)."""
    ms = round(max(0.0, float(seconds)) * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


# -- summary → objects --------------------------------------------------------------------------------


def _meta(obj: Mapping[str, Any], namespaced: bool) -> dict[str, Any]:
    src = obj.get("metadata") or {}
    meta: dict[str, Any] = {"name": src.get("name", ""), "creationTimestamp": rfc3339()}
    if namespaced:
        meta["namespace"] = src.get("namespace", "")
    if src.get("labels"):
        meta["labels"] = dict(src["labels"])
    return meta


def pod_metrics(pod: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """A ``PodMetrics`` from the pod object and its ``/stats/summary`` entry."""
    containers = []
    for c in entry.get("containers") or []:
        usage = {"cpu": cpu_quantity(((c.get("cpu") or {}).get("usageNanoCores")) or 0),
                 "memory": memory_quantity(((c.get("memory") or {}).get("workingSetBytes")) or 0)}
        containers.append({"name": str(c.get("name", "")), "usage": usage})
    return {"kind": "PodMetrics", "apiVersion": GROUP_VERSION, "metadata": _meta(pod, True),
            "timestamp": str(entry.get("time") or rfc3339()), "window": go_duration(float(entry.get("window") or 0)),
            "containers": containers}


def node_metrics(node: Mapping[str, Any], summary_node: Mapping[str, Any]) -> dict[str, Any] | None:
    """A ``NodeMetrics`` from the node object and the summary's ``node``; None until it has a cpu rate."""
    cpu, memory = summary_node.get("cpu") or {}, summary_node.get("memory") or {}
    if "usageNanoCores" not in cpu or "workingSetBytes" not in memory:
        return None
    return {"kind": "NodeMetrics", "apiVersion": GROUP_VERSION, "metadata": _meta(node, False),
            "timestamp": str(cpu.get("time") or rfc3339()),
            "window": go_duration(float(summary_node.get("window") or 0)),
            "usage": {"cpu": cpu_quantity(cpu["usageNanoCores"]), "memory": memory_quantity(memory["workingSetBytes"])}}


def _list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}


# -- asking the kubelets ------------------------------------------------------------------------------


def kubelet_port(node: Mapping[str, Any]) -> int | None:
    """The port the node's kubelet reports (``status.daemonEndpoints.kubeletEndpoint.Port``), if valid."""
    endpoint = (((node.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint") or {})
    port = endpoint.get("Port")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return port
    return None


def is_ready(node: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [] if isinstance(c, Mapping))


class ObjectReader(Protocol):
    """What this API needs of ``apiserver.objects.Objects``."""

    async def get(self, rt: registry.ResourceType, namespace: str | None, name: str) -> dict[str, Any]: ...

    async def list_objects(self, rt: registry.ResourceType, namespace: str | None, *, label_selector: str = "",
                           field_selector: str = "", resource_version: str = "") -> tuple[list[dict[str, Any]], str]:
        ...


async def _summary(client: httpx.AsyncClient, node: Mapping[str, Any]) -> dict[str, Any] | None:
    """The node's kubelet's ``/stats/summary``, or None (not Ready, no port, no answer, a bad answer)."""
    name = (node.get("metadata") or {}).get("name")
    port = kubelet_port(node)
    if not is_ready(node) or port is None:
        return None
    try:
        r = await client.get(f"http://{KUBELET_HOST}:{port}/stats/summary")
        r.raise_for_status()
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("no metrics from the kubelet of node %s: %s", name, " ".join(str(exc).split()) or type(exc))
        return None
    return body if isinstance(body, dict) else None


async def _summaries(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """node name → its summary, for the nodes whose kubelet answered."""
    async with httpx.AsyncClient(timeout=KUBELET_TIMEOUT) as client:
        found = await asyncio.gather(*(_summary(client, n) for n in nodes))
    return {str(n["metadata"]["name"]): s for n, s in zip(nodes, found, strict=True) if s is not None}


def _pod_entries(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out = {}
    for p in summary.get("pods") or []:
        ref = (p.get("podRef") or {}) if isinstance(p, Mapping) else {}
        if isinstance(ref, Mapping) and ref.get("uid"):
            out[str(ref["uid"])] = p
    return out


async def pods(objects: ObjectReader, namespace: str | None, *, label_selector: str = "",
               field_selector: str = "") -> list[dict[str, Any]]:
    """PodMetrics of the matching pods that have metrics now."""
    found, _ = await objects.list_objects(_PODS, namespace, label_selector=label_selector,
                                          field_selector=field_selector, resource_version="0")
    by_node: dict[str, list[dict[str, Any]]] = {}
    for pod in found:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            by_node.setdefault(str(node_name), []).append(pod)
    if not by_node:
        return []
    all_nodes, _ = await objects.list_objects(_NODES, None, resource_version="0")
    summaries = await _summaries([n for n in all_nodes if n.get("metadata", {}).get("name") in by_node])
    items = []
    for node_name, node_pods in by_node.items():
        entries = _pod_entries(summaries.get(node_name) or {})
        for pod in node_pods:
            entry = entries.get(str((pod.get("metadata") or {}).get("uid")))
            if entry is not None:
                items.append(pod_metrics(pod, entry))
    items.sort(key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"]))
    return items


async def pod(objects: ObjectReader, namespace: str, name: str) -> dict[str, Any]:
    """One PodMetrics; ``NotFound`` when the pod does not exist or has no metrics (yet)."""
    missing = NotFound(f'podmetrics.metrics.k8s.io "{name}" not found', kind="pods", name=name, group=GROUP)
    try:
        obj = await objects.get(_PODS, namespace, name)
    except NotFound:
        raise missing from None
    node_name = (obj.get("spec") or {}).get("nodeName")
    if not node_name:
        raise missing
    try:
        node = await objects.get(_NODES, None, str(node_name))
    except NotFound:
        raise missing from None
    summaries = await _summaries([node])
    entry = _pod_entries(summaries.get(str(node_name)) or {}).get(str((obj.get("metadata") or {}).get("uid")))
    if entry is None:
        raise missing
    return pod_metrics(obj, entry)


async def nodes(objects: ObjectReader, *, label_selector: str = "") -> list[dict[str, Any]]:
    """NodeMetrics of the matching Ready nodes whose kubelet answered with a cpu rate."""
    found, _ = await objects.list_objects(_NODES, None, label_selector=label_selector, resource_version="0")
    summaries = await _summaries(found)
    items = []
    for node in found:
        summary = summaries.get(str(node["metadata"]["name"]))
        metrics = node_metrics(node, summary.get("node") or {}) if summary else None
        if metrics is not None:
            items.append(metrics)
    items.sort(key=lambda m: m["metadata"]["name"])
    return items


async def node(objects: ObjectReader, name: str) -> dict[str, Any]:
    missing = NotFound(f'nodemetrics.metrics.k8s.io "{name}" not found', kind="nodes", name=name, group=GROUP)
    try:
        obj = await objects.get(_NODES, None, name)
    except NotFound:
        raise missing from None
    summary = (await _summaries([obj])).get(name)
    metrics = node_metrics(obj, summary.get("node") or {}) if summary else None
    if metrics is None:
        raise missing
    return metrics


def owns(path: str) -> bool:
    """Whether ``path`` names a resource of this API (discovery documents are answered elsewhere)."""
    seg = [s for s in path.split("/") if s]
    return len(seg) > 3 and seg[0] == "apis" and seg[1] == GROUP


async def serve(objects: ObjectReader, method: str, path: str, query: Mapping[str, str]) -> dict[str, Any]:
    """Answer a request for ``path`` (one that ``owns``). Raises ``NotFound`` for unknown paths,
    ``MethodNotAllowed`` for anything but a GET (watch included), and the selectors' ``BadRequest``."""
    seg = [s for s in path.split("/") if s][2:]
    if seg[0] != VERSION:
        raise NotFound("the server could not find the requested resource")
    rest = seg[1:]
    if method != "GET" or query.get("watch") in ("1", "true", "True"):
        what = "watch" if method == "GET" else method
        raise MethodNotAllowed(f"{what} is not supported on {GROUP} resources")
    labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
    if rest == ["nodes"]:
        return _list("NodeMetricsList", await nodes(objects, label_selector=labels))
    if len(rest) == 2 and rest[0] == "nodes":
        return await node(objects, rest[1])
    if rest == ["pods"]:
        return _list("PodMetricsList", await pods(objects, None, label_selector=labels, field_selector=fields))
    if len(rest) == 3 and rest[0] == "namespaces" and rest[2] == "pods":
        return _list("PodMetricsList", await pods(objects, rest[1], label_selector=labels, field_selector=fields))
    if len(rest) == 4 and rest[0] == "namespaces" and rest[2] == "pods":
        return await pod(objects, rest[1], rest[3])
    raise NotFound("the server could not find the requested resource")


def resource_label(path: str) -> str:
    """The request metrics' resource label: ``nodes.metrics.k8s.io`` / ``pods.metrics.k8s.io``."""
    seg = [s for s in path.split("/") if s]
    kind = "nodes" if "nodes" in seg else "pods"
    return f"{kind}.{GROUP}"

