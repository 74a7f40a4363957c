"""kubelet.cri_runtime against a real containerd (the cluster's settings), runc, CNI and cgroupfs.

The module starts, in a short temporary home, a containerd of its own (config from
``minik8s.cluster.configs``: its own root, state, socket, CNI conf dir and bridge, registry hosts)
and a docker-registry on a free loopback port. The images the tests need (``pause:3.9`` from
catatonit, ``busybox`` from busybox-static) are built here as tiny OCI archives, imported with
``ctr`` and pushed to that registry, so a CRI ``PullImage`` of ``busybox`` goes through the cluster
registry exactly as in a cluster. Every check that matters is made on the real parts: ``ctr``
against the test's own socket, cgroupfs files, the host-local IPAM folder, the netns mount, the
CRI log file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubelet import cgroups
from kubelet.cri_runtime import CriRuntime
from kubelet.logs import read_log
from kubelet.runtime import (
    LABEL_POD_UID,
    ContainerConfig,
    ImagePullError,
    Mount,
    NotFoundInRuntime,
    RuntimeFailure,
    SandboxConfig,
)
from minik8s.cluster.configs import (
    cni_conflist,
    containerd_config,
    find_cni_bin_dir,
    registry_config,
    registry_hosts_files,
)
from minik8s.cluster.layout import Identity, Layout, load_identity

# Real containerd, runc and CNI, never skipped: `make test` installs them and runs as root.

T = TypeVar("T")
MiB = 1024 * 1024


# ---- a containerd + registry of the test's own ------------------------------------------------


@dataclass
class Node:
    layout: Layout
    ident: Identity
    socket: str

    def ctr(self, *args: str, check: bool = True) -> str:
        cmd = ["ctr", "-n", "k8s.io", "--address", self.socket, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)}: {p.stderr.strip()}")
        return p.stdout

    def ctr_containers(self) -> set[str]:
        return set(self.ctr("containers", "ls", "-q").split())

    def ctr_info(self, container_id: str) -> dict[str, Any]:
        return json.loads(self.ctr("containers", "info", container_id))  # type: ignore[no-any-return]

    def ipam_ips(self) -> set[str]:
        folder = self.layout.cni_ipam / self.ident.cni_network_name
        if not folder.is_dir():
            return set()
        return {p.name for p in folder.iterdir() if p.name.count(".") == 3}

    def cgroup_parent(self, pod_uid: str) -> str:
        return f"{self.ident.cgroup_root}/pod{pod_uid}"


def _wait(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a loop of its own (fixture teardown may happen while a test loop exists)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=120)


async def _remove_everything(socket_path: str) -> None:
    async with CriRuntime(socket_path, timeout=30) as rt:
        for s in await rt.list_sandboxes():
            await rt.stop_sandbox(s.id)
            await rt.remove_sandbox(s.id)


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    home = Path(tempfile.mkdtemp(prefix="mk8s-", dir="/tmp"))
    layout = Layout(home)
    layout.check()
    ident = load_identity(layout, environ={})
    for d in layout.dirs():
        d.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_config(layout, ident, cni_bin_dir=find_cni_bin_dir()))
    layout.cni_conflist.write_text(cni_conflist(ident, ipam_dir=layout.cni_ipam))
    for rel, text in registry_hosts_files(ident).items():
        (layout.certs_d / rel).parent.mkdir(parents=True, exist_ok=True)
        (layout.certs_d / rel).write_text(text)
    layout.registry_config.write_text(registry_config(layout, ident))
    procs: list[subprocess.Popen[bytes]] = []
    n = Node(layout, ident, str(layout.containerd_socket))
    try:
        with open(layout.log("registry"), "ab") as log:
            procs.append(
                subprocess.Popen(
                    ["docker-registry", "serve", str(layout.registry_config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        with open(layout.log("containerd"), "ab") as log:
            procs.append(
                subprocess.Popen(
                    ["containerd", "--config", str(layout.containerd_config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
        _wait(lambda: _port_open(ident.registry_port), 20, "the registry")
        _wait(lambda: n.ctr("version", check=False) and layout.containerd_socket.exists(), 30, "containerd")
        _seed_images(n, home / "images")
        yield n
    finally:
        if procs and procs[-1].poll() is None:
            try:
                _in_thread(_remove_everything(n.socket))
            except Exception as e:
                print(f"cleanup through the CRI failed: {e}")
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        subprocess.run(["ip", "link", "del", ident.bridge], capture_output=True, check=False)
        cgroups.remove_pod_cgroups(ident.cgroup_root)
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[1].startswith(str(home))]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


# ---- tiny OCI images (replaceable by minik8s/images once `make up` seeds the registry) ---------


def _tar(entries: list[tuple[str, ...]]) -> bytes:
    """An uncompressed layer tar of ``("dir", path, mode)``, ``("file", path, host_file, mode)``,
    ``("data", path, text)`` and ``("link", path, target)`` entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, path, *rest in entries:
            info = tarfile.TarInfo(path)
            info.mtime = 0
            data: bytes | None = None
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, int(rest[0], 8)
            elif kind == "link":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, rest[0], 0o777
            else:
                data = Path(rest[0]).read_bytes() if kind == "file" else rest[0].encode()
                info.size, info.mode = len(data), int(rest[1], 8) if kind == "file" else 0o644
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _oci_archive(dest: Path, name: str, layer_tar: bytes, runtime: dict[str, Any]) -> None:
    """An OCI image-layout tar holding one single-layer image named ``name``."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest

    layer = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(layer), "size": len(layer)}
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": blob(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.split(":")[-1],
                    },
                }
            ],
        }
    ).encode()
    with tarfile.open(dest, "w") as tar:
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
        files.update({f"blobs/sha256/{d.split(':')[1]}": data for d, data in blobs.items()})
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _seed_images(n: Node, folder: Path) -> None:
    folder.mkdir()
    applets = subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    busybox = _tar(
        [
            ("dir", "bin", "755"),
            ("dir", "tmp", "1777"),
            ("dir", "etc", "755"),
            ("dir", "root", "700"),
            ("file", "bin/busybox", shutil.which("busybox") or "", "755"),
            ("data", "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("data", "etc/group", "root:x:0:\n"),
            *[("link", f"bin/{a}", "busybox") for a in applets if a != "busybox"],
        ]
    )
    pause = _tar([("file", "catatonit", shutil.which("catatonit") or "", "755")])
    images = {
        "docker.io/library/busybox:latest": (busybox, {"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
        "docker.io/library/pause:3.9": (pause, {"Entrypoint": ["/catatonit", "-P"]}),
    }
    for name, (layer, runtime) in images.items():
        archive = folder / (name.rsplit("/", 1)[1].replace(":", "_") + ".tar")
        _oci_archive(archive, name, layer, runtime)
        n.ctr("images", "import", str(archive))
        remote = f"{n.ident.registry_host}/{name.split('/', 1)[1]}"
        n.ctr("images", "push", "--plain-http", remote, name)


# ---- per test ---------------------------------------------------------------------------------


@pytest.fixture()
async def rt(node: Node) -> AsyncIterator[CriRuntime]:
    runtime = CriRuntime(node.socket, timeout=30)
    try:
        yield runtime
    finally:
        for s in await runtime.list_sandboxes():
            await runtime.stop_sandbox(s.id)
            await runtime.remove_sandbox(s.id)
            uid = s.labels.get(LABEL_POD_UID, "")
            if uid:
                cgroups.remove_pod_cgroups(node.cgroup_parent(uid))
        await runtime.close()


def sandbox_config(node: Node, tmp_path: Path, **kw: Any) -> SandboxConfig:
    uid = str(uuid.uuid4())
    defaults: dict[str, Any] = {
        "pod_uid": uid,
        "name": "web",
        "namespace": "default",
        "hostname": "web-host",
        "log_directory": str(tmp_path / "logs"),
        "cgroup_parent": node.cgroup_parent(uid),
        "labels": {"app": "web"},
        "annotations": {"note": "hello"},
    }
    return SandboxConfig(**{**defaults, **kw})


async def until(what: str, cond: Callable[[], Coroutine[Any, Any, bool]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def start(rt: CriRuntime, sid: str, sb: SandboxConfig, name: str, *command: str, **kw: Any) -> str:
    ref = await rt.pull_image("busybox")
    cfg = ContainerConfig(name=name, image=ref, command=command, log_path=f"{name}/0.log", **kw)
    cid = await rt.create_container(sid, cfg, sb)
    await rt.start_container(cid)
    return cid


async def exited(rt: CriRuntime, cid: str, timeout: float = 20) -> None:
    async def done() -> bool:
        return (await rt.container_status(cid)).state == "EXITED"

    await until(f"container {cid[:12]} to exit", done, timeout)


# ---- tests ------------------------------------------------------------------------------------


async def test_version(rt: CriRuntime) -> None:
    assert (await rt.version()).startswith("containerd ")


async def test_pull_present_image_goes_through_the_cluster_registry(rt: CriRuntime, node: Node) -> None:
    ref = await rt.pull_image("busybox")
    assert ref.startswith("sha256:")
    assert await rt.image_ref("busybox") == ref
    assert await rt.image_ref("docker.io/library/busybox:latest") == ref
    assert "docker.io/library/busybox:latest" in node.ctr("images", "ls", "-q").split()


async def test_pull_missing_image_fails_fast(rt: CriRuntime) -> None:
    t0 = time.monotonic()
    with pytest.raises(ImagePullError) as info:
        await rt.pull_image("nosuch/thing")
    assert time.monotonic() - t0 < 10
    message = str(info.value)
    assert "\n" not in message and "nosuch/thing" in message and "not found" in message
    assert await rt.image_ref("nosuch/thing") is None


async def test_unknown_ids(rt: CriRuntime) -> None:
    with pytest.raises(NotFoundInRuntime):
        await rt.container_status("0" * 64)
    with pytest.raises(NotFoundInRuntime):
        await rt.sandbox_status("0" * 64)
    await rt.stop_container("0" * 64, 1)  # cleanup of what is gone is not an error
    await rt.remove_container("0" * 64)
    await rt.stop_sandbox("0" * 64)
    await rt.remove_sandbox("0" * 64)


async def test_pod_lifecycle_on_the_real_parts(rt: CriRuntime, node: Node, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sb = sandbox_config(node, tmp_path, dns_servers=("10.96.0.10",), dns_searches=("default.svc.cluster.local",))

    # RunPodSandbox: an IP in the pod CIDR from host-local IPAM, a netns, a cgroup parent.
    sid = await rt.run_sandbox(sb)
    st = await rt.sandbox_status(sid)
    assert (st.state, st.pod_uid, st.name, st.namespace) == ("READY", sb.pod_uid, "web", "default")
    assert st.labels["app"] == "web" and st.labels[LABEL_POD_UID] == sb.pod_uid
    assert st.annotations == {"note": "hello"}
    assert st.ip and st.ip in {str(h) for h in node.ident.network.hosts()}
    assert st.ip in node.ipam_ips()
    assert [s.ip for s in await rt.list_sandboxes() if s.id == sid] == [st.ip]
    info = node.ctr_info(sid)
    assert info["Labels"][LABEL_POD_UID] == sb.pod_uid
    netns = next(ns["path"] for ns in info["Spec"]["linux"]["namespaces"] if ns["type"] == "network")
    assert os.path.exists(netns) and netns.startswith(str(node.layout.containerd_state))
    assert info["Spec"]["linux"]["cgroupsPath"] == f"{sb.cgroup_parent}/{sid}"

    # A container with limits, env, working dir, a mount and output on both streams.
    long_line = "x" * 40000  # longer than max_container_log_line_size: written as P fragments
    cid = await start(
        rt,
        sid,
        sb,
        "main",
        "sh",
        "-c",
        f'echo hello; echo oops >&2; echo "$GREETING from $(pwd)"; echo {long_line}; exec sleep 3600',
        envs=(("GREETING", "hi"),),
        working_dir="/tmp",
        mounts=(Mount("/data", str(data)),),
        cpu_period=100000,
        cpu_quota=50000,
        cpu_shares=512,
        memory_limit_bytes=64 * MiB,
        labels={"tier": "front"},
        annotations={"io.kubernetes.container.restartCount": "0"},
    )
    assert cid in node.ctr_containers() and sid in node.ctr_containers()
    assert node.ctr_info(cid)["Spec"]["linux"]["cgroupsPath"] == f"{sb.cgroup_parent}/{cid}"
    path = cgroups.container_cgroup_path(sb.cgroup_parent, cid)
    assert cgroups.cpu_cfs_quota_us(path) == 50000
    assert cgroups.cpu_cfs_period_us(path) == 100000
    assert cgroups.cpu_shares(path) == 512
    assert cgroups.memory_limit_in_bytes(path) == 64 * MiB
    assert cgroups.memory_oom_control(path)["oom_kill_disable"] == 0

    cs = await rt.container_status(cid)
    assert (cs.state, cs.sandbox_id, cs.name, cs.attempt) == ("RUNNING", sid, "main", 0)
    assert cs.image == "docker.io/library/busybox:latest"
    assert cs.image_ref.startswith("docker.io/library/busybox@sha256:")
    assert cs.started_at >= cs.created_at > 0
    assert cs.log_path == str(tmp_path / "logs" / "main" / "0.log")
    assert cs.labels["tier"] == "front" and cs.annotations == {"io.kubernetes.container.restartCount": "0"}
    assert [c.id for c in await rt.list_containers(sid)] == [cid]

    # The CRI log file, raw and parsed.
    async def logged() -> bool:
        return len(list(read_log(cs.log_path))) >= 4

    await until("the log lines", logged)
    raw = Path(cs.log_path).read_text().splitlines()
    assert any(line.split(" ", 3)[1:] == ["stdout", "F", "hello"] for line in raw)
    assert any(line.split(" ", 3)[1:] == ["stderr", "F", "oops"] for line in raw)
    assert any(line.split(" ", 3)[2] == "P" for line in raw)
    lines = list(read_log(cs.log_path))
    assert sorted(lines) == sorted(["hello\n", "oops\n", "hi from /tmp\n", long_line + "\n"])
    # stdout and stderr travel through separate pipes, so their order in the file is not fixed:
    # the tail must be the last line of the whole log, whichever stream wrote it.
    assert list(read_log(cs.log_path, tail_lines=1)) == list(read_log(cs.log_path))[-1:]

    # ExecSync: output, exit code, the pod's hostname and DNS, the mount.
    r = await rt.exec_sync(cid, ["echo", "echoed"], 10)
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"echoed\n", b"")
    assert (await rt.exec_sync(cid, ["sh", "-c", "echo err >&2; exit 3"], 10)).exit_code == 3
    assert (await rt.exec_sync(cid, ["hostname"], 10)).stdout == b"web-host\n"
    resolv = (await rt.exec_sync(cid, ["cat", "/etc/resolv.conf"], 10)).stdout.decode()
    assert "nameserver 10.96.0.10" in resolv and "default.svc.cluster.local" in resolv
    await rt.exec_sync(cid, ["sh", "-c", "echo shared > /data/f"], 10)
    assert (data / "f").read_text() == "shared\n"

    stats = await rt.container_stats(cid)
    assert stats.container_id == cid and stats.memory_working_set_bytes > 0 and stats.timestamp > 0

    # The host reaches the pod IP (busybox httpd in a second container of the same pod).
    web = tmp_path / "www"
    web.mkdir()
    (web / "index.html").write_text("pod says hi\n")
    await start(rt, sid, sb, "httpd", "httpd", "-f", "-p", "8080", "-h", "/www", mounts=(Mount("/www", str(web)),))
    await until("httpd to listen", lambda: _async(_port_open_at, st.ip, 8080))
    r = await rt.exec_sync(cid, ["sh", "-c", "timeout 5 wget -q -O - http://localhost:8080/"], 10)
    assert r.stdout == b"pod says hi\n"

    # StopPodSandbox: containers killed, IP released; RemovePodSandbox: gone, netns gone.
    await rt.stop_sandbox(sid)
    assert (await rt.sandbox_status(sid)).state == "NOTREADY"
    assert (await rt.container_status(cid)).state == "EXITED"
    assert st.ip not in node.ipam_ips()
    await rt.remove_sandbox(sid)
    assert sid not in node.ctr_containers() and cid not in node.ctr_containers()
    assert not os.path.exists(netns)
    assert sid not in {s.id for s in await rt.list_sandboxes()}
    with pytest.raises(NotFoundInRuntime):
        await rt.container_status(cid)

    # The pod's cgroup folders are left behind by containerd; the kubelet removes them.
    dirs = cgroups.pod_cgroup_dirs(sb.cgroup_parent)
    assert dirs["memory"].is_dir() and dirs["cpu"].is_dir()
    assert cgroups.remove_pod_cgroups(sb.cgroup_parent) == []
    assert not any(d.exists() for d in dirs.values())
    assert cgroups.remove_pod_cgroups(sb.cgroup_parent) == []  # idempotent


def _port_open_at(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


async def _async(fn: Callable[..., bool], *args: Any) -> bool:
    return fn(*args)


async def test_exit_codes_reasons_and_stop(rt: CriRuntime, node: Node, tmp_path: Path) -> None:
    sb = sandbox_config(node, tmp_path)
    sid = await rt.run_sandbox(sb)
    ok = await start(rt, sid, sb, "ok", "sh", "-c", "exit 0")
    bad = await start(rt, sid, sb, "bad", "sh", "-c", "exit 2")
    trap = await start(rt, sid, sb, "trap", "sh", "-c", 'trap "exit 7" TERM; while true; do sleep 0.1; done')
    deaf = await start(rt, sid, sb, "deaf", "sleep", "3600")  # PID 1 without a handler ignores SIGTERM
    await exited(rt, ok)
    await exited(rt, bad)
    got = {(s.name, s.state, s.exit_code, s.reason) for s in await rt.list_containers(sid)}
    assert ("ok", "EXITED", 0, "Completed") in got and ("bad", "EXITED", 2, "Error") in got
    st = await rt.container_status(ok)
    # Both times are set. containerd stamps startedAt after the start call returns, so a container
    # that exits at once can show a finish a fraction of a millisecond before its start.
    assert st.started_at > 0 and st.finished_at > 0 and abs(st.finished_at - st.started_at) < 60 * 10**9

    t0 = time.monotonic()
    await rt.stop_container(trap, 10)
    assert time.monotonic() - t0 < 5  # SIGTERM handled: no waiting for the grace period
    st = await rt.container_status(trap)
    assert (st.state, st.exit_code, st.reason) == ("EXITED", 7, "Error")

    t0 = time.monotonic()
    await rt.stop_container(deaf, 2)
    elapsed = time.monotonic() - t0
    assert 1.5 < elapsed < 8  # SIGKILL after the timeout
    st = await rt.container_status(deaf)
    assert (st.state, st.exit_code) == ("EXITED", 137)
    await rt.stop_container(deaf, 2)  # already stopped: no error

    await rt.remove_container(ok)
    assert ok not in node.ctr_containers()
    await rt.remove_container(ok)


async def test_oom_killed(rt: CriRuntime, node: Node, tmp_path: Path) -> None:
    sb = sandbox_config(node, tmp_path)
    sid = await rt.run_sandbox(sb)
    hog = await start(
        rt,
        sid,
        sb,
        "hog",
        "sh",
        "-c",
        'x=$(head -c 64m /dev/zero | tr "\\0" a); echo survived',
        memory_limit_bytes=16 * MiB,
    )
    await exited(rt, hog, timeout=30)
    st = await rt.container_status(hog)
    assert (st.state, st.reason) == ("EXITED", "OOMKilled")
    assert st.exit_code != 0


async def test_no_runtime_at_the_socket_fails_fast(tmp_path: Path) -> None:
    async with CriRuntime(str(tmp_path / "none.sock"), timeout=5) as runtime:
        t0 = time.monotonic()
        with pytest.raises(RuntimeFailure, match="unavailable") as info:
            await runtime.version()
        assert time.monotonic() - t0 < 5 and "\n" not in str(info.value)
        with pytest.raises(ImagePullError):
            await runtime.pull_image("busybox")
