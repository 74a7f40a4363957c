"""Functions and Activations on a real apiserver and etcd: validation answers, CRUD and watch, what the
apiserver refuses on activations (the gateway keeps them), the ``functions/NAME/code`` proxy to a
(stand-in) serverless gateway, and the function controller with a fake builder converging a Function
into a Deployment, a Service and a status."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from minik8s.api import registry
from minik8s.client import AsyncApiClient
from minik8s.errors import NotFound
from minik8s.testing import ApiserverProcess, EtcdProcess
from serverless.controller import FUNCTION_LABEL, IMAGES_FINALIZER, FunctionController

pytestmark = pytest.mark.timeout(120)

DIGEST = "sha256:" + "cd" * 32
FN = registry.lookup("functions")


# --- a stand-in gateway ------------------------------------------------------------------------------

class Gateway:
    """A threaded HTTP server on 127.0.0.1 that records code uploads and answers like the gateway."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.path, self.headers.get("Content-Type", ""), body))
                if b"syntax error" in body:
                    answer, code = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "message": "main.py line 1: invalid syntax", "reason": "BadRequest",
                                    "code": 400}, 400
                else:
                    answer, code = {"kind": "FunctionCode", "codeDigest": DIGEST, "size": len(body), "files": 1,
                                    "requirements": False}, 201
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Gateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with Gateway() as gw:
        yield gw


@pytest.fixture(scope="module")
def fn_apiserver(etcd: EtcdProcess, gateway: Gateway) -> Iterator[ApiserverProcess]:
    """An apiserver of this module's own whose --serverless-url is the stand-in gateway."""
    with ApiserverProcess(etcd.endpoint, extra_args=["--compaction-interval", "0",
                                                     "--serverless-url", gateway.url]) as proc:
        yield proc


@pytest.fixture(scope="module")
def api(fn_apiserver: ApiserverProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fn_apiserver.url, timeout=30) as client:
        yield client


@pytest.fixture()
def ns(api: httpx.Client) -> str:
    name = f"fn-{uuid.uuid4().hex[:10]}"
    r = api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    return name


def fpath(ns: str, name: str = "", sub: str = "") -> str:
    p = f"/apis/minik8s.io/v1/namespaces/{ns}/functions"
    return p + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def apath(ns: str, name: str = "") -> str:
    p = f"/apis/minik8s.io/v1/namespaces/{ns}/activations"
    return p + (f"/{name}" if name else "")


def function(name: str = "add", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "minik8s.io/v1", "kind": "Function", "metadata": {"name": name},
            "spec": {"codeDigest": DIGEST, **spec}}


def activation(fn: str = "add", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "minik8s.io/v1", "kind": "Activation",
            "metadata": {"name": uuid.uuid4().hex, "labels": {FUNCTION_LABEL: fn}},
            "spec": {"function": fn, "start": "2026-01-02T03:04:05.123456Z", "durationMs": 3.5, "initMs": 0.0,
                     "status": "success", "statusCode": 200, "result": "8", "truncated": False, "logs": "",
                     "async": False, **spec}}


# --- validation and CRUD -----------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "field"), [
    ({"runtime": "node"}, "spec.runtime"), ({"codeDigest": "sha256:nothex"}, "spec.codeDigest"),
    ({"entryPoint": "a-b"}, "spec.entryPoint"), ({"minScale": 5, "maxScale": 2}, "spec.maxScale"),
    ({"maxScale": 0}, "spec.maxScale"), ({"targetConcurrency": 0}, "spec.targetConcurrency"),
    ({"idleTimeout": 0}, "spec.idleTimeout"), ({"timeout": 1000}, "spec.timeout"),
])
def test_bad_function_fields_are_a_422_status(api: httpx.Client, ns: str, spec: dict[str, Any], field: str) -> None:
    r = api.post(fpath(ns), json=function(**spec))
    assert r.status_code == 422, r.text
    status = r.json()
    assert status["kind"] == "Status" and status["reason"] == "Invalid" and status["code"] == 422
    assert status["details"]["kind"] == "Function" and status["details"]["group"] == "minik8s.io"
    assert [c["field"] for c in status["details"]["causes"]] == [field]


def test_function_crud_defaults_and_strict_status(api: httpx.Client, ns: str) -> None:
    r = api.post(fpath(ns), json=function())
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert (spec["runtime"], spec["entryPoint"], spec["minScale"], spec["maxScale"], spec["targetConcurrency"],
            spec["idleTimeout"], spec["timeout"]) == ("python", "run", 0, 10, 2, 60, 60)
    # Every status field of the contract passes strict field validation on /status.
    status = {"codeDigest": DIGEST, "image": "127.0.0.1:5000/minik8s-functions/x/add@" + DIGEST, "replicas": 1,
              "readyReplicas": 1, "desiredScale": 1, "lastActiveTime": "2026-01-01T00:00:00Z",
              "url": "http://127.0.0.1:18081/function/x/add", "observedGeneration": 1,
              "conditions": [{"type": "Ready", "status": "True", "reason": "InstancesReady", "message": "1 ready",
                              "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    r = api.patch(fpath(ns, "add", "status") + "?fieldValidation=Strict", json={"status": status},
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == status
    r = api.patch(fpath(ns, "add", "status") + "?fieldValidation=Strict", json={"status": {"bogus": 1}},
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 400 and 'unknown field "status.bogus"' in r.json()["message"]
    # A merge patch of one status field keeps the others (how controller and autoscaler share it).
    r = api.patch(fpath(ns, "add", "status"), json={"status": {"desiredScale": 3}},
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.json()["status"]["desiredScale"] == 3 and r.json()["status"]["image"] == status["image"]
    r = api.patch(fpath(ns, "add"), json={"spec": {"maxScale": 4}},
                  headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json()["metadata"]["generation"] == 2
    table = api.get(fpath(ns), headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
    assert [c["name"] for c in table["columnDefinitions"]][:6] == ["Name", "Ready", "Scale", "Code", "URL", "Age"]
    assert table["rows"][0]["cells"][:3] == ["add", "1/3", "0-4"]
    assert api.delete(fpath(ns, "add")).status_code == 200
    assert api.get(fpath(ns, "add")).status_code == 404


def test_activations_are_not_written_or_watched_through_the_apiserver(api: httpx.Client, ns: str) -> None:
    # The gateway keeps them (docs/serverless.md, Activation): no create, update, patch, watch or
    # deletecollection here, and nothing reaches etcd.
    r = api.post(apath(ns), json=activation())
    assert r.status_code == 405 and r.json()["message"] == "activations are written by the gateway"
    assert r.json()["kind"] == "Status" and r.json()["reason"] == "MethodNotAllowed"
    for method in ("PUT", "PATCH"):
        r = api.request(method, apath(ns, "x" * 32), json=activation(),
                        headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 405 and r.json()["message"] == "activations are written by the gateway"
    r = api.get(apath(ns), params={"watch": "true"})
    assert r.status_code == 405
    assert r.json()["message"] == "watch is not supported on activations: the gateway serves them"
    assert api.get("/apis/minik8s.io/v1/activations", params={"watch": "1"}).status_code == 405
    assert api.request("DELETE", apath(ns)).status_code == 405
    discovery = api.get("/apis/minik8s.io/v1").json()
    entry = next(r for r in discovery["resources"] if r["name"] == "activations")
    assert sorted(entry["verbs"]) == ["delete", "get", "list"]


def test_activation_reads_are_503_when_the_gateway_does_not_serve_them(api: httpx.Client, ns: str,
                                                                       apiserver: ApiserverProcess) -> None:
    # This module's stand-in gateway has no /-/activations routes: its non-Status refusal is a 503.
    for r in (api.get(apath(ns)), api.get(apath(ns, "a" * 32)), api.delete(apath(ns, "a" * 32)),
              api.get("/apis/minik8s.io/v1/activations")):
        assert r.status_code == 503 and r.json()["reason"] == "ServiceUnavailable", r.text
        assert "serverless gateway is not available" in r.json()["message"]
    # An apiserver without --serverless-url says so.
    r = httpx.get(f"{apiserver.url}{apath('default')}", timeout=10)
    assert r.status_code == 503 and "no --serverless-url" in r.json()["message"]


async def test_functions_can_be_watched(fn_apiserver: ApiserverProcess, ns: str) -> None:
    async with AsyncApiClient(fn_apiserver.url) as client:
        _, rv = await client.list(FN, ns)
        events = client.watch(FN, ns, resource_version=rv, timeout_seconds=20)
        first = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.1)  # the watch is open before the create (a later create is seen either way)
        created = await client.create(function("watched"), namespace=ns)
        etype, seen = await asyncio.wait_for(first, 15)
        await events.aclose()  # type: ignore[attr-defined]
        assert etype == "ADDED" and seen["metadata"]["uid"] == created["metadata"]["uid"]
        assert seen["kind"] == "Function"


# --- the code subresource ----------------------------------------------------------------------------

def test_code_upload_is_proxied_verbatim(api: httpx.Client, ns: str, gateway: Gateway) -> None:
    source = b"def run(a, b):\n    return a + b\n"
    r = api.post(fpath(ns, "add", "code") + "?filename=add.py&entryPoint=run", content=source,
                 headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"kind": "FunctionCode", "codeDigest": DIGEST, "size": len(source), "files": 1,
                        "requirements": False}
    assert gateway.requests[-1] == (f"/-/code/{ns}/add?filename=add.py&entryPoint=run", "application/octet-stream",
                                    source)
    # The gateway's refusal comes back as it is.
    r = api.post(fpath(ns, "add", "code") + "?filename=add.py", content=b"syntax error(")
    assert r.status_code == 400 and r.json()["message"] == "main.py line 1: invalid syntax"


def test_code_upload_accepts_eight_mebibytes_and_refuses_far_more(api: httpx.Client, ns: str,
                                                                 gateway: Gateway) -> None:
    big = b"#" * (8 * 1024 * 1024)
    r = api.post(fpath(ns, "big", "code") + "?filename=app.zip", content=big)
    assert r.status_code == 201, r.text[:300]
    assert gateway.requests[-1][2] == big
    r = api.post(fpath(ns, "big", "code") + "?filename=app.zip", content=b"#" * (17 * 1024 * 1024))
    assert r.status_code == 413 and r.json()["kind"] == "Status"


def test_code_upload_checks_method_name_and_namespace(api: httpx.Client, ns: str) -> None:
    assert api.get(fpath(ns, "add", "code")).status_code == 405
    r = api.post(fpath(ns, "Bad_Name", "code"), content=b"x")
    assert r.status_code == 400 and "Bad_Name" in r.json()["message"]
    r = api.post(fpath("no-such-ns-here", "add", "code"), content=b"x")
    assert r.status_code == 404 and r.json()["kind"] == "Status"
    doc = api.get("/apis/minik8s.io/v1").json()
    code = next(res for res in doc["resources"] if res["name"] == "functions/code")
    assert code["verbs"] == ["create"]


def test_code_upload_without_a_gateway_is_a_503(apiserver: ApiserverProcess) -> None:
    with httpx.Client(base_url=apiserver.url, timeout=15) as api:
        r = api.post(fpath("default", "add", "code") + "?filename=add.py", content=b"def run(): pass\n")
        assert r.status_code == 503
        status = r.json()
        assert status["kind"] == "Status" and status["reason"] == "ServiceUnavailable"
        assert status["message"].startswith("serverless gateway is not available: ")


def test_code_upload_to_a_dead_gateway_is_a_503(etcd: EtcdProcess) -> None:
    from minik8s.testing import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    args = ["--compaction-interval", "0", "--serverless-url", dead]
    with ApiserverProcess(etcd.endpoint, extra_args=args) as proc, httpx.Client(base_url=proc.url, timeout=15) as api:
        r = api.post(fpath("default", "add", "code"), content=b"def run(): pass\n")
    assert r.status_code == 503 and r.json()["message"].startswith(f"serverless gateway is not available: {dead}")


# --- the function controller ---------------------------------------------------------------------------

class Result:
    def __init__(self, image: str) -> None:
        self.image, self.tag, self.manifest_digest, self.deps_layer, self.seconds = image, "c-test", DIGEST, None, 0.1


class FakeBuilder:
    def __init__(self) -> None:
        self.builds: list[tuple[str, str, str]] = []
        self.deleted: list[tuple[str, str]] = []

    def build(self, namespace: str, name: str, code_digest: str) -> Result:
        self.builds.append((namespace, name, code_digest))
        return Result(f"127.0.0.1:5000/minik8s-functions/{namespace}/{name}@{code_digest}")

    def delete_images(self, namespace: str, name: str) -> int:
        self.deleted.append((namespace, name))
        return 1


async def _until(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def test_the_controller_converges_a_function(fn_apiserver: ApiserverProcess, ns: str) -> None:
    builder = FakeBuilder()
    async with AsyncApiClient(fn_apiserver.url) as client:
        controller = FunctionController(client, builder, advertise_url="http://127.0.0.1:18081", workers=2)
        task = asyncio.create_task(controller.run())
        try:
            await client.create(function("add", minScale=1), namespace=ns)
            deps, svcs = registry.lookup("deployments"), registry.lookup("services")

            async def ready_status() -> dict[str, Any] | None:
                fn = await client.get(FN, "add", ns)
                st = fn.get("status") or {}
                return fn if st.get("image") and st.get("url") else None

            fn = await _until("function status", ready_status)
            st = fn["status"]
            assert st["codeDigest"] == DIGEST and st["image"].endswith(f"/{ns}/add@{DIGEST}")
            assert st["url"] == f"http://127.0.0.1:18081/function/{ns}/add"
            assert {c["type"]: c["status"] for c in st["conditions"]}["Built"] == "True"
            assert IMAGES_FINALIZER in fn["metadata"]["finalizers"]
            dep = await client.get(deps, "add", ns)
            svc = await client.get(svcs, "add", ns)
            assert dep["spec"]["replicas"] == 1
            assert dep["metadata"]["ownerReferences"][0]["uid"] == fn["metadata"]["uid"]
            assert svc["spec"]["selector"] == {FUNCTION_LABEL: "add"} and svc["spec"]["clusterIP"]
            # (The controller sees every namespace; other tests' functions are built too.)
            assert [b for b in builder.builds if b[0] == ns] == [(ns, "add", DIGEST)]

            # The autoscaler's scale survives a later change of the function's spec.
            await client.patch(deps, "add", {"spec": {"replicas": 3}}, namespace=ns, subresource="scale")
            await client.patch(FN, "add", {"spec": {"timeout": 5}}, namespace=ns)

            async def rolled() -> dict[str, Any] | None:
                d = await client.get(deps, "add", ns)
                env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
                return d if env.get("MINIK8S_TIMEOUT") == "5" else None

            dep = await _until("deployment update", rolled)
            assert dep["spec"]["replicas"] == 3
            assert [b for b in builder.builds if b[0] == ns] == [(ns, "add", DIGEST)], "the same code is built once"
            # Converged: nothing more is written (the deployment's generation stays).
            generation = dep["metadata"]["generation"]
            await asyncio.sleep(0.5)
            assert (await client.get(deps, "add", ns))["metadata"]["generation"] == generation

            # Deleting the function removes its images, then the finalizer lets it go.
            await client.delete(FN, "add", ns)

            async def gone() -> bool:
                try:
                    await client.get(FN, "add", ns)
                except NotFound:
                    return True
                return False

            await _until("function deletion", gone)
            assert [d for d in builder.deleted if d[0] == ns] == [(ns, "add")]
        finally:
            controller.stop()
            await asyncio.wait_for(task, 10)
