"""Resource metrics on the real node: CRI stats → kubelet ``/stats/summary`` → ``metrics.k8s.io`` →
the real ``kubectl top`` and ``minictl top``.

The cluster's kubelet samples every second (``--metrics-resolution 1s`` in the fixture). A busybox pod
burning cpu in a shell loop under a 200m limit must show close to 200m; one that sleeps, close to 0.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from minik8s.testing import wait_until

pytestmark = [pytest.mark.timeout(300)]

TRAP = "trap 'exit 0' TERM"
METRICS = "/apis/metrics.k8s.io/v1beta1"


def pod(name: str, script: str, app: str, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox", "command": ["sh", "-c", f"{TRAP}; {script}"]}
    if resources:
        container["resources"] = resources
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]}}


def table(text: str) -> dict[str, list[str]]:
    """Rows of a kubectl/minictl table keyed by their first cell (the header line included)."""
    rows = [re.split(r"\s{2,}|\s+", line.strip()) for line in text.splitlines() if line.strip()]
    return {r[0]: r[1:] for r in rows}


def millicores(cell: str) -> int:
    assert cell.endswith("m"), cell
    return int(cell[:-1])


def burning_and_idle(text: str) -> bool:
    rows = table(text)
    if "burner" not in rows or "idle" not in rows:
        return False
    return 150 <= millicores(rows["burner"][0]) <= 230 and millicores(rows["idle"][0]) < 20


def test_kubectl_top_shows_the_busy_pod_near_its_limit_and_the_idle_one_near_zero(node_cluster: Any,
                                                                                   node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    limits = {"requests": {"cpu": "100m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}
    nc.api.create_pod(ns, pod("burner", "while :; do :; done", "burn", limits))
    nc.api.create_pod(ns, pod("idle", "sleep 3600", "idle"))
    nc.wait_running(ns, "burner")
    nc.wait_running(ns, "idle")

    # The node reports where its allocatable is (kubectl top node's percentages need it).
    allocatable = nc.node()["status"]["allocatable"]
    assert allocatable.get("cpu") and allocatable.get("memory"), allocatable

    # The API: PodMetrics with metrics-server's quantities, once the kubelet has two samples.
    one = wait_until(lambda: nc.api.get_or_none(f"{METRICS}/namespaces/{ns}/pods/burner"), timeout=60,
                     interval=0.5, what="PodMetrics of burner")
    assert one["kind"] == "PodMetrics" and one["apiVersion"] == "metrics.k8s.io/v1beta1"
    assert one["metadata"]["name"] == "burner" and one["metadata"]["labels"] == {"app": "burn"}
    (usage,) = [c["usage"] for c in one["containers"] if c["name"] == "main"]
    assert re.fullmatch(r"\d+n|0", usage["cpu"]) and re.fullmatch(r"\d+Ki|\d+", usage["memory"]), usage
    assert re.fullmatch(r"[\d.]+m?s", one["window"]), one["window"]
    listed = nc.api.get(f"{METRICS}/namespaces/{ns}/pods?labelSelector=app%3Didle")
    assert listed["kind"] == "PodMetricsList" and [m["metadata"]["name"] for m in listed["items"]] == ["idle"]

    # kubectl top pod: the loop near its 200m quota, the sleeper near zero (polled: a 1 s window is noisy).
    last: dict[str, str] = {}

    def kubectl_top() -> bool:
        res = nc.kubectl("top", "pod", "-n", ns, check=False)
        last["kubectl"] = res.stdout + res.stderr
        return res.returncode == 0 and burning_and_idle(res.stdout)

    try:
        wait_until(kubectl_top, timeout=90, interval=1.0, what="kubectl top pod to show burner ~200m, idle ~0")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last output:\n{last.get('kubectl')}") from None
    assert table(last["kubectl"])["NAME"] == ["CPU(cores)", "MEMORY(bytes)"]

    def minictl_top() -> bool:
        res = nc.minictl("top", "pod", "-n", ns, check=False)
        last["minictl"] = res.stdout + res.stderr
        return res.returncode == 0 and burning_and_idle(res.stdout)

    try:
        wait_until(minictl_top, timeout=30, interval=1.0, what="minictl top pod to agree")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last output:\n{last.get('minictl')}") from None

    # kubectl top node: the node with its share of allocatable; minictl top node alike.
    res = nc.kubectl("top", "node")
    rows = table(res.stdout)
    assert rows["NAME"] == ["CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], res.stdout
    cpu, cpu_pct, memory, memory_pct = rows[nc.node_name]
    assert millicores(cpu) >= 150 and cpu_pct.endswith("%") and memory.endswith("Mi") and memory_pct.endswith("%")
    res = nc.minictl("top", "node")
    assert table(res.stdout)[nc.node_name][1].endswith("%"), res.stdout
    print(f"\nkubectl top pod:\n{last['kubectl']}minictl top pod:\n{last['minictl']}minictl top node:\n{res.stdout}")

    # A pod without metrics is a 404, as metrics-server answers.
    r = nc.api.http.get(f"{METRICS}/namespaces/{ns}/pods/ghost")
    assert r.status_code == 404 and r.json()["message"] == 'podmetrics.metrics.k8s.io "ghost" not found'
