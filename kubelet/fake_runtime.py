"""An in-memory ``Runtime`` for unit tests: records every call and follows containerd's state rules.

    rt = FakeRuntime(images={"busybox"}, registry={"busybox", "python:3.11"})
    ...  # drive the kubelet
    assert ("stop_container", (cid, 30)) in rt.calls
    rt.exit_container(cid, 1)          # the process ended: EXITED, exit code 1, reason "Error"

The rules it shares with ``CriRuntime`` on containerd 1.6:
- image names are normalized (``busybox`` → ``docker.io/library/busybox:latest``); ``pull_image`` and
  ``image_ref`` return an image id ``sha256:…``; a container's status shows the image's tag and a
  ``repo@sha256:…`` reference (a pod's imageID).
- a sandbox is READY after ``run_sandbox`` with an IP from ``pod_cidr`` (none with host network),
  NOTREADY after ``stop_sandbox`` (its IP released, its running containers killed: exit 137);
  ``remove_sandbox`` removes its containers too.
- a container is CREATED → RUNNING (``start_container``) → EXITED; ``stop_container`` kills it
  (exit 143 after SIGTERM when ``timeout`` > 0, else 137; or what ``term_exit_codes`` says);
  removing a running one kills it first. Reasons: exit 0 "Completed", else "Error", or "OOMKilled".
- (container name, attempt) is unique in a sandbox, (pod uid, attempt) among sandboxes, until removed.
- stopping or removing an unknown id is not an error; every other call on one raises
  ``NotFoundInRuntime``; starting a container that is not CREATED raises ``RuntimeFailure``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from kubelet.cri_runtime import container_labels, sandbox_labels
from kubelet.runtime import (
    ContainerConfig,
    ContainerStats,
    ContainerStatus,
    ExecResult,
    FsUsage,
    ImageInfo,
    ImagePullError,
    NotFoundInRuntime,
    RuntimeCondition,
    RuntimeFailure,
    RuntimeInfo,
    SandboxConfig,
    SandboxStatus,
    normalize_image,
)

__all__ = ["FakeRuntime", "exit_reason", "normalize_image"]


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def exit_reason(code: int) -> str:
    return "Completed" if code == 0 else "Error"


@dataclass
class _Sandbox:
    id: str
    config: SandboxConfig
    state: str
    ip: str
    created_at: int


@dataclass
class _Container:
    id: str
    sandbox_id: str
    config: ContainerConfig
    sandbox: SandboxConfig
    image: str  # normalized name
    state: str = "CREATED"
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    stats: ContainerStats | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class FakeRuntime:
    """``kubelet.runtime.Runtime`` in memory. Knobs (all public attributes, change them any time):

    - ``images``: normalized names present locally (give short names to the constructor).
    - ``registry``: names ``pull_image`` can fetch; None: every name.
    - ``pull_failures``: name → message: pulling it raises ``ImagePullError`` (even if present).
    - ``exit_on_start``: container name → (exit code, reason or ""): it exits right after it starts.
    - ``term_exit_codes``: container name → exit code after a SIGTERM (e.g. 0 for a graceful app).
    - ``exec_handler``: (container id, command) → ``ExecResult``; default: ``echo`` echoes, else exit 0.
    - ``fail_next``: method name → exception raised by the next call of that method (once).
    - ``pod_cidr``: where sandbox IPs come from.
    - ``image_sizes``: normalized name → bytes (``list_images``; default 1 MiB); ``pinned_images``: names
      ``list_images`` marks pinned; ``sandbox_image``: what ``runtime_status`` names as the pause image.
    - ``conditions``: what ``runtime_status`` reports (RuntimeReady and NetworkReady True by default);
      ``netns_dir``: where sandboxes' network namespaces "are" (``sandbox_netns``; "" = none).
    - ``imagefs``: the mount point ``image_fs_info`` reports.
    ``calls`` lists every call as ``(method, args)`` with the positional arguments as given.
    """

    def __init__(
        self,
        *,
        images: Iterable[str] = ("pause:3.9", "busybox"),
        registry: Iterable[str] | None = None,
        pull_failures: dict[str, str] | None = None,
        pod_cidr: str = "10.88.0.0/24",
    ) -> None:
        self.images: set[str] = {normalize_image(i) for i in images}
        self.registry: set[str] | None = None if registry is None else {normalize_image(i) for i in registry}
        self.pull_failures: dict[str, str] = {normalize_image(k): v for k, v in (pull_failures or {}).items()}
        self.exit_on_start: dict[str, tuple[int, str]] = {}
        self.term_exit_codes: dict[str, int] = {}
        self.exec_handler: Callable[[str, list[str]], ExecResult] | None = None
        self.fail_next: dict[str, Exception] = {}
        self.pod_cidr = ipaddress.ip_network(pod_cidr)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.sandboxes: dict[str, _Sandbox] = {}
        self.containers: dict[str, _Container] = {}
        self._ips_in_use: set[str] = set()
        self.image_sizes: dict[str, int] = {}
        self.pinned_images: set[str] = set()
        self.sandbox_image = normalize_image("pause:3.9")
        self.conditions: list[RuntimeCondition] = [RuntimeCondition("RuntimeReady", True),
                                                   RuntimeCondition("NetworkReady", True)]
        self.netns_dir = ""
        self.imagefs = "/fake/imagefs"

    # -- helpers for tests -----------------------------------------------------------------------

    def calls_to(self, method: str) -> list[tuple[Any, ...]]:
        """The argument tuples of every call to ``method``, in order."""
        return [args for m, args in self.calls if m == method]

    def exit_container(self, container_id: str, code: int, reason: str = "") -> None:
        """The container's process ended with ``code`` (reason default: "Completed" for 0, else "Error")."""
        c = self._container(container_id)
        if c.state != "RUNNING":
            raise RuntimeFailure(f"exit_container: container {container_id} is {c.state}, not RUNNING")
        self._exit(c, code, reason or exit_reason(code))

    def set_stats(self, container_id: str, cpu_core_ns: int, memory_working_set: int) -> None:
        self._container(container_id).stats = ContainerStats(container_id, cpu_core_ns, memory_working_set, _now())

    def ips_in_use(self) -> set[str]:
        """The IPs of sandboxes not yet stopped (what host-local IPAM would list)."""
        return set(self._ips_in_use)

    # -- internals -------------------------------------------------------------------------------

    def _record(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        exc = self.fail_next.pop(method, None)
        if exc is not None:
            raise exc

    def _sandbox(self, sandbox_id: str) -> _Sandbox:
        s = self.sandboxes.get(sandbox_id)
        if s is None:
            raise NotFoundInRuntime(f"sandbox {sandbox_id!r} not found")
        return s

    def _container(self, container_id: str) -> _Container:
        c = self.containers.get(container_id)
        if c is None:
            raise NotFoundInRuntime(f"container {container_id!r} not found")
        return c

    def _exit(self, c: _Container, code: int, reason: str) -> None:
        c.state, c.exit_code, c.reason, c.finished_at = "EXITED", code, reason, _now()

    def _allocate_ip(self) -> str:
        for host in self.pod_cidr.hosts():
            ip = str(host)
            if ip.endswith(".1") or ip in self._ips_in_use:  # .1 is the bridge
                continue
            self._ips_in_use.add(ip)
            return ip
        raise RuntimeFailure(f"RunPodSandbox: no free IP in {self.pod_cidr}")

    def _status(self, c: _Container) -> ContainerStatus:
        log_path = os.path.join(c.sandbox.log_directory, c.config.log_path) if c.sandbox.log_directory else ""
        repo = c.image.rsplit(":", 1)[0] if "@" not in c.image else c.image.split("@", 1)[0]
        return ContainerStatus(
            id=c.id,
            sandbox_id=c.sandbox_id,
            name=c.config.name,
            attempt=c.config.attempt,
            state=c.state,
            image=c.image,
            image_ref=f"{repo}@{_digest(c.image)}",
            created_at=c.created_at,
            started_at=c.started_at,
            finished_at=c.finished_at,
            exit_code=c.exit_code,
            reason=c.reason,
            message=c.message,
            log_path=log_path if c.config.log_path else "",
            labels=container_labels(c.config, c.sandbox),
            annotations=dict(c.config.annotations),
        )

    def _sandbox_status(self, s: _Sandbox) -> SandboxStatus:
        return SandboxStatus(
            id=s.id,
            pod_uid=s.config.pod_uid,
            name=s.config.name,
            namespace=s.config.namespace,
            attempt=s.config.attempt,
            state=s.state,
            ip=s.ip,
            created_at=s.created_at,
            labels=sandbox_labels(s.config),
            annotations=dict(s.config.annotations),
        )

    def _image_by_ref(self, image: str) -> str | None:
        """The normalized name of a present image given by name or id."""
        if image.startswith("sha256:"):
            return next((name for name in sorted(self.images) if _digest(name) == image), None)
        name = normalize_image(image)
        return name if name in self.images else None

    # -- Runtime ---------------------------------------------------------------------------------

    async def version(self) -> str:
        self._record("version")
        return "fake 0.0.0 (CRI v1)"

    async def pull_image(self, image: str) -> str:
        self._record("pull_image", image)
        name = normalize_image(image)
        if name in self.pull_failures:
            raise ImagePullError(f"pull {image}: {self.pull_failures[name]}")
        if name not in self.images:
            if self.registry is not None and name not in self.registry:
                raise ImagePullError(f"pull {image}: PullImage: failed to resolve reference {name!r}: not found")
            self.images.add(name)
        return _digest(name)

    async def image_ref(self, image: str) -> str | None:
        self._record("image_ref", image)
        name = self._image_by_ref(image)
        return None if name is None else _digest(name)

    async def remove_image(self, image: str) -> None:
        self._record("remove_image", image)
        name = self._image_by_ref(image)
        if name is not None:
            self.images.discard(name)

    async def run_sandbox(self, config: SandboxConfig) -> str:
        self._record("run_sandbox", config)
        for s in self.sandboxes.values():
            if (s.config.pod_uid, s.config.name, s.config.namespace, s.config.attempt) == (
                config.pod_uid,
                config.name,
                config.namespace,
                config.attempt,
            ):
                raise RuntimeFailure(f"RunPodSandbox: name for sandbox of pod {config.pod_uid} is reserved")
        sid = _new_id("sandbox", config.pod_uid, config.attempt)
        ip = "" if config.host_network else self._allocate_ip()
        self.sandboxes[sid] = _Sandbox(sid, config, "READY", ip, _now())
        return sid

    async def stop_sandbox(self, sandbox_id: str) -> None:
        self._record("stop_sandbox", sandbox_id)
        s = self.sandboxes.get(sandbox_id)
        if s is None:
            return
        for c in self.containers.values():
            if c.sandbox_id == sandbox_id and c.state == "RUNNING":
                self._exit(c, 137, "Error")
        s.state = "NOTREADY"
        self._ips_in_use.discard(s.ip)
        s.ip = ""

    async def remove_sandbox(self, sandbox_id: str) -> None:
        self._record("remove_sandbox", sandbox_id)
        s = self.sandboxes.pop(sandbox_id, None)
        if s is None:
            return
        self._ips_in_use.discard(s.ip)
        for cid in [cid for cid, c in self.containers.items() if c.sandbox_id == sandbox_id]:
            del self.containers[cid]

    async def sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        self._record("sandbox_status", sandbox_id)
        return self._sandbox_status(self._sandbox(sandbox_id))

    async def list_sandboxes(self) -> list[SandboxStatus]:
        self._record("list_sandboxes")
        return [self._sandbox_status(s) for s in self.sandboxes.values()]

    async def create_container(self, sandbox_id: str, config: ContainerConfig, sandbox: SandboxConfig) -> str:
        self._record("create_container", sandbox_id, config, sandbox)
        s = self._sandbox(sandbox_id)
        if s.state != "READY":
            raise RuntimeFailure(f"CreateContainer: sandbox {sandbox_id} is not ready")
        image = self._image_by_ref(config.image)
        if image is None:
            raise NotFoundInRuntime(f"CreateContainer: image {config.image!r} not found")
        for c in self.containers.values():
            if c.sandbox_id == sandbox_id and (c.config.name, c.config.attempt) == (config.name, config.attempt):
                raise RuntimeFailure(
                    f"CreateContainer: name {config.name} attempt {config.attempt} is reserved for {c.id}"
                )
        cid = _new_id("container", sandbox_id, config.name, config.attempt)
        self.containers[cid] = _Container(cid, sandbox_id, config, sandbox, image, created_at=_now())
        return cid

    async def start_container(self, container_id: str) -> None:
        self._record("start_container", container_id)
        c = self._container(container_id)
        if c.state != "CREATED":
            raise RuntimeFailure(f"StartContainer: container {container_id} is in {c.state} state")
        c.state, c.started_at = "RUNNING", _now()
        if c.config.name in self.exit_on_start:
            code, reason = self.exit_on_start[c.config.name]
            self._exit(c, code, reason or exit_reason(code))

    async def stop_container(self, container_id: str, timeout: int) -> None:
        self._record("stop_container", container_id, timeout)
        c = self.containers.get(container_id)
        if c is None or c.state != "RUNNING":
            return
        code = self.term_exit_codes.get(c.config.name, 143) if timeout > 0 else 137
        self._exit(c, code, exit_reason(code))

    async def remove_container(self, container_id: str) -> None:
        self._record("remove_container", container_id)
        self.containers.pop(container_id, None)

    async def container_status(self, container_id: str) -> ContainerStatus:
        self._record("container_status", container_id)
        return self._status(self._container(container_id))

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]:
        self._record("list_containers", sandbox_id)
        return [self._status(c) for c in self.containers.values() if sandbox_id in (None, c.sandbox_id)]

    async def exec_sync(self, container_id: str, command: list[str], timeout: int) -> ExecResult:
        self._record("exec_sync", container_id, command, timeout)
        c = self._container(container_id)
        if c.state != "RUNNING":
            raise RuntimeFailure(f"ExecSync: container {container_id} is not running")
        if self.exec_handler is not None:
            return self.exec_handler(container_id, command)
        if command and command[0] == "echo":
            return ExecResult(0, (" ".join(command[1:]) + "\n").encode(), b"")
        return ExecResult(0, b"", b"")

    async def container_stats(self, container_id: str) -> ContainerStats:
        self._record("container_stats", container_id)
        c = self._container(container_id)
        if c.stats is not None:
            return replace(c.stats, timestamp=_now())
        return ContainerStats(container_id, 0, 0, _now())


    # -- node health and garbage collection ------------------------------------------------------

    async def runtime_status(self) -> RuntimeInfo:
        self._record("runtime_status")
        return RuntimeInfo(conditions=tuple(self.conditions), netns_dir=self.netns_dir,
                           sandbox_image=self.sandbox_image)

    async def list_images(self) -> list[ImageInfo]:
        self._record("list_images")
        out = []
        for name in sorted(self.images):
            repo = name.rsplit(":", 1)[0] if "@" not in name else name.split("@", 1)[0]
            out.append(ImageInfo(id=_digest(name), repo_tags=(name,), repo_digests=(f"{repo}@{_digest(name)}",),
                                 size=self.image_sizes.get(name, 1024 * 1024),
                                 pinned=name in self.pinned_images))
        return out

    async def image_fs_info(self) -> list[FsUsage]:
        self._record("image_fs_info")
        used = sum(self.image_sizes.get(name, 1024 * 1024) for name in self.images)
        return [FsUsage(mountpoint=self.imagefs, used_bytes=used, inodes_used=len(self.images))]

    async def reopen_container_log(self, container_id: str) -> None:
        """Like containerd: only for a running container; creates the (empty) file at its log path."""
        self._record("reopen_container_log", container_id)
        c = self._container(container_id)
        if c.state != "RUNNING":
            raise RuntimeFailure(f"ReopenContainerLog: container {container_id} is not running")
        path = self._status(c).log_path
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "ab"):
                pass

    async def sandbox_netns(self, sandbox_id: str) -> str:
        self._record("sandbox_netns", sandbox_id)
        s = self._sandbox(sandbox_id)
        if not self.netns_dir or s.config.host_network or s.state != "READY":
            return ""
        return os.path.join(self.netns_dir, f"cni-{s.id[:12]}")


_counter = 0


def _new_id(*parts: Any) -> str:
    """A 64-hex id like containerd's, unique within the process."""
    global _counter
    _counter += 1
    return hashlib.sha256(f"{_counter}:{parts!r}".encode()).hexdigest()


def _now() -> int:
    return time.time_ns()
