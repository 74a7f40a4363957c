"""The scheduler daemon's loop: informers → cache + queue → ``schedule()`` → assume → bind.

::

    pod informer (all pods) ──┬─ bound pod        → cache.add_pod / remove_pod (requests counted per node)
                              └─ unbound, mine    → queue.add(key)
    node informer ────────────── cache.set_node / remove_node; a new or changed node re-queues every
                                 unschedulable pod (so does a bound pod that goes away)
    worker (one): key → pod from the informer → schedule(pod, cache.snapshot())
        ├─ node  → cache.assume(pod, node) → bind task (bounded concurrency): POST binding
        │            ok: Event Scheduled (and PodScheduled=True if it was False) · failed: cache.forget
        └─ none  → PodScheduled=False/Unschedulable via /status (only when changed) + Event FailedScheduling,
                   retried after ``retry_period``
    event workers: Events are best effort and off the critical path (as client-go's recorder): a bounded
                   queue written by a few tasks; when it is full, events are dropped (counted), never bindings.

One worker makes every decision in turn against a snapshot that already counts every earlier choice
(assumed pods), so a burst never overcommits a node; bindings run concurrently behind it.
Reads come from the informers' caches and are never mutated; every write goes through :class:`Binder`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from minik8s.api import registry
from minik8s.client.informer import Informer, ListWatcher
from minik8s.client.workqueue import WorkQueue, run_worker
from minik8s.errors import ApiError, Conflict, ConnectionFailed, NotFound
from scheduler.binder import COMPONENT, Binder, WriteClient
from scheduler.schedule import POLICIES, schedule
from scheduler.snapshot import PodInfo, SchedulerCache, counts_on_node, pod_key

log = logging.getLogger("minik8s.scheduler")


@dataclass(frozen=True)
class SchedulerConfig:
    """How the scheduler behaves; built from flags and ``MINIK8S_SCHEDULER_*`` env vars by ``main``."""

    policy: str = "default"
    scheduler_name: str = COMPONENT
    # Unschedulable pods are tried again this often even when nothing seems to change. Kubernetes waits
    # up to 5 minutes (podMaxInUnschedulablePodsDuration); a small cluster can afford 60 s.
    retry_period: float = 60.0
    # Kubernetes' percentageOfNodesToScore: 0 = adaptive (max(5, 50 - nodes/125) %), 100 = every node.
    percentage_of_nodes_to_score: int = 0
    bind_concurrency: int = 16
    # Events waiting to be written; more are dropped (an Event costs the apiserver more than a binding).
    event_queue_size: int = 1000
    event_workers: int = 2

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown scheduling policy {self.policy!r}; choose one of {', '.join(POLICIES)}")


class SchedulerClient(ListWatcher, WriteClient, Protocol):
    """What the scheduler needs of a client: list + watch (informers) and the binder's writes."""


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _node_fingerprint(node: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a node update must change to be worth re-trying unschedulable pods (heartbeats are not)."""
    meta, status = node.get("metadata") or {}, node.get("status") or {}
    ready = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return (meta.get("labels"), _spec(node).get("unschedulable"), _spec(node).get("taints"),
            status.get("allocatable"), status.get("capacity"), ready)


class Scheduler:
    """Binds this scheduler's pending pods (``spec.schedulerName``) to nodes. :meth:`run` until :meth:`stop`.

    ``client`` is an ``AsyncApiClient`` (or a fake with its methods). Attributes ``pods``, ``nodes``,
    ``cache`` and ``queue`` are exposed for tests and metrics; treat them as read-only.
    """

    def __init__(self, client: SchedulerClient, config: SchedulerConfig | None = None, *,
                 binder: Binder | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.client = client
        self.binder = binder or Binder(client, component=self.config.scheduler_name)
        self.pods = Informer(client, registry.lookup("pods"), name="scheduler-pods")
        self.nodes = Informer(client, registry.lookup("nodes"), name="scheduler-nodes")
        self.cache = SchedulerCache()
        self.queue = WorkQueue()
        self.unschedulable: set[str] = set()
        self.binds = 0  # successful bindings, for tests and benchmarks
        self._bind_slots = asyncio.Semaphore(max(1, self.config.bind_concurrency))
        self._binding: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._events: asyncio.Queue[tuple[dict[str, Any], str, str, str]] = \
            asyncio.Queue(maxsize=max(1, self.config.event_queue_size))
        self.events_dropped = 0
        self.pods.add_handler(on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted)
        self.nodes.add_handler(on_add=self._node_added, on_update=self._node_updated, on_delete=self._node_deleted)

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the informers, wait for both caches, then schedule until :meth:`stop` (or cancellation)."""
        self._stop.clear()
        informers = [asyncio.create_task(self.nodes.run(), name="scheduler-nodes"),
                     asyncio.create_task(self.pods.run(), name="scheduler-pods")]
        tasks = list(informers)
        try:
            while not (self.nodes.has_synced() and self.pods.has_synced()):
                if self._stop.is_set():
                    return
                await asyncio.sleep(0.05)
            log.info("scheduler synced: %d nodes, %d pods; policy %s", len(self.nodes.indexer),
                     len(self.pods.indexer), self.config.policy)
            tasks.append(asyncio.create_task(run_worker(self.queue, self.sync, name="scheduler"), name="scheduler"))
            tasks.extend(asyncio.create_task(self._event_worker(), name=f"scheduler-events-{i}")
                         for i in range(max(1, self.config.event_workers)))
            await self._stop.wait()
        finally:
            self.queue.shut_down()
            for t in [*tasks, *self._binding]:
                t.cancel()
            await asyncio.gather(*tasks, *self._binding, return_exceptions=True)

    def stop(self) -> None:
        """Ask :meth:`run` to return; bindings in flight are cancelled (the pods stay pending, nothing breaks)."""
        self._stop.set()

    # --- handlers (cheap: update the cache, enqueue keys) --------------------------------------

    def _mine(self, pod: Mapping[str, Any]) -> bool:
        return (_spec(pod).get("schedulerName") or COMPONENT) == self.config.scheduler_name

    def _pod_added(self, pod: dict[str, Any]) -> None:
        key = pod_key(pod)
        if _spec(pod).get("nodeName"):
            self.cache.add_pod(pod)
            self.unschedulable.discard(key)
        elif self._mine(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.queue.add(key)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = pod_key(new)
        if _spec(new).get("nodeName"):
            freed = counts_on_node(old) and not counts_on_node(new)
            self.cache.add_pod(new)
            self.unschedulable.discard(key)
            if freed:
                self._retry_unschedulable()
            return
        # Our own status write comes back as an update: retry only when the pod asks for something else.
        if key in self.unschedulable and _spec(old) == _spec(new) and \
                (old.get("metadata") or {}).get("labels") == (new.get("metadata") or {}).get("labels"):
            return
        self._pod_added(new)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = pod_key(pod)
        self.unschedulable.discard(key)
        was_counted = self.cache.node_of(key) is not None
        self.cache.remove_pod(key)
        if was_counted:
            self._retry_unschedulable()

    def _node_added(self, node: dict[str, Any]) -> None:
        self.cache.set_node(node)
        self._retry_unschedulable()

    def _node_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.cache.set_node(new)
        if _node_fingerprint(old) != _node_fingerprint(new):
            self._retry_unschedulable()

    def _node_deleted(self, node: dict[str, Any]) -> None:
        self.cache.remove_node(str((node.get("metadata") or {}).get("name", "")))

    def _retry_unschedulable(self) -> None:
        for key in sorted(self.unschedulable):
            self.queue.add(key)

    # --- the decision --------------------------------------------------------------------------

    async def sync(self, key: Hashable) -> None:
        """Schedule pod ``key`` if it still needs it (level-triggered: reads the pod as it is now).

        Raises what a status or event write raised (the worker then retries with back-off).
        """
        key = str(key)
        pod = self.pods.indexer.get(key)
        if pod is None or _spec(pod).get("nodeName") or (pod.get("metadata") or {}).get("deletionTimestamp") \
                or not self._mine(pod):
            self.unschedulable.discard(key)
            return
        if self.cache.is_assumed(key):
            return  # its binding is in flight; the informer will bring the result
        info = PodInfo.of(pod)
        decision = schedule(info, self.cache.snapshot(), policy=self.config.policy,
                            percentage_of_nodes_to_score=self.config.percentage_of_nodes_to_score)
        if decision.node is not None:
            self.unschedulable.discard(key)
            self.cache.assume(info, decision.node)
            await self._bind_slots.acquire()
            task = asyncio.create_task(self._bind(pod, decision.node), name=f"bind-{key}")
            self._binding.add(task)
            task.add_done_callback(self._binding.discard)
            return
        message = decision.message
        self.unschedulable.add(key)
        self.queue.add_after(key, self.config.retry_period)
        log.info("pod %s is unschedulable: %s", key, message)
        await self.binder.mark_unschedulable(pod, message)
        self.record_event(pod, "FailedScheduling", message, "Warning")

    async def _bind(self, pod: dict[str, Any], node: str) -> None:
        key = pod_key(pod)
        try:
            await self.binder.bind(pod, node)
        except (Conflict, NotFound) as exc:
            # Bound by someone else, or gone: the informer brings the truth; drop our guess.
            log.info("binding %s to %s refused: %s", key, node, exc)
            self.cache.forget(key)
            return
        except (ApiError, ConnectionFailed) as exc:
            log.warning("binding %s to %s failed: %s; retrying", key, node, exc)
            self.cache.forget(key)
            self.queue.add_rate_limited(key)
            return
        finally:
            self._bind_slots.release()
        self.binds += 1
        ns, name = key.split("/", 1)
        # The apiserver's binding also sets PodScheduled=True, as Kubernetes' does.
        self.record_event(pod, "Scheduled", f"Successfully assigned {ns}/{name} to {node}")

    # --- events (best effort) ------------------------------------------------------------------

    def record_event(self, pod: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        """Queue an Event about ``pod``; never blocks (drops it, counted in ``events_dropped``, when full)."""
        try:
            self._events.put_nowait((pod, reason, message, type_))
        except asyncio.QueueFull:
            self.events_dropped += 1

    async def flush_events(self) -> None:
        """Write every queued Event now (tests; the event workers do this while :meth:`run` runs)."""
        while not self._events.empty():
            await self._write_event(*self._events.get_nowait())

    async def _event_worker(self) -> None:
        while True:
            await self._write_event(*await self._events.get())

    async def _write_event(self, pod: dict[str, Any], reason: str, message: str, type_: str) -> None:
        try:
            await self.binder.event(pod, reason, message, type_=type_)
        except (ApiError, ConnectionFailed) as exc:
            log.debug("event %s for %s not written: %s", reason, pod_key(pod), exc)
