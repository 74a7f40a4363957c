"""``metrics.k8s.io/v1beta1`` through the real apiserver, built from a fake kubelet of our own.

The fake kubelet is a small HTTP server on 127.0.0.1 serving ``/stats/summary`` (docs/node.md, "Metrics");
a Ready Node points at its port. The real ``kubectl top`` and ``minictl top`` read the result.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from minictl.main import Session, cli
from minik8s.testing import ApiserverProcess, free_port

pytestmark = pytest.mark.timeout(120)
KUBECTL = "/usr/bin/kubectl"
METRICS = "/apis/metrics.k8s.io/v1beta1"
STAMP = "2026-01-02T03:04:05Z"


class FakeKubelet(ThreadingHTTPServer):
    """Answers ``GET /stats/summary`` with ``summary`` (set by the test); counts the requests."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.summary: dict[str, Any] = {"node": {}, "pods": []}
        self.hits = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: FakeKubelet

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != "/stats/summary":
            body, code = b"404 page not found", 404
        else:
            self.server.hits += 1
            body, code = json.dumps(self.server.summary).encode(), 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def http(base: str, method: str, path: str, **kw: Any) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=10) as c:
        return c.request(method, path, **kw)


def container(name: str, millicores: int, mib: int) -> dict[str, Any]:
    return {"name": name, "cpu": {"time": STAMP, "usageNanoCores": millicores * 1_000_000},
            "memory": {"time": STAMP, "workingSetBytes": mib * 1024 * 1024}}


@pytest.fixture(scope="module")
def setup(apiserver: ApiserverProcess) -> Iterator[dict[str, Any]]:
    """A namespace, a Ready node on the fake kubelet, a NotReady one and one whose kubelet is down, pods."""
    kubelet = FakeKubelet()
    thread = threading.Thread(target=kubelet.serve_forever, daemon=True)
    thread.start()
    tag = uuid.uuid4().hex[:6]
    ns, node, not_ready, down = f"metrics-{tag}", f"mnode-{tag}", f"mnotready-{tag}", f"mdown-{tag}"
    base = apiserver.url
    assert http(base, "POST", "/api/v1/namespaces",
                json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}).status_code == 201
    for name, port, ready in ((node, kubelet.port, "True"), (not_ready, kubelet.port, "False"),
                              (down, free_port(), "True")):
        status = {"conditions": [{"type": "Ready", "status": ready}],
                  "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                  "capacity": {"cpu": "4", "memory": "8Gi"}, "allocatable": {"cpu": "2", "memory": "4Gi"}}
        r = http(base, "POST", "/api/v1/nodes", json={"apiVersion": "v1", "kind": "Node",
                                                      "metadata": {"name": name, "labels": {"metrics-test": tag}},
                                                      "status": status})
        assert r.status_code == 201, r.text
    uids = {}
    for name, app, node_name in (("web", "web", node), ("db", "db", node), ("young", "web", node),
                                 ("elsewhere", "web", down)):
        r = http(base, "POST", f"/api/v1/namespaces/{ns}/pods", json={
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "busybox"}]}})
        assert r.status_code == 201, r.text
        uids[name] = r.json()["metadata"]["uid"]

    def entry(name: str, *containers: dict[str, Any]) -> dict[str, Any]:
        return {"podRef": {"name": name, "namespace": ns, "uid": uids[name]}, "window": 1.0, "time": STAMP,
                "containers": list(containers)}

    kubelet.summary = {
        "node": {"nodeName": node, "cpu": {"time": STAMP, "usageNanoCores": 500_000_000},
                 "memory": {"time": STAMP, "workingSetBytes": 1024 ** 3}, "window": 1.0},
        # "young" has no rate yet, so the kubelet leaves it out; a stale entry of a deleted pod has another uid.
        "pods": [entry("web", container("main", 150, 20), container("side", 50, 12)),
                 entry("db", container("main", 5, 100)),
                 {"podRef": {"name": "web", "namespace": ns, "uid": "an-old-uid"}, "window": 1.0, "time": STAMP,
                  "containers": [container("main", 999, 999)]}]}
    try:
        yield {"base": base, "ns": ns, "node": node, "not_ready": not_ready, "down": down, "tag": tag,
               "kubelet": kubelet}
    finally:
        http(base, "DELETE", f"/api/v1/namespaces/{ns}")
        for name in (node, not_ready, down):
            http(base, "DELETE", f"/api/v1/nodes/{name}")
        kubelet.shutdown()
        kubelet.server_close()


def test_discovery_announces_the_metrics_group(setup: dict[str, Any]) -> None:
    base = setup["base"]
    groups = http(base, "GET", "/apis").json()["groups"]
    assert {"name": "metrics.k8s.io", "versions": [{"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}],
            "preferredVersion": {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}} in groups
    assert http(base, "GET", "/apis/metrics.k8s.io").json()["kind"] == "APIGroup"
    resources = http(base, "GET", METRICS).json()
    assert resources["groupVersion"] == "metrics.k8s.io/v1beta1"
    assert sorted((r["name"], r["kind"]) for r in resources["resources"]) == [("nodes", "NodeMetrics"),
                                                                              ("pods", "PodMetrics")]


def test_pod_metrics_from_the_kubelet(setup: dict[str, Any]) -> None:
    base, ns = setup["base"], setup["ns"]
    r = http(base, "GET", f"{METRICS}/namespaces/{ns}/pods")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "PodMetricsList" and body["apiVersion"] == "metrics.k8s.io/v1beta1"
    assert [m["metadata"]["name"] for m in body["items"]] == ["db", "web"]  # young: no rate; elsewhere: kubelet down
    web = body["items"][1]
    assert web["metadata"]["namespace"] == ns and web["metadata"]["labels"] == {"app": "web"}
    assert web["timestamp"] == STAMP and web["window"] == "1s"
    assert web["containers"] == [{"name": "main", "usage": {"cpu": "150000000n", "memory": "20480Ki"}},
                                 {"name": "side", "usage": {"cpu": "50000000n", "memory": "12288Ki"}}]
    r = http(base, "GET", f"{METRICS}/namespaces/{ns}/pods", params={"labelSelector": "app=web"})
    assert [m["metadata"]["name"] for m in r.json()["items"]] == ["web"]
    r = http(base, "GET", f"{METRICS}/pods", params={"labelSelector": "app=db"})
    assert ns in {m["metadata"]["namespace"] for m in r.json()["items"]}
    r = http(base, "GET", f"{METRICS}/namespaces/{ns}/pods/db")
    assert r.status_code == 200 and r.json()["kind"] == "PodMetrics"
    for name in ("young", "elsewhere", "ghost"):
        r = http(base, "GET", f"{METRICS}/namespaces/{ns}/pods/{name}")
        assert r.status_code == 404 and r.json()["message"] == f'podmetrics.metrics.k8s.io "{name}" not found'
    r = http(base, "DELETE", f"{METRICS}/namespaces/{ns}/pods/db")
    assert r.status_code == 405
    r = http(base, "GET", f"{METRICS}/namespaces/{ns}/pods", params={"labelSelector": "app in (("})
    assert r.status_code == 400


def test_node_metrics_only_for_ready_nodes_that_answer(setup: dict[str, Any]) -> None:
    base = setup["base"]
    r = http(base, "GET", f"{METRICS}/nodes", params={"labelSelector": f"metrics-test={setup['tag']}"})
    assert r.status_code == 200, r.text
    assert [m["metadata"]["name"] for m in r.json()["items"]] == [setup["node"]]
    one = http(base, "GET", f"{METRICS}/nodes/{setup['node']}").json()
    assert one["kind"] == "NodeMetrics" and one["usage"] == {"cpu": "500000000n", "memory": "1048576Ki"}
    for name in (setup["not_ready"], setup["down"]):
        assert http(base, "GET", f"{METRICS}/nodes/{name}").status_code == 404


def _kubectl(base: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "m",
        "clusters": [{"name": "m", "cluster": {"server": base}}], "users": [{"name": "m", "user": {}}],
        "contexts": [{"name": "m", "context": {"cluster": "m", "user": "m"}}]}))
    env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    return subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(home / "cache"),
                           "--request-timeout", "20s", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


def test_kubectl_and_minictl_top(setup: dict[str, Any], tmp_path: Path) -> None:
    base, ns, node = setup["base"], setup["ns"], setup["node"]
    expected_pods = [["NAME", "CPU(cores)", "MEMORY(bytes)"], ["db", "5m", "100Mi"], ["web", "200m", "32Mi"]]
    r = _kubectl(base, tmp_path, "top", "pod", "-n", ns)
    assert r.returncode == 0, r.stderr
    assert rows(r.stdout) == expected_pods
    r = _kubectl(base, tmp_path, "top", "pod", "-n", ns, "-l", "app=db", "--containers")
    assert r.returncode == 0, r.stderr
    assert rows(r.stdout) == [["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"], ["db", "main", "5m", "100Mi"]]
    r = _kubectl(base, tmp_path, "top", "node", node)
    assert r.returncode == 0, r.stderr
    assert rows(r.stdout) == [["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
                              [node, "500m", "25%", "1024Mi", "25%"]]

    session = Session(server_flag=base)
    res = CliRunner().invoke(cli, ["top", "pod", "-n", ns], obj=session)
    assert res.exit_code == 0, res.output
    assert rows(res.output) == expected_pods
    res = CliRunner().invoke(cli, ["top", "node", node], obj=Session(server_flag=base))
    assert res.exit_code == 0, res.output
    assert rows(res.output)[1] == [node, "500m", "25%", "1024Mi", "25%"]
