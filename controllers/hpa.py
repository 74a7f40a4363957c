"""The HorizontalPodAutoscaler controller: metrics → desired replicas → ``PATCH TARGET/scale``, status.

::

    horizontalpodautoscalers ─ add / spec change ──▶ key ─┐
    every --horizontal-pod-autoscaler-sync-period ──▶ key ─┤ (a failed sync also waits one period)
                                                           ▼
    sync(ns/name)
     ├─ GET TARGET/scale              replicas, status.selector     (fails → AbleToScale=False FailedGetScale)
     ├─ replicas 0                    → ScalingActive=False ScalingDisabled, no change
     ├─ outside [min, max]            → clamp, no metrics needed
     └─ each metric (Resource cpu/memory):
          pods (pod informer, the selector) + PodMetricsList (metrics.k8s.io) + the pods' requests
          group_pods: ignored (deleting/failed), unready (Pending; cpu: not yet ready or still
          warming up), missing (no metrics), ready
          ratio = usage / target; |1 - ratio| <= tolerance → keep; missing/unready pods are
          assumed at 0 % (scale up) or 100 % (scale down) and the result re-checked, so they can
          only ever damp a change (Kubernetes' replica calculator)
        desired = max over metrics (ScalingActive=True ValidMetricFound, or False with the reason)
        normalize: behavior absent → the legacy rules (downscale stabilization window, up to
                   max(2 x current, 4) per sync); present → stabilization windows (up: lowest
                   recent recommendation, down: highest), then the policies' rate limits over
                   the scale events of each policy's period, selectPolicy Max/Min/Disabled;
                   clamp to [min, max]  (AbleToScale reason, ScalingLimited true/false)
     ├─ changed → PATCH TARGET/scale spec.replicas, Event SuccessfulRescale, lastScaleTime
     └─ status (currentReplicas, desiredReplicas, currentMetrics, conditions) via /status when changed

The decision parts are pure functions of their inputs and a time (``group_pods``,
``replicas_for_utilization``, ``replicas_for_average_value``, ``stabilize``, ``scale_up_limit``,
``scale_down_limit``, ``limit_with_behavior``, ``limit_legacy``); the controller keeps, per HPA, the
recent recommendations and scale events they read (in memory, as Kubernetes does).
"""

from __future__ import annotations

import copy
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from controllers.base import Controller, ControllerClient, InformerFactory, Obj, is_terminating
from minik8s.api import registry
from minik8s.api.defaults import HPA_DEFAULT_CPU_UTILIZATION, HPA_SCALE_DOWN, HPA_SCALE_UP
from minik8s.api.quantity import parse_quantity
from minik8s.api.selectors import parse_label_selector
from minik8s.client.informer import Informer, object_key
from minik8s.client.workqueue import ItemExponentialRateLimiter
from minik8s.errors import ApiError, BadRequest, Conflict, ConnectionFailed
from minik8s.timeutil import parse_rfc3339, rfc3339

log = logging.getLogger("minik8s.controllers.hpa")

HPAS = registry.lookup("horizontalpodautoscalers")
COMPONENT = "horizontal-pod-autoscaler"
METRICS_PATH = "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
NS_INDEX = "namespace"

# Kubernetes' defaults of the controller-manager flags.
DEFAULT_SYNC_PERIOD = 15.0
DEFAULT_TOLERANCE = 0.1
DEFAULT_DOWNSCALE_STABILIZATION = 300.0
DEFAULT_CPU_INITIALIZATION_PERIOD = 300.0
DEFAULT_INITIAL_READINESS_DELAY = 30.0
# The legacy (no ``behavior``) scale-up limit: at most max(2 x current, 4) replicas per sync.
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0
# autoscaling/v2 defaults when a metric list is empty (objects stored before the apiserver defaulted it).
DEFAULT_CPU_UTILIZATION = HPA_DEFAULT_CPU_UTILIZATION

DEFAULT_SCALE_UP = HPA_SCALE_UP
# No stabilizationWindowSeconds: the controller's --horizontal-pod-autoscaler-downscale-stabilization.
DEFAULT_SCALE_DOWN = HPA_SCALE_DOWN


class MetricsError(Exception):
    """The replica count of one metric cannot be computed (its message ends up in a condition)."""


class ScaleError(Exception):
    """The target's scale cannot be read (the sync is retried one period later)."""


# --- metrics ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodMetric:
    """One pod's usage of one resource: ``value`` in milli-units (millicores, millibytes), as Kubernetes."""

    value: int
    timestamp: float  # seconds since the epoch
    window: float  # seconds


class MetricsSource(Protocol):
    """Where pod usage comes from: the apiserver's metrics.k8s.io (a fake in unit tests)."""

    async def pod_metrics(self, resource: str, namespace: str, selector: str) -> dict[str, PodMetric]:
        """Usage of ``resource`` per pod name; pods without a value for every container are left out.

        Raises :class:`MetricsError` when the metrics cannot be read at all."""
        ...


class RequestClient(Protocol):
    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, body: Any = None,
                      content: bytes | None = None) -> Any: ...


class HPAClient(ControllerClient, RequestClient, Protocol):
    """``AsyncApiClient``: the controller's writes plus raw requests (``/scale``, metrics.k8s.io)."""


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: Any) -> float | None:
    """A Go duration (``15s``, ``1m0s``, ``500ms``) in seconds; None when it is not one."""
    if not isinstance(text, str) or not text:
        return None
    parts = _DURATION.findall(text)
    if "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def milli(value: Any) -> int:
    """A quantity in milli-units, rounded up (Kubernetes' ``MilliValue``)."""
    return math.ceil(parse_quantity(value) * 1000)


def parse_pod_metrics(body: Mapping[str, Any], resource: str) -> dict[str, PodMetric]:
    """A PodMetricsList → usage of ``resource`` per pod (a pod missing it in any container is left out)."""
    out: dict[str, PodMetric] = {}
    for item in body.get("items") or []:
        if not isinstance(item, Mapping):
            continue
        name = str((item.get("metadata") or {}).get("name") or "")
        containers = item.get("containers") or []
        if not name or not containers:
            continue
        total, complete = 0, True
        for c in containers:
            usage = (c or {}).get("usage") or {}
            if usage.get(resource) is None:
                complete = False
                break
            try:
                total += milli(usage[resource])
            except ValueError:
                complete = False
                break
        if not complete:
            continue
        stamp = parse_rfc3339(str(item.get("timestamp") or ""))
        window = parse_duration(item.get("window"))
        out[name] = PodMetric(total, stamp.timestamp() if stamp else 0.0, window if window is not None else 0.0)
    return out


class ApiMetricsSource:
    """``GET /apis/metrics.k8s.io/v1beta1/namespaces/NS/pods?labelSelector=…`` on the apiserver."""

    def __init__(self, client: RequestClient) -> None:
        self.client = client

    async def pod_metrics(self, resource: str, namespace: str, selector: str) -> dict[str, PodMetric]:
        try:
            body = await self.client.request("GET", METRICS_PATH.format(namespace=namespace),
                                             params={"labelSelector": selector} if selector else None)
        except (ApiError, ConnectionFailed, OSError) as exc:
            raise MetricsError(f"unable to get metrics for resource {resource}: unable to fetch metrics from "
                               f"resource metrics API: {exc}") from exc
        metrics = parse_pod_metrics(body if isinstance(body, Mapping) else {}, resource)
        if not metrics:
            raise MetricsError(f"unable to get metrics for resource {resource}: no metrics returned from "
                               "resource metrics API")
        return metrics


# --- the replica calculator (pure) --------------------------------------------------------------------


@dataclass
class PodGroups:
    ready: int = 0
    unready: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    ignored: set[str] = field(default_factory=set)


def _ts(text: Any) -> float | None:
    t = parse_rfc3339(str(text or ""))
    return t.timestamp() if t is not None else None


def _ready_condition(pod: Obj) -> Mapping[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            return c
    return None


def group_pods(pods: Iterable[Obj], metrics: Mapping[str, PodMetric], resource: str, *, now: float,
               cpu_initialization_period: float, initial_readiness_delay: float) -> PodGroups:
    """Sort the target's pods as Kubernetes does before averaging.

    Deleting or failed pods are ignored; Pending pods are unready; pods without metrics are missing.
    For cpu, a pod is also unready when it has no Ready condition or start time; within the cpu
    initialization period after its start, when it is not ready or its sample began before it became
    ready (warm-up cpu); after that, only when it is not ready and never became ready within the
    initial readiness delay of its start.
    """
    groups = PodGroups()
    for pod in pods:
        name = str((pod.get("metadata") or {}).get("name") or "")
        phase = (pod.get("status") or {}).get("phase")
        if is_terminating(pod) or phase == "Failed":
            groups.ignored.add(name)
            continue
        if phase == "Pending":
            groups.unready.add(name)
            continue
        metric = metrics.get(name)
        if metric is None:
            groups.missing.add(name)
            continue
        if resource == "cpu":
            cond = _ready_condition(pod)
            started = _ts((pod.get("status") or {}).get("startTime"))
            changed = _ts(cond.get("lastTransitionTime")) if cond is not None else None
            if cond is None or started is None:
                unready = True
            elif started + cpu_initialization_period > now:
                unready = cond.get("status") == "False" or changed is None or metric.timestamp < changed + metric.window
            else:
                unready = (cond.get("status") == "False" and changed is not None
                           and started + initial_readiness_delay > changed)
            if unready:
                groups.unready.add(name)
                continue
        groups.ready += 1
    return groups


def pod_requests(pods: Iterable[Obj], resource: str) -> dict[str, int]:
    """Each pod's request of ``resource`` (milli-units, summed over its containers).

    Raises :class:`MetricsError` when a container has no request for it (utilization is undefined)."""
    out: dict[str, int] = {}
    for pod in pods:
        name = str((pod.get("metadata") or {}).get("name") or "")
        total = 0
        for c in (pod.get("spec") or {}).get("containers") or []:
            req = ((c.get("resources") or {}).get("requests") or {}).get(resource)
            if req is None:
                raise MetricsError(f"missing request for {resource} in container {c.get('name')} of Pod {name}")
            try:
                total += milli(req)
            except ValueError as exc:
                raise MetricsError(f"invalid request for {resource} in container {c.get('name')} of Pod {name}") \
                    from exc
        out[name] = total
    return out


def utilization_ratio(metrics: Mapping[str, PodMetric], requests: Mapping[str, int],
                      target_utilization: int) -> tuple[float, int, int]:
    """(usage / target, utilization in % of the requests, average usage in milli-units) over the pods
    that have both a metric and a request."""
    used = requested = count = 0
    for name, m in metrics.items():
        if name not in requests:
            continue
        used += m.value
        requested += requests[name]
        count += 1
    if requested == 0:
        raise MetricsError("no metrics returned matched known pods")
    utilization = used * 100 // requested
    return utilization / target_utilization, utilization, used // count


def usage_ratio(metrics: Mapping[str, PodMetric], target_usage: int) -> tuple[float, int]:
    """(average usage / target, average usage in milli-units)."""
    if not metrics:
        raise MetricsError("no metrics returned matched known pods")
    average = sum(m.value for m in metrics.values()) // len(metrics)
    return average / target_usage, average


def _with(metrics: Mapping[str, PodMetric], names: Iterable[str], value: Callable[[str], int]) -> dict[str, PodMetric]:
    out = dict(metrics)
    for n in names:
        out[n] = PodMetric(value(n), 0.0, 0.0)
    return out


def replicas_for_utilization(current: int, target_utilization: int, pods: list[Obj],
                             metrics: Mapping[str, PodMetric], resource: str, *, tolerance: float, now: float,
                             cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD,
                             initial_readiness_delay: float = DEFAULT_INITIAL_READINESS_DELAY
                             ) -> tuple[int, int, int]:
    """(replicas, utilization %, average usage milli) for a ``Utilization`` target (Kubernetes' algorithm).

    Raises :class:`MetricsError` (no pods, no usable metrics, a container without a request)."""
    if not pods:
        raise MetricsError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, metrics, resource, now=now, cpu_initialization_period=cpu_initialization_period,
                        initial_readiness_delay=initial_readiness_delay)
    usable = {n: m for n, m in metrics.items() if n not in groups.ignored and n not in groups.unready}
    if not usable:
        raise MetricsError("did not receive metrics for targeted pods (pods might be unready)")
    requests = pod_requests(pods, resource)
    ratio, utilization, raw = utilization_ratio(usable, requests, target_utilization)
    up_with_unready = bool(groups.unready) and ratio > 1.0
    if not up_with_unready and not groups.missing:
        if abs(1.0 - ratio) <= tolerance:
            return current, utilization, raw
        return math.ceil(ratio * groups.ready), utilization, raw
    # Assume the pods we know nothing about sit at the edge that damps the change.
    if groups.missing:
        if ratio < 1.0:
            fallback = max(100, target_utilization)
            usable = _with(usable, groups.missing, lambda n: requests.get(n, 0) * fallback // 100)
        elif ratio > 1.0:
            usable = _with(usable, groups.missing, lambda n: 0)
    if up_with_unready:
        usable = _with(usable, groups.unready, lambda n: 0)
    new_ratio, _, _ = utilization_ratio(usable, requests, target_utilization)
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (new_ratio < 1.0 < ratio):
        return current, utilization, raw
    replicas = math.ceil(new_ratio * len(usable))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current, utilization, raw
    return replicas, utilization, raw


def replicas_for_average_value(current: int, target_milli: int, pods: list[Obj], metrics: Mapping[str, PodMetric],
                               resource: str, *, tolerance: float, now: float,
                               cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD,
                               initial_readiness_delay: float = DEFAULT_INITIAL_READINESS_DELAY) -> tuple[int, int]:
    """(replicas, average usage milli) for an ``AverageValue`` target (no requests needed)."""
    if not pods:
        raise MetricsError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, metrics, resource, now=now, cpu_initialization_period=cpu_initialization_period,
                        initial_readiness_delay=initial_readiness_delay)
    usable = {n: m for n, m in metrics.items() if n not in groups.ignored and n not in groups.unready}
    if not usable:
        raise MetricsError("did not receive metrics for targeted pods (pods might be unready)")
    ratio, usage = usage_ratio(usable, target_milli)
    up_with_unready = bool(groups.unready) and ratio > 1.0
    if not up_with_unready and not groups.missing:
        if abs(1.0 - ratio) <= tolerance:
            return current, usage
        return math.ceil(ratio * groups.ready), usage
    if groups.missing:
        if ratio < 1.0:
            usable = _with(usable, groups.missing, lambda n: target_milli)
        elif ratio > 1.0:
            usable = _with(usable, groups.missing, lambda n: 0)
    if up_with_unready:
        usable = _with(usable, groups.unready, lambda n: 0)
    new_ratio, _ = usage_ratio(usable, target_milli)
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (new_ratio < 1.0 < ratio):
        return current, usage
    replicas = math.ceil(new_ratio * len(usable))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current, usage
    return replicas, usage


# --- normalization: stabilization and rate limits (pure) -----------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class ScaleEvent:
    at: float
    change: int  # replicas added (scale-up list) or removed (scale-down list), > 0


@dataclass
class History:
    """What the controller remembers of one HPA between syncs (lost on restart, as in Kubernetes)."""

    recommendations: list[Recommendation] = field(default_factory=list)
    up_events: list[ScaleEvent] = field(default_factory=list)
    down_events: list[ScaleEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    replicas: int
    able_reason: str
    able_message: str
    limited: bool
    limited_reason: str
    limited_message: str


READY_FOR_NEW_SCALE = ("ReadyForNewScale", "recommended size matches current size")
SCALE_UP_STABILIZED = ("ScaleUpStabilized",
                       "recent recommendations were lower than current one, applying the lowest recent recommendation")
SCALE_DOWN_STABILIZED = ("ScaleDownStabilized", "recent recommendations were higher than current one, applying "
                         "the highest recent recommendation")
WITHIN_RANGE = ("DesiredWithinRange", "the desired count is within the acceptable range")
SCALE_UP_LIMIT = ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
SCALE_DOWN_LIMIT = ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
TOO_MANY = ("TooManyReplicas", "the desired replica count is more than the maximum replica count")
TOO_FEW = ("TooFewReplicas", "the desired replica count is less than the minimum replica count")


def effective_behavior(behavior: Mapping[str, Any] | None, downscale_stabilization: float) -> dict[str, Any] | None:
    """``spec.behavior`` with Kubernetes' defaults filled in (None stays None: the legacy rules apply)."""
    if behavior is None:
        return None
    out: dict[str, Any] = {}
    for key, default in (("scaleUp", DEFAULT_SCALE_UP), ("scaleDown", DEFAULT_SCALE_DOWN)):
        given = behavior.get(key) or {}
        rules = copy.deepcopy(default)
        for k in ("stabilizationWindowSeconds", "selectPolicy", "policies"):
            if given.get(k) is not None:
                rules[k] = copy.deepcopy(given[k])
        out[key] = rules
    if out["scaleDown"].get("stabilizationWindowSeconds") is None:
        out["scaleDown"]["stabilizationWindowSeconds"] = int(downscale_stabilization)
    return out


def stabilize(history: list[Recommendation], *, now: float, current: int, desired: int, up_window: float,
              down_window: float) -> tuple[int, str, str]:
    """The recommendation within the windows: no higher than the lowest recommendation of the last
    ``up_window`` seconds, no lower than the highest of the last ``down_window`` (current replicas
    when those bounds allow). Returns (replicas, AbleToScale reason, message if it differs)."""
    up, down = desired, desired
    for rec in history:
        if rec.at > now - up_window:
            up = min(up, rec.replicas)
        if rec.at > now - down_window:
            down = max(down, rec.replicas)
    replicas = min(max(current, up), down)
    reason, message = SCALE_UP_STABILIZED if desired >= current else SCALE_DOWN_STABILIZED
    return replicas, reason, message


def stabilize_legacy(history: list[Recommendation], *, now: float, desired: int, window: float) -> int:
    """Without ``behavior``: the highest recommendation of the last ``window`` seconds (downscale only)."""
    return max([desired] + [r.replicas for r in history if r.at > now - window])


def record_recommendation(history: list[Recommendation], *, now: float, desired: int, keep: float) -> None:
    """Remember ``desired``; recommendations older than ``keep`` seconds are dropped."""
    history[:] = [r for r in history if r.at > now - keep]
    history.append(Recommendation(now, desired))


def replicas_change_in_period(events: Iterable[ScaleEvent], period: float, now: float) -> int:
    return sum(e.change for e in events if e.at > now - period)


def _period_start(current: int, policy: Mapping[str, Any], up: list[ScaleEvent], down: list[ScaleEvent],
                  now: float) -> int:
    period = float(policy.get("periodSeconds") or 0)
    return current - replicas_change_in_period(up, period, now) + replicas_change_in_period(down, period, now)


def scale_up_limit(current: int, up: list[ScaleEvent], down: list[ScaleEvent], rules: Mapping[str, Any],
                   now: float) -> int:
    """The most replicas the scale-up policies allow now (measured from each period's start)."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    proposals = []
    for policy in rules.get("policies") or []:
        start = _period_start(current, policy, up, down, now)
        value = int(policy.get("value") or 0)
        if policy.get("type") == "Pods":
            proposals.append(start + value)
        elif policy.get("type") == "Percent":
            # Rounded up: a small percentage of few pods must still allow one more.
            proposals.append(math.ceil(start * (1 + value / 100)))
    if not proposals:
        return current
    return min(proposals) if select == "Min" else max(proposals)


def scale_down_limit(current: int, up: list[ScaleEvent], down: list[ScaleEvent], rules: Mapping[str, Any],
                     now: float) -> int:
    """The fewest replicas the scale-down policies allow now."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    proposals = []
    for policy in rules.get("policies") or []:
        start = _period_start(current, policy, up, down, now)
        value = int(policy.get("value") or 0)
        if policy.get("type") == "Pods":
            proposals.append(start - value)
        elif policy.get("type") == "Percent":
            proposals.append(int(start * (1 - value / 100)))
    if not proposals:
        return current
    # "Max" is the policy allowing the biggest change, i.e. the fewest replicas.
    return max(proposals) if select == "Min" else min(proposals)


def limit_with_behavior(*, current: int, desired: int, min_replicas: int, max_replicas: int,
                        history: History, behavior: Mapping[str, Any], now: float) -> tuple[int, str, str]:
    """Apply the behavior's rate limits and [min, max] to a stabilized recommendation."""
    if desired > current:
        limit = max(current, scale_up_limit(current, history.up_events, history.down_events,
                                            behavior["scaleUp"], now))
        if max_replicas > limit:
            allowed, why = limit, SCALE_UP_LIMIT
        else:
            allowed, why = max_replicas, TOO_MANY
        if desired > allowed:
            return allowed, *why
    elif desired < current:
        limit = min(current, scale_down_limit(current, history.up_events, history.down_events,
                                              behavior["scaleDown"], now))
        if min_replicas < limit:
            allowed, why = limit, SCALE_DOWN_LIMIT
        else:
            allowed, why = min_replicas, TOO_FEW
        if desired < allowed:
            return allowed, *why
    return desired, *WITHIN_RANGE


def limit_legacy(*, current: int, desired: int, min_replicas: int, max_replicas: int) -> tuple[int, str, str]:
    """The rules without ``behavior``: [min, max] and at most max(2 x current, 4) replicas at once."""
    up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > up_limit:
        allowed, why = up_limit, SCALE_UP_LIMIT
    else:
        allowed, why = max_replicas, TOO_MANY
    if desired < min_replicas:
        return min_replicas, *TOO_FEW
    if desired > allowed:
        return allowed, *why
    return desired, *WITHIN_RANGE


def normalize(history: History, *, now: float, current: int, desired: int, min_replicas: int, max_replicas: int,
              behavior: Mapping[str, Any] | None, downscale_stabilization: float) -> Decision:
    """Stabilize ``desired`` and limit it (recording it in ``history``): the replicas to set and the
    AbleToScale / ScalingLimited reasons. ``behavior`` is :func:`effective_behavior`'s result."""
    if behavior is None:
        replicas = stabilize_legacy(history.recommendations, now=now, desired=desired,
                                    window=downscale_stabilization)
        record_recommendation(history.recommendations, now=now, desired=desired, keep=downscale_stabilization)
        able = SCALE_DOWN_STABILIZED if replicas != desired else READY_FOR_NEW_SCALE
        final, lreason, lmessage = limit_legacy(current=current, desired=replicas, min_replicas=min_replicas,
                                                max_replicas=max_replicas)
    else:
        up_window = float(behavior["scaleUp"].get("stabilizationWindowSeconds") or 0)
        down_window = float(behavior["scaleDown"].get("stabilizationWindowSeconds") or 0)
        replicas, reason, message = stabilize(history.recommendations, now=now, current=current, desired=desired,
                                              up_window=up_window, down_window=down_window)
        record_recommendation(history.recommendations, now=now, desired=desired, keep=max(up_window, down_window))
        able = (reason, message) if replicas != desired else READY_FOR_NEW_SCALE
        final, lreason, lmessage = limit_with_behavior(current=current, desired=replicas, min_replicas=min_replicas,
                                                       max_replicas=max_replicas, history=history, behavior=behavior,
                                                       now=now)
    return Decision(final, able[0], able[1], final != replicas, lreason, lmessage)


def longest_period(rules: Mapping[str, Any]) -> float:
    return max((float(p.get("periodSeconds") or 0) for p in rules.get("policies") or []), default=0.0)


def record_scale_event(history: History, behavior: Mapping[str, Any] | None, *, now: float, old: int,
                       new: int) -> None:
    """Remember a rescale for the policies' periods (only with ``behavior``, as Kubernetes)."""
    if behavior is None or old == new:
        return
    if new > old:
        keep = longest_period(behavior["scaleUp"])
        history.up_events[:] = [e for e in history.up_events if e.at > now - keep]
        history.up_events.append(ScaleEvent(now, new - old))
    else:
        keep = longest_period(behavior["scaleDown"])
        history.down_events[:] = [e for e in history.down_events if e.at > now - keep]
        history.down_events.append(ScaleEvent(now, old - new))


# --- status helpers -------------------------------------------------------------------------------------


def set_condition(conditions: list[Obj], ctype: str, status: str, reason: str, message: str, now: str) -> None:
    """Set a condition in place; its lastTransitionTime changes only when its status does."""
    for c in conditions:
        if c.get("type") == ctype:
            if c.get("status") != status:
                c["lastTransitionTime"] = now
            c.update(status=status, reason=reason, message=message)
            return
    conditions.append({"type": ctype, "status": status, "lastTransitionTime": now, "reason": reason,
                       "message": message})


def format_milli(value: int) -> str:
    return str(value // 1000) if value % 1000 == 0 else f"{value}m"


def scale_target(ref: Mapping[str, Any]) -> registry.ResourceType:
    """The resource of ``scaleTargetRef`` (a kind with a ``scale`` subresource)."""
    kind, api_version = ref.get("kind"), ref.get("apiVersion")
    for rt in registry.RESOURCES:
        if rt.kind == kind and "scale" in rt.subresources and api_version in (None, "", rt.api_version):
            return rt
    raise ScaleError(f'unrecognized resource: no scalable kind "{kind}" in "{api_version or ""}"')


# --- the controller ---------------------------------------------------------------------------------------


class HorizontalController(Controller):
    """See the module docstring. ``clock`` gives seconds since the epoch (a fake in unit tests)."""

    name = "horizontalpodautoscaling"

    def __init__(self, client: HPAClient, factory: InformerFactory, *, metrics: MetricsSource | None = None,
                 sync_period: float = DEFAULT_SYNC_PERIOD, tolerance: float = DEFAULT_TOLERANCE,
                 downscale_stabilization: float = DEFAULT_DOWNSCALE_STABILIZATION,
                 cpu_initialization_period: float = DEFAULT_CPU_INITIALIZATION_PERIOD,
                 initial_readiness_delay: float = DEFAULT_INITIAL_READINESS_DELAY, workers: int = 5,
                 clock: Callable[[], float] = time.time) -> None:
        # A failed sync is retried one period later, as Kubernetes' fixed-interval HPA rate limiter does.
        super().__init__(client, factory, workers=workers,
                         rate_limiter=ItemExponentialRateLimiter(base=sync_period, cap=sync_period))
        self.client: HPAClient = client
        self.metrics: MetricsSource = metrics if metrics is not None else ApiMetricsSource(client)
        self.sync_period = sync_period
        self.tolerance = tolerance
        self.downscale_stabilization = downscale_stabilization
        self.cpu_initialization_period = cpu_initialization_period
        self.initial_readiness_delay = initial_readiness_delay
        self.clock = clock
        self.history: dict[str, History] = {}
        self.hpas = factory.informer("horizontalpodautoscalers")
        self.pods = factory.informer("pods")
        self.pods.indexer.add_index(NS_INDEX, lambda o: [str((o.get("metadata") or {}).get("namespace") or "")])
        self.hpas.add_handler(on_add=self.enqueue, on_update=self._hpa_updated, on_delete=self._hpa_deleted)

    def informers(self) -> list[Informer]:
        return [self.hpas, self.pods]

    def _hpa_updated(self, old: Obj, new: Obj) -> None:
        # Our own status writes come back as updates: only a spec change is worth an early sync; the
        # period brings the rest.
        if old.get("spec") != new.get("spec"):
            self.enqueue(new)

    def _hpa_deleted(self, hpa: Obj) -> None:
        self.history.pop(object_key(hpa), None)

    # --- sync ----------------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        hpa = self.hpas.indexer.get(key)
        if hpa is None:
            self.history.pop(key, None)
            return
        try:
            await self._reconcile(key, hpa)
        finally:
            if not self.queue.shutting_down:
                self.enqueue_after(key, self.sync_period)

    async def _reconcile(self, key: str, hpa: Obj) -> None:
        new = copy.deepcopy(hpa)
        spec = new.get("spec") or {}
        if not isinstance(new.get("status"), dict):
            new["status"] = {}
        status: Obj = new["status"]
        old_status = copy.deepcopy(hpa.get("status") or {})
        conditions: list[Obj] = [dict(c) for c in status.get("conditions") or [] if isinstance(c, dict)]
        now = self.clock()
        stamp = rfc3339(datetime.fromtimestamp(now, UTC))
        namespace = str((hpa.get("metadata") or {}).get("namespace") or "")
        ref = spec.get("scaleTargetRef") or {}
        min_replicas = int(spec.get("minReplicas") or 1)
        max_replicas = int(spec.get("maxReplicas") or min_replicas)

        def cond(ctype: str, st: str, reason: str, message: str) -> None:
            set_condition(conditions, ctype, st, reason, message, stamp)

        # The target's scale.
        try:
            rt = scale_target(ref)
            scale = await self.client.request("GET", rt.path(namespace, str(ref.get("name") or ""), "scale"))
        except (ApiError, ConnectionFailed, OSError, ScaleError) as exc:
            cond("AbleToScale", "False", "FailedGetScale",
                 f"the HPA controller was unable to get the target's current scale: {exc}")
            await self._event(hpa, "Warning", "FailedGetScale", str(exc))
            await self._write_status(hpa, new, old_status, conditions, status)
            raise ScaleError(f"failed to query scale subresource for {key}: {exc}") from exc
        cond("AbleToScale", "True", "SucceededGetScale",
             "the HPA controller was able to get the target's current scale")
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        selector = str((scale.get("status") or {}).get("selector") or "")

        metric_statuses: list[Obj] = []
        rescale_reason = ""
        desired = current
        if current == 0 and min_replicas != 0:
            cond("ScalingActive", "False", "ScalingDisabled",
                 "scaling is disabled since the replica count of the target is zero")
            desired = 0
        elif current > max_replicas:
            rescale_reason, desired = "Current number of replicas above Spec.MaxReplicas", max_replicas
        elif current < min_replicas:
            rescale_reason, desired = "Current number of replicas below Spec.MinReplicas", min_replicas
        else:
            proposal, metric_name, metric_statuses = await self._compute(hpa, namespace, selector, current, now,
                                                                         cond)
            if proposal is None:
                self._set_status(status, current, int(old_status.get("desiredReplicas") or 0), metric_statuses,
                                 conditions)
                await self._write_status(hpa, new, old_status, conditions, status)
                return
            behavior = effective_behavior(spec.get("behavior"), self.downscale_stabilization)
            decision = normalize(self.history.setdefault(key, History()), now=now, current=current,
                                 desired=proposal, min_replicas=min_replicas, max_replicas=max_replicas,
                                 behavior=behavior, downscale_stabilization=self.downscale_stabilization)
            cond("AbleToScale", "True", decision.able_reason, decision.able_message)
            cond("ScalingLimited", "True" if decision.limited else "False", decision.limited_reason,
                 decision.limited_message)
            desired = decision.replicas
            if desired > current:
                rescale_reason = f"{metric_name} above target"
            elif desired < current:
                rescale_reason = "All metrics below target"

        rescaled = desired != current and rescale_reason != ""
        if rescaled:
            try:
                await self.client.patch(rt, str(ref.get("name")), {"spec": {"replicas": desired}},
                                        namespace=namespace, subresource="scale")
            except (ApiError, ConnectionFailed, OSError) as exc:
                await self._event(hpa, "Warning", "FailedRescale",
                                  f"New size: {desired}; reason: {rescale_reason}; error: {exc}")
                cond("AbleToScale", "False", "FailedUpdateScale",
                     f"the HPA controller was unable to update the target scale: {exc}")
                self._set_status(status, current, int(old_status.get("desiredReplicas") or 0), metric_statuses,
                                 conditions)
                await self._write_status(hpa, new, old_status, conditions, status)
                raise
            cond("AbleToScale", "True", "SucceededRescale",
                 f"the HPA controller was able to update the target scale to {desired}")
            await self._event(hpa, "Normal", "SuccessfulRescale", f"New size: {desired}; reason: {rescale_reason}")
            record_scale_event(self.history.setdefault(key, History()),
                               effective_behavior(spec.get("behavior"), self.downscale_stabilization),
                               now=now, old=current, new=desired)
            log.info("hpa %s: rescaled %s %s/%s from %d to %d: %s", key, ref.get("kind"), namespace,
                     ref.get("name"), current, desired, rescale_reason)
            status["lastScaleTime"] = stamp
        else:
            desired = current
        self._set_status(status, current, desired, metric_statuses, conditions)
        await self._write_status(hpa, new, old_status, conditions, status)

    async def _compute(self, hpa: Obj, namespace: str, selector_text: str, current: int, now: float,
                       cond: Callable[[str, str, str, str], None]) -> tuple[int | None, str, list[Obj]]:
        """The highest proposal over the metrics, its metric's name and the metric statuses; the proposal
        is None (with ScalingActive=False and events) when it may not be acted on: every metric failed,
        or some failed and the others would scale down."""
        spec = hpa.get("spec") or {}
        metric_specs = spec.get("metrics") or [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}]
        if not selector_text:
            await self._event(hpa, "Warning", "SelectorRequired", "selector is required")
            cond("ScalingActive", "False", "InvalidSelector", "the HPA target's scale is missing a selector")
            return None, "", []
        try:
            selector = parse_label_selector(selector_text)
        except BadRequest as exc:
            await self._event(hpa, "Warning", "InvalidSelector", f"couldn't convert selector into a corresponding "
                                                                 f"internal selector object: {exc}")
            cond("ScalingActive", "False", "InvalidSelector", f"the HPA target's scale has an invalid selector: {exc}")
            return None, "", []
        pods = [p for p in self.pods.indexer.by_index(NS_INDEX, namespace)
                if selector.matches((p.get("metadata") or {}).get("labels") or {})]
        best, best_name = 0, ""
        statuses: list[Obj] = []
        first_error: tuple[str, str, str] | None = None
        invalid = 0
        for metric in metric_specs:
            try:
                proposal, name, mstatus = await self._one_metric(metric, namespace, selector_text, pods, current, now)
            except MetricsError as exc:
                reason = "InvalidMetricSourceType" if str(exc).startswith("unsupported") else "FailedGetResourceMetric"
                if reason == "FailedGetResourceMetric":
                    await self._event(hpa, "Warning", reason, str(exc))
                if first_error is None:
                    first_error = (reason, f"the HPA was unable to compute the replica count: {exc}", str(exc))
                invalid += 1
                continue
            statuses.append(mstatus)
            if best == 0 or proposal > best:
                best, best_name = proposal, name
        if first_error is not None and (invalid >= len(metric_specs) or best < current):
            cond("ScalingActive", "False", first_error[0], first_error[1])
            await self._event(hpa, "Warning", "FailedComputeMetricsReplicas",
                              f"invalid metrics ({invalid} invalid out of {len(metric_specs)}), first error is: "
                              f"{first_error[2]}")
            return None, "", statuses
        cond("ScalingActive", "True", "ValidMetricFound",
             f"the HPA was able to successfully calculate a replica count from {best_name}")
        return best, best_name, statuses

    async def _one_metric(self, metric: Mapping[str, Any], namespace: str, selector: str, pods: list[Obj],
                          current: int, now: float) -> tuple[int, str, Obj]:
        if metric.get("type") != "Resource":
            raise MetricsError(f"unsupported metric source type {metric.get('type')!r} (only Resource)")
        source = metric.get("resource") or {}
        resource = str(source.get("name") or "")
        target = source.get("target") or {}
        timing = {"cpu_initialization_period": self.cpu_initialization_period,
                  "initial_readiness_delay": self.initial_readiness_delay}
        if target.get("type") == "Utilization" and target.get("averageUtilization"):
            try:
                metrics = await self.metrics.pod_metrics(resource, namespace, selector)
                replicas, utilization, raw = replicas_for_utilization(
                    current, int(target["averageUtilization"]), pods, metrics, resource, tolerance=self.tolerance,
                    now=now, **timing)
            except MetricsError as exc:
                raise MetricsError(f"failed to get {resource} utilization: {exc}") from exc
            return replicas, f"{resource} resource utilization (percentage of request)", {
                "type": "Resource", "resource": {"name": resource, "current": {
                    "averageUtilization": utilization, "averageValue": format_milli(raw)}}}
        if target.get("type") == "AverageValue" and target.get("averageValue") is not None:
            try:
                metrics = await self.metrics.pod_metrics(resource, namespace, selector)
                replicas, usage = replicas_for_average_value(
                    current, milli(target["averageValue"]), pods, metrics, resource, tolerance=self.tolerance,
                    now=now, **timing)
            except (MetricsError, ValueError) as exc:
                raise MetricsError(f"failed to get {resource} usage: {exc}") from exc
            return replicas, f"{resource} resource", {
                "type": "Resource", "resource": {"name": resource, "current": {"averageValue": format_milli(usage)}}}
        raise MetricsError(f"invalid resource metric source: neither a utilization target nor a value target "
                           f"set for {resource}")

    @staticmethod
    def _set_status(status: Obj, current: int, desired: int, metrics: list[Obj], conditions: list[Obj]) -> None:
        status["currentReplicas"] = current
        status["desiredReplicas"] = desired
        if metrics:
            status["currentMetrics"] = metrics
        else:
            status.pop("currentMetrics", None)
        status["conditions"] = conditions

    async def _write_status(self, hpa: Obj, new: Obj, old_status: Obj, conditions: list[Obj], status: Obj) -> None:
        status["conditions"] = conditions
        gen = (hpa.get("metadata") or {}).get("generation")
        if gen is not None:
            status["observedGeneration"] = gen
        if status == old_status:
            return
        new["status"] = status
        try:
            await self.client.replace_status(new)
        except Conflict:
            # Someone wrote meanwhile (the spec, a status from an older run): ours is the newest status.
            latest = await self.client.get(HPAS, str(new["metadata"]["name"]), str(new["metadata"]["namespace"]))
            latest["status"] = status
            await self.client.replace_status(latest)

    async def _event(self, hpa: Obj, type_: str, reason: str, message: str) -> None:
        """Record an Event about the HPA (best effort: a lost Event must not fail the sync)."""
        meta = hpa.get("metadata") or {}
        ns = str(meta.get("namespace") or "default")
        stamp = rfc3339()
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": ns},
              "involvedObject": {"apiVersion": HPAS.api_version, "kind": HPAS.kind, "name": meta.get("name"),
                                 "namespace": ns, "uid": meta.get("uid")},
              "reason": reason, "message": message, "type": type_, "count": 1,
              "firstTimestamp": stamp, "lastTimestamp": stamp,
              "source": {"component": COMPONENT}, "reportingComponent": COMPONENT}
        try:
            await self.client.create(ev, namespace=ns)
        except (ApiError, ConnectionFailed, OSError) as exc:
            log.warning("cannot record event %s for hpa %s/%s: %s", reason, ns, meta.get("name"), exc)
