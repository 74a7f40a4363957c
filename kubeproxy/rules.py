"""Services + Endpoints → the ``iptables-restore`` text for this cluster's chains. Pure: no I/O.

The layout follows kube-proxy's iptables mode, every chain named ``<prefix>-…``::

    nat PREROUTING / OUTPUT ─▶ <P>-SERVICES ─┬─ -d ClusterIP --dport p ─▶ <P>-SVC-<hash>   (one per service port)
                                             └─ (last) local dst ─▶ <P>-NODEPORTS ─▶ MARK-MASQ, <P>-SVC-<hash>
    <P>-SVC-<hash>: ! -s podCIDR → MARK-MASQ; [affinity: -m recent --rcheck → SEP]; statistic random → <P>-SEP-<hash>
    <P>-SEP-<hash>: -s own ip → MARK-MASQ (hairpin); [-m recent --set]; DNAT → ip:port
    nat POSTROUTING ─▶ <P>-POSTROUTING: marked → MASQUERADE
    filter INPUT ─▶ <P>-EXTERNAL (NodePorts without endpoints: REJECT)
    filter FORWARD / OUTPUT ─▶ <P>-SERVICES (ClusterIPs without endpoints: REJECT); FORWARD ─▶ <P>-FORWARD

A service port without endpoints gets REJECT in the filter table (as kube-proxy does), so a client
sees "connection refused" at once instead of a timeout.

:func:`restore_text` writes the whole state of our chains: every chain is declared (which flushes it
in ``iptables-restore --noflush``) and rebuilt, chains of our prefix that are no longer wanted are
flushed and deleted, and the jump rules from the built-in chains are added (or removed) so that
exactly one of each exists — all in one transaction per table.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

Obj = Mapping[str, Any]

MAX_CHAIN_LEN = 28  # XT_EXTENSION_MAXNAMELEN - 1
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds; Kubernetes' default for ClientIP affinity
TABLES = ("nat", "filter")


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    """What the rules depend on besides the objects."""

    chain_prefix: str
    cluster_cidr: str = ""  # pod CIDR; traffic from outside it to a ClusterIP is masqueraded
    node_ip: str = ""  # when set, NodePorts answer on 127.0.0.0/8 and this address only; else every local address
    masquerade_bit: int = 14

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}", self.chain_prefix):
            raise ValueError(f"chain prefix {self.chain_prefix!r} must be 1-16 letters, digits, - or _")
        if not 0 <= self.masquerade_bit <= 31:
            raise ValueError("masquerade bit must be 0..31")
        if self.cluster_cidr:
            ipaddress.IPv4Network(self.cluster_cidr, strict=False)
        if self.node_ip:
            ipaddress.IPv4Address(self.node_ip)

    def chain(self, suffix: str) -> str:
        return f"{self.chain_prefix}-{suffix}"

    @property
    def mark(self) -> str:
        bit = 1 << self.masquerade_bit
        return f"{bit:#x}/{bit:#x}"

    @property
    def comment_prefix(self) -> str:
        return self.chain_prefix


@dataclasses.dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int


@dataclasses.dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with the endpoints that serve it."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # tcp | udp | sctp
    cluster_ip: str
    port: int
    node_port: int | None
    affinity_timeout: int | None  # seconds for ClientIP affinity, None without
    endpoints: tuple[Endpoint, ...]

    @property
    def display(self) -> str:
        return f"{self.namespace}/{self.name}" + (f":{self.port_name}" if self.port_name else "")


def _hash(text: str, length: int) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:length]


def svc_chain(cfg: ProxyConfig, sp: ServicePort) -> str:
    head = cfg.chain("SVC-")
    return head + _hash(f"{cfg.chain_prefix}|{sp.display}|{sp.protocol}", min(16, MAX_CHAIN_LEN - len(head)))


def sep_chain(cfg: ProxyConfig, sp: ServicePort, ep: Endpoint) -> str:
    head = cfg.chain("SEP-")
    return head + _hash(f"{cfg.chain_prefix}|{sp.display}|{sp.protocol}|{ep.ip}:{ep.port}",
                        min(16, MAX_CHAIN_LEN - len(head)))


# ---- objects → service ports ----------------------------------------------------------------

def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def _valid_ip(value: Any) -> bool:
    try:
        ipaddress.IPv4Address(str(value))
    except ValueError:
        return False
    return True


def service_ports(services: Iterable[Obj], endpoints: Iterable[Obj]) -> list[ServicePort]:
    """Every proxied service port, sorted; headless, ExternalName and IP-less Services are skipped.

    Endpoints ports are matched to service ports by name (as kube-proxy does); only ``addresses``
    (ready) are used, never ``notReadyAddresses``.
    """
    eps_by_key = {_key(e): e for e in endpoints}
    out: list[ServicePort] = []
    for svc in services:
        ns, name = _key(svc)
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            continue
        cip = spec.get("clusterIP")
        if not cip or cip == "None" or not _valid_ip(cip):
            continue
        affinity: int | None = None
        if spec.get("sessionAffinity") == "ClientIP":
            cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
            affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
        ep_obj = eps_by_key.get((ns, name)) or {}
        for p in spec.get("ports") or []:
            pname = str(p.get("name") or "")
            proto = str(p.get("protocol") or "TCP").lower()
            eps: set[Endpoint] = set()
            for subset in ep_obj.get("subsets") or []:
                ports = [q for q in subset.get("ports") or []
                         if str(q.get("name") or "") == pname and str(q.get("protocol") or "TCP").lower() == proto]
                for q in ports:
                    for a in subset.get("addresses") or []:
                        if _valid_ip(a.get("ip")) and isinstance(q.get("port"), int):
                            eps.add(Endpoint(str(a["ip"]), int(q["port"])))
            node_port = p.get("nodePort") if spec.get("type") in ("NodePort", "LoadBalancer") else None
            out.append(ServicePort(ns, name, pname, proto, str(cip), int(p.get("port") or 0),
                                   int(node_port) if isinstance(node_port, int) else None, affinity,
                                   tuple(sorted(eps, key=lambda e: (ipaddress.IPv4Address(e.ip), e.port)))))
    out.sort(key=lambda s: (s.namespace, s.name, s.port_name, s.protocol))
    return out


# ---- rules -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class JumpRule:
    """A rule of ours in a built-in chain, identified by its comment."""

    table: str
    chain: str
    comment: str
    spec: str  # the rule after ``-A CHAIN``

    def add(self) -> str:
        return f"-I {self.chain} 1 {self.spec}"


def jump_rules(cfg: ProxyConfig) -> list[JumpRule]:
    p = cfg.comment_prefix
    out = []
    for table, chain, target, what, extra in (
            ("nat", "PREROUTING", "SERVICES", "service portals", ""),
            ("nat", "OUTPUT", "SERVICES", "service portals", ""),
            ("nat", "POSTROUTING", "POSTROUTING", "postrouting rules", ""),
            ("filter", "INPUT", "EXTERNAL", "externally-visible service portals", "-m conntrack --ctstate NEW "),
            ("filter", "FORWARD", "SERVICES", "service portals", "-m conntrack --ctstate NEW "),
            ("filter", "FORWARD", "FORWARD", "forwarding rules", ""),
            ("filter", "OUTPUT", "SERVICES", "service portals", "-m conntrack --ctstate NEW ")):
        comment = f"{p} {what}"
        out.append(JumpRule(table, chain, comment, f'{extra}-m comment --comment "{comment}" -j {cfg.chain(target)}'))
    return out


def _probability(n: int) -> str:
    return f"{1.0 / n:0.10f}"


def build_tables(cfg: ProxyConfig, ports: list[ServicePort]) -> dict[str, tuple[list[str], list[str]]]:
    """table → (our chains in order, our rules as ``-A`` lines). Built-in chains are not included."""
    c = cfg.chain
    mark_masq, services, nodeports = c("MARK-MASQ"), c("SERVICES"), c("NODEPORTS")
    nat_chains = [services, nodeports, c("POSTROUTING"), mark_masq]
    nat: list[str] = [
        f'-A {c("POSTROUTING")} -m mark ! --mark {cfg.mark} -j RETURN',
        f"-A {c('POSTROUTING')} -j MARK --xor-mark {1 << cfg.masquerade_bit:#x}",
        f'-A {c("POSTROUTING")} -m comment --comment "{cfg.comment_prefix} service traffic requiring SNAT" '
        f"-j MASQUERADE --random-fully",
        f"-A {mark_masq} -j MARK --or-mark {1 << cfg.masquerade_bit:#x}",
    ]
    f_services, f_external, f_forward = c("SERVICES"), c("EXTERNAL"), c("FORWARD")
    filt_chains = [f_services, f_external, f_forward]
    filt: list[str] = []
    svc_rules: list[str] = []
    node_rules: list[str] = []
    sep_rules: list[str] = []
    for sp in ports:
        comment = f'-m comment --comment "{sp.display}'
        if not sp.endpoints:
            filt.append(f'-A {f_services} -d {sp.cluster_ip}/32 -p {sp.protocol} {comment} has no endpoints" '
                        f"-m {sp.protocol} --dport {sp.port} -j REJECT --reject-with icmp-port-unreachable")
            if sp.node_port:
                for dst in _nodeport_dsts(cfg):
                    filt.append(f'-A {f_external} {dst}-p {sp.protocol} {comment} has no endpoints" '
                                f"-m {sp.protocol} --dport {sp.node_port} -j REJECT "
                                f"--reject-with icmp-port-unreachable")
            continue
        svc = svc_chain(cfg, sp)
        nat_chains.append(svc)
        nat.append(f'-A {services} -d {sp.cluster_ip}/32 -p {sp.protocol} {comment} cluster IP" '
                   f"-m {sp.protocol} --dport {sp.port} -j {svc}")
        if sp.node_port:
            node_rules.append(f'-A {nodeports} -p {sp.protocol} {comment}" -m {sp.protocol} --dport {sp.node_port} '
                              f"-j {mark_masq}")
            node_rules.append(f'-A {nodeports} -p {sp.protocol} {comment}" -m {sp.protocol} --dport {sp.node_port} '
                              f"-j {svc}")
        if cfg.cluster_cidr:
            svc_rules.append(f'-A {svc} ! -s {cfg.cluster_cidr} -d {sp.cluster_ip}/32 -p {sp.protocol} '
                             f'{comment} cluster IP" -m {sp.protocol} --dport {sp.port} -j {mark_masq}')
        else:
            svc_rules.append(f'-A {svc} -d {sp.cluster_ip}/32 -p {sp.protocol} {comment} cluster IP" '
                             f"-m {sp.protocol} --dport {sp.port} -j {mark_masq}")
        seps = [(ep, sep_chain(cfg, sp, ep)) for ep in sp.endpoints]
        if sp.affinity_timeout is not None:
            for _, sep in seps:
                svc_rules.append(f'-A {svc} {comment}" -m recent --name {sep} --mask 255.255.255.255 --rsource '
                                 f"--rcheck --seconds {sp.affinity_timeout} --reap -j {sep}")
        n = len(seps)
        for i, (ep, sep) in enumerate(seps):
            nat_chains.append(sep)
            stat = f"-m statistic --mode random --probability {_probability(n - i)} " if i < n - 1 else ""
            svc_rules.append(f'-A {svc} {comment} -> {ep.ip}:{ep.port}" {stat}-j {sep}')
            sep_rules.append(f'-A {sep} -s {ep.ip}/32 {comment}" -j {mark_masq}')
            recent = (f"-m recent --set --name {sep} --mask 255.255.255.255 --rsource "
                      if sp.affinity_timeout is not None else "")
            sep_rules.append(f'-A {sep} -p {sp.protocol} {comment}" {recent}-m {sp.protocol} '
                             f"-j DNAT --to-destination {ep.ip}:{ep.port}")
    nat.extend(svc_rules)
    nat.extend(sep_rules)
    for dst in _nodeport_dsts(cfg):
        nat.append(f'-A {services} {dst}-m comment --comment "{cfg.comment_prefix} service nodeports; '
                   f'NOTE: this must be the last rule in this chain" -j {nodeports}')
    nat.extend(node_rules)
    filt.append(f'-A {f_forward} -m mark --mark {cfg.mark} -m comment --comment "{cfg.comment_prefix} '
                f'forwarding rules" -j ACCEPT')
    if cfg.cluster_cidr:
        for side in ("-s", "-d"):
            filt.append(f"-A {f_forward} {side} {cfg.cluster_cidr} -m conntrack --ctstate RELATED,ESTABLISHED "
                        f'-m comment --comment "{cfg.comment_prefix} forwarding conntrack rule" -j ACCEPT')
    return {"nat": (nat_chains, nat), "filter": (filt_chains, filt)}


def _nodeport_dsts(cfg: ProxyConfig) -> list[str]:
    """Destination matches (with a trailing space) for NodePorts."""
    if not cfg.node_ip:
        return ["-m addrtype --dst-type LOCAL "]
    return ["-d 127.0.0.0/8 -m addrtype --dst-type LOCAL ", f"-d {cfg.node_ip}/32 "]


# ---- the current state (iptables-save) -------------------------------------------------------

@dataclasses.dataclass
class Saved:
    """What ``iptables-save`` says about one table: chain names and ``(chain, rule-after--A)`` pairs."""

    chains: list[str] = dataclasses.field(default_factory=list)
    rules: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def parse_save(text: str) -> dict[str, Saved]:
    out: dict[str, Saved] = {}
    cur: Saved | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            cur = out.setdefault(line[1:].strip(), Saved())
        elif cur is None:
            continue
        elif line.startswith(":"):
            cur.chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            parts = line.split(" ", 2)
            cur.rules.append((parts[1], parts[2] if len(parts) > 2 else ""))
    return out


def _comment_of(rule: str) -> str | None:
    m = re.search(r'--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))', rule)
    if not m:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)


def _ours(cfg: ProxyConfig, name: str) -> bool:
    return name.startswith(cfg.chain_prefix + "-")


def restore_text(cfg: ProxyConfig, ports: list[ServicePort], saved: Mapping[str, Saved] | None = None) -> str:
    """The ``iptables-restore --noflush`` input that makes the kernel match ``ports``.

    ``saved`` (from :func:`parse_save`) lets it delete stale chains of our prefix and add only the
    jump rules that are missing (deleting duplicates and our own rules that are no longer wanted).
    Without it, the jump rules are not touched (for golden tests of the chains).
    """
    tables = build_tables(cfg, ports)
    jumps = jump_rules(cfg)
    lines: list[str] = []
    for table in TABLES:
        chains, rules = tables[table]
        cur = (saved or {}).get(table, Saved())
        stale = [ch for ch in cur.chains if _ours(cfg, ch) and ch not in chains]
        lines.append(f"*{table}")
        lines.extend(f":{ch} - [0:0]" for ch in [*chains, *stale])
        if saved is not None:
            lines.extend(_jump_fixes(cfg, table, cur, [j for j in jumps if j.table == table], stale))
        lines.extend(rules)
        lines.extend(f"-X {ch}" for ch in stale)
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _jump_fixes(cfg: ProxyConfig, table: str, cur: Saved, wanted: list[JumpRule], stale: list[str]) -> list[str]:
    """``-D`` for our unwanted/duplicate rules in built-in chains, ``-I`` for missing jump rules."""
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    wanted_ids = {(j.chain, j.comment): j for j in wanted}
    for chain, rule in cur.rules:
        if _ours(cfg, chain):
            continue
        comment = _comment_of(rule)
        target = re.search(r"(?:^| )-j (\S+)", rule)
        mine = (comment is not None and comment.startswith(cfg.comment_prefix + " ")) or (
            target is not None and (target.group(1) in stale or _ours(cfg, target.group(1))))
        if not mine:
            continue
        ident = (chain, comment or "")
        j = wanted_ids.get(ident)
        if j is not None and ident not in seen and target is not None and target.group(1) == j.spec.rsplit(" ", 1)[1]:
            seen.add(ident)
            continue
        out.append(f"-D {chain} {rule}")
    for ident, j in reversed(wanted_ids.items()):  # inserted at 1: the last first keeps the listed order
        if ident not in seen:
            out.append(j.add())
    return out


def cleanup_text(cfg: ProxyConfig, saved: Mapping[str, Saved]) -> str:
    """Remove every chain of our prefix and every rule of ours in the built-in chains."""
    lines: list[str] = []
    for table, cur in saved.items():
        doomed = [ch for ch in cur.chains if _ours(cfg, ch)]
        deletes = _jump_fixes(cfg, table, cur, [], doomed)
        if not doomed and not deletes:
            continue
        lines.append(f"*{table}")
        lines.extend(f":{ch} - [0:0]" for ch in doomed)
        lines.extend(deletes)
        lines.extend(f"-X {ch}" for ch in doomed)
        lines.append("COMMIT")
    return "\n".join(lines) + ("\n" if lines else "")
