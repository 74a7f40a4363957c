"""Node health and garbage collection on the real node (the session's ``node_cluster``).

- containerd stopped through the cluster's supervisor → the Node is ``Ready=False``
  (``ContainerRuntimeUnreachable``) within the heartbeat window; started again → Ready, and the pod
  that ran is still running (same container id, its task never stopped);
- a chatty container's log directory stays under ``--container-log-max-size`` × ``--container-log-max-files``
  (64Ki × 2 in the fixture, checked every 200ms) across rotations while ``minictl logs --tail`` works;
- a crash-looping container keeps only its newest dead instance in containerd;
- an orphaned ``pod<uid>`` cgroup folder and an orphaned netns mount are removed by the GC;
- an unused image (built and pushed here) is removed by ``POST /gc/images`` on the kubelet API, and an
  image a running pod uses is not. (The threshold policy itself is unit-tested: tests/unit/test_gc.py.)

Every wait is a bounded poll. The cluster is shared: containerd is always started again, and the node is
Ready again, before a test returns.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from minik8s.testing import wait_until

pytestmark = [pytest.mark.timeout(300)]

HEARTBEAT = 1.0  # --node-status-update-frequency in the fixture
LOG_MAX_SIZE, LOG_MAX_FILES, LOG_INTERVAL = 64 * 1024, 2, 0.2  # the fixture's log rotation flags


def busybox_pod(name: str, script: str, *, image: str = "busybox", restart: str = "Always") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 2, "restartPolicy": restart,
                     "containers": [{"name": "main", "image": image,
                                     "command": ["sh", "-c", f"trap 'exit 0' TERM; {script}"]}]}}


def container_id(pod: dict[str, Any]) -> str:
    status = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return str(status[0].get("containerID") or "").removeprefix("containerd://")


def ready(nc: Any) -> dict[str, Any]:
    return dict(nc.condition(nc.node(), "Ready"))


def containers_of(nc: Any, uid: str, name: str) -> dict[str, bool]:
    """The pod's containers named ``name`` in containerd: id → has a running task."""
    tasks = {line.split()[0]: line.split()[-1] for line in nc.ctr("tasks", "ls").splitlines()[1:] if line.strip()}
    out = {}
    for cid in nc.containers():
        try:
            labels = json.loads(nc.ctr("containers", "info", cid)).get("Labels") or {}
        except AssertionError:
            continue  # removed meanwhile
        if labels.get("io.kubernetes.pod.uid") == uid and labels.get("io.kubernetes.container.name") == name:
            out[cid] = tasks.get(cid) == "RUNNING"
    return out


# ---- node health ----------------------------------------------------------------------------------------


def test_containerd_down_makes_the_node_not_ready_and_back(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    nc.api.create_pod(ns, busybox_pod("survivor", "sleep 100000 & wait"))
    before = nc.wait_running(ns, "survivor")
    cid = container_id(before)
    assert ready(nc)["status"] == "True"
    sup = nc.cluster.supervisor
    try:
        t0 = time.monotonic()
        sup.stop("containerd")
        down = wait_until(lambda: (r := ready(nc))["status"] == "False" and r, timeout=HEARTBEAT + 10,
                          interval=0.1, what="node Ready=False after containerd stopped")
        took = time.monotonic() - t0
        assert down["reason"] == "ContainerRuntimeUnreachable", down
        assert "container runtime is down" in down["message"], down
        assert took < HEARTBEAT + 5, f"Ready=False after {took:.1f}s (heartbeat {HEARTBEAT}s)"
        # The node says so for as long as containerd is down (bounded check over a few heartbeats).
        deadline = time.monotonic() + 3 * HEARTBEAT
        while time.monotonic() < deadline:
            assert ready(nc)["status"] == "False"
            time.sleep(0.2)
    finally:
        sup.start("containerd")
        wait_until(lambda: ready(nc)["status"] == "True", timeout=60, interval=0.2,
                   what="node Ready again after containerd started")
    back = ready(nc)
    assert back["reason"] == "KubeletReady"
    # The pod's container lived through it: same id, its task running, the pod Running and ready.
    after = nc.wait_running(ns, "survivor", timeout=30)
    assert container_id(after) == cid
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    assert containers_of(nc, after["metadata"]["uid"], "main") == {cid: True}


# ---- log rotation -----------------------------------------------------------------------------------------


def dir_size(folder: Path) -> tuple[int, list[str]]:
    total, names = 0, []
    for p in folder.iterdir() if folder.is_dir() else []:
        try:
            total += p.stat().st_size
            names.append(p.name)
        except FileNotFoundError:
            pass
    return total, names


def test_log_rotation_keeps_a_chatty_container_under_the_limit(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    # ~1 KiB lines, a few hundred per second: a rotation every fraction of a second at 64 KiB.
    script = ('line=$(head -c 1000 /dev/zero | tr "\\0" x); i=0; '
              'while true; do echo "n=$i $line"; i=$((i+1)); usleep 2000; done')
    pod = nc.api.create_pod(ns, busybox_pod("chatty", script))
    nc.wait_running(ns, "chatty")
    folder = nc.layout.kubelet / "pods" / pod["metadata"]["uid"] / "logs" / "main"
    # One logs pass's worth of growth on top of each file: rate * monitor interval (generous for a loaded host).
    limit = LOG_MAX_FILES * LOG_MAX_SIZE + LOG_MAX_FILES * 256 * 1024
    rotated_names: set[str] = set()
    biggest = 0
    deadline = time.monotonic() + 60
    while len(rotated_names) < 4 and time.monotonic() < deadline:
        size, names = dir_size(folder)
        biggest = max(biggest, size)
        assert size <= limit, f"{size} bytes in {names} (limit {limit})"
        assert len(names) <= LOG_MAX_FILES, names
        rotated_names |= {n for n in names if n != "0.log"}
        time.sleep(0.05)
    assert len(rotated_names) >= 4, f"only {sorted(rotated_names)} rotated in 60s"
    # logs still works and shows recent lines (the current file only, as kubectl logs does).
    counters = []

    def tail() -> list[str] | None:
        out = nc.minictl("logs", "-n", ns, "chatty", "--tail", "5").stdout.splitlines()
        return out if len(out) == 5 else None

    lines = wait_until(tail, timeout=20, interval=0.2, what="5 log lines")
    for line in lines:
        m = re.match(r"n=(\d+) x{1000}$", line)
        assert m, line[:80]
        counters.append(int(m.group(1)))
    assert counters == sorted(counters) and counters[-1] - counters[0] == 4
    assert counters[0] > 64, counters  # past the first rotation: these are recent lines
    print(f"\nlog dir peaked at {biggest} bytes (limit {limit}); rotations seen: {len(rotated_names)}")


# ---- garbage collection -----------------------------------------------------------------------------------


def test_only_the_newest_dead_container_is_kept(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    pod = nc.api.create_pod(ns, busybox_pod("crasher", "echo crash; exit 1"))
    uid = pod["metadata"]["uid"]
    nc.wait_pod(ns, "crasher", lambda p: (nc.container_status(p, "main").get("restartCount") or 0) >= 3,
                timeout=90, what="three restarts")
    seen_max = 0

    def one_dead_left() -> bool:
        nonlocal seen_max
        found = containers_of(nc, uid, "main")
        dead = [c for c, running in found.items() if not running]
        seen_max = max(seen_max, len(found))
        return len(dead) == 1 and len(found) <= 2

    wait_until(one_dead_left, timeout=20, interval=0.2, what="one dead instance of the crashing container")
    # From now on, never more than the newest dead one plus the one running (+1 while the GC is due).
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        found = containers_of(nc, uid, "main")
        assert len(found) <= 3, found
        time.sleep(0.3)
    restarts = nc.container_status(nc.api.pod(ns, "crasher"), "main")["restartCount"]
    assert restarts >= 3
    # logs --previous still has the last dead run.
    prev = nc.minictl("logs", "-n", ns, "crasher", "--previous", check=False)
    assert prev.returncode == 0 and "crash" in prev.stdout, (prev.stdout, prev.stderr)


def test_orphaned_cgroup_folder_and_netns_are_removed(node_cluster: Any) -> None:
    nc = node_cluster
    uid = str(uuid.uuid4())
    rel = f"{nc.ident.cgroup_root.strip('/')}/pod{uid}"
    made = []
    for controller in ("memory", "cpu", "pids"):
        folder = Path("/sys/fs/cgroup") / controller / rel
        if folder.parent.is_dir():
            folder.mkdir()
            (folder / "leftover").mkdir()  # a container's folder under it, empty
            made.append(folder)
    assert made
    netns_dir = nc.layout.containerd_state / "io.containerd.grpc.v1.cri" / "netns"
    netns = netns_dir / f"cni-{uuid.uuid4()}"
    netns_dir.mkdir(parents=True, exist_ok=True)
    netns.touch()
    subprocess.run(["unshare", f"--net={netns}", "true"], check=True, timeout=10)
    assert str(netns) in nc.netns_mounts()
    try:
        wait_until(lambda: not any(f.exists() for f in made), timeout=20, interval=0.2,
                   what="the orphaned cgroup folders to be removed")
        # netns: two GC passes at least 10 s apart (a RunPodSandbox in flight is never taken for an orphan).
        wait_until(lambda: str(netns) not in nc.netns_mounts() and not netns.exists(), timeout=30, interval=0.2,
                   what="the orphaned netns to be unmounted and removed")
    finally:
        for f in made:
            for sub in (f / "leftover", f):
                if sub.exists():
                    sub.rmdir()
        if str(netns) in nc.netns_mounts():
            subprocess.run(["umount", "-l", str(netns)], check=False, timeout=10)
        if netns.exists():
            netns.unlink()
    log = nc.layout.log("kubelet").read_text(errors="replace")
    assert f"removed orphaned cgroup folders of {nc.ident.cgroup_root}/pod{uid}" in log
    assert f"removed orphaned network namespace {netns}" in log


def test_unused_image_is_removed_and_one_in_use_is_not(node_cluster: Any, node_ns: str) -> None:
    from minik8s.images.build import build_image, pull_image, push_image
    from minik8s.images.layers import Entry, layer_from_entries
    from minik8s.images.registry import Registry

    nc, ns = node_cluster, node_ns
    name = f"e2e-gc-{uuid.uuid4().hex[:8]}"
    registry = Registry(nc.ident.registry_url)
    base = pull_image(registry, "library/busybox", "latest")
    image = build_image(base, [layer_from_entries([Entry.file("gc-marker", name.encode())])])
    push_image(registry, f"library/{name}", "1", image, base_repo="library/busybox")
    ref = f"docker.io/library/{name}:1"

    def images() -> set[str]:
        return {line.split()[0] for line in nc.ctr("images", "ls").splitlines()[1:] if line.strip()}

    nc.api.create_pod(ns, busybox_pod("uses-busybox", "sleep 100000 & wait"))
    nc.api.create_pod(ns, busybox_pod("uses-extra", "sleep 100000 & wait", image=f"{name}:1"))
    nc.wait_running(ns, "uses-busybox")
    nc.wait_running(ns, "uses-extra")
    assert ref in images()
    port = nc.ident.kubelet_port
    r = httpx.post(f"http://127.0.0.1:{port}/gc/images", timeout=60)
    assert r.status_code == 200, r.text
    assert ref in images()  # in use by a running pod: kept
    nc.delete_pod(ns, "uses-extra")
    r = httpx.post(f"http://127.0.0.1:{port}/gc/images", timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["images"], r.json()
    assert ref not in images()
    assert "docker.io/library/busybox:latest" in images()  # a running pod uses it
    assert "docker.io/library/pause:3.9" in images()  # the sandbox image is never collected
    assert nc.api.pod(ns, "uses-busybox")["status"]["phase"] == "Running"
