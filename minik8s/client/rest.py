"""The REST client: Kubernetes-shaped HTTP calls to the minik8s apiserver.

Two clients with the same methods: :class:`ApiClient` (blocking, for ``minictl`` and scripts) and
:class:`AsyncApiClient` (asyncio, for daemons and informers). URLs come from the
:class:`~minik8s.api.registry.ResourceType` table, so the client never spells a path itself.

What every method guarantees::

    2xx                          → the decoded JSON body (dict)
    any other status             → ApiError.from_status(body, code)  (NotFound, Conflict, Invalid, Gone …)
    no answer / broken stream    → minik8s.errors.ConnectionFailed (one-line message naming the server)

Every call has a timeout (``timeout``, default 30 s); a watch has no read timeout (events can be
minutes apart) unless ``timeout_seconds`` is given, in which case it reads for at most that long
plus a margin. Objects in lists and watch events get ``apiVersion``/``kind`` filled in when the
server leaves them out (Kubernetes list items omit them), so every object names its own kind.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from minik8s.api import registry
from minik8s.api.registry import ResourceType
from minik8s.errors import ApiError, BadRequest, Conflict, ConnectionFailed

TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}
PatchType = Literal["merge", "strategic", "json"]
DEFAULT_TIMEOUT = 30.0
# Slack on top of a watch's server-side timeoutSeconds before we call the stream dead.
_WATCH_READ_MARGIN = 30.0
UPDATE_RETRIES = 5

WatchEvent = tuple[str, dict[str, Any]]


@dataclass
class _Request:
    """One HTTP request, built without doing I/O so the sync and async clients share it."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    content: bytes | None = None

    def build(self, client: httpx.Client | httpx.AsyncClient, timeout: httpx.Timeout | None) -> httpx.Request:
        kwargs: dict[str, Any] = {"params": self.params or None, "headers": self.headers or None}
        if self.content is not None:
            kwargs["content"] = self.content
        elif self.body is not None:
            kwargs["json"] = self.body
        if timeout is not None:
            kwargs["timeout"] = timeout
        return client.build_request(self.method, self.path, **kwargs)


def resource_type_of(obj: dict[str, Any]) -> ResourceType:
    """The ResourceType of a manifest; ``BadRequest`` naming apiVersion and kind when unknown."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    rt = registry.by_kind(str(api_version), str(kind)) if api_version and kind else None
    if rt is None:
        raise BadRequest(f'no matches for kind "{kind}" in version "{api_version}"', kind=str(kind or ""))
    return rt


def object_namespace(rt: ResourceType, obj: dict[str, Any], namespace: str | None) -> str | None:
    """The namespace a write of ``obj`` goes to: the object's own, else ``namespace``, else "default".

    Cluster-scoped kinds get None. A conflict between the two raises ``BadRequest`` (kubectl's words).
    """
    if not rt.namespaced:
        return None
    own = (obj.get("metadata") or {}).get("namespace")
    if own and namespace and own != namespace:
        raise BadRequest(f'the namespace from the provided object "{own}" does not match the namespace '
                         f'"{namespace}". You must pass \'--namespace={own}\' to perform this operation.')
    return str(own or namespace or "default")


def _name_of(obj: dict[str, Any]) -> str:
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        raise BadRequest("resource name may not be empty")
    return str(name)


def _fill_kind(obj: Any, rt: ResourceType) -> Any:
    if isinstance(obj, dict) and "kind" not in obj:
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
    return obj


class _Builder:
    """Builds requests from ResourceTypes; shared by both clients."""

    @staticmethod
    def create(obj: dict[str, Any], namespace: str | None, dry_run: bool,
               field_validation: str | None) -> tuple[ResourceType, _Request]:
        rt = resource_type_of(obj)
        ns = object_namespace(rt, obj, namespace)
        req = _Request("POST", rt.base_path(ns), body=obj)
        if dry_run:
            req.params["dryRun"] = "All"
        if field_validation:
            req.params["fieldValidation"] = field_validation
        return rt, req

    @staticmethod
    def replace(obj: dict[str, Any], subresource: str = "") -> tuple[ResourceType, _Request]:
        rt = resource_type_of(obj)
        ns = object_namespace(rt, obj, None)
        return rt, _Request("PUT", rt.path(ns, _name_of(obj), subresource), body=obj)

    @staticmethod
    def list(rt: ResourceType, namespace: str | None, label_selector: str | None,
             field_selector: str | None) -> _Request:
        req = _Request("GET", rt.base_path(namespace))
        if label_selector:
            req.params["labelSelector"] = label_selector
        if field_selector:
            req.params["fieldSelector"] = field_selector
        return req

    @staticmethod
    def patch(rt: ResourceType, name: str, patch: Any, namespace: str | None, patch_type: str,
              subresource: str) -> _Request:
        if patch_type not in PATCH_CONTENT_TYPES:
            raise ValueError(f"patch_type must be one of {sorted(PATCH_CONTENT_TYPES)}, not {patch_type!r}")
        return _Request("PATCH", rt.path(namespace, name, subresource),
                        headers={"Content-Type": PATCH_CONTENT_TYPES[patch_type]},
                        content=json.dumps(patch).encode())

    @staticmethod
    def delete(rt: ResourceType, name: str, namespace: str | None, grace_period_seconds: int | None,
               propagation_policy: str | None, preconditions: dict[str, str] | None) -> _Request:
        req = _Request("DELETE", rt.path(namespace, name))
        options: dict[str, Any] = {}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
            req.params["gracePeriodSeconds"] = str(grace_period_seconds)
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
            req.params["propagationPolicy"] = propagation_policy
        if preconditions:
            options["preconditions"] = preconditions
        if options:
            req.body = {"kind": "DeleteOptions", "apiVersion": "v1", **options}
        return req

    @staticmethod
    def table(rt: ResourceType, namespace: str | None, name: str | None, label_selector: str | None,
              field_selector: str | None, all_namespaces: bool) -> _Request:
        if name:
            return _Request("GET", rt.path(namespace, name), headers={"Accept": TABLE_ACCEPT})
        req = _Builder.list(rt, None if all_namespaces else namespace, label_selector, field_selector)
        req.headers["Accept"] = TABLE_ACCEPT
        return req

    @staticmethod
    def watch(rt: ResourceType, namespace: str | None, resource_version: str | None, label_selector: str | None,
              field_selector: str | None, timeout_seconds: int | None, table: bool) -> _Request:
        req = _Builder.list(rt, namespace, label_selector, field_selector)
        req.params["watch"] = "true"
        req.params["allowWatchBookmarks"] = "true"
        if resource_version:
            req.params["resourceVersion"] = resource_version
        if timeout_seconds is not None:
            req.params["timeoutSeconds"] = str(int(timeout_seconds))
        if table:
            req.headers["Accept"] = TABLE_ACCEPT
        return req


def _watch_timeout(timeout_seconds: int | None, connect: float) -> httpx.Timeout:
    read = None if timeout_seconds is None else timeout_seconds + _WATCH_READ_MARGIN
    return httpx.Timeout(connect=connect, read=read, write=connect, pool=connect)


def _decode(response: httpx.Response) -> Any:
    """The JSON body of a finished response; raises the ApiError for non-2xx answers."""
    body: Any
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = response.text
    if response.is_success:
        return body
    raise ApiError.from_status(body, response.status_code)


def _parse_event(line: str, rt: ResourceType | None) -> WatchEvent | None:
    """One watch line → (type, object); raises the ApiError of an ERROR event; None for blank lines."""
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise ConnectionFailed(f"malformed watch event from the apiserver: {line[:200]!r}") from exc
    etype, obj = event.get("type"), event.get("object")
    if etype == "ERROR":
        code = obj.get("code", 500) if isinstance(obj, dict) else 500
        raise ApiError.from_status(obj, int(code or 500))
    if not isinstance(etype, str) or not isinstance(obj, dict):
        raise ConnectionFailed(f"malformed watch event from the apiserver: {line[:200]!r}")
    if rt is not None and etype != "BOOKMARK" and obj.get("kind") != "Table":
        _fill_kind(obj, rt)
    return etype, obj


def _connection_failed(server: str, exc: Exception) -> ConnectionFailed:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return ConnectionFailed(f"cannot reach the minik8s apiserver at {server}: {reason}")


def _list_result(body: dict[str, Any], rt: ResourceType) -> tuple[list[dict[str, Any]], str]:
    items = body.get("items") or []
    for item in items:
        _fill_kind(item, rt)
    return items, str((body.get("metadata") or {}).get("resourceVersion") or "")


def _mutated(obj: dict[str, Any], mutate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    mine = copy.deepcopy(obj)
    result = mutate(mine)
    return result if isinstance(result, dict) else mine


class ApiClient:
    """Blocking client. Use as a context manager or call :meth:`close`.

    ``transport`` replaces the network (``httpx.MockTransport`` in unit tests).
    """

    def __init__(self, server: str, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.server, timeout=timeout, transport=transport,
                                  headers={"User-Agent": "minik8s-client"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, req: _Request) -> Any:
        try:
            response = self._http.send(req.build(self._http, None))
        except httpx.HTTPError as exc:
            raise _connection_failed(self.server, exc) from exc
        return _decode(response)

    def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                headers: dict[str, str] | None = None, body: Any = None, content: bytes | None = None) -> Any:
        """A raw call to ``path`` (e.g. ``/version``); same error mapping as every other method.

        ``body`` is sent as JSON; ``content`` (raw bytes, with the caller's ``Content-Type`` header)
        instead, e.g. a function's code.
        """
        return self._send(_Request(method, path, dict(params or {}), dict(headers or {}), body, content))

    def create(self, obj: dict[str, Any], *, namespace: str | None = None, dry_run: bool = False,
               field_validation: str | None = None) -> dict[str, Any]:
        """POST ``obj`` to its collection (the object's namespace, else ``namespace``, else "default")."""
        rt, req = _Builder.create(obj, namespace, dry_run, field_validation)
        return dict(_fill_kind(self._send(req), rt))

    def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(_fill_kind(self._send(_Request("GET", rt.path(namespace, name))), rt))

    def list(self, rt: ResourceType, namespace: str | None = None, *, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """(items, the list's resourceVersion). ``namespace`` None lists all namespaces."""
        return _list_result(self._send(_Builder.list(rt, namespace, label_selector, field_selector)), rt)

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT ``obj``; its ``metadata.resourceVersion`` makes the write conditional (409 Conflict)."""
        rt, req = _Builder.replace(obj)
        return dict(_fill_kind(self._send(req), rt))

    def replace_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT ``obj`` to its ``/status`` subresource (only ``status`` is taken by the server)."""
        rt, req = _Builder.replace(obj, "status")
        return dict(_fill_kind(self._send(req), rt))

    def patch(self, rt: ResourceType, name: str, patch: Any, *, namespace: str | None = None,
              patch_type: PatchType = "merge", subresource: str = "") -> dict[str, Any]:
        req = _Builder.patch(rt, name, patch, namespace, patch_type, subresource)
        return dict(self._send(req))

    def delete(self, rt: ResourceType, name: str, namespace: str | None = None, *,
               grace_period_seconds: int | None = None, propagation_policy: str | None = None,
               preconditions: dict[str, str] | None = None) -> dict[str, Any]:
        """DELETE; returns what the server answered (the object, or a Status)."""
        req = _Builder.delete(rt, name, namespace, grace_period_seconds, propagation_policy, preconditions)
        return dict(self._send(req))

    def get_table(self, rt: ResourceType, namespace: str | None, name: str | None = None,
                  label_selector: str | None = None, all_namespaces: bool = False, *,
                  field_selector: str | None = None) -> dict[str, Any]:
        """A ``meta.k8s.io/v1`` Table of the collection (or of one object when ``name`` is given).

        ``all_namespaces`` (or ``namespace`` None) asks for every namespace.
        """
        return dict(self._send(_Builder.table(rt, namespace, name, label_selector, field_selector, all_namespaces)))

    def watch(self, rt: ResourceType, namespace: str | None = None, *, resource_version: str | None = None,
              label_selector: str | None = None, field_selector: str | None = None,
              timeout_seconds: int | None = None, table: bool = False) -> Iterator[WatchEvent]:
        """Yield ``(type, object)`` until the server ends the stream (or the caller stops iterating).

        An ERROR event raises its ApiError (``Gone`` when the resourceVersion is too old).
        """
        req = _Builder.watch(rt, namespace, resource_version, label_selector, field_selector, timeout_seconds,
                             table)
        request = req.build(self._http, _watch_timeout(timeout_seconds, min(self.timeout, 10.0)))
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _connection_failed(self.server, exc) from exc
        try:
            if not response.is_success:
                response.read()
                _decode(response)
            for line in response.iter_lines():
                event = _parse_event(line, rt)
                if event is not None:
                    yield event
        except httpx.HTTPError as exc:
            raise _connection_failed(self.server, exc) from exc
        finally:
            response.close()

    def update_with_retry(self, rt: ResourceType, name: str, namespace: str | None,
                          mutate: Callable[[dict[str, Any]], Any], *, subresource: str = "",
                          retries: int = UPDATE_RETRIES) -> dict[str, Any]:
        """Read, ``mutate`` a private copy, PUT; on Conflict read again and retry (``retries`` times).

        ``mutate`` changes its argument in place (or returns a replacement dict). When the result
        equals what was read, nothing is written and the read object is returned. ``subresource``
        "status" writes through ``/status``. The last Conflict is raised when retries run out.
        """
        for attempt in range(retries + 1):
            current = self.get(rt, name, namespace)
            desired = _mutated(current, mutate)
            if desired == current:
                return current
            try:
                return self.replace_status(desired) if subresource == "status" else self.replace(desired)
            except Conflict:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")


class AsyncApiClient:
    """The asyncio twin of :class:`ApiClient`: same methods, awaited; ``watch`` is an async iterator."""

    def __init__(self, server: str, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.server = server.rstrip("/")
        self.timeout = timeout
        # No cap on connections: every informer holds one open for its watch (the garbage collector alone
        # watches every kind), and httpx's default of 100 makes a re-watch wait in the pool behind them.
        self._http = httpx.AsyncClient(base_url=self.server, timeout=timeout, transport=transport,
                                       headers={"User-Agent": "minik8s-client"},
                                       limits=httpx.Limits(max_connections=None, max_keepalive_connections=100))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, req: _Request) -> Any:
        try:
            response = await self._http.send(req.build(self._http, None))
        except httpx.HTTPError as exc:
            raise _connection_failed(self.server, exc) from exc
        return _decode(response)

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, body: Any = None,
                      content: bytes | None = None) -> Any:
        return await self._send(_Request(method, path, dict(params or {}), dict(headers or {}), body, content))

    async def create(self, obj: dict[str, Any], *, namespace: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> dict[str, Any]:
        rt, req = _Builder.create(obj, namespace, dry_run, field_validation)
        return dict(_fill_kind(await self._send(req), rt))

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(_fill_kind(await self._send(_Request("GET", rt.path(namespace, name))), rt))

    async def list(self, rt: ResourceType, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        return _list_result(await self._send(_Builder.list(rt, namespace, label_selector, field_selector)), rt)

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        rt, req = _Builder.replace(obj)
        return dict(_fill_kind(await self._send(req), rt))

    async def replace_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        rt, req = _Builder.replace(obj, "status")
        return dict(_fill_kind(await self._send(req), rt))

    async def patch(self, rt: ResourceType, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: PatchType = "merge", subresource: str = "") -> dict[str, Any]:
        return dict(await self._send(_Builder.patch(rt, name, patch, namespace, patch_type, subresource)))

    async def delete(self, rt: ResourceType, name: str, namespace: str | None = None, *,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, str] | None = None) -> dict[str, Any]:
        req = _Builder.delete(rt, name, namespace, grace_period_seconds, propagation_policy, preconditions)
        return dict(await self._send(req))

    async def get_table(self, rt: ResourceType, namespace: str | None, name: str | None = None,
                        label_selector: str | None = None, all_namespaces: bool = False, *,
                        field_selector: str | None = None) -> dict[str, Any]:
        req = _Builder.table(rt, namespace, name, label_selector, field_selector, all_namespaces)
        return dict(await self._send(req))

    async def watch(self, rt: ResourceType, namespace: str | None = None, *, resource_version: str | None = None,
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None, table: bool = False) -> AsyncIterator[WatchEvent]:
        """Async-iterate ``(type, object)``; see :meth:`ApiClient.watch`."""
        req = _Builder.watch(rt, namespace, resource_version, label_selector, field_selector, timeout_seconds,
                             table)
        request = req.build(self._http, _watch_timeout(timeout_seconds, min(self.timeout, 10.0)))
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _connection_failed(self.server, exc) from exc
        try:
            if not response.is_success:
                await response.aread()
                _decode(response)
            async for line in response.aiter_lines():
                event = _parse_event(line, rt)
                if event is not None:
                    yield event
        except httpx.HTTPError as exc:
            raise _connection_failed(self.server, exc) from exc
        finally:
            await response.aclose()

    async def update_with_retry(self, rt: ResourceType, name: str, namespace: str | None,
                                mutate: Callable[[dict[str, Any]], Any | Awaitable[Any]], *,
                                subresource: str = "", retries: int = UPDATE_RETRIES) -> dict[str, Any]:
        """See :meth:`ApiClient.update_with_retry`; ``mutate`` may also be a coroutine function."""
        for attempt in range(retries + 1):
            current = await self.get(rt, name, namespace)
            mine = copy.deepcopy(current)
            result = mutate(mine)
            if isinstance(result, Awaitable):
                result = await result
            desired = result if isinstance(result, dict) else mine
            if desired == current:
                return current
            try:
                if subresource == "status":
                    return await self.replace_status(desired)
                return await self.replace(desired)
            except Conflict:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")
