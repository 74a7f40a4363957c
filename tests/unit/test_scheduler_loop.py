"""The scheduler loop over a recording fake client: which bindings, status writes and Events it makes."""

from __future__ import annotations

import asyncio

import pytest

from minik8s.errors import Conflict, ServiceUnavailable
from scheduler.scheduler import SchedulerConfig
from scheduler.testing import Harness, make_node, make_pod

pytestmark = pytest.mark.timeout(30)

INSUFFICIENT = "0/1 nodes are available: 1 Insufficient cpu."


async def test_binds_and_reports_scheduled() -> None:
    h = Harness()
    h.add_node(make_node("n1"))
    h.add_pod(make_pod("web", cpu="500m"))
    await h.drain()
    assert h.client.actions == [("bind", "default/web", "n1"),
                                ("event", "default/web", "Scheduled", "Successfully assigned default/web to n1")]


async def test_a_burst_does_not_overcommit_before_the_informer_catches_up() -> None:
    h = Harness()
    h.add_node(make_node("n1", cpu="1"))
    h.add_node(make_node("n2", cpu="1"))
    for i in range(5):
        h.add_pod(make_pod(f"p{i}", cpu="500m"))
    await h.drain(confirm=False)  # no binding is seen by the informer: only assumptions count
    placed = h.placements()
    assert len(placed) == 4
    assert sorted(placed.values()) == ["n1", "n1", "n2", "n2"]
    assert ("status", "default/p4", "False", "Unschedulable",
            "0/2 nodes are available: 2 Insufficient cpu.") in h.client.actions


async def test_unschedulable_sets_the_condition_once_and_records_an_event_each_try() -> None:
    h = Harness()
    h.add_node(make_node("n1", cpu="1"))
    h.add_pod(make_pod("big", cpu="2"))
    await h.drain()
    assert h.client.actions == [("status", "default/big", "False", "Unschedulable", INSUFFICIENT),
                                ("event", "default/big", "FailedScheduling", INSUFFICIENT)]
    assert h.scheduler.unschedulable == {"default/big"}
    # Our status write comes back through the informer: that alone is no reason to try again.
    h.add_pod(h.client.statuses["default/big"])
    await h.drain()
    assert len(h.client.actions) == 2
    # A try that changes nothing writes no status, only the event (the apiserver folds repeats).
    h.scheduler.queue.add("default/big")
    await h.drain()
    assert h.client.of("status") == [("status", "default/big", "False", "Unschedulable", INSUFFICIENT)]
    assert len(h.client.of("event")) == 2


async def test_a_pod_deleted_frees_capacity_for_an_unschedulable_pod() -> None:
    h = Harness()
    h.add_node(make_node("n1", cpu="1"))
    h.add_pod(make_pod("a", cpu="1", node="n1"))
    h.add_pod(make_pod("b", cpu="1"))
    await h.drain()
    assert h.client.of("bind") == []
    h.add_pod(h.client.statuses["default/b"])
    h.delete_pod("default/a")
    await h.drain()
    assert h.placements() == {"default/b": "n1"}
    # The apiserver's binding turns PodScheduled True; the scheduler writes no status for it.
    assert [s[:3] for s in h.client.of("status")] == [("status", "default/b", "False")]


async def test_a_finished_pod_frees_capacity_too() -> None:
    h = Harness()
    h.add_node(make_node("n1", cpu="1"))
    h.add_pod(make_pod("a", cpu="1", node="n1"))
    h.add_pod(make_pod("b", cpu="1"))
    await h.drain()
    h.add_pod(make_pod("a", cpu="1", node="n1", phase="Succeeded"))
    await h.drain()
    assert h.placements() == {"default/b": "n1"}


async def test_a_new_node_gets_the_pending_pod_and_heartbeats_do_not_retry() -> None:
    h = Harness()
    h.add_node(make_node("n1", labels={"disk": "hdd"}))
    h.add_pod(make_pod("p", node_selector={"disk": "ssd"}))
    await h.drain()
    assert h.client.of("status")[0][4] == \
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    heartbeat = make_node("n1", labels={"disk": "hdd"})
    heartbeat["status"]["conditions"][0]["lastHeartbeatTime"] = "2030-01-01T00:00:00Z"
    h.add_node(heartbeat)
    assert len(h.scheduler.queue) == 0
    h.add_node(make_node("n2", labels={"disk": "ssd"}))
    await h.drain()
    assert h.placements() == {"default/p": "n2"}


async def test_a_node_turning_ready_retries() -> None:
    h = Harness()
    h.add_node(make_node("n1", ready=False))
    h.add_pod(make_pod("p"))
    await h.drain()
    assert h.client.of("bind") == []
    h.add_node(make_node("n1"))
    await h.drain()
    assert h.placements() == {"default/p": "n1"}


async def test_a_conflicting_binding_forgets_the_assumption() -> None:
    h = Harness()
    h.add_node(make_node("n1", cpu="1"))
    h.client.fail_binds["default/p"] = Conflict('pod p is already assigned to node "n9"')
    h.add_pod(make_pod("p", cpu="1"))
    await h.drain()
    assert h.client.of("bind-failed") == [("bind-failed", "default/p", "n1")]
    assert not h.scheduler.cache.is_assumed("default/p")
    assert h.scheduler.cache.snapshot().get("n1").req_cpu == 0  # type: ignore[union-attr]
    assert len(h.scheduler.queue) == 0  # a conflict is not retried: the informer brings the truth


async def test_a_failed_binding_is_retried() -> None:
    h = Harness()
    h.add_node(make_node("n1"))
    h.client.fail_binds["default/p"] = ServiceUnavailable("etcd is down")
    h.add_pod(make_pod("p"))
    await h.drain()
    assert h.client.of("bind") == []
    del h.client.fail_binds["default/p"]
    await asyncio.sleep(0.05)  # the rate-limited requeue (5 ms the first time)
    await h.drain()
    assert h.placements() == {"default/p": "n1"}


async def test_other_schedulers_pods_terminating_pods_and_bound_pods_are_left_alone() -> None:
    h = Harness()
    h.add_node(make_node("n1"))
    other = make_pod("other")
    other["spec"]["schedulerName"] = "my-scheduler"
    dying = make_pod("dying")
    dying["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    for pod in (other, dying, make_pod("bound", node="n1")):
        h.add_pod(pod)
    await h.drain()
    assert h.client.actions == []


async def test_round_robin_policy_in_the_loop() -> None:
    h = Harness(SchedulerConfig(policy="round-robin"))
    for name in ("a", "b", "c"):
        h.add_node(make_node(name))
    for i in range(4):
        h.add_pod(make_pod(f"p{i}"))
    await h.drain()
    assert [a[2] for a in h.client.of("bind")] == ["a", "b", "c", "a"]


async def test_periodic_retry_requeues_after_the_retry_period() -> None:
    h = Harness(SchedulerConfig(retry_period=0.05, percentage_of_nodes_to_score=100))
    h.add_node(make_node("n1", cpu="1"))
    h.add_pod(make_pod("big", cpu="2"))
    await h.drain()
    assert len(h.scheduler.queue) == 0
    await asyncio.sleep(0.2)
    assert len(h.scheduler.queue) == 1


def test_config_rejects_an_unknown_policy() -> None:
    with pytest.raises(ValueError, match="round-robin"):
        SchedulerConfig(policy="best")


def test_main_help_names_the_policies() -> None:
    from click.testing import CliRunner

    from scheduler.main import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "round-robin" in result.output and "--retry-period" in result.output


async def test_events_are_best_effort_and_never_hold_up_bindings() -> None:
    h = Harness(SchedulerConfig(event_queue_size=1, percentage_of_nodes_to_score=100))
    h.add_node(make_node("n1"))
    for i in range(3):
        h.add_pod(make_pod(f"p{i}"))
    await h.drain()
    assert len(h.client.of("bind")) == 3
    assert len(h.client.of("event")) == 1 and h.scheduler.events_dropped == 2
