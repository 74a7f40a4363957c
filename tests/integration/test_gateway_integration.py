"""The gateway daemon wired to a real apiserver: a Function and its Endpoints (made by hand here, as the
function and endpoints controllers would) route a call to a local HTTP "instance", the activation is
written as an Activation object, and a cold call scales the (missing) Deployment without failing."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from minik8s.api import registry
from minik8s.client.rest import AsyncApiClient
from minik8s.testing import ApiserverProcess, free_port
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


async def test_a_call_through_the_daemon_is_answered_and_recorded(apiserver: ApiserverProcess) -> None:
    name = f"gw-{uuid.uuid4().hex[:8]}"
    port = free_port()
    config = GatewayConfig(apiserver=apiserver.url, registry="http://127.0.0.1:1", port=port,
                           advertise_url=f"http://127.0.0.1:{port}", activation_flush_interval=0.1)
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
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 20)
            assert fn["metadata"]["name"] == name


async def _true(value: bool) -> bool:
    return value
