"""The node's garbage collector (kubelet/gc.py) on FakeRuntime: dead containers and sandboxes, images
under disk pressure (never one in use), orphaned cgroup folders, network namespaces and log files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kubelet import runtime as rt
from kubelet.fake_runtime import FakeRuntime, normalize_image
from kubelet.gc import GCPolicy, NodeGC, pod_images


def sandbox(uid: str, attempt: int = 0, log_dir: str = "") -> rt.SandboxConfig:
    return rt.SandboxConfig(pod_uid=uid, name=f"p-{uid}", namespace="default", attempt=attempt, log_directory=log_dir)


async def run_container(runtime: FakeRuntime, sid: str, sb: rt.SandboxConfig, name: str, attempt: int,
                        *, exit_code: int | None = None, image: str = "busybox") -> str:
    cid = await runtime.create_container(sid, rt.ContainerConfig(
        name=name, image=image, attempt=attempt, log_path=f"{name}/{attempt}.log",
        annotations={rt.ANNOTATION_RESTART_COUNT: str(attempt)}), sb)
    await runtime.start_container(cid)
    if sb.log_directory:
        path = Path(sb.log_directory) / name / f"{attempt}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("log\n")
        Path(f"{path}.20240101-000000.000000.gz").write_text("old")
    if exit_code is not None:
        runtime.exit_container(cid, exit_code)
    return cid


def names(runtime: FakeRuntime) -> list[tuple[str, int, str]]:
    return sorted((c.config.name, c.config.attempt, c.state) for c in runtime.containers.values())


# --- containers and sandboxes ----------------------------------------------------------------------


async def test_only_the_newest_dead_container_per_container_stays_with_the_running_one(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    sb = sandbox("u1", log_dir=str(tmp_path / "pods/u1/logs"))
    sid = await runtime.run_sandbox(sb)
    for attempt in range(3):
        await run_container(runtime, sid, sb, "main", attempt, exit_code=1)
    await run_container(runtime, sid, sb, "main", 3)
    await run_container(runtime, sid, sb, "side", 0, exit_code=0)  # the newest of its name: stays
    gc = NodeGC(runtime)
    removed, sandboxes = await gc.collect_containers()
    assert len(removed) == 2 and sandboxes == []
    assert names(runtime) == [("main", 2, "EXITED"), ("main", 3, "RUNNING"), ("side", 0, "EXITED")]
    # Their log files (rotated ones too) went with them; the kept containers' stay.
    logs = sorted(p.name for p in (tmp_path / "pods/u1/logs/main").iterdir())
    assert logs == ["2.log", "2.log.20240101-000000.000000.gz", "3.log", "3.log.20240101-000000.000000.gz"]
    assert await gc.collect_containers() == ([], [])  # idempotent


async def test_while_backing_off_only_the_newest_dead_container_stays() -> None:
    runtime = FakeRuntime()
    sb = sandbox("u1")
    sid = await runtime.run_sandbox(sb)
    for attempt in range(3):
        await run_container(runtime, sid, sb, "main", attempt, exit_code=1)
    await NodeGC(runtime).collect_containers()
    assert names(runtime) == [("main", 2, "EXITED")]  # restartCount and lastState are read from it


async def test_more_dead_containers_kept_and_minimum_age() -> None:
    runtime = FakeRuntime()
    sb = sandbox("u1")
    sid = await runtime.run_sandbox(sb)
    for attempt in range(4):
        await run_container(runtime, sid, sb, "main", attempt, exit_code=1)
    now = [0.0]
    young = NodeGC(runtime, GCPolicy(min_container_age=60), clock=lambda: now[0])
    now[0] = max(c.created_at for c in runtime.containers.values()) / 1e9 + 1
    assert (await young.collect_containers())[0] == []  # all younger than a minute
    await NodeGC(runtime, GCPolicy(max_per_pod_container=2)).collect_containers()
    assert names(runtime) == [("main", 2, "EXITED"), ("main", 3, "EXITED")]
    await NodeGC(runtime, GCPolicy(max_per_pod_container=0)).collect_containers()
    assert names(runtime) == [("main", 3, "EXITED")]  # never below the newest


async def test_node_wide_limit_of_dead_containers() -> None:
    runtime = FakeRuntime()
    for uid in ("a", "b"):
        sb = sandbox(uid)
        sid = await runtime.run_sandbox(sb)
        for attempt in range(2):
            await run_container(runtime, sid, sb, "main", attempt, exit_code=1)
        await run_container(runtime, sid, sb, "main", 2)
    await NodeGC(runtime, GCPolicy(max_per_pod_container=5, max_containers=1)).collect_containers()
    dead = [c for c in runtime.containers.values() if c.state == "EXITED"]
    assert len(dead) == 1 and dead[0].config.attempt == 1


async def test_dead_sandboxes_without_containers_are_removed_but_the_newest() -> None:
    runtime = FakeRuntime()
    old = await runtime.run_sandbox(sandbox("u1", 0))
    await runtime.stop_sandbox(old)
    busy = await runtime.run_sandbox(sandbox("u1", 1))
    sb = sandbox("u1", 1)
    await run_container(runtime, busy, sb, "main", 0, exit_code=0)
    await runtime.stop_sandbox(busy)
    newest = await runtime.run_sandbox(sandbox("u1", 2))
    await runtime.stop_sandbox(newest)
    _, removed = await NodeGC(runtime).collect_containers()
    assert removed == [old]
    assert set(runtime.sandboxes) == {busy, newest}


# --- images --------------------------------------------------------------------------------------


class Disk:
    def __init__(self, capacity: int, available: int) -> None:
        self.capacity, self.available = capacity, available
        self.asked: list[str] = []

    def __call__(self, path: str) -> tuple[int, int]:
        self.asked.append(path)
        return self.capacity, self.available


def pod(uid: str, *images: str) -> dict[str, Any]:
    return {"metadata": {"uid": uid}, "spec": {"containers": [{"name": f"c{i}", "image": im}
                                                            for i, im in enumerate(images)]}}


async def image_setup() -> tuple[FakeRuntime, list[dict[str, Any]]]:
    runtime = FakeRuntime(images=("pause:3.9", "busybox", "python:3.11", "app:1", "old:1", "tool:1", "fn:1",
                                  "pinned:1"))
    runtime.pinned_images = {normalize_image("pinned:1")}
    runtime.image_sizes = {normalize_image(n): 10 for n in ("app:1", "old:1", "tool:1", "fn:1", "pinned:1")}
    sb = sandbox("u1")
    sid = await runtime.run_sandbox(sb)
    await run_container(runtime, sid, sb, "main", 0)  # busybox, running
    ref = await runtime.pull_image("tool:1")
    await run_container(runtime, sid, sb, "tool", 0, exit_code=0, image=ref)  # an exited container still uses it
    pods = [pod("u1", "busybox", "tool:1"), pod("u2", "python:3.11")]  # u2: waiting for its pull, say
    return runtime, pods


def present(runtime: FakeRuntime) -> set[str]:
    return {n.removeprefix("docker.io/library/") for n in runtime.images}


async def test_image_gc_frees_down_to_the_low_threshold_least_recently_used_first() -> None:
    runtime, pods = await image_setup()
    disk = Disk(capacity=1000, available=100)  # 90 % full: over 85; free to 80 % → 100 bytes
    clock = [1000.0]
    gc = NodeGC(runtime, GCPolicy(min_image_age=120), api_pods=lambda: pods, fs_stats=disk,
                extra_images=lambda: ["fn:1"], clock=lambda: clock[0])
    # old:1 was in use earlier (a pod that is gone now); app:1 never was.
    pods.append(pod("u3", "old:1"))
    await gc._image_usage()
    pods.pop()
    clock[0] += 200
    runtime.image_sizes[normalize_image("app:1")] = 60
    runtime.image_sizes[normalize_image("old:1")] = 60
    removed, freed = await gc.collect_images()
    assert disk.asked == ["/fake/imagefs"]
    # app:1 (never used) first, then old:1: 120 bytes ≥ 100. Never busybox (running), tool:1 (exited
    # container), python:3.11 (a pod names it), fn:1 (a function keeps it), pause (sandbox image), pinned:1.
    assert freed == 120 and len(removed) == 2
    assert present(runtime) == {"pause:3.9", "busybox:latest", "python:3.11", "tool:1", "fn:1", "pinned:1"}


async def test_image_gc_does_nothing_below_the_high_threshold_or_for_young_images() -> None:
    runtime, pods = await image_setup()
    before = set(runtime.images)
    gc = NodeGC(runtime, api_pods=lambda: pods, fs_stats=Disk(1000, 200))  # 80 %: below 85
    assert await gc.collect_images() == ([], 0)
    gc.fs_stats = Disk(1000, 10)  # 99 %, but every unused image was first seen just now (min age 2m)
    assert await gc.collect_images() == ([], 0)
    assert set(runtime.images) == before


async def test_prune_removes_every_unused_image_and_nothing_in_use() -> None:
    runtime, pods = await image_setup()
    gc = NodeGC(runtime, api_pods=lambda: pods, extra_images=lambda: ["fn:1"])
    removed, freed = await gc.prune_images()
    assert len(removed) == 2 and freed == 20
    assert present(runtime) == {"pause:3.9", "busybox:latest", "python:3.11", "tool:1", "fn:1", "pinned:1"}


def test_pod_images_normalizes_every_kind_of_container() -> None:
    p = {"spec": {"containers": [{"image": "busybox"}], "initContainers": [{"image": "library/python:3.11"}],
                  "ephemeralContainers": [{"image": "registry.local:5000/x"}]}}
    assert pod_images([p]) == {"docker.io/library/busybox:latest", "docker.io/library/python:3.11",
                               "registry.local:5000/x:latest"}


def test_policy_checks_thresholds() -> None:
    with pytest.raises(ValueError):
        GCPolicy(image_gc_high_threshold=70, image_gc_low_threshold=80)

    class Config:
        image_gc_high_threshold = 90
        container_gc_period = 1.0

    assert GCPolicy.from_config(Config()) == GCPolicy(image_gc_high_threshold=90, container_gc_period=1.0)


# --- orphans -------------------------------------------------------------------------------------


async def test_orphaned_cgroup_folders_go_on_the_second_pass_only(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    await runtime.run_sandbox(sandbox("in-runtime"))
    mounts = {"memory": tmp_path / "memory", "cpu": tmp_path / "cpu"}
    for uid in ("in-api", "in-runtime", "busy-worker", "orphan"):
        (mounts["memory"] / "mk-root" / f"pod{uid}").mkdir(parents=True)
    (mounts["cpu"] / "mk-root" / "podorphan" / "leftover-container").mkdir(parents=True)
    (mounts["cpu"] / "mk-root" / "not-a-pod").mkdir()
    removed_parents: list[str] = []

    def remove(parent: str) -> list[Any]:
        removed_parents.append(parent)
        for top in (m / parent.strip("/") for m in mounts.values()):
            for folder, _, _ in os.walk(top, topdown=False) if top.is_dir() else []:
                os.rmdir(folder)
        return []

    api = [pod("in-api")]
    gc = NodeGC(runtime, cgroup_root="/mk-root", api_pods=lambda: api, busy_uids=lambda: ["busy-worker"],
                hierarchies=lambda: mounts, remove_cgroups=remove)
    assert (await gc.collect_orphans())[0] == []  # seen once: not yet
    (mounts["memory"] / "mk-root" / "podlate").mkdir()  # appears now; its pod comes into the API meanwhile
    api.append(pod("late"))
    assert (await gc.collect_orphans())[0] == ["/mk-root/podorphan"]
    assert removed_parents == ["/mk-root/podorphan"]
    left = sorted(p.name for m in mounts.values() for p in (m / "mk-root").iterdir())
    assert left == ["not-a-pod", "podbusy-worker", "podin-api", "podin-runtime", "podlate"]


async def test_orphaned_netns_mounts_are_unmounted_unless_a_sandbox_or_process_uses_them(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    runtime.netns_dir = str(tmp_path / "netns")
    sid = await runtime.run_sandbox(sandbox("u1"))
    used = await runtime.sandbox_netns(sid)
    os.makedirs(runtime.netns_dir)
    paths = {name: os.path.join(runtime.netns_dir, name) for name in ("orphan", "with-process")}
    for p in [used, *paths.values()]:
        Path(p).touch()
    unmounted: list[str] = []
    clock = [100.0]
    gc = NodeGC(runtime, list_mounts=lambda d: {used, *paths.values()} if d == runtime.netns_dir else set(),
                netns_users=lambda ps: {p for p in ps if p.endswith("with-process")}, umount=unmounted.append,
                clock=lambda: clock[0])
    assert (await gc.collect_orphans())[1] == []
    clock[0] += 5
    assert (await gc.collect_orphans())[1] == []  # twice, but not 10 s yet: a RunPodSandbox may still be at it
    clock[0] += 5
    assert (await gc.collect_orphans())[1] == [paths["orphan"]]
    assert unmounted == [paths["orphan"]]
    assert sorted(os.listdir(runtime.netns_dir)) == sorted([os.path.basename(used), "with-process"])


async def test_no_netns_gc_when_the_runtime_does_not_own_the_folder(tmp_path: Path) -> None:
    runtime = FakeRuntime()  # netns_dir "" (e.g. /var/run/netns, shared with the host)
    asked: list[str] = []
    gc = NodeGC(runtime, list_mounts=lambda d: asked.append(d) or set())  # type: ignore[func-returns-value]
    await gc.collect_orphans()
    await gc.collect_orphans()
    assert asked == []


async def test_log_files_of_containers_gone_from_the_runtime_are_removed(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    root = tmp_path / "kubelet"
    sb = sandbox("u1", log_dir=str(root / "pods/u1/logs"))
    sid = await runtime.run_sandbox(sb)
    await run_container(runtime, sid, sb, "main", 1)
    stale = root / "pods/u1/logs/main/0.log"
    stale.write_text("from a container removed elsewhere\n")
    Path(f"{stale}.20240101-000000.000000").write_text("x")
    gc = NodeGC(runtime, root_dir=str(root))
    _, _, removed = await gc.collect_orphans()
    assert sorted(os.path.basename(p) for p in removed) == ["0.log", "0.log.20240101-000000.000000"]
    assert sorted(p.name for p in (root / "pods/u1/logs/main").iterdir()) == [
        "1.log", "1.log.20240101-000000.000000.gz"]


async def test_a_full_pass_and_the_kubelet_api(tmp_path: Path) -> None:
    import httpx
    from starlette.applications import Starlette

    from kubelet.gc import gc_routes

    runtime, pods = await image_setup()

    class View:
        gc = NodeGC(runtime, api_pods=lambda: pods, fs_stats=Disk(1000, 900))

    result = await View.gc.collect(images=True)
    assert result.containers == [] and result.images == [] and View.gc.passes == 1
    app = Starlette(routes=gc_routes(View()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kubelet") as http:
        r = await http.post("/gc/images")
        assert r.status_code == 200 and len(r.json()["images"]) == 3  # app, old, fn (no function keeps it here)
        r = await http.post("/gc")
        assert r.status_code == 200 and r.json()["images"] == []
    app = Starlette(routes=gc_routes(object()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kubelet") as http:
        assert (await http.post("/gc/images")).status_code == 404


def test_cri_messages_for_gc_keep_the_public_field_numbers() -> None:
    from kubelet.cri import api_pb2 as pb

    def numbers(message: type) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    assert numbers(pb.Image) == {"id": 1, "repo_tags": 2, "repo_digests": 3, "size": 4, "uid": 5, "username": 6,
                                 "spec": 7, "pinned": 8}
    assert numbers(pb.FilesystemUsage) == {"timestamp": 1, "fs_id": 2, "used_bytes": 3, "inodes_used": 4}
    assert numbers(pb.ImageFsInfoResponse) == {"image_filesystems": 1, "container_filesystems": 2}
    assert numbers(pb.ReopenContainerLogRequest) == {"container_id": 1}
    assert numbers(pb.StatusResponse) == {"status": 1, "info": 2}
    assert numbers(pb.RuntimeCondition) == {"type": 1, "status": 2, "reason": 3, "message": 4}
    methods = [m.name for m in pb.DESCRIPTOR.services_by_name["RuntimeService"].methods]
    assert {"ReopenContainerLog", "Status"} <= set(methods)
