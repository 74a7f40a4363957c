"""kubeproxy against real iptables, a real apiserver and network namespaces of the test's own.

A Lab (kubeproxy/lab.py: own bridge + 3 netns running http.server) stands in for pods; Service and
Endpoints objects are written through the API; a real ``minik8s-kubeproxy`` process with a random
chain prefix programs the kernel. Only loopback, the lab's addresses and the lab ClusterIPs are used.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubeproxy import iptables
from kubeproxy.lab import BACKEND_PORT, Lab, free_subnet, host_get, sh
from kubeproxy.rules import ProxyConfig
from minik8s.api import registry
from minik8s.client.rest import ApiClient
from minik8s.testing import ApiserverProcess, EtcdProcess, free_port

# Real iptables and netns, never skipped: `make test` installs them and runs as root.
pytestmark = [pytest.mark.timeout(300)]

SCRIPT = Path(sys.executable).parent / "minik8s-kubeproxy"
EPS = registry.lookup("endpoints")


class KubeProxy:
    def __init__(self, server: str, cfg: ProxyConfig, lab: Lab, log: Path) -> None:
        self.argv = [str(SCRIPT) if SCRIPT.exists() else sys.executable, *([] if SCRIPT.exists() else
                     ["-m", "kubeproxy.main"]), "--apiserver", server, "--chain-prefix", cfg.chain_prefix,
                     "--cluster-cidr", str(lab.net), "--bridge", lab.bridge, "--node-ip", lab.gateway,
                     "--metrics-port", str(free_port()), "--log-level", "debug"]
        self.metrics_port = int(self.argv[self.argv.index("--metrics-port") + 1])
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT,
                                         cwd=str(Path(__file__).resolve().parents[2]))

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


def nat() -> str:
    return sh("iptables-save", "-t", "nat").stdout


def wait_for(pred: Any, timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tag = f"{random.getrandbits(24):06x}"
    svc_range = free_subnet()
    logdir = tmp_path_factory.mktemp("kubeproxy")
    with EtcdProcess() as etcd, ApiserverProcess(etcd.endpoint, extra_args=[
            "--compaction-interval", "0", "--service-cluster-ip-range", str(svc_range)]) as api, Lab(3) as lab:
        cfg = ProxyConfig(f"KPT{tag}", cluster_cidr=str(lab.net), node_ip=lab.gateway)
        kp = KubeProxy(api.url, cfg, lab, logdir / "kubeproxy.log")
        client = ApiClient(api.url)
        try:
            # a stale chain (and a jump to it) of our prefix from "a previous run"
            sh("iptables", "-w", "5", "-t", "nat", "-N", f"{cfg.chain_prefix}-SVC-STALE")
            sh("iptables", "-w", "5", "-t", "nat", "-A", "OUTPUT", "-d", "127.0.0.254/32", "-m", "comment",
               "--comment", f"{cfg.chain_prefix} old rule", "-j", f"{cfg.chain_prefix}-SVC-STALE")
            ns = f"kp-{tag}"
            client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            kp.start()
            yield {"cfg": cfg, "lab": lab, "kp": kp, "client": client, "ns": ns, "log": kp.log}
        finally:
            kp.kill9()
            client.close()
            iptables.cleanup_blocking(cfg)
            assert not iptables.our_chains(cfg), "chains of the test prefix stay"
            assert cfg.chain_prefix not in sh("iptables-save").stdout


def make_service(w: dict[str, Any], name: str, ips: list[str], **spec: Any) -> dict[str, Any]:
    client: ApiClient = w["client"]
    svc = client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": w["ns"]},
                         "spec": {"ports": [{"name": "http", "port": 80, "targetPort": BACKEND_PORT}], **spec}},
                        namespace=w["ns"])
    client.create(endpoints(w, name, ips), namespace=w["ns"])
    return svc


def endpoints(w: dict[str, Any], name: str, ips: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": w["ns"]},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}]}] if ips else []}


def set_endpoints(w: dict[str, Any], name: str, ips: list[str]) -> None:
    client: ApiClient = w["client"]
    cur = client.get(EPS, name, w["ns"])
    new = endpoints(w, name, ips)
    new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
    client.replace(new)


def dnat_targets(cfg: ProxyConfig) -> set[str]:
    return {line.rsplit(" ", 1)[1] for line in nat().splitlines()
            if line.startswith(f"-A {cfg.chain_prefix}-SEP-") and "--to-destination" in line}


def test_cluster_ip_nodeport_hairpin_and_endpoint_removal(world: dict[str, Any]) -> None:
    cfg: ProxyConfig = world["cfg"]
    lab: Lab = world["lab"]
    svc = make_service(world, "web", lab.ips, type="NodePort")
    cip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    want = {f"{ip}:{BACKEND_PORT}" for ip in lab.ips}
    wait_for(lambda: dnat_targets(cfg) == want, what="DNAT rules for 3 endpoints")
    saved = nat()
    assert f":{cfg.chain_prefix}-SERVICES" in saved and "-SVC-STALE" not in saved, "stale chain removed"
    assert "127.0.0.254" not in saved, "stale jump rule removed"
    assert saved.count(f'--comment "{cfg.chain_prefix} service portals"') == 2  # PREROUTING + OUTPUT

    host = host_get(cip, 80, 150)
    assert set(host) == set(lab.names) and min(host.values()) >= 20, host
    inside = lab.exec_get(lab.names[0], cip, 80, 150)
    assert set(inside) == set(lab.names) and min(inside.values()) >= 20, inside
    # NodePort on loopback and on the node's bridge address (from the host and from a netns)
    assert set(host_get("127.0.0.1", node_port, 30)) <= set(lab.names)
    assert sum(v for k, v in host_get(lab.gateway, node_port, 30).items() if k in lab.names) == 30
    assert sum(v for k, v in lab.exec_get(lab.names[1], lab.gateway, node_port, 30).items()
               if k in lab.names) == 30

    # remove an endpoint: its rule goes and no request reaches it
    gone = lab.names[2]
    set_endpoints(world, "web", lab.ips[:2])
    wait_for(lambda: dnat_targets(cfg) == want - {f"{lab.ips[2]}:{BACKEND_PORT}"}, what="endpoint removed")
    after = host_get(cip, 80, 60)
    assert gone not in after and sum(after.values()) == 60 and set(after) == set(lab.names[:2]), after

    # metrics: programming latency observed
    text = world["kp"].metrics()
    assert "kubeproxy_network_programming_duration_seconds_count" in text
    assert 'kubeproxy_sync_proxy_rules_total{result="success"}' in text


def test_hairpin_single_backend(world: dict[str, Any]) -> None:
    cfg: ProxyConfig = world["cfg"]
    lab: Lab = world["lab"]
    svc = make_service(world, "solo", [lab.ips[0]])
    cip = svc["spec"]["clusterIP"]
    wait_for(lambda: f"-d {cip}/32" in nat(), what="solo service rules")
    got = lab.exec_get(lab.names[0], cip, 80, 20)
    assert got == {lab.names[0]: 20}, got
    assert f"-A {cfg.chain_prefix}-SEP-" in nat() and f"-s {lab.ips[0]}/32" in nat()  # the hairpin mark rule


def test_no_endpoints_rejects(world: dict[str, Any]) -> None:
    svc = make_service(world, "empty", [])
    cip = svc["spec"]["clusterIP"]
    wait_for(lambda: f"-d {cip}/32" in sh("iptables-save", "-t", "filter").stdout, what="REJECT rule")
    t0 = time.monotonic()
    got = host_get(cip, 80, 3, timeout=5)
    assert got == {"error:ConnectionRefusedError": 3} and time.monotonic() - t0 < 3, got


def test_kill9_keeps_traffic_and_catches_up_after_restart(world: dict[str, Any]) -> None:
    cfg: ProxyConfig = world["cfg"]
    lab: Lab = world["lab"]
    kp: KubeProxy = world["kp"]
    svc = make_service(world, "k9", lab.ips)
    cip = svc["spec"]["clusterIP"]
    wait_for(lambda: nat().count(f"-d {cip}/32") >= 2, what="k9 rules")
    kp.kill9()
    during = host_get(cip, 80, 60)
    assert sum(v for k, v in during.items() if k in lab.names) == 60, during  # rules live in the kernel
    set_endpoints(world, "k9", [lab.ips[1]])  # while kubeproxy is down
    # a stale chain appears meanwhile too
    sh("iptables", "-w", "5", "-t", "nat", "-N", f"{cfg.chain_prefix}-SEP-LEFTOVER")
    kp.start()
    wait_for(lambda: f"{cfg.chain_prefix}-SEP-LEFTOVER" not in nat(), what="stale chain removed after restart")
    k9_targets = lambda: {line.rsplit(" ", 1)[1] for line in nat().splitlines()  # noqa: E731
                          if '"' + world["ns"] + "/k9:http" in line and "--to-destination" in line}
    wait_for(lambda: k9_targets() == {f"{lab.ips[1]}:{BACKEND_PORT}"}, what="k9 down to one endpoint")
    assert host_get(cip, 80, 30) == {lab.names[1]: 30}
