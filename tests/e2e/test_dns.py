"""Cluster DNS on the real node: minik8s-dns under supervisord, kube-dns's ClusterIP DNATed by kubeproxy, the
kubelet's resolv.conf for pods, and real lookups from inside a busybox pod (``minictl exec``).

Names are looked up with busybox ``nslookup NAME DNS_IP`` (it prints the server's error: ``NXDOMAIN``,
``REFUSED``) and through the search path by busybox ``wget`` (the resolver of the pod's libc). Every wait
polls with a deadline. No query leaves the machine: the server never forwards, and names outside the
cluster domain are REFUSED.
"""

from __future__ import annotations

import importlib.util
import re
import sys
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


def sh(nc: Any, ns: str, pod: str, script: str, timeout: int = 30) -> tuple[int, str]:
    """Run ``script`` in the pod's first container; (exit code, stdout + stderr)."""
    res = nc.minictl("exec", "-n", ns, pod, "--timeout", str(timeout), "--", "sh", "-c", f"{script} 2>&1",
                     check=False, timeout=timeout + 30)
    return res.returncode, res.stdout + res.stderr


def timed(command: str) -> str:
    """``command``, then ``elapsed_ms=N`` measured inside the pod (busybox date has no %N: /proc/uptime, 10 ms)."""
    return (f"s=$(cut -d' ' -f1 /proc/uptime); {command}; e=$(cut -d' ' -f1 /proc/uptime); "
            "echo elapsed_ms=$(awk -v s=$s -v e=$e 'BEGIN {printf \"%d\", (e - s) * 1000}')")


def _when(out: str, needle: str) -> str | None:
    return out if needle in out else None


def nslookup(nc: Any, ns: str, pod: str, name: str) -> str:
    return sh(nc, ns, pod, f"timeout 5 nslookup {name} {nc.ident.dns_ip}")[1]


def test_dns_program_and_kube_dns_service(node_cluster: Any) -> None:
    nc = node_cluster
    tr.require_running(nc, "dns", "proxy", "controller")
    svc = nc.api.get("/api/v1/namespaces/kube-system/services/kube-dns")
    assert svc["spec"]["clusterIP"] == nc.ident.dns_ip and not svc["spec"].get("selector"), svc["spec"]
    assert sorted((p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]) == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    ep = nc.api.get("/api/v1/namespaces/kube-system/endpoints/kube-dns")
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == [nc.ident.gateway]
    # kubeproxy DNATs the ClusterIP, UDP and TCP, to the node's bridge address on the DNS port.
    target = f"{nc.ident.gateway}:{nc.ident.dns_port}"

    def programmed(rules: list[str]) -> bool:
        matches = {proto for proto in ("udp", "tcp") for r in rules
                   if f"-d {nc.ident.dns_ip}/32" in r and f"-p {proto}" in r and "--dport 53" in r}
        dnats = [r for r in rules if f"--to-destination {target}" in r]
        return matches == {"udp", "tcp"} and {p for p in ("udp", "tcp") for r in dnats if f"-p {p}" in r} == {
            "udp", "tcp"}

    tr.wait_rules(nc, f"kube-dns {nc.ident.dns_ip}:53 udp+tcp DNATed to {target}", programmed)
    # The kubelet got the flags from the cluster.
    conf = nc.layout.supervisord_conf.read_text()
    assert f"--cluster-dns {nc.ident.dns_ip}" in conf and "--cluster-domain cluster.local" in conf


def test_pod_resolves_services_by_name(node_cluster: Any, wl_ns: str) -> None:
    nc, ns = node_cluster, wl_ns
    dns_ip = nc.ident.dns_ip
    nc.api.create_pod(ns, tr.client_pod())
    nc.wait_running(ns, "client")

    # resolv.conf written by containerd from the kubelet's DNSConfig (dnsPolicy ClusterFirst, the default).
    rc, resolv = sh(nc, ns, "client", "cat /etc/resolv.conf")
    assert rc == 0, resolv
    assert re.search(rf"^nameserver {re.escape(dns_ip)}$", resolv, re.M), resolv
    assert re.search(rf"^search {ns}\.svc\.cluster\.local svc\.cluster\.local cluster\.local$", resolv, re.M), resolv
    assert re.search(r"^options ndots:5$", resolv, re.M), resolv
    assert len(re.findall(r"^nameserver ", resolv, re.M)) == 1, resolv

    # The Service is created after the pod: DNS follows it within the informer delay.
    nc.api.create_pod(ns, tr.web_pod("web-0", {"app": "web"}))
    web_ip = nc.wait_running(ns, "web-0")["status"]["podIP"]
    nc.api.create(f"/api/v1/namespaces/{ns}/services", tr.service("web", {"app": "web"}))
    cip = tr.cluster_ip(nc, ns, "web")
    tr.wait_endpoints(nc, ns, "web", {web_ip})
    tr.wait_rules(nc, f"rules for {ns}/web", lambda _r: tr.programmed(nc, cip, {web_ip}) is not None)
    fqdn = f"web.{ns}.svc.cluster.local"
    out = wait_until(lambda: _when(nslookup(nc, ns, "client", fqdn), f"Address: {cip}"), timeout=30, interval=0.2,
                     what=f"nslookup {fqdn} {dns_ip} → {cip}")
    assert f"Name:\t{fqdn}" in out or fqdn in out, out

    # Through the search path (ndots:5: "web" is tried as web.NS.svc.cluster.local first), and the full name.
    for url in ("http://web/", f"http://{fqdn}/", f"http://web.{ns}/"):
        body = wait_until(lambda url=url: _get(nc, ns, url), timeout=30, interval=0.2, what=f"wget {url}")
        assert body == "web-0 v1", (url, body)

    # An outside name: REFUSED, at once (never forwarded; these machines have no internet).
    rc, out = sh(nc, ns, "client", timed(f"nslookup example.com {dns_ip}"))
    assert "REFUSED" in out, out
    elapsed = int(re.search(r"elapsed_ms=(\d+)", out).group(1))  # type: ignore[union-attr]
    print(f"\nREFUSED for example.com in {elapsed} ms (inside the pod)", file=sys.stderr)
    assert elapsed < 1000, out
    # Through resolv.conf and its search list (NXDOMAIN for each search name, then REFUSED): no timeouts either.
    rc, out = sh(nc, ns, "client", timed("nslookup example.com"))
    assert "can't find example.com" in out and f"Server:\t\t{dns_ip}" in out, out
    assert int(re.search(r"elapsed_ms=(\d+)", out).group(1)) < 1000, out  # type: ignore[union-attr]
    # And the libc resolver (busybox ping's getaddrinfo; busybox-static's wget crashes on any failed lookup).
    rc, out = sh(nc, ns, "client", timed("ping -c 1 -W 1 example.com"))
    assert "bad address 'example.com'" in out, out
    assert int(re.search(r"elapsed_ms=(\d+)", out).group(1)) < 1000, out  # type: ignore[union-attr]

    # A deleted Service: NXDOMAIN within the informer delay.
    assert nc.api.delete(f"/api/v1/namespaces/{ns}/services/web") == 200
    out = wait_until(lambda: _when(nslookup(nc, ns, "client", fqdn), "NXDOMAIN"), timeout=30, interval=0.2,
                     what=f"nslookup {fqdn} → NXDOMAIN after the Service's deletion")
    assert cip not in out, out


def test_dns_policy_default_and_none(node_cluster: Any, wl_ns: str) -> None:
    nc, ns = node_cluster, wl_ns
    none = tr.client_pod("custom")
    none["spec"].update(dnsPolicy="None", dnsConfig={"nameservers": ["10.0.0.53"], "searches": ["example.test"],
                                                     "options": [{"name": "ndots", "value": "2"}]})
    default = tr.client_pod("nodedns")
    default["spec"]["dnsPolicy"] = "Default"
    nc.api.create_pod(ns, none)
    nc.api.create_pod(ns, default)
    nc.wait_running(ns, "custom")
    nc.wait_running(ns, "nodedns")
    resolv = sh(nc, ns, "custom", "cat /etc/resolv.conf")[1]
    assert re.search(r"^nameserver 10\.0\.0\.53$", resolv, re.M) and "search example.test" in resolv, resolv
    assert "ndots:2" in resolv and nc.ident.dns_ip not in resolv, resolv
    resolv = sh(nc, ns, "nodedns", "cat /etc/resolv.conf")[1]
    assert nc.ident.dns_ip not in resolv and "svc.cluster.local" not in resolv, resolv


def _get(nc: Any, ns: str, url: str) -> str | None:
    rc, out = sh(nc, ns, "client", f"timeout 5 wget -q -O - {url}")
    return out.strip() if rc == 0 else None
