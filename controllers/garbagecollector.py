"""The garbage collector: deletes objects whose owners are gone, and finishes Foreground and Orphan
deletions (the apiserver adds the ``foregroundDeletion`` / ``orphan`` finalizer on such a DELETE).

::

    informers over every kind that carries ownerReferences (GC_RESOURCES), each indexed by owner uid
      add/update of X  → item X (check its owners; finish its own deletion if it has our finalizers)
      delete of X      → items of X's dependents (their owner is gone) and of X's owners (a
                         foreground-deleting owner may be waiting for X)
                 ▼
    sync("plural|ns/name")
     ├─ X being deleted with "orphan"             → remove X's uid from every dependent's ownerReferences,
     │                                               then remove the finalizer (the apiserver then deletes X)
     ├─ X being deleted with "foregroundDeletion" → delete its dependents (blockOwnerDeletion ones first,
     │                                               Foreground themselves); none left → remove the finalizer
     └─ otherwise, X's owners (looked up live, by uid, as Kubernetes does — the cache may lag):
           some owner exists and is not foreground-deleting → drop the dangling refs, keep X
           all gone                                        → delete X (Background)
           some owner is foreground-deleting               → delete X (Foreground when it blocks the owner)

Namespaces are emptied and removed by the apiserver's reaper, not here.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from controllers.base import Controller, ControllerClient, InformerFactory, Obj, is_terminating
from minik8s.api import registry
from minik8s.client.informer import Informer, object_key
from minik8s.errors import ApiError, NotFound

log = logging.getLogger("minik8s.controllers.gc")

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
OWNER_INDEX = "owner-uid"
UID_INDEX = "uid"
GC_RESOURCES = ("pods", "replicasets", "deployments", "services", "endpoints", "horizontalpodautoscalers",
                "ingresses", "functions", "workflows")


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _owner_uids(obj: Obj) -> list[str]:
    return [str(r.get("uid")) for r in _meta(obj).get("ownerReferences") or [] if r.get("uid")]


def _uid(obj: Obj) -> list[str]:
    uid = _meta(obj).get("uid")
    return [str(uid)] if uid else []


def item(plural: str, obj: Obj) -> str:
    return f"{plural}|{object_key(obj)}"


class GarbageCollector(Controller):
    name = "garbagecollector"

    def __init__(self, client: ControllerClient, factory: InformerFactory, *, workers: int = 20,
                 resources: tuple[str, ...] = GC_RESOURCES) -> None:
        super().__init__(client, factory, workers=workers)
        self.watched: dict[str, Informer] = {}
        for plural in resources:
            inf = factory.informer(plural)
            inf.indexer.add_index(OWNER_INDEX, _owner_uids)
            inf.indexer.add_index(UID_INDEX, _uid)
            inf.add_handler(on_add=self._changed(plural), on_update=self._updated(plural),
                            on_delete=self._deleted(plural))
            self.watched[inf.rt.plural] = inf

    def informers(self) -> list[Informer]:
        return list(self.watched.values())

    # --- graph -----------------------------------------------------------------------------------

    def dependents(self, uid: str) -> list[tuple[str, Obj]]:
        return [(p, o) for p, inf in self.watched.items() for o in inf.indexer.by_index(OWNER_INDEX, uid)]

    def by_uid(self, uid: str) -> tuple[str, Obj] | None:
        for p, inf in self.watched.items():
            found = inf.indexer.by_index(UID_INDEX, uid)
            if found:
                return p, found[0]
        return None

    # --- handlers --------------------------------------------------------------------------------

    def _changed(self, plural: str) -> Any:
        def handler(obj: Obj) -> None:
            meta = _meta(obj)
            if meta.get("ownerReferences") or (meta.get("deletionTimestamp") and
                                              {FOREGROUND, ORPHAN} & set(meta.get("finalizers") or [])):
                self.enqueue_key(item(plural, obj))
        return handler

    def _updated(self, plural: str) -> Any:
        changed = self._changed(plural)

        def handler(old: Obj, new: Obj) -> None:
            changed(new)
            # Owners a dependent just let go of (or that wait for it) look again.
            if _meta(old).get("ownerReferences") != _meta(new).get("ownerReferences") or is_terminating(new):
                self._enqueue_owners(old)
        return handler

    def _deleted(self, plural: str) -> Any:
        def handler(obj: Obj) -> None:
            for uid in _uid(obj):
                for p, dep in self.dependents(uid):
                    self.enqueue_key(item(p, dep))
            self._enqueue_owners(obj)
        return handler

    def _enqueue_owners(self, obj: Obj) -> None:
        for uid in _owner_uids(obj):
            found = self.by_uid(uid)
            if found is not None and is_terminating(found[1]):
                self.enqueue_key(item(*found))

    def enqueue(self, obj: Obj) -> None:  # pragma: no cover - items carry their resource
        raise TypeError("use enqueue_key(item(plural, obj))")

    # --- sync --------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        plural, _, okey = key.partition("|")
        inf = self.watched.get(plural)
        obj = inf.indexer.get(okey) if inf is not None else None
        if obj is None or inf is None:
            return
        meta = _meta(obj)
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and ORPHAN in finalizers:
            await self._orphan_dependents(inf, obj)
            return
        if meta.get("deletionTimestamp") and FOREGROUND in finalizers:
            await self._foreground(inf, obj)
            return
        if meta.get("ownerReferences") and not is_terminating(obj):
            await self._check_owners(inf, obj)

    async def _remove_finalizer(self, inf: Informer, obj: Obj, finalizer: str) -> None:
        updated = copy.deepcopy(obj)
        updated["metadata"]["finalizers"] = [f for f in updated["metadata"].get("finalizers") or [] if f != finalizer]
        try:
            await self.client.replace(updated)
        except NotFound:
            return
        log.info("gc: %s %s: removed finalizer %s", inf.rt.plural, object_key(obj), finalizer)

    async def _orphan_dependents(self, inf: Informer, owner: Obj) -> None:
        uid = str(_meta(owner).get("uid"))
        for plural, dep in self.dependents(uid):
            updated = copy.deepcopy(dep)
            updated["metadata"]["ownerReferences"] = [r for r in updated["metadata"].get("ownerReferences") or []
                                                      if r.get("uid") != uid]
            try:
                await self.client.replace(updated)
            except NotFound:
                continue
            log.info("gc: orphaned %s %s", plural, object_key(dep))
        await self._remove_finalizer(inf, owner, ORPHAN)

    async def _foreground(self, inf: Informer, owner: Obj) -> None:
        uid = str(_meta(owner).get("uid"))
        deps = self.dependents(uid)
        if not deps:
            await self._remove_finalizer(inf, owner, FOREGROUND)
            return

        def blocking(dep: Obj) -> bool:
            return any(r.get("uid") == uid and r.get("blockOwnerDeletion")
                       for r in _meta(dep).get("ownerReferences") or [])

        for plural, dep in sorted(deps, key=lambda d: not blocking(d[1])):
            if is_terminating(dep):
                continue
            await self._delete(plural, dep, "Foreground" if blocking(dep) else "Background")

    async def _delete(self, plural: str, obj: Obj, policy: str) -> None:
        meta = _meta(obj)
        try:
            await self.client.delete(registry.lookup(plural), meta["name"], meta.get("namespace"),
                                     propagation_policy=policy, preconditions={"uid": str(meta.get("uid"))})
        except NotFound:
            return
        log.info("gc: deleting %s %s (%s)", plural, object_key(obj), policy)

    async def _owner_state(self, ref: Obj, namespace: str | None) -> str:
        """"absent", "deleting" (foreground, waiting for dependents) or "present"; a live read."""
        try:
            rt = registry.lookup(str(ref.get("kind", "")))
        except ApiError:
            return "present"  # a kind this cluster does not serve: leave the dependent alone
        cached = self.by_uid(str(ref.get("uid")))
        owner: Obj | None = cached[1] if cached is not None else None
        if owner is None:
            try:
                owner = await self.client.get(rt, str(ref.get("name", "")), namespace if rt.namespaced else None)
            except NotFound:
                return "absent"
            if _meta(owner).get("uid") != ref.get("uid"):
                return "absent"
        meta = _meta(owner)
        if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
            return "deleting"
        return "present"

    async def _check_owners(self, inf: Informer, obj: Obj) -> None:
        meta = _meta(obj)
        refs = meta.get("ownerReferences") or []
        states = await asyncio.gather(*(self._owner_state(r, meta.get("namespace")) for r in refs))
        absent = [r for r, s in zip(refs, states, strict=True) if s == "absent"]
        deleting = [r for r, s in zip(refs, states, strict=True) if s == "deleting"]
        if any(s == "present" for s in states):
            if absent or deleting:
                drop = {r.get("uid") for r in absent + deleting}
                updated = copy.deepcopy(obj)
                updated["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") not in drop]
                try:
                    await self.client.replace(updated)
                except NotFound:
                    return
            return
        if deleting and any(r.get("blockOwnerDeletion") for r in deleting):
            await self._delete(inf.rt.plural, obj, "Foreground")
        else:
            await self._delete(inf.rt.plural, obj, "Background")
