"""The apiserver's HTTP face: an ASGI app (Starlette on uvicorn) speaking Kubernetes REST shapes.

    request ─▶ route (paths.py) ─▶ verb handler ─▶ Objects (rules) ─▶ Store / WatchCache ─▶ etcd
                                        │
                                        └─▶ Status errors, Tables, discovery, metrics

Every answer that is not a success is a ``Status`` body with the matching HTTP code; no
traceback ever reaches a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from apiserver import discovery, proxy, resource_metrics, tables
from apiserver.allocators import ip_allocator, port_allocator
from apiserver.config import Config
from apiserver.objects import PROTECTED_NAMESPACES, Objects
from apiserver.paths import Target, parse_path
from apiserver.reaper import NamespaceReaper
from apiserver.storage import KeyExists, StorageError, Store
from apiserver.watch import stream
from apiserver.watchcache import WatchCache
from minik8s.api import apply_defaults, names, registry, samples, unknown_fields, unused_fields, validate
from minik8s.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
)
from minik8s.timeutil import rfc3339

log = logging.getLogger("minik8s.apiserver")

TABLE_MARK = "as=Table"
_TRUE = ("1", "t", "T", "true", "TRUE", "True")


class Metrics:
    """Prometheus metrics of one apiserver (a registry of its own, so tests can build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("apiserver_request_total", "Requests by verb, resource and HTTP code",
                                ["verb", "resource", "code"], registry=self.registry)
        self.latency = Histogram("apiserver_request_duration_seconds", "Request latency by verb and resource",
                                 ["verb", "resource"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.watchers = Gauge("apiserver_registered_watchers", "Open watch streams by resource", ["resource"],
                              registry=self.registry)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def _error(err: ApiError) -> Response:
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after is not None else None
    return _json(err.to_status(), err.code, headers)


def _warnings(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    # One Warning header value may carry several comma-separated warnings (RFC 7234 format).
    return {"Warning": ", ".join('299 - "{}"'.format(w.replace('"', "'")) for w in warnings[:20])}


class ApiServer:
    """State of one apiserver process: storage, watch caches, object rules, background loops."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store: Store | None = None
        self.caches: dict[str, WatchCache] = {}
        self.objects: Objects | None = None
        self.ready = False
        self._tasks: list[asyncio.Task[None]] = []
        self.reaper: NamespaceReaper | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        _warm_up()
        self.store = await Store.connect(list(cfg.etcd_endpoints))
        for rt in registry.STORED:  # activations live in the gateway (no etcd keys, no cache)
            cache = WatchCache(self.store, rt.key_prefix(None), window=cfg.watch_cache_window)
            await cache.start()
            self.caches[rt.plural] = cache
        self.objects = Objects(self.store, self.caches, ip_alloc=ip_allocator(self.store, cfg.service_cluster_ip_range),
                               port_alloc=port_allocator(self.store, cfg.service_node_port_range),
                               ip_range=cfg.service_cluster_ip_range, event_ttl=cfg.event_ttl)
        await self._ensure_namespaces()
        self.reaper = NamespaceReaper(self.objects, self.caches, interval=cfg.namespace_sync_interval)
        self.objects.namespace_deleted = self.reaper.wake
        self._tasks.append(asyncio.create_task(self.reaper.run()))
        if cfg.compaction_interval > 0:
            self._tasks.append(asyncio.create_task(self._compact_loop()))
        self._tasks.append(asyncio.create_task(self._repair_allocations()))
        self.ready = True
        log.info("apiserver ready on %s:%s (etcd %s)", cfg.bind_address, cfg.port, ",".join(cfg.etcd_endpoints))

    async def stop(self) -> None:
        self.ready = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        for cache in self.caches.values():
            await cache.stop()
        if self.store is not None:
            await self.store.close()

    async def _ensure_namespaces(self) -> None:
        assert self.store is not None
        ns_rt = registry.lookup("namespaces")
        for name in PROTECTED_NAMESPACES:
            obj = {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "uid": _uuid(), "creationTimestamp": rfc3339(), "generation": 1},
                   "spec": {}, "status": {"phase": "Active"}}
            with contextlib.suppress(KeyExists):
                await self.store.create(ns_rt.key(None, name), obj)

    async def _compact_loop(self) -> None:
        """Compact etcd to the revision seen one interval ago (Kubernetes does the same)."""
        assert self.store is not None
        previous = 0
        while True:
            await asyncio.sleep(self.config.compaction_interval)
            try:
                current = await self.store.current_revision()
                if previous:
                    await self.store.compact(previous)
                previous = current
            except StorageError as e:
                log.warning("compaction failed: %s", e)
            except Exception:
                log.debug("compaction skipped", exc_info=True)

    async def _repair_allocations(self) -> None:
        """Free ClusterIPs / NodePorts leaked by a crash between allocation and the Service write."""
        assert self.objects is not None and self.store is not None
        with contextlib.suppress(Exception):
            svcs, _ = await self.store.list(registry.lookup("services").key_prefix(None))
            ips = {s.get("spec", {}).get("clusterIP") for s in svcs if isinstance(s.get("spec"), dict)}
            ports = {str(p.get("nodePort")) for s in svcs if isinstance(s.get("spec"), dict)
                     for p in s["spec"].get("ports") or [] if isinstance(p, dict) and p.get("nodePort")}
            await self.objects.ip_alloc.repair({i for i in ips if isinstance(i, str)})
            await self.objects.port_alloc.repair(ports)

    # --- request entry -------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        start = time.perf_counter()
        verb, resource = request.method, "-"
        try:
            path = request.scope["path"]
            if resource_metrics.owns(path):
                resource = resource_metrics.resource_label(path)
                response = await self._resource_metrics(request, path)
            else:
                target = parse_path(path)
                resource = target.resource_label
                verb = target.verb(request.method, _flag(request.query_params.get("watch")))
                response = await self._dispatch(request, target)
        except ApiError as e:
            response = _error(e)
        except RecursionError:
            # Only a client's deeply nested body gets here (decoding and patching recurse).
            response = _error(BadRequest("the request body is nested too deeply"))
        except Exception as e:
            log.exception("internal error on %s %s", request.method, request.scope["path"])
            response = _error(ApiError(f"Internal error occurred: {type(e).__name__}: {e}"))
        self.metrics.requests.labels(verb, resource, str(response.status_code)).inc()
        if not isinstance(response, StreamingResponse):
            self.metrics.latency.labels(verb, resource).observe(time.perf_counter() - start)
        return response

    async def _dispatch(self, request: Request, target: Target) -> Response:
        if target.special:
            return await self._special(request, target.special)
        if not self.ready or self.objects is None:
            raise ServiceUnavailable("the apiserver is starting", retry_after=1)
        rt = target.rt
        assert rt is not None
        method, q = request.method, request.query_params
        ns, name, sub = target.namespace, target.name, target.subresource
        objects = self.objects
        dry_run = q.get("dryRun") == "All"
        validation = q.get("fieldValidation", "")
        if sub in ("log", "exec") and rt.kind == "Pod" and name:
            # Proxied to the pod's kubelet (apiserver/proxy.py).
            if sub == "log":
                if method != "GET":
                    raise MethodNotAllowed(f"{method} is not supported on pods/log")
                return await proxy.pod_log(objects, ns or "", name, q)
            raw = await self._raw(request) if method == "POST" else b""
            return await proxy.pod_exec(objects, ns or "", name, method, request.headers, q, raw)
        if sub == "code" and rt.kind == "Function" and name:
            return await self._function_code(request, ns or "", name)
        if not rt.in_etcd:  # activations: kept and served by the serverless gateway (apiserver/proxy.py)
            return await self._activations(request, target)
        if sub in ("exec", "attach", "portforward", "proxy"):
            raise BadRequest("Upgrade request required")
        if sub == "binding":
            if method != "POST":
                raise MethodNotAllowed(f"{method} is not supported on pods/binding")
            await objects.bind(ns or "", name, await self._body(request))
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)
        if sub == "scale":
            if method == "GET":
                return _json(await objects.get_scale(rt, ns or "", name))
            if method == "PUT":
                return _json(await objects.write_scale(rt, ns or "", name, body=await self._body(request)))
            if method == "PATCH":
                return _json(await objects.write_scale(rt, ns or "", name, patch=await self._raw(request),
                                                       content_type=_ctype(request)))
            raise MethodNotAllowed(f"{method} is not supported on {rt.plural}/scale")
        if sub not in ("", "status"):
            raise NotFound(f"the server could not find the requested resource ({rt.plural}/{sub})")

        if not name:
            if method == "GET":
                if _flag(q.get("watch")):
                    return self._watch(request, target)
                items, rv = await objects.list_objects(rt, ns, label_selector=q.get("labelSelector", ""),
                                               field_selector=q.get("fieldSelector", ""),
                                               resource_version=q.get("resourceVersion", ""))
                if self._wants_table(request):
                    return _json(tables.table(rt, items, rv, include_object=q.get("includeObject", "Metadata")))
                return _json({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": rv},
                              "items": items})
            if method == "POST":
                obj, warnings = await objects.create(rt, ns, await self._body(request), dry_run=dry_run,
                                                     field_validation=validation)
                return _json(obj, 201, _warnings(warnings))
            if method == "DELETE":
                return await self._delete_collection(request, target)
            raise MethodNotAllowed(f"{method} is not supported on a collection of {rt.plural}")

        if method == "GET":
            obj = await objects.get(rt, ns, name)
            if self._wants_table(request):
                return _json(tables.table(rt, [obj], obj["metadata"].get("resourceVersion", ""),
                                          include_object=q.get("includeObject", "Metadata")))
            return _json(obj)
        if method == "PUT":
            obj, warnings = await objects.update(rt, ns, name, await self._body(request), subresource=sub,
                                                 dry_run=dry_run, field_validation=validation)
            return _json(obj, 200, _warnings(warnings))
        if method == "PATCH":
            obj, warnings = await objects.patch(rt, ns, name, await self._raw(request), _ctype(request),
                                                subresource=sub, dry_run=dry_run, field_validation=validation)
            return _json(obj, 200, _warnings(warnings))
        if method == "DELETE" and not sub:
            options = await self._delete_options(request)
            obj = await objects.delete(rt, ns, name, options=options, dry_run=dry_run)
            return _json(obj, 200)
        raise MethodNotAllowed(f"{method} is not supported on {rt.plural}{'/' + sub if sub else ''}")

    async def _resource_metrics(self, request: Request, path: str) -> Response:
        """``/apis/metrics.k8s.io/v1beta1/…``: asked of the kubelets (apiserver/resource_metrics.py)."""
        if not self.ready or self.objects is None:
            raise ServiceUnavailable("the apiserver is starting", retry_after=1)
        return _json(await resource_metrics.serve(self.objects, request.method, path, request.query_params))

    async def _activations(self, request: Request, target: Target) -> Response:
        """``activations`` (list, all-namespaces list, get, delete): proxied to the serverless gateway's
        ``/-/activations…`` (apiserver/proxy.py); a Table for kubectl is made here from its answer."""
        rt = target.rt
        assert rt is not None
        q = request.query_params
        if target.subresource:
            raise NotFound(f"the server could not find the requested resource ({rt.plural}/{target.subresource})")
        if request.method == "GET" and _flag(q.get("watch")):
            raise MethodNotAllowed("watch is not supported on activations: the gateway serves them")
        if request.method in ("POST", "PUT", "PATCH"):
            raise MethodNotAllowed("activations are written by the gateway")
        if request.method == "DELETE" and not target.name:
            raise MethodNotAllowed("deletecollection is not supported on activations: delete them one by one")
        if request.method not in ("GET", "DELETE"):
            raise MethodNotAllowed(f"{request.method} is not supported on activations")
        answer = await proxy.activations(self.config.serverless_url, request.method, target.namespace, target.name,
                                         request.scope.get("query_string", b""),
                                         timeout=self.config.serverless_timeout)
        if request.method == "GET" and answer.status_code == 200 and self._wants_table(request):
            doc = orjson.loads(answer.body)
            items = [doc] if target.name else doc.get("items") or []
            rv = str((doc.get("metadata") or {}).get("resourceVersion") or "")
            return _json(tables.table(rt, items, rv, include_object=q.get("includeObject", "Metadata")))
        return answer

    async def _function_code(self, request: Request, namespace: str, name: str) -> Response:
        """``POST …/functions/{name}/code``: proxied to the serverless gateway (apiserver/proxy.py).

        The Function need not exist yet (the upload comes before the create), but its namespace must
        be open and its name valid, as for a create.
        """
        if request.method != "POST":
            raise MethodNotAllowed(f"{request.method} is not supported on functions/code")
        problems = names.dns1035_label(name)
        if problems:
            raise BadRequest(f'invalid function name "{name}": {"; ".join(problems)}')
        assert self.objects is not None
        await self.objects.check_namespace_open(namespace)
        body = await self._raw(request, limit=self.config.max_code_upload_bytes)
        return await proxy.function_code(self.config.serverless_url, namespace, name,
                                         request.scope.get("query_string", b""), body,
                                         request.headers.get("content-type"), timeout=self.config.serverless_timeout)

    async def _delete_collection(self, request: Request, target: Target) -> Response:
        rt = target.rt
        assert rt is not None and self.objects is not None
        q = request.query_params
        items, rv = await self.objects.list_objects(rt, target.namespace, label_selector=q.get("labelSelector", ""),
                                            field_selector=q.get("fieldSelector", ""))
        options = await self._delete_options(request)
        gone = []
        for obj in items:
            meta = obj.get("metadata", {})
            if rt.kind == "Namespace" and meta.get("name") in PROTECTED_NAMESPACES:
                continue
            with contextlib.suppress(NotFound):
                gone.append(await self.objects.delete(rt, meta.get("namespace"), meta["name"], options=options,
                                                      dry_run=q.get("dryRun") == "All"))
        return _json({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": rv},
                      "items": gone})

    def _watch(self, request: Request, target: Target) -> Response:
        rt = target.rt
        assert rt is not None and self.objects is not None
        q = request.query_params
        visible = self.objects.matcher(rt, q.get("labelSelector", ""), q.get("fieldSelector", ""))
        rv_text = q.get("resourceVersion", "")
        try:
            from_rv = int(rv_text) if rv_text not in ("", "0") else None
        except ValueError:
            raise BadRequest(f'invalid resourceVersion "{rv_text}": must be an integer') from None
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        except ValueError:
            raise BadRequest("timeoutSeconds must be a number") from None
        if target.name:
            # GET …/pods/NAME?watch=true is the old spelling of a name field selector.
            base = visible
            name = target.name

            def visible(o: dict[str, Any]) -> bool:
                return bool(o.get("metadata", {}).get("name") == name and base(o))

        gauge = self.metrics.watchers.labels(rt.plural)

        async def body() -> AsyncIterator[bytes]:
            gauge.inc()
            try:
                async for chunk in stream(self.caches[rt.plural], rt, namespace=target.namespace, visible=visible,
                                          from_rv=from_rv, as_table=self._wants_table(request),
                                          include_object=q.get("includeObject", "Metadata"), timeout=timeout,
                                          bookmarks=_flag(q.get("allowWatchBookmarks")),
                                          bookmark_interval=self.config.bookmark_interval):
                    yield chunk
            finally:
                gauge.dec()

        return StreamingResponse(body(), media_type="application/json")

    async def _special(self, request: Request, what: str) -> Response:
        if what == "/version":
            return _json(discovery.version())
        if what == "/api":
            return _json(discovery.api_versions(f"{self.config.bind_address}:{self.config.port}"))
        if what == "/apis":
            return _json(discovery.api_group_list())
        if what.startswith("/apis/"):
            parts = what.split("/")[2:]
            doc = discovery.api_group(parts[0]) if len(parts) == 1 else discovery.resource_list(parts[0], parts[1])
            if doc is None:
                raise NotFound("the server could not find the requested resource")
            return _json(doc)
        if what == "/api/v1":
            return _json(discovery.resource_list("", "v1"))
        if what == "/openapi/v2":
            # An empty document: kubectl then leaves validation to the server (fieldValidation).
            return Response(b"", media_type="application/octet-stream")
        if what in ("/healthz", "/livez"):
            return Response(b"ok", media_type="text/plain")
        if what == "/readyz":
            if not self.ready:
                return Response(b"not ready", status_code=503, media_type="text/plain")
            return Response(b"ok", media_type="text/plain")
        if what == "/metrics":
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)
        raise NotFound("the server could not find the requested resource")

    # --- request bodies ------------------------------------------------------------------------

    async def _raw(self, request: Request, *, limit: int | None = None) -> bytes:
        limit = limit or self.config.max_request_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestEntityTooLarge(f"the request body is larger than {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestEntityTooLarge(f"the request body is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _body(self, request: Request) -> Any:
        raw = await self._raw(request)
        if not raw.strip():
            raise BadRequest("the request has no body; send a JSON object")
        ctype = _ctype(request)
        if ctype == "application/vnd.kubernetes.protobuf":  # client-go typed clients (kubectl create deployment …)
            from apiserver import protobuf

            return protobuf.decode(raw)
        if "yaml" in ctype:
            try:
                return yaml.safe_load(raw)
            except yaml.YAMLError as e:
                raise BadRequest(f"the request body is not valid YAML: {e}") from None
        try:
            return orjson.loads(raw)
        except (ValueError, RecursionError) as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None

    async def _delete_options(self, request: Request) -> dict[str, Any]:
        raw = await self._raw(request)
        options: dict[str, Any] = {}
        if raw.strip() and _ctype(request) == "application/vnd.kubernetes.protobuf":  # kubectl drain (typed client)
            from apiserver import protobuf

            options = protobuf.decode(raw)
            if options.get("kind") != "DeleteOptions":
                raise BadRequest(f"the DELETE body must be DeleteOptions, not {options.get('kind')}")
        elif raw.strip():
            try:
                options = json.loads(raw)
            except (ValueError, RecursionError) as e:
                raise BadRequest(f"the DeleteOptions body is not valid JSON: {e}") from None
            if not isinstance(options, dict):
                raise BadRequest("the DeleteOptions body must be a JSON object")
        q = request.query_params
        if q.get("gracePeriodSeconds"):
            try:
                options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            except ValueError:
                raise BadRequest("gracePeriodSeconds must be an integer") from None
        if q.get("propagationPolicy"):
            options["propagationPolicy"] = q["propagationPolicy"]
        policy = options.get("propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise BadRequest(f'propagationPolicy "{policy}" is not one of Orphan, Background, Foreground')
        return options

    @staticmethod
    def _wants_table(request: Request) -> bool:
        return TABLE_MARK in request.headers.get("accept", "")


def _warm_up() -> None:
    """Build the schema and validation caches now (the ``kubernetes`` models take ~0.5 s to import),
    so the first write a client sends does not pay for them."""
    for rt in registry.RESOURCES:
        if rt.kind in samples.kinds():
            obj = samples.sample(rt.kind)
            apply_defaults(obj, rt)
            unknown_fields(obj, rt)
            unused_fields(obj, rt)
            validate(obj, rt)


def _flag(value: str | None) -> bool:
    return value in _TRUE


def _ctype(request: Request) -> str:
    return request.headers.get("content-type", "application/json").split(";")[0].strip().lower() or "application/json"


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


class App:
    """The ASGI application: every HTTP request goes to ``ApiServer.handle``.

    A plain ASGI callable rather than a framework app: there is one route (the paths are parsed
    by ``paths.py``), and skipping a router and middleware stack is a measurable share of the
    create path. Starlette's ``Request``/``Response`` classes are still used for the HTTP details.
    """

    def __init__(self, config: Config) -> None:
        self.server = ApiServer(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self.server.handle(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Connect etcd and fill the caches on startup; stop them on shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.server.start()
                except Exception as e:
                    log.exception("apiserver failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.server.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(config: Config) -> App:
    """The ASGI app; etcd is connected and the caches filled during the app's startup."""
    return App(config)
