"""The ReplicaSet controller: keeps ``spec.replicas`` pods from the template, owned by the ReplicaSet.

::

    replicasets ─ add/update/delete ─────────────▶ key of the ReplicaSet
    pods ── add     → creation_observed(owner) ──▶ key of the controller (orphans: every RS whose selector matches)
        ── update   → old and new controller (a label or ownerRef change); terminating → deletion_observed
        ── delete   → deletion_observed(owner) ──▶ key of the controller
                 ▼
    sync(ns/name)
     ├─ claim: pods in the namespace; ours (controller ref uid = ours) that no longer match → release
     │         (our ownerRef removed); orphans that match → adopt (controller ref added)
     ├─ manage (only when expectations are satisfied, never while the RS is being deleted):
     │     too few active pods  → expect n creations, create from the template in slow-start batches
     │     too many             → expect those deletions, delete: unscheduled, Pending, not ready,
     │                            more restarts, newest first
     └─ status via /status, only when it changed: replicas, fullyLabeledReplicas, readyReplicas,
        availableReplicas (ready for minReadySeconds), observedGeneration

Expectations make the controller wait for its own writes to show up in the informer, so two syncs
in a row never both create the missing pods (no overshoot).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import timedelta
from typing import Any

from controllers.base import (
    Controller,
    ControllerClient,
    Expectations,
    InformerFactory,
    Obj,
    controller_ref,
    is_terminating,
    make_controller_ref,
)
from minik8s.api import registry
from minik8s.api.selectors import LabelSelector, selector_from_dict
from minik8s.client.informer import Informer, object_key
from minik8s.errors import ApiError, BadRequest, Conflict, NotFound
from minik8s.timeutil import now, parse_rfc3339

log = logging.getLogger("minik8s.controllers.replicaset")

PODS = registry.lookup("pods")
REPLICASETS = registry.lookup("replicasets")
NS_INDEX = "namespace"
# Kubernetes' burstReplicas: at most this many creations or deletions per sync.
BURST_REPLICAS = 500
SLOW_START_INITIAL_BATCH = 1


def _namespace_index(obj: Obj) -> list[str]:
    return [str((obj.get("metadata") or {}).get("namespace") or "")]


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata") or {}


def pod_ready_since(pod: Obj) -> str | None:
    """The Ready condition's lastTransitionTime when the pod is ready (``""`` if unknown), else None."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("lastTransitionTime") or "") if c.get("status") == "True" else None
    return None


def is_available(pod: Obj, min_ready_seconds: int, at: Any = None) -> bool:
    since = pod_ready_since(pod)
    if since is None:
        return False
    if min_ready_seconds <= 0:
        return True
    t = parse_rfc3339(since)
    return t is not None and t + timedelta(seconds=min_ready_seconds) <= (at or now())


def is_active(pod: Obj) -> bool:
    return not is_terminating(pod) and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank(pod: Obj) -> tuple[Any, ...]:
    """Smaller goes first when scaling down (Kubernetes' ActivePods ordering)."""
    status = pod.get("status") or {}
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
    created = _meta(pod).get("creationTimestamp") or ""
    return (1 if (pod.get("spec") or {}).get("nodeName") else 0, _PHASE_RANK.get(status.get("phase", ""), 0),
            0 if pod_ready_since(pod) is None else 1, -restarts, _Desc(created), _Desc(_meta(pod).get("name", "")))


class _Desc:
    """Reverses a string's order inside a sort key (newest first)."""

    __slots__ = ("v",)

    def __init__(self, v: str) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return self.v > other.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.v == other.v

    def __hash__(self) -> int:
        return hash(self.v)


class ReplicaSetController(Controller):
    name = "replicaset"

    def __init__(self, client: ControllerClient, factory: InformerFactory, *, workers: int = 5,
                 expectations: Expectations | None = None) -> None:
        super().__init__(client, factory, workers=workers)
        self.expectations = expectations or Expectations()
        self.replicasets = factory.informer("replicasets")
        self.pods = factory.informer("pods")
        self.pods.indexer.add_index(NS_INDEX, _namespace_index)
        self.replicasets.indexer.add_index(NS_INDEX, _namespace_index)
        self.replicasets.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                                     on_delete=self._rs_deleted)
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)

    def informers(self) -> list[Informer]:
        return [self.replicasets, self.pods]

    # --- handlers ----------------------------------------------------------------------------------

    def _rs_deleted(self, rs: Obj) -> None:
        self.expectations.forget(object_key(rs))
        self.enqueue(rs)

    def _owner_key(self, pod: Obj) -> str | None:
        """The key of the ReplicaSet that controls ``pod``, if it is one we know (uid checked)."""
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return None
        key = f"{_meta(pod).get('namespace', '')}/{ref.get('name', '')}"
        rs = self.replicasets.indexer.get(key)
        if rs is None or _meta(rs).get("uid") != ref.get("uid"):
            return None
        return key

    def _matching_sets(self, pod: Obj) -> list[str]:
        labels = _meta(pod).get("labels") or {}
        keys = []
        for rs in self.replicasets.indexer.by_index(NS_INDEX, str(_meta(pod).get("namespace") or "")):
            try:
                if selector_from_dict((rs.get("spec") or {}).get("selector")).matches(labels):
                    keys.append(object_key(rs))
            except BadRequest:
                continue
        return keys

    def _pod_added(self, pod: Obj) -> None:
        if is_terminating(pod):
            self._pod_deleted(pod)
            return
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            self.enqueue_key(key)
        elif controller_ref(pod) is None:
            for k in self._matching_sets(pod):
                self.enqueue_key(k)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if _meta(old).get("resourceVersion") == _meta(new).get("resourceVersion") and old is new:
            key = self._owner_key(new)  # a resync
            if key is not None:
                self.enqueue_key(key)
            return
        new_key, old_key = self._owner_key(new), self._owner_key(old)
        if is_terminating(new) and not is_terminating(old):
            # Kubernetes counts a pod as deleted as soon as it starts terminating.
            for k in {old_key, new_key} - {None}:
                self.expectations.deletion_observed(str(k), object_key(new))
        for k in {old_key, new_key} - {None}:
            self.enqueue_key(str(k))
        labels_changed = _meta(old).get("labels") != _meta(new).get("labels")
        if controller_ref(new) is None and (labels_changed or controller_ref(old) is not None):
            for k in self._matching_sets(new):
                self.enqueue_key(k)
        if new_key is not None and pod_ready_since(new) is not None and pod_ready_since(old) is None:
            rs = self.replicasets.indexer.get(new_key)
            mrs = int(((rs or {}).get("spec") or {}).get("minReadySeconds") or 0)
            if mrs > 0:
                self.enqueue_after(new_key, mrs + 1)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key is None:
            return
        self.expectations.deletion_observed(key, object_key(pod))
        self.enqueue_key(key)

    # --- sync ----------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        rs = self.replicasets.indexer.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        namespace = str(_meta(rs).get("namespace") or "")
        spec = rs.get("spec") or {}
        try:
            selector = selector_from_dict(spec.get("selector"))
        except BadRequest as exc:
            log.warning("replicaset %s has an invalid selector: %s", key, exc)
            return
        satisfied = self.expectations.satisfied(key)
        pods = await self._claim(rs, selector, namespace)
        active = [p for p in pods if is_active(p)]
        error: Exception | None = None
        if satisfied and not is_terminating(rs):
            try:
                await self._manage(rs, key, active)
            except (ApiError, OSError) as exc:
                error = exc
        await self._update_status(rs, pods)
        if error is not None:
            raise error

    async def _claim(self, rs: Obj, selector: LabelSelector, namespace: str) -> list[Obj]:
        uid = _meta(rs).get("uid")
        deleting = is_terminating(rs)
        owned = []
        for pod in self.pods.indexer.by_index(NS_INDEX, namespace):
            ref = controller_ref(pod)
            matches = selector.matches(_meta(pod).get("labels"))
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches:
                    owned.append(pod)
                elif not deleting:
                    await self._release(pod, uid)
            elif matches and not deleting and not is_terminating(pod):
                adopted = await self._adopt(rs, pod)
                if adopted is not None:
                    owned.append(adopted)
        return owned

    async def _adopt(self, rs: Obj, pod: Obj) -> Obj | None:
        updated = copy.deepcopy(pod)
        refs = [r for r in updated["metadata"].get("ownerReferences") or [] if r.get("uid") != _meta(rs).get("uid")]
        updated["metadata"]["ownerReferences"] = [*refs, make_controller_ref(rs)]
        try:
            result = await self.client.replace(updated)
        except NotFound:
            return None
        log.info("replicaset %s adopted pod %s", object_key(rs), object_key(pod))
        return result

    async def _release(self, pod: Obj, uid: Any) -> None:
        updated = copy.deepcopy(pod)
        updated["metadata"]["ownerReferences"] = [r for r in updated["metadata"].get("ownerReferences") or []
                                                  if r.get("uid") != uid]
        try:
            await self.client.replace(updated)
        except NotFound:
            return
        log.info("released pod %s (labels no longer match)", object_key(pod))

    def _new_pod(self, rs: Obj) -> Obj:
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        tmeta = template.get("metadata") or {}
        meta: Obj = {"generateName": f"{_meta(rs).get('name')}-", "namespace": _meta(rs).get("namespace"),
                     "ownerReferences": [make_controller_ref(rs)]}
        for f in ("labels", "annotations", "finalizers"):
            if tmeta.get(f):
                meta[f] = tmeta[f]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}

    async def _manage(self, rs: Obj, key: str, active: list[Obj]) -> None:
        want = int((rs.get("spec") or {}).get("replicas", 1) or 0)
        diff = len(active) - want
        namespace = str(_meta(rs).get("namespace") or "")
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            self.expectations.expect_creations(key, count)
            created, batch = 0, SLOW_START_INITIAL_BATCH
            try:
                while created < count:
                    n = min(batch, count - created)
                    results = await asyncio.gather(*(self.client.create(self._new_pod(rs), namespace=namespace)
                                                     for _ in range(n)), return_exceptions=True)
                    errors = [r for r in results if isinstance(r, BaseException)]
                    for _ in errors:
                        self.expectations.creation_observed(key)  # no event will come for these
                    created += n
                    if errors:
                        raise errors[0]
                    batch *= 2
            finally:
                for _ in range(count - created):
                    self.expectations.creation_observed(key)
        elif diff > 0:
            victims = sorted(active, key=deletion_rank)[:min(diff, BURST_REPLICAS)]
            self.expectations.expect_deletions(key, [object_key(p) for p in victims])
            results = await asyncio.gather(*(self.client.delete(PODS, _meta(p)["name"], namespace)
                                             for p in victims), return_exceptions=True)
            first: BaseException | None = None
            for pod, r in zip(victims, results, strict=True):
                if isinstance(r, BaseException):
                    self.expectations.deletion_observed(key, object_key(pod))
                    if not isinstance(r, NotFound) and first is None:
                        first = r
            if first is not None:
                raise first

    async def _update_status(self, rs: Obj, pods: list[Obj]) -> None:
        spec = rs.get("spec") or {}
        active = [p for p in pods if is_active(p)]
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        mrs = int(spec.get("minReadySeconds") or 0)
        at = now()
        ready = [p for p in active if pod_ready_since(p) is not None]
        available = [p for p in ready if is_available(p, mrs, at)]
        status = dict(rs.get("status") or {})
        desired = {**status,
                   "replicas": len(active),
                   "fullyLabeledReplicas": sum(1 for p in active if all(
                       (_meta(p).get("labels") or {}).get(k) == v for k, v in template_labels.items())),
                   "readyReplicas": len(ready),
                   "availableReplicas": len(available),
                   "observedGeneration": int(_meta(rs).get("generation") or 1)}
        if len(available) < len(ready) and mrs > 0:
            self.enqueue_after(object_key(rs), mrs)
        if desired == status:
            return
        updated = copy.deepcopy(rs)
        updated["status"] = desired
        try:
            await self.client.replace_status(updated)
        except Conflict:
            # Our cached copy is older than the stored one (often our own previous status write that the
            # informer has not delivered yet). As Kubernetes' updateReplicaSetStatus does, read the latest
            # and retry once instead of waiting for the informer: the status is computed from pods, not
            # from the old status, so writing it onto the newer object is safe.
            latest = await self.client.get(REPLICASETS, str(_meta(rs).get("name")), _meta(rs).get("namespace"))
            if _meta(latest).get("uid") != _meta(rs).get("uid"):
                return
            desired["observedGeneration"] = int(_meta(rs).get("generation") or 1)
            if (latest.get("status") or {}) == desired:
                return
            latest["status"] = desired
            await self.client.replace_status(latest)
