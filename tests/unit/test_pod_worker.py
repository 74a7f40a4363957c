"""Unit tests of the pod logic: preload a FakeRuntime and a recording API client, sync once, compare.

No container runs here: ``kubelet.fake_runtime.FakeRuntime`` records the runtime calls, and
``FakeApiClient`` records the API writes (see test_kubelet_support.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from test_kubelet_support import FakeApiClient, FakeClock, make_pod

from kubelet import runtime as rt
from kubelet.fake_runtime import FakeRuntime
from kubelet.pod_worker import (
    PUSH_HINT,
    BackOff,
    Metrics,
    PodSyncer,
    PodWorkers,
    SyncSettings,
    container_env,
    cpu_quota,
    cpu_shares,
    expand,
    registry_host,
)
from kubelet.status import EventRecorder, StatusManager
from kubelet.volumes import VolumeManager

pytestmark = pytest.mark.timeout(30)
HOST_IP = "10.88.7.1"


class Harness:
    def __init__(self, tmp_path: Path, *pods: dict[str, Any], runtime: FakeRuntime | None = None) -> None:
        self.client = FakeApiClient(*pods)
        self.runtime = runtime or FakeRuntime(images=("pause:3.9", "busybox"), pod_cidr="10.88.7.0/24")
        self.clock = FakeClock()
        self.removed_cgroups: list[str] = []
        self.volumes = VolumeManager(tmp_path / "kubelet")
        self.recorder = EventRecorder(self.client, "node-1", clock=self.clock)
        self.syncer = PodSyncer(
            client=self.client, runtime=self.runtime, volumes=self.volumes, statuses=StatusManager(self.client),
            recorder=self.recorder, settings=SyncSettings(node_name="node-1", cgroup_root="/minik8s-test"),
            host_ip=HOST_IP, clock=self.clock, remove_cgroups=self._remove_cgroups)

    def _remove_cgroups(self, parent: str) -> list[Any]:
        self.removed_cgroups.append(parent)
        return []

    def pod(self, name: str = "web", ns: str = "default") -> dict[str, Any]:
        found = self.client.obj("pods", ns, name)
        assert found is not None
        return found

    async def sync(self, name: str = "web") -> float | None:
        return await self.syncer.sync_pod(self.pod(name))

    def methods(self) -> list[str]:
        """Runtime calls that change something (reads left out), in order."""
        reads = {"list_sandboxes", "list_containers", "sandbox_status", "container_status", "version"}
        return [m for m, _ in self.runtime.calls if m not in reads]

    def status(self, name: str = "web") -> dict[str, Any]:
        return self.pod(name)["status"]

    def cstatus(self, container: str = "main", name: str = "web") -> dict[str, Any]:
        return next(s for s in self.status(name)["containerStatuses"] if s["name"] == container)

    def container(self, name: str = "main") -> Any:
        found = [c for c in self.runtime.containers.values() if c.config.name == name]
        return max(found, key=lambda c: c.config.attempt)


def two_container_pod() -> dict[str, Any]:
    return make_pod("web", uid="uid-web", containers=[
        {"name": "server", "image": "busybox", "imagePullPolicy": "IfNotPresent",
         "command": ["httpd", "-f", "-p", "$(PORT)"], "args": ["-h", "/data"], "workingDir": "/data",
         "ports": [{"containerPort": 8080, "hostPort": 18080, "protocol": "TCP"}],
         "env": [{"name": "PORT", "value": "8080"},
                 {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                 {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "ADDR", "value": "$(POD_IP):$(PORT) $(NOPE) $$(PORT)"},
                 {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                    "divisor": "1Mi"}}}],
         "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m", "memory": "32Mi"}},
         "volumeMounts": [{"name": "shared", "mountPath": "/data"},
                          {"name": "host", "mountPath": "/host", "readOnly": True}]},
        {"name": "client", "image": "python:3.11", "imagePullPolicy": "Always",
         "command": ["sleep", "infinity"],
         "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
    ], volumes=[{"name": "shared", "emptyDir": {}}, {"name": "host", "hostPath": {"path": "/tmp", "type": ""}}])


# --- a new pod -----------------------------------------------------------------------------------


async def test_new_pod_runs_sandbox_then_containers_in_order(tmp_path: Path) -> None:
    h = Harness(tmp_path, two_container_pod())
    assert await h.sync() is None
    assert h.methods() == ["run_sandbox", "image_ref", "create_container", "start_container",
                           "pull_image", "create_container", "start_container"]

    (sandbox,) = h.runtime.calls_to("run_sandbox")
    sb: rt.SandboxConfig = sandbox[0]
    assert (sb.pod_uid, sb.name, sb.namespace, sb.attempt, sb.hostname) == ("uid-web", "web", "default", 0, "web")
    assert sb.cgroup_parent == "/minik8s-test/poduid-web"
    assert sb.log_directory == str(tmp_path / "kubelet/pods/uid-web/logs")
    assert sb.port_mappings == (rt.PortMapping(container_port=8080, host_port=18080, protocol="TCP"),)
    assert Path(sb.log_directory).is_dir()

    server: rt.ContainerConfig = h.runtime.calls_to("create_container")[0][1]
    assert server.name == "server" and server.attempt == 0 and server.log_path == "server/0.log"
    assert server.command == ("httpd", "-f", "-p", "8080") and server.args == ("-h", "/data")
    assert server.working_dir == "/data"
    pod_ip = h.runtime.sandboxes[h.runtime.calls_to("create_container")[0][0]].ip
    assert dict(server.envs) == {"PORT": "8080", "POD_NAME": "web", "POD_IP": pod_ip,
                                 "ADDR": f"{pod_ip}:8080 $(NOPE) $(PORT)", "MEM": "64"}
    assert (server.cpu_period, server.cpu_quota, server.cpu_shares) == (100_000, 50_000, 256)
    assert server.memory_limit_bytes == 64 * 2**20
    empty_dir = str(tmp_path / "kubelet/pods/uid-web/volumes/kubernetes.io~empty-dir/shared")
    assert server.mounts == (rt.Mount("/data", empty_dir, False), rt.Mount("/host", "/tmp", True))
    assert os.stat(empty_dir).st_mode & 0o777 == 0o777
    assert server.annotations[rt.ANNOTATION_RESTART_COUNT] == "0"

    client: rt.ContainerConfig = h.runtime.calls_to("create_container")[1][1]
    assert client.mounts == (rt.Mount("/shared", empty_dir, False),)  # the same folder: shared
    assert (client.cpu_quota, client.cpu_shares, client.memory_limit_bytes) == (0, 2, 0)
    assert h.runtime.calls_to("pull_image") == [("python:3.11",)]  # Always pulls; IfNotPresent found busybox


async def test_new_pod_status_is_running_and_ready(tmp_path: Path) -> None:
    h = Harness(tmp_path, two_container_pod())
    await h.sync()
    (write,) = h.client.writes("pods")
    assert (write.verb, write.subresource) == ("update", "status")
    status = h.status()
    assert status["phase"] == "Running"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    assert status["podIP"].startswith("10.88.7.") and status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["hostIP"] == HOST_IP and status["startTime"] and status["qosClass"] == "Burstable"
    server = h.cstatus("server")
    assert server["ready"] and server["started"] and server["restartCount"] == 0
    assert server["containerID"] == f"containerd://{h.container('server').id}"
    assert server["image"] == "busybox" and server["imageID"].startswith("docker.io/library/busybox@sha256:")
    assert "running" in server["state"] and server["lastState"] == {}

    # Nothing changed: a second sync writes nothing and creates nothing.
    before = len(h.runtime.calls_to("create_container"))
    await h.sync()
    assert len(h.client.writes("pods")) == 1
    assert len(h.runtime.calls_to("create_container")) == before


async def test_events_for_pulls_creates_and_starts(tmp_path: Path) -> None:
    h = Harness(tmp_path, two_container_pod())
    await h.sync()
    assert h.recorder.reasons() == ["Pulled", "Created", "Started", "Pulling", "Pulled", "Created", "Started"]
    await h.recorder.flush()
    created = h.client.writes("events", "create")
    assert len(created) == 7
    body = created[0].body
    assert body["source"] == {"component": "kubelet", "host": "node-1"}
    assert body["involvedObject"]["uid"] == "uid-web"
    assert body["involvedObject"]["fieldPath"] == "spec.containers{server}"


# --- images --------------------------------------------------------------------------------------


async def test_pull_failure_gives_err_image_pull_with_hint_then_back_off(tmp_path: Path) -> None:
    pod = make_pod(containers=[{"name": "main", "image": "nosuch/thing", "imagePullPolicy": "IfNotPresent"}])
    h = Harness(tmp_path, pod, runtime=FakeRuntime(registry=["busybox"]))
    delay = await h.sync()
    assert delay == 10.0
    waiting = h.cstatus()["state"]["waiting"]
    assert waiting["reason"] == "ErrImagePull" and PUSH_HINT in waiting["message"]
    assert h.status()["phase"] == "Pending"
    assert len(h.runtime.calls_to("pull_image")) == 1

    h.clock.advance(4)
    assert await h.sync() == pytest.approx(6.0)
    waiting = h.cstatus()["state"]["waiting"]
    assert waiting["reason"] == "ImagePullBackOff" and PUSH_HINT in waiting["message"]
    assert len(h.runtime.calls_to("pull_image")) == 1  # no pull during the back-off

    h.clock.advance(7)
    assert await h.sync() == 20.0  # pulled again, failed again: the back-off doubled
    assert h.cstatus()["state"]["waiting"]["reason"] == "ErrImagePull"
    assert len(h.runtime.calls_to("pull_image")) == 2
    assert "Failed" in h.recorder.reasons() and "BackOff" in h.recorder.reasons()


async def test_other_registry_fails_fast_without_asking_the_runtime(tmp_path: Path) -> None:
    pod = make_pod(containers=[{"name": "main", "image": "quay.io/org/app:1", "imagePullPolicy": "IfNotPresent"}])
    h = Harness(tmp_path, pod)
    await h.sync()
    waiting = h.cstatus()["state"]["waiting"]
    assert waiting["reason"] == "ErrImagePull"
    assert "quay.io" in waiting["message"] and PUSH_HINT in waiting["message"]
    assert h.runtime.calls_to("pull_image") == [] and h.runtime.calls_to("image_ref") == []


@pytest.mark.parametrize(("image", "host"), [("busybox", "docker.io"), ("library/busybox:1", "docker.io"),
                                             ("docker.io/library/busybox", "docker.io"),
                                             ("localhost/x", "localhost"), ("127.0.0.1:5000/x", "127.0.0.1:5000"),
                                             ("ghcr.io/a/b@sha256:00", "ghcr.io")])
def test_registry_host(image: str, host: str) -> None:
    assert registry_host(image) == host


async def test_pull_policy_never_and_if_not_present(tmp_path: Path) -> None:
    pod = make_pod(containers=[{"name": "a", "image": "busybox", "imagePullPolicy": "Never"},
                               {"name": "b", "image": "python:3.11", "imagePullPolicy": "Never"}])
    h = Harness(tmp_path, pod)
    await h.sync()
    assert h.runtime.calls_to("pull_image") == []
    assert "running" in h.cstatus("a")["state"]
    assert h.cstatus("b")["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    assert h.status()["phase"] == "Pending"


# --- restarts ------------------------------------------------------------------------------------


async def test_crashing_container_restarts_with_back_off(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_pod(uid="u1"))
    await h.sync()
    first = h.container()
    h.runtime.exit_container(first.id, 1)

    assert await h.sync() is None  # the first restart is immediate (Kubernetes does the same)
    second = h.container()
    assert second.config.attempt == 1 and second.config.log_path == "main/1.log"
    s = h.cstatus()
    assert s["restartCount"] == 1 and "running" in s["state"]
    assert s["lastState"]["terminated"]["exitCode"] == 1
    assert s["lastState"]["terminated"]["reason"] == "Error"

    h.clock.now = second.started_at / 1e9
    h.runtime.exit_container(second.id, 2)
    h.clock.now = h.container().finished_at / 1e9 + 1
    delay = await h.sync()
    assert delay == pytest.approx(9.0, abs=0.01)
    s = h.cstatus()
    assert s["state"]["waiting"]["reason"] == "CrashLoopBackOff" and s["restartCount"] == 1
    assert s["lastState"]["terminated"]["exitCode"] == 2
    assert h.status()["phase"] == "Running"  # restarting containers count as running under Always
    assert len(h.runtime.calls_to("create_container")) == 2

    h.clock.advance(10)
    assert await h.sync() is None
    assert h.container().config.attempt == 2 and h.cstatus()["restartCount"] == 2
    # Older exited runs are removed; the one before the current stays for lastState and logs --previous.
    assert h.runtime.calls_to("remove_container") == []
    await h.sync()
    assert h.runtime.calls_to("remove_container") == [(first.id,)]
    assert h.cstatus()["lastState"]["terminated"]["exitCode"] == 2


async def test_on_failure_success_is_not_restarted_and_pod_succeeds(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_pod(restart_policy="OnFailure"))
    await h.sync()
    h.runtime.exit_container(h.container().id, 0)
    await h.sync()
    assert len(h.runtime.calls_to("create_container")) == 1
    status = h.status()
    assert status["phase"] == "Succeeded"
    assert h.cstatus()["state"]["terminated"]["reason"] == "Completed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PodCompleted"
    assert [s.state for s in h.runtime.sandboxes.values()] == ["NOTREADY"]  # its IP is released
    assert h.runtime.ips_in_use() == set()


async def test_never_failed_container_fails_the_pod(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_pod(restart_policy="Never"))
    await h.sync()
    h.runtime.exit_container(h.container().id, 3)
    await h.sync()
    await h.sync()
    assert len(h.runtime.calls_to("create_container")) == 1
    assert h.status()["phase"] == "Failed"
    assert h.cstatus()["state"]["terminated"]["exitCode"] == 3


async def test_dead_sandbox_is_recreated_and_containers_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_pod(uid="u2"))
    await h.sync()
    (sandbox_id,) = h.runtime.sandboxes
    await h.runtime.stop_sandbox(sandbox_id)  # the pause process died
    await h.sync()
    attempts = sorted(c[0].attempt for c in h.runtime.calls_to("run_sandbox"))
    assert attempts == [0, 1]
    assert h.container().config.attempt == 1 and "running" in h.cstatus()["state"]
    assert "SandboxChanged" in h.recorder.reasons()


# --- deletion ------------------------------------------------------------------------------------


async def test_terminate_stops_removes_cleans_and_deletes_with_uid_precondition(tmp_path: Path) -> None:
    h = Harness(tmp_path, two_container_pod())
    await h.sync()
    pod = h.pod()
    pod["metadata"]["deletionTimestamp"] = "2027-01-15T08:01:00Z"
    pod["metadata"]["deletionGracePeriodSeconds"] = 7
    h.client.put(pod)
    ids = {c.id for c in h.runtime.containers.values()}
    (sandbox_id,) = h.runtime.sandboxes
    h.runtime.calls.clear()

    await h.syncer.terminate_pod("uid-web", h.pod(), 7)
    assert sorted(h.runtime.calls_to("stop_container")) == sorted((i, 7) for i in ids)
    assert h.methods() == ["stop_container", "stop_container", "stop_sandbox", "remove_container",
                           "remove_container", "remove_sandbox"]
    assert h.runtime.calls_to("stop_sandbox") == [(sandbox_id,)]
    assert h.runtime.sandboxes == {} and h.runtime.containers == {} and h.runtime.ips_in_use() == set()
    assert h.removed_cgroups == ["/minik8s-test/poduid-web"]
    assert not (tmp_path / "kubelet/pods/uid-web").exists()
    (delete,) = h.client.writes("pods", "delete")
    assert delete.body == {"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-web"}}
    assert h.client.obj("pods", "default", "web") is None
    assert h.recorder.reasons().count("Killing") == 2

    # Idempotent: a second run finds nothing and the API object is gone already.
    await h.syncer.terminate_pod("uid-web", pod, 7)


async def test_terminate_leaves_a_new_pod_with_the_same_name_alone(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_pod(uid="old"))
    await h.sync()
    old = h.pod()
    h.client.remove("pods", "default", "web")
    h.client.put(make_pod(uid="new"))
    await h.syncer.terminate_pod("old", old, 0)
    assert h.client.obj("pods", "default", "web")["metadata"]["uid"] == "new"  # type: ignore[index]


async def test_status_write_never_lands_on_a_new_pod_with_the_same_name(tmp_path: Path) -> None:
    h = Harness(tmp_path, make_pod(uid="old"))
    old = h.pod()
    h.client.remove("pods", "default", "web")
    h.client.put(make_pod(uid="new"))
    await h.syncer.sync_pod(old)
    assert h.client.obj("pods", "default", "web")["status"] == {"phase": "Pending"}  # type: ignore[index]


# --- pod workers ---------------------------------------------------------------------------------


class GatedSyncer:
    """A syncer whose syncs wait for the test; records what it was asked to do."""

    def __init__(self) -> None:
        self.synced: list[str] = []
        self.terminated: list[tuple[str, int]] = []
        self.gate = asyncio.Event()
        self.cancelled = 0
        self.metrics = Metrics()

    async def sync_pod(self, pod: dict[str, Any]) -> float | None:
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.synced.append(pod["metadata"]["resourceVersion"])
        return None

    async def terminate_pod(self, uid: str, pod: dict[str, Any] | None, grace: int, *, in_api: bool = True) -> None:
        self.terminated.append((uid, grace))


def _version(pod: dict[str, Any], rv: str) -> dict[str, Any]:
    return {**pod, "metadata": {**pod["metadata"], "resourceVersion": rv}}


async def test_worker_syncs_only_the_newest_state() -> None:
    syncer = GatedSyncer()
    workers = PodWorkers(syncer)  # type: ignore[arg-type]
    pod = make_pod(uid="u")
    workers.update("u", _version(pod, "1"))
    await asyncio.sleep(0.01)
    for rv in ("2", "3", "4"):
        workers.update("u", _version(pod, rv))
    syncer.gate.set()
    await workers.wait_idle()
    assert syncer.synced == ["1", "4"]
    await workers.stop()


async def test_kill_cancels_a_running_sync_and_is_never_dropped() -> None:
    syncer = GatedSyncer()
    workers = PodWorkers(syncer)  # type: ignore[arg-type]
    pod = make_pod(uid="u")
    workers.update("u", pod)
    await asyncio.sleep(0.01)
    workers.update("u", None, kill=True, grace=5)
    workers.update("u", _version(pod, "9"))  # a late update must not undo the kill
    await workers.wait_idle()
    assert syncer.cancelled == 1 and syncer.synced == []
    assert syncer.terminated == [("u", 5)]
    assert "u" not in workers and workers.is_terminated("u")
    workers.update("u", pod)  # the pod is gone: later non-kill updates are ignored
    assert "u" not in workers


async def test_deletion_timestamp_means_kill_with_its_grace_period() -> None:
    syncer = GatedSyncer()
    workers = PodWorkers(syncer)  # type: ignore[arg-type]
    pod = make_pod(uid="u")
    pod["metadata"]["deletionTimestamp"] = "2027-01-15T08:01:00Z"
    pod["metadata"]["deletionGracePeriodSeconds"] = 12
    workers.update("u", pod)
    await workers.wait_idle()
    assert syncer.terminated == [("u", 12)]


async def test_failed_sync_is_retried_with_back_off() -> None:
    calls = 0

    class Failing(GatedSyncer):
        async def sync_pod(self, pod: dict[str, Any]) -> float | None:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise rt.RuntimeFailure("runtime hiccup")
            return None

    workers = PodWorkers(Failing(), error_backoff_base=0.01)  # type: ignore[arg-type]
    workers.update("u", make_pod(uid="u"))
    for _ in range(200):
        if calls >= 3:
            break
        await asyncio.sleep(0.01)
    assert calls == 3
    await workers.stop()


# --- pieces --------------------------------------------------------------------------------------


def test_back_off_doubles_caps_and_expires() -> None:
    clock = FakeClock(1000.0)
    b = BackOff(10, 40, clock)
    assert b.remaining_since("k", 1000.0) == 0
    assert b.next("k", 1000.0) == 10
    clock.advance(3)
    assert b.remaining_since("k", 1000.0) == 7
    assert [b.next("k", clock()) for _ in range(3)] == [20, 40, 40]
    assert b.next("k", clock() + 81) == 10  # idle for more than twice the cap: starts over


def test_cpu_conversions() -> None:
    assert cpu_shares(0) == 2 and cpu_shares(1) == 2 and cpu_shares(250) == 256 and cpu_shares(1000) == 1024
    assert cpu_quota(0) == 0 and cpu_quota(500) == 50_000 and cpu_quota(2000) == 200_000 and cpu_quota(5) == 1000


def test_expand_and_env() -> None:
    assert expand("$(A)-$(B)-$$(A)-$", {"A": "x"}) == "x-$(B)-$(A)-$"
    pod = make_pod(name="p", namespace="ns", uid="u")
    pod["metadata"]["labels"] = {"app": "web"}
    container = {"name": "c", "env": [
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
        "resources": {"limits": {"cpu": "1500m"}}}
    assert container_env(pod, container, pod_ip="10.0.0.2", host_ip="10.0.0.1") == [
        ("NS", "ns"), ("UID", "u"), ("NODE", "node-1"), ("HOST", "10.0.0.1"), ("APP", "web"), ("CPU", "2")]


# --- status and volumes, pure ----------------------------------------------------------------------


def _cs(state: str, exit_code: int = 0) -> dict[str, Any]:
    states = {"running": {"running": {}}, "waiting": {"waiting": {"reason": "ContainerCreating"}},
              "terminated": {"terminated": {"exitCode": exit_code}}}
    return {"state": states[state], "lastState": {}}


@pytest.mark.parametrize(("policy", "states", "phase"), [
    ("Always", [], "Pending"),
    ("Always", [("waiting", 0), ("running", 0)], "Pending"),
    ("Always", [("running", 0), ("running", 0)], "Running"),
    ("Always", [("terminated", 0)], "Running"),
    ("OnFailure", [("terminated", 0), ("terminated", 0)], "Succeeded"),
    ("OnFailure", [("terminated", 1)], "Running"),
    ("Never", [("terminated", 0), ("terminated", 2)], "Failed"),
    ("Never", [("terminated", 0), ("running", 0)], "Running"),
])
def test_pod_phase(policy: str, states: list[tuple[str, int]], phase: str) -> None:
    from kubelet.status import pod_phase

    assert pod_phase(policy, [_cs(s, code) for s, code in states]) == phase


def test_conditions_keep_their_transition_time_and_foreign_conditions() -> None:
    from kubelet.status import ContainerView, compute_pod_status

    pod = make_pod()
    pod["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "lastTransitionTime": "2027-01-01T00:00:00Z"},
        {"type": "example.com/gate", "status": "True"}]
    status = compute_pod_status(pod, sandbox=None, views=[ContainerView("main", "busybox")], host_ip="10.0.0.1",
                                now="2027-01-02T00:00:00Z")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2027-01-01T00:00:00Z"  # still False: unchanged
    assert ready["message"] == "containers with unready status: [main]"
    assert {"type": "example.com/gate", "status": "True"} in status["conditions"]
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert status["qosClass"] == "BestEffort" and "podIP" not in status


def test_volumes_host_path_types_and_sub_path(tmp_path: Path) -> None:
    from kubelet.volumes import VolumeError

    vm = VolumeManager(tmp_path / "k")
    made = tmp_path / "made"
    pod = make_pod(uid="v", volumes=[{"name": "scratch", "emptyDir": {}},
                                     {"name": "mk", "hostPath": {"path": str(made), "type": "DirectoryOrCreate"}}])
    paths = vm.setup(pod)
    assert made.is_dir() and Path(paths["scratch"]).is_dir()
    mounts = vm.mounts_for({"name": "c", "volumeMounts": [{"name": "scratch", "mountPath": "/x", "subPath": "a/b"}]},
                           paths)
    assert mounts == (rt.Mount("/x", paths["scratch"] + "/a/b", False),) and Path(mounts[0].host_path).is_dir()
    with pytest.raises(VolumeError):
        vm.mounts_for({"name": "c", "volumeMounts": [{"name": "scratch", "mountPath": "/x", "subPath": "../up"}]},
                      paths)
    with pytest.raises(VolumeError):
        vm.setup(make_pod(uid="w", volumes=[{"name": "f", "hostPath": {"path": str(made), "type": "File"}}]))
    vm.teardown("v")
    assert not (tmp_path / "k/pods/v").exists() and made.is_dir()  # hostPath contents are never touched
