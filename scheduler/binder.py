"""The scheduler's writes to the API: the binding, the ``PodScheduled`` condition, Events.

Every write goes through a client with :class:`WriteClient`'s methods (``AsyncApiClient`` has them; unit
tests pass a recording fake). Errors are the client's (``minik8s.errors``): a binding of a pod that is
already bound raises ``Conflict`` (the apiserver makes it a conditional write), of a deleted pod ``NotFound``.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from minik8s.api import registry
from minik8s.timeutil import rfc3339

COMPONENT = "default-scheduler"
_PODS = registry.lookup("pods")


class WriteClient(Protocol):
    """The calls the binder makes."""

    async def get(self, rt: Any, name: str, namespace: str | None = None) -> dict[str, Any]: ...

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, body: Any = None) -> Any: ...

    async def replace_status(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def create(self, obj: dict[str, Any], *, namespace: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> dict[str, Any]: ...


def _meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def scheduled_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod's ``PodScheduled`` condition, if it has one."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "PodScheduled":
            return c
    return None


def _with_condition(pod: Mapping[str, Any], status: str, reason: str, message: str) -> dict[str, Any] | None:
    """A copy of ``pod`` with its PodScheduled condition set; None when it already says exactly that."""
    cur = scheduled_condition(pod)
    if cur is not None and (cur.get("status"), cur.get("reason") or "", cur.get("message") or "") == \
            (status, reason, message):
        return None
    new = copy.deepcopy(dict(pod))
    conditions = [c for c in (new.setdefault("status", {}).get("conditions") or [])
                  if not (isinstance(c, Mapping) and c.get("type") == "PodScheduled")]
    cond: dict[str, Any] = {"type": "PodScheduled", "status": status, "lastProbeTime": None,
                            "lastTransitionTime": rfc3339() if cur is None or cur.get("status") != status
                            else cur.get("lastTransitionTime")}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    new["status"]["conditions"] = [cond, *conditions]
    return new


class Binder:
    """Writes the scheduler's decisions. Stateless apart from the client; every method may raise ``ApiError``
    or ``ConnectionFailed`` from the client."""

    def __init__(self, client: WriteClient, *, component: str = COMPONENT) -> None:
        self.client = client
        self.component = component

    async def bind(self, pod: Mapping[str, Any], node: str) -> None:
        """POST ``pods/{name}/binding`` with the pod's uid; ``Conflict`` if it is bound already."""
        meta = _meta(pod)
        ns, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns, "uid": meta.get("uid")},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        await self.client.request("POST", _PODS.path(ns, name, "binding"), body=body)

    async def mark_unschedulable(self, pod: Mapping[str, Any], message: str) -> bool:
        """Set ``PodScheduled=False, reason Unschedulable`` with ``message`` through ``/status``, only when it
        differs from what the pod says; True when it wrote. The write carries the pod's resourceVersion, so a
        pod that changed meanwhile gives ``Conflict`` (the caller retries with the newer pod)."""
        new = _with_condition(pod, "False", "Unschedulable", message)
        if new is None:
            return False
        await self.client.replace_status(new)
        return True

    async def event(self, pod: Mapping[str, Any], reason: str, message: str, *, type_: str = "Normal") -> None:
        """Record an Event about ``pod``. Identical repeats are folded into one (count) by the apiserver."""
        meta = _meta(pod)
        ns = str(meta.get("namespace") or "default")
        now = rfc3339()
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": ns},
              "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name"), "namespace": ns,
                                 "uid": meta.get("uid")},
              "reason": reason, "message": message, "type": type_, "count": 1,
              "firstTimestamp": now, "lastTimestamp": now,
              "source": {"component": self.component}, "reportingComponent": self.component}
        await self.client.create(ev, namespace=ns)

