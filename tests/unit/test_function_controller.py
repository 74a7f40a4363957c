"""The function controller's sync, sample-controller style: informers filled by hand, a fake builder and a
recording client; one ``sync`` call, then the recorded API actions and builds are compared."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from minik8s.api import apply_defaults, registry
from minik8s.errors import AlreadyExists
from serverless.code import CodeError
from serverless.controller import (
    CODE_DIGEST_ANNOTATION,
    FUNCTION_LABEL,
    IMAGES_FINALIZER,
    FunctionController,
    desired_deployment,
    desired_service,
)

pytestmark = pytest.mark.timeout(10)

Obj = dict[str, Any]
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
URL = "http://127.0.0.1:18081"
UID = "uid-add"


class Result:
    def __init__(self, image: str, tag: str) -> None:
        self.image, self.tag, self.manifest_digest, self.deps_layer, self.seconds = image, tag, "sha256:m", None, 0.25


class FakeBuilder:
    def __init__(self) -> None:
        self.builds: list[tuple[str, str, str]] = []
        self.deleted: list[tuple[str, str]] = []
        self.error: Exception | None = None

    def build(self, namespace: str, name: str, code_digest: str) -> Result:
        self.builds.append((namespace, name, code_digest))
        if self.error is not None:
            raise self.error
        return Result(f"127.0.0.1:5555/minik8s-functions/{namespace}/{name}@sha256:{code_digest[7:19]}",
                      f"c-{code_digest[7:27]}")

    def delete_images(self, namespace: str, name: str) -> int:
        self.deleted.append((namespace, name))
        return 2


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


class FakeClient:
    """Records ``(verb, kind-or-plural, key, body)``; patches are applied to ``objects`` when present."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, str, str, Any]] = []
        self.objects: dict[str, Obj] = {}
        self.exists: set[str] = set()

    def verbs(self) -> list[tuple[str, str, str]]:
        return [a[:3] for a in self.actions]

    async def list(self, rt: Any, namespace: str | None = None, **_: Any) -> tuple[list[Obj], str]:
        return [], "1"

    async def watch(self, rt: Any, namespace: str | None = None, **_: Any):  # type: ignore[no-untyped-def]
        if False:
            yield "", {}

    async def create(self, obj: Obj, *, namespace: str | None = None, **_: Any) -> Obj:
        key = f"{namespace}/{obj['metadata']['name']}"
        self.actions.append(("create", obj["kind"], key, copy.deepcopy(obj)))
        if f"{obj['kind']}/{key}" in self.exists:
            raise AlreadyExists("exists")
        return obj

    async def replace(self, obj: Obj) -> Obj:
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        self.actions.append(("update", obj["kind"], key, copy.deepcopy(obj)))
        return obj

    async def patch(self, rt: registry.ResourceType, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> Obj:
        key = f"{namespace}/{name}"
        verb = f"patch-{subresource}" if subresource else "patch"
        self.actions.append((verb, rt.plural, key, copy.deepcopy(patch)))
        merged = _merge(self.objects.get(key, {}), patch)
        self.objects[key] = merged
        return merged


def function(*, digest: str | None = D1, status: Obj | None = None, finalizers: list[str] | None = None,
             **spec: Any) -> Obj:
    fn: Obj = {"apiVersion": "minik8s.io/v1", "kind": "Function",
               "metadata": {"name": "add", "namespace": "default", "uid": UID, "resourceVersion": "7",
                            "generation": 1,
                            "finalizers": [IMAGES_FINALIZER] if finalizers is None else finalizers},
               "spec": {"codeDigest": digest, **spec} if digest else dict(spec), "status": status or {}}
    apply_defaults(fn, registry.lookup("functions"))
    return fn


def built(digest: str = D1, **extra: Any) -> Obj:
    return {"codeDigest": digest, "image": f"reg/minik8s-functions/default/add@sha256:{digest[7:19]}",
            "conditions": [{"type": "Built", "status": "True", "reason": "Built", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}], **extra}


def live_deployment(fn: Obj, scale: int, **status: Any) -> Obj:
    st = fn["status"]
    dep = desired_deployment(fn, st["image"], st["codeDigest"], scale)
    dep["metadata"].update(resourceVersion="11", uid="uid-dep")
    dep["status"] = status
    return dep


def live_service(fn: Obj) -> Obj:
    svc = desired_service(fn)
    apply_defaults(svc, registry.lookup("services"))
    svc["metadata"].update(resourceVersion="12", uid="uid-svc")
    svc["spec"]["clusterIP"] = "10.96.0.20"
    return svc


async def make(fn: Obj | None = None, *objs: Obj) -> tuple[FunctionController, FakeClient, FakeBuilder]:
    client, builder = FakeClient(), FakeBuilder()
    c = FunctionController(client, builder, advertise_url=URL + "/")
    if fn is not None:
        await c.functions._apply("ADDED", fn)
        client.objects["default/add"] = copy.deepcopy(fn)
    for obj in objs:
        await (c.deployments if obj["kind"] == "Deployment" else c.services)._apply("ADDED", obj)
    return c, client, builder


def last_status(client: FakeClient) -> Obj:
    patches = [a[3]["status"] for a in client.actions if a[0] == "patch-status"]
    assert patches, client.verbs()
    return patches[-1]


def cond(status: Obj, ctype: str) -> Obj:
    return next(c for c in status["conditions"] if c["type"] == ctype)


# --- build ------------------------------------------------------------------------------------------

async def test_a_new_function_is_built_then_gets_a_service_and_a_deployment() -> None:
    c, client, builder = await make(function(finalizers=[]))
    await c.sync("default/add")
    assert builder.builds == [("default", "add", D1)]
    assert client.verbs() == [("patch", "functions", "default/add"), ("patch-status", "functions", "default/add"),
                              ("create", "Service", "default/add"), ("create", "Deployment", "default/add"),
                              ("patch-status", "functions", "default/add")]
    assert client.actions[0][3] == {"metadata": {"finalizers": [IMAGES_FINALIZER], "resourceVersion": "7"}}
    assert cond(client.actions[1][3]["status"], "Built")["reason"] == "Building"
    st = last_status(client)
    assert st["codeDigest"] == D1 and st["image"].startswith("127.0.0.1:5555/minik8s-functions/default/add@")
    assert st["url"] == f"{URL}/function/default/add" and st["observedGeneration"] == 1
    assert (st["replicas"], st["readyReplicas"]) == (0, 0)
    assert cond(st, "Built")["status"] == "True" and "c-1111" in cond(st, "Built")["message"]
    assert cond(st, "Ready")["status"] == "True" and cond(st, "Ready")["reason"] == "ScaledToZero"
    assert "desiredScale" not in st and "lastActiveTime" not in st


async def test_a_stale_cache_after_our_build_neither_rebuilds_nor_writes_building_back() -> None:
    fn = function(finalizers=[IMAGES_FINALIZER])
    c, client, builder = await make(fn)
    await c.sync("default/add")
    # The informer still holds the object from before our status writes, with Built=Building in flight.
    stale = copy.deepcopy(fn)
    stale["status"] = {"conditions": [{"type": "Built", "status": "Unknown", "reason": "Building", "message": "",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}
    await c.functions._apply("MODIFIED", stale)
    await c.sync("default/add")
    assert builder.builds == [("default", "add", D1)]
    st = last_status(client)
    assert st["codeDigest"] == D1 and cond(st, "Built")["status"] == "True"


async def test_the_owned_objects_have_the_contract_shapes() -> None:
    fn = function(env=[{"name": "GREETING", "value": "hi"}, {"name": "MINIK8S_TIMEOUT", "value": "x"}],
                  resources={"limits": {"memory": "128Mi"}}, targetConcurrency=20, timeout=2.5, entryPoint="handler")
    c, client, _ = await make(fn)
    await c.sync("default/add")
    created = {a[1]: a[3] for a in client.actions if a[0] == "create"}
    svc, dep = created["Service"], created["Deployment"]
    owner = {"apiVersion": "minik8s.io/v1", "kind": "Function", "name": "add", "uid": UID, "controller": True,
             "blockOwnerDeletion": True}
    for obj in (svc, dep):
        assert obj["metadata"]["labels"] == {FUNCTION_LABEL: "add"}
        assert obj["metadata"]["ownerReferences"] == [owner]
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["selector"] == {FUNCTION_LABEL: "add"}
    assert svc["spec"]["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
    spec = dep["spec"]
    assert spec["replicas"] == 0 and spec["selector"] == {"matchLabels": {FUNCTION_LABEL: "add"}}
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    tmpl = spec["template"]
    assert tmpl["metadata"] == {"labels": {FUNCTION_LABEL: "add"}, "annotations": {CODE_DIGEST_ANNOTATION: D1}}
    assert tmpl["spec"]["terminationGracePeriodSeconds"] == 5
    [ctr] = tmpl["spec"]["containers"]
    assert ctr["name"] == "function" and ctr["image"].endswith("@sha256:111111111111")
    assert ctr["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert ctr["resources"] == {"limits": {"memory": "128Mi"}}
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/healthz" and ctr["readinessProbe"]["httpGet"]["port"] == 8080
    assert ctr["readinessProbe"]["periodSeconds"] == 1
    assert ctr["env"] == [{"name": "GREETING", "value": "hi"},
                          {"name": "MINIK8S_FUNCTION", "value": "default/add"},
                          {"name": "MINIK8S_ENTRY_POINT", "value": "handler"},
                          {"name": "MINIK8S_TIMEOUT", "value": "2.5"},
                          {"name": "MINIK8S_WORKERS", "value": "8"}]


async def test_the_same_digest_is_not_built_again_and_nothing_is_written() -> None:
    fn = function(status=built())
    dep = live_deployment(fn, 0)
    c, client, builder = await make(fn, dep, live_service(fn))
    await c.sync("default/add")
    assert builder.builds == []
    # Only the status (url, Ready, counts) is written once; a second sync writes nothing.
    assert client.verbs() == [("patch-status", "functions", "default/add")]
    fn2 = copy.deepcopy(fn)
    fn2["status"] = _merge(fn["status"], last_status(client))
    c2, client2, builder2 = await make(fn2, dep, live_service(fn))
    await c2.sync("default/add")
    assert client2.actions == [] and builder2.builds == []


async def test_a_new_digest_is_built_and_rolled_out_without_touching_replicas() -> None:
    old = function(status=built(D1, desiredScale=1))
    dep = live_deployment(old, 3, replicas=3, readyReplicas=3)
    fn = function(digest=D2, status=built(D1, desiredScale=1))
    fn["metadata"]["generation"] = 2
    c, client, builder = await make(fn, dep, live_service(fn))
    await c.sync("default/add")
    assert builder.builds == [("default", "add", D2)]
    [update] = [a[3] for a in client.actions if a[0] == "update"]
    assert update["kind"] == "Deployment" and update["spec"]["replicas"] == 3
    assert update["metadata"]["resourceVersion"] == "11"
    tmpl = update["spec"]["template"]
    assert tmpl["metadata"]["annotations"][CODE_DIGEST_ANNOTATION] == D2
    assert tmpl["spec"]["containers"][0]["image"].endswith("@sha256:222222222222")
    st = last_status(client)
    assert st["codeDigest"] == D2 and (st["replicas"], st["readyReplicas"]) == (3, 3)
    assert cond(st, "Ready")["status"] == "True" and st["observedGeneration"] == 2


async def test_create_uses_the_larger_of_min_scale_and_desired_scale() -> None:
    c, client, _ = await make(function(minScale=1, status=built(desiredScale=4)))
    await c.sync("default/add")
    [dep] = [a[3] for a in client.actions if a[0] == "create" and a[1] == "Deployment"]
    assert dep["spec"]["replicas"] == 4
    assert cond(last_status(client), "Ready")["reason"] == "Starting"
    c, client, _ = await make(function(minScale=2, status=built()))
    await c.sync("default/add")
    [dep] = [a[3] for a in client.actions if a[0] == "create" and a[1] == "Deployment"]
    assert dep["spec"]["replicas"] == 2


async def test_bad_code_is_build_failed_and_not_retried_until_the_spec_changes() -> None:
    c, client, builder = await make(function())
    builder.error = CodeError(400, "main.py line 3: invalid syntax")
    await c.sync("default/add")
    st = last_status(client)
    built_cond = cond(st, "Built")
    assert (built_cond["status"], built_cond["reason"]) == ("False", "BuildFailed")
    assert built_cond["message"] == "main.py line 3: invalid syntax"
    assert cond(st, "Ready")["status"] == "False" and "image" not in st
    assert not [a for a in client.actions if a[0] == "create"]
    # The stored failure stops a rebuild of the same generation (no build loop on resync)...
    failed = function(status=client.objects["default/add"]["status"])
    c, client, builder = await make(failed)
    await c.sync("default/add")
    assert builder.builds == []
    # ...and a changed spec builds again.
    failed["metadata"]["generation"] = 2
    failed["spec"]["codeDigest"] = D2
    c, client, builder = await make(failed)
    await c.sync("default/add")
    assert builder.builds == [("default", "add", D2)]


async def test_a_transient_build_error_is_raised_for_back_off() -> None:
    c, client, builder = await make(function())
    builder.error = OSError("registry 127.0.0.1:5555 refused the connection")
    with pytest.raises(OSError):
        await c.sync("default/add")
    built_cond = cond(last_status(client), "Built")
    assert built_cond["reason"] == "BuildError" and "refused" in built_cond["message"]


async def test_no_code_digest_means_no_build() -> None:
    c, client, builder = await make(function(digest=None))
    await c.sync("default/add")
    assert builder.builds == []
    st = last_status(client)
    assert cond(st, "Built")["reason"] == "NoCode" and cond(st, "Ready")["reason"] == "NotBuilt"


# --- drift and ownership ----------------------------------------------------------------------------

async def test_a_drifted_service_is_fixed_and_a_foreign_one_left_alone() -> None:
    fn = function(status=built())
    svc = live_service(fn)
    svc["spec"]["selector"] = {"app": "other"}
    c, client, _ = await make(fn, live_deployment(fn, 0), svc)
    await c.sync("default/add")
    [update] = [a[3] for a in client.actions if a[0] == "update"]
    assert update["spec"]["selector"] == {FUNCTION_LABEL: "add"} and update["spec"]["clusterIP"] == "10.96.0.20"

    foreign = live_service(fn)
    foreign["metadata"]["ownerReferences"] = []
    c, client, _ = await make(fn, live_deployment(fn, 0), foreign)
    await c.sync("default/add")
    assert not [a for a in client.actions if a[0] in ("update", "create")]
    assert cond(last_status(client), "Ready")["reason"] == "NameConflict"


async def test_a_deleted_deployment_is_created_again() -> None:
    fn = function(status=built(desiredScale=2))
    c, client, _ = await make(fn, live_service(fn))
    await c.sync("default/add")
    assert ("create", "Deployment", "default/add") in client.verbs()


async def test_an_already_existing_child_is_left_to_the_next_event() -> None:
    c, client, _ = await make(function(status=built()))
    client.exists = {"Service/default/add", "Deployment/default/add"}
    await c.sync("default/add")  # no raise: the informer will bring them


async def test_child_events_enqueue_the_owning_function() -> None:
    fn = function(status=built())
    c, _, _ = await make()
    await c.deployments._apply("ADDED", live_deployment(fn, 0))
    assert len(c.queue) == 1 and await c.queue.get() == "default/add"
    c, _, _ = await make()
    svc = live_service(fn)
    svc["metadata"]["ownerReferences"] = []
    await c.services._apply("DELETED", svc)  # found through its label
    assert await c.queue.get() == "default/add"


# --- finalizer ----------------------------------------------------------------------------------------

async def test_deleting_a_function_deletes_its_images_then_the_finalizer() -> None:
    fn = function(status=built(), finalizers=["other.io/keep", IMAGES_FINALIZER])
    fn["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    c, client, builder = await make(fn)
    await c.sync("default/add")
    assert builder.deleted == [("default", "add")] and builder.builds == []
    assert client.actions == [("patch", "functions", "default/add",
                               {"metadata": {"finalizers": ["other.io/keep"], "resourceVersion": "7"}})]


async def test_a_gone_function_or_one_without_our_finalizer_being_deleted_is_left_alone() -> None:
    c, client, builder = await make()
    await c.sync("default/add")
    fn = function(finalizers=[])
    fn["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    c, client, builder = await make(fn)
    await c.sync("default/add")
    assert client.actions == [] and builder.deleted == []
