"""Activation records: one per function call, written to the apiserver in batches.

::

    gateway ── record(dict) ──▶ deque (at most 10 000; when full the oldest is dropped and counted)
                                  │ every flush_interval seconds (and once more on stop)
                                  ▼
                    POST activations   ≤ 8 at a time; AlreadyExists = already written
                                  │ transient failure (no answer, 429, 5xx): back in the queue
                                  │ anything else (422, 404 namespace gone): dropped and counted
    every retention_interval seconds, per function:
        list activations -l minik8s.io/function=NAME → delete the oldest (by spec.start) beyond retention

**Loss window**: records still in the queue (calls finished within the last flush interval) and
the batch being written are lost if the process is killed (``kill -9``); a normal stop flushes
them, bounded by ``stop_timeout``.

A record is a dict with ``id``, ``namespace``, ``function`` and the other ``spec`` fields of an
Activation (docs/serverless.md, Objects): ``start``, ``durationMs``, ``initMs``, ``status``,
``statusCode``, ``result``, ``truncated``, ``logs``, ``pod``, ``async``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from minik8s.api import registry
from minik8s.api.registry import ResourceType
from minik8s.errors import AlreadyExists, ApiError, ConnectionFailed, ServiceUnavailable, TooManyRequests

log = logging.getLogger("minik8s.serverless.activations")

API_VERSION = "minik8s.io/v1"
FUNCTION_LABEL = "minik8s.io/function"
MAX_QUEUE = 10_000
PARALLEL_WRITES = 8
# OpenWhisk-style housekeeping does not need to be prompt; 30 s keeps list calls rare.
RETENTION_INTERVAL = 30.0
STOP_TIMEOUT = 5.0


class ActivationClient(Protocol):
    async def create(self, obj: dict[str, Any], *, namespace: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> dict[str, Any]: ...

    async def list(self, rt: ResourceType, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]: ...

    async def delete(self, rt: ResourceType, name: str, namespace: str | None = None, *,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, str] | None = None) -> dict[str, Any]: ...


def activation_object(record: dict[str, Any]) -> dict[str, Any]:
    """The Activation object of one record (``id`` → metadata.name, the rest → spec)."""
    spec = {k: v for k, v in record.items() if k not in ("id", "namespace")}
    return {"apiVersion": API_VERSION, "kind": "Activation",
            "metadata": {"name": record["id"], "namespace": record["namespace"],
                         "labels": {FUNCTION_LABEL: record["function"]}},
            "spec": spec}


def _transient(exc: Exception) -> bool:
    if isinstance(exc, ConnectionFailed | ServiceUnavailable | TooManyRequests):
        return True
    return isinstance(exc, ApiError) and exc.code >= 500


class ActivationRecorder:
    """Queues records and writes them (see the module docstring).

    ``function_keys()`` names the functions ("NS/NAME") whose records retention trims, besides
    those this process recorded; ``rt`` is the Activation resource type (looked up in the
    registry when left out).
    """

    def __init__(self, client: ActivationClient, *, flush_interval: float = 1.0, retention: int = 1000,
                 retention_interval: float = RETENTION_INTERVAL, max_queue: int = MAX_QUEUE,
                 parallel: int = PARALLEL_WRITES, stop_timeout: float = STOP_TIMEOUT,
                 function_keys: Callable[[], Iterable[str]] | None = None, rt: ResourceType | None = None,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.client = client
        self.flush_interval = flush_interval
        self.retention = retention
        self.retention_interval = retention_interval
        self.max_queue = max_queue
        self.parallel = parallel
        self.stop_timeout = stop_timeout
        self.function_keys = function_keys
        self._rt = rt
        self._queue: deque[dict[str, Any]] = deque()
        self._seen: set[str] = set()
        self._stop = asyncio.Event()
        self.dropped = Counter("gateway_activations_dropped_total",
                               "Activation records dropped (queue full or rejected by the apiserver)", ["reason"],
                               registry=metrics_registry)
        self.written = Counter("gateway_activations_written_total", "Activation records written",
                               registry=metrics_registry)

    @property
    def rt(self) -> ResourceType:
        if self._rt is None:
            self._rt = registry.lookup("activations")
        return self._rt

    def __len__(self) -> int:
        return len(self._queue)

    def record(self, activation: dict[str, Any]) -> None:
        """Queue one record; never blocks. When the queue is full the oldest record is dropped."""
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self.dropped.labels("queue-full").inc()
        self._queue.append(activation)
        self._seen.add(f"{activation['namespace']}/{activation['function']}")

    async def flush(self) -> int:
        """Write every queued record; returns how many were written (or already existed)."""
        batch = list(self._queue)
        self._queue.clear()
        if not batch:
            return 0
        gate = asyncio.Semaphore(self.parallel)
        retry: list[dict[str, Any]] = []

        async def write(rec: dict[str, Any]) -> bool:
            async with gate:
                try:
                    await self.client.create(activation_object(rec), namespace=rec["namespace"])
                except AlreadyExists:
                    return True  # a retried write whose first try landed
                except (ApiError, ConnectionFailed) as exc:
                    if _transient(exc):
                        retry.append(rec)
                    else:
                        log.warning("dropping activation %s: %s", rec.get("id"), exc)
                        self.dropped.labels("rejected").inc()
                    return False
                return True

        results = await asyncio.gather(*(write(r) for r in batch))
        done = sum(1 for ok in results if ok)
        self.written.inc(done)
        if retry:
            # Failed ones go back in front of newer records; the bound still drops the oldest.
            merged = [*retry, *self._queue]
            overflow = max(0, len(merged) - self.max_queue)
            if overflow:
                self.dropped.labels("queue-full").inc(overflow)
            self._queue = deque(merged[overflow:])
            log.warning("%d activation records not written (apiserver unavailable); retrying", len(retry))
        return done

    async def enforce_retention(self) -> int:
        """Delete, per function, the oldest records beyond ``retention``; returns how many were deleted."""
        keys = set(self._seen)
        if self.function_keys is not None:
            keys.update(self.function_keys())
        deleted = 0
        gate = asyncio.Semaphore(self.parallel)

        async def delete(name: str, ns: str) -> int:
            async with gate:
                try:
                    await self.client.delete(self.rt, name, ns)
                except ApiError as exc:  # NotFound: someone else deleted it; others: next round
                    if exc.code != 404:
                        log.warning("deleting activation %s/%s: %s", ns, name, exc)
                    return 0
                return 1

        for key in sorted(keys):
            ns, _, name = key.partition("/")
            try:
                items, _ = await self.client.list(self.rt, ns, label_selector=f"{FUNCTION_LABEL}={name}")
            except (ApiError, ConnectionFailed) as exc:
                log.warning("listing activations of %s: %s", key, exc)
                continue
            if len(items) <= self.retention:
                continue
            items.sort(key=lambda o: (str((o.get("spec") or {}).get("start") or ""),
                                      str((o.get("metadata") or {}).get("name") or "")))
            old = items[:len(items) - self.retention]
            deleted += sum(await asyncio.gather(*(delete(o["metadata"]["name"], ns) for o in old)))
        return deleted

    async def run(self) -> None:
        """Flush every ``flush_interval`` and trim every ``retention_interval`` until :meth:`stop`;
        then flush what is left, for at most ``stop_timeout`` seconds."""
        self._stop.clear()
        retention = asyncio.create_task(self._retention_loop(), name="activation-retention")
        try:
            while not self._stop.is_set():
                await self._wait(self.flush_interval)
                await self._flush_logged()
        finally:
            retention.cancel()
            await asyncio.gather(retention, return_exceptions=True)
            if self._queue:
                try:
                    await asyncio.wait_for(self.flush(), self.stop_timeout)
                except TimeoutError:
                    log.warning("stopping: %d activation records not written in %gs", len(self._queue),
                                self.stop_timeout)

    def stop(self) -> None:
        self._stop.set()

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("writing activation records failed")

    async def _retention_loop(self) -> None:
        while not self._stop.is_set():
            await self._wait(self.retention_interval)
            if self._stop.is_set():
                return
            try:
                await self.enforce_retention()
            except Exception:
                log.exception("activation retention failed")
