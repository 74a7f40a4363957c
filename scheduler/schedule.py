"""The scheduling decision: a pure function of a pod and a snapshot.

::

    schedule(pod, snapshot, policy=…)
      ├─ "default":     filter every node (or a sample, see below) → weighted scores → best; ties → smallest name
      └─ "round-robin": filter nodes in name order, starting after ``snapshot.last_bound`` → first that fits
    → Decision(node, reasons)        node None: ``reasons`` counts why each node was refused

Nothing here does I/O or keeps state: the same pod and snapshot always give the same decision, which is
what the unit tests and the benchmark rely on.

Node sampling (``percentage_of_nodes_to_score``, as Kubernetes' option of that name): filtering stops
once that share of the nodes (at least :data:`MIN_FEASIBLE_NODES_TO_FIND`) was found feasible, starting at
a position derived from the pod's uid so different pods look at different nodes first. 100 (the default)
evaluates every node; 0 means Kubernetes' adaptive share, ``max(5, 50 - nodes/125)`` percent. Sampling only
ever shortens the search: when fewer nodes fit, every node is evaluated and the reasons cover them all.
"""

from __future__ import annotations

import bisect
import itertools
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from scheduler.filters import FILTERS, Filter, host_ports
from scheduler.scores import weighted_scores
from scheduler.snapshot import NodeInfo, PodInfo, Snapshot

Policy = Literal["default", "round-robin"]
POLICIES: tuple[str, ...] = ("default", "round-robin")
MIN_FEASIBLE_NODES_TO_FIND = 100
NO_NODES = "no nodes available to schedule pods"


@dataclass(frozen=True)
class Decision:
    """The outcome for one pod. ``node`` is the chosen node's name, or None when no node fits; then
    ``reasons`` maps each refusal reason to how many nodes gave it, and :attr:`message` says it the
    way Kubernetes does. ``evaluated`` is how many nodes went through the filters."""

    node: str | None
    reasons: Mapping[str, int] = field(default_factory=dict)
    total_nodes: int = 0
    evaluated: int = 0
    feasible: int = 0

    @property
    def message(self) -> str:
        """``0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were not ready.`` (sorted, as Kubernetes)."""
        if self.node is not None:
            return ""
        if self.total_nodes == 0:
            return NO_NODES
        parts = sorted(f"{count} {reason}" for reason, count in self.reasons.items())
        return f"0/{self.total_nodes} nodes are available: {', '.join(parts)}."


def nodes_to_find(total: int, percentage: int) -> int:
    """How many feasible nodes the default policy looks for before it stops filtering."""
    if percentage >= 100 or total <= MIN_FEASIBLE_NODES_TO_FIND:
        return total
    if percentage <= 0:
        percentage = max(5, 50 - total // 125)
    return max(MIN_FEASIBLE_NODES_TO_FIND, total * percentage // 100)


def _fits(pod: PodInfo, node: NodeInfo, filters: tuple[Filter, ...], reasons: dict[str, int]) -> bool:
    for f in filters:
        refused = f(pod, node)
        if refused:
            for r in refused:
                reasons[r] = reasons.get(r, 0) + 1
            return False
    return True


def schedule(pod: PodInfo | Mapping[str, Any], snapshot: Snapshot, *, policy: str = "default",
             percentage_of_nodes_to_score: int = 100, weights: dict[str, float] | None = None,
             filters: tuple[Filter, ...] = FILTERS) -> Decision:
    """Choose a node for ``pod`` (a Pod object or its :class:`PodInfo`) in ``snapshot``.

    Raises ``ValueError`` for an unknown ``policy``. Never changes its arguments.
    """
    info = pod if isinstance(pod, PodInfo) else PodInfo.of(pod)
    nodes = snapshot.nodes
    total = len(nodes)
    reasons: dict[str, int] = {}
    if policy == "round-robin":
        start = bisect.bisect_right(snapshot.names, snapshot.last_bound) if snapshot.last_bound else 0
        for i in range(total):
            node = nodes[(start + i) % total]
            if _fits(info, node, filters, reasons):
                return Decision(node.name, {}, total, i + 1, 1)
        return Decision(None, reasons, total, total, 0)
    if policy != "default":
        raise ValueError(f"unknown scheduling policy {policy!r}; choose one of {', '.join(POLICIES)}")

    wanted = nodes_to_find(total, percentage_of_nodes_to_score)
    start = zlib.crc32((info.uid or info.key).encode()) % total if wanted < total else 0
    feasible: list[NodeInfo] = []
    evaluated = 0
    ring = itertools.chain(itertools.islice(nodes, start, None), itertools.islice(nodes, start))
    if filters is FILTERS:
        # The default filters inlined: this loop is the scheduler's hot path. Reasons are only needed when no
        # node fits, and then every node was looked at anyway: a second pass asks the filters themselves, so
        # the words come from one place. test_scheduler checks that the two agree.
        cpu, mem, ports = info.cpu, info.memory, info.host_ports
        selector = tuple(info.node_selector.items())
        for node in ring:
            evaluated += 1
            if not node.ready or node.unschedulable or node.pod_count >= node.alloc_pods \
                    or (cpu and node.req_cpu + cpu > node.alloc_cpu) \
                    or (mem and node.req_memory + mem > node.alloc_memory):
                continue
            if selector:
                labels = node.labels
                if not all(labels.get(k) == v for k, v in selector):
                    continue
            if ports and node.host_ports and host_ports(info, node):
                continue
            feasible.append(node)
            if len(feasible) >= wanted:
                break
        if not feasible:
            for node in nodes:
                _fits(info, node, filters, reasons)
    else:
        for node in ring:
            evaluated += 1
            if _fits(info, node, filters, reasons):
                feasible.append(node)
                if len(feasible) >= wanted:
                    break
    if not feasible:
        return Decision(None, reasons, total, evaluated, 0)
    if len(feasible) == 1:
        return Decision(feasible[0].name, {}, total, evaluated, 1)
    scores = weighted_scores(info, feasible, weights)
    best = 0
    for i in range(1, len(feasible)):
        if scores[i] > scores[best] or (scores[i] == scores[best] and feasible[i].name < feasible[best].name):
            best = i
    return Decision(feasible[best].name, {}, total, evaluated, len(feasible))
