"""kubelet.fake_runtime: the recording fake follows the same state rules as containerd's CRI."""

from __future__ import annotations

import pytest

from kubelet.fake_runtime import FakeRuntime, normalize_image
from kubelet.runtime import (
    LABEL_CONTAINER_NAME,
    LABEL_POD_UID,
    ContainerConfig,
    ExecResult,
    ImagePullError,
    NotFoundInRuntime,
    RuntimeFailure,
    SandboxConfig,
)

SANDBOX = SandboxConfig(pod_uid="uid-1", name="web", namespace="default", log_directory="/logs/uid-1")


def container(name: str = "main", image: str = "busybox", attempt: int = 0) -> ContainerConfig:
    return ContainerConfig(
        name=name,
        image=image,
        command=("sleep", "3600"),
        log_path=f"{name}/{attempt}.log",
        attempt=attempt,
        labels={"x": "y"},
        annotations={"a": "b"},
    )


async def running(rt: FakeRuntime, name: str = "main") -> tuple[str, str]:
    sid = await rt.run_sandbox(SANDBOX)
    ref = await rt.pull_image("busybox")
    cid = await rt.create_container(sid, container(name, ref), SANDBOX)
    await rt.start_container(cid)
    return sid, cid


def test_normalize_image() -> None:
    assert normalize_image("busybox") == "docker.io/library/busybox:latest"
    assert normalize_image("python:3.11") == "docker.io/library/python:3.11"
    assert normalize_image("nosuch/thing") == "docker.io/nosuch/thing:latest"
    assert normalize_image("127.0.0.1:5000/fn/x") == "127.0.0.1:5000/fn/x:latest"
    assert normalize_image("busybox@sha256:ab") == "docker.io/library/busybox@sha256:ab"


async def test_images_pull_failures_and_registry() -> None:
    rt = FakeRuntime(images=["busybox"], registry=["python:3.11"], pull_failures={"bad": "registry down"})
    assert await rt.image_ref("python:3.11") is None
    ref = await rt.pull_image("python:3.11")
    assert ref.startswith("sha256:")
    assert await rt.image_ref("docker.io/library/python:3.11") == ref
    assert await rt.image_ref(ref) == ref
    assert await rt.pull_image("busybox") == await rt.image_ref("busybox")  # present: no registry needed
    with pytest.raises(ImagePullError, match="not found"):
        await rt.pull_image("nosuch/thing")
    with pytest.raises(ImagePullError, match="registry down"):
        await rt.pull_image("bad")
    await rt.remove_image("python:3.11")
    await rt.remove_image("python:3.11")  # idempotent
    assert await rt.image_ref("python:3.11") is None
    assert rt.calls[:2] == [("image_ref", ("python:3.11",)), ("pull_image", ("python:3.11",))]


async def test_sandbox_lifecycle_ips_and_labels() -> None:
    rt = FakeRuntime(pod_cidr="10.88.7.0/24")
    sid = await rt.run_sandbox(SANDBOX)
    st = await rt.sandbox_status(sid)
    assert (st.state, st.ip, st.pod_uid, st.name, st.namespace) == ("READY", "10.88.7.2", "uid-1", "web", "default")
    assert st.labels[LABEL_POD_UID] == "uid-1"
    with pytest.raises(RuntimeFailure, match="reserved"):
        await rt.run_sandbox(SANDBOX)  # same pod and attempt
    host = await rt.run_sandbox(SandboxConfig(pod_uid="uid-2", name="h", namespace="default", host_network=True))
    assert (await rt.sandbox_status(host)).ip == ""
    assert rt.ips_in_use() == {"10.88.7.2"}
    await rt.stop_sandbox(sid)
    st = await rt.sandbox_status(sid)
    assert (st.state, st.ip) == ("NOTREADY", "")
    assert rt.ips_in_use() == set()
    await rt.remove_sandbox(sid)
    await rt.remove_sandbox(sid)
    await rt.stop_sandbox("unknown")
    with pytest.raises(NotFoundInRuntime):
        await rt.sandbox_status(sid)
    assert [s.id for s in await rt.list_sandboxes()] == [host]
    again = await rt.run_sandbox(SANDBOX)  # the name is free again once removed
    assert (await rt.sandbox_status(again)).ip == "10.88.7.2"


async def test_container_lifecycle_and_status() -> None:
    rt = FakeRuntime()
    sid = await rt.run_sandbox(SANDBOX)
    ref = await rt.pull_image("busybox")
    cid = await rt.create_container(sid, container("main", ref), SANDBOX)
    st = await rt.container_status(cid)
    assert (st.state, st.sandbox_id, st.name, st.attempt, st.created_at > 0, st.started_at) == (
        "CREATED",
        sid,
        "main",
        0,
        True,
        0,
    )
    assert st.image == "docker.io/library/busybox:latest"
    assert st.image_ref.startswith("docker.io/library/busybox@sha256:")
    assert st.log_path == "/logs/uid-1/main/0.log"
    assert st.labels == {
        "x": "y",
        LABEL_POD_UID: "uid-1",
        "io.kubernetes.pod.name": "web",
        "io.kubernetes.pod.namespace": "default",
        LABEL_CONTAINER_NAME: "main",
    }
    assert st.annotations == {"a": "b"}
    with pytest.raises(RuntimeFailure, match="reserved"):
        await rt.create_container(sid, container("main", ref), SANDBOX)
    await rt.start_container(cid)
    assert (await rt.container_status(cid)).state == "RUNNING"
    with pytest.raises(RuntimeFailure, match="RUNNING"):
        await rt.start_container(cid)
    rt.exit_container(cid, 0)
    st = await rt.container_status(cid)
    assert (st.state, st.exit_code, st.reason, st.finished_at >= st.started_at > 0) == ("EXITED", 0, "Completed", True)
    second = await rt.create_container(sid, container("main", ref, attempt=1), SANDBOX)
    assert {c.id for c in await rt.list_containers(sid)} == {cid, second}
    assert await rt.list_containers("other") == []
    await rt.remove_container(cid)
    await rt.remove_container(cid)
    with pytest.raises(NotFoundInRuntime):
        await rt.container_status(cid)
    with pytest.raises(NotFoundInRuntime):
        await rt.create_container("nope", container("x", ref), SANDBOX)
    with pytest.raises(NotFoundInRuntime):
        await rt.create_container(sid, container("y", "not-pulled"), SANDBOX)


async def test_stop_exit_codes_and_knobs() -> None:
    rt = FakeRuntime()
    rt.term_exit_codes["graceful"] = 0
    rt.exit_on_start["crash"] = (1, "")
    rt.exit_on_start["oom"] = (137, "OOMKilled")
    sid, cid = await running(rt, "main")
    ref = await rt.pull_image("busybox")
    ids = {}
    for name in ("graceful", "crash", "oom", "killed"):
        ids[name] = await rt.create_container(sid, container(name, ref), SANDBOX)
        await rt.start_container(ids[name])
    await rt.stop_container(cid, 30)
    await rt.stop_container(ids["graceful"], 30)
    await rt.stop_container(ids["killed"], 0)
    await rt.stop_container(cid, 30)  # already stopped: no-op
    await rt.stop_container("unknown", 30)
    got = {name: ((s := await rt.container_status(i)).exit_code, s.reason) for name, i in ids.items()}
    assert got == {
        "graceful": (0, "Completed"),
        "crash": (1, "Error"),
        "oom": (137, "OOMKilled"),
        "killed": (137, "Error"),
    }
    st = await rt.container_status(cid)
    assert (st.state, st.exit_code, st.reason) == ("EXITED", 143, "Error")
    assert ("stop_container", (cid, 30)) in rt.calls
    assert rt.calls_to("stop_container")[0] == (cid, 30)


async def test_stop_sandbox_kills_running_containers_and_remove_removes_them() -> None:
    rt = FakeRuntime()
    sid, cid = await running(rt)
    created = await rt.create_container(sid, container("later", await rt.pull_image("busybox")), SANDBOX)
    await rt.stop_sandbox(sid)
    assert ((await rt.container_status(cid)).state, (await rt.container_status(cid)).exit_code) == ("EXITED", 137)
    assert (await rt.container_status(created)).state == "CREATED"
    with pytest.raises(RuntimeFailure, match="not ready"):
        await rt.create_container(sid, container("x", "busybox"), SANDBOX)
    await rt.remove_sandbox(sid)
    assert await rt.list_containers() == []


async def test_exec_stats_and_fail_next() -> None:
    rt = FakeRuntime()
    _, cid = await running(rt)
    assert await rt.exec_sync(cid, ["echo", "hi", "there"], 5) == ExecResult(0, b"hi there\n", b"")
    rt.exec_handler = lambda c, cmd: ExecResult(3, b"", b"no")
    assert (await rt.exec_sync(cid, ["false"], 5)).exit_code == 3
    rt.set_stats(cid, 1000, 2048)
    stats = await rt.container_stats(cid)
    assert (stats.cpu_usage_core_nanoseconds, stats.memory_working_set_bytes) == (1000, 2048)
    rt.fail_next["start_container"] = RuntimeFailure("boom")
    with pytest.raises(RuntimeFailure, match="boom"):
        await rt.start_container(cid)
    rt.exit_container(cid, 2)
    with pytest.raises(RuntimeFailure, match="not running"):
        await rt.exec_sync(cid, ["echo"], 5)
    with pytest.raises(RuntimeFailure):
        rt.exit_container(cid, 1)  # not running any more
    assert await rt.version()


def test_cri_proto_subset_keeps_the_public_field_numbers() -> None:
    """kubelet/cri/api.proto is our own subset of runtime.v1: its wire numbers must be upstream's."""
    from kubelet.cri import api_pb2 as pb

    def numbers(message: type) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    assert pb.DESCRIPTOR.package == "runtime.v1"
    assert numbers(pb.PodSandboxConfig) == {
        "metadata": 1,
        "hostname": 2,
        "log_directory": 3,
        "dns_config": 4,
        "port_mappings": 5,
        "labels": 6,
        "annotations": 7,
        "linux": 8,
    }
    assert numbers(pb.ContainerConfig) == {
        "metadata": 1,
        "image": 2,
        "command": 3,
        "args": 4,
        "working_dir": 5,
        "envs": 6,
        "mounts": 7,
        "labels": 9,
        "annotations": 10,
        "log_path": 11,
        "stdin": 12,
        "stdin_once": 13,
        "tty": 14,
        "linux": 15,
    }
    assert numbers(pb.LinuxContainerResources) == {
        "cpu_period": 1,
        "cpu_quota": 2,
        "cpu_shares": 3,
        "memory_limit_in_bytes": 4,
        "oom_score_adj": 5,
    }
    assert numbers(pb.ContainerStatus)["reason"] == 10 and numbers(pb.ContainerStatus)["log_path"] == 15
    assert numbers(pb.PodSandboxStatus)["network"] == 5 and numbers(pb.PodSandboxStatus)["labels"] == 7
    assert numbers(pb.LinuxContainerSecurityContext) == {"namespace_options": 3}
    assert numbers(pb.CpuUsage)["usage_core_nano_seconds"] == 2
    assert [m.name for m in pb.DESCRIPTOR.services_by_name["ImageService"].methods] == [
        "ImageStatus",
        "PullImage",
        "RemoveImage",
        "ListImages",
        "ImageFsInfo",
    ]
