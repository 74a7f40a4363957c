"""``minik8s-dns`` as a real process against a real apiserver (and etcd), asked over real UDP and TCP sockets.

Services and Endpoints are written through the API; answers are decoded with dnslib. Also the cluster's
``kube_dns.ensure`` against the same apiserver: it creates, keeps and repairs kube-system/kube-dns.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from minik8s.cluster import kube_dns
from minik8s.cluster.layout import Layout, load_identity
from minik8s.testing import ApiserverProcess, EtcdProcess, free_port, wait_until

pytestmark = [pytest.mark.timeout(120)]

SERVICE_RANGE = "10.99.0.0/24"  # only the API sees it: no traffic goes to these addresses
SCRIPT = Path(sys.executable).parent / "minik8s-dns"
REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Dns:
    api: ApiserverProcess
    http: httpx.Client
    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def ask(self, name: str, qtype: str = "A", *, tcp: bool = False, timeout: float = 2) -> DNSRecord:
        q = DNSRecord.question(name, qtype)
        reply = DNSRecord.parse(q.send("127.0.0.1", self.port, tcp=tcp, timeout=timeout))
        assert reply.header.id == q.header.id
        return reply

    def a(self, name: str) -> tuple[int, list[str]]:
        reply = self.ask(name)
        return reply.header.rcode, sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A)


@pytest.fixture(scope="module")
def dns() -> Iterator[Dns]:
    with EtcdProcess() as etcd, ApiserverProcess(etcd.endpoint, extra_args=[
            "--compaction-interval", "0", "--service-cluster-ip-range", SERVICE_RANGE]) as api:
        port, metrics_port = free_port(), free_port()
        log = Path(tempfile.mkdtemp(prefix="mk8s-dns-")) / "dns.log"
        argv = [str(SCRIPT), "--apiserver", api.url, "--bind-address", "127.0.0.1", "--port", str(port),
                "--ttl", "1", "--metrics-port", str(metrics_port), "--tcp-idle-timeout", "2s", "--log-level", "debug"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO))
        http = httpx.Client(base_url=api.url, timeout=10)
        d = Dns(api, http, port, metrics_port, proc, log)
        try:
            wait_until(lambda: _healthz(metrics_port) == 200, timeout=30, interval=0.05,
                       what="minik8s-dns /healthz to answer 200")
            yield d
        finally:
            http.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _healthz(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code
    except httpx.HTTPError:
        return None


def create(d: Dns, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = d.http.post(path, json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def namespace(d: Dns, name: str) -> None:
    r = d.http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code in (201, 409), r.text


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}}


def test_service_appears_and_disappears(dns: Dns) -> None:
    namespace(dns, "shop")
    name = "web.shop.svc.cluster.local"
    assert dns.a(name)[0] == RCODE.NXDOMAIN
    t0 = time.monotonic()
    cip = create(dns, "/api/v1/namespaces/shop/services", service("web", selector={"app": "web"}))["spec"]["clusterIP"]
    wait_until(lambda: dns.a(name) == (RCODE.NOERROR, [cip]), timeout=10, interval=0.02,
               what=f"{name} → {cip}")
    print(f"\nService visible in DNS {time.monotonic() - t0:.3f}s after its creation", file=sys.stderr)
    tcp = dns.ask(name, tcp=True)
    assert [str(rr.rdata) for rr in tcp.rr] == [cip]
    srv = dns.ask(f"_http._tcp.{name}", "SRV")
    assert [str(rr.rdata) for rr in srv.rr] == [f"0 100 80 {name}."]
    aaaa = dns.ask(name, "AAAA")
    assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr and QTYPE[aaaa.auth[0].rtype] == "SOA"
    assert dns.http.delete("/api/v1/namespaces/shop/services/web").status_code == 200
    wait_until(lambda: dns.a(name)[0] == RCODE.NXDOMAIN, timeout=10, interval=0.02, what=f"{name} NXDOMAIN")
    nx = dns.ask(name)
    assert QTYPE[nx.auth[0].rtype] == "SOA" and nx.auth[0].ttl == 1


def test_headless_service_with_endpoints_written_by_hand(dns: Dns) -> None:
    namespace(dns, "db")
    create(dns, "/api/v1/namespaces/db/services", service("pg", clusterIP="None"))
    name = "pg.db.svc.cluster.local"
    assert dns.a(name)[0] == RCODE.NXDOMAIN  # no ready endpoint yet
    create(dns, "/api/v1/namespaces/db/endpoints", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "pg"},
        "subsets": [{"addresses": [{"ip": "10.200.0.3"}, {"ip": "10.200.0.2", "hostname": "pg-0"}],
                     "notReadyAddresses": [{"ip": "10.200.0.9"}],
                     "ports": [{"name": "http", "port": 5432, "protocol": "TCP"}]}]})
    wait_until(lambda: dns.a(name) == (RCODE.NOERROR, ["10.200.0.2", "10.200.0.3"]), timeout=10, interval=0.02,
               what=f"{name} → the two ready endpoints")
    assert dns.a(f"pg-0.{name}") == (RCODE.NOERROR, ["10.200.0.2"])
    assert dns.a(f"10-200-0-3.{name}") == (RCODE.NOERROR, ["10.200.0.3"])
    srv = dns.ask(f"_http._tcp.{name}", "SRV")
    assert sorted(str(rr.rdata) for rr in srv.rr) == [f"0 50 5432 10-200-0-3.{name}.", f"0 50 5432 pg-0.{name}."]


def test_outside_names_are_refused_at_once(dns: Dns) -> None:
    for tcp in (False, True):
        t0 = time.monotonic()
        reply = dns.ask("example.com", tcp=tcp)
        took = time.monotonic() - t0
        assert reply.header.rcode == RCODE.REFUSED and not reply.rr, reply
        assert took < 0.5, f"REFUSED took {took:.3f}s"
    reverse = dns.ask("1.0.0.127.in-addr.arpa", "PTR")
    assert reverse.header.rcode == RCODE.REFUSED


def test_metrics_count_answers(dns: Dns) -> None:
    dns.ask("example.com")
    text = httpx.get(f"http://127.0.0.1:{dns.metrics_port}/metrics", timeout=5).text
    assert 'dns_requests_total{proto="udp",rcode="REFUSED",type="A"}' in text


def test_kube_dns_objects_are_ensured_idempotently(dns: Dns, tmp_path: Path) -> None:
    ident = dataclasses.replace(load_identity(Layout(tmp_path / "mk8s-x"), environ={}),
                                api_port=dns.api.port, service_cidr=SERVICE_RANGE)
    lines: list[str] = []
    kube_dns.ensure(ident, lines.append)
    assert any("Service kube-system/kube-dns created" in line for line in lines), lines
    svc = dns.http.get("/api/v1/namespaces/kube-system/services/kube-dns").json()
    assert svc["spec"]["clusterIP"] == ident.dns_ip == "10.99.0.10" and "selector" not in svc["spec"]
    lines.clear()
    kube_dns.ensure(ident, lines.append)
    assert lines == []  # nothing to change
    # Endpoints changed by someone else are put back; the DNS answers the kube-dns name itself.
    ep = dns.http.get("/api/v1/namespaces/kube-system/endpoints/kube-dns").json()
    ep["subsets"] = [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"name": "dns", "port": 1, "protocol": "UDP"}]}]
    assert dns.http.put("/api/v1/namespaces/kube-system/endpoints/kube-dns", json=ep).status_code == 200
    kube_dns.ensure(ident, lines.append)
    assert lines == ["Endpoints kube-system/kube-dns updated"]
    got = dns.http.get("/api/v1/namespaces/kube-system/endpoints/kube-dns").json()
    assert kube_dns.endpoints_match(got, kube_dns.endpoints(ident))
    wait_until(lambda: dns.a("kube-dns.kube-system.svc.cluster.local") == (RCODE.NOERROR, [ident.dns_ip]),
               timeout=10, interval=0.02, what="kube-dns in DNS")
    # The Endpoints controller is not running here; the Service has no selector, so it would not touch them.


def test_sigterm_stops_it(dns: Dns) -> None:
    dns.proc.send_signal(signal.SIGTERM)
    assert dns.proc.wait(10) == 0, dns.log.read_text()[-2000:]
