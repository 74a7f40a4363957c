"""Services on the real node: the endpoints controller (in minik8s-controller-manager) and kubeproxy's NAT rules.

Backends are busybox httpd pods answering ``"<pod name> <version>"`` (traffic.py), so every answer says which
pod it came from. Requests use a new TCP connection each and are never retried. Besides the API (Endpoints),
the checks read the cluster's NAT table (``iptables-save -t nat``: chains with the cluster's prefix, DNAT
targets, the ClusterIP / NodePort matches) and the programs under the cluster's supervisord. Traffic goes
only to loopback, pod IPs, the cluster's ClusterIPs and its NodePorts on 127.0.0.1 and the bridge gateway.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
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
wl_ns = tr.wl_ns  # fixture

pytestmark = [pytest.mark.timeout(300)]

WEB = {"app": "web"}


def make_backends(nc: Any, ns: str, names: list[str], labels: dict[str, str]) -> dict[str, str]:
    """Create busybox httpd pods; returns pod name → pod IP once all are Running and ready."""
    for name in names:
        nc.api.create_pod(ns, tr.web_pod(name, labels))
    return {name: nc.wait_running(ns, name)["status"]["podIP"] for name in names}


def wait_service(nc: Any, ns: str, name: str, ips: set[str]) -> str:
    """The Service's ClusterIP once its Endpoints list exactly ``ips`` and kubeproxy DNATs to each of them."""
    cip = tr.cluster_ip(nc, ns, name)
    tr.wait_endpoints(nc, ns, name, ips)
    tr.wait_rules(nc, f"rules for {ns}/{name} ({cip}) → {sorted(ips)}",
                  lambda _rules: tr.programmed(nc, cip, ips) is not None)
    return cip


@pytest.fixture(scope="module")
def backends(node_cluster: Any) -> Iterator[dict[str, Any]]:
    """Three httpd pods behind Services ``web`` (ClusterIP), ``web-np`` (NodePort) and ``web-aff``
    (ClientIP affinity), a busybox client pod, and a pod ``solo`` alone behind Service ``solo``."""
    nc = node_cluster
    tr.require_running(nc, "controller", "proxy")
    ns = tr.create_namespace(nc, "svc")
    try:
        ips = make_backends(nc, ns, ["web-0", "web-1", "web-2"], WEB)
        solo_ip = make_backends(nc, ns, ["solo"], {"app": "solo"})["solo"]
        nc.api.create_pod(ns, tr.client_pod())
        nc.wait_running(ns, "client")
        for svc in (tr.service("web", WEB), tr.service("web-np", WEB, type_="NodePort"),
                    tr.service("web-aff", WEB, sessionAffinity="ClientIP"), tr.service("solo", {"app": "solo"})):
            nc.api.create(f"/api/v1/namespaces/{ns}/services", svc)
        yield {"ns": ns, "ips": ips, "solo_ip": solo_ip,
               "cip": wait_service(nc, ns, "web", set(ips.values())),
               "np_cip": wait_service(nc, ns, "web-np", set(ips.values())),
               "aff_cip": wait_service(nc, ns, "web-aff", set(ips.values())),
               "solo_cip": wait_service(nc, ns, "solo", {solo_ip})}
    finally:
        tr.delete_namespace(nc, ns)


def test_endpoints_and_rules_of_a_service(node_cluster: Any, backends: dict[str, Any]) -> None:
    nc, ns = node_cluster, backends["ns"]
    ep = nc.api.get(f"/api/v1/namespaces/{ns}/endpoints/web")
    [subset] = ep["subsets"]
    assert {a["ip"]: a["targetRef"]["name"] for a in subset["addresses"]} == {
        ip: name for name, ip in backends["ips"].items()}, subset
    assert all(a["targetRef"]["kind"] == "Pod" for a in subset["addresses"])
    assert not subset.get("notReadyAddresses"), subset
    assert [(p.get("name"), p["port"], p.get("protocol", "TCP")) for p in subset["ports"]] == [("http", 8080, "TCP")]
    # The kernel's rules: the ClusterIP on port 80, a DNAT per backend, random balancing with the statistic match.
    rules = tr.nat_rules(nc)
    cip = backends["cip"]
    assert any(f"-d {cip}/32" in r and "--dport 80" in r for r in rules), rules
    assert {f"{ip}:8080" for ip in backends["ips"].values()} <= tr.dnat_targets(rules)
    assert any("-m statistic --mode random --probability" in r for r in rules), rules
    # Only chains with the cluster's prefix, hooked from the built-in chains.
    chains = {r.split()[0][1:] for r in tr.nat_rules(nc) if r.startswith(":")}
    assert chains and all(c.startswith(nc.ident.chain_prefix) for c in chains), chains
    hooks = {r.split()[1] for r in rules if r.startswith("-A ") and not r.split()[1].startswith(nc.ident.chain_prefix)}
    assert {"PREROUTING", "OUTPUT"} <= hooks, hooks


def test_300_requests_from_the_host_reach_every_pod(node_cluster: Any, backends: dict[str, Any]) -> None:
    tally = tr.requests_from_host(backends["cip"], 80, 300)
    print(f"\nClusterIP from the host: {dict(tally.by_pod)}")
    assert tally.failures == [], tally.failures[:10]
    assert set(tally.by_pod) == set(backends["ips"]), tally.by_pod
    assert all(n >= 50 for n in tally.by_pod.values()), tally.by_pod


def test_300_requests_from_inside_a_pod_reach_every_pod(node_cluster: Any, backends: dict[str, Any]) -> None:
    tally = tr.requests_from_pod(node_cluster, backends["ns"], "client", f"http://{backends['cip']}/", 300)
    print(f"\nClusterIP from the client pod: {dict(tally.by_pod)}")
    assert tally.failures == [], tally.failures[:10]
    assert set(tally.by_pod) == set(backends["ips"]), tally.by_pod
    assert all(n >= 50 for n in tally.by_pod.values()), tally.by_pod


def test_nodeport_answers_on_loopback_and_the_bridge_gateway(node_cluster: Any, backends: dict[str, Any]) -> None:
    nc, ns = node_cluster, backends["ns"]
    svc = nc.api.get(f"/api/v1/namespaces/{ns}/services/web-np")
    node_port = svc["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767, svc["spec"]
    assert any(f"--dport {node_port}" in r for r in tr.nat_rules(nc)), "no rule matches the NodePort"
    for host in ("127.0.0.1", nc.ident.gateway):
        tally = tr.requests_from_host(host, node_port, 60)
        print(f"\nNodePort {host}:{node_port}: {dict(tally.by_pod)}")
        assert tally.failures == [], (host, tally.failures[:10])
        assert set(tally.by_pod) == set(backends["ips"]), (host, tally.by_pod)
    # From a pod, to the node's address on the bridge.
    tally = tr.requests_from_pod(nc, ns, "client", f"http://{nc.ident.gateway}:{node_port}/", 30)
    assert tally.failures == [] and set(tally.by_pod) <= set(backends["ips"]), tally


def test_hairpin_a_pod_reaches_itself_through_its_service(node_cluster: Any, backends: dict[str, Any]) -> None:
    # "solo" is the only backend of Service "solo": every connection is DNATed back to the pod that made it.
    tally = tr.requests_from_pod(node_cluster, backends["ns"], "solo", f"http://{backends['solo_cip']}/", 30)
    assert tally.failures == [], tally.failures
    assert dict(tally.by_pod) == {"solo": 30}


def test_session_affinity_client_ip(node_cluster: Any, backends: dict[str, Any]) -> None:
    nc = node_cluster
    assert any("-m recent" in r and "--rcheck" in r for r in tr.nat_rules(nc)), "no recent-match rule for affinity"
    tally = tr.requests_from_host(backends["aff_cip"], 80, 40)
    assert tally.failures == [] and len(tally.by_pod) == 1, tally.by_pod
    inside = tr.requests_from_pod(nc, backends["ns"], "client", f"http://{backends['aff_cip']}/", 30)
    assert inside.failures == [] and len(inside.by_pod) == 1, inside.by_pod
    # Without affinity the same client is spread (the control).
    assert len(tr.requests_from_host(backends["cip"], 80, 40).by_pod) == 3


# ---- readiness -----------------------------------------------------------------------------------------------


def test_a_pod_that_stops_being_ready_leaves_endpoints_and_rules(node_cluster: Any, wl_ns: str) -> None:
    nc, ns = node_cluster, wl_ns
    tr.require_running(nc, "controller", "proxy")
    ips = make_backends(nc, ns, ["web-0", "web-1", "web-2"], WEB)
    nc.api.create(f"/api/v1/namespaces/{ns}/services", tr.service("web", WEB))
    cip = wait_service(nc, ns, "web", set(ips.values()))
    gone = ips["web-1"]

    nc.minictl("exec", "-n", ns, "web-1", "--", "rm", "/tmp/ready")
    nc.wait_pod(ns, "web-1", lambda p: not tr.is_ready(p), timeout=20, what="web-1 not ready")
    tr.wait_endpoints(nc, ns, "web", set(ips.values()) - {gone}, {gone})
    tr.wait_rules(nc, f"no rule DNATs to {gone}", lambda rules: f"{gone}:8080" not in tr.dnat_targets(rules))
    tally = tr.requests_from_host(cip, 80, 150)
    assert tally.failures == [], tally.failures[:10]
    assert "web-1" not in tally.by_pod and set(tally.by_pod) == {"web-0", "web-2"}, tally.by_pod
    # The pod itself still runs and answers on its IP: only the Service stopped sending it requests.
    assert tr.get_once(gone, 8080).startswith("web-1 ")

    nc.minictl("exec", "-n", ns, "web-1", "--", "touch", "/tmp/ready")
    nc.wait_running(ns, "web-1", timeout=20)
    tr.wait_endpoints(nc, ns, "web", set(ips.values()), set())
    tr.wait_rules(nc, f"a rule DNATs to {gone} again", lambda rules: f"{gone}:8080" in tr.dnat_targets(rules))
    tally = tr.requests_from_host(cip, 80, 150)
    assert tally.failures == [], tally.failures[:10]
    assert set(tally.by_pod) == set(ips) and tally.by_pod["web-1"] >= 20, tally.by_pod


# ---- kubeproxy killed ----------------------------------------------------------------------------------------


def test_kill_9_of_kubeproxy_traffic_flows_and_changes_apply_after_restart(node_cluster: Any, wl_ns: str) -> None:
    """kubeproxy is frozen (SIGSTOP) so that it is certainly down while the changes are made, then killed
    with SIGKILL; supervisord starts a new one, which must apply the changes and remove stale rules."""
    nc, ns = node_cluster, wl_ns
    tr.require_running(nc, "controller", "proxy")
    ips = make_backends(nc, ns, ["web-0", "web-1", "web-2"], WEB)
    nc.api.create(f"/api/v1/namespaces/{ns}/services", tr.service("web", WEB))
    nc.api.create(f"/api/v1/namespaces/{ns}/services", tr.service("other", WEB))
    cip = wait_service(nc, ns, "web", set(ips.values()))
    other_cip = wait_service(nc, ns, "other", set(ips.values()))
    gone = ips["web-2"]
    pid = int(tr.program(nc, "proxy")["pid"])

    with tr.Load(cip, 80, rate=25) as load:
        wait_until(lambda: load.tally.total >= 25, timeout=10, interval=0.1, what="load running")
        os.kill(pid, signal.SIGSTOP)
        try:
            # While kubeproxy is down: web-2 stops being ready, Service "other" is deleted.
            nc.minictl("exec", "-n", ns, "web-2", "--", "rm", "/tmp/ready")
            tr.wait_endpoints(nc, ns, "web", set(ips.values()) - {gone}, {gone})
            assert nc.api.delete(f"/api/v1/namespaces/{ns}/services/other") == 200
            wait_until(lambda: nc.api.get_or_none(f"/api/v1/namespaces/{ns}/endpoints/other") is None, timeout=20,
                       interval=0.1, what="the Endpoints of the deleted Service to go")
            # The rules live in the kernel: nothing changed them, and traffic keeps flowing.
            n0 = load.tally.total
            t0 = time.monotonic()
            wait_until(lambda: load.tally.total >= n0 + 50, timeout=10, interval=0.1, what="50 requests while down")
            rules = tr.nat_rules(nc)
            assert f"{gone}:8080" in tr.dnat_targets(rules), "the rules changed while kubeproxy was stopped"
            assert any(f"-d {other_cip}/32" in r for r in rules)
            assert not [f for f in load.tally.failures if f[0] >= t0], load.report()
        finally:
            os.kill(pid, signal.SIGKILL)
        new_pid = tr.wait_restarted(nc, "proxy", pid)
        t_back = time.monotonic()
        rules = tr.wait_rules(
            nc, f"the new kubeproxy ({new_pid}) to drop {gone} and Service other ({other_cip})",
            lambda rules: (f"{gone}:8080" not in tr.dnat_targets(rules)
                           and not any(f"-d {other_cip}/32" in r for r in rules)
                           and tr.programmed(nc, cip, set(ips.values()) - {gone}) is not None))
        print(f"\nkubeproxy: rules right {time.monotonic() - t_back:.2f}s after the restart")
        appended = [r for r in rules if r.startswith("-A ")]
        assert len(appended) == len(set(appended)), "duplicate rules after the restart"
        n1 = load.tally.total
        wait_until(lambda: load.tally.total >= n1 + 75, timeout=15, interval=0.1, what="75 requests after restart")
        t_after = time.monotonic()
        wait_until(lambda: load.tally.total >= n1 + 150, timeout=15, interval=0.1, what="more requests")
    print(f"\nload through the kubeproxy kill: {load.report()}")
    assert load.tally.failures == [], load.report()
    assert load.rate_achieved() >= 20, load.report()
    after = [body for t, body in load.tally.answers if t >= t_after]
    assert after and not [b for b in after if b.startswith("web-2 ")], "web-2 still answers after the restart"
