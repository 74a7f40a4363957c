"""Scores: how good is each feasible node for this pod? Each scorer is a pure function
``(pod, nodes) -> [score per node]`` with every score in 0..100 (higher is better); it sees all feasible
nodes at once so it can normalise (the spread score needs the largest count).

The default policy adds them with :data:`WEIGHTS` (Kubernetes' default weights: resource scores 1 each,
spreading 2). Requests here include Kubernetes' non-zero defaults for containers that request nothing
(see :mod:`scheduler.snapshot`), so best-effort pods spread too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scheduler.snapshot import NodeInfo, PodInfo

Scorer = Callable[[PodInfo, Sequence[NodeInfo]], list[float]]
MAX_SCORE = 100.0


def least_requested(pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[float]:
    """The mean share of cpu and memory left free after placing the pod: emptier nodes win.
    A node with nothing allocatable (or already full) scores 0 for that resource."""
    p_cpu, p_mem = pod.score_cpu, pod.score_memory
    out = []
    for n in nodes:
        a_cpu, a_mem = n.alloc_cpu, n.alloc_memory
        free_cpu = a_cpu - n.score_cpu - p_cpu
        free_mem = a_mem - n.score_memory - p_mem
        out.append(((free_cpu * MAX_SCORE / a_cpu if free_cpu > 0 else 0.0) +
                    (free_mem * MAX_SCORE / a_mem if free_mem > 0 else 0.0)) / 2)
    return out


def balanced_allocation(pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[float]:
    """``(1 - std(cpu fraction, memory fraction)) * 100`` after placing the pod: nodes whose cpu and memory
    fill up evenly win (for two resources the standard deviation is half their difference; fractions are
    capped at 1, and a resource with nothing allocatable counts as full)."""
    p_cpu, p_mem = pod.score_cpu, pod.score_memory
    out = []
    for n in nodes:
        a_cpu, a_mem = n.alloc_cpu, n.alloc_memory
        cpu = (n.score_cpu + p_cpu) / a_cpu if a_cpu > 0 else 1.0
        mem = (n.score_memory + p_mem) / a_mem if a_mem > 0 else 1.0
        if cpu > 1.0:
            cpu = 1.0
        if mem > 1.0:
            mem = 1.0
        out.append((1.0 - abs(cpu - mem) / 2) * MAX_SCORE)
    return out


def owner_spread(pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[float]:
    """Fewer pods of the same controller (``ownerReferences[controller].uid``) on a node score higher:
    ``100 * (most - here) / most``; every node scores 100 when none has one (or the pod has no owner)."""
    if not pod.owner_uid:
        return [MAX_SCORE] * len(nodes)
    counts = [n.owners.get(pod.owner_uid, 0) for n in nodes]
    most = max(counts, default=0)
    if most == 0:
        return [MAX_SCORE] * len(nodes)
    return [(most - c) * MAX_SCORE / most for c in counts]


SCORERS: dict[str, Scorer] = {
    "least_requested": least_requested,
    "balanced_allocation": balanced_allocation,
    "owner_spread": owner_spread,
}
WEIGHTS: dict[str, float] = {"least_requested": 1.0, "balanced_allocation": 1.0, "owner_spread": 2.0}


def weighted_scores(pod: PodInfo, nodes: Sequence[NodeInfo],
                    weights: dict[str, float] | None = None) -> list[float]:
    """The weighted sum of every scorer named in ``weights`` (default :data:`WEIGHTS`), per node."""
    total = [0.0] * len(nodes)
    for name, weight in (weights or WEIGHTS).items():
        if not weight:
            continue
        for i, s in enumerate(SCORERS[name](pod, nodes)):
            total[i] += weight * s
    return total
