"""Unit tests of the HorizontalPodAutoscaler controller: the pure decision functions with a fake clock,
then ``sync`` once over preloaded caches with a recording client and a fake metrics source."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controllers.base import InformerFactory
from controllers.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    History,
    HorizontalController,
    MetricsError,
    PodMetric,
    Recommendation,
    ScaleEvent,
    effective_behavior,
    group_pods,
    limit_legacy,
    limit_with_behavior,
    normalize,
    parse_duration,
    parse_pod_metrics,
    record_scale_event,
    replicas_for_average_value,
    replicas_for_utilization,
    scale_down_limit,
    scale_up_limit,
    stabilize,
)
from controllers.testing import RecordingClient, feed
from minik8s.api.defaults import apply_defaults
from minik8s.api.registry import lookup
from minik8s.errors import NotFound
from minik8s.timeutil import rfc3339

pytestmark = pytest.mark.timeout(30)
Obj = dict[str, Any]

T0 = 1_700_000_000.0  # the fake clock's start (seconds since the epoch)
LONG_AGO = T0 - 3600


def at(t: float) -> str:
    from datetime import UTC, datetime
    return rfc3339(datetime.fromtimestamp(t, UTC))


def pod(name: str, *, cpu: str | None = "100m", phase: str = "Running", ready: bool = True,
        started: float = LONG_AGO, ready_since: float | None = None, deleting: bool = False,
        labels: dict[str, str] | None = None) -> Obj:
    resources: Obj = {"requests": {"cpu": cpu, "memory": "64Mi"}} if cpu else {}
    meta: Obj = {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels or {"app": "web"},
                 "resourceVersion": "1"}
    if deleting:
        meta["deletionTimestamp"] = at(T0)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
            "status": {"phase": phase, "startTime": at(started),
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "lastTransitionTime": at(ready_since if ready_since is not None
                                                                else started + 2)}]}}


def usage(value_milli: int, t: float = T0, window: float = 15.0) -> PodMetric:
    return PodMetric(value_milli, t, window)


def util(current: int, pods: list[Obj], metrics: dict[str, PodMetric], *, target: int = 50,
         tolerance: float = 0.1, now: float = T0) -> tuple[int, int, int]:
    return replicas_for_utilization(current, target, pods, metrics, "cpu", tolerance=tolerance, now=now)


# --- the replica calculator ------------------------------------------------------------------------------


def test_within_tolerance_keeps_the_count():
    pods = [pod("a"), pod("b")]
    # 54 % of requests against a 50 % target: ratio 1.08, inside the 10 % tolerance.
    assert util(2, pods, {"a": usage(54), "b": usage(54)}) == (2, 54, 54)
    # 56 % → ratio 1.12: out of tolerance, ceil(1.12 x 2) = 3.
    assert util(2, pods, {"a": usage(56), "b": usage(56)}) == (3, 56, 56)
    # A wider tolerance swallows it again.
    assert util(2, pods, {"a": usage(56), "b": usage(56)}, tolerance=0.2)[0] == 2


def test_scale_up_and_down_follow_the_ratio():
    pods = [pod(n) for n in "abc"]
    assert util(3, pods, {n: usage(200) for n in "abc"})[0] == 12  # 200 % / 50 % x 3
    assert util(3, pods, {n: usage(10) for n in "abc"})[0] == 1  # ceil(0.2 x 3)


def test_missing_metrics_damp_a_scale_up_and_a_scale_down():
    pods = [pod("a"), pod("b"), pod("c"), pod("d")]
    # Two pods report 100 % (ratio 2); the two missing ones count as 0 %: average 50 % → exactly the
    # target, so no change at all.
    assert util(4, pods, {"a": usage(100), "b": usage(100)})[0] == 4
    # Two report 10 % (ratio 0.2); the missing ones count as 100 % of their requests: (10+10+100+100)/4
    # = 55 % → ratio 1.1 crosses 1.0 against the first ratio, so no change.
    assert util(4, pods, {"a": usage(10), "b": usage(10)})[0] == 4
    # With a 100 % target, the missing ones at 100 % leave a smaller scale-down: (0+0+100+100)/4 = 50 %.
    assert util(4, pods, {"a": usage(0), "b": usage(0)}, target=100)[0] == 2


def test_unready_pods_count_as_zero_on_scale_up_and_are_left_out_of_scale_down():
    pods = [pod("a"), pod("b"), pod("c", phase="Pending")]
    # Ready pods at 150 % (ratio 3); the pending one counts as 0: (150+150+0)/3 = 100 % → ratio 2, 3 pods → 6.
    assert util(3, pods, {"a": usage(150), "b": usage(150)})[0] == 6
    # Scale-down: the unready pod is left out (ratio 0.4 over 2 ready pods → 1).
    assert util(3, pods, {"a": usage(20), "b": usage(20)})[0] == 1


def test_cpu_of_pods_warming_up_is_not_trusted():
    # Started 10 s ago (inside the 300 s initialization period), ready 3 s ago: a sample whose window
    # began before readiness still holds start-up cpu → the pod is unready.
    warm = pod("w", started=T0 - 10, ready_since=T0 - 3)
    groups = group_pods([warm, pod("a")], {"w": usage(500, T0, 15), "a": usage(50)}, "cpu", now=T0,
                        cpu_initialization_period=300, initial_readiness_delay=30)
    assert groups.unready == {"w"} and groups.ready == 1
    # A sample taken a whole window after it became ready is trusted.
    groups = group_pods([warm], {"w": usage(500, T0 + 20, 15)}, "cpu", now=T0 + 20,
                        cpu_initialization_period=300, initial_readiness_delay=30)
    assert groups.ready == 1 and not groups.unready
    # Memory ignores readiness.
    groups = group_pods([warm], {"w": usage(500, T0, 15)}, "memory", now=T0, cpu_initialization_period=300,
                        initial_readiness_delay=30)
    assert groups.ready == 1
    # Long after start: not ready now, and it never became ready within the initial delay → unready;
    # a pod that was ready once and then failed its probe counts as ready (its cpu is real).
    never = pod("n", started=LONG_AGO, ready=False, ready_since=LONG_AGO + 5)
    lost = pod("l", started=LONG_AGO, ready=False, ready_since=LONG_AGO + 600)
    groups = group_pods([never, lost], {"n": usage(1), "l": usage(1)}, "cpu", now=T0,
                        cpu_initialization_period=300, initial_readiness_delay=30)
    assert groups.unready == {"n"} and groups.ready == 1


def test_deleting_and_failed_pods_are_ignored_and_errors_are_explained():
    pods = [pod("a"), pod("gone", deleting=True), pod("dead", phase="Failed")]
    assert util(1, pods, {"a": usage(100), "gone": usage(900), "dead": usage(900)})[0] == 2
    with pytest.raises(MetricsError, match="no pods returned by selector"):
        util(1, [], {})
    with pytest.raises(MetricsError, match="did not receive metrics"):
        util(1, [pod("p", phase="Pending")], {"p": usage(10)})
    with pytest.raises(MetricsError, match="missing request for cpu in container c of Pod a"):
        util(1, [pod("a", cpu=None)], {"a": usage(10)})


def test_average_value_needs_no_requests():
    pods = [pod("a", cpu=None), pod("b", cpu=None)]
    metrics = {"a": usage(300), "b": usage(100)}
    assert replicas_for_average_value(2, 100, pods, metrics, "cpu", tolerance=0.1, now=T0) == (4, 200)
    assert replicas_for_average_value(2, 200, pods, metrics, "cpu", tolerance=0.1, now=T0) == (2, 200)


def test_pod_metrics_list_is_parsed_as_the_metrics_api_answers():
    body = {"kind": "PodMetricsList", "items": [
        {"metadata": {"name": "a", "namespace": "default"}, "timestamp": at(T0), "window": "15s",
         "containers": [{"name": "c", "usage": {"cpu": "123456789n", "memory": "5120Ki"}},
                        {"name": "d", "usage": {"cpu": "250m", "memory": "1Mi"}}]},
        {"metadata": {"name": "b", "namespace": "default"}, "timestamp": at(T0), "window": "1s",
         "containers": [{"name": "c", "usage": {"memory": "1Mi"}}]}]}
    cpu = parse_pod_metrics(body, "cpu")
    assert cpu == {"a": PodMetric(124 + 250, T0, 15.0)}  # b lacks cpu in a container: left out
    assert parse_pod_metrics(body, "memory")["b"].value == 1024 * 1024 * 1000
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5 and parse_duration("x") is None


# --- stabilization and policies ----------------------------------------------------------------------------


def test_scale_down_is_stabilized_by_the_highest_recent_recommendation():
    recs = [Recommendation(T0 - 100, 5), Recommendation(T0 - 50, 4), Recommendation(T0 - 10, 3)]
    # 300 s window: every recommendation counts; the highest (5) holds the current 5 replicas.
    assert stabilize(recs, now=T0, current=5, desired=2, up_window=0, down_window=300)[:2] == (5, "ScaleDownStabilized")
    # 60 s window: only 4 and 3 remain.
    assert stabilize(recs, now=T0, current=5, desired=2, up_window=0, down_window=60)[0] == 4
    # No window: straight to the recommendation.
    assert stabilize(recs, now=T0, current=5, desired=2, up_window=0, down_window=0)[0] == 2


def test_scale_up_stabilization_takes_the_lowest_recent_recommendation():
    recs = [Recommendation(T0 - 20, 3), Recommendation(T0 - 5, 6)]
    replicas, reason, _ = stabilize(recs, now=T0, current=2, desired=8, up_window=30, down_window=300)
    assert (replicas, reason) == (3, "ScaleUpStabilized")


def test_normalize_over_a_fake_clock_holds_a_scale_down_for_the_window():
    behavior = effective_behavior({}, downscale_stabilization=300)
    assert behavior is not None and behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    history = History()
    first = normalize(history, now=T0, current=4, desired=4, min_replicas=1, max_replicas=10, behavior=behavior,
                      downscale_stabilization=300)
    assert first.replicas == 4 and first.able_reason == "ReadyForNewScale"
    # The load drops: for 300 s the recommendation of 4 holds the count.
    for t in (15, 150, 299):
        d = normalize(history, now=T0 + t, current=4, desired=1, min_replicas=1, max_replicas=10, behavior=behavior,
                      downscale_stabilization=300)
        assert (d.replicas, d.able_reason) == (4, "ScaleDownStabilized"), t
    d = normalize(history, now=T0 + 301, current=4, desired=1, min_replicas=1, max_replicas=10, behavior=behavior,
                  downscale_stabilization=300)
    assert d.replicas == 1 and not d.limited and d.limited_reason == "DesiredWithinRange"


def test_scale_up_policy_limits_per_period():
    rules = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
             "policies": [{"type": "Pods", "value": 1, "periodSeconds": 5}]}
    behavior = {"scaleUp": rules, "scaleDown": dict(DEFAULT_SCALE_DOWN, stabilizationWindowSeconds=0)}
    history, current, steps = History(), 1, []
    for t in range(0, 21):  # a sync every second, the metrics asking for 10
        d = normalize(history, now=T0 + t, current=current, desired=10, min_replicas=1, max_replicas=3,
                      behavior=behavior, downscale_stabilization=300)
        if d.replicas != current:
            record_scale_event(history, behavior, now=T0 + t, old=current, new=d.replicas)
            steps.append((t, d.replicas))
            current = d.replicas
        elif current < 3:
            assert (d.limited, d.limited_reason) == (True, "ScaleUpLimit"), t
    # One pod per 5 s: 2 at once, 3 only once the first event left the period; then the max holds.
    assert steps == [(0, 2), (5, 3)]
    d = normalize(history, now=T0 + 30, current=3, desired=10, min_replicas=1, max_replicas=3, behavior=behavior,
                  downscale_stabilization=300)
    assert (d.replicas, d.limited, d.limited_reason) == (3, True, "TooManyReplicas")


def test_default_scale_up_is_four_pods_or_double_per_15s():
    assert scale_up_limit(2, [], [], DEFAULT_SCALE_UP, T0) == 6  # max(2 + 4, 2 x 2)
    assert scale_up_limit(10, [], [], DEFAULT_SCALE_UP, T0) == 20
    # 4 pods were added 10 s ago: the period started at 6 → max(6 + 4, 12).
    assert scale_up_limit(10, [ScaleEvent(T0 - 10, 4)], [], DEFAULT_SCALE_UP, T0) == 12
    assert scale_up_limit(10, [ScaleEvent(T0 - 16, 4)], [], DEFAULT_SCALE_UP, T0) == 20


def test_select_policy_max_min_and_disabled():
    up = {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60},
                       {"type": "Percent", "value": 50, "periodSeconds": 60}]}
    assert scale_up_limit(10, [], [], {**up, "selectPolicy": "Max"}, T0) == 15
    assert scale_up_limit(10, [], [], {**up, "selectPolicy": "Min"}, T0) == 12
    assert scale_up_limit(10, [], [], {**up, "selectPolicy": "Disabled"}, T0) == 10
    down = {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60},
                         {"type": "Percent", "value": 50, "periodSeconds": 60}]}
    assert scale_down_limit(10, [], [], {**down, "selectPolicy": "Max"}, T0) == 5
    assert scale_down_limit(10, [], [], {**down, "selectPolicy": "Min"}, T0) == 8
    assert scale_down_limit(10, [], [], {**down, "selectPolicy": "Disabled"}, T0) == 10
    # A Disabled scale-down keeps the count whatever the metrics say.
    behavior = {"scaleUp": DEFAULT_SCALE_UP, "scaleDown": {**down, "selectPolicy": "Disabled",
                                                           "stabilizationWindowSeconds": 0}}
    assert limit_with_behavior(current=10, desired=1, min_replicas=1, max_replicas=20, history=History(),
                               behavior=behavior, now=T0) == (10, "ScaleDownLimit", pytest.approx(
                                   "the desired replica count is decreasing faster than the maximum scale rate"))


def test_limits_condition_reasons():
    behavior = effective_behavior({}, 0)
    assert behavior is not None
    assert limit_with_behavior(current=2, desired=50, min_replicas=1, max_replicas=5, history=History(),
                               behavior=behavior, now=T0)[:2] == (5, "TooManyReplicas")
    assert limit_with_behavior(current=2, desired=50, min_replicas=1, max_replicas=100, history=History(),
                               behavior=behavior, now=T0)[:2] == (6, "ScaleUpLimit")
    assert limit_with_behavior(current=4, desired=1, min_replicas=2, max_replicas=10, history=History(),
                               behavior=behavior, now=T0)[:2] == (2, "TooFewReplicas")
    assert limit_with_behavior(current=4, desired=3, min_replicas=1, max_replicas=10, history=History(),
                               behavior=behavior, now=T0)[:2] == (3, "DesiredWithinRange")
    # Without behavior: at most max(2 x current, 4) at once.
    assert limit_legacy(current=1, desired=9, min_replicas=1, max_replicas=10)[:2] == (4, "ScaleUpLimit")
    assert limit_legacy(current=3, desired=9, min_replicas=1, max_replicas=5)[:2] == (5, "TooManyReplicas")
    assert limit_legacy(current=3, desired=0, min_replicas=1, max_replicas=5)[:2] == (1, "TooFewReplicas")


def test_behavior_defaults_match_the_apiserver_defaults():
    hpa: Obj = {"spec": {"maxReplicas": 3, "behavior": {"scaleUp": {"policies": [
        {"type": "Pods", "value": 1, "periodSeconds": 5}]}}}}
    apply_defaults(hpa, lookup("hpa"))
    spec = hpa["spec"]
    assert spec["metrics"][0]["resource"] == {"name": "cpu", "target": {"type": "Utilization",
                                                                        "averageUtilization": 80}}
    assert spec["behavior"]["scaleUp"] == {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 5}],
                                           "stabilizationWindowSeconds": 0, "selectPolicy": "Max"}
    assert "stabilizationWindowSeconds" not in spec["behavior"]["scaleDown"]
    eff = effective_behavior(spec["behavior"], 42)
    assert eff is not None and eff["scaleDown"]["stabilizationWindowSeconds"] == 42
    assert effective_behavior(None, 42) is None


# --- the controller's sync ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeMetrics:
    def __init__(self) -> None:
        self.cpu: dict[str, int] = {}
        self.fail: str = ""

    async def pod_metrics(self, resource: str, namespace: str, selector: str) -> dict[str, PodMetric]:
        if self.fail:
            raise MetricsError(self.fail)
        return {n: PodMetric(v, T0 - 3000, 15.0) for n, v in self.cpu.items()}


class ScaleClient(RecordingClient):
    """The recording client plus ``request`` answering GET .../scale from ``scales``."""

    def __init__(self) -> None:
        super().__init__()
        self.scales: dict[str, Obj] = {}

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      headers: dict[str, str] | None = None, body: Any = None, content: bytes | None = None) -> Any:
        self.actions.append((method.lower(), "raw", path, params))
        if path not in self.scales:
            raise NotFound(f"{path} not found")
        return copy.deepcopy(self.scales[path])

    async def patch(self, rt: Any, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> Obj:
        self.actions.append(("patch", f"{rt.plural}/{subresource}", f"{namespace}/{name}", patch))
        return {}


def hpa_obj(*, behavior: Obj | None = None, min_r: int = 1, max_r: int = 3) -> Obj:
    spec: Obj = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": min_r, "maxReplicas": max_r,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 50}}}]}
    if behavior is not None:
        spec["behavior"] = behavior
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "uid": "hpa-uid", "resourceVersion": "1",
                         "generation": 1},
            "spec": spec}


SCALE_PATH = "/apis/apps/v1/namespaces/default/deployments/web/scale"


async def make(replicas: int, pods: list[Obj], *, hpa: Obj | None = None) -> tuple[
        HorizontalController, ScaleClient, FakeMetrics, FakeClock]:
    client, metrics, clock = ScaleClient(), FakeMetrics(), FakeClock()
    client.scales[SCALE_PATH] = {"kind": "Scale", "spec": {"replicas": replicas},
                                 "status": {"replicas": replicas, "selector": "app=web"}}
    factory = InformerFactory()
    c = HorizontalController(client, factory, metrics=metrics, clock=clock)
    for p in pods:
        await feed(factory.informer("pods"), "ADDED", p)
    await feed(factory.informer("horizontalpodautoscalers"), "ADDED", hpa or hpa_obj())
    return c, client, metrics, clock


def writes(client: RecordingClient) -> list[tuple[str, str, str, Any]]:
    return [a for a in client.actions if a[0] != "get" and a[1] != "raw"]


def conditions(status: Obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


async def test_sync_scales_up_records_event_and_status():
    c, client, metrics, _ = await make(1, [pod("a"), pod("other", labels={"app": "db"})])
    metrics.cpu = {"a": 150}  # 150 % of 100m against 50 % → 3
    await c.sync("default/web")
    acts = writes(client)
    assert acts[0] == ("patch", "deployments/scale", "default/web", {"spec": {"replicas": 3}})
    event = next(a[3] for a in acts if a[1] == "Event")
    assert (event["reason"], event["type"]) == ("SuccessfulRescale", "Normal")
    assert event["message"] == "New size: 3; reason: cpu resource utilization (percentage of request) above target"
    assert event["involvedObject"]["kind"] == "HorizontalPodAutoscaler"
    status = acts[-1][3]["status"]
    assert acts[-1][0] == "update-status"
    assert (status["currentReplicas"], status["desiredReplicas"]) == (1, 3)
    assert status["lastScaleTime"] == at(T0)
    assert status["currentMetrics"] == [{"type": "Resource", "resource": {"name": "cpu", "current": {
        "averageUtilization": 150, "averageValue": "150m"}}}]
    assert conditions(status) == {"AbleToScale": ("True", "SucceededRescale"),
                                  "ScalingActive": ("True", "ValidMetricFound"),
                                  "ScalingLimited": ("False", "DesiredWithinRange")}


async def test_sync_within_tolerance_writes_status_only_once():
    c, client, metrics, _ = await make(2, [pod("a"), pod("b")])
    metrics.cpu = {"a": 52, "b": 50}
    await c.sync("default/web")
    acts = writes(client)
    assert [a[0] for a in acts] == ["update-status"]
    status = acts[0][3]["status"]
    assert (status["currentReplicas"], status["desiredReplicas"]) == (2, 2) and "lastScaleTime" not in status
    assert conditions(status)["AbleToScale"] == ("True", "ReadyForNewScale")
    # The informer now holds our status: the next sync writes nothing.
    await feed(c.hpas, "MODIFIED", {**acts[0][3], "metadata": {**acts[0][3]["metadata"], "resourceVersion": "2"}})
    client.actions.clear()
    await c.sync("default/web")
    assert writes(client) == []


async def test_sync_without_metrics_sets_scaling_active_false():
    c, client, metrics, _ = await make(2, [pod("a"), pod("b")])
    metrics.fail = "unable to get metrics for resource cpu: no metrics returned from resource metrics API"
    await c.sync("default/web")
    acts = writes(client)
    assert not [a for a in acts if a[0] == "patch"]
    reasons = [a[3]["reason"] for a in acts if a[1] == "Event"]
    assert reasons == ["FailedGetResourceMetric", "FailedComputeMetricsReplicas"]
    status = acts[-1][3]["status"]
    assert conditions(status)["ScalingActive"] == ("False", "FailedGetResourceMetric")
    assert "no metrics returned" in next(x["message"] for x in status["conditions"] if x["type"] == "ScalingActive")
    assert status["currentReplicas"] == 2


async def test_sync_clamps_to_min_and_max_without_metrics():
    c, client, _, _ = await make(7, [], hpa=hpa_obj(min_r=2, max_r=5))
    await c.sync("default/web")
    assert writes(client)[0] == ("patch", "deployments/scale", "default/web", {"spec": {"replicas": 5}})
    event = next(a[3] for a in writes(client) if a[1] == "Event")
    assert event["message"] == "New size: 5; reason: Current number of replicas above Spec.MaxReplicas"


async def test_sync_of_a_target_scaled_to_zero_is_disabled():
    c, client, _, _ = await make(0, [])
    await c.sync("default/web")
    status = writes(client)[-1][3]["status"]
    assert conditions(status)["ScalingActive"] == ("False", "ScalingDisabled")
    assert not [a for a in writes(client) if a[0] == "patch"]


async def test_sync_of_a_missing_target_sets_able_to_scale_false():
    c, client, _, _ = await make(1, [])
    client.scales.clear()
    with pytest.raises(Exception, match="failed to query scale subresource"):
        await c.sync("default/web")
    status = writes(client)[-1][3]["status"]
    assert conditions(status)["AbleToScale"] == ("False", "FailedGetScale")


async def test_sync_scale_down_waits_for_the_stabilization_window():
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 10}}
    c, client, metrics, clock = await make(3, [pod("a"), pod("b"), pod("c")], hpa=hpa_obj(behavior=behavior))
    metrics.cpu = {"a": 50, "b": 50, "c": 50}
    await c.sync("default/web")
    metrics.cpu = {"a": 5, "b": 5, "c": 5}
    for dt in (2, 9):
        clock.now = T0 + dt
        client.actions.clear()
        await c.sync("default/web")
        assert not [a for a in writes(client) if a[0] == "patch"], dt
    clock.now = T0 + 11
    client.actions.clear()
    await c.sync("default/web")
    assert writes(client)[0] == ("patch", "deployments/scale", "default/web", {"spec": {"replicas": 1}})
    event = next(a[3] for a in writes(client) if a[1] == "Event")
    assert event["message"] == "New size: 1; reason: All metrics below target"


async def test_deleting_the_hpa_forgets_its_history():
    c, _client, metrics, _ = await make(1, [pod("a")])
    metrics.cpu = {"a": 50}
    await c.sync("default/web")
    assert "default/web" in c.history
    await feed(c.hpas, "DELETED", hpa_obj())
    await c.sync("default/web")
    assert "default/web" not in c.history


def test_duration_flags_take_kubernetes_forms():
    from controllers.main import Duration
    d = Duration()
    assert d.convert("15s", None, None) == 15 and d.convert("5m", None, None) == 300
    assert d.convert("1m30s", None, None) == 90 and d.convert("2.5", None, None) == 2.5
    with pytest.raises(Exception, match="bad duration"):
        d.convert("soon", None, None)
