"""The pure scheduler: snapshot accounting, each filter, each score, both policies, over many nodes."""

from __future__ import annotations

import pytest

from scheduler import filters, scores
from scheduler.schedule import NO_NODES, nodes_to_find, schedule
from scheduler.snapshot import (
    DEFAULT_MEMORY_REQUEST,
    DEFAULT_MILLI_CPU_REQUEST,
    NodeInfo,
    PodInfo,
    SchedulerCache,
    Snapshot,
)
from scheduler.testing import make_node, make_pod

pytestmark = pytest.mark.timeout(30)
GI = 1024 ** 3


def snap(*nodes: dict, pods: tuple[dict, ...] = ()) -> Snapshot:
    cache = SchedulerCache()
    for n in nodes:
        cache.set_node(n)
    for p in pods:
        cache.add_pod(p)
    return cache.snapshot()


# --- PodInfo / NodeInfo ---------------------------------------------------------------------------

def test_pod_requests_sum_containers_and_take_the_largest_init_container() -> None:
    info = PodInfo.of(make_pod("p", cpu="250m", memory="64Mi", containers=2, init={"cpu": "1", "memory": "1Mi"}))
    assert info.cpu == 1000  # the init container (1 cpu) outweighs 2 x 250m
    assert info.memory == 128 * 1024 * 1024  # 2 x 64Mi outweighs the init container's 1Mi


def test_a_container_with_only_limits_requests_its_limits() -> None:
    info = PodInfo.of(make_pod("p", cpu="1500m", memory="1Gi", limits_only=True))
    assert (info.cpu, info.memory) == (1500, GI)


def test_best_effort_pods_request_nothing_but_score_with_kubernetes_defaults() -> None:
    info = PodInfo.of(make_pod("p"))
    assert (info.cpu, info.memory) == (0, 0)
    assert (info.score_cpu, info.score_memory) == (DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST)


def test_fractional_quantities_round_up() -> None:
    info = PodInfo.of(make_pod("p", cpu="0.0001", memory="1.5"))
    assert (info.cpu, info.memory) == (1, 2)


def test_node_info_counts_bound_pods_but_not_finished_ones() -> None:
    s = snap(make_node("n1", cpu="2"), pods=(make_pod("a", cpu="500m", node="n1"),
                                             make_pod("b", cpu="500m", node="n1", phase="Succeeded"),
                                             make_pod("c", cpu="1", node="n1", host_port=8080, owner_uid="rs1")))
    n = s.get("n1")
    assert n is not None
    assert (n.req_cpu, n.pod_count, n.alloc_cpu) == (1500, 2, 2000)
    assert n.host_ports == frozenset({("TCP", "0.0.0.0", 8080)})
    assert dict(n.owners) == {"rs1": 1}


def test_node_without_allocatable_uses_capacity_and_default_pods() -> None:
    node = make_node("n1")
    del node["status"]["allocatable"]
    del node["status"]["capacity"]["pods"]
    n = NodeInfo.of(node)
    assert (n.alloc_cpu, n.alloc_memory, n.alloc_pods) == (4000, 8 * GI, 110)


# --- the assume cache ----------------------------------------------------------------------------

def test_assume_counts_at_once_and_forget_undoes_it() -> None:
    cache = SchedulerCache()
    cache.set_node(make_node("n1", cpu="1"))
    before = cache.snapshot()
    info = PodInfo.of(make_pod("p", cpu="600m"))
    cache.assume(info, "n1")
    after = cache.snapshot()
    assert before.get("n1").req_cpu == 0  # type: ignore[union-attr]  # old snapshots never change
    assert after.get("n1").req_cpu == 600  # type: ignore[union-attr]
    assert schedule(make_pod("q", cpu="600m"), after).node is None
    cache.forget(info.key)
    assert cache.snapshot().get("n1").req_cpu == 0  # type: ignore[union-attr]


def test_the_informer_confirms_an_assumed_pod_and_forget_then_keeps_it() -> None:
    cache = SchedulerCache()
    cache.set_node(make_node("n1"))
    pod = make_pod("p", cpu="1")
    cache.assume(PodInfo.of(pod), "n1")
    bound = make_pod("p", cpu="1", node="n1")
    cache.add_pod(bound)
    assert not cache.is_assumed("default/p")
    cache.forget("default/p")  # a late failure report must not drop a pod the API says is bound
    assert cache.snapshot().get("n1").req_cpu == 1000  # type: ignore[union-attr]
    cache.remove_pod("default/p")
    assert cache.snapshot().get("n1").req_cpu == 0  # type: ignore[union-attr]


def test_unchanged_cache_returns_the_same_snapshot_and_shares_unchanged_nodes() -> None:
    cache = SchedulerCache()
    for i in range(3):
        cache.set_node(make_node(f"n{i}"))
    s1 = cache.snapshot()
    assert cache.snapshot() is s1
    cache.assume(PodInfo.of(make_pod("p", cpu="1")), "n1")
    s2 = cache.snapshot()
    assert s2.get("n0") is s1.get("n0") and s2.get("n1") is not s1.get("n1")
    assert s2.last_bound == "n1"
    cache.remove_node("n2")
    assert [n.name for n in cache.snapshot().nodes] == ["n0", "n1"]


# --- filters -------------------------------------------------------------------------------------

def _node(**kw: object) -> NodeInfo:
    return NodeInfo.of(make_node("n", **kw))  # type: ignore[arg-type]


def test_filter_node_ready_and_unschedulable() -> None:
    pod = PodInfo.of(make_pod("p"))
    assert filters.node_ready(pod, _node()) == ()
    assert filters.node_ready(pod, _node(ready=False)) == (filters.NOT_READY,)
    assert filters.node_ready(pod, _node(unschedulable=True)) == (filters.UNSCHEDULABLE,)


def test_filter_resources_names_every_short_resource() -> None:
    node = _node(cpu="1", memory="1Gi", pods=1)
    assert filters.resources_fit(PodInfo.of(make_pod("p", cpu="1", memory="1Gi")), node) == ()
    assert filters.resources_fit(PodInfo.of(make_pod("p", cpu="1001m", memory="2Gi")), node) == \
        (filters.INSUFFICIENT_CPU, filters.INSUFFICIENT_MEMORY)
    full = node.with_pods([PodInfo.of(make_pod("x"))])
    assert filters.resources_fit(PodInfo.of(make_pod("p")), full) == (filters.TOO_MANY_PODS,)


def test_filter_resources_ignores_what_the_pod_does_not_request() -> None:
    node = _node(cpu="1").with_pods([PodInfo.of(make_pod("x", cpu="1"))])
    assert filters.resources_fit(PodInfo.of(make_pod("p", memory="1Mi")), node) == ()


def test_filter_node_selector() -> None:
    node = _node(labels={"disk": "ssd", "zone": "a"})
    assert filters.node_selector(PodInfo.of(make_pod("p", node_selector={"disk": "ssd"})), node) == ()
    assert filters.node_selector(PodInfo.of(make_pod("p", node_selector={"disk": "hdd"})), node) == \
        (filters.SELECTOR_MISMATCH,)
    assert filters.node_selector(PodInfo.of(make_pod("p", node_selector={"gpu": "yes"})), node) == \
        (filters.SELECTOR_MISMATCH,)


@pytest.mark.parametrize(("used", "wanted", "conflict"), [
    (("TCP", "0.0.0.0", 80), ("TCP", "0.0.0.0", 80), True),
    (("TCP", "0.0.0.0", 80), ("UDP", "0.0.0.0", 80), False),
    (("TCP", "0.0.0.0", 80), ("TCP", "0.0.0.0", 81), False),
    (("TCP", "10.0.0.1", 80), ("TCP", "10.0.0.2", 80), False),
    (("TCP", "10.0.0.1", 80), ("TCP", "0.0.0.0", 80), True),
    (("TCP", "0.0.0.0", 80), ("TCP", "10.0.0.2", 80), True),
])
def test_filter_host_ports(used: tuple[str, str, int], wanted: tuple[str, str, int], conflict: bool) -> None:
    def with_port(name: str, port: tuple[str, str, int]) -> PodInfo:
        pod = make_pod(name)
        pod["spec"]["containers"][0]["ports"] = [{"containerPort": 1, "protocol": port[0], "hostIP": port[1],
                                                  "hostPort": port[2]}]
        return PodInfo.of(pod)

    node = _node().with_pods([with_port("x", used)])
    assert filters.host_ports(with_port("p", wanted), node) == ((filters.PORTS_TAKEN,) if conflict else ())


# --- scores --------------------------------------------------------------------------------------

def test_least_requested_prefers_emptier_nodes() -> None:
    pod = PodInfo.of(make_pod("p", cpu="1", memory="1Gi"))
    empty = _node(cpu="4", memory="4Gi")
    busy = empty.with_pods([PodInfo.of(make_pod("x", cpu="2", memory="2Gi"))])
    s_empty, s_busy = scores.least_requested(pod, [empty, busy])
    assert s_empty == pytest.approx(75.0)
    assert s_busy == pytest.approx(25.0)


def test_balanced_allocation_prefers_even_use() -> None:
    pod = PodInfo.of(make_pod("p", cpu="1", memory="1Gi"))
    even = _node(cpu="4", memory="4Gi")
    lopsided = _node(cpu="4", memory="4Gi").with_pods([PodInfo.of(make_pod("x", cpu="2", memory="1Mi"))])
    s_even, s_lop = scores.balanced_allocation(pod, [even, lopsided])
    assert s_even == pytest.approx(100.0)
    assert s_lop < s_even


def test_owner_spread_normalises_by_the_most_crowded_node() -> None:
    pod = PodInfo.of(make_pod("p", owner_uid="rs1"))
    base = _node()
    two = base.with_pods([PodInfo.of(make_pod(f"x{i}", owner_uid="rs1")) for i in range(2)])
    one = base.with_pods([PodInfo.of(make_pod("y", owner_uid="rs1")), PodInfo.of(make_pod("z", owner_uid="rs2"))])
    assert scores.owner_spread(pod, [base, one, two]) == [100.0, 50.0, 0.0]
    assert scores.owner_spread(PodInfo.of(make_pod("q")), [base, two]) == [100.0, 100.0]


def test_weighted_scores_add_weights() -> None:
    pod = PodInfo.of(make_pod("p", cpu="1", memory="1Gi"))
    node = _node(cpu="4", memory="4Gi")
    assert scores.weighted_scores(pod, [node], {"least_requested": 2.0}) == [pytest.approx(150.0)]
    assert scores.weighted_scores(pod, [node])[0] == pytest.approx(75.0 + 100.0 + 200.0)


# --- schedule() ----------------------------------------------------------------------------------

def test_no_nodes() -> None:
    d = schedule(make_pod("p"), Snapshot())
    assert d.node is None and d.message == NO_NODES


def test_the_message_counts_reasons_like_kubernetes() -> None:
    s = snap(make_node("a", cpu="1"), make_node("b", ready=False), make_node("c", cpu="1", labels={"disk": "ssd"}),
             make_node("d", cpu="1", memory="1Mi"))
    d = schedule(make_pod("p", cpu="2", memory="1Gi", node_selector={"disk": "ssd"}), s)
    assert d.node is None
    assert d.message == ("0/4 nodes are available: 1 Insufficient cpu, 1 node(s) were not ready, "
                         "2 node(s) didn't match Pod's node affinity/selector.")
    d = schedule(make_pod("p", cpu="2", memory="1Gi"), snap(make_node("d", cpu="1", memory="1Mi")))
    assert d.message == "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."


def test_default_policy_prefers_the_emptier_node_and_breaks_ties_by_name() -> None:
    s = snap(make_node("b"), make_node("a"), make_node("c"), pods=(make_pod("x", cpu="2", node="a"),))
    assert schedule(make_pod("p", cpu="1"), s).node == "b"
    assert schedule(make_pod("p", cpu="1"), snap(make_node("z"), make_node("y"), make_node("x"))).node == "x"


def test_default_policy_spreads_pods_of_one_owner() -> None:
    # n1 is emptier, but already runs a pod of the same ReplicaSet: spreading (weight 2) wins.
    s = snap(make_node("n1", cpu="8", memory="16Gi"), make_node("n2"),
             pods=(make_pod("x", node="n1", owner_uid="rs1"), make_pod("y", node="n2", cpu="100m")))
    assert schedule(make_pod("p", owner_uid="rs1"), s).node == "n2"
    assert schedule(make_pod("p", owner_uid="other"), s).node == "n1"


def test_round_robin_goes_round_in_name_order_skipping_nodes_that_do_not_fit() -> None:
    cache = SchedulerCache()
    for name in ("n3", "n1", "n2", "n4"):
        cache.set_node(make_node(name, ready=name != "n3"))
    chosen = []
    for i in range(6):
        info = PodInfo.of(make_pod(f"p{i}"))
        d = schedule(info, cache.snapshot(), policy="round-robin")
        assert d.node is not None
        cache.assume(info, d.node)
        chosen.append(d.node)
    assert chosen == ["n1", "n2", "n4", "n1", "n2", "n4"]


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown scheduling policy"):
        schedule(make_pod("p"), snap(make_node("a")), policy="random")


def test_schedule_never_changes_the_snapshot() -> None:
    s = snap(*(make_node(f"n{i}") for i in range(5)))
    before = [(n.name, n.req_cpu, n.pod_count) for n in s.nodes]
    for policy in ("default", "round-robin"):
        schedule(make_pod("p", cpu="1"), s, policy=policy)
    assert [(n.name, n.req_cpu, n.pod_count) for n in s.nodes] == before


def test_many_pods_on_many_nodes_never_overcommit_and_fill_evenly() -> None:
    cache = SchedulerCache()
    for i in range(200):
        cache.set_node(make_node(f"node-{i:03d}", cpu="2", memory="4Gi", labels={"zone": f"z{i % 4}"}))
    placed: dict[str, int] = {}
    for i in range(1000):
        info = PodInfo.of(make_pod(f"p{i}", cpu="400m", memory="256Mi", owner_uid=f"rs{i % 10}",
                                   node_selector={"zone": f"z{i % 2}"} if i % 5 == 0 else None))
        d = schedule(info, cache.snapshot())
        assert d.node is not None, d.message
        cache.assume(info, d.node)
        placed[d.node] = placed.get(d.node, 0) + 1
    assert max(placed.values()) <= 5  # 5 x 400m = 2 cpus: full, never more
    assert len(placed) == 200
    extra = schedule(make_pod("one-too-many", cpu="400m"), cache.snapshot())
    assert extra.node is None and extra.message == "0/200 nodes are available: 200 Insufficient cpu."


def test_node_sampling_stops_early_but_never_misses_the_only_fit() -> None:
    nodes = [make_node(f"n{i:04d}", cpu="1") for i in range(1000)]
    nodes.append(make_node("zz-big", cpu="64"))
    s = snap(*nodes)
    assert nodes_to_find(1001, 0) == 1001 * 42 // 100
    assert nodes_to_find(50, 10) == 50 and nodes_to_find(1000, 100) == 1000
    d = schedule(make_pod("small", cpu="100m"), s, percentage_of_nodes_to_score=10)
    assert d.node is not None and d.evaluated == d.feasible == 100
    d = schedule(make_pod("big", cpu="8"), s, percentage_of_nodes_to_score=10)
    assert d.node == "zz-big" and d.evaluated == 1001


def test_the_inlined_filters_agree_with_the_filter_functions() -> None:
    import random

    rng = random.Random(7)
    nodes = [make_node(f"n{i:02d}", cpu=rng.choice(["1", "2", "4"]), memory=rng.choice(["1Gi", "4Gi"]),
                       pods=rng.choice([1, 3, 110]), ready=rng.random() > 0.2, unschedulable=rng.random() < 0.1,
                       labels={"zone": rng.choice("ab")}) for i in range(40)]
    bound = tuple(make_pod(f"b{i}", cpu=rng.choice(["500m", "1"]), node=f"n{rng.randrange(40):02d}",
                           host_port=rng.choice([0, 80])) for i in range(60))
    s = snap(*nodes, pods=bound)
    for i in range(200):
        pod = make_pod(f"p{i}", cpu=rng.choice([None, "500m", "3"]), memory=rng.choice([None, "2Gi"]),
                       host_port=rng.choice([0, 0, 80]), node_selector=rng.choice([None, {"zone": "a"}]))
        for pct in (100, 10):
            fast = schedule(pod, s, percentage_of_nodes_to_score=pct)
            slow = schedule(pod, s, percentage_of_nodes_to_score=pct, filters=tuple(filters.FILTERS))
            assert fast == slow
