"""The Deployment controller: one ReplicaSet per pod template, rolled from old to new within bounds.

::

    deployments ─ add/update/delete ─────────────▶ key of the Deployment
    replicasets ─ add/update/delete ─────────────▶ key of the controlling Deployment (orphans: every
                                                    Deployment whose selector matches, to adopt them)
    pods ──────── update(phase)/delete ──────────▶ key of the Deployment owning the pod's ReplicaSet
                                                    (Recreate waits for old pods to be gone)
                     ▼
    sync(ns/name): Deployment gone → done
      ReplicaSets: ours (controllerRef uid) matching the selector; adopt matching orphans, release
                   ours that stopped matching
      terminating  → status only
      paused       → scale only (proportionally), clean up history, status; no rollout
      scaling event (an active RS's desired-replicas annotation ≠ spec.replicas) → scale only
      Recreate     → old RSs to 0 ▸ wait until their pods are gone ▸ create/scale the new RS
      RollingUpdate→ new RS up within maxSurge ▸ else old RSs down within maxUnavailable
                     (unhealthy replicas first, then oldest first) ▸ complete → history cleanup
      status       → replicas/updated/ready/available/unavailable, Available and Progressing
                     conditions (ProgressDeadlineExceeded when stuck), written via /status only
                     when it changed; requeued at the progress deadline

The new ReplicaSet is ``<deployment>-<hash>``; ``hash`` (label ``pod-template-hash`` on its selector,
template and so its pods) is a stable FNV-32a of the pod template (plus ``status.collisionCount``
when a name collides). The ReplicaSet whose template equals the Deployment's (ignoring the hash
label) is the new one; its ``deployment.kubernetes.io/revision`` is one more than every old one's,
so rolling back (the template of an old revision becomes current again) gives it a new number.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from controllers.base import Controller, ControllerClient, InformerFactory, Obj, controller_ref, make_controller_ref
from minik8s.api import registry
from minik8s.api.selectors import selector_from_dict
from minik8s.client.informer import Informer, object_key
from minik8s.errors import AlreadyExists, BadRequest, NotFound
from minik8s.timeutil import now as utc_now
from minik8s.timeutil import parse_rfc3339, rfc3339

log = logging.getLogger("minik8s.controllers.deployment")

DEPLOYMENTS = registry.lookup("deployments")
REPLICASETS = registry.lookup("replicasets")

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE = "kubernetes.io/change-cause"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Annotations of the Deployment that are not copied onto its ReplicaSets (and that a rollback keeps).
SKIP_ANNOTATIONS = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
                              "deprecated.deployment.rollback.to"})

# Progressing condition reasons (Kubernetes' deploymentutil).
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString: no vowels, no 0/1/3
_NS_INDEX = "deployment-namespace"
_OWNER_INDEX = "deployment-controller-uid"


# --- pure helpers (Kubernetes' deploymentutil) --------------------------------------------------


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def replicas_of(obj: Obj) -> int:
    return _int(_spec(obj).get("replicas"))


def pod_template_hash(template: Obj, collision_count: int | None = None) -> str:
    """A stable short hash of a pod template (FNV-32a of its canonical JSON, encoded like Kubernetes)."""
    clean = _without_hash(template)
    data = json.dumps(clean, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(int(collision_count)).encode()
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in str(h))


def _without_hash(template: Obj) -> Obj:
    out = copy.deepcopy(template or {})
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
        if not labels:
            out["metadata"].pop("labels")
    return out


def equal_ignore_hash(a: Obj, b: Obj) -> bool:
    """Two pod templates are the same revision when they differ at most in ``pod-template-hash``."""
    return _without_hash(a) == _without_hash(b)


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """``maxSurge``/``maxUnavailable``: an int as is, "N%" of ``total`` rounded up or down."""
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%") or not text[:-1].isdigit():
            raise BadRequest(f"invalid value for IntOrString: invalid value {value!r}")
        exact = int(text[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return _int(value)


def is_rolling(d: Obj) -> bool:
    return (_spec(d).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"


def resolve_fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods: surge rounds up, unavailable down; never both 0."""
    rolling = (_spec(d).get("strategy") or {}).get("rollingUpdate") or {}
    desired = replicas_of(d)
    surge = scaled_value(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # else no rollout could ever make progress (Kubernetes does the same)
    return surge, unavailable


def max_surge(d: Obj) -> int:
    return resolve_fenceposts(d)[0] if is_rolling(d) else 0


def max_unavailable(d: Obj) -> int:
    if not is_rolling(d) or replicas_of(d) == 0:
        return 0
    return min(resolve_fenceposts(d)[1], replicas_of(d))


def revision_of(obj: Obj) -> int:
    text = (_meta(obj).get("annotations") or {}).get(REVISION, "")
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def _created(obj: Obj) -> tuple[str, str]:
    return str(_meta(obj).get("creationTimestamp") or ""), str(_meta(obj).get("name") or "")


def find_new_rs(d: Obj, rss: list[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template equals the Deployment's (ignoring the hash label)."""
    template = _spec(d).get("template") or {}
    for rs in sorted(rss, key=_created):
        if equal_ignore_hash(_spec(rs).get("template") or {}, template):
            return rs
    return None


def spec_total(rss: list[Obj]) -> int:
    return sum(replicas_of(rs) for rs in rss)


def active(rss: list[Obj]) -> list[Obj]:
    return [rs for rs in rss if replicas_of(rs) > 0]


def _available(rs: Obj) -> int:
    # An RS just scaled down may still report the pods it is about to delete as available; those
    # beyond spec.replicas will be gone soon, so never count on them (keeps maxUnavailable strict).
    return min(_int(_status(rs).get("availableReplicas")), replicas_of(rs))


def _pods_upper_bound(rs: Obj) -> int:
    # Pods an RS may have right now: it creates at most spec.replicas, and status.replicas counts the
    # pods it has not yet deleted after a scale-down. Counting the larger keeps maxSurge strict
    # (Kubernetes counts spec only and can overshoot for a moment).
    return max(replicas_of(rs), _int(_status(rs).get("replicas")))


def new_rs_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """How many replicas the new ReplicaSet may have now (Kubernetes' NewRSNewReplicas)."""
    desired = replicas_of(d)
    if not is_rolling(d):
        return desired
    current = sum(_pods_upper_bound(rs) for rs in all_rss)
    max_total = desired + max_surge(d)
    if current >= max_total:
        return replicas_of(new_rs)
    room = min(max_total - current, desired - replicas_of(new_rs))
    return replicas_of(new_rs) + max(0, room)


def deployment_complete(d: Obj, status: Obj) -> bool:
    want = replicas_of(d)
    return (_int(status.get("updatedReplicas")) == want and _int(status.get("replicas")) == want
            and _int(status.get("availableReplicas")) == want
            and _int(status.get("observedGeneration")) >= _int(_meta(d).get("generation")))


def deployment_progressing(d: Obj, new: Obj) -> bool:
    old = _status(d)
    old_old = _int(old.get("replicas")) - _int(old.get("updatedReplicas"))
    new_old = _int(new.get("replicas")) - _int(new.get("updatedReplicas"))
    return (_int(new.get("updatedReplicas")) > _int(old.get("updatedReplicas")) or new_old < old_old
            or _int(new.get("readyReplicas")) > _int(old.get("readyReplicas"))
            or _int(new.get("availableReplicas")) > _int(old.get("availableReplicas")))


def has_progress_deadline(d: Obj) -> bool:
    deadline = _spec(d).get("progressDeadlineSeconds")
    return isinstance(deadline, int) and deadline != 2 ** 31 - 1


def get_condition(status: Obj, ctype: str) -> Obj | None:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def new_condition(ctype: str, status: str, reason: str, message: str, at: datetime) -> Obj:
    stamp = rfc3339(at)
    return {"type": ctype, "status": status, "lastUpdateTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}


def set_condition(status: Obj, cond: Obj) -> None:
    """Kubernetes' SetDeploymentCondition: same status and reason → unchanged; same status keeps
    lastTransitionTime."""
    current = get_condition(status, cond["type"])
    if current is not None and current.get("status") == cond["status"] and current.get("reason") == cond["reason"]:
        return
    if current is not None and current.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": current.get("lastTransitionTime")}
    remove_condition(status, cond["type"])
    status.setdefault("conditions", []).append(cond)


def remove_condition(status: Obj, ctype: str) -> None:
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != ctype]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)


def deployment_timed_out(d: Obj, status: Obj, at: datetime) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, "Progressing")
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_rfc3339(str(cond.get("lastUpdateTime") or ""))
    if since is None:
        return False
    return since + timedelta(seconds=_int(_spec(d).get("progressDeadlineSeconds"))) < at


def calculate_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> Obj:
    """The Deployment's status as its ReplicaSets now say (conditions copied, Available recomputed)."""
    available = sum(_int(_status(rs).get("availableReplicas")) for rs in all_rss)
    unavailable = max(0, spec_total(all_rss) - available)
    old = _status(d)
    status: Obj = {
        "observedGeneration": _int(_meta(d).get("generation")),
        "replicas": sum(_int(_status(rs).get("replicas")) for rs in all_rss),
        "updatedReplicas": _int(_status(new_rs).get("replicas")) if new_rs is not None else 0,
        "readyReplicas": sum(_int(_status(rs).get("readyReplicas")) for rs in all_rss),
        "availableReplicas": available,
        "unavailableReplicas": unavailable,
    }
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    return status


# --- the controller -------------------------------------------------------------------------------


def _namespace_index(obj: Obj) -> list[str]:
    return [str(_meta(obj).get("namespace") or "")]


def _controller_uid_index(obj: Obj) -> list[str]:
    ref = controller_ref(obj)
    return [str(ref.get("uid"))] if ref and ref.get("uid") else []


class DeploymentController(Controller):
    """See the module docstring. ``clock`` (aware UTC datetimes) is the seam for progress-deadline tests."""

    name = "deployment"

    def __init__(self, client: ControllerClient, factory: InformerFactory, *, workers: int = 5,
                 clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__(client, factory, workers=workers)
        self.clock = clock
        self.deployments = factory.informer("deployments")
        self.replicasets = factory.informer("replicasets")
        self.pods = factory.informer("pods")
        self.deployments.indexer.add_index(_NS_INDEX, _namespace_index)
        self.replicasets.indexer.add_index(_NS_INDEX, _namespace_index)
        self.pods.indexer.add_index(_OWNER_INDEX, _controller_uid_index)
        self.deployments.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new),
                                     on_delete=self.enqueue)
        self.replicasets.add_handler(on_add=self._rs_changed, on_update=self._rs_updated,
                                     on_delete=self._rs_changed)
        self.pods.add_handler(on_update=self._pod_updated, on_delete=self._pod_deleted)

    def informers(self) -> list[Informer]:
        return [self.deployments, self.replicasets, self.pods]

    # --- event handlers: map to Deployment keys ----------------------------------------------------

    def _owner_of(self, rs: Obj) -> Obj | None:
        ref = controller_ref(rs)
        if ref is None or ref.get("kind") != "Deployment":
            return None
        d = self.deployments.indexer.get(f"{_meta(rs).get('namespace', '')}/{ref.get('name', '')}")
        if d is None or _meta(d).get("uid") != ref.get("uid"):
            return None
        return d

    def _rs_changed(self, rs: Obj) -> None:
        owner = self._owner_of(rs)
        if owner is not None:
            self.enqueue(owner)
            return
        if controller_ref(rs) is None:  # an orphan: whoever selects it may adopt it
            labels = _meta(rs).get("labels") or {}
            for d in self.deployments.indexer.by_index(_NS_INDEX, str(_meta(rs).get("namespace") or "")):
                try:
                    if selector_from_dict(_spec(d).get("selector")).matches(labels):
                        self.enqueue(d)
                except BadRequest:
                    continue

    def _rs_updated(self, old: Obj, new: Obj) -> None:
        if controller_ref(old) != controller_ref(new):
            self._rs_changed(old)
        self._rs_changed(new)

    def _pod_deployment(self, pod: Obj) -> Obj | None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return None
        rs = self.replicasets.indexer.get(f"{_meta(pod).get('namespace', '')}/{ref.get('name', '')}")
        if rs is None or _meta(rs).get("uid") != ref.get("uid"):
            return None
        return self._owner_of(rs)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if _status(old).get("phase") != _status(new).get("phase"):
            self._pod_deleted(new)

    def _pod_deleted(self, pod: Obj) -> None:
        d = self._pod_deployment(pod)
        if d is not None and not is_rolling(d):  # only Recreate waits on pods
            self.enqueue(d)

    # --- sync ------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self.deployments.indexer.get(key)
        if cached is None:
            return
        d = copy.deepcopy(cached)
        try:
            selector = selector_from_dict(_spec(d).get("selector"))
        except BadRequest:
            selector = None
        if selector is None or selector.empty:
            log.warning("deployment %s has an empty or invalid selector; nothing to do", key)
            status = copy.deepcopy(_status(d))
            if status.get("observedGeneration") != _meta(d).get("generation"):
                status["observedGeneration"] = _meta(d).get("generation")
                await self._write_status(d, status)
            return
        rss = await self._claim_replicasets(d, selector)
        if _meta(d).get("deletionTimestamp"):
            new_rs = find_new_rs(d, rss)
            await self._sync_status(d, [rs for rs in rss if rs is not new_rs], new_rs)
            return
        await self._check_paused_conditions(d)
        if _spec(d).get("paused") or self._is_scaling_event(d, rss):
            await self._sync_scale(d, rss)
        elif is_rolling(d):
            await self._rollout_rolling(d, rss)
        else:
            await self._rollout_recreate(d, rss)

    async def _claim_replicasets(self, d: Obj, selector: Any) -> list[Obj]:
        """Copies of our ReplicaSets; matching orphans are adopted, ours that stopped matching released."""
        uid = _meta(d).get("uid")
        ns = str(_meta(d).get("namespace") or "")
        out: list[Obj] = []
        for cached in self.replicasets.indexer.by_index(_NS_INDEX, ns):
            rs = copy.deepcopy(cached)
            ref = controller_ref(rs)
            matches = selector.matches(_meta(rs).get("labels") or {})
            if ref is not None and ref.get("uid") == uid:
                if matches:
                    out.append(rs)
                elif not _meta(rs).get("deletionTimestamp"):
                    await self._set_owner_refs(rs, [r for r in _meta(rs).get("ownerReferences") or []
                                                    if r.get("uid") != uid])
            elif ref is None and matches and not _meta(rs).get("deletionTimestamp") \
                    and not _meta(d).get("deletionTimestamp"):
                refs = [*(_meta(rs).get("ownerReferences") or []), make_controller_ref(d)]
                adopted = await self._set_owner_refs(rs, refs)
                if adopted is not None:
                    out.append(adopted)
        return out

    async def _set_owner_refs(self, rs: Obj, refs: list[Obj]) -> Obj | None:
        meta = _meta(rs)
        patch = {"metadata": {"ownerReferences": refs, "uid": meta.get("uid")}}
        try:
            result = await self.client.patch(REPLICASETS, str(meta.get("name")), patch,
                                             namespace=meta.get("namespace"))
        except NotFound:
            return None
        result.setdefault("apiVersion", REPLICASETS.api_version)
        result.setdefault("kind", REPLICASETS.kind)
        return result

    def _is_scaling_event(self, d: Obj, rss: list[Obj]) -> bool:
        want = str(replicas_of(d))
        for rs in active(rss):
            desired = (_meta(rs).get("annotations") or {}).get(DESIRED_REPLICAS)
            if desired is not None and desired != want:
                return True
        return False

    async def _check_paused_conditions(self, d: Obj) -> None:
        if not has_progress_deadline(d):
            return
        status = copy.deepcopy(_status(d))
        cond = get_condition(status, "Progressing")
        if cond is not None and cond.get("reason") == TIMED_OUT:
            return
        paused_cond = cond is not None and cond.get("reason") == PAUSED
        at = self.clock()
        if _spec(d).get("paused") and not paused_cond:
            set_condition(status, new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused", at))
        elif not _spec(d).get("paused") and paused_cond:
            set_condition(status, new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed", at))
        else:
            return
        await self._write_status(d, status)

    # --- ReplicaSets: find or create the new one, keep revisions ------------------------------------

    async def _get_all(self, d: Obj, rss: list[Obj], *, create: bool) -> tuple[Obj | None, list[Obj]]:
        existing = find_new_rs(d, rss)
        old_rss = [rs for rs in rss if rs is not existing]
        new_revision = str(max((revision_of(rs) for rs in old_rss), default=0) + 1)
        if existing is not None:
            rs = copy.deepcopy(existing)
            changed = self._set_new_rs_annotations(d, rs, new_revision, exists=True)
            if _int(_spec(rs).get("minReadySeconds")) != _int(_spec(d).get("minReadySeconds")):
                rs["spec"]["minReadySeconds"] = _int(_spec(d).get("minReadySeconds"))
                changed = True
            if changed:
                existing.clear()
                existing.update(await self.client.replace(rs))
            await self._set_deployment_revision(d, str((_meta(existing).get("annotations") or {}).get(REVISION, "")))
            if has_progress_deadline(d) and get_condition(_status(d), "Progressing") is None:
                status = copy.deepcopy(_status(d))
                set_condition(status, new_condition("Progressing", "True", FOUND_NEW_RS,
                                                    f'Found new replica set "{_meta(existing).get("name")}"',
                                                    self.clock()))
                await self._write_status(d, status)
            return existing, old_rss
        if not create:
            return None, old_rss
        new_rs = self._new_rs_object(d, old_rss, new_revision)
        try:
            created = await self.client.create(new_rs, namespace=_meta(d).get("namespace"))
        except AlreadyExists:
            name = _meta(new_rs)["name"]
            other = await self.client.get(REPLICASETS, name, _meta(d).get("namespace"))
            ref = controller_ref(other)
            if ref and ref.get("uid") == _meta(d).get("uid") and \
                    equal_ignore_hash(_spec(other).get("template") or {}, _spec(d).get("template") or {}):
                return other, old_rss  # our informer had not seen it yet
            status = copy.deepcopy(_status(d))
            status["collisionCount"] = _int(status.get("collisionCount")) + 1
            await self._write_status(d, status)
            raise
        created.setdefault("apiVersion", REPLICASETS.api_version)
        created.setdefault("kind", REPLICASETS.kind)
        log.info("deployment %s: created replica set %s with %d replicas", object_key(d), _meta(created).get("name"),
                 replicas_of(created))
        await self._set_deployment_revision(d, new_revision)
        if has_progress_deadline(d):
            status = copy.deepcopy(_status(d))
            set_condition(status, new_condition("Progressing", "True", NEW_RS_CREATED,
                                                f'Created new replica set "{_meta(created).get("name")}"',
                                                self.clock()))
            await self._write_status(d, status)
        return created, old_rss

    def _new_rs_object(self, d: Obj, old_rss: list[Obj], revision: str) -> Obj:
        spec = _spec(d)
        template = copy.deepcopy(spec.get("template") or {})
        hash_ = pod_template_hash(template, _status(d).get("collisionCount"))
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: hash_}
        selector = copy.deepcopy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: hash_}
        rs: Obj = {
            "apiVersion": REPLICASETS.api_version, "kind": REPLICASETS.kind,
            "metadata": {"name": f"{_meta(d).get('name')}-{hash_}", "namespace": _meta(d).get("namespace"),
                         "labels": dict(tmeta["labels"]), "ownerReferences": [make_controller_ref(d)]},
            "spec": {"replicas": 0, "minReadySeconds": _int(spec.get("minReadySeconds")), "selector": selector,
                     "template": template},
        }
        rs["spec"]["replicas"] = new_rs_replicas(d, [*old_rss, rs], rs)
        self._set_new_rs_annotations(d, rs, revision, exists=False)
        return rs

    def _set_new_rs_annotations(self, d: Obj, rs: Obj, new_revision: str, *, exists: bool) -> bool:
        """Copy the Deployment's annotations, raise the revision (remembering the old one in
        revision-history); a created RS also gets desired/max-replicas. True when anything changed."""
        annotations = dict(_meta(rs).get("annotations") or {})
        before = dict(annotations)
        for k, v in (_meta(d).get("annotations") or {}).items():
            if k not in SKIP_ANNOTATIONS:
                annotations[k] = v
        old_revision = annotations.get(REVISION, "")
        try:
            old_num = int(old_revision) if old_revision else 0
        except ValueError:
            old_num = 0
        if old_num < int(new_revision):
            annotations[REVISION] = new_revision
            if old_revision and exists:
                history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
                annotations[REVISION_HISTORY] = ",".join([*history, old_revision])
        if not exists:
            annotations[DESIRED_REPLICAS] = str(replicas_of(d))
            annotations[MAX_REPLICAS] = str(replicas_of(d) + max_surge(d))
        if annotations == before:
            return False
        rs.setdefault("metadata", {})["annotations"] = annotations
        return True

    async def _set_deployment_revision(self, d: Obj, revision: str) -> None:
        """The Deployment's revision annotation follows its new RS (a metadata write: no new generation)."""
        if not revision or (_meta(d).get("annotations") or {}).get(REVISION) == revision:
            return
        meta = _meta(d)
        result = await self.client.patch(DEPLOYMENTS, str(meta.get("name")),
                                         {"metadata": {"annotations": {REVISION: revision}}},
                                         namespace=meta.get("namespace"))
        d["metadata"] = result.get("metadata") or meta

    # --- scaling -----------------------------------------------------------------------------------

    async def _scale_rs(self, d: Obj, rs: Obj, replicas: int) -> bool:
        """Set ``rs`` (a working copy, refreshed in place) to ``replicas`` with the replica annotations."""
        annotations = dict(_meta(rs).get("annotations") or {})
        wanted = {DESIRED_REPLICAS: str(replicas_of(d)), MAX_REPLICAS: str(replicas_of(d) + max_surge(d))}
        if replicas_of(rs) == replicas and all(annotations.get(k) == v for k, v in wanted.items()):
            return False
        mine = copy.deepcopy(rs)
        mine["metadata"]["annotations"] = {**annotations, **wanted}
        mine.setdefault("spec", {})["replicas"] = replicas
        old = replicas_of(rs)
        result = await self.client.replace(mine)
        rs.clear()
        rs.update(result)
        if old != replicas:
            log.info("deployment %s: scaled replica set %s from %d to %d", object_key(d), _meta(rs).get("name"),
                     old, replicas)
        return old != replicas

    async def _sync_scale(self, d: Obj, rss: list[Obj]) -> None:
        """A scaling event or a paused Deployment: resize without rolling (Kubernetes' ``sync``)."""
        new_rs, old_rss = await self._get_all(d, rss, create=False)
        await self._scale(d, new_rs, old_rss)
        if _spec(d).get("paused"):
            await self._cleanup(d, old_rss)
        await self._sync_status(d, old_rss, new_rs)

    async def _scale(self, d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        want = replicas_of(d)
        all_rss = [*([new_rs] if new_rs is not None else []), *old_rss]
        live = active(all_rss)
        if len(live) <= 1:
            target = live[0] if live else (new_rs if new_rs is not None else
                                           (max(old_rss, key=_created) if old_rss else None))
            if target is not None and replicas_of(target) != want:
                await self._scale_rs(d, target, want)
            return
        if new_rs is not None and replicas_of(new_rs) == want and \
                _int(_status(new_rs).get("availableReplicas")) == want:
            for rs in active(old_rss):
                await self._scale_rs(d, rs, 0)
            return
        if not is_rolling(d):
            return
        # Several active ReplicaSets in the middle of a rollout: spread the difference proportionally
        # to their sizes (largest first gets the rounding leftover), as Kubernetes does.
        total = spec_total(live)
        allowed = want + max_surge(d) if want > 0 else 0
        to_add = allowed - total
        if to_add == 0:
            return
        # Largest first; ties: newer first when growing, older first when shrinking.
        order = sorted(live, key=_created, reverse=to_add > 0)
        order.sort(key=replicas_of, reverse=True)
        sizes: dict[int, int] = {}
        added = 0
        for i, rs in enumerate(order):
            share = int(replicas_of(rs) * to_add / total) if total else 0
            if abs(added + share) > abs(to_add):
                share = to_add - added
            sizes[i] = replicas_of(rs) + share
            added += share
        sizes[0] += to_add - added
        for i, rs in enumerate(order):
            await self._scale_rs(d, rs, max(0, sizes[i]))

    # --- strategies --------------------------------------------------------------------------------

    async def _rollout_rolling(self, d: Obj, rss: list[Obj]) -> None:
        new_rs, old_rss = await self._get_all(d, rss, create=True)
        assert new_rs is not None
        all_rss = [new_rs, *old_rss]
        if await self._reconcile_new_rs(d, all_rss, new_rs):
            await self._sync_rollout_status(d, old_rss, new_rs)
            return
        if await self._reconcile_old_rss(d, all_rss, active(old_rss), new_rs):
            await self._sync_rollout_status(d, old_rss, new_rs)
            return
        if deployment_complete(d, calculate_status(d, all_rss, new_rs)):
            await self._cleanup(d, old_rss)
        await self._sync_rollout_status(d, old_rss, new_rs)

    async def _reconcile_new_rs(self, d: Obj, all_rss: list[Obj], new_rs: Obj) -> bool:
        want = replicas_of(d)
        if replicas_of(new_rs) == want:
            return False
        if replicas_of(new_rs) > want:
            return await self._scale_rs(d, new_rs, want)
        return await self._scale_rs(d, new_rs, new_rs_replicas(d, all_rss, new_rs))

    async def _reconcile_old_rss(self, d: Obj, all_rss: list[Obj], old_rss: list[Obj], new_rs: Obj) -> bool:
        if spec_total(old_rss) == 0:
            return False
        min_available = replicas_of(d) - max_unavailable(d)
        new_unavailable = replicas_of(new_rs) - _available(new_rs)
        max_scaled_down = spec_total(all_rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = await self._cleanup_unhealthy(d, old_rss, max_scaled_down)
        scaled = await self._scale_down_old(d, [new_rs, *old_rss], old_rss)
        return cleaned + scaled > 0

    async def _cleanup_unhealthy(self, d: Obj, old_rss: list[Obj], max_cleanup: int) -> int:
        """Scale old ReplicaSets down by their unavailable replicas first (oldest first): they serve nothing."""
        total = 0
        for rs in sorted(old_rss, key=_created):
            if total >= max_cleanup:
                break
            unhealthy = replicas_of(rs) - _available(rs)
            if replicas_of(rs) == 0 or unhealthy <= 0:
                continue
            count = min(max_cleanup - total, unhealthy)
            await self._scale_rs(d, rs, replicas_of(rs) - count)
            total += count
        return total

    async def _scale_down_old(self, d: Obj, all_rss: list[Obj], old_rss: list[Obj]) -> int:
        min_available = replicas_of(d) - max_unavailable(d)
        available = sum(_available(rs) for rs in all_rss)
        if available <= min_available:
            return 0
        budget = available - min_available
        total = 0
        for rs in sorted(old_rss, key=_created):
            if total >= budget:
                break
            if replicas_of(rs) == 0:
                continue
            count = min(replicas_of(rs), budget - total)
            await self._scale_rs(d, rs, replicas_of(rs) - count)
            total += count
        return total

    async def _rollout_recreate(self, d: Obj, rss: list[Obj]) -> None:
        new_rs, old_rss = await self._get_all(d, rss, create=False)
        scaled = False
        for rs in active(old_rss):
            scaled = await self._scale_rs(d, rs, 0) or scaled
        if scaled or self._old_pods_running(new_rs, old_rss):
            await self._sync_rollout_status(d, old_rss, new_rs)
            return
        if new_rs is None:
            new_rs, old_rss = await self._get_all(d, rss, create=True)
            assert new_rs is not None
        await self._scale_rs(d, new_rs, replicas_of(d))
        if deployment_complete(d, calculate_status(d, [new_rs, *old_rss], new_rs)):
            await self._cleanup(d, old_rss)
        await self._sync_rollout_status(d, old_rss, new_rs)

    def _old_pods_running(self, new_rs: Obj | None, old_rss: list[Obj]) -> bool:
        if sum(_int(_status(rs).get("replicas")) for rs in old_rss) > 0:
            return True
        for rs in old_rss:
            uid = str(_meta(rs).get("uid") or "")
            if new_rs is not None and uid == _meta(new_rs).get("uid"):
                continue
            for pod in self.pods.indexer.by_index(_OWNER_INDEX, uid) if uid else []:
                if _status(pod).get("phase") not in ("Failed", "Succeeded"):
                    return True
        return False

    async def _cleanup(self, d: Obj, old_rss: list[Obj]) -> None:
        """Delete the oldest revisions beyond ``revisionHistoryLimit`` (only ReplicaSets at 0 replicas)."""
        limit = _spec(d).get("revisionHistoryLimit")
        if not isinstance(limit, int):
            return
        alive = [rs for rs in old_rss if not _meta(rs).get("deletionTimestamp")]
        excess = len(alive) - limit
        if excess <= 0:
            return
        for rs in sorted(alive, key=lambda r: (revision_of(r), _created(r)))[:excess]:
            meta = _meta(rs)
            if _int(_status(rs).get("replicas")) != 0 or replicas_of(rs) != 0 or \
                    _int(meta.get("generation")) > _int(_status(rs).get("observedGeneration")):
                continue
            log.info("deployment %s: deleting old replica set %s (revision %d)", object_key(d), meta.get("name"),
                     revision_of(rs))
            try:
                await self.client.delete(REPLICASETS, str(meta.get("name")), meta.get("namespace"),
                                         preconditions={"uid": str(meta.get("uid"))})
            except NotFound:
                pass

    # --- status ------------------------------------------------------------------------------------

    async def _write_status(self, d: Obj, status: Obj) -> None:
        if status == _status(d):
            return
        mine = copy.deepcopy(d)
        mine["status"] = status
        result = await self.client.replace_status(mine)
        d["metadata"] = result.get("metadata") or d.get("metadata")
        d["status"] = result.get("status") if result.get("status") is not None else status

    async def _sync_status(self, d: Obj, old_rss: list[Obj], new_rs: Obj | None) -> None:
        all_rss = [*([new_rs] if new_rs is not None else []), *old_rss]
        status = calculate_status(d, all_rss, new_rs)
        self._set_available(d, status)
        await self._write_status(d, status)

    def _set_available(self, d: Obj, status: Obj) -> None:
        at = self.clock()
        if _int(status.get("availableReplicas")) >= replicas_of(d) - max_unavailable(d):
            cond = new_condition("Available", "True", MIN_AVAILABLE, "Deployment has minimum availability.", at)
        else:
            cond = new_condition("Available", "False", MIN_UNAVAILABLE,
                                 "Deployment does not have minimum availability.", at)
        set_condition(status, cond)

    async def _sync_rollout_status(self, d: Obj, old_rss: list[Obj], new_rs: Obj | None) -> None:
        all_rss = [*([new_rs] if new_rs is not None else []), *old_rss]
        status = calculate_status(d, all_rss, new_rs)
        self._set_available(d, status)
        at = self.clock()
        if not has_progress_deadline(d):
            remove_condition(status, "Progressing")
        current = get_condition(status, "Progressing")
        complete = (_int(status.get("replicas")) == _int(status.get("updatedReplicas")) and current is not None
                    and current.get("reason") == NEW_RS_AVAILABLE)
        rs_name = _meta(new_rs).get("name") if new_rs is not None else None
        if has_progress_deadline(d) and not complete:
            if deployment_complete(d, status):
                set_condition(status, new_condition("Progressing", "True", NEW_RS_AVAILABLE,
                                                    f'ReplicaSet "{rs_name}" has successfully progressed.', at))
            elif deployment_progressing(d, status):
                msg = (f'ReplicaSet "{rs_name}" is progressing.' if rs_name
                       else f'Deployment "{_meta(d).get("name")}" is progressing.')
                cond = new_condition("Progressing", "True", RS_UPDATED, msg, at)
                if current is not None and current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime")
                remove_condition(status, "Progressing")
                set_condition(status, cond)
            elif deployment_timed_out(d, status, at):
                msg = (f'ReplicaSet "{rs_name}" has timed out progressing.' if rs_name
                       else f'Deployment "{_meta(d).get("name")}" has timed out progressing.')
                set_condition(status, new_condition("Progressing", "False", TIMED_OUT, msg, at))
        await self._write_status(d, status)
        self._requeue_stuck(d, status, at)

    def _requeue_stuck(self, d: Obj, status: Obj, at: datetime) -> None:
        """Come back when the progress deadline would pass, so a stuck rollout is reported on time."""
        cond = get_condition(status, "Progressing")
        if not has_progress_deadline(d) or cond is None or cond.get("reason") in (TIMED_OUT, NEW_RS_AVAILABLE) \
                or deployment_complete(d, status):
            return
        since = parse_rfc3339(str(cond.get("lastUpdateTime") or ""))
        if since is None:
            return
        after = (since + timedelta(seconds=_int(_spec(d).get("progressDeadlineSeconds"))) - at).total_seconds()
        self.enqueue_after(object_key(d), max(after + 1.0, 1.0))
