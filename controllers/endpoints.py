"""The Endpoints controller: every Service with a selector gets an Endpoints object of the same name
listing the pods it selects.

::

    services ──┐ add/update/delete → key of the Service
    pods ──────┼ add/update/delete → keys of every Service (in the pod's namespace) selecting the old or new labels
    endpoints ─┘ delete/update     → key of the Service of the same name (re-create / repair)
                 ▼
    sync(ns/name): Service gone or without selector → delete our Endpoints (gone) / leave it (no selector)
                   else pods matching the selector, with a podIP, not terminating, not Succeeded/Failed:
                        Ready=True (or publishNotReadyAddresses) → subsets[].addresses
                        otherwise                                 → subsets[].notReadyAddresses
                   ports: each Service port's targetPort (number, or a container port name looked up in
                   each pod, so pods may differ: they are grouped into subsets by their resolved ports)
                   → create / replace the Endpoints only when it changed.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from controllers.base import Controller, ControllerClient, InformerFactory, Obj, is_terminating
from minik8s.api import registry
from minik8s.api.selectors import selector_from_labels
from minik8s.client.informer import Informer, object_key
from minik8s.errors import BadRequest, NotFound

log = logging.getLogger("minik8s.controllers.endpoints")

ENDPOINTS = registry.lookup("endpoints")
NS_INDEX = "namespace"


def _namespace_index(obj: Obj) -> list[str]:
    return [str((obj.get("metadata") or {}).get("namespace") or "")]


def pod_is_ready(pod: Obj) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _resolve_port(svc_port: Obj, pod: Obj) -> int | None:
    """The pod's port for one Service port; None when a named targetPort is not in the pod."""
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = svc_port.get("protocol") or "TCP"
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                return int(p["containerPort"])
    return None


def _address(pod: Obj) -> Obj:
    meta = pod.get("metadata") or {}
    addr: Obj = {"ip": (pod.get("status") or {}).get("podIP"),
                 "targetRef": {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
                               "uid": meta.get("uid", "")}}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        addr["nodeName"] = node
    return addr


def compute_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    """The Endpoints ``subsets`` of ``service`` over the (already selected) ``pods``; sorted, so equal
    inputs give equal outputs and an unchanged Endpoints is never rewritten."""
    spec = service.get("spec") or {}
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[tuple[tuple[str, int, str], ...], dict[str, list[Obj]]] = {}
    for pod in pods:
        status = pod.get("status") or {}
        if not status.get("podIP") or is_terminating(pod) or status.get("phase") in ("Succeeded", "Failed"):
            continue
        ports: list[tuple[str, int, str]] = []
        for sp in spec.get("ports") or []:
            resolved = _resolve_port(sp, pod)
            if resolved is not None:
                ports.append((sp.get("name") or "", resolved, sp.get("protocol") or "TCP"))
        group = groups.setdefault(tuple(sorted(ports)), {"addresses": [], "notReadyAddresses": []})
        ready = publish_not_ready or pod_is_ready(pod)
        group["addresses" if ready else "notReadyAddresses"].append(_address(pod))
    subsets = []
    for ports_key, group in sorted(groups.items()):
        subset: Obj = {}
        for field in ("addresses", "notReadyAddresses"):
            if group[field]:
                subset[field] = sorted(group[field], key=lambda a: (a["ip"], a["targetRef"]["name"]))
        subset["ports"] = [{**({"name": n} if n else {}), "port": p, "protocol": proto} for n, p, proto in ports_key]
        subsets.append(subset)
    return subsets


class EndpointsController(Controller):
    name = "endpoints"

    def __init__(self, client: ControllerClient, factory: InformerFactory, *, workers: int = 5) -> None:
        super().__init__(client, factory, workers=workers)
        self.services = factory.informer("services")
        self.pods = factory.informer("pods")
        self.endpoints = factory.informer("endpoints")
        self.services.indexer.add_index(NS_INDEX, _namespace_index)
        self.services.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                                  on_delete=self.enqueue)
        self.pods.add_handler(on_add=self._pod_changed, on_update=self._pod_updated, on_delete=self._pod_changed)
        self.endpoints.add_handler(on_update=lambda old, new: self._endpoints_changed(new),
                                   on_delete=self._endpoints_changed)

    def informers(self) -> list[Informer]:
        return [self.services, self.pods, self.endpoints]

    # --- handlers --------------------------------------------------------------------------------

    def _services_for(self, pod: Obj) -> set[str]:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        keys = set()
        for svc in self.services.indexer.by_index(NS_INDEX, str(meta.get("namespace") or "")):
            selector = (svc.get("spec") or {}).get("selector")
            if not selector:
                continue
            try:
                if selector_from_labels(selector).matches(labels):
                    keys.add(object_key(svc))
            except BadRequest:
                continue
        return keys

    def _pod_changed(self, pod: Obj) -> None:
        for key in self._services_for(pod):
            self.enqueue_key(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        for key in self._services_for(old) | self._services_for(new):
            self.enqueue_key(key)

    def _endpoints_changed(self, ep: Obj) -> None:
        key = object_key(ep)
        if key in self.services.indexer:
            self.enqueue_key(key)

    # --- sync --------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        namespace, _, name = key.rpartition("/")
        service = self.services.indexer.get(key)
        current = self.endpoints.indexer.get(key)
        if service is None:
            if current is not None:
                try:
                    await self.client.delete(ENDPOINTS, name, namespace)
                except NotFound:
                    pass
            return
        spec = service.get("spec") or {}
        selector = spec.get("selector")
        if not selector or spec.get("type") == "ExternalName":
            return  # user-managed Endpoints
        match = selector_from_labels(selector)
        pods = [p for p in self.pods.indexer.list()
                if (p.get("metadata") or {}).get("namespace") == namespace
                and match.matches((p.get("metadata") or {}).get("labels"))]
        subsets = compute_subsets(service, pods)
        labels = dict((service.get("metadata") or {}).get("labels") or {})
        if current is None:
            body: Obj = {"apiVersion": "v1", "kind": "Endpoints",
                         "metadata": {"name": name, "namespace": namespace, **({"labels": labels} if labels else {})},
                         "subsets": subsets}
            await self.client.create(body, namespace=namespace)
            return
        cur_labels = (current.get("metadata") or {}).get("labels") or {}
        if (current.get("subsets") or []) == subsets and cur_labels == labels:
            return
        updated: dict[str, Any] = copy.deepcopy(current)
        updated["subsets"] = subsets
        updated["metadata"]["labels"] = labels
        await self.client.replace(updated)
