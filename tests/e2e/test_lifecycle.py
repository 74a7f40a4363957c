"""Pods when things go wrong, on the real node: crashes and back-off, OOM kills, graceful termination
with preStop hooks, and a kubelet killed with SIGKILL (at rest, in the middle of a create, in the
middle of a delete).

Every check reads the real parts besides the API: the container's process (its pid from ``ctr tasks
ls``, killed from the host, its death seen in ``/proc``), ``ctr containers ls`` filtered by the
pod-uid label, host-local's IPAM folder, the pod's cgroup folders, files the containers write into a
hostPath folder (timestamps from ``/proc/uptime``, which containers share with the host), and the
kubelet's process as the cluster's supervisord runs it (supervisord restarts it after ``kill -9``).
Timers are the shared fixture's (crash back-off 1 s doubling to 5 s).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from minik8s.cluster.supervisor import Supervisor
from minik8s.testing import wait_until

pytestmark = [pytest.mark.timeout(300)]

UID_LABEL = "io.kubernetes.pod.uid"
# A shell that ends at once on SIGTERM (as PID 1 it would ignore SIGTERM without a trap).
GENTLE = "trap 'exit 0' TERM; sleep 1000000 & wait"


def pod_manifest(name: str, containers: list[dict[str, Any]], *, grace: int = 5, host_dir: Path | None = None,
                 **spec: Any) -> dict[str, Any]:
    volumes = []
    if host_dir is not None:
        volumes = [{"name": "host", "hostPath": {"path": str(host_dir), "type": "Directory"}}]
        for c in containers:
            c.setdefault("volumeMounts", []).append({"name": "host", "mountPath": "/out"})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": grace, "containers": containers, "volumes": volumes, **spec}}


def shell(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **extra}


def cid_of(status: dict[str, Any]) -> str:
    cid = str(status.get("containerID") or "")
    assert cid.startswith("containerd://"), status
    return cid.removeprefix("containerd://")


def task_pids(nc: Any) -> dict[str, int]:
    """Every task of the cluster's containerd: container id → pid of its main process."""
    out = {}
    for line in nc.ctr("tasks", "ls").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "RUNNING":
            out[fields[0]] = int(fields[1])
    return out


def of_pod(nc: Any, uid: str, kind: str = "") -> set[str]:
    """Containers in containerd labelled with the pod's uid (``kind``: sandbox | container | both)."""
    filters = f'labels."{UID_LABEL}"=={uid}'
    if kind:
        filters += f',labels."io.cri-containerd.kind"=={kind}'
    return set(nc.ctr("containers", "ls", "-q", filters).split())


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def uptimes(path: Path) -> list[float]:
    """The /proc/uptime stamps a container appended to ``path`` (one a line)."""
    if not path.exists():
        return []
    return [float(line.split()[-1]) for line in path.read_text().splitlines() if line.strip()]


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def pod_events(nc: Any, ns: str, uid: str) -> list[dict[str, Any]]:
    return [e for e in nc.api.events(ns) if (e.get("involvedObject") or {}).get("uid") == uid]


def wait_dead(pid: int, timeout: float) -> float:
    """Poll (every 10 ms) until process ``pid`` is gone; returns ``time.monotonic()`` then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still alive after {timeout}s")


def leaks(nc: Any) -> dict[str, Any]:
    """What the node holds that no pod in the API accounts for: IPs, pod cgroup folders, pod folders,
    sandboxes/containers of unknown uids, and ready sandboxes beyond one per pod."""
    pods = nc.api.get(f"/api/v1/pods?fieldSelector=spec.nodeName={nc.node_name}")["items"]
    uids = {p["metadata"]["uid"] for p in pods}
    ips = {(p.get("status") or {}).get("podIP") for p in pods
           if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")}
    memory_root = Path("/sys/fs/cgroup/memory") / nc.ident.cgroup_root.strip("/")
    cgroup_uids = {d.name.removeprefix("pod") for d in memory_root.glob("pod*")} if memory_root.is_dir() else set()
    folder_uids = {d.name for d in (nc.layout.kubelet / "pods").glob("*")}
    ready: dict[str, int] = {}
    tasks = task_pids(nc)
    runtime_uids = set()
    for cid in nc.containers():
        labels = json.loads(nc.ctr("containers", "info", cid)).get("Labels") or {}
        uid = labels.get(UID_LABEL)
        if uid:
            runtime_uids.add(uid)
            if labels.get("io.cri-containerd.kind") == "sandbox" and cid in tasks:
                ready[uid] = ready.get(uid, 0) + 1
    return {"ips": nc.ipam_ips() - ips, "cgroups": cgroup_uids - uids, "folders": folder_uids - uids,
            "runtime": runtime_uids - uids, "duplicate sandboxes": {u: n for u, n in ready.items() if n > 1}}


# ---- the kubelet under supervisord -------------------------------------------------------------------------


def supervisor(nc: Any) -> Supervisor:
    return Supervisor(nc.layout.supervisor_socket)


def kill_kubelet(nc: Any) -> int:
    """``kill -9`` the kubelet's process; returns its pid."""
    info = supervisor(nc).process("kubelet")
    assert info["statename"] == "RUNNING", info
    pid = int(info["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_kubelet_back(nc: Any, old_pid: int, timeout: float = 60) -> float:
    """Until supervisord runs a new kubelet and it has relisted the runtime (its loops run); returns when."""
    sup = supervisor(nc)

    def back() -> bool:
        info = sup.process("kubelet")
        if info["statename"] != "RUNNING" or int(info["pid"]) in (0, old_pid):
            return False
        try:
            text = httpx.get(f"http://127.0.0.1:{nc.ident.kubelet_port}/metrics", timeout=1).text
        except httpx.HTTPError:
            return False
        return any(line.startswith('kubelet_pleg_relists_total{result="ok"}') and float(line.split()[-1]) > 0
                   for line in text.splitlines())

    wait_until(back, timeout=timeout, interval=0.1, what="the kubelet restarted by supervisord and relisting")
    return time.monotonic()


# ---- restarts, back-off, OOM -------------------------------------------------------------------------------


def test_kill_9_of_the_main_process_restarts_it_and_is_not_oom(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    nc.api.create_pod(ns, pod_manifest("victim", [shell("main", GENTLE, resources={"limits": {"memory": "64Mi"}})]))
    pod = nc.wait_running(ns, "victim")
    uid = pod["metadata"]["uid"]
    cid = cid_of(nc.container_status(pod, "main"))
    pid = task_pids(nc)[cid]

    os.kill(pid, signal.SIGKILL)  # from the host, as the OOM killer would
    pod = nc.wait_pod(ns, "victim", lambda p: nc.is_running(p) and nc.container_status(p, "main")["restartCount"] == 1,
                      timeout=30, what="restarted once")
    s = nc.container_status(pod, "main")
    new_cid = cid_of(s)
    assert new_cid != cid and new_cid in task_pids(nc) and cid not in task_pids(nc)
    last = s["lastState"]["terminated"]
    # The negative control of the OOM test: SIGKILL from someone else is an Error, not OOMKilled.
    assert (last["exitCode"], last["reason"], last.get("signal")) == (137, "Error", 9), last
    assert last["containerID"] == f"containerd://{cid}"
    assert "OOMKilling" not in {e["reason"] for e in pod_events(nc, ns, uid)}


def test_crash_loop_back_off_grows_to_its_cap(node_cluster: Any, node_ns: str, tmp_path: Path) -> None:
    nc, ns = node_cluster, node_ns
    starts = tmp_path / "starts"
    script = "cut -d' ' -f1 /proc/uptime >> /out/starts; sleep 0.2; exit 1"
    nc.api.create_pod(ns, pod_manifest("crasher", [shell("main", script)], host_dir=tmp_path))
    seen_waiting: set[str] = set()

    def seven_runs() -> bool:
        pod = nc.api.pod(ns, "crasher") or {}
        s = nc.container_status(pod, "main")
        if s:
            seen_waiting.add(((s.get("state") or {}).get("waiting") or {}).get("reason", ""))
        return len(uptimes(starts)) >= 7

    wait_until(seven_runs, timeout=60, interval=0.1, what="seven runs of the crashing container")
    t = uptimes(starts)[:7]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(t)]
    print(f"\ncrash loop: gaps between starts {gaps} (back-off 1s doubling, cap 5s, first restart immediate)")
    assert gaps[0] < 1.0, gaps  # the first restart is immediate (after the relist noticed the exit)
    assert gaps[1] > 1.0 and gaps[2] > gaps[1] + 0.5 and gaps[3] > gaps[2] + 1.0, gaps  # 1s, 2s, 4s
    assert all(5.0 <= g <= 6.5 for g in gaps[4:6]), gaps  # capped at 5s
    assert "CrashLoopBackOff" in seen_waiting, seen_waiting

    # The seventh run has started (it wrote its uptime); the kubelet's status write follows it.
    def status_caught_up() -> dict[str, Any] | None:
        p = nc.api.pod(ns, "crasher")
        st = nc.container_status(p, "main") if p else None
        return p if st and int(st.get("restartCount") or 0) >= 6 else None

    pod = wait_until(status_caught_up, timeout=15, interval=0.1, what="restartCount 6 in the pod status")
    s = nc.container_status(pod, "main")
    assert s["restartCount"] >= 6
    assert s["lastState"]["terminated"]["exitCode"] == 1 and s["lastState"]["terminated"]["reason"] == "Error"
    assert pod["status"]["phase"] == "Running"
    back_offs = [e for e in pod_events(nc, ns, pod["metadata"]["uid"]) if e["reason"] == "BackOff"]
    assert back_offs and back_offs[0]["type"] == "Warning"


def test_oom_killed_container_is_reported_restarted_and_evented(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    # dd reads 64 MiB of zeros into one buffer: past the 16 MiB limit, the memory cgroup's OOM killer ends it.
    hog = {"name": "hog", "image": "busybox", "command": ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
           "resources": {"limits": {"memory": "16Mi"}}}
    nc.api.create_pod(ns, pod_manifest("hog", [hog]))

    def oom_restarted(p: dict[str, Any]) -> bool:
        s = nc.container_status(p, "hog")
        last = (s.get("lastState") or {}).get("terminated") or {}
        return s.get("restartCount", 0) >= 1 and last.get("reason") == "OOMKilled"

    pod = nc.wait_pod(ns, "hog", oom_restarted, timeout=60, what="OOMKilled and restarted")
    last = nc.container_status(pod, "hog")["lastState"]["terminated"]
    assert last["exitCode"] == 137, last
    uid = pod["metadata"]["uid"]
    events = wait_until(lambda: [e for e in pod_events(nc, ns, uid) if e["reason"] == "OOMKilling"], timeout=20,
                        interval=0.2, what="an OOMKilling event")
    assert events[0]["type"] == "Warning" and "memory limit 16Mi" in events[0]["message"], events[0]
    # The kubelet's own watch on the container's memory cgroup counted the kill (not only the CRI's reason).
    assert "the cgroup counted" in events[0]["message"], events[0]["message"]


# ---- graceful termination ----------------------------------------------------------------------------------


def test_pre_stop_exec_and_http_run_before_sigterm(node_cluster: Any, node_ns: str, tmp_path: Path) -> None:
    nc, ns = node_cluster, node_ns
    tmp_path.chmod(0o777)
    on_term = "trap 'echo term >> /out/{0}.log; exit 0' TERM; echo start >> /out/{0}.log"
    exec_c = shell("exec", f"{on_term.format('exec')}; sleep 1000000 & wait",
                   lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /out/exec.log"]}}})
    cgi = ("mkdir -p /www/cgi-bin && { echo '#!/bin/sh'; echo 'echo prestop >> /out/http.log'; "
           "echo 'echo Content-Type: text/plain'; echo echo; echo 'echo ok'; } > /www/cgi-bin/hook "
           "&& chmod +x /www/cgi-bin/hook")
    http_c = shell("http", f"{cgi}; {on_term.format('http')}; httpd -f -p 8080 -h /www & wait",
                   ports=[{"containerPort": 8080, "name": "web"}],
                   lifecycle={"preStop": {"httpGet": {"path": "/cgi-bin/hook", "port": "web"}}})
    nc.api.create_pod(ns, pod_manifest("hooks", [exec_c, http_c], grace=10, host_dir=tmp_path))
    pod = nc.wait_running(ns, "hooks")
    ip = pod["status"]["podIP"]

    def httpd_answers() -> bool:
        try:
            urllib.request.urlopen(f"http://{ip}:8080/", timeout=1)
        except urllib.error.HTTPError:
            return True  # an HTTP answer (404): httpd is up
        except OSError:
            return False
        return True

    wait_until(httpd_answers, timeout=20, interval=0.1, what="httpd in the pod answering")
    assert lines(tmp_path / "exec.log") == ["start"] and lines(tmp_path / "http.log") == ["start"]
    t0 = time.monotonic()
    nc.delete_pod(ns, "hooks", timeout=30)
    took = time.monotonic() - t0
    assert lines(tmp_path / "exec.log") == ["start", "prestop", "term"]
    assert lines(tmp_path / "http.log") == ["start", "prestop", "term"]
    assert took < 8, f"both containers end on SIGTERM right after their hooks, yet the delete took {took:.1f}s"
    assert "FailedPreStopHook" not in {e["reason"] for e in pod_events(nc, ns, pod["metadata"]["uid"])}


def _stubborn(grace: int, host_dir: Path, **extra: Any) -> dict[str, Any]:
    """A pod whose PID 1 notes each SIGTERM (a /proc/uptime stamp) and keeps running."""
    script = "trap 'cut -d\" \" -f1 /proc/uptime >> /out/term' TERM; while true; do sleep 0.05; done"
    return pod_manifest("stubborn", [shell("main", script, **extra)], grace=grace, host_dir=host_dir)


def _delete_and_time(nc: Any, ns: str, host_dir: Path) -> tuple[float, float, float]:
    """DELETE the running ``stubborn`` pod; seconds from the DELETE to SIGTERM, to its death, to its removal."""
    pod = nc.wait_running(ns, "stubborn")
    pid = task_pids(nc)[cid_of(nc.container_status(pod, "main"))]
    up0, t0 = uptime(), time.monotonic()
    assert nc.api.delete(f"/api/v1/namespaces/{ns}/pods/stubborn") == 200
    dead = wait_dead(pid, timeout=30) - t0
    wait_until(lambda: nc.api.pod(ns, "stubborn") is None, timeout=30, interval=0.02, what="stubborn gone")
    gone = time.monotonic() - t0
    terms = uptimes(host_dir / "term")
    assert len(terms) == 1, f"one SIGTERM expected, saw {terms}"
    return terms[0] - up0, dead, gone


def test_sigterm_ignoring_pod_dies_at_the_end_of_its_grace_period(node_cluster: Any, node_ns: str,
                                                                  tmp_path: Path) -> None:
    nc, ns = node_cluster, node_ns
    nc.api.create_pod(ns, _stubborn(3, tmp_path))
    term, dead, gone = _delete_and_time(nc, ns, tmp_path)
    print(f"\ngrace 3s: SIGTERM {term:.2f}s, SIGKILL/death {dead:.2f}s, object removed {gone:.2f}s after the DELETE")
    assert term < 1.0, term
    assert 3.0 <= dead <= 5.5, dead
    assert dead <= gone <= 6.5, gone


def test_grace_period_counts_the_pre_stop_hook(node_cluster: Any, node_ns: str, tmp_path: Path) -> None:
    nc, ns = node_cluster, node_ns
    nc.api.create_pod(ns, _stubborn(6, tmp_path, lifecycle={"preStop": {"exec": {"command": ["sleep", "2"]}}}))
    term, dead, gone = _delete_and_time(nc, ns, tmp_path)
    print(f"\ngrace 6s with a 2s preStop: SIGTERM {term:.2f}s, death {dead:.2f}s, removed {gone:.2f}s")
    assert 2.0 <= term <= 3.2, term  # SIGTERM only after the hook
    assert 6.0 <= dead <= 7.5, dead  # the hook's 2 s came out of the 6 s grace period, not on top of it
    assert dead <= gone <= 8.5, gone


# ---- kubelet killed with SIGKILL ---------------------------------------------------------------------------


def test_kubelet_kill_9_adopts_running_pods(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    for name in ("steady", "dies-meanwhile"):
        nc.api.create_pod(ns, pod_manifest(name, [shell("main", GENTLE)]))
    before = {name: nc.wait_running(ns, name) for name in ("steady", "dies-meanwhile")}
    steady = nc.container_status(before["steady"], "main")
    steady_uid = before["steady"]["metadata"]["uid"]
    sandboxes_before = {n: of_pod(nc, p["metadata"]["uid"], "sandbox") for n, p in before.items()}
    ips_before = nc.ipam_ips()
    pid_steady = task_pids(nc)[cid_of(steady)]

    old = kill_kubelet(nc)
    # While no kubelet runs, a container dies: the next kubelet must tell the truth about it.
    victim_cid = cid_of(nc.container_status(before["dies-meanwhile"], "main"))
    os.kill(task_pids(nc)[victim_cid], signal.SIGKILL)
    wait_kubelet_back(nc, old)

    pod = nc.wait_pod(ns, "dies-meanwhile",
                      lambda p: nc.is_running(p) and nc.container_status(p, "main")["restartCount"] == 1,
                      timeout=30, what="the container that died meanwhile restarted")
    last = nc.container_status(pod, "main")["lastState"]["terminated"]
    assert last["containerID"] == f"containerd://{victim_cid}" and last["exitCode"] == 137

    after = nc.wait_running(ns, "steady")
    s = nc.container_status(after, "main")
    assert (s["containerID"], s["state"]["running"]["startedAt"], s["restartCount"]) == \
        (steady["containerID"], steady["state"]["running"]["startedAt"], 0)
    assert task_pids(nc)[cid_of(s)] == pid_steady
    assert after["metadata"]["uid"] == steady_uid
    assert {n: of_pod(nc, p["metadata"]["uid"], "sandbox") for n, p in before.items()} == sandboxes_before
    assert nc.ipam_ips() == ips_before
    assert "adopting" in nc.layout.log("kubelet").read_text(errors="replace")
    assert leaks(nc) == {"ips": set(), "cgroups": set(), "folders": set(), "runtime": set(),
                         "duplicate sandboxes": {}}


@pytest.mark.parametrize("kill_when", ["sandbox", "container"])
def test_kubelet_kill_9_during_a_pod_create(node_cluster: Any, node_ns: str, kill_when: str) -> None:
    """The kubelet dies as soon as containerd shows the pod's sandbox (RunPodSandbox in flight or just
    done), or its first container (CreateContainer done, StartContainer not yet or in flight)."""
    nc, ns = node_cluster, node_ns
    created = nc.api.create_pod(ns, pod_manifest("newborn", [shell("main", GENTLE), shell("side", GENTLE)]))
    uid = created["metadata"]["uid"]
    wait_until(lambda: of_pod(nc, uid, kill_when), timeout=30, interval=0.005, what=f"the pod's {kill_when}")
    old = kill_kubelet(nc)
    wait_kubelet_back(nc, old)
    pod = nc.wait_running(ns, "newborn", timeout=60)
    assert pod["metadata"]["uid"] == uid
    statuses = {n: nc.container_status(pod, n) for n in ("main", "side")}
    assert all(s["restartCount"] == 0 for s in statuses.values()), json.dumps(statuses)
    sandboxes = of_pod(nc, uid, "sandbox")
    running = set(task_pids(nc))
    assert len(sandboxes & running) == 1, f"one running sandbox expected: {sandboxes} (running: {running})"
    containers = of_pod(nc, uid, "container")
    current = {cid_of(nc.container_status(pod, n)) for n in ("main", "side")}
    assert containers == current, f"containers of the pod in containerd {containers}, in its status {current}"
    assert leaks(nc) == {"ips": set(), "cgroups": set(), "folders": set(), "runtime": set(),
                         "duplicate sandboxes": {}}


def test_kubelet_kill_9_during_a_pod_delete(node_cluster: Any, node_ns: str, tmp_path: Path) -> None:
    nc, ns = node_cluster, node_ns
    script = "trap 'echo term >> /out/term; sleep 2; exit 0' TERM; sleep 1000000 & wait"
    nc.api.create_pod(ns, pod_manifest("dying", [shell("main", script)], grace=10, host_dir=tmp_path))
    pod = nc.wait_running(ns, "dying")
    uid, ip = pod["metadata"]["uid"], pod["status"]["podIP"]
    assert of_pod(nc, uid) and ip in nc.ipam_ips() and nc.pod_cgroups(uid)
    assert nc.api.delete(f"/api/v1/namespaces/{ns}/pods/dying") == 200
    wait_until(lambda: lines(tmp_path / "term"), timeout=20, interval=0.01, what="SIGTERM reached the container")
    old = kill_kubelet(nc)  # the kubelet is waiting in StopContainer
    wait_kubelet_back(nc, old)
    wait_until(lambda: nc.api.pod(ns, "dying") is None, timeout=30, interval=0.1, what="the pod gone after recovery")
    assert of_pod(nc, uid) == set(), "no sandbox or container of the deleted pod"
    assert ip not in nc.ipam_ips()
    assert nc.pod_cgroups(uid) == []
    assert not (nc.layout.kubelet / "pods" / uid).exists()
    assert leaks(nc) == {"ips": set(), "cgroups": set(), "folders": set(), "runtime": set(),
                         "duplicate sandboxes": {}}
