"""The ingress controller: informers on Ingresses, Services and Endpoints → nginx's config and Ingress status.

::

    Ingress / Service / Endpoints event ──▶ dirty ──▶ sync loop (at least min_sync_period apart,
                                                      and every sync_period anyway)
    sync: nginxconf.routing(caches) → render → Nginx.apply (nginx -t, atomic write, SIGHUP; a no-op when
          the text is the same) → status.loadBalancer.ingress = [{ip: node address}] on each of our
          Ingresses that lacks it

Level-triggered: a sync reads only the caches, never the event that woke it. Nothing is written before
the three informers have synced, so a restarted controller never serves an empty picture. A failed sync
(nginx rejects the config, the apiserver refuses a status write) is retried with capped backoff; the
running nginx keeps its last good config meanwhile.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
from typing import Any, Protocol

from ingress import nginxconf
from ingress.nginx import Nginx, NginxError
from minik8s.api import registry
from minik8s.client.backoff import Backoff
from minik8s.client.informer import Informer, ListWatcher
from minik8s.errors import ApiError, ConnectionFailed

log = logging.getLogger("minik8s.ingress")


class IngressClient(ListWatcher, Protocol):
    """The calls the controller makes: list/watch for the informers, one status write."""

    async def replace_status(self, obj: dict[str, Any]) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    settings: nginxconf.Settings
    ingress_class: str = nginxconf.DEFAULT_CLASS
    node_ip: str = ""  # status.loadBalancer.ingress[].ip ("" = status left alone)
    sync_period: float = 30.0
    min_sync_period: float = 0.2


class IngressController:
    def __init__(self, client: IngressClient, cfg: ControllerConfig, nginx: Nginx) -> None:
        self.client = client
        self.cfg = cfg
        self.nginx = nginx
        self.ingresses = Informer(client, registry.lookup("ingresses"), name="ingress-ingresses")
        self.services = Informer(client, registry.lookup("services"), name="ingress-services")
        self.endpoints = Informer(client, registry.lookup("endpoints"), name="ingress-endpoints")
        self.syncs = 0  # successful syncs
        self.last_error = ""
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._synced_once = asyncio.Event()
        for inf in (self.ingresses, self.services, self.endpoints):
            inf.add_handler(on_add=self._changed, on_update=self._updated, on_delete=self._changed)

    def _changed(self, obj: dict[str, Any]) -> None:
        self._dirty.set()

    def _updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old is not new:
            self._dirty.set()

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
        """Informers, then the sync loop, until :meth:`stop`; nginx is stopped (gracefully) on the way out."""
        self.nginx.prepare()
        informers = (self.ingresses, self.services, self.endpoints)
        tasks = [asyncio.create_task(inf.run(), name=f"informer-{inf.name}") for inf in informers]
        watcher: asyncio.Task[None] | None = None
        try:
            while not all(inf.has_synced() for inf in informers):
                if self._stop.is_set():
                    return
                await asyncio.sleep(0.02)
            log.info("informers synced: %d ingresses, %d services, %d endpoints", len(self.ingresses.indexer),
                     len(self.services.indexer), len(self.endpoints.indexer))
            watcher = asyncio.create_task(self._watch_nginx(), name="ingress-nginx-watch")
            await self._loop()
        finally:
            if watcher is not None:
                watcher.cancel()
            for inf in informers:
                inf.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, *([watcher] if watcher else []), return_exceptions=True)
            await self.nginx.stop()

    async def _watch_nginx(self) -> None:
        """An nginx master that dies on its own is started again by the next sync."""
        while not self._stop.is_set():
            if not self.nginx.running():
                await asyncio.sleep(0.1)
                continue
            code = await self.nginx.wait_exit()
            if self._stop.is_set():
                return
            log.error("nginx exited on its own (status %s); starting it again", code)
            self.nginx.forget()
            self._dirty.set()

    async def _loop(self) -> None:
        backoff = Backoff(initial=0.5, cap=10.0)
        loop = asyncio.get_running_loop()
        last_start = -1e9
        self._dirty.set()
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._dirty.wait(), self.cfg.sync_period if self.cfg.sync_period > 0 else None)
            except TimeoutError:
                pass  # periodic resync
            if self._stop.is_set():
                return
            wait = last_start + self.cfg.min_sync_period - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty.clear()
            last_start = loop.time()
            if await self.sync_once():
                backoff.reset()
            else:
                self._dirty.set()
                await asyncio.sleep(backoff.next())

    def render(self) -> str:
        """nginx.conf for what the caches hold now."""
        rt = nginxconf.routing(self.ingresses.indexer.list(), nginxconf.by_key(self.services.indexer.list()),
                               nginxconf.by_key(self.endpoints.indexer.list()), ingress_class=self.cfg.ingress_class)
        return nginxconf.render(rt, self.cfg.settings)

    async def sync_once(self) -> bool:
        """Converge nginx and the Ingresses' status on the caches; True when both succeeded."""
        try:
            if await self.nginx.apply(self.render()):
                log.info("nginx configuration applied (%d ingresses)", len(self.ingresses.indexer))
        except (NginxError, OSError) as exc:
            self.last_error = str(exc)
            log.error("nginx configuration not applied: %s", exc)
            return False
        ok = await self._update_statuses()
        if ok:
            self.syncs += 1
            self._synced_once.set()
        return ok

    async def _update_statuses(self) -> bool:
        if not self.cfg.node_ip:
            return True
        want = nginxconf.load_balancer_status(self.cfg.node_ip)
        ok = True
        for ing in self.ingresses.indexer.list():
            if not nginxconf.is_ours(ing, self.cfg.ingress_class):
                continue
            if (ing.get("status") or {}).get("loadBalancer") == want:
                continue
            updated = copy.deepcopy(ing)  # cached objects are read-only
            updated.setdefault("status", {})["loadBalancer"] = want
            try:
                await self.client.replace_status(updated)
            except (ApiError, ConnectionFailed) as exc:
                # A conflict or a deleted Ingress: the watch brings the news and the next sync retries.
                log.info("status of ingress %s/%s not written: %s", ing["metadata"].get("namespace"),
                         ing["metadata"].get("name"), exc)
                ok = False
        return ok
