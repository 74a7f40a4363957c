"""The function controller: from a Function to an image, a Deployment and a Service.

::

    informers: functions, deployments and services labelled minik8s.io/function
        │ (a Deployment or Service event enqueues its owning Function)
        ▼
    WorkQueue of "ns/name" ──▶ workers: sync(key), level-triggered
        ├─ Function gone                      → nothing (owner references + GC remove the children)
        ├─ being deleted                      → builder.delete_images, then drop the finalizer
        ├─ no finalizer minik8s.io/function-images yet → add it (so images go even if we are down then)
        ├─ spec.codeDigest ≠ status.codeDigest → build (in a thread) → status.image, status.codeDigest, Built
        │     CodeError  → Built=False BuildFailed (kept until the spec changes: no rebuild loop)
        │     other error→ Built=False BuildError, raised: the queue retries with back-off
        ├─ Service NAME    create if missing, fix selector/ports/labels if drifted
        ├─ Deployment NAME create (replicas max(minScale, desiredScale)), fix template/strategy/labels
        │                  if drifted, spec.replicas never touched afterwards (the autoscaler owns it)
        └─ status          merge patch of functions/NAME/status: replicas, readyReplicas, url, conditions,
                           observedGeneration (never desiredScale / lastActiveTime: the autoscaler's)

Shapes of the owned objects: docs/serverless.md, "Objects the function controller owns".
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Hashable
from typing import Any, Protocol

from minik8s.api import apply_defaults, registry
from minik8s.client.informer import Informer, ListWatcher, object_key
from minik8s.client.workqueue import ItemExponentialRateLimiter, WorkQueue, run_worker
from minik8s.errors import AlreadyExists, NotFound
from minik8s.timeutil import rfc3339
from serverless.code import CodeError

log = logging.getLogger("minik8s.serverless.controller")

Obj = dict[str, Any]

FUNCTIONS = registry.lookup("functions")
DEPLOYMENTS = registry.lookup("deployments")
SERVICES = registry.lookup("services")

FUNCTION_LABEL = "minik8s.io/function"
CODE_DIGEST_ANNOTATION = "minik8s.io/code-digest"
IMAGES_FINALIZER = "minik8s.io/function-images"
CONTAINER_NAME = "function"
CONTAINER_PORT = 8080
SERVICE_PORT = 80
# Gunicorn workers per instance follow targetConcurrency, but a pod never runs more than this many.
MAX_WORKERS = 8
TERMINATION_GRACE_SECONDS = 5
# Everything is revisited this often even without events (a missed event costs at most this long).
DEFAULT_RESYNC = 300.0

# Condition reasons.
BUILT, BUILDING, BUILD_FAILED, BUILD_ERROR, NO_CODE = "Built", "Building", "BuildFailed", "BuildError", "NoCode"


class BuildResult(Protocol):
    """What :meth:`ImageBuilder.build` returns (``serverless.builder.BuildResult``)."""

    image: str
    tag: str
    seconds: float


class ImageBuilder(Protocol):
    """The part of ``serverless.builder.Builder`` the controller uses. Both calls block (run in a thread).

    ``build`` raises ``serverless.code.CodeError`` for code that can never build (a permanent failure);
    anything else it raises (registry down, pip network error) is transient and retried.
    """

    def build(self, namespace: str, name: str, code_digest: str) -> Any: ...

    def delete_images(self, namespace: str, name: str) -> int: ...


class FunctionClient(ListWatcher, Protocol):
    """The API calls the controller makes (``AsyncApiClient`` has them; unit tests pass a fake)."""

    async def create(self, obj: Obj, *, namespace: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> Obj: ...

    async def replace(self, obj: Obj) -> Obj: ...

    async def patch(self, rt: registry.ResourceType, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> Obj: ...


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _owner_ref(fn: Obj) -> Obj:
    meta = _meta(fn)
    return {"apiVersion": FUNCTIONS.api_version, "kind": FUNCTIONS.kind, "name": meta.get("name", ""),
            "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True}


def _controlled_by(obj: Obj, fn: Obj) -> bool:
    uid = _meta(fn).get("uid")
    return any(isinstance(r, dict) and r.get("controller") and r.get("uid") == uid
               for r in _meta(obj).get("ownerReferences") or [])


def _number_text(value: Any) -> str:
    """``60`` → ``"60"``, ``2.5`` → ``"2.5"`` (env values are strings; no ``60.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _set_condition(conditions: list[Obj], ctype: str, status: str, reason: str, message: str, *,
                   generation: int | None = None) -> list[Obj]:
    """``conditions`` with ``ctype`` set; its ``lastTransitionTime`` moves only when ``status`` changes."""
    out = [copy.deepcopy(c) for c in conditions if isinstance(c, dict) and c.get("type") != ctype]
    old = next((c for c in conditions if isinstance(c, dict) and c.get("type") == ctype), None)
    since = old.get("lastTransitionTime") if old is not None and old.get("status") == status else None
    new: Obj = {"type": ctype, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": since or rfc3339()}
    if generation is not None:
        new["observedGeneration"] = generation
    out.append(new)
    out.sort(key=lambda c: str(c.get("type")))
    return out


def _condition(fn: Obj, ctype: str) -> Obj | None:
    for c in (fn.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def desired_service(fn: Obj) -> Obj:
    """Service NAME: ClusterIP, selector ``minik8s.io/function=NAME``, port 80 → 8080 (``http``)."""
    meta = _meta(fn)
    name = meta.get("name", "")
    labels = {FUNCTION_LABEL: name}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": meta.get("namespace"), "labels": labels,
                         "ownerReferences": [_owner_ref(fn)]},
            "spec": {"type": "ClusterIP", "selector": dict(labels),
                     "ports": [{"name": "http", "protocol": "TCP", "port": SERVICE_PORT,
                                "targetPort": CONTAINER_PORT}]}}


# Seconds a replaced function pod keeps serving before SIGTERM (the Endpoints → gateway delay).
PRESTOP_SECONDS = 2


def desired_deployment(fn: Obj, image: str, code_digest: str, replicas: int) -> Obj:
    """Deployment NAME running ``image``, with the server's defaults applied (so it compares with a
    stored one field for field). ``replicas`` matters only on create."""
    meta = _meta(fn)
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    spec = fn.get("spec") or {}
    labels = {FUNCTION_LABEL: name}
    ours = {
        "MINIK8S_FUNCTION": f"{ns}/{name}",
        "MINIK8S_ENTRY_POINT": str(spec.get("entryPoint") or "run"),
        "MINIK8S_TIMEOUT": _number_text(spec.get("timeout", 60)),
        "MINIK8S_WORKERS": str(max(1, min(int(spec.get("targetConcurrency") or 2), MAX_WORKERS))),
    }
    # The runtime's variables win over a user's variable of the same name.
    env = [copy.deepcopy(v) for v in spec.get("env") or [] if isinstance(v, dict) and v.get("name") not in ours]
    env += [{"name": k, "value": v} for k, v in ours.items()]
    container: Obj = {
        "name": CONTAINER_NAME, "image": image,
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": CONTAINER_PORT}, "periodSeconds": 1},
        # A pod being replaced leaves the Endpoints (it is terminating) and then the gateway's instances;
        # gunicorn keeps serving for these seconds, so no call is forwarded to a socket that already closed.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
    }
    if spec.get("resources"):
        container["resources"] = copy.deepcopy(spec["resources"])
    dep: Obj = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels), "ownerReferences": [_owner_ref(fn)]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": {CODE_DIGEST_ANNOTATION: code_digest}},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS},
            },
        },
    }
    apply_defaults(dep, DEPLOYMENTS)
    return dep


def _labels_missing(obj: Obj, labels: dict[str, str]) -> bool:
    have = _meta(obj).get("labels") or {}
    return any(have.get(k) != v for k, v in labels.items())


class FunctionController:
    """See the module docstring. ``run()`` until ``stop()``; :meth:`sync` is the whole logic."""

    name = "function-controller"

    def __init__(self, client: FunctionClient, builder: ImageBuilder, *, advertise_url: str, workers: int = 2,
                 resync: float = DEFAULT_RESYNC, rate_limiter: ItemExponentialRateLimiter | None = None) -> None:
        self.client = client
        self.builder = builder
        self.advertise_url = advertise_url.rstrip("/")
        self.workers = max(1, workers)
        # Builds fail for seconds at a time (registry restarting): back off up to 5 minutes, from 1 s.
        self.queue = WorkQueue(rate_limiter=rate_limiter or ItemExponentialRateLimiter(base=1.0, cap=300.0))
        self.functions = Informer(client, FUNCTIONS, resync_period=resync, name="fn-functions")
        self.deployments = Informer(client, DEPLOYMENTS, label_selector=FUNCTION_LABEL, resync_period=resync,
                                    name="fn-deployments")
        self.services = Informer(client, SERVICES, label_selector=FUNCTION_LABEL, resync_period=resync,
                                 name="fn-services")
        self.functions.add_handler(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new),
                                   on_delete=self._enqueue)
        for inf in (self.deployments, self.services):
            inf.add_handler(on_add=self._enqueue_owner, on_update=lambda _old, new: self._enqueue_owner(new),
                            on_delete=self._enqueue_owner)
        self.builds = 0  # finished builds (successful or not), for metrics and tests
        # key → (codeDigest, image) of this controller's last successful build. Our own status write may not
        # be in the informer's cache yet when the next event (the finalizer patch, the Deployment we just
        # created) syncs the key again; the status of record still catches up, this only saves a rebuild.
        self._built: dict[str, tuple[str, str]] = {}
        self._stop = asyncio.Event()

    # --- event handlers (short: they only enqueue keys) ----------------------------------------------

    def _enqueue(self, fn: Obj) -> None:
        self.queue.add(object_key(fn))

    def _enqueue_owner(self, obj: Obj) -> None:
        meta = _meta(obj)
        owner = next((r.get("name") for r in meta.get("ownerReferences") or []
                      if isinstance(r, dict) and r.get("controller") and r.get("kind") == FUNCTIONS.kind), None)
        owner = owner or (meta.get("labels") or {}).get(FUNCTION_LABEL)
        if owner and meta.get("namespace"):
            self.queue.add(f"{meta['namespace']}/{owner}")

    # --- lifecycle -------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the informers, wait for their first lists, run the workers until :meth:`stop`."""
        self._stop.clear()
        informers = (self.functions, self.deployments, self.services)
        tasks = [asyncio.create_task(inf.run(), name=f"informer-{inf.name}") for inf in informers]
        try:
            for inf in informers:
                while not await inf.wait_synced(0.5):
                    if self._stop.is_set():
                        return
            log.info("%s synced; starting %d workers", self.name, self.workers)
            tasks += [asyncio.create_task(run_worker(self.queue, self._sync_key, name=self.name),
                                          name=f"{self.name}-worker-{i}") for i in range(self.workers)]
            await self._stop.wait()
        finally:
            self.queue.shut_down()
            for inf in informers:
                inf.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    async def _sync_key(self, key: Hashable) -> None:
        await self.sync(str(key))

    # --- the logic -------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        """Converge the Function ``key`` ("ns/name"). Raises on a failure worth retrying (with back-off)."""
        cached = self.functions.indexer.get(key)
        if cached is None:
            self._built.pop(key, None)
            return
        fn = copy.deepcopy(cached)
        meta = _meta(fn)
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        finalizers = [f for f in meta.get("finalizers") or [] if isinstance(f, str)]
        if meta.get("deletionTimestamp"):
            self._built.pop(key, None)
            if IMAGES_FINALIZER in finalizers:
                removed = await asyncio.to_thread(self.builder.delete_images, ns, name)
                log.info("function %s deleted: removed %d image manifests", key, removed)
                await self._write_finalizers(fn, [f for f in finalizers if f != IMAGES_FINALIZER])
            return
        if IMAGES_FINALIZER not in finalizers:
            fn = await self._write_finalizers(fn, [*finalizers, IMAGES_FINALIZER])

        status: Obj = copy.deepcopy(fn.get("status") or {})
        conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
        generation = int(meta.get("generation") or 1)
        spec = fn.get("spec") or {}
        digest = spec.get("codeDigest") or ""
        image, built_from = status.get("image") or "", status.get("codeDigest") or ""
        if digest and digest != built_from and self._built.get(key, ("", ""))[0] == digest:
            # Built by us a moment ago; the cached status (and its "Building" condition) is older than that.
            built_from, image = self._built[key]
            conditions = _set_condition(conditions, "Built", "True", BUILT, f"built {digest}",
                                        generation=int(meta.get("generation") or 1))

        if not digest:
            if not image:
                conditions = _set_condition(conditions, "Built", "False", NO_CODE,
                                            "spec.codeDigest is not set: upload the code first", generation=generation)
        elif digest != built_from or not image:
            failed = _condition(fn, "Built")
            gave_up = (failed is not None and failed.get("reason") == BUILD_FAILED
                       and failed.get("observedGeneration") == generation)
            if not gave_up:
                conditions = _set_condition(conditions, "Built", "Unknown", BUILDING,
                                            f"building {digest}", generation=generation)
                await self._patch_status(fn, {"conditions": conditions})
                try:
                    result = await asyncio.to_thread(self.builder.build, ns, name, digest)
                except CodeError as exc:
                    self.builds += 1
                    log.info("function %s: code %s does not build: %s", key, digest, exc)
                    conditions = _set_condition(conditions, "Built", "False", BUILD_FAILED, str(exc),
                                                generation=generation)
                except Exception as exc:
                    self.builds += 1
                    conditions = _set_condition(conditions, "Built", "False", BUILD_ERROR,
                                                f"{' '.join(str(exc).split()) or type(exc).__name__} (retrying)",
                                                generation=generation)
                    await self._patch_status(fn, {"conditions": conditions})
                    raise
                else:
                    self.builds += 1
                    image, built_from = result.image, digest
                    self._built[key] = (digest, image)
                    conditions = _set_condition(conditions, "Built", "True", BUILT,
                                                f"built {result.tag} in {float(result.seconds):.1f}s",
                                                generation=generation)

        changes: Obj = {"url": f"{self.advertise_url}/function/{ns}/{name}", "observedGeneration": generation}
        if image:
            changes.update(image=image, codeDigest=built_from)
            conditions, counts = await self._ensure_children(fn, image, built_from, conditions)
            changes.update(counts)
        else:
            conditions = _set_condition(conditions, "Ready", "False", "NotBuilt", "the function has no image yet")
        changes["conditions"] = conditions
        await self._patch_status(fn, changes)

    async def _ensure_children(self, fn: Obj, image: str, code_digest: str,
                               conditions: list[Obj]) -> tuple[list[Obj], Obj]:
        """Create or fix Service and Deployment; returns (conditions with Ready, replica counts)."""
        meta = _meta(fn)
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        key = f"{ns}/{name}"

        svc = self.services.indexer.get(key)
        want_svc = desired_service(fn)
        if svc is None:
            await self._create(want_svc, ns)
        elif not _controlled_by(svc, fn):
            return _set_condition(conditions, "Ready", "False", "NameConflict",
                                  f'service "{name}" exists and is not owned by this function'), {}
        else:
            live_spec = svc.get("spec") or {}
            if (live_spec.get("selector") != want_svc["spec"]["selector"]
                    or live_spec.get("ports") != want_svc["spec"]["ports"]
                    or live_spec.get("type") != "ClusterIP"
                    or _labels_missing(svc, want_svc["metadata"]["labels"])):
                fixed = copy.deepcopy(svc)
                fixed["spec"].update(type="ClusterIP", selector=want_svc["spec"]["selector"],
                                     ports=want_svc["spec"]["ports"])
                _meta(fixed)["labels"] = {**(_meta(svc).get("labels") or {}), **want_svc["metadata"]["labels"]}
                log.info("function %s: service drifted; fixing it", key)
                await self.client.replace(fixed)

        dep = self.deployments.indexer.get(key)
        spec = fn.get("spec") or {}
        desired_scale = (fn.get("status") or {}).get("desiredScale") or 0
        initial = max(int(spec.get("minScale") or 0), int(desired_scale))
        want = desired_deployment(fn, image, code_digest, initial)
        if dep is None:
            await self._create(want, ns)
            if initial:
                conditions = _set_condition(conditions, "Ready", "False", "Starting", "creating the deployment")
            else:
                conditions = self._cold(conditions)
            return conditions, {"replicas": 0, "readyReplicas": 0}
        if not _controlled_by(dep, fn):
            return _set_condition(conditions, "Ready", "False", "NameConflict",
                                  f'deployment "{name}" exists and is not owned by this function'), {}
        live = dep.get("spec") or {}
        if (live.get("template") != want["spec"]["template"] or live.get("strategy") != want["spec"]["strategy"]
                or _labels_missing(dep, want["metadata"]["labels"])):
            fixed = copy.deepcopy(dep)
            # Everything but replicas (the autoscaler's) and the immutable selector comes from the Function.
            fixed["spec"]["template"] = want["spec"]["template"]
            fixed["spec"]["strategy"] = want["spec"]["strategy"]
            _meta(fixed)["labels"] = {**(_meta(dep).get("labels") or {}), **want["metadata"]["labels"]}
            log.info("function %s: deployment differs from the function; updating it", key)
            # The cached resourceVersion goes along: a scale written meanwhile makes this a Conflict
            # (retried), never a lost autoscaler decision.
            await self.client.replace(fixed)
        dstatus = dep.get("status") or {}
        replicas, ready = int(dstatus.get("replicas") or 0), int(dstatus.get("readyReplicas") or 0)
        scale = int(live.get("replicas") or 0)
        if ready > 0:
            conditions = _set_condition(conditions, "Ready", "True", "InstancesReady",
                                        f"{ready} instance{'s' if ready != 1 else ''} ready")
        elif scale == 0:
            conditions = self._cold(conditions)
        else:
            conditions = _set_condition(conditions, "Ready", "False", "Starting",
                                        f"waiting for {scale} instance{'s' if scale != 1 else ''} to become ready")
        return conditions, {"replicas": replicas, "readyReplicas": ready}

    @staticmethod
    def _cold(conditions: list[Obj]) -> list[Obj]:
        return _set_condition(conditions, "Ready", "True", "ScaledToZero",
                              "no instance runs; the first request starts one")

    async def _create(self, obj: Obj, namespace: str) -> None:
        try:
            await self.client.create(obj, namespace=namespace)
            log.info("function %s/%s: created %s", namespace, _meta(obj).get("name"), obj["kind"])
        except AlreadyExists:
            # Our cache is behind; its event will bring the object and another sync.
            pass

    async def _write_finalizers(self, fn: Obj, finalizers: list[str]) -> Obj:
        """Set ``metadata.finalizers``, conditional on the resourceVersion we read (a Conflict is retried)."""
        meta = _meta(fn)
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}}
        try:
            written = await self.client.patch(FUNCTIONS, str(meta.get("name")), patch,
                                              namespace=meta.get("namespace"))
        except NotFound:
            return fn
        if not finalizers or not written:
            return fn
        return written

    async def _patch_status(self, fn: Obj, changes: Obj) -> None:
        """Merge-patch the fields in ``changes`` into ``status``, when any differs from what is stored.

        A merge patch touches only these fields, so the autoscaler's ``desiredScale`` and
        ``lastActiveTime`` are never overwritten.
        """
        status = fn.get("status") or {}
        if all(status.get(k) == v for k, v in changes.items()):
            return
        meta = _meta(fn)
        try:
            written = await self.client.patch(FUNCTIONS, str(meta.get("name")), {"status": changes},
                                              namespace=meta.get("namespace"), subresource="status")
        except NotFound:
            return  # deleted meanwhile: its DELETED event ends the story
        # Later comparisons in this sync see what we wrote.
        fn["status"] = written.get("status") if isinstance(written, dict) and written.get("status") is not None \
            else {**status, **changes}
