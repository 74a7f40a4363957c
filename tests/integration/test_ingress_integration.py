"""The ingress controller against a real apiserver (real etcd) with a real nginx on a free port.

Two local HTTP servers stand in for pods (Endpoints written by hand point at 127.0.0.1:their ports; no
controllers run here). The controller runs in a thread of its own with its event loop, as the daemon
does; the test drives the API and sends real HTTP requests through nginx with a Host header.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingress.controller import ControllerConfig, IngressController
from ingress.nginx import Nginx
from ingress.nginxconf import Settings
from minik8s.api.registry import lookup
from minik8s.client.rest import ApiClient, AsyncApiClient
from minik8s.cluster.layout import free_ports
from minik8s.errors import NotFound
from minik8s.testing import wait_until

NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
pytestmark = pytest.mark.timeout(120)
# Never a skip: `make test` installs nginx (scripts/install-deps.sh), so a missing one is a broken install.
assert NGINX is not None, "nginx is not installed (make deps installs it)"
INGRESSES = lookup("ingresses")
HOST = "shop.example.com"
NODE_IP = "10.88.250.1"


class Backend:
    """A local HTTP server answering ``text`` on every path (and echoing the path it was asked)."""

    def __init__(self, text: str) -> None:
        answer = text

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = f"{answer} {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def get(port: int, path: str, host: str = HOST, timeout: float = 3.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


class Running:
    """The controller in a thread with its own event loop."""

    def __init__(self, api_url: str, settings: Settings) -> None:
        assert NGINX is not None
        self.nginx = Nginx(NGINX, settings.state_dir)
        self.cfg = ControllerConfig(settings=settings, node_ip=NODE_IP, sync_period=30, min_sync_period=0.05)
        self.api_url = api_url
        self.loop: asyncio.AbstractEventLoop | None = None
        self.controller: IngressController | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True, name="ingress-controller")
        self.thread.start()
        assert self._ready.wait(10)

    def _main(self) -> None:
        async def serve() -> None:
            async with AsyncApiClient(self.api_url) as client:
                self.loop = asyncio.get_running_loop()
                self.controller = IngressController(client, self.cfg, self.nginx)
                self._ready.set()
                await self.controller.run()
        try:
            asyncio.run(serve())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def stop(self) -> None:
        assert self.loop is not None and self.controller is not None
        self.loop.call_soon_threadsafe(self.controller.stop)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the controller did not stop"
        assert self.error is None, self.error


def service(name: str, *, target: int | str = 8080) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": target}]}}


def endpoints(name: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "http", "port": port}]}]}


def ingress(name: str, paths: list[tuple[str, str, str]], host: str = HOST) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
            "spec": {"rules": [{"host": host, "http": {"paths": [
                {"path": p, "pathType": t, "backend": {"service": {"name": s, "port": {"number": 80}}}}
                for p, t, s in paths]}}]}}


@pytest.fixture()
def setup(apiserver: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Namespace-less objects go to "default"; names carry a suffix of this test's own."""
    suffix = uuid.uuid4().hex[:6]
    a, b = Backend("alpha"), Backend("beta")
    port = free_ports(1)[0]
    state = tmp_path / "ingress"
    with ApiClient(apiserver.url) as client:
        names = {"a": f"a-{suffix}", "b": f"b-{suffix}", "none": f"none-{suffix}", "ing": f"web-{suffix}"}
        client.create(service(names["a"], target="web"))  # a named targetPort: resolved through Endpoints
        client.create(service(names["b"]))
        client.create(service(names["none"]))
        client.create(endpoints(names["a"], a.port))
        client.create(endpoints(names["b"], b.port))
        running = Running(apiserver.url, Settings(port=port, state_dir=state, bind_address="127.0.0.1"))
        try:
            yield {"client": client, "port": port, "names": names, "running": running, "state": state,
                   "a": a, "b": b}
        finally:
            if running.thread.is_alive():
                running.stop()
            for backend in (a, b):
                backend.close()
            for kind, n in [("services", n) for n in names.values()] + [("endpoints", names["a"]),
                                                                         ("endpoints", names["b"]),
                                                                         ("ingresses", names["ing"])]:
                with contextlib.suppress(NotFound):
                    client.delete(lookup(kind), n, "default")
            shutil.rmtree(state, ignore_errors=True)


def test_routes_hosts_paths_status_and_a_graceful_edit(setup: dict[str, Any]) -> None:
    client, port, names, running = setup["client"], setup["port"], setup["names"], setup["running"]
    a, b, none = names["a"], names["b"], names["none"]
    client.create(ingress(names["ing"], [("/a", "Prefix", a), ("/b", "Prefix", b), ("/exact", "Exact", a),
                                         ("/none", "Prefix", none)]))

    assert wait_until(lambda: get(port, "/a")[0] == 200, timeout=20, what="nginx to route /a")
    assert get(port, "/a") == (200, "alpha /a")
    assert get(port, "/a/deeper?q=1") == (200, "alpha /a/deeper?q=1")  # the URI goes to the backend unchanged
    assert get(port, "/b/") == (200, "beta /b/")
    assert get(port, "/exact") == (200, "alpha /exact")
    assert get(port, "/exact/more")[0] == 404  # Exact is exact
    assert get(port, "/ab")[0] == 404  # Prefix is element-wise: /a does not match /ab
    assert get(port, "/")[0] == 404  # no rule
    assert get(port, "/a", host="other.example.com")[0] == 404  # wrong host
    assert get(port, "/a", host=f"{HOST}:{port}") == (200, "alpha /a")  # a Host with the port matches too
    assert get(port, "/none")[0] == 503  # a Service without endpoints

    # status.loadBalancer: the node address.
    wait_until(lambda: client.get(INGRESSES, names["ing"], "default").get("status", {}).get("loadBalancer")
               == {"ingress": [{"ip": NODE_IP}]}, timeout=10, what="the Ingress status")

    # Edit: /b now goes to a. The same nginx master reloads; requests running meanwhile all succeed.
    pid = running.nginx.pid
    assert pid is not None
    failures: list[str] = []
    answers: list[str] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = get(port, "/b")
                (answers if status == 200 else failures).append(f"{status} {body[:40]}")
            except OSError as exc:
                failures.append(repr(exc))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        wait_until(lambda: len(answers) >= 20, timeout=10, what="load before the edit")
        client.update_with_retry(INGRESSES, names["ing"], "default", lambda o: o["spec"]["rules"][0]["http"][
            "paths"][1]["backend"]["service"].update(name=a))
        wait_until(lambda: answers and answers[-1].startswith("200 alpha"), timeout=20, what="/b to reach alpha")
        n = len(answers)
        wait_until(lambda: len(answers) >= n + 20, timeout=10, what="load after the edit")
    finally:
        stop.set()
        loader.join(10)
    assert failures == [], failures[:10]
    assert running.nginx.pid == pid, "nginx was restarted instead of reloaded"
    assert running.nginx.reloads >= 1

    # A deleted Ingress stops routing.
    client.delete(INGRESSES, names["ing"], "default")
    wait_until(lambda: get(port, "/a")[0] == 404, timeout=20, what="routes of the deleted Ingress to go")

    # Stopping the controller stops its nginx: no process of it is left.
    running.stop()
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="nginx to exit")
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cwd(int(p)) == setup["state"]]
    assert leftovers == [], leftovers


def test_a_config_nginx_rejects_leaves_the_running_one(setup: dict[str, Any]) -> None:
    """nginx -t guards every reload: nginx keeps serving its last good config."""
    client, port, names, running = setup["client"], setup["port"], setup["names"], setup["running"]
    client.create(ingress(names["ing"], [("/a", "Prefix", names["a"])]))
    assert wait_until(lambda: get(port, "/a")[0] == 200, timeout=20, what="nginx to route /a")
    pid = running.nginx.pid
    good = running.nginx.conf.read_text()
    bad = good.replace("events {", "events { no_such_directive on;")
    assert running.loop is not None

    async def apply_bad() -> str:
        try:
            await running.nginx.apply(bad)
        except Exception as exc:
            return str(exc)
        return ""

    error = asyncio.run_coroutine_threadsafe(apply_bad(), running.loop).result(20)
    assert "no_such_directive" in error
    assert running.nginx.conf.read_text() == good and running.nginx.pid == pid
    assert get(port, "/a") == (200, "alpha /a")


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None
