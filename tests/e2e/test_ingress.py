"""Ingress on the real node: minik8s-ingress and its nginx route a host and two paths to two Deployments.

Backends are busybox httpd pods (traffic.py's template, serving the same ``"<pod name> <version>"`` at
``/``, ``/alpha`` and ``/beta``), so every answer names the pod it came from. Requests go to nginx from
the host (``127.0.0.1:INGRESS_PORT`` with a Host header) and from inside a pod (busybox wget to the node's
bridge address ``ident.gateway:INGRESS_PORT``, under ``timeout``); each uses a new TCP connection and is
never retried. An edit of the Ingress during a bounded load loop must fail no request and must not
restart nginx (same master pid) nor the controller.
"""

from __future__ import annotations

import http.client
import importlib.util
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minik8s.testing import wait_until


def _traffic() -> Any:
    name = "minik8s_e2e_traffic"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("traffic.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


tr = _traffic()

pytestmark = [pytest.mark.timeout(300)]

HOST = "shop.example.test"
# httpd serves /www: the pod's answer also as the files "alpha" and "beta" (the Ingress's paths).
SCRIPT = tr.WEB_SCRIPT.replace("> /www/index.html;", "> /www/index.html; cp /www/index.html /www/alpha; "
                                                    "cp /www/index.html /www/beta;")


def backend_deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    dep = tr.deployment(name, replicas)
    dep["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "-c", SCRIPT]
    return dep


def ingress(name: str, alpha_svc: str, beta_svc: str) -> dict[str, Any]:
    def path(p: str, svc: str) -> dict[str, Any]:
        return {"path": p, "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}}

    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
            "spec": {"rules": [{"host": HOST,
                                "http": {"paths": [path("/alpha", alpha_svc), path("/beta", beta_svc)]}}]}}


def get(port: int, path: str, host: str = HOST, timeout: float = 2.0) -> tuple[int, str]:
    """One GET on a new connection to nginx on loopback: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, "Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace").strip()
    finally:
        conn.close()


def app_of(body: str) -> str:
    """``alpha-5d8c-xk2p v1`` → ``alpha``."""
    return body.split("-", 1)[0]


def nginx_pid(nc: Any) -> int:
    return int((nc.layout.home / "ingress" / "nginx.pid").read_text().strip())


@pytest.fixture(scope="module")
def site(node_cluster: Any) -> Iterator[dict[str, Any]]:
    """Deployments alpha and beta (2 pods each) behind Services alpha (targetPort 8080) and beta (targetPort
    "http", named), a client pod, and the Ingress ``shop``: HOST /alpha → alpha, /beta → beta."""
    nc = node_cluster
    tr.require_running(nc, "ingress", "controller")
    ns = tr.create_namespace(nc, "ing")
    try:
        for name in ("alpha", "beta"):
            nc.api.create(f"/apis/apps/v1/namespaces/{ns}/deployments", backend_deployment(name))
        nc.api.create(f"/api/v1/namespaces/{ns}/services", tr.service("alpha", {"app": "alpha"}))
        beta = tr.service("beta", {"app": "beta"})
        beta["spec"]["ports"][0]["targetPort"] = "http"
        nc.api.create(f"/api/v1/namespaces/{ns}/services", beta)
        nc.api.create_pod(ns, tr.client_pod())
        nc.wait_running(ns, "client")
        for name in ("alpha", "beta"):
            pods = tr.wait_live_ready(nc, ns, f"app={name}", 2)
            tr.wait_endpoints(nc, ns, name, {tr.pod_ip(p) for p in pods})
        nc.api.create(f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses", ingress("shop", "alpha", "beta"))
        port = nc.ident.ingress_port
        wait_until(lambda: get(port, "/alpha")[0] == 200 and get(port, "/beta")[0] == 200, timeout=30,
                   interval=0.2, what="nginx to route the Ingress shop")
        yield {"ns": ns, "port": port}
    finally:
        tr.delete_namespace(nc, ns)


def test_host_and_paths_route_to_their_services_from_the_host(node_cluster: Any, site: dict[str, Any]) -> None:
    port = site["port"]
    for path, app in (("/alpha", "alpha"), ("/beta", "beta")):
        answers = [get(port, path) for _ in range(40)]
        assert all(status == 200 for status, _ in answers), answers[:5]
        pods = {body.split()[0] for _, body in answers}
        assert {app_of(p) for p in pods} == {app}, pods
        assert len(pods) == 2, f"{path}: both pods should answer, got {pods}"  # the upstream balances
    assert get(port, "/alpha", host="wrong.example.test")[0] == 404
    assert get(port, "/gamma")[0] == 404
    assert get(port, "/alphabet")[0] == 404  # Prefix is element-wise


def test_a_pod_reaches_the_ingress_at_the_node_address(node_cluster: Any, site: dict[str, Any]) -> None:
    nc, ns, port = node_cluster, site["ns"], site["port"]
    n = 20
    script = (f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); for p in alpha beta; do "
              f"timeout 2 wget -q -O - --header 'Host: {HOST}' http://{nc.ident.gateway}:{port}/$p 2>/dev/null "
              f"|| echo FAIL; done; done; timeout 2 wget -q -O - --header 'Host: nope.test' "
              f"http://{nc.ident.gateway}:{port}/alpha 2>&1 | grep -q '404' && echo WRONGHOST404")
    out = nc.minictl("exec", "-n", ns, "client", "--timeout", "120", "--", "sh", "-c", script, timeout=150).stdout
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    assert "FAIL" not in lines, out[-2000:]
    answers = [line for line in lines if line != "WRONGHOST404"]
    assert len(answers) == 2 * n, out[-2000:]
    assert [app_of(a) for a in answers] == ["alpha", "beta"] * n, answers[:6]
    assert "WRONGHOST404" in lines, out[-2000:]


def test_kubectl_shows_the_ingress_with_the_node_address(node_cluster: Any, site: dict[str, Any]) -> None:
    nc, ns = node_cluster, site["ns"]
    path = f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/shop"
    want = {"ingress": [{"ip": nc.ident.gateway}]}
    wait_until(lambda: nc.api.get(path).get("status", {}).get("loadBalancer") == want,
               timeout=20, interval=0.2, what="status.loadBalancer of the Ingress")
    out = nc.kubectl("get", "ingress", "-n", ns).stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"], out
    assert row.split()[:5] == ["shop", "<none>", HOST, nc.ident.gateway, "80"], out


def test_editing_the_ingress_reloads_nginx_without_failing_a_request(node_cluster: Any,
                                                                     site: dict[str, Any]) -> None:
    nc, ns, port = node_cluster, site["ns"], site["port"]
    master = nginx_pid(nc)
    controller = int(tr.program(nc, "ingress")["pid"])
    tally = tr.Tally()
    stop = threading.Event()

    def load() -> None:  # bounded: at most 60 s and 3000 requests, ~50/s
        started = time.monotonic()
        for i in range(3000):
            if stop.wait(max(0.0, started + i / 50 - time.monotonic())) or time.monotonic() - started > 60:
                return
            t = time.monotonic()
            try:
                status, body = get(port, "/beta")
                tally.add(t, body if status == 200 else None, f"HTTP {status} {body[:60]}")
            except Exception as exc:
                tally.add(t, None, repr(exc))

    loader = threading.Thread(target=load, daemon=True, name="ingress load")
    loader.start()
    try:
        wait_until(lambda: len(tally.answers) >= 50, timeout=20, what="load before the edit")
        assert {app_of(b) for _, b in tally.answers} == {"beta"}
        edited = time.monotonic()
        tr.merge_patch(nc, f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/shop",
                       {"spec": {"rules": [{"host": HOST, "http": {"paths": ingress("shop", "alpha", "alpha")[
                           "spec"]["rules"][0]["http"]["paths"]}}]}})
        wait_until(lambda: any(app_of(b) == "alpha" and t > edited for t, b in tally.answers), timeout=20,
                   what="/beta to be routed to alpha")
        switched = len(tally.answers)
        wait_until(lambda: len(tally.answers) >= switched + 50, timeout=20, what="load after the edit")
    finally:
        stop.set()
        loader.join(10)
    assert not loader.is_alive()
    print(f"\n{tally.total} requests during the edit, {len(tally.failures)} failed")
    assert tally.failures == [], tally.failures[:10]
    after = [b for t, b in tally.answers if t > edited][-20:]
    assert {app_of(b) for b in after} == {"alpha"}, after
    assert nginx_pid(nc) == master, "nginx was restarted, not reloaded"
    assert int(tr.program(nc, "ingress")["pid"]) == controller
    assert Path(f"/proc/{master}").exists()
