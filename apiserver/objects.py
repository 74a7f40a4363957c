"""The object rules of the API, independent of HTTP: create, get, list, update, patch, delete.

``Objects`` turns a request's body and options into storage operations, the way the Kubernetes
generic registry does:

    body ─▶ prepare (kind, namespace, unknown fields) ─▶ defaults ─▶ validate ─▶ Store (etcd)

Rules kept here (see docs/api.md): the server owns uid, creationTimestamp, resourceVersion and
generation; writes to the main resource never change ``status`` and ``/status`` writes change only
``status``; ``generation`` counts spec changes; a stale resourceVersion is a 409 Conflict;
deletion with finalizers or a grace period sets ``deletionTimestamp`` first; nothing invalid is
stored. Every error raised is a ``minik8s.errors.ApiError``.
"""

from __future__ import annotations

import copy
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from apiserver.allocators import Allocator, RangeFull
from apiserver.storage import (
    KeyExists,
    KeyNotFound,
    RevisionConflict,
    StorageError,
    StorageUnavailable,
    Store,
)
from apiserver.watchcache import WatchCache
from minik8s.api import (
    apply_defaults,
    parse_field_selector,
    parse_label_selector,
    registry,
    unknown_fields,
    unused_fields,
    validate,
)
from minik8s.api.registry import ResourceType
from minik8s.api.selectors import selector_to_string
from minik8s.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Cause,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
)
from minik8s.patch import apply_patch
from minik8s.timeutil import now, rfc3339

log = logging.getLogger("minik8s.apiserver")

# Metadata fields only the server writes; whatever a client sends for them is replaced.
SERVER_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
               "selfLink")
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
# Deeper objects are refused: copy.deepcopy and friends recurse, and no real object comes close.
MAX_DEPTH = 100
# Kinds whose status a create keeps (a kubelet registers its Node with a status).
KEEP_STATUS_ON_CREATE = ("Node",)
_NAME_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def _sub(obj: Any, key: str) -> dict[str, Any]:
    """``obj[key]`` when both are dicts, else an empty dict (stored objects may have odd shapes)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(_meta(obj).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def _without_volatile(obj: dict[str, Any]) -> dict[str, Any]:
    """The object minus resourceVersion, to tell whether a write changes anything."""
    out = dict(obj)
    m = dict(_meta(obj))
    m.pop("resourceVersion", None)
    out["metadata"] = m
    return out


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything that counts for ``generation``: the object minus metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def prune(obj: Any, paths: list[str]) -> None:
    """Remove the fields at Kubernetes-style ``paths`` (``spec.containers[0].bogus``) from ``obj``."""
    for path in paths:
        tokens: list[str | int] = [m.group(1) if m.group(1) is not None else int(m.group(2))
                                   for m in _PATH_TOKEN.finditer(path)]
        cur = obj
        for tok in tokens[:-1]:
            in_list = isinstance(tok, int) and isinstance(cur, list) and tok < len(cur)
            in_dict = isinstance(tok, str) and isinstance(cur, dict) and tok in cur
            if in_list or in_dict:
                cur = cur[tok]
            else:
                cur = None
                break
        if tokens and isinstance(cur, dict) and isinstance(tokens[-1], str):
            cur.pop(tokens[-1], None)


class Objects:
    """The API's object rules over one ``Store``; one instance per apiserver process."""

    def __init__(self, store: Store, caches: dict[str, WatchCache], *, ip_alloc: Allocator,
                 port_alloc: Allocator, ip_range: str, event_ttl: int) -> None:
        self.store = store
        self.caches = caches
        self.ip_alloc = ip_alloc
        self.port_alloc = port_alloc
        self.ip_range = ip_range
        self.event_ttl = event_ttl
        self.namespace_deleted: Callable[[], None] = lambda: None

    # --- reads ---------------------------------------------------------------------------------

    async def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        try:
            return await self.store.get(rt.key(namespace, name))
        except KeyNotFound:
            raise NotFound(f'{rt.qualified} "{name}" not found', kind=rt.plural, name=name, group=rt.group) from None
        except StorageError as e:
            raise _unavailable(e) from e

    async def list_objects(self, rt: ResourceType, namespace: str | None, *, label_selector: str = "",
                   field_selector: str = "", resource_version: str = "") -> tuple[list[dict[str, Any]], str]:
        """Objects of ``rt`` (in ``namespace``, or all) that match both selectors, and the list RV.

        ``resource_version`` "0" may be served from the watch cache; anything else reads etcd, so a
        list right after a write always sees it.
        """
        matches = self.matcher(rt, label_selector, field_selector)
        cache = self.caches.get(rt.plural)
        if resource_version == "0" and cache is not None:
            items, rev = cache.snapshot()
            items = [o for o in items if not namespace or not rt.namespaced
                     or _meta(o).get("namespace") == namespace]
        else:
            try:
                items, rev = await self.store.list(rt.key_prefix(namespace))
            except StorageError as e:
                raise _unavailable(e) from e
        return [o for o in items if matches(o)], str(rev)

    @staticmethod
    def matcher(rt: ResourceType, label_selector: str, field_selector: str) -> Callable[[dict[str, Any]], bool]:
        """A predicate for both selectors (raises ``BadRequest`` for bad syntax or fields)."""
        labels = parse_label_selector(label_selector or "")
        fields = parse_field_selector(field_selector or "", rt.kind)
        if labels.empty and not field_selector:
            return lambda o: True
        return lambda o: labels.matches(_meta(o).get("labels") or {}) and fields.matches(o)

    # --- create --------------------------------------------------------------------------------

    async def create(self, rt: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False,
                     field_validation: str = "") -> tuple[dict[str, Any], list[str]]:
        obj, warnings = self._prepare(rt, namespace, body, field_validation)
        meta = obj["metadata"]
        for f in SERVER_META:
            meta.pop(f, None)
        meta.pop("resourceVersion", None)
        if not meta.get("name") and isinstance(meta.get("generateName"), str) and meta["generateName"]:
            meta["name"] = meta["generateName"] + "".join(random.choice(_NAME_SUFFIX) for _ in range(5))
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339()
        meta["generation"] = 1
        if rt.kind not in KEEP_STATUS_ON_CREATE and "status" in rt.subresources:
            obj["status"] = {}
        apply_defaults(obj, rt)
        if rt.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        self._validate(rt, obj)
        name = meta["name"]
        if rt.namespaced:
            await self._check_namespace_open(namespace or "")
        if rt.kind == "Event" and not dry_run:
            merged = await self._merge_event(rt, obj)
            if merged is not None:
                return merged, warnings
        if dry_run:
            return obj, warnings
        allocated = await self._allocate_service(obj, None) if rt.kind == "Service" else []
        try:
            stored = await self.store.create(rt.key(namespace, name), obj,
                                             lease_ttl=self.event_ttl if rt.kind == "Event" else None)
        except KeyExists:
            await self._release(allocated, obj)
            raise AlreadyExists(f'{rt.qualified} "{name}" already exists', kind=rt.plural, name=name,
                                group=rt.group) from None
        except StorageError as e:
            await self._release(allocated, obj)
            raise _unavailable(e) from e
        except BaseException:
            await self._release(allocated, obj)
            raise
        return stored, warnings

    def _prepare(self, rt: ResourceType, namespace: str | None, body: Any,
                 field_validation: str) -> tuple[dict[str, Any], list[str]]:
        """Check the envelope of a written object and settle unknown fields.

        Takes ownership of ``body`` (freshly parsed from a request, or a patch result) and returns
        it changed; callers never pass a shared object.
        """
        if not isinstance(body, dict):
            raise BadRequest(f"the body of the request must be a JSON object describing a {rt.kind}")
        problem = _shape_error(body, MAX_DEPTH)
        if problem:
            raise BadRequest(problem)
        obj = body
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version not in (None, "", rt.api_version):
            raise BadRequest(f"the API version in the data ({api_version}) does not match the expected API version "
                             f"({rt.api_version})")
        if kind not in (None, "", rt.kind):
            raise BadRequest(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise BadRequest("metadata must be a JSON object")
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise BadRequest("the namespace of the provided object does not match the namespace sent on the "
                                 "request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        warnings: list[str] = []
        unknown = unknown_fields(obj, rt)
        if unknown:
            if field_validation == "Strict":
                raise BadRequest("strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in unknown))
            if field_validation != "Ignore":
                warnings += [f'unknown field "{p}"' for p in unknown]
            # Like Kubernetes, a field outside the schema is dropped, never stored.
            prune(obj, unknown)
        for p in unused_fields(obj, rt):
            warnings.append(f'field "{p}" is stored, but minik8s does not act on it yet')
        return obj, warnings

    def _validate(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        causes = validate(obj, rt, old=old)
        if causes:
            raise Invalid.of(rt.kind, str(_meta(obj).get("name") or ""), causes, group=rt.group)

    async def check_namespace_open(self, namespace: str) -> None:
        """``NotFound`` if ``namespace`` does not exist, ``Forbidden`` if it is being terminated."""
        await self._check_namespace_open(namespace)

    async def _check_namespace_open(self, namespace: str) -> None:
        ns_rt = registry.by_kind("v1", "Namespace")
        assert ns_rt is not None
        ns = self._cached(ns_rt, None, namespace)
        if ns is None:
            try:
                ns = await self.store.get(ns_rt.key(None, namespace))
            except KeyNotFound:
                raise NotFound(f'namespaces "{namespace}" not found', kind="namespaces", name=namespace) from None
        if _meta(ns).get("deletionTimestamp"):
            raise Forbidden(f"unable to create new content in namespace {namespace} because it is being terminated",
                            kind="namespaces", name=namespace)

    def _cached(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        cache = self.caches.get(rt.plural)
        return cache.get(rt.key(namespace, name)) if cache is not None else None

    async def _merge_event(self, rt: ResourceType, ev: dict[str, Any]) -> dict[str, Any] | None:
        """Fold a repeat of an existing event into it (count, lastTimestamp); None if it is new."""
        cache = self.caches.get(rt.plural)
        if cache is None:
            return None
        ident = _event_identity(ev)
        ns = _meta(ev).get("namespace")
        for other in cache.snapshot()[0]:
            if _meta(other).get("namespace") == ns and _event_identity(other) == ident:
                key = rt.key(ns, _meta(other)["name"])
                add: int = ev["count"] if isinstance(ev.get("count"), int) and ev["count"] > 0 else 1
                last = ev.get("lastTimestamp") or rfc3339()

                def bump(cur: dict[str, Any], add: int = add, last: str = last) -> dict[str, Any]:
                    cur["count"] = int(cur.get("count") or 1) + add
                    cur["lastTimestamp"] = last
                    return cur
                try:
                    return await self.store.guaranteed_update(key, bump)
                except KeyNotFound:
                    return None  # expired meanwhile: store the new one
        return None

    # --- update and patch ----------------------------------------------------------------------

    async def update(self, rt: ResourceType, namespace: str | None, name: str, body: Any, *,
                     subresource: str = "", dry_run: bool = False,
                     field_validation: str = "") -> tuple[dict[str, Any], list[str]]:
        """PUT: replace the object (or only its status for ``subresource="status"``)."""
        new, warnings = self._prepare(rt, namespace, body, field_validation)
        body_name = _meta(new).get("name")
        if body_name not in (None, "", name):
            raise BadRequest(f'the name of the object ({body_name}) does not match the name on the URL ({name})')
        _meta(new)["name"] = name

        async def try_update(cur: dict[str, Any]) -> dict[str, Any] | None:
            return await self._next_state(rt, cur, copy.deepcopy(new), subresource)

        return await self._write(rt, namespace, name, try_update, dry_run), warnings

    async def patch(self, rt: ResourceType, namespace: str | None, name: str, body: bytes, content_type: str, *,
                    subresource: str = "", dry_run: bool = False,
                    field_validation: str = "") -> tuple[dict[str, Any], list[str]]:
        warnings: list[str] = []

        async def try_update(cur: dict[str, Any]) -> dict[str, Any] | None:
            patched = apply_patch(cur, body, content_type, kind=rt.kind)
            prepared, w = self._prepare(rt, namespace, patched, field_validation)
            warnings[:] = w
            if _meta(prepared).get("name") != name:
                raise BadRequest("metadata.name cannot be changed by a patch")
            return await self._next_state(rt, cur, prepared, subresource)

        return await self._write(rt, namespace, name, try_update, dry_run), warnings

    async def _write(self, rt: ResourceType, namespace: str | None, name: str,
                     try_update: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]],
                     dry_run: bool) -> dict[str, Any]:
        key = rt.key(namespace, name)
        # A Service's ClusterIP / NodePorts are settled only once the outcome is known: values an
        # attempt took are given back unless stored, values the old version held only once the new
        # version is stored (a dry run, a refused or a lost write changes no allocation).
        attempts: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

        async def tracked(cur: dict[str, Any]) -> dict[str, Any] | None:
            before = copy.deepcopy(cur)
            new = await try_update(cur)
            attempts.append((before, new))
            return new

        update_fn = tracked if rt.kind == "Service" else try_update
        if dry_run:
            cur = await self.get(rt, namespace, name)
            try:
                return (await update_fn(copy.deepcopy(cur))) or cur
            finally:
                await self._settle_service_values(attempts, cur)
        stored: dict[str, Any] | None = None
        try:
            stored = await self.store.guaranteed_update(key, update_fn)
        except KeyNotFound:
            raise NotFound(f'{rt.qualified} "{name}" not found', kind=rt.plural, name=name, group=rt.group) from None
        except RevisionConflict:
            raise self._conflict(rt, name) from None
        except StorageError as e:
            raise _unavailable(e) from e
        finally:
            if attempts:
                await self._settle_service_values(attempts, stored)
        # The last finalizer of an object being deleted is gone: now it really goes.
        meta = _meta(stored)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and rt.kind != "Namespace":
            return await self._remove(rt, namespace, stored)
        return stored

    def _conflict(self, rt: ResourceType, name: str) -> Conflict:
        return Conflict(f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
                        f"please apply your changes to the latest version and try again",
                        kind=rt.plural, name=name, group=rt.group)

    async def _next_state(self, rt: ResourceType, cur: dict[str, Any], new: dict[str, Any],
                          subresource: str) -> dict[str, Any] | None:
        """The object to store when ``new`` is written over ``cur``; None when nothing changes."""
        cur_meta, new_meta = _meta(cur), _meta(new)
        name = str(cur_meta.get("name", ""))
        want_rv = new_meta.get("resourceVersion")
        if want_rv not in (None, "") and str(want_rv) != str(cur_meta.get("resourceVersion")):
            raise self._conflict(rt, name)
        if new_meta.get("uid") not in (None, "", cur_meta.get("uid")):
            raise Conflict(f"Precondition failed: UID in precondition: {new_meta.get('uid')}, UID in object meta: "
                           f"{cur_meta.get('uid')}", kind=rt.plural, name=name, group=rt.group)
        if subresource == "status":
            result = copy.deepcopy(cur)
            result["status"] = new.get("status") if new.get("status") is not None else {}
        else:
            result = new
            for f in SERVER_META:
                if f in cur_meta:
                    new_meta[f] = cur_meta[f]
                else:
                    new_meta.pop(f, None)
            if "status" in rt.subresources:
                if "status" in cur:
                    result["status"] = cur["status"]
                else:
                    result.pop("status", None)
            if cur_meta.get("deletionTimestamp") and {f for f in _list(new_meta.get("finalizers"))
                                                      if isinstance(f, str)} - set(cur_meta.get("finalizers") or []):
                raise Forbidden(f'{rt.qualified} "{name}" is being deleted: no new finalizers can be added',
                                kind=rt.plural, name=name)
            apply_defaults(result, rt)
            if rt.kind == "Service":
                taken = await self._allocate_service(result, cur)
                try:
                    self._validate(rt, result, old=cur)
                except BaseException:
                    await self._release(taken, result)   # refused: what this attempt took goes back
                    raise
        self._validate(rt, result, old=cur)
        if _spec_part(result) != _spec_part(cur):
            _meta(result)["generation"] = int(cur_meta.get("generation") or 1) + 1
        _meta(result)["resourceVersion"] = cur_meta.get("resourceVersion")
        if _without_volatile(result) == _without_volatile(cur):
            return None
        return result

    # --- delete --------------------------------------------------------------------------------

    async def delete(self, rt: ResourceType, namespace: str | None, name: str, *,
                     options: dict[str, Any] | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Delete, or start deleting (``deletionTimestamp``), and return the object's last state."""
        options = options or {}
        pre = _sub(options, "preconditions")
        grace = options.get("gracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or grace < 0):
            raise BadRequest("gracePeriodSeconds must be a non-negative integer")
        if rt.kind == "Namespace" and name in PROTECTED_NAMESPACES:
            raise Forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                            kind="namespaces", name=name)
        for _ in range(20):
            cur = await self.get(rt, namespace, name)
            meta = _meta(cur)
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise Conflict(f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                               f"{meta.get('uid')}", kind=rt.plural, name=name, group=rt.group)
            if pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta.get("resourceVersion"):
                raise Conflict(f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                               f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
                               kind=rt.plural, name=name, group=rt.group)
            if dry_run:
                return cur
            graceful = _with_propagation_finalizer(rt, cur, self._graceful_state(rt, cur, grace),
                                                   _propagation_policy(options))
            try:
                if graceful is None:
                    return await self._remove(rt, namespace, cur)
                if graceful is cur:
                    return cur
                stored = await self.store.update(rt.key(namespace, name), graceful, expected_rv=_rv(cur))
                if rt.kind == "Namespace":
                    self.namespace_deleted()
                return stored
            except RevisionConflict:
                continue  # changed under us: decide again on the new state
            except KeyNotFound:
                raise NotFound(f'{rt.qualified} "{name}" not found', kind=rt.plural, name=name,
                               group=rt.group) from None
        raise self._conflict(rt, name)

    def _graceful_state(self, rt: ResourceType, cur: dict[str, Any], grace: int | None) -> dict[str, Any] | None:
        """The state that marks ``cur`` as being deleted; None to remove it now; ``cur`` if already so."""
        meta = _meta(cur)
        spec = _sub(cur, "spec")
        when = now()
        if rt.kind == "Namespace":
            if meta.get("deletionTimestamp"):
                return cur
            new = copy.deepcopy(cur)
            _meta(new)["deletionTimestamp"] = rfc3339(when)
            _meta(new)["deletionGracePeriodSeconds"] = 0
            new["status"] = {**(new.get("status") or {}), "phase": "Terminating"}
            return new
        if rt.kind == "Pod" and spec.get("nodeName"):
            period = grace if grace is not None else spec.get("terminationGracePeriodSeconds", 30)
            period = period if isinstance(period, int) and period >= 0 else 30
            if period > 0:
                old_period = meta.get("deletionGracePeriodSeconds")
                if meta.get("deletionTimestamp") and isinstance(old_period, int) and old_period <= period:
                    return cur  # a deletion with a shorter or equal grace period is already under way
                new = copy.deepcopy(cur)
                _meta(new)["deletionTimestamp"] = rfc3339(when + timedelta(seconds=period))
                _meta(new)["deletionGracePeriodSeconds"] = period
                return new
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return cur
            new = copy.deepcopy(cur)
            _meta(new)["deletionTimestamp"] = rfc3339(when)
            _meta(new)["deletionGracePeriodSeconds"] = 0
            return new
        return None

    async def _remove(self, rt: ResourceType, namespace: str | None, cur: dict[str, Any]) -> dict[str, Any]:
        name = _meta(cur)["name"]
        try:
            gone = await self.store.delete(rt.key(namespace, name), expected_rv=_rv(cur))
        except KeyNotFound:
            raise NotFound(f'{rt.qualified} "{name}" not found', kind=rt.plural, name=name, group=rt.group) from None
        if rt.kind == "Service":
            await self._release(self._service_values(cur), cur)
        return gone

    # --- subresources --------------------------------------------------------------------------

    async def bind(self, namespace: str, name: str, binding: Any) -> None:
        """``pods/{name}/binding``: set ``spec.nodeName`` once (a conditional write)."""
        target = binding.get("target") if isinstance(binding, dict) else None
        node = target.get("name") if isinstance(target, dict) else None
        if not isinstance(node, str) or not node:
            raise Invalid.of("Binding", name, [Cause("target.name", "Required value", "FieldValueRequired")])
        pod_rt = registry.by_kind("v1", "Pod")
        assert pod_rt is not None

        def assign(cur: dict[str, Any]) -> dict[str, Any]:
            spec = cur.setdefault("spec", {})
            if _meta(cur).get("deletionTimestamp"):
                raise Conflict(f'pod {name} is being deleted, cannot be assigned to a host', kind="pods", name=name)
            if spec.get("nodeName"):
                raise Conflict(f'pod {name} is already assigned to node "{spec["nodeName"]}"', kind="pods",
                               name=name)
            spec["nodeName"] = node
            # As Kubernetes' binding does: the pod is now scheduled, whatever the scheduler said before.
            status = cur.setdefault("status", {})
            conditions = [c for c in _list(status.get("conditions"))
                          if not (isinstance(c, dict) and c.get("type") == "PodScheduled")]
            conditions.insert(0, {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                  "lastTransitionTime": rfc3339()})
            status["conditions"] = conditions
            return cur

        try:
            await self.store.guaranteed_update(pod_rt.key(namespace, name), assign)
        except KeyNotFound:
            raise NotFound(f'pods "{name}" not found', kind="pods", name=name) from None

    async def get_scale(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        return scale_of(rt, await self.get(rt, namespace, name))

    async def write_scale(self, rt: ResourceType, namespace: str, name: str, *, body: Any = None,
                          patch: bytes | None = None, content_type: str = "") -> dict[str, Any]:
        """PUT or PATCH ``/scale``: only ``spec.replicas`` of the target changes."""
        async def try_update(cur: dict[str, Any]) -> dict[str, Any] | None:
            scale = scale_of(rt, cur)
            if patch is not None:
                new_scale = apply_patch(scale, patch, content_type, kind="Scale")
            else:
                if not isinstance(body, dict):
                    raise BadRequest("the body of the request must be a JSON object describing a Scale")
                new_scale = body
            want_rv = _meta(new_scale).get("resourceVersion")
            if want_rv not in (None, "") and str(want_rv) != _meta(cur).get("resourceVersion"):
                raise self._conflict(rt, name)
            replicas = new_scale.get("spec", {}).get("replicas") if isinstance(new_scale.get("spec"), dict) else None
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise Invalid.of("Scale", name, [Cause("spec.replicas", f"Invalid value: {replicas!r}: must be "
                                                       "greater than or equal to 0")], group="autoscaling")
            new = copy.deepcopy(cur)
            new.setdefault("spec", {})["replicas"] = replicas
            return await self._next_state(rt, cur, new, "")

        return scale_of(rt, await self._write(rt, namespace, name, try_update, False))

    # --- services ------------------------------------------------------------------------------

    def _service_values(self, svc: dict[str, Any]) -> list[tuple[Allocator, str]]:
        spec = _sub(svc, "spec")
        out: list[tuple[Allocator, str]] = []
        ip = spec.get("clusterIP")
        if isinstance(ip, str) and self.ip_alloc.contains(ip):
            out.append((self.ip_alloc, ip))
        for p in _list(spec.get("ports")):
            if isinstance(p, dict) and isinstance(p.get("nodePort"), int):
                out.append((self.port_alloc, str(p["nodePort"])))
        return out

    async def _release(self, values: list[tuple[Allocator, str]], svc: dict[str, Any]) -> None:
        owner = _owner(svc)
        for alloc, value in values:
            try:
                await alloc.release(value, owner)
            except StorageError:
                log.warning("could not release %s %s (the repair pass will)", alloc.prefix, value)

    async def _allocate_service(self, svc: dict[str, Any], old: dict[str, Any] | None) -> list[tuple[Allocator, str]]:
        """Give ``svc`` its ClusterIP and NodePorts (keeping the old ones); returns what was newly taken.

        Raises ``Invalid`` for a requested value that is taken or out of range.
        """
        spec = svc.get("spec")
        if not isinstance(spec, dict):
            return []
        owner = _owner(svc)
        old_spec = _sub(old, "spec")
        taken: list[tuple[Allocator, str]] = []
        try:
            ip = spec.get("clusterIP")
            if old is not None and not ip and old_spec.get("clusterIP"):
                spec["clusterIP"] = ip = old_spec["clusterIP"]
            if spec.get("type") != "ExternalName" and ip != "None":
                if not ip:
                    try:
                        spec["clusterIP"] = await self.ip_alloc.allocate(owner)
                    except RangeFull:
                        raise Invalid.of("Service", _meta(svc).get("name", ""), [Cause(
                            "spec.clusterIP", "Internal error: range is full", "FieldValueInvalid")]) from None
                    taken.append((self.ip_alloc, spec["clusterIP"]))
                elif isinstance(ip, str) and (old is None or ip != old_spec.get("clusterIP")):
                    if self.ip_alloc.contains(ip):
                        if await self._claim(self.ip_alloc, ip, owner):
                            taken.append((self.ip_alloc, ip))
                        else:
                            raise Invalid.of("Service", _meta(svc).get("name", ""), [Cause(
                                "spec.clusterIP", f'Invalid value: "{ip}": provided IP is already allocated')])
                    elif _looks_ipv4(ip):
                        raise Invalid.of("Service", _meta(svc).get("name", ""), [Cause(
                            "spec.clusterIP", f'Invalid value: "{ip}": provided IP is not in the valid range. '
                            f"The range of valid IPs is {self.ip_range}")])
                if isinstance(spec.get("clusterIP"), str) and spec["clusterIP"] != "None":
                    spec["clusterIPs"] = [spec["clusterIP"]]
            old_ports = {p.get("port"): p.get("nodePort") for p in _list(old_spec.get("ports"))
                         if isinstance(p, dict) and isinstance(p.get("port"), int | str | None)}
            needs_node_port = spec.get("type") in ("NodePort", "LoadBalancer")
            for i, p in enumerate(_list(spec.get("ports"))):
                if not isinstance(p, dict) or not isinstance(p.get("port"), int | str | None):
                    continue
                if not needs_node_port:
                    p.pop("nodePort", None)
                    continue
                np = p.get("nodePort")
                if np in (None, 0):
                    if isinstance(old_ports.get(p.get("port")), int):
                        p["nodePort"] = old_ports[p.get("port")]
                        continue
                    try:
                        p["nodePort"] = int(await self.port_alloc.allocate(owner))
                    except RangeFull:
                        raise Invalid.of("Service", _meta(svc).get("name", ""), [Cause(
                            f"spec.ports[{i}].nodePort", "Internal error: range is full")]) from None
                    taken.append((self.port_alloc, str(p["nodePort"])))
                elif isinstance(np, int) and not isinstance(np, bool) and np not in old_ports.values():
                    if not self.port_alloc.contains(str(np)):
                        raise Invalid.of("Service", _meta(svc).get("name", ""), [Cause(
                            f"spec.ports[{i}].nodePort", f"Invalid value: {np}: provided port is not in the valid "
                            f"range. The range of valid ports is {self.port_alloc.values[0]}-"
                            f"{self.port_alloc.values[-1]}")])
                    if not await self._claim(self.port_alloc, str(np), owner):
                        raise Invalid.of("Service", _meta(svc).get("name", ""), [Cause(
                            f"spec.ports[{i}].nodePort", f"Invalid value: {np}: provided port is already allocated")])
                    taken.append((self.port_alloc, str(np)))
        except BaseException:
            await self._release(taken, svc)
            raise
        # Values the old version held and the new one does not are given back by the caller once
        # the new version is stored (``_write``), never before.
        return taken

    async def _settle_service_values(self, attempts: list[tuple[dict[str, Any], dict[str, Any] | None]],
                                     kept: dict[str, Any] | None) -> None:
        """Give back what update attempts of one Service held or took and ``kept`` (the stored
        version; None when the write failed) does not hold."""
        keep = set(self._service_values(kept)) if kept is not None else None
        for old, new in attempts:
            new_values = set(self._service_values(new)) if new is not None else set()
            if keep is None:
                drop = new_values - set(self._service_values(old))
            else:
                drop = (new_values | set(self._service_values(old))) - keep
            if drop:
                await self._release(list(drop), old)

    async def _claim(self, alloc: Allocator, value: str, owner: str) -> bool:
        try:
            await alloc.allocate(owner, value)
            return True
        except KeyExists:
            rec = await self.store.get(alloc.prefix + value)
            return bool(rec.get("owner") == owner)


def scale_of(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """The ``autoscaling/v1`` Scale view of a Deployment or ReplicaSet."""
    meta = _meta(obj)
    spec = _sub(obj, "spec")
    status = _sub(obj, "status")
    selector = ""
    if isinstance(spec.get("selector"), dict):
        try:
            selector = selector_to_string(spec["selector"])
        except (ApiError, ValueError, TypeError):
            selector = ""
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": spec.get("replicas", 0)},
            "status": {"replicas": status.get("replicas", 0), "selector": selector}}


def _owner(svc: dict[str, Any]) -> str:
    m = _meta(svc)
    return f"{m.get('namespace', '')}/{m.get('name', '')}"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _shape_error(value: Any, limit: int) -> str:
    """Why ``value`` cannot be stored as JSON ("" when it can): nesting deeper than ``limit``
    levels, or an integer outside the 64-bit range (Kubernetes' decoder refuses both)."""
    if not isinstance(value, dict | list):
        return ""
    stack = [(value, 1)]
    while stack:
        cur, depth = stack.pop()
        if depth > limit:
            return f"the object is nested more than {limit} levels deep"
        for v in cur.values() if isinstance(cur, dict) else cur:
            if isinstance(v, dict | list):     # only containers are pushed: scalars cost one check
                stack.append((v, depth + 1))
            elif isinstance(v, int) and not -(2**63) <= v < 2**64:
                return f"the object holds a number that does not fit in 64 bits: {v}"
    return ""


def _looks_ipv4(text: str) -> bool:
    return bool(re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", text))


def _event_identity(ev: dict[str, Any]) -> tuple[Any, ...]:
    inv = _sub(ev, "involvedObject")
    src = _sub(ev, "source")
    return (inv.get("kind"), inv.get("namespace"), inv.get("name"), inv.get("uid"), inv.get("fieldPath"),
            ev.get("reason"), ev.get("message"), ev.get("type"), src.get("component"), src.get("host"))


def _unavailable(e: StorageError) -> ApiError:
    if isinstance(e, StorageUnavailable):
        return ServiceUnavailable(f"the storage backend (etcd) is unavailable: {e}")
    text = str(e)
    if "RESOURCE_EXHAUSTED" in text or "request is too large" in text or "larger than max" in text:
        # etcd refuses values over its request limit (1.5 MiB by default), below our body limit.
        return RequestEntityTooLarge(f"the object is too large to store: {text}")
    return ApiError(f"Internal error occurred: {e}")


# Finalizers the apiserver adds on DELETE so the garbage collector finishes the deletion (Kubernetes names).
FOREGROUND_FINALIZER = "foregroundDeletion"
ORPHAN_FINALIZER = "orphan"


def _propagation_policy(options: dict[str, Any]) -> str:
    """Foreground, Orphan or Background (the default, as kubectl's); legacy ``orphanDependents`` too."""
    policy = options.get("propagationPolicy")
    if isinstance(policy, str) and policy:
        return policy
    if options.get("orphanDependents") is True:
        return "Orphan"
    return "Background"


def _with_propagation_finalizer(rt: ResourceType, cur: dict[str, Any], graceful: dict[str, Any] | None,
                                policy: str) -> dict[str, Any] | None:
    """``graceful`` plus the finalizer of a Foreground / Orphan deletion (and ``deletionTimestamp``):
    the object then stays until the garbage collector has dealt with its dependents and removed it.
    Namespaces keep their own deletion (the reaper)."""
    if policy not in ("Foreground", "Orphan") or rt.kind == "Namespace":
        return graceful
    wanted, other = ((FOREGROUND_FINALIZER, ORPHAN_FINALIZER) if policy == "Foreground"
                     else (ORPHAN_FINALIZER, FOREGROUND_FINALIZER))
    base = graceful if graceful is not None else cur
    finalizers = [f for f in _meta(base).get("finalizers") or [] if f != other]
    if wanted not in finalizers:
        finalizers.append(wanted)
    if finalizers == list(_meta(base).get("finalizers") or []) and _meta(base).get("deletionTimestamp"):
        return base
    new = copy.deepcopy(base)
    meta = _meta(new)
    meta["finalizers"] = finalizers
    if not meta.get("deletionTimestamp"):
        meta["deletionTimestamp"] = rfc3339()
        meta["deletionGracePeriodSeconds"] = 0
    return new
