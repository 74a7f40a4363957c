"""The REST client against a fake transport: URLs, headers, bodies, error mapping, watch parsing."""

from __future__ import annotations

import json

import httpx
import pytest

from minik8s.api.registry import lookup
from minik8s.client.rest import TABLE_ACCEPT, ApiClient, AsyncApiClient
from minik8s.errors import AlreadyExists, BadRequest, Conflict, ConnectionFailed, Gone, Invalid, NotFound

PODS = lookup("pods")
DEPLOY = lookup("deploy")
NODES = lookup("nodes")


def status(code: int, reason: str, message: str, **details: object) -> httpx.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message,
            "code": code, "details": details}
    return httpx.Response(code, json=body)


class Recorder:
    def __init__(self, *responses: httpx.Response) -> None:
        self.requests: list[httpx.Request] = []
        self.responses = list(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0) if self.responses else httpx.Response(200, json={})


def pod(name: str = "p", ns: str | None = None, rv: str = "") -> dict:
    meta: dict = {"name": name}
    if ns:
        meta["namespace"] = ns
    if rv:
        meta["resourceVersion"] = rv
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [{"name": "c"}]}}


def client(rec: Recorder) -> ApiClient:
    return ApiClient("http://api.test", transport=httpx.MockTransport(rec))


def test_create_posts_to_the_collection_of_the_object_namespace():
    rec = Recorder(httpx.Response(201, json=pod("p", "team")))
    out = client(rec).create(pod("p", "team"), dry_run=True, field_validation="Strict")
    req = rec.requests[0]
    assert req.method == "POST"
    assert req.url.path == "/api/v1/namespaces/team/pods"
    assert req.url.params["dryRun"] == "All" and req.url.params["fieldValidation"] == "Strict"
    assert json.loads(req.content)["metadata"]["name"] == "p"
    assert out["metadata"]["namespace"] == "team"


def test_create_defaults_namespace_and_rejects_a_mismatch():
    rec = Recorder(httpx.Response(201, json=pod()))
    client(rec).create(pod())
    assert rec.requests[0].url.path == "/api/v1/namespaces/default/pods"
    client(rec).create(pod(), namespace="other")
    assert rec.requests[1].url.path == "/api/v1/namespaces/other/pods"
    with pytest.raises(BadRequest, match='does not match the namespace "b"'):
        client(rec).create(pod("p", "a"), namespace="b")


def test_create_of_an_unknown_kind_names_apiversion_and_kind():
    with pytest.raises(BadRequest, match='no matches for kind "Gizmo" in version "toys/v1"'):
        client(Recorder()).create({"apiVersion": "toys/v1", "kind": "Gizmo", "metadata": {"name": "x"}})


def test_cluster_scoped_paths_ignore_namespaces():
    rec = Recorder(httpx.Response(200, json={"metadata": {"name": "n1"}}))
    node = client(rec).get(NODES, "n1", "ignored")
    assert rec.requests[0].url.path == "/api/v1/nodes/n1"
    assert node["kind"] == "Node"


def test_list_returns_items_with_kind_and_the_list_resource_version():
    body = {"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "42"},
            "items": [{"metadata": {"name": "a", "namespace": "x"}}]}
    rec = Recorder(httpx.Response(200, json=body))
    items, rv = client(rec).list(DEPLOY, "x", label_selector="app=a", field_selector="metadata.name=a")
    assert rv == "42"
    assert items[0]["kind"] == "Deployment" and items[0]["apiVersion"] == "apps/v1"
    req = rec.requests[0]
    assert req.url.path == "/apis/apps/v1/namespaces/x/deployments"
    assert req.url.params["labelSelector"] == "app=a" and req.url.params["fieldSelector"] == "metadata.name=a"
    client(rec).list(DEPLOY)
    assert rec.requests[1].url.path == "/apis/apps/v1/deployments"


def test_replace_and_replace_status_put_to_the_right_paths():
    rec = Recorder()
    c = client(rec)
    c.replace(pod("p", "ns", rv="7"))
    c.replace_status(pod("p", "ns", rv="7"))
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("PUT", "/api/v1/namespaces/ns/pods/p"), ("PUT", "/api/v1/namespaces/ns/pods/p/status")]
    assert json.loads(rec.requests[0].content)["metadata"]["resourceVersion"] == "7"


@pytest.mark.parametrize(("patch_type", "content_type"), [
    ("merge", "application/merge-patch+json"),
    ("strategic", "application/strategic-merge-patch+json"),
    ("json", "application/json-patch+json"),
])
def test_patch_content_types(patch_type, content_type):
    rec = Recorder()
    client(rec).patch(DEPLOY, "d", {"spec": {"replicas": 3}}, namespace="ns", patch_type=patch_type,
                      subresource="scale")
    req = rec.requests[0]
    assert req.method == "PATCH" and req.url.path == "/apis/apps/v1/namespaces/ns/deployments/d/scale"
    assert req.headers["Content-Type"] == content_type
    assert json.loads(req.content) == {"spec": {"replicas": 3}}


def test_delete_sends_delete_options():
    rec = Recorder(httpx.Response(200, json=pod("p", "ns")))
    client(rec).delete(PODS, "p", "ns", grace_period_seconds=0, propagation_policy="Foreground",
                       preconditions={"uid": "u1"})
    req = rec.requests[0]
    assert req.method == "DELETE" and req.url.path == "/api/v1/namespaces/ns/pods/p"
    body = json.loads(req.content)
    assert body == {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                    "propagationPolicy": "Foreground", "preconditions": {"uid": "u1"}}
    assert req.url.params["gracePeriodSeconds"] == "0"


def test_get_table_asks_for_a_table():
    rec = Recorder(httpx.Response(200, json={"kind": "Table", "rows": []}))
    c = client(rec)
    c.get_table(PODS, "ns", label_selector="a=b")
    c.get_table(PODS, "ns", all_namespaces=True)
    c.get_table(PODS, "ns", "p")
    assert all(r.headers["Accept"] == TABLE_ACCEPT for r in rec.requests)
    assert [r.url.path for r in rec.requests] == ["/api/v1/namespaces/ns/pods", "/api/v1/pods",
                                                  "/api/v1/namespaces/ns/pods/p"]
    assert rec.requests[0].url.params["labelSelector"] == "a=b"


@pytest.mark.parametrize(("code", "reason", "cls"), [
    (404, "NotFound", NotFound), (409, "AlreadyExists", AlreadyExists), (409, "Conflict", Conflict),
    (410, "Expired", Gone), (422, "Invalid", Invalid),
])
def test_non_2xx_raises_the_matching_error(code, reason, cls):
    rec = Recorder(status(code, reason, "nope", kind="Pod", name="p"))
    with pytest.raises(cls) as info:
        client(rec).get(PODS, "p", "ns")
    assert info.value.message == "nope" and info.value.code == code


def test_non_json_error_body_still_maps_by_code():
    rec = Recorder(httpx.Response(404, text="404 page not found"))
    with pytest.raises(NotFound, match="404 page not found"):
        client(rec).request("GET", "/nowhere")


def test_transport_failure_is_connection_failed_with_one_line():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused\nmore")

    c = ApiClient("http://api.test", transport=httpx.MockTransport(refuse))
    with pytest.raises(ConnectionFailed) as info:
        c.get(PODS, "p", "ns")
    assert str(info.value) == ("cannot reach the minik8s apiserver at http://api.test: "
                               "[Errno 111] Connection refused more")


def lines(*events: dict) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def test_watch_yields_events_and_sends_watch_params():
    body = lines({"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}},
                 {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "6"}}},
                 {"type": "DELETED", "object": {"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "7"}}})
    rec = Recorder(httpx.Response(200, content=body))
    events = list(client(rec).watch(PODS, "ns", resource_version="4", label_selector="x=y", timeout_seconds=30))
    assert [t for t, _ in events] == ["ADDED", "BOOKMARK", "DELETED"]
    assert events[0][1]["kind"] == "Pod"
    params = rec.requests[0].url.params
    assert params["watch"] == "true" and params["resourceVersion"] == "4" and params["timeoutSeconds"] == "30"
    assert params["labelSelector"] == "x=y"


def test_watch_error_event_raises_gone():
    body = lines({"type": "ADDED", "object": {"metadata": {"name": "a"}}},
                 {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                              "message": "too old resource version: 1 (50)"}})
    rec = Recorder(httpx.Response(200, content=body))
    seen = []
    with pytest.raises(Gone, match="too old"):
        for event in client(rec).watch(PODS, "ns", resource_version="1"):
            seen.append(event)
    assert len(seen) == 1


def test_watch_non_2xx_raises_before_streaming():
    rec = Recorder(status(410, "Expired", "gone"))
    with pytest.raises(Gone):
        list(client(rec).watch(PODS, "ns", resource_version="1"))


def test_watch_table_sends_table_accept():
    rec = Recorder(httpx.Response(200, content=b""))
    list(client(rec).watch(PODS, "ns", table=True))
    assert rec.requests[0].headers["Accept"] == TABLE_ACCEPT


def test_update_with_retry_retries_on_conflict_and_skips_noop_writes():
    state = {"rv": 1, "puts": 0, "conflicts": 1}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            obj = pod("p", "ns", rv=str(state["rv"]))
            obj["metadata"]["labels"] = {"a": "1"}
            return httpx.Response(200, json=obj)
        state["puts"] += 1
        if state["conflicts"]:
            state["conflicts"] -= 1
            state["rv"] += 1
            return status(409, "Conflict", "the object has been modified")
        return httpx.Response(200, json=json.loads(request.content))

    c = ApiClient("http://api.test", transport=httpx.MockTransport(handler))

    def mutate(obj: dict) -> None:
        obj["metadata"]["labels"]["b"] = "2"

    out = c.update_with_retry(PODS, "p", "ns", mutate)
    assert out["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert out["metadata"]["resourceVersion"] == "2"
    assert state["puts"] == 2
    c.update_with_retry(PODS, "p", "ns", lambda obj: None)
    assert state["puts"] == 2  # nothing changed, nothing written


def test_update_with_retry_gives_up_after_retries():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=pod("p", "ns", rv="1"))
        return status(409, "Conflict", "modified")

    c = ApiClient("http://api.test", transport=httpx.MockTransport(handler))
    with pytest.raises(Conflict):
        c.update_with_retry(PODS, "p", "ns", lambda o: o["metadata"].update(labels={"x": "y"}), retries=2)


async def test_async_client_same_shapes():
    body = lines({"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "9"}}},
                 {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "old"}})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.params.get("watch"):
            return httpx.Response(200, content=body)
        if request.method == "POST":
            return status(409, "AlreadyExists", 'pods "p" already exists')
        return httpx.Response(200, json={"metadata": {"resourceVersion": "8"}, "items": [{"metadata": {"name": "a"}}]})

    async with AsyncApiClient("http://api.test", transport=httpx.MockTransport(handler)) as c:
        items, rv = await c.list(PODS, "ns")
        assert rv == "8" and items[0]["kind"] == "Pod"
        with pytest.raises(AlreadyExists):
            await c.create(pod("p", "ns"))
        events = []
        with pytest.raises(Gone):
            async for event in c.watch(PODS, "ns", resource_version=rv):
                events.append(event)
        assert events[0][0] == "MODIFIED"
        assert events[0][1]["kind"] == "Pod"


async def test_async_update_with_retry_accepts_coroutine_mutators():
    puts: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=pod("p", "ns", rv="3"))
        puts.append(json.loads(request.content))
        return httpx.Response(200, json=puts[-1])

    async def mutate(obj: dict) -> None:
        obj["status"] = {"phase": "Running"}

    async with AsyncApiClient("http://api.test", transport=httpx.MockTransport(handler)) as c:
        out = await c.update_with_retry(PODS, "p", "ns", mutate, subresource="status")
    assert out["status"] == {"phase": "Running"}
    assert len(puts) == 1


async def test_async_connection_failure():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with AsyncApiClient("http://api.test", transport=httpx.MockTransport(refuse)) as c:
        with pytest.raises(ConnectionFailed, match=r"cannot reach the minik8s apiserver at http://api\.test"):
            await c.get(PODS, "p", "ns")
        with pytest.raises(ConnectionFailed):
            async for _ in c.watch(PODS):
                pass
