"""The Deployment controller against a recording fake client (sample-controller style): preload the
caches, call ``sync`` once, compare the recorded writes. Rollouts are simulated by playing the
ReplicaSet controller's part (status follows spec) between syncs."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controllers.base import InformerFactory
from controllers.deployment import (
    DESIRED_REPLICAS,
    HASH_LABEL,
    MAX_REPLICAS,
    REVISION,
    REVISION_HISTORY,
    DeploymentController,
    equal_ignore_hash,
    pod_template_hash,
    resolve_fenceposts,
    scaled_value,
)
from controllers.testing import RecordingClient, feed
from minik8s.api.registry import ResourceType
from minik8s.client.informer import object_key
from minik8s.patch import apply_patch
from minik8s.timeutil import rfc3339

pytestmark = pytest.mark.timeout(30)
Obj = dict[str, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def template(image: str = "web:1") -> Obj:
    return {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}], "restartPolicy": "Always"}}


def deployment(replicas: int = 3, image: str = "web:1", **spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1,
                         "resourceVersion": "1", "annotations": {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template(image),
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%",
                                                                             "maxUnavailable": "25%"}},
                     "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600, **spec},
            "status": {}}


class StoreClient(RecordingClient):
    """The recording client plus a tiny store, so a test can run several syncs in a row."""

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], Obj] = {}
        self.rv = 100
        self.uids = 0

    def _put(self, kind: str, obj: Obj) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.store[(kind, object_key(obj))] = obj
        return copy.deepcopy(obj)

    async def create(self, obj: Obj, **kw: Any) -> Obj:
        await super().create(obj, **kw)
        obj = copy.deepcopy(obj)
        self.uids += 1
        self.rv += 1
        obj["metadata"].update(uid=f"rs-uid-{self.uids}", generation=1,
                               creationTimestamp=rfc3339(T0 + timedelta(seconds=self.rv)))
        obj["status"] = {}
        return self._put(obj["kind"], obj)

    async def replace(self, obj: Obj) -> Obj:
        await super().replace(obj)
        cur = self.store[(obj["kind"], object_key(obj))]
        obj = copy.deepcopy(obj)
        obj["status"] = cur.get("status", {})
        if obj["spec"] != cur["spec"]:
            obj["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
        return self._put(obj["kind"], obj)

    async def replace_status(self, obj: Obj) -> Obj:
        await super().replace_status(obj)
        cur = copy.deepcopy(self.store[(obj["kind"], object_key(obj))])
        cur["status"] = copy.deepcopy(obj["status"])
        return self._put(obj["kind"], cur)

    async def patch(self, rt: ResourceType, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> Obj:
        await super().patch(rt, name, patch, namespace=namespace)
        cur = self.store[(rt.kind, f"{namespace}/{name}")]
        return self._put(rt.kind, apply_patch(cur, json.dumps(patch).encode(), "application/merge-patch+json",
                                              kind=rt.kind))

    async def delete(self, rt: ResourceType, name: str, namespace: str | None = None, **kw: Any) -> Obj:
        await super().delete(rt, name, namespace, **kw)
        self.store.pop((rt.kind, f"{namespace}/{name}"), None)
        return {}

    def of(self, kind: str) -> list[Obj]:
        return [o for (k, _), o in sorted(self.store.items()) if k == kind]

    def writes(self) -> list[tuple[str, str, str]]:
        return [v for v in self.verbs() if v[0] != "get"]


class Harness:
    def __init__(self, d: Obj, *rss: Obj) -> None:
        self.client = StoreClient()
        self.factory = InformerFactory()
        self.now = T0
        self.ctl = DeploymentController(self.client, self.factory, clock=lambda: self.now)
        self.client._put("Deployment", copy.deepcopy(d))
        for rs in rss:
            self.client._put("ReplicaSet", copy.deepcopy(rs))

    async def refresh(self) -> None:
        """The informers catch up with the store (adds, updates and deletes)."""
        for kind, plural in (("Deployment", "deployments"), ("ReplicaSet", "replicasets")):
            inf = self.factory.informer(plural)
            live = {object_key(o): o for o in self.client.of(kind)}
            for key in inf.indexer:
                if key not in live:
                    await feed(inf, "DELETED", inf.indexer.get(key) or {})
            for obj in live.values():
                await feed(inf, "MODIFIED" if object_key(obj) in inf.indexer else "ADDED", copy.deepcopy(obj))

    async def sync(self) -> None:
        await self.refresh()
        self.client.actions.clear()
        await self.ctl.sync("default/web")

    def d(self) -> Obj:
        return self.client.store[("Deployment", "default/web")]

    def rss(self) -> list[Obj]:
        return self.client.of("ReplicaSet")

    def rs_status_follows_spec(self, *, ready: bool = True) -> None:
        """Play the ReplicaSet controller: pods exist for spec.replicas and are available when ``ready``."""
        for rs in self.rss():
            n = rs["spec"]["replicas"]
            avail = n if ready or not self.is_new(rs) else 0
            rs["status"] = {"replicas": n, "readyReplicas": avail, "availableReplicas": avail,
                            "observedGeneration": rs["metadata"].get("generation", 1)}

    def is_new(self, rs: Obj) -> bool:
        return equal_ignore_hash(rs["spec"]["template"], self.d()["spec"]["template"])

    def set_template(self, image: str) -> None:
        d = self.d()
        d["spec"]["template"] = template(image)
        d["metadata"]["generation"] += 1


def old_rs(name: str, image: str, replicas: int, revision: int, *, created: int = 0) -> Obj:
    t = template(image)
    h = pod_template_hash(t)
    t["metadata"]["labels"][HASH_LABEL] = h
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "generation": 1,
                         "labels": dict(t["metadata"]["labels"]),
                         "creationTimestamp": rfc3339(T0 + timedelta(seconds=created)),
                         "annotations": {REVISION: str(revision), DESIRED_REPLICAS: str(replicas)},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                              "uid": "d-uid", "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web", HASH_LABEL: h}},
                     "template": t},
            "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                       "observedGeneration": 1}}


def cond(status: Obj, ctype: str) -> Obj:
    return next(c for c in status.get("conditions", []) if c["type"] == ctype)


# --- helpers ------------------------------------------------------------------------------------------


def test_scaled_values_round_like_kubernetes() -> None:
    assert scaled_value("25%", 10, round_up=True) == 3
    assert scaled_value("25%", 10, round_up=False) == 2
    assert scaled_value(2, 10, round_up=False) == 2
    assert resolve_fenceposts(deployment(3)) == (1, 0)  # 25% of 3: surge ceil 1, unavailable floor 0
    d = deployment(3, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})
    assert resolve_fenceposts(d) == (0, 1)


def test_template_hash_is_stable_and_ignores_its_own_label() -> None:
    t = template()
    h = pod_template_hash(t)
    assert h == pod_template_hash(copy.deepcopy(t)) and h.isalnum()
    labelled = copy.deepcopy(t)
    labelled["metadata"]["labels"][HASH_LABEL] = h
    assert equal_ignore_hash(t, labelled) and pod_template_hash(labelled) == h
    assert pod_template_hash(template("web:2")) != h
    assert pod_template_hash(t, 1) != h


# --- sync ---------------------------------------------------------------------------------------------


async def test_new_deployment_creates_its_replicaset() -> None:
    h = Harness(deployment(3))
    await h.sync()
    writes = h.client.writes()
    assert writes[0][:2] == ("create", "ReplicaSet")
    assert ("patch", "deployments", "default/web") in writes
    rs = h.rss()[0]
    hash_ = pod_template_hash(template())
    assert rs["metadata"]["name"] == f"web-{hash_}"
    assert rs["spec"]["replicas"] == 3
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", HASH_LABEL: hash_}
    assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", HASH_LABEL: hash_}
    ref = rs["metadata"]["ownerReferences"][0]
    assert ref["controller"] is True and ref["uid"] == "d-uid" and ref["kind"] == "Deployment"
    assert rs["metadata"]["annotations"][REVISION] == "1"
    assert rs["metadata"]["annotations"][DESIRED_REPLICAS] == "3"
    assert rs["metadata"]["annotations"][MAX_REPLICAS] == "4"
    d = h.d()
    assert d["metadata"]["annotations"][REVISION] == "1"
    assert cond(d["status"], "Progressing")["reason"] == "NewReplicaSetCreated"
    assert cond(d["status"], "Available")["status"] == "False"
    assert d["status"]["observedGeneration"] == 1

    # Pods come up: status follows, the rollout completes; a further sync writes nothing.
    h.rs_status_follows_spec()
    await h.sync()
    d = h.d()
    assert d["status"]["updatedReplicas"] == d["status"]["availableReplicas"] == 3
    assert cond(d["status"], "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert cond(d["status"], "Available")["status"] == "True"
    await h.sync()
    assert h.client.writes() == []


async def rollout(h: Harness, *, surge: int, unavailable: int, replicas: int, max_steps: int = 40) -> list[
        tuple[int, int]]:
    """Sync until the new RS has everything; after each step check the bounds. Returns (new, old) sizes."""
    sizes = []
    for _ in range(max_steps):
        await h.sync()
        rss = h.rss()
        total = sum(rs["spec"]["replicas"] for rs in rss)
        assert total <= replicas + surge, rss
        h.rs_status_follows_spec()
        available = sum(rs["status"]["availableReplicas"] for rs in h.rss())
        assert available >= replicas - unavailable
        new = [rs for rs in rss if h.is_new(rs)]
        new_size = new[0]["spec"]["replicas"] if new else 0
        sizes.append((new_size, total - new_size))
        if new_size == replicas and total == replicas:
            return sizes
    raise AssertionError(f"no convergence: {sizes}")


@pytest.mark.parametrize(("replicas", "max_surge", "max_unavailable"),
                         [(3, "25%", "25%"), (4, 1, 1), (10, "30%", "20%"), (5, 0, 2), (2, 2, 0)])
async def test_template_change_rolls_within_bounds(replicas: int, max_surge: Any, max_unavailable: Any) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable}}
    h = Harness(deployment(replicas, image="web:2", strategy=strategy),
                old_rs("web-old", "web:1", replicas, 1))
    surge, unavailable = resolve_fenceposts(h.d())
    sizes = await rollout(h, surge=surge, unavailable=unavailable, replicas=replicas)
    assert sizes[-1] == (replicas, 0)
    new = next(rs for rs in h.rss() if rs["metadata"]["name"] != "web-old")
    assert new["metadata"]["annotations"][REVISION] == "2"
    assert h.d()["metadata"]["annotations"][REVISION] == "2"
    # Complete: one more sync records the status; the old RS stays (history limit 10) at 0.
    await h.sync()
    assert cond(h.d()["status"], "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert next(rs for rs in h.rss() if rs["metadata"]["name"] == "web-old")["spec"]["replicas"] == 0


async def test_max_unavailable_zero_starts_new_pods_first() -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    h = Harness(deployment(2, image="web:2", strategy=strategy), old_rs("web-old", "web:1", 2, 1))
    await h.sync()
    sizes = {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in h.rss()}
    assert sizes["web-old"] == 2 and sum(sizes.values()) == 3
    # The new pod is not ready: nothing more happens, the old pods keep serving.
    h.rs_status_follows_spec(ready=False)
    for _ in range(3):
        await h.sync()
        assert {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in h.rss()} == sizes
    # Ready: one old replica goes.
    h.rs_status_follows_spec(ready=True)
    await h.sync()
    assert next(rs for rs in h.rss() if rs["metadata"]["name"] == "web-old")["spec"]["replicas"] == 1


async def test_scale_down_waits_for_the_replicaset_to_report_its_pods() -> None:
    """The new RS may not grow while an old RS still reports pods beyond its (lowered) spec."""
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    h = Harness(deployment(2, image="web:2", strategy=strategy), old_rs("web-old", "web:1", 2, 1))
    await h.sync()  # new RS at 1
    h.rs_status_follows_spec()
    await h.sync()  # old RS to 1 (status still says 2)
    old = next(rs for rs in h.rss() if rs["metadata"]["name"] == "web-old")
    assert old["spec"]["replicas"] == 1 and old["status"]["replicas"] == 2
    await h.sync()
    new = next(rs for rs in h.rss() if rs["metadata"]["name"] != "web-old")
    assert new["spec"]["replicas"] == 1  # 1 new + 2 old pods = replicas + surge already


async def test_recreate_scales_old_down_waits_for_pods_then_creates_new() -> None:
    h = Harness(deployment(2, image="web:2", strategy={"type": "Recreate"}), old_rs("web-old", "web:1", 2, 1))
    await h.sync()
    assert next(v[:2] for v in h.client.writes()) == ("update", "ReplicaSet")
    assert [rs["spec"]["replicas"] for rs in h.rss()] == [0]
    # The RS status still counts pods: no new RS yet.
    await h.sync()
    assert len(h.rss()) == 1
    # Status says 0, but a pod of the old RS is still in the cache (terminating).
    old = h.rss()[0]
    old["status"] = {"replicas": 0, "availableReplicas": 0, "observedGeneration": 2}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-old-x", "namespace": "default", "uid": "p1",
                        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-old", "uid": "uid-web-old",
                                             "controller": True}]},
           "status": {"phase": "Running"}}
    await feed(h.factory.informer("pods"), "ADDED", pod)
    await h.sync()
    assert len(h.rss()) == 1
    await feed(h.factory.informer("pods"), "DELETED", pod)
    assert len(h.ctl.queue) == 1  # the pod's deletion wakes the Deployment
    await h.sync()
    new = [rs for rs in h.rss() if rs["metadata"]["name"] != "web-old"]
    assert len(new) == 1 and new[0]["spec"]["replicas"] == 2


async def test_progress_deadline_exceeded_when_new_pods_never_become_ready() -> None:
    h = Harness(deployment(2, image="web:2", progressDeadlineSeconds=30), old_rs("web-old", "web:1", 2, 1))
    await h.sync()
    h.rs_status_follows_spec(ready=False)
    await h.sync()
    assert cond(h.d()["status"], "Progressing")["status"] == "True"
    h.now = T0 + timedelta(seconds=20)
    await h.sync()
    assert cond(h.d()["status"], "Progressing")["status"] == "True"
    h.now = T0 + timedelta(seconds=45)
    await h.sync()
    c = cond(h.d()["status"], "Progressing")
    assert (c["status"], c["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert "timed out progressing" in c["message"]
    # The old pods keep serving.
    assert next(rs for rs in h.rss() if rs["metadata"]["name"] == "web-old")["spec"]["replicas"] >= 2 - 0


async def test_history_limit_deletes_oldest_replicasets_at_zero() -> None:
    olds = [old_rs(f"web-r{i}", f"web:{i}", 0, i, created=i) for i in (1, 2, 3)]
    current = old_rs("web-cur", "web:4", 2, 4, created=4)
    h = Harness(deployment(2, image="web:4", revisionHistoryLimit=1), *olds, current)
    await h.sync()
    deleted = [v[2] for v in h.client.writes() if v[0] == "delete"]
    assert deleted == ["default/web-r1", "default/web-r2"]
    assert sorted(rs["metadata"]["name"] for rs in h.rss()) == ["web-cur", "web-r3"]


async def test_rollback_makes_an_old_template_current_with_a_new_revision() -> None:
    v1 = old_rs("web-v1", "web:1", 0, 1, created=1)
    v2 = old_rs("web-v2", "web:2", 2, 2, created=2)
    # What `minictl rollout undo` writes: the template of revision 1 (without the hash label).
    h = Harness(deployment(2, image="web:1"), v1, v2)
    h.d()["metadata"]["annotations"][REVISION] = "2"
    await h.sync()
    rs1 = next(rs for rs in h.rss() if rs["metadata"]["name"] == "web-v1")
    assert rs1["metadata"]["annotations"][REVISION] == "3"
    assert rs1["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert h.d()["metadata"]["annotations"][REVISION] == "3"
    assert len(h.rss()) == 2  # no new ReplicaSet: the old one is reused
    sizes = await rollout(h, surge=1, unavailable=0, replicas=2)
    assert sizes[-1] == (2, 0)


async def test_paused_deployment_does_not_roll_out() -> None:
    h = Harness(deployment(2, image="web:2", paused=True), old_rs("web-old", "web:1", 2, 1))
    await h.sync()
    assert len(h.rss()) == 1
    c = cond(h.d()["status"], "Progressing")
    assert (c["status"], c["reason"]) == ("Unknown", "DeploymentPaused")
    # Scaling still works while paused.
    h.d()["spec"]["replicas"] = 4
    await h.sync()
    assert h.rss()[0]["spec"]["replicas"] == 4


async def test_scaling_event_scales_the_active_replicaset() -> None:
    h = Harness(deployment(5), old_rs("web-cur", "web:1", 3, 1))
    await h.sync()
    rs = h.rss()[0]
    assert rs["spec"]["replicas"] == 5
    assert rs["metadata"]["annotations"][DESIRED_REPLICAS] == "5"


async def test_orphan_replicaset_is_adopted_and_a_mismatched_one_released() -> None:
    orphan = old_rs("web-orphan", "web:1", 3, 1)
    orphan["metadata"]["ownerReferences"] = []
    stray = old_rs("web-stray", "web:9", 0, 0)
    stray["metadata"]["labels"] = {"app": "other"}
    h = Harness(deployment(3), orphan, stray)
    await h.sync()
    patched = [v[2] for v in h.client.writes() if v[0] == "patch" and v[1] == "replicasets"]
    assert patched == ["default/web-orphan", "default/web-stray"] or sorted(patched) == \
        ["default/web-orphan", "default/web-stray"]
    rs = h.client.store[("ReplicaSet", "default/web-orphan")]
    assert rs["metadata"]["ownerReferences"][0]["uid"] == "d-uid"
    assert h.client.store[("ReplicaSet", "default/web-stray")]["metadata"]["ownerReferences"] == []
    assert [r for r in h.rss() if r["metadata"]["name"].startswith("web-") and
            r["metadata"]["name"] not in ("web-orphan", "web-stray")] == []  # no new RS: the orphan is it


async def test_missing_deployment_is_done() -> None:
    h = Harness(deployment(1))
    await h.ctl.sync("default/gone")
    assert h.client.actions == []
