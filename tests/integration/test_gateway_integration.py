"""The gateway daemon wired to a real apiserver: a Function and its Endpoints (made by hand here, as the
function and endpoints controllers would) route a call to a local HTTP "instance", a cold call scales the
(missing) Deployment without failing, and the activation record (kept in the gateway's SQLite store) is
read, shown as a Table and deleted through the apiserver's ``activations`` proxy (--serverless-url);
deleting the Function deletes its records."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from minik8s.api import registry
from minik8s.client.rest import AsyncApiClient
from minik8s.testing import ApiserverProcess, EtcdProcess, free_port
from serverless.main import GatewayConfig, GatewayDaemon

pytestmark = pytest.mark.timeout(60)


class Instance(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(b'{"ok": true}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(b"8")

    def _answer(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def instance() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Instance)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


async def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture()
def gateway_port() -> int:
    return free_port()


@pytest.fixture()
def proxying_apiserver(etcd: EtcdProcess, gateway_port: int) -> Iterator[ApiserverProcess]:
    """An apiserver whose --serverless-url is the gateway this test starts on ``gateway_port``."""
    with ApiserverProcess(etcd.endpoint, extra_args=["--compaction-interval", "0", "--serverless-url",
                                                     f"http://127.0.0.1:{gateway_port}"]) as proc:
        yield proc


async def test_a_call_through_the_daemon_is_answered_and_recorded(proxying_apiserver: ApiserverProcess,
                                                                 gateway_port: int, tmp_path: Path) -> None:
    apiserver = proxying_apiserver
    name = f"gw-{uuid.uuid4().hex[:8]}"
    port = gateway_port
    config = GatewayConfig(apiserver=apiserver.url, registry="http://127.0.0.1:1", port=port,
                           advertise_url=f"http://127.0.0.1:{port}", activation_flush_interval=0.1,
                           state_dir=str(tmp_path / "gateway"))
    with instance() as pod_port:
        async with AsyncApiClient(apiserver.url) as client:
            fn = await client.create({"apiVersion": "minik8s.io/v1", "kind": "Function",
                                      "metadata": {"name": name, "namespace": "default"},
                                      "spec": {"codeDigest": "sha256:" + "0" * 64}})
            await client.patch(registry.lookup("functions"), name,
                               {"status": {"image": "127.0.0.1:1/minik8s-functions/default/x@sha256:00"}},
                               namespace="default", subresource="status")
            daemon = GatewayDaemon(client, config)
            task = asyncio.create_task(daemon.run())
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    async def healthy() -> bool:
                        try:
                            return (await http.get("/healthz")).status_code == 200
                        except httpx.HTTPError:
                            return False

                    await wait_for(healthy)
                    # No Endpoints yet: the call is held, the poke finds no Deployment, the Endpoints
                    # (as the endpoints controller would write them) release it.
                    call = asyncio.create_task(http.post(f"/function/default/{name}", json={"a": 3, "b": 5}))
                    await wait_for(lambda: _true(daemon.activator.held_count(f"default/{name}") == 1))
                    await client.create({"apiVersion": "v1", "kind": "Endpoints",
                                         "metadata": {"name": name, "namespace": "default",
                                                      "labels": {"minik8s.io/function": name}},
                                         "subsets": [{"addresses": [{"ip": "127.0.0.1", "targetRef": {
                                             "kind": "Pod", "name": f"{name}-pod"}}],
                                                      "ports": [{"name": "http", "port": pod_port}]}]})
                    r = await asyncio.wait_for(call, 10)
                    assert r.status_code == 200 and r.text == "8"
                    activation = r.headers["X-Minik8s-Activation-Id"]

                async def recorded() -> dict[str, Any] | None:
                    items, _ = await client.list(registry.lookup("activations"), "default",
                                                 label_selector=f"minik8s.io/function={name}")
                    return items[0] if items else None

                obj = await wait_for(recorded)
                assert obj["metadata"]["name"] == activation
                assert obj["spec"]["status"] == "success" and obj["spec"]["pod"] == f"{name}-pod"
                assert obj["spec"]["initMs"] > 0
                assert (tmp_path / "gateway" / "activations.db").exists()
                await check_the_activations_proxy(apiserver.url, name, activation, obj)
                # Deleting the Function deletes its records (the gateway's function informer).
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    await http.post(f"/function/default/{name}")
                await wait_for(recorded)
                await client.delete(registry.lookup("functions"), name, "default")

                async def forgotten() -> bool:
                    items, _ = await client.list(registry.lookup("activations"), "default",
                                                 label_selector=f"minik8s.io/function={name}")
                    return not items

                await wait_for(forgotten)
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 20)
            assert fn["metadata"]["name"] == name


async def _true(value: bool) -> bool:
    return value


TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}


async def check_the_activations_proxy(api_url: str, function: str, activation: str, obj: dict[str, Any]) -> None:
    """What kubectl and the e2e helpers do, through the apiserver: list, get, Table, delete, and refusals."""
    base = "/apis/minik8s.io/v1/namespaces/default/activations"
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as api:
        r = await api.get(base, params={"labelSelector": f"minik8s.io/function={function}"})
        assert r.status_code == 200 and r.json()["kind"] == "ActivationList"
        assert [i["metadata"]["name"] for i in r.json()["items"]] == [activation]
        everywhere = await api.get("/apis/minik8s.io/v1/activations", params={"limit": "500"})
        assert activation in {i["metadata"]["name"] for i in everywhere.json()["items"]}
        got = await api.get(f"{base}/{activation}")
        assert got.status_code == 200 and got.json() == obj
        assert got.json()["metadata"]["resourceVersion"] == "1" and got.json()["metadata"]["creationTimestamp"]
        table = (await api.get(base, params={"labelSelector": f"minik8s.io/function={function}"},
                               headers=TABLE)).json()
        assert table["kind"] == "Table"
        assert [c["name"] for c in table["columnDefinitions"]][:3] == ["Name", "Function", "Status"]
        assert table["rows"][0]["cells"][:4] == [activation, function, "success", 200]
        one = (await api.get(f"{base}/{activation}", headers=TABLE)).json()
        assert one["kind"] == "Table" and one["rows"][0]["cells"][0] == activation
        r = await api.get(base, params={"labelSelector": "app=web"})
        assert r.status_code == 400 and r.json()["kind"] == "Status"
        r = await api.get(base, params={"watch": "true"})
        assert r.status_code == 405 and "the gateway serves them" in r.json()["message"]
        r = await api.post(base, json=obj)
        assert r.status_code == 405 and r.json()["message"] == "activations are written by the gateway"
        r = await api.delete(f"{base}/{activation}")
        assert r.status_code == 200 and r.json()["metadata"]["name"] == activation
        r = await api.get(f"{base}/{activation}")
        assert r.status_code == 404 and r.json()["reason"] == "NotFound"
        assert r.json()["message"] == f'activations.minik8s.io "{activation}" not found'
