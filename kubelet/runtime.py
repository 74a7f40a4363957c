"""The kubelet's view of a container runtime: pod-shaped, with small types of its own.

The kubelet's logic talks only to ``Runtime``; ``kubelet/cri_runtime.py`` implements it over the
CRI v1 gRPC API of containerd, and ``kubelet/fake_runtime.py`` records calls for unit tests.

    pod worker ──▶ Runtime ──▶ CriRuntime ──gRPC──▶ containerd ──▶ runc
                          └──▶ FakeRuntime (unit tests)

Sandboxes and containers carry the labels below, so a restarted kubelet finds what belongs to
which pod (by uid) in the runtime alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# Labels set on every sandbox and container this kubelet creates.
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
# Annotations on containers: what the kubelet needs to rebuild status after a restart.
ANNOTATION_RESTART_COUNT = "io.kubernetes.container.restartCount"
ANNOTATION_TERMINATION_GRACE = "io.kubernetes.pod.terminationGracePeriod"


class RuntimeFailure(Exception):
    """The runtime refused or failed an operation (``message`` says what, in one line)."""


class ImagePullError(RuntimeFailure):
    """An image could not be pulled (not in the cluster registry, registry unreachable, bad name)."""


class NotFoundInRuntime(RuntimeFailure):
    """The sandbox or container id is unknown to the runtime."""


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    host_port: int
    protocol: str = "TCP"
    host_ip: str = ""


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: str
    readonly: bool = False


@dataclass(frozen=True)
class SandboxConfig:
    pod_uid: str
    name: str
    namespace: str
    attempt: int = 0
    hostname: str = ""
    log_directory: str = ""  # absolute; container log paths are relative to it
    cgroup_parent: str = ""  # cgroupfs path, e.g. /minik8s-3fa2c1/pod<uid>
    port_mappings: tuple[PortMapping, ...] = ()
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    host_network: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerConfig:
    name: str
    image: str  # the image reference as returned by ``pull_image``
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    log_path: str = ""  # relative to the sandbox's log_directory, e.g. "main/0.log"
    attempt: int = 0
    # Resources (Linux cgroups). 0 means "no limit / runtime default".
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_bytes: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxStatus:
    id: str
    pod_uid: str
    name: str
    namespace: str
    attempt: int
    state: str  # "READY" | "NOTREADY"
    ip: str = ""
    created_at: int = 0  # unix nanoseconds
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerStatus:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    state: str  # "CREATED" | "RUNNING" | "EXITED" | "UNKNOWN"
    image: str = ""
    image_ref: str = ""  # the image id / digest (a pod status's imageID)
    created_at: int = 0  # unix nanoseconds; 0 when not yet
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""  # e.g. "Completed", "Error", "OOMKilled"
    message: str = ""
    log_path: str = ""  # absolute
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class ImageInfo:
    """One image the runtime holds (CRI ``Image``)."""

    id: str  # sha256:…, what ``pull_image`` returns
    repo_tags: tuple[str, ...] = ()  # normalized names, e.g. docker.io/library/busybox:latest
    repo_digests: tuple[str, ...] = ()  # repo@sha256:… (a container status's image_ref)
    size: int = 0  # bytes
    pinned: bool = False  # the runtime asks that it never be garbage collected (e.g. the sandbox image)


@dataclass(frozen=True)
class FsUsage:
    """The file system that holds the runtime's images (CRI ``FilesystemUsage``)."""

    mountpoint: str
    used_bytes: int = 0  # by images; containerd computes it lazily (0 at first)
    inodes_used: int = 0


@dataclass(frozen=True)
class RuntimeCondition:
    type: str  # "RuntimeReady" | "NetworkReady" | others (informative)
    status: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class RuntimeInfo:
    """The runtime's own view of its health (CRI ``Status``), plus what the kubelet's GC needs to know."""

    conditions: tuple[RuntimeCondition, ...] = ()
    netns_dir: str = ""  # where pod network namespaces are mounted when the runtime owns that folder, else ""
    sandbox_image: str = ""  # normalized name of the pause image (never garbage collected)

    def condition(self, ctype: str) -> RuntimeCondition | None:
        return next((c for c in self.conditions if c.type == ctype), None)


def normalize_image(image: str) -> str:
    """containerd's (docker's) normalization: ``busybox`` → ``docker.io/library/busybox:latest``."""
    name, _, digest = image.partition("@")
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if digest:
        return f"{name}@{digest}"
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


@dataclass(frozen=True)
class ContainerStats:
    container_id: str
    cpu_usage_core_nanoseconds: int
    memory_working_set_bytes: int
    timestamp: int  # unix nanoseconds


class Runtime(Protocol):
    """What the kubelet needs from a container runtime. Every method may raise ``RuntimeFailure``.

    Ids are the runtime's. Removing something already gone is not an error (idempotent cleanup).
    """

    async def version(self) -> str: ...

    async def pull_image(self, image: str) -> str:
        """Pull ``image`` (e.g. ``busybox`` or ``docker.io/library/busybox:latest``); return its
        reference (an image id). Raises ``ImagePullError`` with a one-line reason."""
        ...

    async def image_ref(self, image: str) -> str | None:
        """The reference of ``image`` if it is present locally, else None."""
        ...

    async def remove_image(self, image: str) -> None: ...

    async def run_sandbox(self, config: SandboxConfig) -> str: ...

    async def stop_sandbox(self, sandbox_id: str) -> None: ...

    async def remove_sandbox(self, sandbox_id: str) -> None: ...

    async def sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        """Raises ``NotFoundInRuntime`` for an unknown id."""
        ...

    async def list_sandboxes(self) -> list[SandboxStatus]: ...

    async def create_container(self, sandbox_id: str, config: ContainerConfig, sandbox: SandboxConfig) -> str: ...

    async def start_container(self, container_id: str) -> None: ...

    async def stop_container(self, container_id: str, timeout: int) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (0: at once)."""
        ...

    async def remove_container(self, container_id: str) -> None: ...

    async def container_status(self, container_id: str) -> ContainerStatus:
        """Raises ``NotFoundInRuntime`` for an unknown id."""
        ...

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]: ...

    async def exec_sync(self, container_id: str, command: list[str], timeout: int) -> ExecResult: ...

    async def container_stats(self, container_id: str) -> ContainerStats: ...

    # -- node health and garbage collection (kubelet/node_status.py, gc.py, logrotate.py) ----------

    async def runtime_status(self) -> RuntimeInfo:
        """The runtime's conditions (``RuntimeReady``, ``NetworkReady``) and folders it owns."""
        ...

    async def list_images(self) -> list[ImageInfo]:
        """Every image the runtime holds."""
        ...

    async def image_fs_info(self) -> list[FsUsage]:
        """The file system(s) holding images (the kubelet measures free space on ``mountpoint``)."""
        ...

    async def reopen_container_log(self, container_id: str) -> None:
        """Make the runtime write a running container's log to a new file at its ``log_path`` (after the
        kubelet renamed the old one). Raises ``RuntimeFailure`` when the container is not running."""
        ...

    async def sandbox_netns(self, sandbox_id: str) -> str:
        """The path of a sandbox's network namespace mount ("" for host network, or once it is closed)."""
        ...
