"""kubeproxy/rules.py: Services + Endpoints → iptables-restore text (golden), stale chains, jump rules."""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

import pytest

from kubeproxy import rules
from kubeproxy.main import parse_duration
from kubeproxy.proxier import Proxier
from kubeproxy.rules import ProxyConfig, ServicePort, parse_save, restore_text, service_ports
from minik8s.cluster import configs

CFG = ProxyConfig("MK8S-abc123", cluster_cidr="10.88.5.0/24")
P = "MK8S-abc123"


def svc(name: str = "web", ip: str = "10.96.0.10", ports: list[dict[str, Any]] | None = None,
        **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": ports or [{"port": 80, "protocol": "TCP", "targetPort": 8080}], **spec}}


def eps(name: str = "web", ips: tuple[str, ...] = ("10.88.5.2",), ports: list[dict[str, Any]] | None = None,
        not_ready: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                         "ports": ports or [{"port": 8080, "protocol": "TCP"}]}]}


GOLDEN_CLUSTER_IP = f"""\
*nat
:{P}-SERVICES - [0:0]
:{P}-NODEPORTS - [0:0]
:{P}-POSTROUTING - [0:0]
:{P}-MARK-MASQ - [0:0]
:{P}-SVC-YPC3FHXGS334 - [0:0]
:{P}-SEP-CQG2GSLWXUHU - [0:0]
-A {P}-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A {P}-POSTROUTING -j MARK --xor-mark 0x4000
-A {P}-POSTROUTING -m comment --comment "{P} service traffic requiring SNAT" -j MASQUERADE --random-fully
-A {P}-MARK-MASQ -j MARK --or-mark 0x4000
-A {P}-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web cluster IP" -m tcp --dport 80 \
-j {P}-SVC-YPC3FHXGS334
-A {P}-SVC-YPC3FHXGS334 ! -s 10.88.5.0/24 -d 10.96.0.10/32 -p tcp -m comment --comment "default/web cluster IP" \
-m tcp --dport 80 -j {P}-MARK-MASQ
-A {P}-SVC-YPC3FHXGS334 -m comment --comment "default/web -> 10.88.5.2:8080" -j {P}-SEP-CQG2GSLWXUHU
-A {P}-SEP-CQG2GSLWXUHU -s 10.88.5.2/32 -m comment --comment "default/web" -j {P}-MARK-MASQ
-A {P}-SEP-CQG2GSLWXUHU -p tcp -m comment --comment "default/web" -m tcp -j DNAT --to-destination 10.88.5.2:8080
-A {P}-SERVICES -m addrtype --dst-type LOCAL -m comment --comment "{P} service nodeports; \
NOTE: this must be the last rule in this chain" -j {P}-NODEPORTS
COMMIT
*filter
:{P}-SERVICES - [0:0]
:{P}-EXTERNAL - [0:0]
:{P}-FORWARD - [0:0]
-A {P}-FORWARD -m mark --mark 0x4000/0x4000 -m comment --comment "{P} forwarding rules" -j ACCEPT
-A {P}-FORWARD -s 10.88.5.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -m comment \
--comment "{P} forwarding conntrack rule" -j ACCEPT
-A {P}-FORWARD -d 10.88.5.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -m comment \
--comment "{P} forwarding conntrack rule" -j ACCEPT
COMMIT
"""


def test_golden_cluster_ip() -> None:
    assert restore_text(CFG, service_ports([svc()], [eps()])) == GOLDEN_CLUSTER_IP


def _rules_of(text: str, chain: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]


def test_random_balancing_probabilities() -> None:
    ports = service_ports([svc()], [eps(ips=("10.88.5.4", "10.88.5.2", "10.88.5.3"), not_ready=("10.88.5.9",))])
    assert [e.ip for e in ports[0].endpoints] == ["10.88.5.2", "10.88.5.3", "10.88.5.4"]  # not-ready left out
    text = restore_text(CFG, ports)
    chain = rules.svc_chain(CFG, ports[0])
    jumps = [r for r in _rules_of(text, chain) if "-> " in r]
    assert "--probability 0.3333333333 " in jumps[0]
    assert "--probability 0.5000000000 " in jumps[1]
    assert "statistic" not in jumps[2]
    for ep in ports[0].endpoints:
        sep = rules.sep_chain(CFG, ports[0], ep)
        assert _rules_of(text, sep) == [
            f'-A {sep} -s {ep.ip}/32 -m comment --comment "default/web" -j {P}-MARK-MASQ',
            f'-A {sep} -p tcp -m comment --comment "default/web" -m tcp -j DNAT --to-destination {ep.ip}:8080']


def test_node_port_golden_lines() -> None:
    cfg = ProxyConfig(P, cluster_cidr="10.88.5.0/24", node_ip="10.88.5.1")
    ports = service_ports([svc(type="NodePort", ports=[{"port": 80, "protocol": "TCP", "nodePort": 30080}])],
                          [eps()])
    text = restore_text(cfg, ports)
    chain = rules.svc_chain(cfg, ports[0])
    assert _rules_of(text, f"{P}-NODEPORTS") == [
        f'-A {P}-NODEPORTS -p tcp -m comment --comment "default/web" -m tcp --dport 30080 -j {P}-MARK-MASQ',
        f'-A {P}-NODEPORTS -p tcp -m comment --comment "default/web" -m tcp --dport 30080 -j {chain}']
    last = _rules_of(text, f"{P}-SERVICES")[-2:]
    assert last[0].startswith(f"-A {P}-SERVICES -d 127.0.0.0/8 -m addrtype --dst-type LOCAL ")
    assert last[1].startswith(f"-A {P}-SERVICES -d 10.88.5.1/32 ")
    assert all(r.endswith(f"-j {P}-NODEPORTS") for r in last)
    # nodePort on a ClusterIP Service is ignored
    assert service_ports([svc(ports=[{"port": 80, "nodePort": 30080}])], [eps()])[0].node_port is None


def test_session_affinity_default_and_custom_timeout() -> None:
    ports = service_ports([svc(sessionAffinity="ClientIP")], [eps(ips=("10.88.5.2", "10.88.5.3"))])
    assert ports[0].affinity_timeout == 10800
    text = restore_text(CFG, ports)
    chain = rules.svc_chain(CFG, ports[0])
    seps = [rules.sep_chain(CFG, ports[0], e) for e in ports[0].endpoints]
    assert _rules_of(text, chain)[1:3] == [
        f'-A {chain} -m comment --comment "default/web" -m recent --name {s} --mask 255.255.255.255 --rsource '
        f"--rcheck --seconds 10800 --reap -j {s}" for s in seps]
    assert _rules_of(text, seps[0])[1] == (
        f'-A {seps[0]} -p tcp -m comment --comment "default/web" -m recent --set --name {seps[0]} '
        f"--mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.88.5.2:8080")
    custom = svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    assert service_ports([custom], [eps()])[0].affinity_timeout == 60
    assert service_ports([svc()], [eps()])[0].affinity_timeout is None


def test_multiple_ports_matched_by_name() -> None:
    s = svc(ports=[{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}])
    e = eps(ports=[{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}])
    ports = service_ports([s], [e])
    assert [(p.port_name, p.protocol, p.port, p.endpoints[0].port) for p in ports] == [
        ("dns", "udp", 53, 5353), ("http", "tcp", 80, 8080)]
    text = restore_text(CFG, ports)
    assert len({rules.svc_chain(CFG, p) for p in ports}) == 2
    assert '--comment "default/web:dns cluster IP" -m udp --dport 53' in text
    assert "-p udp -m comment --comment \"default/web:dns\" -m udp -j DNAT --to-destination 10.88.5.2:5353" in text


def test_no_endpoints_rejects_in_filter_and_has_no_dnat() -> None:
    s = svc(type="NodePort", ports=[{"port": 80, "protocol": "TCP", "nodePort": 30080}])
    text = restore_text(CFG, service_ports([s], [eps(ips=())]))
    assert "DNAT" not in text and "-SVC-" not in text
    filt = text[text.index("*filter"):]
    assert (f'-A {P}-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web has no endpoints" '
            "-m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable") in filt
    assert (f'-A {P}-EXTERNAL -m addrtype --dst-type LOCAL -p tcp -m comment --comment "default/web has no '
            'endpoints" -m tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable') in filt


def test_headless_external_name_and_missing_ip_are_skipped() -> None:
    assert service_ports([svc(ip="None"), svc(name="x", ip=""),
                          svc(name="y", type="ExternalName", externalName="example.org")], []) == []


def test_chain_names_fit_the_kernel_limit() -> None:
    cfg = ProxyConfig("A" * 16)
    sp = ServicePort("ns", "n" * 60, "p", "tcp", "10.96.0.1", 80, None, None, (rules.Endpoint("10.0.0.1", 1),))
    for name in (rules.svc_chain(cfg, sp), rules.sep_chain(cfg, sp, sp.endpoints[0]), cfg.chain("POSTROUTING")):
        assert len(name) <= rules.MAX_CHAIN_LEN


SAVED = f"""\
# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:{P}-SERVICES - [0:0]
:{P}-SVC-OLDOLDOLDOLD - [0:0]
:{P}-POSTROUTING - [0:0]
:OTHER-SERVICES - [0:0]
:{P}X-SERVICES - [0:0]
-A PREROUTING -m comment --comment "{P} service portals" -j {P}-SERVICES
-A PREROUTING -m comment --comment "{P} service portals" -j {P}-SERVICES
-A PREROUTING -m comment --comment "OTHER service portals" -j OTHER-SERVICES
-A OUTPUT -j {P}-SVC-OLDOLDOLDOLD
-A {P}-SERVICES -j {P}-SVC-OLDOLDOLDOLD
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m comment --comment "{P} forwarding rules" -j {P}-FORWARD
COMMIT
"""


def test_reconcile_with_saved_state() -> None:
    text = restore_text(CFG, service_ports([svc()], [eps()]), parse_save(SAVED))
    nat, filt = text.split("*filter")
    # the stale chain of our prefix is flushed, its references removed, then deleted; others untouched
    assert f":{P}-SVC-OLDOLDOLDOLD - [0:0]" in nat and nat.rstrip().endswith(f"-X {P}-SVC-OLDOLDOLDOLD\nCOMMIT")
    assert f"-D OUTPUT -j {P}-SVC-OLDOLDOLDOLD" in nat
    assert "OTHER" not in text and f"{P}X" not in text
    # one PREROUTING jump kept, the duplicate deleted; OUTPUT and POSTROUTING jumps added
    assert nat.count(f'-D PREROUTING -m comment --comment "{P} service portals" -j {P}-SERVICES') == 1
    assert "-I PREROUTING" not in nat
    assert f'-I OUTPUT 1 -m comment --comment "{P} service portals" -j {P}-SERVICES' in nat
    assert f'-I POSTROUTING 1 -m comment --comment "{P} postrouting rules" -j {P}-POSTROUTING' in nat
    assert "-I FORWARD 1 -m comment" not in filt  # the existing forwarding jump is kept
    assert f"-I FORWARD 1 -m conntrack --ctstate NEW -m comment --comment \"{P} service portals\"" in filt


def test_cleanup_text_removes_only_ours() -> None:
    text = rules.cleanup_text(CFG, parse_save(SAVED))
    assert "OTHER" not in text and f"{P}X" not in text
    assert f"-X {P}-SERVICES" in text and f"-X {P}-SVC-OLDOLDOLDOLD" in text
    assert text.count("-D PREROUTING") == 2 and f"-D FORWARD -m comment --comment \"{P} forwarding rules\"" in text
    assert rules.cleanup_text(CFG, parse_save("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")) == ""


def test_bad_prefix_is_refused() -> None:
    with pytest.raises(ValueError):
        ProxyConfig("bad prefix")
    with pytest.raises(ValueError):
        ProxyConfig("A" * 17)


def test_parse_duration() -> None:
    assert parse_duration("30s") == 30 and parse_duration("0") == 0 and parse_duration("500ms") == 0.5
    assert parse_duration("1m") == 60


def test_supervisord_program(tmp_path: Any) -> None:
    from minik8s.cluster.layout import Layout, load_identity
    lay = Layout(tmp_path / "home")
    ident = load_identity(lay, environ={})
    progs = configs.programs(lay, ident, configs.Binaries(kubeproxy="/v/bin/minik8s-kubeproxy"),
                             configs.SupervisorOptions())
    (kp,) = [p for p in progs if p.name == "kubeproxy"]
    flags = dict(zip(kp.command[1::2], kp.command[2::2], strict=True))
    assert kp.command[0] == "/v/bin/minik8s-kubeproxy"
    assert flags == {"--apiserver": ident.api_url, "--chain-prefix": ident.chain_prefix,
                     "--cluster-cidr": ident.pod_cidr, "--bridge": ident.bridge, "--node-ip": ident.gateway,
                     "--metrics-port": "0"}
    assert "kubeproxy" not in [p.name for p in configs.programs(lay, ident, configs.Binaries(),
                                                                 configs.SupervisorOptions())]
    assert shlex.join(kp.command)


class FakeLW:
    """A ListWatcher over fixed lists whose watch never ends (until cancelled)."""

    def __init__(self, objs: dict[str, list[dict[str, Any]]]) -> None:
        self.objs = objs

    async def list(self, rt: Any, namespace: str | None = None, **_: Any) -> tuple[list[dict[str, Any]], str]:
        return list(self.objs.get(rt.plural, [])), "1"

    async def watch(self, rt: Any, namespace: str | None = None, **_: Any) -> Any:
        await asyncio.sleep(3600)
        if False:
            yield ("", {})


def test_proxier_syncs_after_informers_and_observes_latency() -> None:
    applied: list[list[ServicePort]] = []

    async def syncer(cfg: ProxyConfig, ports: list[ServicePort]) -> str:
        applied.append(ports)
        return "ok"

    async def scenario() -> None:
        proxier = Proxier(FakeLW({"services": [svc()], "endpoints": [eps()]}), CFG, syncer=syncer)
        task = asyncio.create_task(proxier.run())
        assert await proxier.wait_synced_once(5)
        proxier.stop()
        await asyncio.wait_for(task, 5)
        assert applied[0][0].endpoints[0].ip == "10.88.5.2"
        count = proxier.metrics.registry.get_sample_value(
            "kubeproxy_network_programming_duration_seconds_count")
        assert count == 1
        ok = proxier.metrics.registry.get_sample_value("kubeproxy_sync_proxy_rules_total", {"result": "success"})
        assert ok is not None and ok >= 1

    asyncio.run(scenario())
