"""Unit tests of the controllers, sample-controller style: preload caches, call sync once, compare actions."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from controllers.base import Expectations, InformerFactory
from controllers.endpoints import EndpointsController, compute_subsets
from controllers.garbagecollector import GarbageCollector
from controllers.manager import enabled
from controllers.replicaset import ReplicaSetController, deletion_rank
from controllers.testing import RecordingClient, feed

pytestmark = pytest.mark.timeout(30)
Obj = dict[str, Any]


def pod(name: str, *, labels: dict[str, str] | None = None, ip: str = "", ready: bool | None = None,
        node: str = "", owner: Obj | None = None, created: str = "2024-01-01T00:00:00Z", phase: str = "Running",
        ports: list[Obj] | None = None, terminating: bool = False) -> Obj:
    meta: Obj = {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), "labels": labels or {"app": "web"},
                 "creationTimestamp": created, "resourceVersion": "1"}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                                    "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                    "controller": True, "blockOwnerDeletion": True}]
    if terminating:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    status: Obj = {"phase": phase}
    if ip:
        status["podIP"] = ip
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                 "lastTransitionTime": "2024-01-01T00:00:00Z"}]
    spec: Obj = {"containers": [{"name": "c", "image": "x", "ports": ports or []}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def replicaset(name: str = "web", replicas: int = 3) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), "generation": 1,
                         "resourceVersion": "1"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}}


def service(name: str = "web", target: Any = 8080) -> Obj:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "uid": "svc-uid", "resourceVersion": "1"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": target,
                                                            "protocol": "TCP"}]}}


# --- Expectations ---------------------------------------------------------------------------------

def test_expectations_satisfied_when_observed_or_expired() -> None:
    t = [0.0]
    e = Expectations(clock=lambda: t[0])
    assert e.satisfied("a")
    e.expect_creations("a", 2)
    assert not e.satisfied("a")
    e.creation_observed("a")
    assert not e.satisfied("a")
    e.creation_observed("a")
    assert e.satisfied("a")
    e.expect_deletions("a", ["ns/p1"])
    assert not e.satisfied("a")
    t[0] = 301.0
    assert e.satisfied("a")  # expired after 5 minutes
    e.deletion_observed("a", "ns/p1")
    assert e.pending("a") == (0, 0)


def test_controllers_flag() -> None:
    assert enabled("endpoints", ("*",))
    assert not enabled("endpoints", ("*", "-endpoints"))
    assert enabled("replicaset", ("replicaset",))
    assert not enabled("replicaset", ("endpoints",))


# --- Endpoints --------------------------------------------------------------------------------------

def test_subsets_ready_not_ready_terminating_and_named_ports() -> None:
    pods = [pod("a", ip="10.0.0.2", ready=True, node="n1", ports=[{"name": "web", "containerPort": 9000}]),
            pod("b", ip="10.0.0.3", ready=False, ports=[{"name": "web", "containerPort": 9000}]),
            pod("c", ip="10.0.0.4", ready=True, terminating=True, ports=[{"name": "web", "containerPort": 9000}]),
            pod("d", ready=True, ports=[{"name": "web", "containerPort": 9000}]),
            pod("e", ip="10.0.0.5", ready=True, ports=[{"name": "web", "containerPort": 9001}])]
    subsets = compute_subsets(service(target="web"), pods)
    assert subsets == [
        {"addresses": [{"ip": "10.0.0.2", "nodeName": "n1",
                        "targetRef": {"kind": "Pod", "namespace": "default", "name": "a",
                                      "uid": pods[0]["metadata"]["uid"]}}],
         "notReadyAddresses": [{"ip": "10.0.0.3", "targetRef": {"kind": "Pod", "namespace": "default", "name": "b",
                                                                 "uid": pods[1]["metadata"]["uid"]}}],
         "ports": [{"name": "http", "port": 9000, "protocol": "TCP"}]},
        {"addresses": [{"ip": "10.0.0.5", "targetRef": {"kind": "Pod", "namespace": "default", "name": "e",
                                                         "uid": pods[4]["metadata"]["uid"]}}],
         "ports": [{"name": "http", "port": 9001, "protocol": "TCP"}]}]


async def test_endpoints_created_updated_only_when_changed_and_deleted() -> None:
    client, factory = RecordingClient(), InformerFactory()
    c = EndpointsController(client, factory)
    await feed(factory.informer("services"), "ADDED", service())
    await feed(factory.informer("pods"), "ADDED", pod("a", ip="10.0.0.2", ready=True))
    await feed(factory.informer("pods"), "ADDED", pod("x", ip="10.0.0.9", ready=True, labels={"app": "other"}))
    await c.sync("default/web")
    assert client.verbs() == [("create", "Endpoints", "default/web")]
    ep = client.actions[0][3]
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["10.0.0.2"]
    assert ep["subsets"][0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    ep["metadata"]["resourceVersion"] = "2"
    await feed(factory.informer("endpoints"), "ADDED", ep)
    client.actions.clear()
    await c.sync("default/web")
    assert client.actions == []  # nothing changed: no write
    await feed(factory.informer("pods"), "MODIFIED", pod("a", ip="10.0.0.2", ready=False))
    assert "default/web" in c.queue._dirty  # the readiness change queued the Service
    await c.sync("default/web")
    assert client.verbs() == [("update", "Endpoints", "default/web")]
    assert client.actions[0][3]["subsets"][0]["notReadyAddresses"][0]["ip"] == "10.0.0.2"
    client.actions.clear()
    await feed(factory.informer("services"), "DELETED", service())
    await c.sync("default/web")
    assert client.verbs() == [("delete", "endpoints", "default/web")]


# --- ReplicaSet -------------------------------------------------------------------------------------

async def test_replicaset_creates_missing_pods_once() -> None:
    client, factory = RecordingClient(), InformerFactory()
    c = ReplicaSetController(client, factory)
    rs = replicaset(replicas=3)
    await feed(factory.informer("replicasets"), "ADDED", rs)
    await feed(factory.informer("pods"), "ADDED", pod("web-1", owner=rs))
    await c.sync("default/web")
    creates = [a for a in client.actions if a[0] == "create"]
    assert len(creates) == 2
    body = creates[0][3]
    assert body["metadata"]["generateName"] == "web-"
    assert body["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    assert body["metadata"]["ownerReferences"][0]["controller"] is True
    client.actions.clear()
    await c.sync("default/web")  # creations not yet observed: no second batch (no overshoot)
    assert [a for a in client.actions if a[0] == "create"] == []


async def test_replicaset_scales_down_unscheduled_then_not_ready_then_newest() -> None:
    client, factory = RecordingClient(), InformerFactory()
    c = ReplicaSetController(client, factory)
    rs = replicaset(replicas=1)
    await feed(factory.informer("replicasets"), "ADDED", rs)
    for p in (pod("old-ready", owner=rs, node="n", ready=True, created="2024-01-01T00:00:00Z"),
              pod("new-ready", owner=rs, node="n", ready=True, created="2024-01-02T00:00:00Z"),
              pod("not-ready", owner=rs, node="n", ready=False),
              pod("unscheduled", owner=rs, phase="Pending")):
        await feed(factory.informer("pods"), "ADDED", p)
    await c.sync("default/web")
    deletes = [a[2] for a in client.actions if a[0] == "delete"]
    assert deletes == ["default/unscheduled", "default/not-ready", "default/new-ready"]


def test_deletion_rank_orders_newest_first_among_equals() -> None:
    a = pod("a", node="n", ready=True, created="2024-01-01T00:00:00Z")
    b = pod("b", node="n", ready=True, created="2024-01-03T00:00:00Z")
    assert sorted([a, b], key=deletion_rank)[0] is b


async def test_replicaset_adopts_orphans_and_releases_mismatched() -> None:
    client, factory = RecordingClient(), InformerFactory()
    c = ReplicaSetController(client, factory)
    rs = replicaset(replicas=1)
    await feed(factory.informer("replicasets"), "ADDED", rs)
    await feed(factory.informer("pods"), "ADDED", pod("orphan"))
    await feed(factory.informer("pods"), "ADDED", pod("relabeled", owner=rs, labels={"app": "debug"}))
    await c.sync("default/web")
    updates = {a[2]: a[3] for a in client.actions if a[0] == "update"}
    assert updates["default/orphan"]["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    assert updates["default/relabeled"]["metadata"]["ownerReferences"] == []
    assert [a for a in client.actions if a[0] in ("create", "delete")] == []


async def test_replicaset_status_written_only_when_changed() -> None:
    client, factory = RecordingClient(), InformerFactory()
    c = ReplicaSetController(client, factory)
    rs = replicaset(replicas=2)
    await feed(factory.informer("replicasets"), "ADDED", rs)
    await feed(factory.informer("pods"), "ADDED", pod("a", owner=rs, ready=True))
    await feed(factory.informer("pods"), "ADDED", pod("b", owner=rs, ready=False))
    await c.sync("default/web")
    (status,) = [a[3]["status"] for a in client.actions if a[0] == "update-status"]
    assert status == {"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 1, "availableReplicas": 1,
                      "observedGeneration": 1}
    rs2 = {**rs, "status": status, "metadata": {**rs["metadata"], "resourceVersion": "2"}}
    await feed(factory.informer("replicasets"), "MODIFIED", rs2)
    client.actions.clear()
    await c.sync("default/web")
    assert client.actions == []


async def test_replicaset_replaces_failed_pod() -> None:
    client, factory = RecordingClient(), InformerFactory()
    c = ReplicaSetController(client, factory)
    rs = replicaset(replicas=1)
    await feed(factory.informer("replicasets"), "ADDED", rs)
    await feed(factory.informer("pods"), "ADDED", pod("a", owner=rs, phase="Failed"))
    await c.sync("default/web")
    assert [a[0] for a in client.actions if a[0] == "create"] == ["create"]


# --- garbage collector ------------------------------------------------------------------------------

async def test_gc_deletes_dependents_of_a_missing_owner() -> None:
    client, factory = RecordingClient(), InformerFactory()
    gc = GarbageCollector(client, factory)
    rs = replicaset()
    p = pod("a", owner=rs)
    await feed(factory.informer("pods"), "ADDED", p)
    await gc.sync("pods|default/a")
    assert client.verbs() == [("get", "replicasets", "default/web"), ("delete", "pods", "default/a")]
    assert client.actions[-1][3] == "Background"


async def test_gc_keeps_dependents_of_a_live_owner() -> None:
    client, factory = RecordingClient(), InformerFactory()
    gc = GarbageCollector(client, factory)
    rs = replicaset()
    await feed(factory.informer("replicasets"), "ADDED", rs)
    await feed(factory.informer("pods"), "ADDED", pod("a", owner=rs))
    await gc.sync("pods|default/a")
    assert client.actions == []


async def test_gc_foreground_deletes_dependents_then_removes_finalizer() -> None:
    client, factory = RecordingClient(), InformerFactory()
    gc = GarbageCollector(client, factory)
    rs = replicaset()
    rs["metadata"].update(deletionTimestamp="2024-01-01T00:00:00Z", finalizers=["foregroundDeletion"])
    await feed(factory.informer("replicasets"), "ADDED", rs)
    a = pod("a", owner=rs)
    await feed(factory.informer("pods"), "ADDED", a)
    await gc.sync("replicasets|default/web")
    assert client.verbs() == [("delete", "pods", "default/a")]
    assert client.actions[0][3] == "Foreground"  # blockOwnerDeletion
    client.actions.clear()
    await feed(factory.informer("pods"), "DELETED", a)
    assert "replicasets|default/web" in gc.queue._dirty
    await gc.sync("replicasets|default/web")
    assert client.verbs() == [("update", "ReplicaSet", "default/web")]
    assert client.actions[0][3]["metadata"]["finalizers"] == []


async def test_gc_orphan_removes_owner_refs_then_finalizer() -> None:
    client, factory = RecordingClient(), InformerFactory()
    gc = GarbageCollector(client, factory)
    rs = replicaset()
    rs["metadata"].update(deletionTimestamp="2024-01-01T00:00:00Z", finalizers=["orphan"])
    await feed(factory.informer("replicasets"), "ADDED", rs)
    await feed(factory.informer("pods"), "ADDED", pod("a", owner=rs))
    await gc.sync("replicasets|default/web")
    assert client.verbs() == [("update", "Pod", "default/a"), ("update", "ReplicaSet", "default/web")]
    assert client.actions[0][3]["metadata"]["ownerReferences"] == []
    assert client.actions[1][3]["metadata"]["finalizers"] == []
