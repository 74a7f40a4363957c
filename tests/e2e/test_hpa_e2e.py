"""HorizontalPodAutoscaler on the real node: kubelet cpu samples → metrics.k8s.io → the controller-manager's
HPA → ``/scale`` of a Deployment → pods.

The pods burn cpu (a busybox shell loop under ``timeout``) until a fixed wall-clock moment shared by all
of them (``BURN_UNTIL``, seconds since the epoch, set by the test), then sleep: load for a bounded time,
whatever moment a pod started. Request 100m, limit 200m, so a burning pod runs at ~200 % of its request
against a 50 % target. The cluster runs the controller-manager with short HPA timers (conftest.py:
sync 2 s, downscale stabilization 10 s, cpu initialization 5 s, initial readiness 5 s) and the kubelet with
``--metrics-resolution 1s``.

The scale steps come from a watch on the Deployments (each ``spec.replicas`` change with its arrival
time); their spacing is checked against the HPA's scaleUp policy (1 pod per 5 s). During the load the
test measures GETs to the apiserver: it must keep answering quickly while the node's cpu is busy.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from minik8s.testing import wait_until


def _traffic() -> Any:
    name = "minik8s_e2e_traffic"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("traffic.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


tr = _traffic()
wl_ns = tr.wl_ns  # fixture

pytestmark = [pytest.mark.timeout(240)]

POLICY_PODS, POLICY_PERIOD = 1, 5  # scaleUp: at most 1 pod per 5 s
BURN_SECONDS = 30  # the load lasts this long from the Deployment's creation
BURN = ('d=$((BURN_UNTIL - $(date +%s))); '
        'if [ "$d" -gt 0 ]; then timeout "$d" sh -c "while :; do :; done"; fi; '
        'exec sleep 1000000')


def burner(name: str, until: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "burn", "image": "busybox", "command": ["sh", "-c", BURN],
                                         "env": [{"name": "BURN_UNTIL", "value": str(until)}],
                                         "resources": {"requests": {"cpu": "100m"},
                                                       "limits": {"cpu": "200m"}}}]}}}}


def hpa(name: str) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": 1, "maxReplicas": 3,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": 50}}}],
                     "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "policies": [
                         {"type": "Pods", "value": POLICY_PODS, "periodSeconds": POLICY_PERIOD}]}}}}


def conditions(h: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in (h.get("status") or {}).get("conditions") or []}


def replica_steps(watch: Any, name: str) -> list[tuple[float, int]]:
    """(arrival time, spec.replicas) at every change of the Deployment's replicas, from the watch."""
    steps: list[tuple[float, int]] = []
    for t, n in watch.replay(lambda state: int(state[name]["spec"]["replicas"]) if name in state else None):
        if n is not None and (not steps or steps[-1][1] != n):
            steps.append((t, n))
    return steps


def test_hpa_scales_cpu_burners_up_within_policy_and_back_down(node_cluster: Any, wl_ns: str) -> None:
    nc, ns, name = node_cluster, wl_ns, "burn"
    tr.require_running(nc, "controller")
    groups = nc.api.get("/apis")
    assert "metrics.k8s.io" in [g["name"] for g in groups["groups"]], \
        "the apiserver does not serve metrics.k8s.io: the HPA has nothing to read"
    hpa_path = f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}"
    deploy_base = f"/apis/apps/v1/namespaces/{ns}/deployments"

    t_start = time.monotonic()
    until = int(time.time()) + BURN_SECONDS
    with tr.Watch(nc, deploy_base) as watch:
        nc.api.create(deploy_base, burner(name, until))
        tr.wait_live_ready(nc, ns, f"app={name}", 1, timeout=30)
        nc.api.create(f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers", hpa(name))

        # Up to the maximum, measuring the apiserver while the node burns cpu.
        latencies: list[float] = []

        def at_max() -> dict[str, Any] | None:
            t0 = time.monotonic()
            h = nc.api.get(hpa_path)
            latencies.append(time.monotonic() - t0)
            st = h.get("status") or {}
            return h if st.get("currentReplicas") == 3 and st.get("desiredReplicas") == 3 else None

        try:
            h = wait_until(at_max, timeout=BURN_SECONDS, interval=0.25, what="the HPA at 3 replicas")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; hpa status: {nc.api.get(hpa_path).get('status')}; "
                                 f"steps: {replica_steps(watch, name)}") from None
        up = replica_steps(watch, name)
        assert [n for _, n in up] == [1, 2, 3], up
        gap = up[2][0] - up[1][0]
        # The second pod may come only once the first step left the policy's period (the sync period adds
        # up to one more interval; the watch's arrival times jitter by a fraction of a second).
        assert gap >= POLICY_PERIOD - 0.5, up
        assert conditions(h)["ScalingActive"] == ("True", "ValidMetricFound"), h["status"]
        assert conditions(h)["AbleToScale"][0] == "True", h["status"]
        assert conditions(h)["ScalingLimited"] in (("True", "TooManyReplicas"), ("True", "ScaleUpLimit")), h["status"]
        current = h["status"]["currentMetrics"][0]["resource"]["current"]
        assert current["averageUtilization"] > 50, h["status"]
        assert h["status"].get("lastScaleTime")
        # The apiserver kept answering quickly under load.
        assert max(latencies) < 1.0 and statistics.median(latencies) < 0.25, latencies
        table = nc.kubectl("get", "hpa", name, "-n", ns).stdout
        assert f"Deployment/{name}" in table and "cpu: " in table and "%/50%" in table, table

        # The load ends at `until`; after the 10 s downscale stabilization it goes back to the minimum.
        def at_min() -> dict[str, Any] | None:
            h = nc.api.get(hpa_path)
            st = h.get("status") or {}
            return h if st.get("currentReplicas") == 1 and st.get("desiredReplicas") == 1 else None

        try:
            h = wait_until(at_min, timeout=BURN_SECONDS + 45, interval=0.5, what="the HPA back at 1 replica")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; hpa status: {nc.api.get(hpa_path).get('status')}; "
                                 f"steps: {replica_steps(watch, name)}") from None
        steps = replica_steps(watch, name)
    print(f"\nhpa steps (s since start, replicas): {[(round(t - t_start, 1), n) for t, n in steps]}; "
          f"GET latency median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
          f"over {len(latencies)} GETs", file=sys.stderr)
    assert [n for _, n in steps][:3] == [1, 2, 3] and steps[-1][1] == 1, steps
    down = steps[3:]
    assert all(n < 3 for _, n in down), steps
    # Not before the load ended plus the stabilization window.
    load_end = t_start + BURN_SECONDS - 1
    assert down[0][0] >= load_end + 10 - 2, (steps, load_end)
    assert conditions(h)["ScalingActive"] == ("True", "ValidMetricFound"), h["status"]
    assert h["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"] < 50, h["status"]
    tr.wait_live_ready(nc, ns, f"app={name}", 1, timeout=30)

    events = [e for e in nc.api.events(ns) if e["reason"] == "SuccessfulRescale"]
    messages = {e["message"] for e in events}
    assert "New size: 2; reason: cpu resource utilization (percentage of request) above target" in messages, messages
    assert "New size: 3; reason: cpu resource utilization (percentage of request) above target" in messages, messages
    assert "New size: 1; reason: All metrics below target" in messages, messages
    assert all(e["involvedObject"]["kind"] == "HorizontalPodAutoscaler" for e in events)
