"""What the scheduler knows about the cluster: an immutable :class:`Snapshot` of :class:`NodeInfo`s, and the
mutable :class:`SchedulerCache` (fed by the informers) that hands snapshots out.

::

    informers ──▶ SchedulerCache ── set_node / remove_node / add_pod / remove_pod
                      │   assume(pod, node) ── the pod counts on the node at once, before the
                      │   forget(pod)            informer sees the binding (a burst cannot overcommit)
                      ▼
                  snapshot() ──▶ Snapshot (frozen; NodeInfos shared between snapshots until they change)

Quantities are turned into integers once, when a pod or node enters the cache: cpu in millicores,
memory in bytes (both rounded up, as Kubernetes does), so the filters and scores only compare ints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from minik8s.api.quantity import parse_quantity

# Kubernetes counts a container without requests as this much when *scoring* (not when filtering),
# so that best-effort pods still spread (pkg/scheduler/util/pod_resources.go).
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
# A node that does not state how many pods it takes gets the kubelet's default --max-pods.
DEFAULT_MAX_PODS = 110

HostPort = tuple[str, str, int]  # (protocol, hostIP, port); hostIP "0.0.0.0" means every address
_EMPTY: Mapping[str, int] = MappingProxyType({})


def _milli(value: Any) -> int:
    try:
        return math.ceil(parse_quantity(value) * 1000)
    except (ValueError, TypeError):
        return 0


def _units(value: Any) -> int:
    try:
        return math.ceil(parse_quantity(value))
    except (ValueError, TypeError):
        return 0


def pod_key(pod: Mapping[str, Any]) -> str:
    """``namespace/name`` (the work queue's and the cache's key of a pod)."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


def _container_requests(container: Mapping[str, Any]) -> tuple[int, int]:
    res = container.get("resources") or {}
    requests, limits = res.get("requests") or {}, res.get("limits") or {}
    # A container that states only a limit requests exactly its limit (as the apiserver defaults it).
    cpu = requests.get("cpu", limits.get("cpu"))
    mem = requests.get("memory", limits.get("memory"))
    return (_milli(cpu) if cpu is not None else 0), (_units(mem) if mem is not None else 0)


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What scheduling needs of one pod, computed once.

    ``cpu``/``memory``: the effective requests (sum over containers; each init container runs alone, so the
    pod needs at least the largest of them). ``score_cpu``/``score_memory``: the same with Kubernetes'
    non-zero defaults for containers that request nothing (used by scores only).
    """

    key: str
    name: str
    uid: str
    cpu: int
    memory: int
    score_cpu: int
    score_memory: int
    host_ports: tuple[HostPort, ...]
    node_selector: Mapping[str, str]
    owner_uid: str

    @staticmethod
    def of(pod: Mapping[str, Any]) -> PodInfo:
        spec = pod.get("spec") or {}
        meta = pod.get("metadata") or {}
        cpu = mem = score_cpu = score_mem = 0
        ports: list[HostPort] = []
        for c in spec.get("containers") or []:
            c_cpu, c_mem = _container_requests(c)
            cpu, mem = cpu + c_cpu, mem + c_mem
            score_cpu += c_cpu or DEFAULT_MILLI_CPU_REQUEST
            score_mem += c_mem or DEFAULT_MEMORY_REQUEST
            for p in c.get("ports") or []:
                if isinstance(p, Mapping) and p.get("hostPort"):
                    ports.append((str(p.get("protocol") or "TCP"), str(p.get("hostIP") or "0.0.0.0"),
                                  int(p["hostPort"])))
        for c in spec.get("initContainers") or []:
            c_cpu, c_mem = _container_requests(c)
            cpu, mem = max(cpu, c_cpu), max(mem, c_mem)
            score_cpu, score_mem = max(score_cpu, c_cpu), max(score_mem, c_mem)
        owner = next((str(o.get("uid", "")) for o in meta.get("ownerReferences") or []
                      if isinstance(o, Mapping) and o.get("controller")), "")
        selector = spec.get("nodeSelector") or {}
        return PodInfo(key=pod_key(pod), name=str(meta.get("name", "")), uid=str(meta.get("uid", "")),
                       cpu=cpu, memory=mem, score_cpu=score_cpu, score_memory=score_mem, host_ports=tuple(ports),
                       node_selector=MappingProxyType(dict(selector)), owner_uid=owner)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node and the sums of the pods counted on it. Never changed: the cache builds a new one."""

    name: str
    labels: Mapping[str, str]
    ready: bool
    unschedulable: bool
    alloc_cpu: int
    alloc_memory: int
    alloc_pods: int
    req_cpu: int = 0
    req_memory: int = 0
    score_cpu: int = 0
    score_memory: int = 0
    pod_count: int = 0
    host_ports: frozenset[HostPort] = frozenset()
    owners: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # controller uid → how many of its pods are here

    @staticmethod
    def of(node: Mapping[str, Any], pods: Iterable[PodInfo] = ()) -> NodeInfo:
        """The NodeInfo of a Node object with ``pods`` counted on it."""
        meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
        alloc = status.get("allocatable") or status.get("capacity") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [] if isinstance(c, Mapping))
        pods_cap = alloc.get("pods")
        base = NodeInfo(name=str(meta.get("name", "")), labels=MappingProxyType(dict(meta.get("labels") or {})),
                        ready=ready, unschedulable=bool(spec.get("unschedulable")),
                        alloc_cpu=_milli(alloc.get("cpu", 0)), alloc_memory=_units(alloc.get("memory", 0)),
                        alloc_pods=_units(pods_cap) if pods_cap is not None else DEFAULT_MAX_PODS)
        return base.with_pods(pods)

    def with_pods(self, pods: Iterable[PodInfo]) -> NodeInfo:
        """This node with exactly ``pods`` counted on it (sums recomputed)."""
        cpu = mem = s_cpu = s_mem = count = 0
        ports: set[HostPort] = set()
        owners: dict[str, int] = {}
        for p in pods:
            cpu, mem, s_cpu, s_mem, count = cpu + p.cpu, mem + p.memory, s_cpu + p.score_cpu, \
                s_mem + p.score_memory, count + 1
            ports.update(p.host_ports)
            if p.owner_uid:
                owners[p.owner_uid] = owners.get(p.owner_uid, 0) + 1
        return NodeInfo(name=self.name, labels=self.labels, ready=self.ready, unschedulable=self.unschedulable,
                        alloc_cpu=self.alloc_cpu, alloc_memory=self.alloc_memory, alloc_pods=self.alloc_pods,
                        req_cpu=cpu, req_memory=mem, score_cpu=s_cpu, score_memory=s_mem, pod_count=count,
                        host_ports=frozenset(ports), owners=MappingProxyType(owners) if owners else _EMPTY)


@dataclass(frozen=True)
class Snapshot:
    """The cluster as one scheduling decision sees it: nodes sorted by name, plus the last node bound to
    (the round-robin policy's cursor). Immutable; safe to share between decisions."""

    nodes: tuple[NodeInfo, ...] = ()
    last_bound: str = ""
    _index: Mapping[str, int] = field(default_factory=lambda: _EMPTY, compare=False, repr=False)

    @staticmethod
    def of(nodes: Iterable[NodeInfo], *, last_bound: str = "") -> Snapshot:
        ordered = tuple(sorted(nodes, key=lambda n: n.name))
        return Snapshot(ordered, last_bound, MappingProxyType({n.name: i for i, n in enumerate(ordered)}))

    @property
    def names(self) -> list[str]:
        """Node names in order (what round-robin bisects)."""
        return [n.name for n in self.nodes]

    def get(self, name: str) -> NodeInfo | None:
        i = self._index.get(name)
        return None if i is None else self.nodes[i]

    def __len__(self) -> int:
        return len(self.nodes)


def counts_on_node(pod: Mapping[str, Any]) -> bool:
    """Whether ``pod`` holds resources on its node: bound and not finished (terminating pods still do)."""
    return bool((pod.get("spec") or {}).get("nodeName")) and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


class SchedulerCache:
    """The mutable view behind the snapshots. Single-threaded (one asyncio loop); not thread-safe.

    Pods are known by key (``namespace/name``). A pod is either *bound* (the informer saw it with a
    nodeName) or *assumed* (the scheduler chose a node and is binding it). ``add_pod`` of a bound pod
    replaces its assumption; ``forget`` drops an assumption whose binding failed.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, NodeInfo] = {}  # name → the node without pods (parsed once per node update)
        self._pods: dict[str, tuple[str, PodInfo]] = {}  # key → (node name, info)
        self._by_node: dict[str, dict[str, PodInfo]] = {}
        self._assumed: set[str] = set()
        self._infos: dict[str, NodeInfo] = {}
        self._dirty: set[str] = set()
        self._order_changed = True
        self._last_bound = ""
        self._snapshot = Snapshot()

    # --- nodes ---------------------------------------------------------------------------------

    def set_node(self, node: Mapping[str, Any]) -> None:
        name = str((node.get("metadata") or {}).get("name", ""))
        if name not in self._nodes:
            self._order_changed = True
        self._nodes[name] = NodeInfo.of(node)
        self._dirty.add(name)

    def remove_node(self, name: str) -> None:
        if self._nodes.pop(name, None) is not None:
            self._infos.pop(name, None)
            self._order_changed = True

    # --- pods ----------------------------------------------------------------------------------

    def add_pod(self, pod: Mapping[str, Any]) -> None:
        """Count a bound pod on its node (or stop counting it when it finished or lost its node)."""
        key = pod_key(pod)
        if not counts_on_node(pod):
            self.remove_pod(key)
            return
        self._put(key, str(pod["spec"]["nodeName"]), PodInfo.of(pod))
        self._assumed.discard(key)

    def remove_pod(self, key: str) -> None:
        entry = self._pods.pop(key, None)
        self._assumed.discard(key)
        if entry is not None:
            node, _ = entry
            self._by_node.get(node, {}).pop(key, None)
            self._dirty.add(node)

    def assume(self, info: PodInfo, node: str) -> None:
        """Count ``info`` on ``node`` now, before the binding is written or seen."""
        self._put(info.key, node, info)
        self._assumed.add(info.key)
        self._last_bound = node

    def forget(self, key: str) -> None:
        """Drop the assumption of ``key`` (its binding failed); a bound pod stays."""
        if key in self._assumed:
            self.remove_pod(key)

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed

    def node_of(self, key: str) -> str | None:
        entry = self._pods.get(key)
        return entry[0] if entry else None

    def _put(self, key: str, node: str, info: PodInfo) -> None:
        old = self._pods.get(key)
        if old is not None and old[0] != node:
            self._by_node.get(old[0], {}).pop(key, None)
            self._dirty.add(old[0])
        self._pods[key] = (node, info)
        self._by_node.setdefault(node, {})[key] = info
        self._dirty.add(node)

    # --- snapshots -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current state as an immutable Snapshot; NodeInfos of unchanged nodes are reused."""
        if not self._dirty and not self._order_changed and self._snapshot.last_bound == self._last_bound:
            return self._snapshot
        for name in self._dirty:
            base = self._nodes.get(name)
            if base is not None:
                self._infos[name] = base.with_pods(self._by_node.get(name, {}).values())
        if self._order_changed:
            self._snapshot = Snapshot.of(self._infos.values(), last_bound=self._last_bound)
        elif self._dirty:
            nodes = list(self._snapshot.nodes)
            index = self._snapshot._index
            for name in self._dirty:
                i = index.get(name)
                if i is not None:
                    nodes[i] = self._infos[name]
            self._snapshot = Snapshot(tuple(nodes), self._last_bound, index)
        else:
            self._snapshot = Snapshot(self._snapshot.nodes, self._last_bound, self._snapshot._index)
        self._dirty.clear()
        self._order_changed = False
        return self._snapshot
