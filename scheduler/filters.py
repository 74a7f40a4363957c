"""Filters: may this pod run on this node? Each is a pure function ``(pod, node) -> reasons``.

An empty tuple means "fits"; otherwise the reasons use Kubernetes' words, because they end up in the
pod's ``PodScheduled`` condition (``0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match
Pod's node affinity/selector.``). Filters run cheapest first and stop at the first one that fails, as
Kubernetes does; the resource filter names every resource that is short.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.snapshot import NodeInfo, PodInfo

Filter = Callable[[PodInfo, NodeInfo], tuple[str, ...]]

NOT_READY = "node(s) were not ready"
UNSCHEDULABLE = "node(s) were unschedulable"
SELECTOR_MISMATCH = "node(s) didn't match Pod's node affinity/selector"
PORTS_TAKEN = "node(s) didn't have free ports for the requested pod ports"
INSUFFICIENT_CPU = "Insufficient cpu"
INSUFFICIENT_MEMORY = "Insufficient memory"
TOO_MANY_PODS = "Too many pods"
_FITS: tuple[str, ...] = ()


def node_ready(pod: PodInfo, node: NodeInfo) -> tuple[str, ...]:
    """The node's Ready condition is True and it is not cordoned (``spec.unschedulable``)."""
    if not node.ready:
        return (NOT_READY,)
    if node.unschedulable:
        return (UNSCHEDULABLE,)
    return _FITS


def node_selector(pod: PodInfo, node: NodeInfo) -> tuple[str, ...]:
    """Every ``nodeSelector`` pair is among the node's labels."""
    labels = node.labels
    for k, v in pod.node_selector.items():
        if labels.get(k) != v:
            return (SELECTOR_MISMATCH,)
    return _FITS


def resources_fit(pod: PodInfo, node: NodeInfo) -> tuple[str, ...]:
    """Requests already on the node plus this pod's fit allocatable cpu, memory and pod count."""
    short: list[str] = []
    if node.pod_count + 1 > node.alloc_pods:
        short.append(TOO_MANY_PODS)
    if pod.cpu and node.req_cpu + pod.cpu > node.alloc_cpu:
        short.append(INSUFFICIENT_CPU)
    if pod.memory and node.req_memory + pod.memory > node.alloc_memory:
        short.append(INSUFFICIENT_MEMORY)
    return tuple(short) if short else _FITS


def host_ports(pod: PodInfo, node: NodeInfo) -> tuple[str, ...]:
    """No pod on the node uses the same hostPort and protocol on an overlapping hostIP (0.0.0.0 overlaps all)."""
    if not pod.host_ports or not node.host_ports:
        return _FITS
    for proto, ip, port in pod.host_ports:
        for used_proto, used_ip, used_port in node.host_ports:
            if port == used_port and proto == used_proto and \
                    (ip == used_ip or ip == "0.0.0.0" or used_ip == "0.0.0.0"):
                return (PORTS_TAKEN,)
    return _FITS


# Cheapest first: a node that is not ready costs one attribute read.
FILTERS: tuple[Filter, ...] = (node_ready, node_selector, resources_fit, host_ports)


def run_filters(pod: PodInfo, node: NodeInfo, filters: tuple[Filter, ...] = FILTERS) -> tuple[str, ...]:
    """The reasons of the first filter that fails (empty when the node fits)."""
    for f in filters:
        reasons = f(pod, node)
        if reasons:
            return reasons
    return _FITS
