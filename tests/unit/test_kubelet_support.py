"""Fakes shared by the kubelet's unit tests (no tests here): a recording API client, pods, a clock.

``FakeApiClient`` keeps objects in memory, records every write as an ``Action`` and streams watch
events to informers, so a test can preload objects, drive the kubelet and compare the actions.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from minik8s.api.registry import ResourceType
from minik8s.errors import AlreadyExists, Conflict, NotFound

NODE = "node-1"


@dataclass(frozen=True)
class Action:
    verb: str  # create | update | patch | delete
    resource: str  # plural
    namespace: str | None
    name: str
    subresource: str = ""
    body: Any = None


def _key(plural: str, ns: str | None, name: str) -> tuple[str, str | None, str]:
    return plural, ns, name


def _plural(obj: dict[str, Any]) -> str:
    return {"Pod": "pods", "Node": "nodes", "Event": "events"}[obj["kind"]]


def _matches(obj: dict[str, Any], field_selector: str | None) -> bool:
    if not field_selector:
        return True
    for req in field_selector.split(","):
        path, _, value = req.partition("=")
        cur: Any = obj
        for part in path.split("."):
            cur = (cur or {}).get(part) if isinstance(cur, dict) else None
        if str(cur or "") != value:
            return False
    return True


class FakeApiClient:
    """The subset of ``AsyncApiClient`` the kubelet uses, in memory, recording writes in ``actions``."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.actions: list[Action] = []
        self._rv = itertools.count(100)
        self._watchers: list[tuple[str, str | None, asyncio.Queue[tuple[str, dict[str, Any]]]]] = []
        for obj in objects:
            self.put(obj)

    # -- test helpers ----------------------------------------------------------------------------

    def put(self, obj: dict[str, Any], event: str | None = None) -> dict[str, Any]:
        """Store ``obj`` as the server would (new resourceVersion) without recording an action."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("uid", str(uuid.uuid4()))
        key = _key(_plural(obj), meta.get("namespace"), meta["name"])
        existed = key in self.objects
        self.objects[key] = obj
        self._notify(event or ("MODIFIED" if existed else "ADDED"), obj)
        return copy.deepcopy(obj)

    def remove(self, plural: str, ns: str | None, name: str) -> None:
        obj = self.objects.pop(_key(plural, ns, name))
        self._notify("DELETED", obj)

    def obj(self, plural: str, ns: str | None, name: str) -> dict[str, Any] | None:
        found = self.objects.get(_key(plural, ns, name))
        return copy.deepcopy(found) if found else None

    def writes(self, resource: str | None = None, verb: str | None = None) -> list[Action]:
        return [a for a in self.actions if (resource is None or a.resource == resource)
                and (verb is None or a.verb == verb)]

    def _notify(self, etype: str, obj: dict[str, Any]) -> None:
        for plural, selector, q in self._watchers:
            if plural == _plural(obj) and _matches(obj, selector):
                q.put_nowait((etype, copy.deepcopy(obj)))

    def _get(self, plural: str, ns: str | None, name: str) -> dict[str, Any]:
        found = self.objects.get(_key(plural, ns, name))
        if found is None:
            raise NotFound(f'{plural} "{name}" not found', kind=plural, name=name)
        return found

    # -- AsyncApiClient --------------------------------------------------------------------------

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> dict[str, Any]:
        return copy.deepcopy(self._get(rt.plural, namespace if rt.namespaced else None, name))

    async def list(self, rt: ResourceType, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        items = [copy.deepcopy(o) for (p, ns, _), o in self.objects.items()
                 if p == rt.plural and (namespace is None or ns == namespace) and _matches(o, field_selector)]
        return items, str(next(self._rv))

    async def watch(self, rt: ResourceType, namespace: str | None = None, *, resource_version: str | None = None,
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None, table: bool = False) -> AsyncIterator[tuple[str, Any]]:
        q: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        entry = (rt.plural, field_selector, q)
        self._watchers.append(entry)
        try:
            while True:
                yield await q.get()
        finally:
            self._watchers.remove(entry)

    async def create(self, obj: dict[str, Any], *, namespace: str | None = None, **_: Any) -> dict[str, Any]:
        plural = _plural(obj)
        ns = None if plural == "nodes" else (obj.get("metadata", {}).get("namespace") or namespace or "default")
        obj = copy.deepcopy(obj)
        if ns:
            obj["metadata"]["namespace"] = ns
        self.actions.append(Action("create", plural, ns, obj["metadata"]["name"], body=copy.deepcopy(obj)))
        if _key(plural, ns, obj["metadata"]["name"]) in self.objects:
            raise AlreadyExists(f'{plural} "{obj["metadata"]["name"]}" already exists')
        return self.put(obj)

    async def _replace(self, obj: dict[str, Any], subresource: str) -> dict[str, Any]:
        plural = _plural(obj)
        meta = obj["metadata"]
        ns = meta.get("namespace") if plural != "nodes" else None
        self.actions.append(Action("update", plural, ns, meta["name"], subresource, copy.deepcopy(obj)))
        cur = self._get(plural, ns, meta["name"])
        if meta.get("resourceVersion") and meta["resourceVersion"] != cur["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified; please apply your changes to the latest version")
        new = copy.deepcopy(cur)
        if subresource == "status":
            new["status"] = copy.deepcopy(obj.get("status") or {})
        else:
            new = {**copy.deepcopy(obj), "status": cur.get("status")}
            new["metadata"]["uid"] = cur["metadata"]["uid"]
        return self.put(new)

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await self._replace(obj, "")

    async def replace_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await self._replace(obj, "status")

    async def patch(self, rt: ResourceType, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: str = "merge", subresource: str = "") -> dict[str, Any]:
        self.actions.append(Action("patch", rt.plural, namespace, name, subresource, copy.deepcopy(patch)))
        cur = copy.deepcopy(self._get(rt.plural, namespace, name))
        target = cur.setdefault("status", {}) if subresource == "status" else cur
        for k, v in (patch.get("status", {}) if subresource == "status" else patch).items():
            target[k] = v
        return self.put(cur)

    async def delete(self, rt: ResourceType, name: str, namespace: str | None = None, *,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, str] | None = None) -> dict[str, Any]:
        self.actions.append(Action("delete", rt.plural, namespace, name,
                                   body={"gracePeriodSeconds": grace_period_seconds, "preconditions": preconditions}))
        cur = self._get(rt.plural, namespace, name)
        if preconditions and preconditions.get("uid") and preconditions["uid"] != cur["metadata"]["uid"]:
            raise Conflict("Precondition failed: UID in precondition")
        self.remove(rt.plural, namespace, name)
        return copy.deepcopy(cur)

    async def update_with_retry(self, rt: ResourceType, name: str, namespace: str | None, mutate: Any, *,
                                subresource: str = "", retries: int = 5) -> dict[str, Any]:
        cur = await self.get(rt, name, namespace)
        mine = copy.deepcopy(cur)
        result = mutate(mine)
        desired = result if isinstance(result, dict) else mine
        if desired == cur:
            return cur
        return await (self.replace_status(desired) if subresource == "status" else self.replace(desired))


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_pod(name: str = "web", *, namespace: str = "default", uid: str | None = None,
             containers: list[dict[str, Any]] | None = None, restart_policy: str = "Always",
             volumes: list[dict[str, Any]] | None = None, node: str = NODE, **spec: Any) -> dict[str, Any]:
    """A pod as the apiserver stores it after defaulting and binding."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()),
                     "resourceVersion": "1", "creationTimestamp": "2027-01-15T08:00:00Z"},
        "spec": {"nodeName": node, "restartPolicy": restart_policy, "terminationGracePeriodSeconds": 30,
                 "containers": containers if containers is not None else [
                     {"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                      "command": ["sleep", "3600"]}],
                 "volumes": volumes or [], **spec},
        "status": {"phase": "Pending"},
    }
