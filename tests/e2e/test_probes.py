"""Liveness, readiness and startup probes on the real node: busybox pods on the cluster's containerd.

Each test has a namespace of its own (``node_ns``). Besides the API (conditions, containerStatuses,
Events), the checks read the real parts: ``ctr -n k8s.io`` on the cluster's socket (which containers
exist and which run), the container's main process in ``/proc`` (its start time, against the host's
``/proc/uptime``), and HTTP from the host to the pod IP. Exec probes run through the CRI's ExecSync in
the container; the tests flip them with ``minictl exec`` (through the apiserver and the kubelet).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.timeout(300)]

# A shell that ends at once on SIGTERM (as PID 1 it would ignore SIGTERM without a trap).
TRAP = "trap 'exit 0' TERM"


def pod(name: str, script: str, **container: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [
                {"name": "main", "image": "busybox", "command": ["sh", "-c", f"{TRAP}; {script}"], **container}]}}


def exec_probe(*command: str, **fields: Any) -> dict[str, Any]:
    return {"exec": {"command": list(command)}, **fields}


def main(p: dict[str, Any] | None) -> dict[str, Any]:
    statuses = ((p or {}).get("status") or {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def cid_of(status: dict[str, Any]) -> str:
    cid = str(status.get("containerID") or "")
    assert cid.startswith("containerd://"), status
    return cid.removeprefix("containerd://")


def running(p: dict[str, Any]) -> bool:
    return (p.get("status") or {}).get("phase") == "Running" and "running" in (main(p).get("state") or {})


def ready(nc: Any, p: dict[str, Any] | None) -> bool:
    return bool(p) and nc.condition(p, "Ready").get("status") == "True" and main(p).get("ready") is True


def events(nc: Any, ns: str, name: str, reason: str) -> list[str]:
    return [str(e.get("message")) for e in nc.api.events(ns)
            if e.get("reason") == reason and (e.get("involvedObject") or {}).get("name") == name]


def stays(predicate: Any, seconds: float, what: str) -> None:
    """``predicate`` holds on every poll for ``seconds`` (a bounded poll, not a sleep)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} no longer holds"
        time.sleep(0.2)


def task_pid(nc: Any, cid: str) -> int:
    for line in nc.ctr("tasks", "ls").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[0] == cid and fields[2] == "RUNNING":
            return int(fields[1])
    raise AssertionError(f"container {cid} has no running task in containerd")


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def process_start(pid: int) -> float:
    """When process ``pid`` started, in seconds since boot (the clock of ``/proc/uptime``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in clock ticks


def test_failing_readiness_keeps_the_pod_not_ready_until_it_passes(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    nc.api.create_pod(ns, pod("gate", "sleep 1000000 & wait",
                              readinessProbe=exec_probe("cat", "/tmp/ready", periodSeconds=1)))
    first = nc.wait_pod(ns, "gate", running, timeout=60, what="gate running")
    cid = cid_of(main(first))
    assert cid in nc.tasks()  # it runs for real; only its readiness probe fails

    def not_ready() -> bool:
        p = nc.api.pod(ns, "gate")
        s = main(p)
        return (running(p) and s.get("ready") is False and s.get("started") is True and cid_of(s) == cid
                and nc.condition(p, "Ready").get("status") == "False"
                and nc.condition(p, "ContainersReady").get("status") == "False")

    stays(not_ready, 3, "Running but not Ready")
    p = nc.api.pod(ns, "gate")
    assert nc.condition(p, "Ready").get("reason") == "ContainersNotReady", p["status"]["conditions"]
    unhealthy = events(nc, ns, "gate", "Unhealthy")
    assert any(m.startswith("Readiness probe failed: cat: can't open '/tmp/ready'") for m in unhealthy), unhealthy

    nc.minictl("exec", "-n", ns, "gate", "--", "touch", "/tmp/ready")
    now_ready = nc.wait_pod(ns, "gate", lambda p: ready(nc, p), timeout=10, what="gate Ready")
    s = main(now_ready)
    assert cid_of(s) == cid and s["restartCount"] == 0 and s["started"] is True
    assert nc.condition(now_ready, "ContainersReady").get("status") == "True"
    assert cid in nc.tasks()


def test_failing_liveness_restarts_the_container(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    nc.api.create_pod(ns, pod("live", "touch /tmp/alive; sleep 1000000 & wait",
                              livenessProbe=exec_probe("cat", "/tmp/alive", periodSeconds=1, failureThreshold=2)))
    first = nc.wait_pod(ns, "live", lambda p: ready(nc, p), timeout=60, what="live Ready")
    old = cid_of(main(first))
    assert old in nc.containers() and old in nc.tasks()
    stays(lambda: main(nc.api.pod(ns, "live")).get("restartCount") == 0, 2.5, "a passing liveness probe")

    nc.minictl("exec", "-n", ns, "live", "--", "rm", "/tmp/alive")
    again = nc.wait_pod(ns, "live", lambda p: main(p).get("restartCount") == 1 and running(p)
                        and cid_of(main(p)) != old, timeout=30, what="live restarted")
    new = cid_of(main(again))
    # containerd has a new container for it, running; the old one no longer runs.
    assert new in nc.containers() and new in nc.tasks()
    assert old not in nc.tasks()
    assert main(again)["lastState"]["terminated"]["containerID"] == f"containerd://{old}"
    assert "Container main failed liveness probe, will be restarted" in events(nc, ns, "live", "Killing")
    unhealthy = events(nc, ns, "live", "Unhealthy")
    assert any(m.startswith("Liveness probe failed: cat: can't open '/tmp/alive'") for m in unhealthy), unhealthy
    # The new container made its /tmp/alive: it stays.
    stays(lambda: main(nc.api.pod(ns, "live")).get("restartCount") == 1, 3, "the restarted container lives")


def test_startup_probe_delays_liveness(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    slow = "sleep 5 & wait; touch /tmp/started; sleep 1000000 & wait"  # not healthy for its first 5 s
    liveness = exec_probe("cat", "/tmp/started", periodSeconds=1, failureThreshold=1)
    nc.api.create_pod(ns, pod("gated", slow, livenessProbe=liveness,
                              startupProbe=exec_probe("cat", "/tmp/started", periodSeconds=1, failureThreshold=30)))
    nc.api.create_pod(ns, pod("ungated", slow, livenessProbe=liveness))  # the control: no startup probe

    first = nc.wait_pod(ns, "gated", running, timeout=60, what="gated running")
    cid = cid_of(main(first))
    s = main(first)
    assert s["started"] is False and s["ready"] is False, s  # its startup probe has not passed yet
    # The control is killed by its liveness probe within its first seconds; the gated one is not.
    nc.wait_pod(ns, "ungated", lambda p: main(p).get("restartCount", 0) >= 1, timeout=30,
                what="the control restarted by its liveness probe")
    started = nc.wait_pod(ns, "gated", lambda p: main(p).get("started") is True, timeout=30, what="gated started")
    assert ready(nc, started) and main(started)["restartCount"] == 0 and cid_of(main(started)) == cid
    # Liveness runs now (and passes): still the same container, never restarted.
    stays(lambda: main(nc.api.pod(ns, "gated")).get("restartCount") == 0, 3, "gated not restarted")
    assert cid in nc.tasks()
    assert "Container main failed liveness probe, will be restarted" in events(nc, ns, "ungated", "Killing")
    assert events(nc, ns, "gated", "Killing") == []


def test_time_from_container_start_to_ready_with_an_http_readiness_probe(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    serve = "mkdir -p /www && echo ok > /www/index.html && httpd -f -p 8080 -h /www & wait"
    nc.api.create_pod(ns, pod("web", serve, ports=[{"name": "http", "containerPort": 8080}],
                              readinessProbe={"httpGet": {"path": "/index.html", "port": "http"},
                                              "periodSeconds": 10}))
    deadline = time.monotonic() + 60
    while True:  # a tight poll of the API: when does the test first see the pod Ready?
        p = nc.api.pod(ns, "web")
        if ready(nc, p):
            seen = uptime()
            break
        assert time.monotonic() < deadline, f"web not Ready: {(p or {}).get('status')}"
        time.sleep(0.005)
    assert p is not None
    cid = cid_of(main(p))
    started = process_start(task_pid(nc, cid))
    took = seen - started
    print(f"\ncontainer start → pod Ready (httpGet readiness, periodSeconds 10): {took * 1000:.0f} ms")
    uid = p["metadata"]["uid"]
    for line in nc.layout.log("kubelet").read_text(errors="replace").splitlines():
        if uid in line and "probe" in line:
            print(line)  # when the kubelet saw the probe pass (its log has milliseconds)
    # With periodSeconds alone it would take up to 10 s; the fast readiness interval makes it tens of ms
    # (plus one status write and this poll; the start time has the kernel's 10 ms tick).
    assert took < 1.0, took
    status, body = nc.http_get(f"http://{p['status']['podIP']}:8080/index.html")
    assert status == 200 and body.strip() == "ok"
