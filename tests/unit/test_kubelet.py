"""Unit tests of the kubelet as a whole: informer + relist + resync → pod workers, node status, the API server.

Runtime: ``FakeRuntime``; API: ``FakeApiClient`` (in memory, with watches). Timers are shrunk to
milliseconds and every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from test_kubelet_support import NODE, FakeApiClient, make_pod

from kubelet import runtime as rt
from kubelet.fake_runtime import FakeRuntime
from kubelet.kubelet import Kubelet, KubeletConfig
from kubelet.main import main, parse_duration
from kubelet.node_status import MachineInfo, NodeStatusManager, parse_reserved, pod_gateway
from kubelet.pod_worker import Metrics
from kubelet.server import create_app, start_server
from minik8s.timeutil import rfc3339

pytestmark = pytest.mark.timeout(30)


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def machine() -> MachineInfo:
    return MachineInfo(cpus=4, memory_bytes=8 * 2**30, kernel_version="6.1.0", os_image="Debian GNU/Linux 12",
                       architecture="amd64")


class Cluster:
    """A kubelet on fakes, running in the test's loop."""

    def __init__(self, tmp_path: Path, client: FakeApiClient | None = None, runtime: FakeRuntime | None = None) -> None:
        self.client = client or FakeApiClient()
        self.runtime = runtime or FakeRuntime(pod_cidr="10.88.7.0/24")
        self.removed_cgroups: list[str] = []
        self.config = KubeletConfig(node_name=NODE, root_dir=str(tmp_path / "kubelet"), pod_cidr="10.88.7.0/24",
                                    cgroup_root="/minik8s-test", port=0, sync_frequency=0.2,
                                    runtime_relist_period=0.02, node_status_update_frequency=0.05)
        ticks = itertools.count()
        node = NodeStatusManager(client=self.client, runtime=self.runtime, node_name=NODE, pod_cidr="10.88.7.0/24",
                                 kubelet_port=10255, reserved=parse_reserved("cpu=500m,memory=512Mi"),
                                 machine=machine(), update_frequency=0.05,
                                 now=lambda: rfc3339(datetime.fromtimestamp(1.8e9 + next(ticks), UTC)))
        self.kubelet = Kubelet(self.config, client=self.client, runtime=self.runtime, node=node, serve=False,
                               remove_cgroups=self._remove)
        self.task: asyncio.Task[None] | None = None

    def _remove(self, parent: str) -> list[Any]:
        self.removed_cgroups.append(parent)
        return []

    async def start(self) -> Cluster:
        self.task = asyncio.create_task(self.kubelet.run())
        await asyncio.wait_for(self.kubelet.started.wait(), 5)
        return self

    async def stop(self) -> None:
        self.kubelet.request_stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    def running(self, uid: str) -> list[Any]:
        return [c for c in self.runtime.containers.values() if c.sandbox.pod_uid == uid and c.state == "RUNNING"]

    def phase(self, name: str) -> str:
        pod = self.client.obj("pods", "default", name)
        return str(((pod or {}).get("status") or {}).get("phase") or "")


async def test_a_bound_pod_runs_and_reports_running(tmp_path: Path) -> None:
    c = await Cluster(tmp_path).start()
    try:
        c.client.put(make_pod("web", uid="u1"))
        await eventually(lambda: c.phase("web") == "Running", what="Running")
        assert len(c.running("u1")) == 1
        c.client.put(make_pod("elsewhere", uid="u2", node="node-2"))  # another node's pod is none of ours
        await asyncio.sleep(0.1)
        assert not [s for s in c.runtime.sandboxes.values() if s.config.pod_uid == "u2"]
    finally:
        await c.stop()
    # Stopping the kubelet leaves the pod running (a restarted kubelet adopts it).
    assert len(c.running("u1")) == 1
    assert c.runtime.calls_to("stop_container") == [] and c.runtime.calls_to("stop_sandbox") == []


async def test_exited_container_is_noticed_by_relist_and_restarted(tmp_path: Path) -> None:
    c = await Cluster(tmp_path).start()
    try:
        c.client.put(make_pod("web", uid="u1"))
        await eventually(lambda: c.running("u1"), what="container running")
        c.runtime.exit_container(c.running("u1")[0].id, 1)
        await eventually(lambda: c.running("u1") and c.running("u1")[0].config.attempt == 1, what="restart")
        await eventually(lambda: (c.client.obj("pods", "default", "web") or {})["status"]["containerStatuses"][0]
                         ["restartCount"] == 1, what="restartCount 1")
    finally:
        await c.stop()


async def test_restart_adopts_running_pods_without_recreating(tmp_path: Path) -> None:
    client, runtime = FakeApiClient(), FakeRuntime(pod_cidr="10.88.7.0/24")
    first = await Cluster(tmp_path, client, runtime).start()
    client.put(make_pod("web", uid="u1"))
    await eventually(lambda: first.phase("web") == "Running", what="Running")
    await first.stop()
    runtime.calls.clear()
    writes = len(client.actions)

    second = await Cluster(tmp_path, client, runtime).start()
    try:
        await asyncio.sleep(0.3)  # several relists and a resync
        assert runtime.calls_to("run_sandbox") == [] and runtime.calls_to("create_container") == []
        assert runtime.calls_to("stop_container") == []
        assert len(second.running("u1")) == 1
        # Its status was already right: adopting it writes no pod status.
        assert [a for a in client.actions[writes:] if a.resource == "pods"] == []
    finally:
        await second.stop()


async def test_orphans_in_the_runtime_are_killed_and_cleaned_up(tmp_path: Path) -> None:
    client, runtime = FakeApiClient(), FakeRuntime(pod_cidr="10.88.7.0/24")
    first = await Cluster(tmp_path, client, runtime).start()
    client.put(make_pod("keep", uid="keep"))
    client.put(make_pod("gone", uid="gone"))
    await eventually(lambda: first.running("keep") and first.running("gone"), what="both running")
    await first.stop()
    client.remove("pods", "default", "gone")  # force-deleted while no kubelet ran

    second = await Cluster(tmp_path, client, runtime).start()
    try:
        await eventually(lambda: not [s for s in runtime.sandboxes.values() if s.config.pod_uid == "gone"],
                         what="orphan removed")
        assert len(second.running("keep")) == 1
        assert second.removed_cgroups == ["/minik8s-test/podgone"]
        assert not (tmp_path / "kubelet/pods/gone").exists()
        stops = [args for args in runtime.calls_to("stop_container")]
        assert stops and all(grace == 2 for _, grace in stops)  # force-deleted: the short grace period
    finally:
        await second.stop()


async def test_graceful_delete_then_recreate_with_the_same_name(tmp_path: Path) -> None:
    c = await Cluster(tmp_path).start()
    try:
        c.client.put(make_pod("web", uid="old"))
        await eventually(lambda: c.running("old"), what="old running")
        pod = c.client.obj("pods", "default", "web")
        assert pod is not None
        pod["metadata"]["deletionTimestamp"] = "2027-01-15T08:01:00Z"
        pod["metadata"]["deletionGracePeriodSeconds"] = 3
        c.client.put(pod)  # what the apiserver does on a graceful delete of a bound pod
        await eventually(lambda: c.client.obj("pods", "default", "web") is None, what="API object deleted")
        (delete,) = c.client.writes("pods", "delete")
        assert delete.body == {"gracePeriodSeconds": 0, "preconditions": {"uid": "old"}}
        assert {grace for _, grace in c.runtime.calls_to("stop_container")} == {3}
        assert not [s for s in c.runtime.sandboxes.values() if s.config.pod_uid == "old"]

        c.client.put(make_pod("web", uid="new"))
        await eventually(lambda: c.running("new"), what="new pod running")
        await eventually(lambda: c.phase("web") == "Running", what="new pod Running")
        assert c.client.obj("pods", "default", "web")["metadata"]["uid"] == "new"  # type: ignore[index]
    finally:
        await c.stop()


async def test_force_deleted_running_pod_is_killed(tmp_path: Path) -> None:
    c = await Cluster(tmp_path).start()
    try:
        c.client.put(make_pod("web", uid="u1"))
        await eventually(lambda: c.running("u1"), what="running")
        c.client.remove("pods", "default", "web")
        await eventually(lambda: not c.runtime.sandboxes, what="sandbox removed")
        assert c.client.writes("pods", "delete") == []  # nothing left to delete in the API
    finally:
        await c.stop()


# --- node status ---------------------------------------------------------------------------------


async def test_node_registration_capacity_allocatable_and_conditions(tmp_path: Path) -> None:
    c = await Cluster(tmp_path).start()
    try:
        node = c.client.obj("nodes", None, NODE)
        assert node is not None
        assert node["spec"]["podCIDR"] == "10.88.7.0/24"
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == NODE
        assert node["metadata"]["labels"]["kubernetes.io/os"] == "linux"
        status = node["status"]
        assert status["capacity"] == {"cpu": "4", "memory": "8Gi", "pods": "110"}
        assert status["allocatable"] == {"cpu": "3500m", "memory": "7680Mi", "pods": "110"}
        assert {"type": "InternalIP", "address": "10.88.7.1"} in status["addresses"]
        assert {"type": "Hostname", "address": NODE} in status["addresses"]
        assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10255}}
        assert status["nodeInfo"]["kubeletVersion"] == "v1.32.0-minik8s"
        assert status["nodeInfo"]["containerRuntimeVersion"] == "fake://0.0.0"
        conditions = {cond["type"]: cond for cond in status["conditions"]}
        assert conditions["Ready"]["status"] == "True"
        assert {conditions[t]["status"] for t in ("MemoryPressure", "DiskPressure", "PIDPressure")} == {"False"}
        # Heartbeats go through /status.
        await eventually(lambda: len(c.client.writes("nodes", "update")) >= 2, what="heartbeats")
        assert {a.subresource for a in c.client.writes("nodes", "update")} == {"status"}
    finally:
        await c.stop()


async def test_node_not_ready_when_the_runtime_does_not_answer() -> None:
    client, runtime = FakeApiClient(), FakeRuntime()
    times = iter([f"2027-01-01T00:00:0{i}Z" for i in range(10)])
    mgr = NodeStatusManager(client=client, runtime=runtime, node_name=NODE, pod_cidr="10.88.7.0/24",
                            kubelet_port=1, machine=machine(), now=lambda: next(times))
    await mgr.register()
    runtime.fail_next["version"] = rt.RuntimeFailure("Version: container runtime unavailable")
    await mgr.heartbeat()
    await mgr.heartbeat()
    ready = next(cond for cond in client.obj("nodes", None, NODE)["status"]["conditions"]  # type: ignore[index]
                 if cond["type"] == "Ready")
    assert ready["status"] == "True" and ready["lastHeartbeatTime"] == "2027-01-01T00:00:02Z"
    assert ready["lastTransitionTime"] == "2027-01-01T00:00:02Z"  # it came back at 2 after failing at 1
    runtime.fail_next["version"] = rt.RuntimeFailure("Version: container runtime unavailable")
    status = await mgr.status()
    ready = next(cond for cond in status["conditions"] if cond["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ContainerRuntimeUnreachable")
    pressure = next(cond for cond in status["conditions"] if cond["type"] == "MemoryPressure")
    assert pressure["lastTransitionTime"] == "2027-01-01T00:00:00Z"  # never flipped


async def test_existing_node_is_updated_not_recreated() -> None:
    client = FakeApiClient({"apiVersion": "v1", "kind": "Node",
                            "metadata": {"name": NODE, "labels": {"team": "a"}}, "spec": {}, "status": {}})
    mgr = NodeStatusManager(client=client, runtime=FakeRuntime(), node_name=NODE, pod_cidr="10.88.9.0/24",
                            kubelet_port=1, machine=machine(), labels={"zone": "z1"})
    await mgr.register()
    node = client.obj("nodes", None, NODE)
    assert node is not None
    assert node["metadata"]["labels"]["team"] == "a" and node["metadata"]["labels"]["zone"] == "z1"
    assert node["spec"]["podCIDR"] == "10.88.9.0/24" and node["status"]["capacity"]["cpu"] == "4"


def test_reserved_and_gateway() -> None:
    assert pod_gateway("10.88.3.0/24") == "10.88.3.1"
    assert parse_reserved("cpu=500m,memory=512Mi") == {"cpu": pytest.approx(0.5), "memory": 512 * 2**20}
    with pytest.raises(ValueError):
        parse_reserved("gpu=1")


# --- the kubelet API -----------------------------------------------------------------------------


@pytest.fixture()
async def api(tmp_path: Path) -> AsyncIterator[tuple[Cluster, httpx.AsyncClient]]:
    c = await Cluster(tmp_path).start()
    c.client.put(make_pod("web", uid="u1"))
    await eventually(lambda: c.running("u1"), what="running")
    transport = httpx.ASGITransport(app=create_app(c.kubelet, follow_check_interval=0.02))
    async with httpx.AsyncClient(transport=transport, base_url="http://kubelet") as http:
        yield c, http
    await c.stop()


def write_log(path: str, *lines: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for i, line in enumerate(lines):
            f.write(f"2027-01-15T08:00:0{i}.000000000Z stdout F {line}\n")


async def test_server_logs_exec_healthz_metrics(api: tuple[Cluster, httpx.AsyncClient]) -> None:
    c, http = api
    assert (await http.get("/healthz")).text == "ok"
    (container,) = c.running("u1")
    status = await c.runtime.container_status(container.id)
    write_log(status.log_path, "one", "two", "three")

    r = await http.get("/containerLogs/default/web/main", params={"tailLines": "2"})
    assert r.status_code == 200 and r.text == "two\nthree\n"
    r = await http.get("/containerLogs/default/web/main", params={"timestamps": "true", "tailLines": "1"})
    assert r.text == "2027-01-15T08:00:02.000000000Z three\n"
    assert (await http.get("/containerLogs/default/web")).text == "one\ntwo\nthree\n"  # the only container
    assert (await http.get("/containerLogs/default/nope/main")).status_code == 404
    assert (await http.get("/containerLogs/default/web/other")).status_code == 404
    r = await http.get("/containerLogs/default/web/main", params={"previous": "true"})
    assert r.status_code == 404 and "previous terminated" in r.text
    assert (await http.get("/containerLogs/default/web/main", params={"tailLines": "x"})).status_code == 400

    r = await http.post("/exec/default/web/main", json={"command": ["echo", "hi", "there"], "timeout": 5})
    assert r.status_code == 200 and r.json() == {"stdout": "hi there\n", "stderr": "", "exitCode": 0}
    assert c.runtime.calls_to("exec_sync")[-1] == (container.id, ["echo", "hi", "there"], 5)
    assert (await http.post("/exec/default/web/main", json={"command": []})).status_code == 400
    assert (await http.post("/exec/default/nope/main", json={"command": ["true"]})).status_code == 404

    r = await http.get("/metrics")
    assert "kubelet_pod_worker_syncs_total" in r.text and "kubelet_pod_start_duration_seconds" in r.text
    pods = (await http.get("/pods")).json()
    assert [p["metadata"]["name"] for p in pods["items"]] == ["web"]


async def test_server_follow_streams_until_the_container_exits(tmp_path: Path) -> None:
    # A real server: httpx's ASGI transport buffers whole responses, so it cannot show streaming.
    c = await Cluster(tmp_path).start()
    server = await start_server(c.kubelet, port=0, follow_check_interval=0.02)
    try:
        c.client.put(make_pod("web", uid="u1"))
        await eventually(lambda: c.running("u1"), what="running")
        (container,) = c.running("u1")
        status = await c.runtime.container_status(container.id)
        write_log(status.log_path, "first")
        got: list[str] = []

        async def read() -> None:
            async with httpx.AsyncClient() as http, http.stream(
                    "GET", f"http://127.0.0.1:{server.port}/containerLogs/default/web/main",
                    params={"follow": "true"}) as r:
                async for chunk in r.aiter_text():
                    got.append(chunk)

        reader = asyncio.create_task(read())
        try:
            await eventually(lambda: "".join(got) == "first\n", what="first line")
            write_log(status.log_path, "second")
            await eventually(lambda: "".join(got) == "first\nsecond\n", what="followed line")
            c.runtime.exit_container(container.id, 0)
            await asyncio.wait_for(reader, 5)  # the stream ends when the container stops
        finally:
            reader.cancel()
    finally:
        await server.stop()
        await c.stop()


async def test_server_listens_on_loopback() -> None:
    class View:
        runtime = FakeRuntime()
        metrics = Metrics()

        async def find_container(self, *a: Any, **k: Any) -> rt.ContainerStatus:
            raise LookupError("nope")

        def pods(self) -> list[dict[str, Any]]:
            return []

    server = await start_server(View(), port=0)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient() as http:
            r = await http.get(f"http://127.0.0.1:{server.port}/healthz")
            assert r.text == "ok"
            r = await http.post(f"http://127.0.0.1:{server.port}/exec/a/b/c", json={"command": ["x"]})
            assert r.status_code == 404 and r.text == "nope"
    finally:
        await server.stop()
    with pytest.raises(OSError):
        busy = await start_server(View(), port=0)  # type: ignore[arg-type]
        try:
            await start_server(View(), port=busy.port)  # type: ignore[arg-type]
        finally:
            await busy.stop()


# --- the command line ----------------------------------------------------------------------------


def test_durations() -> None:
    assert parse_duration("10") == 10 and parse_duration("1m30s") == 90 and parse_duration("300ms") == 0.3
    with pytest.raises(ValueError):
        parse_duration("10 minutes")


def test_cli_help_and_flag_checks() -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["--help"])
    assert r.exit_code == 0
    for flag in ("--apiserver", "--node-name", "--cri-socket", "--root-dir", "--pod-cidr", "--cgroup-root", "--port",
                 "--system-reserved", "--node-status-update-frequency", "--sync-frequency", "--image-pull-backoff",
                 "--crash-backoff-base", "--crash-backoff-max", "--node-labels"):
        assert flag in r.output
    r = runner.invoke(main, ["--root-dir", "/tmp/x"])
    assert r.exit_code != 0 and "--cri-socket" in r.output  # never a default socket
    r = runner.invoke(main, ["--cri-socket", "/x.sock", "--root-dir", "/tmp/x", "--system-reserved", "gpu=1"],
                      env={})
    assert r.exit_code != 0 and "system-reserved" in r.output
    r = runner.invoke(main, ["--root-dir", "/tmp/x", "--sync-frequency", "soon"],
                      env={"MINIK8S_KUBELET_CRI_SOCKET": "/x.sock"})
    assert r.exit_code != 0 and "bad duration" in r.output
    assert "Traceback" not in r.output
