"""What the kubelet reports to the API: pod status (computed from the runtime) and Events.

::

    runtime state ──compute_pod_status()──▶ PodStatus ──StatusManager.set_status()──▶ PUT pods/{name}/status
    pod worker ──EventRecorder.event()──▶ queue ──run()──▶ POST events (repeats: PATCH count)

``compute_pod_status`` is a pure function of the pod, its sandbox and its containers' runtime
records, so it is unit-tested without a runtime. ``StatusManager`` writes only when the status
it computes differs from the last one it wrote (or, for a pod it has not written yet, from the
API's), and never writes to a different pod that took the same name (uid check on conflict).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubelet import runtime as rt
from minik8s.api import registry
from minik8s.api.quantity import parse_quantity
from minik8s.errors import ApiError, Conflict, ConnectionFailed, NotFound
from minik8s.timeutil import rfc3339

log = logging.getLogger(__name__)

PODS = registry.by_kind("v1", "Pod")
EVENTS = registry.lookup("events")

# The condition types this kubelet owns; other condition types in a pod's status are kept.
POD_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")
# The status keys this kubelet writes; anything else (reason, message, nominatedNodeName) is kept.
OWNED_KEYS = ("phase", "conditions", "hostIP", "hostIPs", "podIP", "podIPs", "startTime", "containerStatuses",
              "qosClass")


def ns_time(ns: int) -> str | None:
    """Unix nanoseconds → RFC 3339 (None for 0: "not yet")."""
    if not ns:
        return None
    return rfc3339(datetime.fromtimestamp(ns / 1e9, UTC))


def container_id(c: rt.ContainerStatus) -> str:
    return f"containerd://{c.id}"


@dataclass
class ContainerView:
    """What the pod worker knows of one spec container when it computes status.

    ``current`` is the newest runtime container of that name, ``previous`` the one before it (for
    ``lastState``); ``waiting`` a (reason, message) the worker decided on (``ErrImagePull``,
    ``CrashLoopBackOff``, …) that overrides what the runtime says. ``started`` / ``ready`` are the
    probes' verdicts on a running ``current`` (None: no probe says otherwise, i.e. True).
    """

    name: str
    image: str
    current: rt.ContainerStatus | None = None
    previous: rt.ContainerStatus | None = None
    waiting: tuple[str, str] | None = None
    restart_count: int = 0
    started: bool | None = None  # False while a startup probe has not succeeded
    ready: bool | None = None  # False until a readiness probe succeeded (and never before started)


def terminated_state(c: rt.ContainerStatus) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": c.exit_code, "reason": c.reason or ("Completed" if c.exit_code == 0
                                                                                else "Error"),
                             "startedAt": ns_time(c.started_at), "finishedAt": ns_time(c.finished_at),
                             "containerID": container_id(c)}
    if c.exit_code > 128:
        state["signal"] = c.exit_code - 128
    if c.message:
        state["message"] = c.message
    return state


def container_status(view: ContainerView) -> dict[str, Any]:
    """One ``containerStatuses[]`` entry (Kubernetes' shape)."""
    cur, prev = view.current, view.previous
    out: dict[str, Any] = {"name": view.name, "image": view.image, "imageID": "", "ready": False,
                           "started": False, "restartCount": view.restart_count, "state": {}, "lastState": {}}
    if cur is not None:
        out["imageID"] = cur.image_ref
        out["containerID"] = container_id(cur)
    last = prev
    if cur is not None and cur.state == "RUNNING" and view.waiting is None:
        out["state"] = {"running": {"startedAt": ns_time(cur.started_at)}}
        out["started"] = view.started is not False
        out["ready"] = out["started"] and view.ready is not False
    elif cur is not None and cur.state == "EXITED" and view.waiting is None:
        out["state"] = {"terminated": terminated_state(cur)}
    elif cur is not None and cur.state == "UNKNOWN" and view.waiting is None:
        out["state"] = {"waiting": {"reason": "ContainerStatusUnknown",
                                    "message": "the container runtime cannot tell this container's state"}}
    else:
        reason, message = view.waiting or ("ContainerCreating", "")
        out["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if cur is not None and cur.state == "EXITED":
            last = cur  # waiting to restart: the run that ended is the last state
    if last is not None and last.state == "EXITED":
        out["lastState"] = {"terminated": terminated_state(last)}
    return out


def pod_phase(restart_policy: str, statuses: list[dict[str, Any]]) -> str:
    """Kubernetes' ``getPhase`` for pods without init containers."""
    if not statuses:
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for s in statuses:
        state = s["state"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
        elif "terminated" in (s.get("lastState") or {}):
            stopped += 1  # waiting to restart after a run: counts as stopped, not pending
        else:
            waiting += 1
    if waiting > 0:
        return "Pending"
    if running > 0:
        return "Running"
    if stopped > 0:
        if restart_policy == "Always":
            return "Running"  # every container is being restarted
        if stopped == succeeded:
            return "Succeeded"
        return "Running" if restart_policy == "OnFailure" else "Failed"
    return "Pending"


def qos_class(pod: dict[str, Any]) -> str:
    """Guaranteed (every container limits = requests for cpu and memory), BestEffort (nothing set), else Burstable."""
    containers = (pod.get("spec") or {}).get("containers") or []
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        if limits or requests:
            any_set = True
        for r in ("cpu", "memory"):
            lim, req = limits.get(r), requests.get(r, limits.get(r))
            try:
                if lim is None or req is None or parse_quantity(lim) != parse_quantity(req):
                    guaranteed = False
            except ValueError:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _condition(ctype: str, ok: bool, now: str, old: dict[str, dict[str, Any]], reason: str = "",
               message: str = "") -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = old.get(ctype)
    # The transition time moves only when the status flips, as in Kubernetes.
    when = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now
    cond: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": when}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def compute_pod_status(pod: dict[str, Any], *, sandbox: rt.SandboxStatus | None, views: list[ContainerView],
                       host_ip: str, now: str | None = None) -> dict[str, Any]:
    """The status this kubelet owns (``OWNED_KEYS``), from the runtime's view of the pod.

    Timestamps that did not change keep their old values (``startTime``, ``lastTransitionTime``), so
    an unchanged pod gives an equal status and no write.
    """
    now = now or rfc3339()
    spec = pod.get("spec") or {}
    old = pod.get("status") or {}
    statuses = [container_status(v) for v in views]
    phase = pod_phase(str(spec.get("restartPolicy") or "Always"), statuses)
    old_conditions = {c.get("type", ""): c for c in old.get("conditions") or [] if isinstance(c, dict)}
    unready = [s["name"] for s in statuses if not s["ready"]]
    all_ready = not unready and bool(statuses)
    reason, message = "", ""
    if phase in ("Succeeded", "Failed"):
        all_ready, reason = False, "PodCompleted"
    elif unready:
        reason, message = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
    conditions = [
        _condition("PodScheduled", True, now, old_conditions),
        _condition("Initialized", True, now, old_conditions),
        _condition("ContainersReady", all_ready, now, old_conditions, reason, message),
        _condition("Ready", all_ready, now, old_conditions, reason, message),
    ]
    conditions += [c for t, c in old_conditions.items() if t not in POD_CONDITIONS]
    if spec.get("hostNetwork"):
        pod_ip = host_ip
    elif sandbox is not None and sandbox.ip:
        pod_ip = sandbox.ip
    else:
        pod_ip = str(old.get("podIP") or "")  # a stopped sandbox has no IP any more; the pod keeps the last one
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}] if host_ip else [],
        "startTime": old.get("startTime") or now,
        "containerStatuses": statuses,
        "qosClass": qos_class(pod),
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status


def owned(status: dict[str, Any] | None) -> dict[str, Any]:
    """The part of a status this kubelet writes."""
    status = status or {}
    return {k: status[k] for k in OWNED_KEYS if k in status}


class StatusManager:
    """Writes pod status through ``/status`` when it changed; remembers what it wrote per pod uid."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._last: dict[str, dict[str, Any]] = {}
        # uid → (resourceVersion the write was based on, resourceVersion it produced): lets the next
        # write go out with the fresh resourceVersion while the informer's copy still lags behind.
        self._rv: dict[str, tuple[str, str]] = {}
        self.writes = 0

    def forget(self, uid: str) -> None:
        self._last.pop(uid, None)
        self._rv.pop(uid, None)

    def last(self, uid: str) -> dict[str, Any] | None:
        return self._last.get(uid)

    async def set_status(self, pod: dict[str, Any], status: dict[str, Any]) -> bool:
        """Write ``status`` (the owned keys) for ``pod`` unless nothing changed; True if it wrote.

        A pod that is gone, or whose name now belongs to another uid, is left alone (False).
        Other API errors propagate (the pod worker retries).
        """
        meta = pod["metadata"]
        uid = meta["uid"]
        wanted = owned(status)
        last = self._last.get(uid)
        if last is None and owned(pod.get("status")) == wanted:
            self._last[uid] = wanted
            return False
        if last == wanted:
            return False
        body = copy.deepcopy(pod)
        body["status"] = {**(pod.get("status") or {}), **wanted}
        base_rv = str(meta.get("resourceVersion") or "")
        based_on, produced = self._rv.get(uid, ("", ""))
        if based_on and base_rv == based_on and produced:
            body["metadata"]["resourceVersion"] = produced
        for _attempt in range(3):
            try:
                result = await self.client.replace_status(body)
                break
            except Conflict:
                try:
                    fresh = await self.client.get(PODS, meta["name"], meta.get("namespace"))
                except NotFound:
                    return False
                if (fresh.get("metadata") or {}).get("uid") != uid:
                    return False  # the name belongs to a new pod now: not ours to write
                body = copy.deepcopy(fresh)
                body["status"] = {**(fresh.get("status") or {}), **wanted}
            except NotFound:
                return False
        else:
            raise Conflict(f"pod {meta.get('namespace')}/{meta['name']}: status write kept conflicting")
        self._last[uid] = wanted
        self._rv[uid] = (base_rv, str((result.get("metadata") or {}).get("resourceVersion") or ""))
        self.writes += 1
        return True


@dataclass(frozen=True)
class RecordedEvent:
    pod_uid: str
    type: str  # Normal | Warning
    reason: str
    message: str
    field_path: str


class EventRecorder:
    """Events about pods, written in the background so a pod's sync never waits on them.

    ``event(...)`` never blocks and never raises. Repeats of the same (pod, field, reason, message)
    PATCH the first Event's ``count`` and ``lastTimestamp`` (Kubernetes' aggregation), so a crash
    loop gives one Event with a growing count. ``recorded`` keeps every call (tests read it).
    """

    MAX_QUEUE = 1000
    MAX_SEEN = 4096

    def __init__(self, client: Any, node_name: str, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.node_name = node_name
        self.clock = clock
        self.recorded: list[RecordedEvent] = []
        self._queue: asyncio.Queue[tuple[dict[str, Any], RecordedEvent]] = asyncio.Queue(self.MAX_QUEUE)
        self._seen: collections.OrderedDict[tuple[str, str, str, str], tuple[str, str, int]] = \
            collections.OrderedDict()
        self._serial = 0

    def event(self, pod: dict[str, Any], type_: str, reason: str, message: str, *, container: str = "") -> None:
        meta = pod.get("metadata") or {}
        field_path = f"spec.containers{{{container}}}" if container else ""
        ev = RecordedEvent(str(meta.get("uid", "")), type_, reason, message, field_path)
        self.recorded.append(ev)
        if len(self.recorded) > 10 * self.MAX_QUEUE:
            del self.recorded[: self.MAX_QUEUE]
        try:
            self._queue.put_nowait((pod, ev))
        except asyncio.QueueFull:
            log.warning("event queue full; dropping event %s %s for pod %s", reason, message, meta.get("name"))

    def reasons(self, uid: str | None = None) -> list[str]:
        return [e.reason for e in self.recorded if uid is None or e.pod_uid == uid]

    async def run(self) -> None:
        """Write queued events until cancelled."""
        while True:
            pod, ev = await self._queue.get()
            await self._write(pod, ev)

    async def flush(self) -> None:
        """Write every queued event now (tests; shutdown)."""
        while not self._queue.empty():
            pod, ev = self._queue.get_nowait()
            await self._write(pod, ev)

    async def _write(self, pod: dict[str, Any], ev: RecordedEvent) -> None:
        meta = pod.get("metadata") or {}
        ns = str(meta.get("namespace") or "default")
        now = rfc3339(datetime.fromtimestamp(self.clock(), UTC))
        key = (ev.pod_uid, ev.field_path, ev.reason, ev.message)
        try:
            seen = self._seen.get(key)
            if seen is not None:
                name, first, count = seen
                try:
                    await self.client.patch(EVENTS, name, {"count": count + 1, "lastTimestamp": now}, namespace=ns)
                    self._seen[key] = (name, first, count + 1)
                    self._seen.move_to_end(key)
                    return
                except NotFound:
                    pass  # expired (events have a TTL): write a new one
            self._serial += 1
            name = f"{meta.get('name', 'pod')}.{time.time_ns():x}{self._serial % 1000:03d}"
            involved: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name", ""),
                                        "namespace": ns, "uid": ev.pod_uid}
            if meta.get("resourceVersion"):
                involved["resourceVersion"] = str(meta["resourceVersion"])
            if ev.field_path:
                involved["fieldPath"] = ev.field_path
            body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
                    "involvedObject": involved, "reason": ev.reason, "message": ev.message, "type": ev.type,
                    "count": 1, "firstTimestamp": now, "lastTimestamp": now,
                    "source": {"component": "kubelet", "host": self.node_name},
                    "reportingComponent": "kubelet", "reportingInstance": self.node_name}
            created = await self.client.create(body, namespace=ns)
            # The apiserver folds a repeat into an existing Event and answers with that one: follow its name.
            name = str((created.get("metadata") or {}).get("name") or name)
            self._seen[key] = (name, now, int(created.get("count") or 1))
            while len(self._seen) > self.MAX_SEEN:
                self._seen.popitem(last=False)
        except (ApiError, ConnectionFailed) as exc:
            # Events are best effort: losing one must never stop a pod from starting.
            log.warning("cannot write event %s for pod %s/%s: %s", ev.reason, ns, meta.get("name"), exc)

