"""Cluster DNS: the record logic (clusterdns/records.py) and the wire answers (clusterdns/server.py, dnslib).

Caches are plain dicts; questions and answers go through dnslib's encoder and decoder as a client's would.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord
from test_kubelet_support import FakeApiClient, make_pod

from clusterdns.records import Rcode, Soa, Srv, Zone
from clusterdns.server import DnsConfig, DnsServer, respond
from kubelet.dns import PodDns, parse_resolv_conf, pod_dns
from kubelet.fake_runtime import FakeRuntime
from kubelet.pod_worker import PodSyncer, SyncSettings
from kubelet.status import EventRecorder, StatusManager
from kubelet.volumes import VolumeManager
from minik8s.cluster import configs, kube_dns
from minik8s.cluster.layout import Layout, load_identity

pytestmark = pytest.mark.timeout(30)


class Store:
    def __init__(self, objs: list[dict[str, Any]]) -> None:
        self.items = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in objs}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.items.get(key)

    def list(self) -> list[dict[str, Any]]:
        return list(self.items.values())


def svc(name: str, ns: str = "default", cluster_ip: str | None = "10.96.0.20", **spec: Any) -> dict[str, Any]:
    ports = spec.pop("ports", [{"name": "http", "port": 80, "protocol": "TCP"}])
    body: dict[str, Any] = {"ports": ports, **spec}
    if cluster_ip is not None:
        body["clusterIP"] = cluster_ip
    return {"metadata": {"name": name, "namespace": ns}, "spec": body}


def eps(name: str, ns: str = "default", ready: tuple[str, ...] = (), not_ready: tuple[str, ...] = (),
        hostnames: dict[str, str] | None = None, port: int = 8080) -> dict[str, Any]:
    hostnames = hostnames or {}

    def addr(ip: str) -> dict[str, Any]:
        return {"ip": ip, **({"hostname": hostnames[ip]} if ip in hostnames else {})}

    return {"metadata": {"name": name, "namespace": ns},
            "subsets": [{"addresses": [addr(ip) for ip in ready], "notReadyAddresses": [addr(ip) for ip in not_ready],
                         "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}]}


def zone(services: list[dict[str, Any]], endpoints: list[dict[str, Any]] | None = None, **kw: Any) -> Zone:
    return Zone(Store(services), Store(endpoints or []), **kw)


# ---- the record logic -----------------------------------------------------------------------------------------


def test_cluster_ip_service_resolves_case_insensitively() -> None:
    z = zone([svc("web", "shop")])
    a = z.lookup("Web.SHOP.svc.cluster.local.", "A")
    assert a.rcode == Rcode.NOERROR
    assert [(r.name, r.rtype, r.data) for r in a.answers] == [("web.shop.svc.cluster.local", "A", "10.96.0.20")]
    assert a.soa is None and a.authoritative


def test_names_outside_the_domain_are_refused() -> None:
    z = zone([svc("web")])
    for name in ("example.com", "cluster.local.example.com", "local", "10.in-addr.arpa", "xcluster.local"):
        a = z.lookup(name, "A")
        assert a.rcode == Rcode.REFUSED and not a.authoritative and not a.answers, name


def test_unknown_names_inside_the_domain_are_nxdomain_with_soa() -> None:
    z = zone([svc("web")])
    for name in ("nope.default.svc.cluster.local", "web.other.svc.cluster.local", "x.cluster.local",
                 "web.default.svc.cluster.local.default.svc.cluster.local", "a.b.c.d.e.svc.cluster.local",
                 "other.svc.cluster.local"):
        a = z.lookup(name, "A")
        assert a.rcode == Rcode.NXDOMAIN, name
        assert isinstance(a.soa, Soa) and a.soa.mname == "ns.dns.cluster.local"


def test_existing_name_of_another_type_is_noerror_without_answers() -> None:
    z = zone([svc("web")])
    for name, qtype in (("web.default.svc.cluster.local", "AAAA"), ("default.svc.cluster.local", "A"),
                        ("svc.cluster.local", "A"), ("cluster.local", "A")):
        a = z.lookup(name, qtype)
        assert a.rcode == Rcode.NOERROR and not a.answers and a.soa is not None, (name, qtype)


def test_apex_has_soa_and_ns() -> None:
    z = zone([], domain="Corp.Example.")
    assert z.domain == "corp.example"
    soa = z.lookup("corp.example", "SOA").answers
    assert soa[0].rtype == "SOA" and isinstance(soa[0].data, Soa)
    assert [r.data for r in z.lookup("corp.example", "NS").answers] == ["ns.dns.corp.example"]
    assert z.lookup("web.default.svc.cluster.local", "A").rcode == Rcode.REFUSED


def test_headless_service_answers_ready_endpoints_only() -> None:
    z = zone([svc("db", cluster_ip="None")], [eps("db", ready=("10.88.1.9", "10.88.1.3"), not_ready=("10.88.1.5",))])
    a = z.lookup("db.default.svc.cluster.local", "A")
    assert [r.data for r in a.answers] == ["10.88.1.3", "10.88.1.9"]
    published = zone([svc("db", cluster_ip="None", publishNotReadyAddresses=True)],
                     [eps("db", ready=("10.88.1.9",), not_ready=("10.88.1.5",))])
    assert [r.data for r in published.lookup("db.default.svc.cluster.local", "A").answers] == [
        "10.88.1.5", "10.88.1.9"]


def test_headless_service_without_ready_endpoints_is_nxdomain() -> None:
    z = zone([svc("db", cluster_ip="None")], [eps("db", not_ready=("10.88.1.5",))])
    assert z.lookup("db.default.svc.cluster.local", "A").rcode == Rcode.NXDOMAIN


def test_headless_endpoint_names() -> None:
    z = zone([svc("db", cluster_ip="None")], [eps("db", ready=("10.88.1.3", "10.88.1.4"),
                                                   hostnames={"10.88.1.4": "db-0"})])
    assert [r.data for r in z.lookup("10-88-1-3.db.default.svc.cluster.local", "A").answers] == ["10.88.1.3"]
    assert [r.data for r in z.lookup("db-0.db.default.svc.cluster.local", "A").answers] == ["10.88.1.4"]
    assert z.lookup("db-1.db.default.svc.cluster.local", "A").rcode == Rcode.NXDOMAIN
    # A ClusterIP Service has no per-endpoint names.
    z2 = zone([svc("web")], [eps("web", ready=("10.88.1.3",))])
    assert z2.lookup("10-88-1-3.web.default.svc.cluster.local", "A").rcode == Rcode.NXDOMAIN


def test_srv_records() -> None:
    z = zone([svc("web", ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                                {"name": "dns", "port": 53, "protocol": "UDP"}])])
    a = z.lookup("_http._tcp.web.default.svc.cluster.local", "SRV")
    assert [r.data for r in a.answers] == [Srv(0, 100, 80, "web.default.svc.cluster.local")]
    assert [(r.name, r.data) for r in a.additional] == [("web.default.svc.cluster.local", "10.96.0.20")]
    assert z.lookup("_dns._udp.web.default.svc.cluster.local", "SRV").answers[0].data.port == 53  # type: ignore[union-attr]
    assert z.lookup("_dns._tcp.web.default.svc.cluster.local", "SRV").rcode == Rcode.NXDOMAIN
    assert z.lookup("_http._tcp.web.default.svc.cluster.local", "A").rcode == Rcode.NOERROR
    # SRV of the Service's own name: one per named port.
    assert len(z.lookup("web.default.svc.cluster.local", "SRV").answers) == 2
    headless = zone([svc("db", cluster_ip="None")], [eps("db", ready=("10.88.1.3", "10.88.1.4"), port=5432)])
    srv = headless.lookup("_http._tcp.db.default.svc.cluster.local", "SRV")
    assert sorted((r.data.target, r.data.port) for r in srv.answers) == [  # type: ignore[union-attr]
        ("10-88-1-3.db.default.svc.cluster.local", 5432), ("10-88-1-4.db.default.svc.cluster.local", 5432)]
    assert {r.data for r in srv.additional} == {"10.88.1.3", "10.88.1.4"}


def test_external_name_is_a_cname() -> None:
    z = zone([svc("ext", cluster_ip=None, type="ExternalName", externalName="db.example.com.")])
    a = z.lookup("ext.default.svc.cluster.local", "A")
    assert [(r.rtype, r.data) for r in a.answers] == [("CNAME", "db.example.com")]


def test_zone_reads_the_caches_at_each_question() -> None:
    services = Store([])
    z = Zone(services, Store([]))
    assert z.lookup("web.default.svc.cluster.local", "A").rcode == Rcode.NXDOMAIN
    services.items["default/web"] = svc("web")
    assert z.lookup("web.default.svc.cluster.local", "A").rcode == Rcode.NOERROR
    del services.items["default/web"]
    assert z.lookup("web.default.svc.cluster.local", "A").rcode == Rcode.NXDOMAIN


# ---- the wire -------------------------------------------------------------------------------------------------


def ask(z: Zone, name: str, qtype: str = "A", **kw: Any) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    out = respond(q.pack(), z, **kw)
    assert out is not None
    reply = DNSRecord.parse(out)
    assert reply.header.id == q.header.id and reply.header.qr == 1
    return reply


def test_wire_a_answer() -> None:
    reply = ask(zone([svc("web", "shop")], ttl=7), "WEB.shop.svc.cluster.local")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1 and reply.header.ra == 0
    assert [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata), rr.ttl) for rr in reply.rr] == [
        ("WEB.shop.svc.cluster.local.", "A", "10.96.0.20", 7)]
    assert str(reply.q.qname) == "WEB.shop.svc.cluster.local."


def test_wire_nxdomain_carries_the_soa() -> None:
    reply = ask(zone([], ttl=5), "gone.default.svc.cluster.local")
    assert reply.header.rcode == RCODE.NXDOMAIN and not reply.rr
    assert len(reply.auth) == 1 and QTYPE[reply.auth[0].rtype] == "SOA"
    assert str(reply.auth[0].rname) == "cluster.local." and reply.auth[0].ttl == 5


def test_wire_refused_outside_the_domain() -> None:
    reply = ask(zone([svc("web")]), "example.com")
    assert reply.header.rcode == RCODE.REFUSED and reply.header.aa == 0 and not reply.rr and not reply.auth


def test_wire_not_synced_is_servfail_inside_and_refused_outside() -> None:
    z = zone([svc("web")])
    assert ask(z, "web.default.svc.cluster.local", ready=False).header.rcode == RCODE.SERVFAIL
    assert ask(z, "example.com", ready=False).header.rcode == RCODE.REFUSED


def test_wire_aaaa_of_a_known_name_is_nodata() -> None:
    reply = ask(zone([svc("web")]), "web.default.svc.cluster.local", "AAAA")
    assert reply.header.rcode == RCODE.NOERROR and not reply.rr and QTYPE[reply.auth[0].rtype] == "SOA"


def test_wire_srv_with_additional_a() -> None:
    reply = ask(zone([svc("web")]), "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert [str(rr.rdata) for rr in reply.rr] == ["0 100 80 web.default.svc.cluster.local."]
    assert [(str(rr.rname), str(rr.rdata)) for rr in reply.ar] == [("web.default.svc.cluster.local.", "10.96.0.20")]


def test_wire_truncates_big_udp_answers() -> None:
    ips = tuple(f"10.88.1.{i}" for i in range(2, 60))
    z = zone([svc("db", cluster_ip="None")], [eps("db", ready=ips)])
    reply = ask(z, "db.default.svc.cluster.local")
    assert reply.header.tc == 1 and not reply.rr
    full = ask(z, "db.default.svc.cluster.local", udp=False)
    assert full.header.tc == 0 and len(full.rr) == len(ips)
    q = DNSRecord.question("db.default.svc.cluster.local")
    q.add_ar(EDNS0(udp_len=4096))
    out = respond(q.pack(), z)
    assert out is not None
    edns = DNSRecord.parse(out)
    assert edns.header.tc == 0 and len(edns.rr) == len(ips) and any(rr.rtype == QTYPE.OPT for rr in edns.ar)


def test_wire_bad_messages() -> None:
    z = zone([])
    assert respond(b"\x00\x01", z) is None  # no header: nothing to answer
    garbage = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\xff\xff"
    out = respond(garbage, z)
    assert out is not None
    reply = DNSRecord.parse(out)
    assert reply.header.id == 0x1234 and reply.header.rcode == RCODE.FORMERR
    answer = DNSRecord.question("web.default.svc.cluster.local").reply()
    assert respond(answer.pack(), z) is None  # responses are never answered
    notify = DNSRecord.question("cluster.local", "SOA")
    notify.header.opcode = 4
    assert DNSRecord.parse(respond(notify.pack(), z) or b"").header.rcode == RCODE.NOTIMP


# ---- the server's sockets (no apiserver: caches filled by hand) ----------------------------------------------------


class _NoApi:
    async def list(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("not used")

    def watch(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("not used")


async def test_udp_and_tcp_sockets_answer() -> None:
    server = DnsServer(_NoApi(), DnsConfig(bind_address="127.0.0.1", port=0, metrics_port=0))
    await server.start()
    try:
        server.services.indexer.put(svc("web"))
        loop = asyncio.get_running_loop()
        q = DNSRecord.question("web.default.svc.cluster.local")
        # Not synced: SERVFAIL over UDP.
        udp = await loop.run_in_executor(None, lambda: q.send("127.0.0.1", server.port, timeout=2))
        assert DNSRecord.parse(udp).header.rcode == RCODE.SERVFAIL
        server.services._synced.set()
        server.endpoints._synced.set()
        udp = await loop.run_in_executor(None, lambda: q.send("127.0.0.1", server.port, timeout=2))
        assert [str(rr.rdata) for rr in DNSRecord.parse(udp).rr] == ["10.96.0.20"]
        tcp = await loop.run_in_executor(None, lambda: q.send("127.0.0.1", server.port, tcp=True, timeout=2))
        assert [str(rr.rdata) for rr in DNSRecord.parse(tcp).rr] == ["10.96.0.20"]
        # Two questions on one TCP connection.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for name, rcode in (("web.default.svc.cluster.local", RCODE.NOERROR), ("example.com", RCODE.REFUSED)):
            data = DNSRecord.question(name).pack()
            writer.write(struct.pack("!H", len(data)) + data)
            (n,) = struct.unpack("!H", await reader.readexactly(2))
            assert DNSRecord.parse(await reader.readexactly(n)).header.rcode == rcode
        writer.close()
    finally:
        await server.close()


# ---- the kubelet's side: a pod's resolv.conf settings (kubelet/dns.py) ---------------------------------------------

NODE = PodDns(servers=("192.168.1.1",), searches=("corp.example",), options=("edns0",))


def cluster_first(spec: dict[str, Any], ns: str = "shop") -> PodDns:
    return pod_dns(spec, ns, cluster_dns=("10.96.0.10",), cluster_domain="cluster.local", node=NODE)


def test_cluster_first_is_the_default() -> None:
    want = PodDns(("10.96.0.10",), ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local"), ("ndots:5",))
    assert cluster_first({}) == want
    assert cluster_first({"dnsPolicy": "ClusterFirst"}) == want
    assert cluster_first({"dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": True}) == want


def test_cluster_first_falls_back_to_the_node_without_cluster_dns_or_on_host_network() -> None:
    assert cluster_first({"hostNetwork": True}) == PodDns()  # containerd copies the node's file
    assert pod_dns({}, "shop", cluster_dns=(), cluster_domain="cluster.local", node=NODE) == PodDns()


def test_default_and_none_policies() -> None:
    assert cluster_first({"dnsPolicy": "Default"}) == PodDns()
    merged = cluster_first({"dnsPolicy": "Default", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["x.y"],
                                                                   "options": [{"name": "ndots", "value": "2"}]}})
    assert merged == PodDns(("192.168.1.1", "1.1.1.1"), ("corp.example", "x.y"), ("edns0", "ndots:2"))
    none = cluster_first({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.0.0.2"], "searches": ["a.b"],
                                                              "options": [{"name": "single-request"}]}})
    assert none == PodDns(("10.0.0.2",), ("a.b",), ("single-request",))


def test_dns_config_merges_into_cluster_first() -> None:
    config = {"nameservers": ["10.96.0.10", "10.0.0.2"], "searches": ["svc.cluster.local", "extra.example"],
              "options": [{"name": "ndots", "value": "1"}, {"name": "timeout", "value": "1"}]}
    got = cluster_first({"dnsConfig": config})
    assert got.servers == ("10.96.0.10", "10.0.0.2")
    assert got.searches == ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "extra.example")
    assert got.options == ("ndots:1", "timeout:1")


def test_parse_resolv_conf() -> None:
    text = "# comment\nnameserver 10.0.0.1\nnameserver 10.0.0.2 # x\nsearch a.b c.d\noptions ndots:2 rotate\n"
    assert parse_resolv_conf(text) == PodDns(("10.0.0.1", "10.0.0.2"), ("a.b", "c.d"), ("ndots:2", "rotate"))


def test_sandbox_config_carries_the_pod_dns(tmp_path: Any) -> None:
    client = FakeApiClient()
    syncer = PodSyncer(client=client, runtime=FakeRuntime(), volumes=VolumeManager(tmp_path / "kubelet"),
                       statuses=StatusManager(client), recorder=EventRecorder(client, "node-1"),
                       settings=SyncSettings(node_name="node-1", cluster_dns=("10.96.0.10",),
                                             cluster_domain="cluster.local"),
                       host_ip="10.88.7.1")
    pod = make_pod("web")
    pod["metadata"]["namespace"] = "shop"
    cfg = syncer.sandbox_config(pod, 0)
    assert cfg.dns_servers == ("10.96.0.10",)
    assert cfg.dns_searches == ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local")
    assert cfg.dns_options == ("ndots:5",)


# ---- the cluster's wiring (minik8s/cluster: the dns program, kubelet flags, kube-dns objects) ----------------------


def test_cluster_runs_dns_and_points_the_kubelet_at_it(tmp_path: Any) -> None:
    lay = Layout(tmp_path / "mk8s-d")
    ident = load_identity(lay, environ={})
    assert ident.dns_ip.endswith(".10") and ipaddress.IPv4Address(ident.dns_ip) in ipaddress.IPv4Network(
        ident.service_cidr)
    opts = configs.SupervisorOptions(dns_args=("--ttl", "1"))
    bins = configs.Binaries(kubelet="/v/bin/minik8s-kubelet", dns="/v/bin/minik8s-dns")
    progs = {p.name: p for p in configs.programs(lay, ident, bins, opts)}
    assert progs["dns"].command == ["/v/bin/minik8s-dns", "--apiserver", ident.api_url, "--bind-address", "0.0.0.0",
                                    "--port", str(ident.dns_port), "--cluster-domain", "cluster.local", "--ttl", "1"]
    assert progs["dns"].priority > progs["apiserver"].priority
    kubelet = progs["kubelet"].command
    assert kubelet[kubelet.index("--cluster-dns") + 1] == ident.dns_ip
    assert kubelet[kubelet.index("--cluster-domain") + 1] == "cluster.local"
    without = {p.name: p for p in configs.programs(lay, ident, configs.Binaries(kubelet="/k"), opts)}
    assert "dns" not in without and "--cluster-dns" not in without["kubelet"].command


def test_kube_dns_objects(tmp_path: Any) -> None:
    ident = load_identity(Layout(tmp_path / "mk8s-d"), environ={})
    svc_obj, ep_obj = kube_dns.service(ident), kube_dns.endpoints(ident)
    assert svc_obj["metadata"]["namespace"] == "kube-system" and "selector" not in svc_obj["spec"]
    assert svc_obj["spec"]["clusterIP"] == ident.dns_ip
    assert [(p["name"], p["port"], p["protocol"]) for p in svc_obj["spec"]["ports"]] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    assert ep_obj["subsets"] == [{"addresses": [{"ip": ident.gateway}], "ports": [
        {"name": "dns", "port": ident.dns_port, "protocol": "UDP"},
        {"name": "dns-tcp", "port": ident.dns_port, "protocol": "TCP"}]}]
    # What the apiserver adds (defaults) does not count as a difference; a selector or another IP does.
    stored = {**svc_obj, "spec": {**svc_obj["spec"], "sessionAffinity": "None", "clusterIPs": [ident.dns_ip]}}
    assert kube_dns.service_matches(stored, svc_obj)
    assert not kube_dns.service_matches({**stored, "spec": {**stored["spec"], "selector": {"a": "b"}}}, svc_obj)
    assert not kube_dns.service_matches({**stored, "spec": {**stored["spec"], "clusterIP": "10.96.0.11"}}, svc_obj)
    assert kube_dns.endpoints_match(ep_obj, ep_obj)
    assert not kube_dns.endpoints_match({"subsets": []}, ep_obj)
