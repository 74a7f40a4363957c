"""The proxier: informers on Services and Endpoints → a debounced full sync of our iptables chains.

::

    Service / Endpoints event ──▶ dirty (+ time first seen, per Endpoints key) ──▶ sync loop
    sync loop: wait dirty or sync_period ─ at least min_sync_period after the last sync ─▶
               rules.service_ports(cache) ─▶ iptables.sync (save → restore --noflush) ─▶ metrics

Nothing is written before both informers have synced, so a restarted kubeproxy never replaces the
rules in the kernel with an empty picture. A failed sync is retried (capped backoff).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kubeproxy import iptables
from kubeproxy.rules import ProxyConfig, ServicePort, service_ports
from minik8s.api import registry
from minik8s.client.backoff import Backoff
from minik8s.client.informer import Informer, ListWatcher, object_key

log = logging.getLogger("minik8s.kubeproxy")

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)
Syncer = Callable[[ProxyConfig, list[ServicePort]], Awaitable[Any]]


class Metrics:
    def __init__(self, reg: CollectorRegistry) -> None:
        self.registry = reg
        self.programming = Histogram(
            "kubeproxy_network_programming_duration_seconds",
            "From an Endpoints change observed by kubeproxy to the iptables rules applied.",
            buckets=LATENCY_BUCKETS, registry=reg)
        self.sync_duration = Histogram("kubeproxy_sync_proxy_rules_duration_seconds",
                                       "One iptables sync (save + restore).", buckets=LATENCY_BUCKETS, registry=reg)
        self.syncs = Counter("kubeproxy_sync_proxy_rules", "iptables syncs by result.", ["result"], registry=reg)
        self.last_sync = Gauge("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                               "Unix time of the last successful sync.", registry=reg)
        self.service_ports = Gauge("kubeproxy_service_ports", "Service ports programmed.", registry=reg)
        self.endpoints = Gauge("kubeproxy_endpoints", "Endpoints (ip:port per service port) programmed.",
                               registry=reg)


class Proxier:
    def __init__(self, client: ListWatcher, cfg: ProxyConfig, *, sync_period: float = 30.0,
                 min_sync_period: float = 0.0, syncer: Syncer = iptables.sync,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.sync_period = sync_period
        self.min_sync_period = min_sync_period
        self.syncer = syncer
        self.services = Informer(client, registry.lookup("services"), name="kubeproxy-services")
        self.endpoints = Informer(client, registry.lookup("endpoints"), name="kubeproxy-endpoints")
        self.metrics = Metrics(metrics_registry or CollectorRegistry())
        self.sync_count = 0  # successful syncs
        self.last_text = ""
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._pending: dict[str, float] = {}  # Endpoints key → monotonic time its first unsynced change was seen
        self._synced_once = asyncio.Event()
        self.services.add_handler(on_add=self._changed, on_update=self._svc_updated, on_delete=self._changed)
        self.endpoints.add_handler(on_add=self._ep_changed, on_update=self._ep_updated, on_delete=self._ep_changed)

    # ---- handlers: cheap, mark dirty -------------------------------------------------------

    def _changed(self, obj: dict[str, Any]) -> None:
        self._dirty.set()

    def _svc_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old is not new and old.get("spec") != new.get("spec"):
            self._dirty.set()

    def _ep_changed(self, obj: dict[str, Any]) -> None:
        self._pending.setdefault(object_key(obj), time.monotonic())
        self._dirty.set()

    def _ep_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old is not new and old.get("subsets") != new.get("subsets"):
            self._ep_changed(new)

    # ---- loop --------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()

    async def wait_synced_once(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._synced_once.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.services.run()), asyncio.create_task(self.endpoints.run())]
        try:
            while not (self.services.has_synced() and self.endpoints.has_synced()):
                if self._stop.is_set():
                    return
                await asyncio.sleep(0.02)
            log.info("informers synced: %d services, %d endpoints", len(self.services.indexer),
                     len(self.endpoints.indexer))
            await self._loop()
        finally:
            self.services.stop()
            self.endpoints.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        backoff = Backoff(initial=0.5, cap=10.0)
        loop = asyncio.get_running_loop()
        last_start = -1e9
        self._dirty.set()  # the first sync reconciles (stale chains, jump rules) at once
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._dirty.wait(), self.sync_period if self.sync_period > 0 else None)
            except TimeoutError:
                pass  # periodic resync: repairs rules someone else changed
            if self._stop.is_set():
                return
            wait = last_start + self.min_sync_period - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty.clear()
            last_start = loop.time()
            if not await self.sync_once():
                self._dirty.set()
                await asyncio.sleep(backoff.next())
            else:
                backoff.reset()

    async def sync_once(self) -> bool:
        """Compute the rules from the caches and apply them; True on success."""
        pending, self._pending = self._pending, {}
        ports = service_ports(self.services.indexer.list(), self.endpoints.indexer.list())
        started = time.monotonic()
        try:
            self.last_text = str(await self.syncer(self.cfg, ports) or "")
        except (iptables.IptablesError, OSError, ValueError) as exc:
            log.error("sync failed: %s", exc)
            self.metrics.syncs.labels("error").inc()
            for k, t in pending.items():  # still pending: measure from the first observation
                self._pending.setdefault(k, t)
            return False
        done = time.monotonic()
        self.metrics.sync_duration.observe(done - started)
        for t in pending.values():
            self.metrics.programming.observe(done - t)
        self.metrics.syncs.labels("success").inc()
        self.metrics.last_sync.set(time.time())
        self.metrics.service_ports.set(len(ports))
        self.metrics.endpoints.set(sum(len(p.endpoints) for p in ports))
        self.sync_count += 1
        self._synced_once.set()
        log.debug("synced %d service ports in %.1f ms", len(ports), (done - started) * 1000)
        return True
