"""Service ClusterIP and NodePort allocation, with the state of record in etcd.

Each allocated value is one etcd key (``/registry/ranges/serviceips/10.96.0.10``) created with a
create-if-absent transaction, so two apiservers (or two concurrent creates in one) can never hand
out the same value: the loser of the race sees ``KeyExists`` and tries the next candidate. The
key's value names the owning Service, which lets the repair pass release leaked values (a crash
between allocating and storing the Service).
"""

from __future__ import annotations

import ipaddress
import random
from datetime import timedelta
from typing import Any

from apiserver.storage import KeyExists, KeyNotFound, Store
from minik8s.timeutil import now, parse_rfc3339, rfc3339

IP_PREFIX = "/registry/ranges/serviceips/"
PORT_PREFIX = "/registry/ranges/servicenodeports/"


class RangeFull(Exception):
    """No free value is left in the range."""


class Allocator:
    """Allocates unique values of one range. ``owner`` is ``namespace/name`` of the Service."""

    def __init__(self, store: Store, prefix: str, values: list[str]) -> None:
        self.store = store
        self.prefix = prefix
        self.values = values
        self.valid = set(values)

    def contains(self, value: str) -> bool:
        return value in self.valid

    async def allocate(self, owner: str, value: str | None = None) -> str:
        """Reserve ``value`` (raises ``KeyExists`` if taken) or any free one (raises ``RangeFull``)."""
        if value is not None:
            await self.store.create(self.prefix + value, self._record(owner, value))
            return value
        used, _ = await self.store.list(self.prefix)
        taken = {o["metadata"]["name"] for o in used}
        # Random candidates spread concurrent allocators over different values; a nearly full
        # range falls back to scanning what is left.
        candidates = [v for v in (random.choice(self.values) for _ in range(32)) if v not in taken]
        if not candidates:
            candidates = [v for v in self.values if v not in taken][:64]
        for candidate in candidates:
            try:
                await self.store.create(self.prefix + candidate, self._record(owner, candidate))
                return candidate
            except KeyExists:
                continue
        raise RangeFull(f"range {self.prefix} is full")

    async def release(self, value: str, owner: str) -> None:
        """Free ``value`` if ``owner`` still holds it (never someone else's)."""
        try:
            rec = await self.store.get(self.prefix + value)
        except KeyNotFound:
            return
        if rec.get("owner") == owner:
            try:
                await self.store.delete(self.prefix + value, expected_rv=int(rec["metadata"]["resourceVersion"]))
            except Exception:  # noqa: BLE001, S110 - changed hands meanwhile: nothing to release
                pass

    async def repair(self, in_use: set[str], *, older_than: timedelta = timedelta(minutes=1)) -> int:
        """Release values no Service uses, allocated longer ago than ``older_than``; returns how many."""
        used, _ = await self.store.list(self.prefix)
        released = 0
        for rec in used:
            value = rec["metadata"]["name"]
            at = parse_rfc3339(rec.get("allocatedAt", ""))
            if value in in_use or (at is not None and now() - at < older_than):
                continue
            try:
                await self.store.delete(self.prefix + value, expected_rv=int(rec["metadata"]["resourceVersion"]))
                released += 1
            except Exception:  # noqa: BLE001 - reallocated meanwhile: keep it
                continue
        return released

    def _record(self, owner: str, value: str | None = None) -> dict[str, Any]:
        return {"metadata": {"name": value or ""}, "owner": owner, "allocatedAt": rfc3339()}


def ip_allocator(store: Store, cidr: str) -> Allocator:
    net = ipaddress.ip_network(cidr, strict=False)
    # The network's first usable address is kept back, as Kubernetes keeps x.x.x.1 for the
    # "kubernetes" Service; the last (broadcast) is not a host.
    hosts = [str(h) for h in net.hosts()][1:]
    return Allocator(store, IP_PREFIX, hosts)


def port_allocator(store: Store, port_range: str) -> Allocator:
    lo, hi = (int(x) for x in port_range.split("-", 1))
    return Allocator(store, PORT_PREFIX, [str(p) for p in range(lo, hi + 1)])
