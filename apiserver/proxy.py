"""``pods/{name}/log`` and ``pods/{name}/exec``: the apiserver as a proxy to the pod's kubelet.

::

    GET  …/pods/{name}/log?container=&follow=&tailLines=&previous=&timestamps=&sinceSeconds=&limitBytes=
    POST …/pods/{name}/exec   {"command": [...], "container": "c", "timeout": s}   (or ?command=…&container=…)
      │
      ├─ pod → spec.nodeName                    none → 400 pod "x" is not scheduled yet
      ├─ container                              none given and several → 400 (Kubernetes' words)
      ├─ Node → status.daemonEndpoints.kubeletEndpoint.Port      missing → 503
      └─ http://127.0.0.1:<port>/containerLogs/{ns}/{pod}/{container}   (text/plain, streamed back as it comes;
         http://127.0.0.1:<port>/exec/{ns}/{pod}/{container}             with follow, until the client leaves)

And one proxy to the serverless gateway (docs/serverless.md, "Upload and builder")::

    POST …/namespaces/{ns}/functions/{name}/code?filename=add.py&entryPoint=run    body: the .py / .zip bytes
      └─ {--serverless-url}/-/code/{ns}/{name}?<the same query>   the answer (status, type, body) comes back as is;
         no --serverless-url or no answer → 503 "serverless gateway is not available: …", too slow → 504

And the ``activations`` resource, which the gateway keeps (not etcd; docs/serverless.md, Activation)::

    GET    …/namespaces/{ns}/activations[?labelSelector=&limit=]  → {--serverless-url}/-/activations/{ns}?<query>
    GET    …/activations  (all namespaces)                        → …/-/activations?<query>
    GET    …/namespaces/{ns}/activations/{id}                      → …/-/activations/{ns}/{id}
    DELETE …/namespaces/{ns}/activations/{id}                      → DELETE …/-/activations/{ns}/{id}
      the answer comes back as is (the apiserver turns it into a Table for kubectl); no URL or no
      answer → 503, too slow → 504

The kubelet listens on loopback (docs/node.md), so the proxy always dials 127.0.0.1. Exec through an HTTP
upgrade (kubectl exec's SPDY / WebSocket streams) is not served: such requests get 400 "Upgrade request
required", as before; the JSON form is what ``minictl exec`` uses. A kubelet error comes back with its own
status code (its ``Status`` body as is, or its text as the message); an unreachable kubelet is a 503.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import httpx
from starlette.datastructures import QueryParams
from starlette.responses import Response, StreamingResponse

from minik8s.api import registry
from minik8s.errors import ApiError, BadRequest, ServiceUnavailable, Timeout

KUBELET_HOST = "127.0.0.1"
CONNECT_TIMEOUT = 5.0
# A non-follow log read may take this long before we give up.
READ_TIMEOUT = 60.0
# An exec without a timeout of its own may run this long (the kubelet's longest exec timeout).
EXEC_TIMEOUT = 600.0
LOG_PARAMS = ("follow", "tailLines", "previous", "timestamps", "sinceSeconds", "sinceTime", "limitBytes")
_INT_PARAMS = ("tailLines", "sinceSeconds", "limitBytes")
_PODS = registry.lookup("pods")
_NODES = registry.lookup("nodes")


class ObjectReader(Protocol):
    """The one call the proxy needs of ``apiserver.objects.Objects``."""

    async def get(self, rt: registry.ResourceType, namespace: str | None, name: str) -> dict[str, Any]: ...


def _container_names(spec: Mapping[str, Any], key: str) -> list[str]:
    return [str(c.get("name")) for c in spec.get(key) or [] if isinstance(c, Mapping) and c.get("name")]


def choose_container(pod: Mapping[str, Any], requested: str | None) -> str:
    """The container a log or exec request is about (Kubernetes' rules and words).

    ``requested`` must name one of the pod's containers (init and ephemeral included); without it the pod
    must have exactly one container. Raises ``BadRequest`` otherwise.
    """
    name = str((pod.get("metadata") or {}).get("name", ""))
    spec = pod.get("spec") or {}
    containers = _container_names(spec, "containers")
    init = _container_names(spec, "initContainers")
    if requested:
        if requested in containers or requested in init or requested in _container_names(spec,
                                                                                          "ephemeralContainers"):
            return requested
        raise BadRequest(f"container {requested} is not valid for pod {name}")
    if len(containers) == 1:
        return containers[0]
    message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
    if init:
        message += f" or one of the init containers: [{' '.join(init)}]"
    raise BadRequest(message)


async def kubelet_of(objects: ObjectReader, namespace: str, name: str) -> tuple[dict[str, Any], str]:
    """(the pod, ``host:port`` of its node's kubelet). ``BadRequest`` for a pod not scheduled yet,
    ``ServiceUnavailable`` for a node that does not say where its kubelet listens, ``NotFound`` as usual."""
    pod = await objects.get(_PODS, namespace, name)
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise BadRequest(f'pod "{name}" is not scheduled yet')
    node = await objects.get(_NODES, None, str(node_name))
    endpoint = ((node.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}
    port = endpoint.get("Port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ServiceUnavailable(f'node "{node_name}" does not report its kubelet port '
                                 f"(status.daemonEndpoints.kubeletEndpoint.Port), so the kubelet cannot be reached")
    return pod, f"{KUBELET_HOST}:{port}"


def _kubelet_error(body: bytes, code: int) -> ApiError:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        return ApiError.from_status(parsed, code)
    text = " ".join(body.decode(errors="replace").split())[:500]
    err = ApiError.from_status(text or f"the kubelet answered HTTP {code}", code)
    if type(err) is ApiError:
        err.code = code
    return err


def _unreachable(node_addr: str, exc: Exception) -> ServiceUnavailable:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return ServiceUnavailable(f"cannot reach the kubelet at {node_addr}: {reason}")


def wants_upgrade(headers: Mapping[str, str]) -> bool:
    """Whether a request asks for a protocol upgrade (kubectl exec/attach over SPDY or WebSocket)."""
    return bool(headers.get("upgrade")) or "upgrade" in headers.get("connection", "").lower()


def _log_params(query: QueryParams) -> dict[str, str]:
    params = {k: query[k] for k in LOG_PARAMS if k in query}
    for k in _INT_PARAMS:
        if k in params:
            try:
                if int(params[k]) < 0:
                    raise ValueError
            except ValueError:
                raise BadRequest(f"{k} must be a non-negative integer, not {params[k]!r}") from None
    return params


async def pod_log(objects: ObjectReader, namespace: str, name: str, query: QueryParams) -> Response:
    """Answer ``GET …/pods/{name}/log``: the kubelet's text, streamed (see the module docstring)."""
    params = _log_params(query)
    pod, addr = await kubelet_of(objects, namespace, name)
    container = choose_container(pod, query.get("container"))
    follow = params.get("follow", "").lower() in ("1", "t", "true")
    client = httpx.AsyncClient(timeout=httpx.Timeout(CONNECT_TIMEOUT, read=None if follow else READ_TIMEOUT))
    url = f"http://{addr}/containerLogs/{namespace}/{name}/{container}"
    try:
        upstream = await client.send(client.build_request("GET", url, params=params), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        raise _unreachable(addr, exc) from exc
    if upstream.status_code >= 400:
        try:
            body = await upstream.aread()
        except httpx.HTTPError:
            body = b""
        finally:
            await upstream.aclose()
            await client.aclose()
        raise _kubelet_error(body, upstream.status_code)

    async def relay() -> AsyncIterator[bytes]:
        # Ends when the kubelet ends the stream, or is cancelled (Starlette) when the client leaves; either
        # way the kubelet connection is closed here.
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError:
            return  # the kubelet went away mid-stream: end ours too (headers are already sent)
        finally:
            await upstream.aclose()
            await client.aclose()

    return StreamingResponse(relay(), media_type="text/plain; charset=utf-8",
                             headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def _exec_request(query: QueryParams, raw: bytes) -> tuple[list[str], str | None, float | None]:
    body: Any = {}
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"the exec request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest('the exec request body must be a JSON object: {"command": [...], "container": "c"}')
    command = body.get("command", query.getlist("command"))
    if isinstance(command, str):
        command = [command]
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise BadRequest("you must specify at least one command for the container (a list of strings)")
    container = body.get("container") or query.get("container") or None
    if container is not None and not isinstance(container, str):
        raise BadRequest("container must be a string")
    timeout = body.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0):
        raise BadRequest("timeout must be a non-negative number of seconds")
    return command, container, float(timeout) if timeout is not None else None


async def pod_exec(objects: ObjectReader, namespace: str, name: str, method: str, headers: Mapping[str, str],
                   query: QueryParams, raw: bytes) -> Response:
    """Answer ``…/pods/{name}/exec``: POST with JSON runs the command through the kubelet and returns its
    ``{"stdout", "stderr", "exitCode"}``; an upgrade request (or any GET) gets 400 "Upgrade request required"."""
    if method != "POST" or wants_upgrade(headers):
        raise BadRequest("Upgrade request required")
    command, requested, timeout = _exec_request(query, raw)
    pod, addr = await kubelet_of(objects, namespace, name)
    container = choose_container(pod, requested)
    body: dict[str, Any] = {"command": command}
    if timeout is not None:
        body["timeout"] = timeout
    limit = timeout or EXEC_TIMEOUT
    async with httpx.AsyncClient(timeout=httpx.Timeout(CONNECT_TIMEOUT, read=limit + 10.0)) as client:
        try:
            answer = await client.post(f"http://{addr}/exec/{namespace}/{name}/{container}", json=body)
        except httpx.ReadTimeout as exc:
            raise Timeout(f"the command in {namespace}/{name}/{container} did not finish within {limit:g}s") from exc
        except httpx.HTTPError as exc:
            raise _unreachable(addr, exc) from exc
    if answer.status_code >= 400:
        raise _kubelet_error(answer.content, answer.status_code)
    return Response(answer.content, status_code=answer.status_code, media_type="application/json")


GATEWAY_UNAVAILABLE = "serverless gateway is not available"
# Headers of the gateway's answer worth passing on (hop-by-hop and length headers are Starlette's business).
_CODE_ANSWER_HEADERS = ("content-type", "warning", "retry-after")


async def function_code(serverless_url: str, namespace: str, name: str, query_string: bytes, body: bytes,
                        content_type: str | None, *, timeout: float) -> Response:
    """Answer ``POST …/functions/{name}/code``: forward body and query string unchanged to the gateway's
    ``/-/code/{namespace}/{name}`` and return its status, content type and body verbatim.

    Raises ``ServiceUnavailable`` when no gateway is configured or it cannot be reached, ``Timeout`` when
    it does not answer within ``timeout`` seconds. The gateway's own errors (400 bad code, 413 too large)
    are answers, passed on as they are.
    """
    if not serverless_url:
        raise ServiceUnavailable(f"{GATEWAY_UNAVAILABLE}: the apiserver has no --serverless-url configured")
    url = f"{serverless_url.rstrip('/')}/-/code/{namespace}/{name}"
    if query_string:
        url += "?" + query_string.decode("latin-1")
    headers = {"Content-Type": content_type or "application/octet-stream"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(CONNECT_TIMEOUT, read=timeout, write=timeout)) as client:
        try:
            answer = await client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise ServiceUnavailable(f"{GATEWAY_UNAVAILABLE}: connecting to {serverless_url} timed out") from exc
            raise Timeout(f"the serverless gateway did not answer the code upload within {timeout:g}s") from exc
        except httpx.HTTPError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ServiceUnavailable(f"{GATEWAY_UNAVAILABLE}: {serverless_url}: {reason}") from exc
    passed = {k: v for k, v in answer.headers.items() if k.lower() in _CODE_ANSWER_HEADERS}
    media = passed.pop("content-type", None)
    return Response(answer.content, status_code=answer.status_code, media_type=media, headers=passed)


# The query parameters the gateway's activation routes read; others (watch, timeoutSeconds, kubectl's
# resourceVersion) are not passed on.
_ACTIVATION_PARAMS = ("labelSelector", "fieldSelector", "limit")


async def activations(serverless_url: str, method: str, namespace: str | None, name: str, query_string: bytes, *,
                      timeout: float) -> Response:
    """Answer GET (list or one) and DELETE on ``activations``: ask the gateway's ``/-/activations/…`` and
    return its status and JSON body as they are. Raises ``ServiceUnavailable`` when no gateway is
    configured or it cannot be reached, ``Timeout`` when it does not answer within ``timeout`` seconds."""
    if not serverless_url:
        raise ServiceUnavailable(f"{GATEWAY_UNAVAILABLE}: the apiserver has no --serverless-url configured, "
                                 f"and it keeps the activations")
    url = f"{serverless_url.rstrip('/')}/-/activations"
    if namespace:
        url += f"/{namespace}"
        if name:
            url += f"/{name}"
    query = QueryParams(query_string.decode("latin-1"))
    params = {k: query[k] for k in _ACTIVATION_PARAMS if k in query}
    async with httpx.AsyncClient(timeout=httpx.Timeout(CONNECT_TIMEOUT, read=timeout, write=timeout)) as client:
        try:
            answer = await client.request(method, url, params=params)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise ServiceUnavailable(f"{GATEWAY_UNAVAILABLE}: connecting to {serverless_url} timed out") from exc
            raise Timeout(f"the serverless gateway did not answer within {timeout:g}s") from exc
        except httpx.HTTPError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ServiceUnavailable(f"{GATEWAY_UNAVAILABLE}: {serverless_url}: {reason}") from exc
    if answer.status_code >= 400 and not _is_status(answer.content):  # not its activation routes answering
        raise ServiceUnavailable(f"{GATEWAY_UNAVAILABLE}: it answered HTTP {answer.status_code}")
    return Response(answer.content, status_code=answer.status_code,
                    media_type=answer.headers.get("content-type") or "application/json")


def _is_status(body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("kind") == "Status"
