"""Unit tests of the lifecycle logic (FakeRuntime, fake clock): preStop before SIGTERM, grace accounting,
OOM classification (CRI reason and the cgroup's OOM counter), crash back-off growth and cap, and the
clean-up of a duplicate sandbox left by a kubelet killed during RunPodSandbox."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from test_kubelet_support import make_pod
from test_pod_worker import Harness

from kubelet import lifecycle
from kubelet import runtime as rt
from kubelet.fake_runtime import FakeRuntime
from minik8s.testing import wait_until

pytestmark = pytest.mark.timeout(30)


def hooked_pod(handler: dict[str, Any], *, grace: int = 30, uid: str = "u-hook") -> dict[str, Any]:
    return make_pod(uid=uid, terminationGracePeriodSeconds=grace, containers=[
        {"name": "main", "image": "busybox", "command": ["sleep", "3600"],
         "ports": [{"name": "web", "containerPort": 8080}], "lifecycle": {"preStop": handler}},
        {"name": "plain", "image": "busybox", "command": ["sleep", "3600"]}])


def cid(h: Harness, name: str) -> str:
    return str(h.container(name).id)


# --- preStop and grace -----------------------------------------------------------------------------


async def test_pre_stop_exec_runs_before_sigterm_and_only_where_declared(tmp_path: Path) -> None:
    h = Harness(tmp_path, hooked_pod({"exec": {"command": ["sh", "-c", "echo bye > /tmp/x"]}}))
    await h.sync()
    main, plain = cid(h, "main"), cid(h, "plain")
    h.runtime.calls.clear()
    await h.syncer.terminate_pod("u-hook", h.pod(), 30)
    calls = [(m, a) for m, a in h.runtime.calls if m in ("exec_sync", "stop_container")]
    assert calls.index(("exec_sync", (main, ["sh", "-c", "echo bye > /tmp/x"], 30))) < \
        calls.index(("stop_container", (main, 30)))
    assert ("stop_container", (plain, 30)) in calls
    assert [a[0] for m, a in calls if m == "exec_sync"] == [main]  # no hook, no exec for "plain"
    assert "FailedPreStopHook" not in h.recorder.reasons()


async def test_grace_period_counts_the_hook_time(tmp_path: Path) -> None:
    h = Harness(tmp_path, hooked_pod({"exec": {"command": ["slow"]}}, grace=30))
    await h.sync()

    def slow(container_id: str, command: list[str]) -> rt.ExecResult:
        h.clock.advance(7.6)  # the hook takes 7.6 s
        return rt.ExecResult(0, b"", b"")

    h.runtime.exec_handler = slow
    main, plain = cid(h, "main"), cid(h, "plain")
    await h.syncer.terminate_pod("u-hook", h.pod(), 30)
    stops = dict(h.runtime.calls_to("stop_container"))
    assert stops[main] == 23  # 30 - 7 whole seconds (Kubernetes truncates the hook's time)
    assert stops[plain] == 30  # containers are killed in parallel, each with its whole grace


async def test_hook_longer_than_the_grace_period_leaves_the_minimum(tmp_path: Path) -> None:
    h = Harness(tmp_path, hooked_pod({"exec": {"command": ["slow"]}}, grace=5))
    await h.sync()

    def slow(container_id: str, command: list[str]) -> rt.ExecResult:
        h.clock.advance(9)
        return rt.ExecResult(1, b"", b"boom")

    h.runtime.exec_handler = slow
    main = cid(h, "main")
    await h.syncer.terminate_pod("u-hook", h.pod(), 5)
    assert dict(h.runtime.calls_to("stop_container"))[main] == lifecycle.MIN_GRACE_AFTER_HOOK
    failed = [e for e in h.recorder.recorded if e.reason == "FailedPreStopHook"]
    assert failed and "exited with 1: boom" in failed[0].message and failed[0].field_path == "spec.containers{main}"
    assert h.client.writes("pods", "delete")  # the pod is still deleted


async def test_no_hook_without_grace_or_for_a_pod_the_api_dropped(tmp_path: Path) -> None:
    h = Harness(tmp_path, hooked_pod({"exec": {"command": ["x"]}}))
    await h.sync()
    await h.syncer.terminate_pod("u-hook", h.pod(), 0)
    assert h.runtime.calls_to("exec_sync") == []
    assert all(t == 0 for _, t in h.runtime.calls_to("stop_container"))


def test_remaining_grace_and_http_url() -> None:
    assert [lifecycle.remaining_grace(10, s) for s in (0, 0.9, 3.2, 8.5, 20)] == [10, 10, 7, 2, 2]
    container = {"ports": [{"name": "web", "containerPort": 8080}]}
    assert lifecycle.http_get_url({"port": "web", "path": "stop"}, container, "10.1.2.3") == \
        ("http://10.1.2.3:8080/stop", {})
    assert lifecycle.http_get_url({"port": 81, "host": "127.0.0.1", "scheme": "HTTPS",
                                   "httpHeaders": [{"name": "X-A", "value": "1"}]}, container, "10.1.2.3") == \
        ("https://127.0.0.1:81/", {"X-A": "1"})
    with pytest.raises(ValueError):
        lifecycle.http_get_url({"port": "nope"}, container, "10.1.2.3")


async def test_http_pre_stop_hits_the_server_and_a_hung_hook_is_cut_at_the_grace_period() -> None:
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await reader.readline()).decode().strip())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        spec = {"lifecycle": {"preStop": {"httpGet": {"host": "127.0.0.1", "port": port, "path": "/quit"}}}}
        assert await lifecycle.run_pre_stop(FakeRuntime(), spec, "c1", "", 5) == ""
        assert seen == ["GET /quit HTTP/1.1"]
    finally:
        server.close()
        await server.wait_closed()

    class Hung(FakeRuntime):
        async def exec_sync(self, container_id: str, command: list[str], timeout: int) -> rt.ExecResult:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    spec = {"lifecycle": {"preStop": {"exec": {"command": ["hang"]}}}}
    assert "did not finish within the grace period" in await lifecycle.run_pre_stop(Hung(), spec, "c1", "", 0.05)


# --- OOM -----------------------------------------------------------------------------------------


class CountingOom:
    """Stands in for ``OomWatcher``: OOM kills per container id, as the cgroup counted them."""

    def __init__(self) -> None:
        self.kills: dict[str, int] = {}
        self.watched: list[str] = []

    def watch(self, container_id: str, cgroup_path: str) -> bool:
        self.watched.append(cgroup_path)
        return True

    def ooms(self, container_id: str) -> int:
        return self.kills.get(container_id, 0)

    def forget(self, container_id: str) -> None:
        self.kills.pop(container_id, None)


def oom_harness(tmp_path: Path) -> tuple[Harness, CountingOom]:
    h = Harness(tmp_path, make_pod(uid="u-oom", containers=[
        {"name": "main", "image": "busybox", "command": ["x"], "resources": {"limits": {"memory": "16Mi"}}}]))
    oom = CountingOom()
    h.syncer.oom = oom  # type: ignore[assignment]
    return h, oom


def test_classify_exit() -> None:
    c = rt.ContainerStatus(id="c", sandbox_id="s", name="m", attempt=0, state="EXITED", exit_code=137, reason="Error")
    assert lifecycle.classify_exit(c, 0).reason == "Error"
    assert lifecycle.classify_exit(c, 1).reason == "OOMKilled"
    ok = rt.ContainerStatus(id="c", sandbox_id="s", name="m", attempt=0, state="EXITED", exit_code=0,
                            reason="Completed")
    assert lifecycle.classify_exit(ok, 1).reason == "Completed"  # it survived the kill of a child
    running = rt.ContainerStatus(id="c", sandbox_id="s", name="m", attempt=0, state="RUNNING")
    assert lifecycle.classify_exit(running, 1) is running


async def test_sigkill_with_an_oom_count_is_oomkilled_and_gets_one_event(tmp_path: Path) -> None:
    h, oom = oom_harness(tmp_path)
    await h.sync()
    first = cid(h, "main")
    assert oom.watched == [f"/minik8s-test/podu-oom/{first}"]  # the container's own memory cgroup
    h.runtime.exit_container(first, 137, "Error")  # the CRI did not see it as an OOM
    oom.kills[first] = 1  # but the cgroup's oom_kill counter moved
    await h.sync()
    last = h.cstatus()["lastState"]["terminated"]
    assert (last["reason"], last["exitCode"]) == ("OOMKilled", 137)
    assert h.cstatus()["restartCount"] == 1 and "running" in h.cstatus()["state"]
    await h.sync()
    events = [e for e in h.recorder.recorded if e.reason == "OOMKilling"]
    assert len(events) == 1 and events[0].type == "Warning"
    assert "memory limit 16Mi" in events[0].message and "counted 1 OOM kill" in events[0].message


async def test_sigkill_without_an_oom_count_is_an_error(tmp_path: Path) -> None:
    h, _ = oom_harness(tmp_path)
    await h.sync()
    h.runtime.exit_container(cid(h, "main"), 137, "Error")
    await h.sync()
    assert h.cstatus()["lastState"]["terminated"]["reason"] == "Error"
    assert "OOMKilling" not in h.recorder.reasons()


async def test_cri_oomkilled_reason_is_kept_and_evented(tmp_path: Path) -> None:
    h, _ = oom_harness(tmp_path)
    await h.sync()
    h.runtime.exit_container(cid(h, "main"), 137, "OOMKilled")
    await h.sync()
    assert h.cstatus()["lastState"]["terminated"]["reason"] == "OOMKilled"
    (event,) = [e for e in h.recorder.recorded if e.reason == "OOMKilling"]
    assert "counted" not in event.message


def fake_cgroup(tmp_path: Path, oom_kill: int = 0) -> Path:
    folder = tmp_path / "cg"
    folder.mkdir(exist_ok=True)
    (folder / "memory.oom_control").write_text(f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kill}\n")
    (folder / "cgroup.event_control").write_text("")
    return folder


async def test_oom_watcher_counts_kills_from_the_cgroup(tmp_path: Path) -> None:
    folder = fake_cgroup(tmp_path, oom_kill=2)  # kills before the watch do not count
    watcher = lifecycle.OomWatcher(cgroup_dir=lambda controller, path: folder)
    assert watcher.watch("c1", "/pod/c1") and watcher.watching("c1")
    efd_text = (folder / "cgroup.event_control").read_text().split()
    assert len(efd_text) == 2  # "<eventfd> <fd of memory.oom_control>", as cgroup v1 wants
    (folder / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    os.eventfd_write(int(efd_text[0]), 1)  # what the kernel does on an OOM in the cgroup
    await wait_until_async(lambda: watcher.ooms("c1") == 1)
    watcher.forget("c1")
    assert watcher.ooms("c1") == 0 and not watcher.watching("c1")


async def test_oom_watcher_tells_a_removal_from_an_oom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = fake_cgroup(tmp_path)
    watcher = lifecycle.OomWatcher(cgroup_dir=lambda controller, path: folder)
    assert watcher.watch("gone", "/pod/gone") and watcher.watch("oom", "/pod/oom")
    efds = {cid: watcher._watches[cid].efd for cid in ("gone", "oom")}
    real = lifecycle._oom_kill

    def removed(ofd: int) -> int:
        raise OSError(19, "No such device")  # reading a removed cgroup's file

    monkeypatch.setattr(lifecycle, "_oom_kill", removed)
    os.eventfd_write(efds["gone"], 1)  # removal only
    os.eventfd_write(efds["oom"], 2)  # an OOM notification, then the removal
    await wait_until_async(lambda: not watcher.watching("gone") and not watcher.watching("oom"))
    assert (watcher.ooms("gone"), watcher.ooms("oom")) == (0, 1)
    monkeypatch.setattr(lifecycle, "_oom_kill", real)
    assert not lifecycle.OomWatcher(cgroup_dir=lambda c, p: tmp_path / "missing").watch("x", "/x")


async def wait_until_async(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


# --- back-off ------------------------------------------------------------------------------------


async def test_crash_back_off_doubles_to_its_cap_with_crash_loop_back_off_waiting(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_pod(uid="u-loop"))
    await h.sync()
    delays = []
    for _ in range(7):
        c = h.container()
        h.runtime.exit_container(c.id, 1)
        h.clock.now = h.container().finished_at / 1e9
        delay = await h.sync()
        if delay:
            assert h.cstatus()["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            assert h.status()["phase"] == "Running"
            h.clock.advance(delay)
            assert await h.sync() is None
        delays.append(round(delay or 0))
    assert delays == [0, 10, 20, 40, 80, 160, 300]  # Kubernetes: immediate, then 10 s doubling, cap 300 s
    assert h.cstatus()["restartCount"] == 7


# --- a kubelet killed during RunPodSandbox ---------------------------------------------------------


async def test_a_duplicate_ready_sandbox_is_removed_keeping_the_newest(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_pod(uid="u-dup"))
    pod = h.pod()
    old = await h.runtime.run_sandbox(h.syncer.sandbox_config(pod, 0))  # left by the killed kubelet
    await h.sync()  # a fresh PodSyncer knows no sandbox id: it adopts the one it finds
    assert len(h.runtime.sandboxes) == 1 and h.container().sandbox_id == old
    newer = await h.runtime.run_sandbox(h.syncer.sandbox_config(pod, 1))  # a second one appears
    h.syncer._sandbox_ids.clear()  # as after another restart
    await h.sync()
    assert set(h.runtime.sandboxes) == {newer}
    assert h.runtime.ips_in_use() == {h.runtime.sandboxes[newer].ip}
    assert h.container().sandbox_id == newer and "running" in h.cstatus()["state"]
    assert all(c.sandbox_id == newer for c in h.runtime.containers.values())


def test_wait_until_is_bounded() -> None:
    with pytest.raises(TimeoutError):
        wait_until(lambda: False, timeout=0.05, interval=0.01)


@pytest.mark.parametrize("interrupted", [True, False])
async def test_a_start_the_dying_kubelet_interrupted_is_not_counted(tmp_path: Path,
                                                                   interrupted: bool) -> None:
    h = Harness(tmp_path, make_pod(uid="u-int"))
    h.runtime.fail_next["start_container"] = rt.RuntimeFailure("StartContainer: failed to start shim: signal: killed")
    await h.sync()
    c = h.container()
    c.state, c.exit_code, c.reason, c.finished_at = "EXITED", 128, "StartError", int(h.clock() * 1e9)
    c.message = ("failed to create containerd task: failed to start shim: start failed: : signal: killed: unknown"
                 if interrupted else "exec: \"nope\": executable file not found in $PATH")
    h.clock.advance(10)
    await h.sync()
    s = h.cstatus()
    assert "running" in s["state"]
    if interrupted:
        assert c.id not in h.runtime.containers  # removed, created again with the same attempt
        assert (s["restartCount"], s["lastState"], h.container().config.attempt) == (0, {}, 0)
    else:
        assert s["restartCount"] == 1 and s["lastState"]["terminated"]["reason"] == "StartError"
