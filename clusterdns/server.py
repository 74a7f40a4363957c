"""The DNS server: the dnslib codec around ``Zone.lookup``, UDP and TCP transports, informers, /healthz.

::

    UDP datagram / TCP (2-byte length + message) ──▶ respond(bytes) ──▶ reply bytes
        respond: dnslib parse ─ not a query / bad packet → FORMERR | NOTIMP (or dropped)
                 ─ name outside the domain → REFUSED at once (never forwarded)
                 ─ caches not synced yet   → SERVFAIL (never a false NXDOMAIN)
                 ─ Zone.lookup → answers, SOA in authority for negative answers
                 ─ bigger than the client's UDP size (512, or its EDNS0 size) → TC=1, the client retries over TCP
    DnsServer.run: Services and Endpoints informers (list + watch) ─▶ Zone reads them at each question
                   HTTP --metrics-port: GET /healthz (200 once synced), GET /metrics (Prometheus text)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, cast

from dnslib import (
    CLASS,
    CNAME,
    EDNS0,
    NS,
    QTYPE,
    RR,
    SOA,
    SRV,
    A,
    DNSError,
    DNSHeader,
    DNSRecord,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from clusterdns.records import DEFAULT_DOMAIN, Answer, Rcode, Record, Soa, Srv, Zone
from minik8s.api import registry
from minik8s.client.informer import Informer, ListWatcher

log = logging.getLogger("minik8s.clusterdns")

CLASSIC_UDP_SIZE = 512  # RFC 1035: the most a UDP answer may carry without EDNS0
MAX_UDP_SIZE = 1232  # what we advertise and send at most over UDP (the DNS flag day 2020 value)
LATENCY_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5)


@dataclasses.dataclass(frozen=True)
class DnsConfig:
    """Everything ``minik8s-dns``'s flags set (seconds for durations)."""

    bind_address: str = "0.0.0.0"
    port: int = 10053  # 0: a free port (tests); UDP and TCP always share one
    domain: str = DEFAULT_DOMAIN
    ttl: int = 5
    tcp_idle_timeout: float = 10.0  # a TCP client that sends nothing for this long is disconnected
    metrics_bind_address: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no /healthz and /metrics server


# ---- the codec ---------------------------------------------------------------------------------------


def _rdata(record: Record) -> Any:
    data = record.data
    if record.rtype == "A":
        return A(str(data))
    if record.rtype == "CNAME":
        return CNAME(str(data) + ".")
    if record.rtype == "NS":
        return NS(str(data) + ".")
    if record.rtype == "SRV" and isinstance(data, Srv):
        return SRV(data.priority, data.weight, data.port, data.target + ".")
    if record.rtype == "SOA" and isinstance(data, Soa):
        return _soa_rdata(data)
    raise ValueError(f"cannot encode {record}")


def _soa_rdata(soa: Soa) -> SOA:
    return SOA(soa.mname + ".", soa.rname + ".", (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum))


def _rr(record: Record, ttl: int) -> RR:
    return RR(record.name + ".", getattr(QTYPE, record.rtype), CLASS.IN, ttl, _rdata(record))


def _error_reply(data: bytes, rcode: Rcode) -> bytes | None:
    """A header-only reply with ``rcode`` to a message we cannot parse; None when it has no header at all."""
    if len(data) < 12:
        return None
    ident, flags = struct.unpack("!HH", data[:4])
    if flags & 0x8000:  # a response: never answer those (no loops between servers)
        return None
    header = DNSHeader(id=ident, qr=1, opcode=(flags >> 11) & 0xF, rd=(flags >> 8) & 1, rcode=int(rcode))
    return bytes(DNSRecord(header).pack())


def _udp_limit(request: DNSRecord) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(CLASSIC_UDP_SIZE, min(int(rr.rclass), MAX_UDP_SIZE))
    return CLASSIC_UDP_SIZE


def respond(data: bytes, zone: Zone, *, ready: bool = True, udp: bool = True,
            observe: Callable[[str, Rcode], None] | None = None) -> bytes | None:
    """The reply to one DNS message (bytes in, bytes out), or None when it deserves none.

    ``ready`` False (the caches have not synced yet) turns every question inside the domain into
    SERVFAIL: clients retry, where a false NXDOMAIN would be cached. ``udp`` limits the reply to the
    client's UDP size (truncating with TC=1); over TCP a reply may be up to 64 KiB. ``observe(qtype,
    rcode)`` is called once per answered question (metrics).
    """
    try:
        request = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, struct.error, UnicodeDecodeError):
        return _error_reply(data, Rcode.FORMERR)
    if request.header.qr:
        return None
    if request.header.opcode != 0:
        return _error_reply(data, Rcode.NOTIMP)
    if len(request.questions) != 1:
        return _error_reply(data, Rcode.FORMERR)
    q = request.q
    qtype = QTYPE.get(q.qtype, str(q.qtype))
    qname = str(q.qname)
    if q.qclass not in (CLASS.IN, 255) or not zone.contains(qname):  # class IN or ANY, inside the domain
        answer = Answer(Rcode.REFUSED, authoritative=False)
    elif not ready:
        answer = Answer(Rcode.SERVFAIL, authoritative=False)
    else:
        answer = zone.lookup(qname, str(qtype))
    reply = request.reply(ra=0, aa=int(answer.authoritative))
    reply.header.rcode = int(answer.rcode)
    # Records keep the case the client asked in (resolvers compare case-insensitively, some check it).
    for record in answer.answers:
        rr = _rr(record, zone.ttl)
        if record.name == qname.rstrip(".").lower():
            rr.rname = q.qname
        reply.add_answer(rr)
    for record in answer.additional:
        reply.add_ar(_rr(record, zone.ttl))
    if answer.soa is not None:
        soa = answer.soa
        reply.add_auth(RR(zone.domain + ".", QTYPE.SOA, CLASS.IN, min(zone.ttl, soa.minimum), _soa_rdata(soa)))
    edns = any(rr.rtype == QTYPE.OPT for rr in request.ar)
    if edns:
        reply.add_ar(EDNS0(udp_len=MAX_UDP_SIZE))
    if observe is not None:
        observe(str(qtype), answer.rcode)
    out = bytes(reply.pack())
    if udp and len(out) > _udp_limit(request):
        short = request.reply(ra=0, aa=int(answer.authoritative))
        short.header.rcode = int(answer.rcode)
        short.header.tc = 1
        if edns:
            short.add_ar(EDNS0(udp_len=MAX_UDP_SIZE))
        out = bytes(short.pack())
    return out


# ---- the transports ----------------------------------------------------------------------------------


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.server.answer(data, udp=True, proto="udp")
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # an ICMP error for an earlier reply: nothing to do
        log.debug("udp: %s", exc)


class Metrics:
    def __init__(self, reg: CollectorRegistry) -> None:
        self.registry = reg
        self.requests = Counter("dns_requests", "DNS questions answered, by transport, type and response code.",
                                ["proto", "type", "rcode"], registry=reg)
        self.duration = Histogram("dns_request_duration_seconds", "Time to answer one DNS message.", ["proto"],
                                  buckets=LATENCY_BUCKETS, registry=reg)
        self.services = Gauge("dns_services", "Services in the cache.", registry=reg)


class DnsServer:
    """The daemon's body: ``start()`` binds UDP+TCP (and HTTP), ``run()`` serves until ``stop()``.

    The sockets are bound before the caches sync so the port is held from the start; until then
    questions inside the domain get SERVFAIL and the rest REFUSED.
    """

    def __init__(self, client: ListWatcher, config: DnsConfig, *, metrics_registry: CollectorRegistry | None = None
                 ) -> None:
        self.config = config
        self.services = Informer(client, registry.lookup("services"), name="dns-services")
        self.endpoints = Informer(client, registry.lookup("endpoints"), name="dns-endpoints")
        self.zone = Zone(self.services.indexer, self.endpoints.indexer, domain=config.domain, ttl=config.ttl)
        self.metrics = Metrics(metrics_registry or CollectorRegistry())
        for inf in (self.services, self.endpoints):
            inf.add_handler(on_add=self._changed, on_update=self._updated, on_delete=self._changed)
        self.port = config.port
        self.metrics_port = config.metrics_port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._http: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    # ---- cache changes -----------------------------------------------------------------------------

    def _changed(self, obj: dict[str, Any]) -> None:
        self.zone.serial += 1

    def _updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old is not new:
            self.zone.serial += 1

    def ready(self) -> bool:
        return self.services.has_synced() and self.endpoints.has_synced()

    # ---- answering ---------------------------------------------------------------------------------

    def answer(self, data: bytes, *, udp: bool, proto: str) -> bytes | None:
        started = time.perf_counter()

        def observe(qtype: str, rcode: Rcode) -> None:
            self.metrics.requests.labels(proto, qtype, rcode.name).inc()

        try:
            reply = respond(data, self.zone, ready=self.ready(), udp=udp, observe=observe)
        except Exception:  # one bad question must not stop the server
            log.exception("cannot answer a %s message", proto)
            reply = _error_reply(data, Rcode.SERVFAIL)
        self.metrics.duration.labels(proto).observe(time.perf_counter() - started)
        return reply

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), self.config.tcp_idle_timeout)
                (length,) = struct.unpack("!H", head)
                data = await asyncio.wait_for(reader.readexactly(length), self.config.tcp_idle_timeout)
                reply = self.answer(data, udp=False, proto="tcp")
                if reply is None:
                    continue
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP and TCP on ``bind_address:port`` (one free port for both when port is 0), then HTTP."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        for attempt in range(20):
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(cfg.bind_address,
                                                                                               cfg.port),
                                                               family=socket.AF_INET)
            port = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._tcp_client, cfg.bind_address, port,
                                                       family=socket.AF_INET, reuse_address=True)
            except OSError:
                transport.close()
                if cfg.port or attempt == 19:
                    raise
                continue  # the free UDP port is taken for TCP: another one
            self._udp = transport
            self.port = port
            break
        if cfg.metrics_port:
            self._http = await asyncio.start_server(self._http_client, cfg.metrics_bind_address, cfg.metrics_port)
            self.metrics_port = int(self._http.sockets[0].getsockname()[1])
        log.info("answering %s on %s:%d (udp, tcp), ttl %ds%s", self.zone.domain, cfg.bind_address, self.port,
                 cfg.ttl, f"; /healthz and /metrics on {cfg.metrics_bind_address}:{self.metrics_port}"
                 if self._http else "")

    async def run(self) -> None:
        """Serve until :meth:`stop`; binds first when :meth:`start` was not called."""
        if self._udp is None:
            await self.start()
        tasks = [asyncio.create_task(self.services.run()), asyncio.create_task(self.endpoints.run())]
        synced = asyncio.create_task(self._log_synced())
        try:
            await self._stop.wait()
        finally:
            self.services.stop()
            self.endpoints.stop()
            for t in [*tasks, synced]:
                t.cancel()
            await asyncio.gather(*tasks, synced, return_exceptions=True)
            await self.close()

    async def _log_synced(self) -> None:
        await self.services.wait_synced()
        await self.endpoints.wait_synced()
        log.info("caches synced: %d services, %d endpoints", len(self.services.indexer), len(self.endpoints.indexer))

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for server in (self._tcp, self._http):
            if server is not None:
                server.close()
        for t in list(self._clients):
            t.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        for server in (self._tcp, self._http):
            if server is not None:
                await server.wait_closed()
        self._tcp = self._http = None

    # ---- /healthz and /metrics ---------------------------------------------------------------------

    async def _http_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else ""
            if path == "/healthz":
                status, body = ("200 OK", b"ok") if self.ready() else ("503 Service Unavailable", b"not synced")
            elif path == "/metrics":
                self.metrics.services.set(len(self.services.indexer))
                status, body = "200 OK", generate_latest(self.metrics.registry)
            else:
                status, body = "404 Not Found", b"not found"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
