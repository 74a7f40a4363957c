"""Names → records, read from the Service and Endpoints caches. Pure: no I/O, no wire format.

::

    lookup(name, qtype)
      name outside DOMAIN                      → REFUSED (no upstream: these machines have no internet)
      DOMAIN / svc.DOMAIN                      → NOERROR (SOA, NS at the apex), else no data
      NS.svc.DOMAIN                            → no data when a Service lives in NS, else NXDOMAIN
      SVC.NS.svc.DOMAIN                        → A ClusterIP | A ready endpoint IPs (headless) |
                                                 CNAME externalName | SRV per named port
      HOST.SVC.NS.svc.DOMAIN                   → A of a headless Service's endpoint (its hostname or a-b-c-d)
      _PORT._PROTO.SVC.NS.svc.DOMAIN           → SRV (ClusterIP: one target; headless: one per endpoint)
      anything else inside DOMAIN              → NXDOMAIN
    a known name asked for another type (AAAA…) → NOERROR, no answers ("no data")

Negative answers (NXDOMAIN, no data) carry the zone's SOA so that resolvers cache them for at most
the TTL. Names are compared case-insensitively; records are named in lower case without the final dot.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

Obj = Mapping[str, Any]
DEFAULT_DOMAIN = "cluster.local"


class Rcode(enum.IntEnum):
    """The response codes this server gives (RFC 1035 / 2136 numbers)."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


@dataclasses.dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclasses.dataclass(frozen=True)
class Soa:
    mname: str
    rname: str
    serial: int
    refresh: int = 7200
    retry: int = 1800
    expire: int = 86400
    minimum: int = 5


@dataclasses.dataclass(frozen=True)
class Record:
    """One resource record: ``data`` is an IPv4 address (A), a name (CNAME, NS), an ``Srv`` or a ``Soa``."""

    name: str
    rtype: str  # A | CNAME | SRV | NS | SOA
    data: str | Srv | Soa


@dataclasses.dataclass(frozen=True)
class Answer:
    """What to answer one question: the code, the answer section and the additional section.

    ``soa`` is the zone's SOA for the authority section of a negative answer (NXDOMAIN or no data).
    ``authoritative`` is False only for REFUSED / SERVFAIL (names that are not ours to answer).
    """

    rcode: Rcode
    answers: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    soa: Soa | None = None
    authoritative: bool = True


class Store(Protocol):
    """Read access to a cache of objects by ``namespace/name`` (an informer's ``Indexer``)."""

    def get(self, key: str) -> Obj | None: ...

    def list(self) -> list[Any]: ...


def normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


def dashed(ip: str) -> str:
    """``10.88.1.7`` → ``10-88-1-7``: the DNS label of an endpoint without a hostname."""
    return ip.replace(".", "-")


def _valid_ip(value: Any) -> bool:
    try:
        ipaddress.IPv4Address(str(value))
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class _Target:
    """One endpoint address of a headless Service: its DNS label and IP, and the Endpoints ports it serves."""

    label: str
    ip: str
    ports: tuple[tuple[str, str, int], ...]  # (name, protocol lower case, port)


class Zone:
    """The cluster domain, answered from live caches (read at each question, so always current).

    ``serial`` is the SOA serial; the server bumps it whenever the caches change.
    """

    def __init__(self, services: Store, endpoints: Store, *, domain: str = DEFAULT_DOMAIN, ttl: int = 5) -> None:
        self.services = services
        self.endpoints = endpoints
        self.domain = normalize(domain)
        if not self.domain:
            raise ValueError("the cluster domain must not be empty")
        self.ttl = ttl
        self.serial = 1

    @property
    def soa(self) -> Soa:
        return Soa(mname=f"ns.dns.{self.domain}", rname=f"hostmaster.{self.domain}", serial=self.serial,
                   minimum=self.ttl)

    def contains(self, name: str) -> bool:
        name = normalize(name)
        return name == self.domain or name.endswith("." + self.domain)

    # ---- answers -----------------------------------------------------------------------------------

    def lookup(self, qname: str, qtype: str) -> Answer:
        """The answer to ``qname`` (any case, final dot optional) of type ``qtype`` (``A``, ``SRV``…)."""
        name = normalize(qname)
        if not self.contains(name):
            return Answer(Rcode.REFUSED, authoritative=False)
        labels = [] if name == self.domain else name[:-len(self.domain) - 1].split(".")
        records, additional, exists = self._records(name, labels)
        if not exists:
            return Answer(Rcode.NXDOMAIN, soa=self.soa)
        qtype = qtype.upper()
        wanted = [r for r in records if qtype in (r.rtype, "ANY") or r.rtype == "CNAME"]
        if qtype == "ANY":
            wanted = [r for r in wanted if r.rtype != "SRV"]
        if not wanted:
            return Answer(Rcode.NOERROR, soa=self.soa)
        extra = additional if any(r.rtype == "SRV" for r in wanted) else ()
        return Answer(Rcode.NOERROR, tuple(wanted), tuple(extra))

    def _records(self, name: str, labels: list[str]) -> tuple[list[Record], list[Record], bool]:
        """(records of ``name``, additional records for its SRV targets, whether the name exists)."""
        if not labels:
            return [Record(name, "SOA", self.soa), Record(name, "NS", self.soa.mname)], [], True
        if labels[-1] != "svc":
            return [], [], False
        rest = labels[:-1]
        if not rest:
            return [], [], True
        if len(rest) == 1:
            return [], [], self._namespace_has_services(rest[0])
        if len(rest) == 2:
            return self._service(name, rest[1], rest[0])
        if len(rest) == 3:
            return self._endpoint(name, rest[2], rest[1], rest[0])
        if len(rest) == 4 and rest[0].startswith("_") and rest[1].startswith("_"):
            return self._port(name, rest[3], rest[2], rest[0][1:], rest[1][1:])
        return [], [], False

    def _namespace_has_services(self, namespace: str) -> bool:
        return any(str((s.get("metadata") or {}).get("namespace") or "") == namespace
                   for s in self.services.list())

    def _service_name(self, namespace: str, service: str) -> str:
        return f"{service}.{namespace}.svc.{self.domain}"

    def _service(self, name: str, namespace: str, service: str) -> tuple[list[Record], list[Record], bool]:
        svc = self.services.get(f"{namespace}/{service}")
        if svc is None:
            return [], [], False
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            target = normalize(str(spec.get("externalName") or ""))
            return ([Record(name, "CNAME", target)] if target else []), [], True
        srvs: list[Record] = []
        additional: list[Record] = []
        for port in spec.get("ports") or []:
            pname, proto = str(port.get("name") or ""), str(port.get("protocol") or "TCP").lower()
            if pname:
                recs, extra, _ = self._port(name, namespace, service, pname, proto)
                srvs += [Record(name, "SRV", r.data) for r in recs]
                additional += extra
        cip = spec.get("clusterIP")
        if cip and cip != "None":
            if not _valid_ip(cip):
                return [], [], False
            return [Record(name, "A", str(cip)), *srvs], additional, True
        # Headless: the ready endpoints themselves. None ready → the name does not exist (as CoreDNS answers).
        targets = self._targets(svc, namespace, service)
        if not targets:
            return [], [], False
        return [*(Record(name, "A", t.ip) for t in targets), *srvs], additional, True

    def _endpoint(self, name: str, namespace: str, service: str, label: str) -> tuple[list[Record], list[Record], bool]:
        svc = self.services.get(f"{namespace}/{service}")
        if svc is None or (svc.get("spec") or {}).get("clusterIP") not in (None, "", "None"):
            return [], [], False
        found = [Record(name, "A", t.ip) for t in self._targets(svc, namespace, service) if t.label == label]
        return found, [], bool(found)

    def _port(self, name: str, namespace: str, service: str, port_name: str,
              proto: str) -> tuple[list[Record], list[Record], bool]:
        svc = self.services.get(f"{namespace}/{service}")
        if svc is None:
            return [], [], False
        spec = svc.get("spec") or {}
        match = [p for p in spec.get("ports") or []
                 if str(p.get("name") or "") == port_name and str(p.get("protocol") or "TCP").lower() == proto]
        if not match or spec.get("type") == "ExternalName":
            return [], [], False
        svc_name = self._service_name(namespace, service)
        cip = spec.get("clusterIP")
        if cip and cip != "None":
            if not _valid_ip(cip):
                return [], [], False
            port = int(match[0].get("port") or 0)
            return [Record(name, "SRV", Srv(0, 100, port, svc_name))], [Record(svc_name, "A", str(cip))], True
        targets = [(t, p) for t in self._targets(svc, namespace, service)
                   for (pn, pp, p) in t.ports if pn == port_name and pp == proto]
        if not targets:
            return [], [], False
        weight = max(1, 100 // len(targets))
        srvs = [Record(name, "SRV", Srv(0, weight, p, f"{t.label}.{svc_name}")) for t, p in targets]
        return srvs, [Record(f"{t.label}.{svc_name}", "A", t.ip) for t, _ in targets], True

    def _targets(self, svc: Obj, namespace: str, service: str) -> list[_Target]:
        """The headless Service's endpoint addresses: ready ones (not-ready too with publishNotReadyAddresses)."""
        ep = self.endpoints.get(f"{namespace}/{service}") or {}
        publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
        out: dict[str, _Target] = {}
        for subset in ep.get("subsets") or []:
            ports = tuple((str(p.get("name") or ""), str(p.get("protocol") or "TCP").lower(), int(p["port"]))
                          for p in subset.get("ports") or [] if isinstance(p.get("port"), int))
            addresses: Iterable[Obj] = subset.get("addresses") or []
            if publish:
                addresses = [*addresses, *(subset.get("notReadyAddresses") or [])]
            for a in addresses:
                ip = a.get("ip")
                if not _valid_ip(ip):
                    continue
                label = normalize(str(a.get("hostname") or "")) or dashed(str(ip))
                key = f"{label}|{ip}"
                prev = out.get(key)
                out[key] = _Target(label, str(ip), (prev.ports if prev else ()) + ports)
        return sorted(out.values(), key=lambda t: (ipaddress.IPv4Address(t.ip), t.label))
