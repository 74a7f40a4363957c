"""Test helpers (as nomad's ``scheduler/testing.go``): object builders and a harness that records the
scheduler's writes as a plan instead of sending them. Used by unit tests and the benchmark; never by
the daemon.

::

    h = Harness(SchedulerConfig(policy="default"))
    h.add_node(make_node("n1", cpu="2", memory="4Gi"))
    h.add_pod(make_pod("web", cpu="500m"))
    await h.drain()
    h.client.actions  →  [("bind", "default/web", "n1"), ("event", "default/web", "Scheduled", "...")]
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

from minik8s.api.registry import ResourceType
from minik8s.errors import ApiError, NotFound
from scheduler.scheduler import Scheduler, SchedulerConfig
from scheduler.snapshot import pod_key

Obj = dict[str, Any]
Action = tuple[Any, ...]


def make_node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: int = 110, ready: bool = True,
              unschedulable: bool = False, labels: dict[str, str] | None = None) -> Obj:
    """A Node object as the kubelet registers it (allocatable = capacity here)."""
    alloc = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})},
                         "resourceVersion": "1"},
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"capacity": dict(alloc), "allocatable": alloc,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "reason": "KubeletReady" if ready else "KubeletNotReady"}]}}


def make_pod(name: str, *, namespace: str = "default", cpu: str | None = None, memory: str | None = None,
             limits_only: bool = False, node: str = "", node_selector: dict[str, str] | None = None,
             host_port: int = 0, owner_uid: str = "", containers: int = 1, init: dict[str, str] | None = None,
             phase: str = "Pending") -> Obj:
    """A Pod with ``containers`` identical containers each requesting ``cpu``/``memory`` (as limits only when
    ``limits_only``), optionally bound to ``node``, owned by controller ``owner_uid``, with a hostPort."""
    res: dict[str, str] = {}
    if cpu:
        res["cpu"] = cpu
    if memory:
        res["memory"] = memory
    cs = []
    for i in range(containers):
        c: Obj = {"name": f"c{i}", "image": "busybox", "resources": {("limits" if limits_only else "requests"): res}}
        if host_port and i == 0:
            c["ports"] = [{"containerPort": 80, "hostPort": host_port, "protocol": "TCP"}]
        cs.append(c)
    spec: Obj = {"containers": cs, "schedulerName": "default-scheduler"}
    if init:
        spec["initContainers"] = [{"name": "init", "image": "busybox", "resources": {"requests": dict(init)}}]
    if node:
        spec["nodeName"] = node
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    meta: Obj = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "1"}
    if owner_uid:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                    "uid": owner_uid, "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": phase}}


class RecordingClient:
    """A fake ``AsyncApiClient`` for the scheduler: lists/watches nothing, records every write in
    :attr:`actions`. ``fail_binds`` maps a pod key to the error its binding raises."""

    def __init__(self) -> None:
        self.actions: list[Action] = []
        self.statuses: dict[str, Obj] = {}
        self.fail_binds: dict[str, ApiError] = {}
        self.objects: dict[str, Obj] = {}

    async def list(self, rt: ResourceType, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> tuple[list[Obj], str]:
        return [], "1"

    async def watch(self, rt: ResourceType, namespace: str | None = None, *, resource_version: str | None = None,
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None, table: bool = False) -> AsyncIterator[tuple[str, Obj]]:
        await asyncio.Event().wait()
        yield "BOOKMARK", {}

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, body: Any = None) -> Any:
        assert method == "POST" and path.endswith("/binding"), (method, path)
        key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
        if key in self.fail_binds:
            self.actions.append(("bind-failed", key, body["target"]["name"]))
            raise self.fail_binds[key]
        self.actions.append(("bind", key, body["target"]["name"]))
        return {"kind": "Status", "status": "Success"}

    async def replace_status(self, obj: Obj) -> Obj:
        key = pod_key(obj)
        cond = next(c for c in obj["status"]["conditions"] if c["type"] == "PodScheduled")
        self.actions.append(("status", key, cond["status"], cond.get("reason", ""), cond.get("message", "")))
        self.statuses[key] = obj
        return obj

    async def create(self, obj: Obj, *, namespace: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> Obj:
        inv = obj["involvedObject"]
        self.actions.append(("event", f"{inv['namespace']}/{inv['name']}", obj["reason"], obj["message"]))
        return obj

    async def get(self, rt: Any, name: str, namespace: str | None = None) -> Obj:
        key = f"{namespace}/{name}"
        if key in self.statuses:
            return copy.deepcopy(self.statuses[key])
        if key in self.objects:
            return copy.deepcopy(self.objects[key])
        raise NotFound(f'pods "{name}" not found')

    def of(self, kind: str) -> builtins.list[Action]:
        """The recorded actions of one kind ("bind", "status", "event", "bind-failed")."""
        return [a for a in self.actions if a[0] == kind]


class Harness:
    """A :class:`Scheduler` over a :class:`RecordingClient`, fed by hand instead of by watches.

    ``add_*``/``update_*``/``delete_*`` put objects into the informers' caches and call the handlers as the
    informers would; :meth:`drain` runs the queue until it is empty and every binding finished.
    """

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.client = RecordingClient()
        self.scheduler = Scheduler(self.client, config or SchedulerConfig(percentage_of_nodes_to_score=100))

    def add_node(self, node: Obj) -> None:
        old = self.scheduler.nodes.indexer.put(node)
        if old is None:
            self.scheduler._node_added(node)
        else:
            self.scheduler._node_updated(old, node)

    def delete_node(self, name: str) -> None:
        old = self.scheduler.nodes.indexer.remove(name)
        if old is not None:
            self.scheduler._node_deleted(old)

    def add_pod(self, pod: Obj) -> None:
        self.client.objects[pod_key(pod)] = pod
        old = self.scheduler.pods.indexer.put(pod)
        if old is None:
            self.scheduler._pod_added(pod)
        else:
            self.scheduler._pod_updated(old, pod)

    def delete_pod(self, key: str) -> None:
        old = self.scheduler.pods.indexer.remove(key)
        if old is not None:
            self.scheduler._pod_deleted(old)

    def bind_seen(self, key: str, node: str) -> None:
        """The informer sees the binding of ``key`` (as the watch would after a successful bind)."""
        pod = copy.deepcopy(self.scheduler.pods.indexer.get(key))
        assert pod is not None, key
        pod["spec"]["nodeName"] = node
        self.add_pod(pod)

    async def drain(self, *, confirm: bool = True, timeout: float = 10.0) -> None:
        """Process queued keys until none is left and no binding is in flight. ``confirm`` feeds every
        successful binding back as the informer would."""
        queue, sched = self.scheduler.queue, self.scheduler
        async with asyncio.timeout(timeout):
            while True:
                while len(queue):
                    key = await queue.get()
                    try:
                        await sched.sync(key)
                    finally:
                        queue.done(key)
                if sched._binding:
                    await asyncio.gather(*list(sched._binding), return_exceptions=True)
                await sched.flush_events()
                if confirm:
                    for _, key, node in self.client.of("bind"):
                        pod = sched.pods.indexer.get(key)
                        if pod is not None and not pod["spec"].get("nodeName"):
                            self.bind_seen(key, node)
                if not len(queue) and not sched._binding:
                    return

    def placements(self) -> dict[str, str]:
        """pod key → node of every successful binding so far."""
        return {key: node for _, key, node in self.client.of("bind")}


__all__ = ["Harness", "RecordingClient", "make_node", "make_pod"]
