"""``Runtime`` over the CRI v1 gRPC API (containerd's CRI plugin), with grpc.aio.

    CriRuntime ──unix socket──▶ containerd  (runtime.v1.RuntimeService + runtime.v1.ImageService)

Errors: every gRPC error becomes a ``RuntimeFailure`` with a one-line message naming the call;
``NOT_FOUND`` becomes ``NotFoundInRuntime``; any failure of ``PullImage`` becomes ``ImagePullError``.
Cleanup is idempotent: stopping or removing an id the runtime does not know is not an error.
Every call has a deadline (``timeout``; calls that wait on purpose — stop, exec, pull — get theirs on top).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import grpc

from kubelet.cri import api_pb2 as pb
from kubelet.cri import api_pb2_grpc as pb_grpc
from kubelet.runtime import (
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
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

CRI_API_VERSION = "v1"
_MAX_MESSAGE = 64 * 1024 * 1024  # ExecSync output may be up to 16 MiB per stream
_PROTOCOLS = {"TCP": pb.TCP, "UDP": pb.UDP, "SCTP": pb.SCTP}
_SANDBOX_STATES = {pb.SANDBOX_READY: "READY", pb.SANDBOX_NOTREADY: "NOTREADY"}
_CONTAINER_STATES = {
    pb.CONTAINER_CREATED: "CREATED",
    pb.CONTAINER_RUNNING: "RUNNING",
    pb.CONTAINER_EXITED: "EXITED",
    pb.CONTAINER_UNKNOWN: "UNKNOWN",
}


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def sandbox_labels(config: SandboxConfig) -> dict[str, str]:
    """The labels set on a sandbox: the config's, plus the pod's identity."""
    return {
        **config.labels,
        LABEL_POD_UID: config.pod_uid,
        LABEL_POD_NAME: config.name,
        LABEL_POD_NAMESPACE: config.namespace,
    }


def container_labels(config: ContainerConfig, sandbox: SandboxConfig) -> dict[str, str]:
    """The labels set on a container: the config's, plus the pod's identity and the container's name."""
    return {**config.labels, **sandbox_labels(sandbox), LABEL_CONTAINER_NAME: config.name}


def sandbox_config_pb(config: SandboxConfig) -> pb.PodSandboxConfig:
    network = pb.NODE if config.host_network else pb.POD
    out = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=config.name, uid=config.pod_uid, namespace=config.namespace, attempt=config.attempt
        ),
        hostname=config.hostname,
        log_directory=config.log_directory,
        port_mappings=[
            pb.PortMapping(
                protocol=_PROTOCOLS.get(p.protocol.upper(), pb.TCP),
                container_port=p.container_port,
                host_port=p.host_port,
                host_ip=p.host_ip,
            )
            for p in config.port_mappings
        ],
        labels=sandbox_labels(config),
        annotations=config.annotations,
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=config.cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=network, pid=pb.CONTAINER, ipc=pb.POD)
            ),
        ),
    )
    if config.dns_servers or config.dns_searches or config.dns_options:
        out.dns_config.CopyFrom(
            pb.DNSConfig(servers=config.dns_servers, searches=config.dns_searches, options=config.dns_options)
        )
    return out


def container_config_pb(config: ContainerConfig, sandbox: SandboxConfig) -> pb.ContainerConfig:
    network = pb.NODE if sandbox.host_network else pb.POD
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=config.name, attempt=config.attempt),
        image=pb.ImageSpec(image=config.image),
        command=config.command,
        args=config.args,
        working_dir=config.working_dir,
        envs=[pb.KeyValue(key=k, value=v) for k, v in config.envs],
        mounts=[
            pb.Mount(container_path=m.container_path, host_path=m.host_path, readonly=m.readonly) for m in config.mounts
        ],
        labels=container_labels(config, sandbox),
        annotations=config.annotations,
        log_path=config.log_path,
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(
                cpu_period=config.cpu_period,
                cpu_quota=config.cpu_quota,
                cpu_shares=config.cpu_shares,
                memory_limit_in_bytes=config.memory_limit_bytes,
                oom_score_adj=0,
            ),
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(network=network, pid=pb.CONTAINER, ipc=pb.POD)
            ),
        ),
    )


def _list_one(container_id: str) -> pb.ListContainersRequest:
    return pb.ListContainersRequest(filter=pb.ContainerFilter(id=container_id))


def _sandbox_status(s: Any, ip: str = "") -> SandboxStatus:
    """A ``SandboxStatus`` from a ``PodSandboxStatus`` or a ``PodSandbox`` message."""
    return SandboxStatus(
        id=s.id,
        pod_uid=s.metadata.uid,
        name=s.metadata.name,
        namespace=s.metadata.namespace,
        attempt=s.metadata.attempt,
        state=_SANDBOX_STATES.get(s.state, "NOTREADY"),
        ip=ip,
        created_at=s.created_at,
        labels=dict(s.labels),
        annotations=dict(s.annotations),
    )


def _container_status(s: pb.ContainerStatus, sandbox_id: str) -> ContainerStatus:
    return ContainerStatus(
        id=s.id,
        sandbox_id=sandbox_id,
        name=s.metadata.name,
        attempt=s.metadata.attempt,
        state=_CONTAINER_STATES.get(s.state, "UNKNOWN"),
        image=s.image.image,
        image_ref=s.image_ref,
        created_at=s.created_at,
        started_at=s.started_at,
        finished_at=s.finished_at,
        exit_code=s.exit_code,
        reason=s.reason,
        message=one_line(s.message) if s.message else "",
        log_path=s.log_path,
        labels=dict(s.labels),
        annotations=dict(s.annotations),
    )


class CriRuntime:
    """``kubelet.runtime.Runtime`` over containerd's CRI socket at ``socket_path``.

    ``timeout`` bounds every call (seconds); ``pull_timeout`` bounds an image pull (default 300 s).
    Use as ``async with CriRuntime(...) as rt`` or call ``close()``.
    """

    def __init__(self, socket_path: str, *, timeout: float = 10.0, pull_timeout: float = 300.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.pull_timeout = pull_timeout
        self._channel: Any = None
        self._runtime: Any = None
        self._images: Any = None

    # -- channel ---------------------------------------------------------------------------------

    def _stubs(self) -> tuple[Any, Any]:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                f"unix://{self.socket_path}",
                options=[
                    ("grpc.max_receive_message_length", _MAX_MESSAGE),
                    ("grpc.max_send_message_length", _MAX_MESSAGE),
                    # containerd restarted: reconnect within seconds, not after gRPC's default 120 s cap.
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 2000),
                ],
            )
            self._runtime = pb_grpc.RuntimeServiceStub(self._channel)
            self._images = pb_grpc.ImageServiceStub(self._channel)
        return self._runtime, self._images

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def __aenter__(self) -> CriRuntime:
        self._stubs()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, service: str, method: str, request: Any, timeout: float | None = None) -> Any:
        runtime, images = self._stubs()
        stub = runtime if service == "runtime" else images
        try:
            return await getattr(stub, method)(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as e:
            raise self._error(method, e) from None

    def _error(self, method: str, e: grpc.aio.AioRpcError) -> RuntimeFailure:
        code = e.code()
        details = one_line(e.details() or code.name)
        if code == grpc.StatusCode.UNAVAILABLE:
            return RuntimeFailure(f"{method}: container runtime unavailable at {self.socket_path}: {details}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return RuntimeFailure(f"{method}: no answer from the container runtime in time: {details}")
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFoundInRuntime(f"{method}: {details}")
        return RuntimeFailure(f"{method}: {details}")

    # -- Runtime ---------------------------------------------------------------------------------

    async def version(self) -> str:
        r = await self._call("runtime", "Version", pb.VersionRequest(version=CRI_API_VERSION))
        return f"{r.runtime_name} {r.runtime_version} (CRI {r.runtime_api_version})"

    async def pull_image(self, image: str) -> str:
        try:
            r = await self._call(
                "images", "PullImage", pb.PullImageRequest(image=pb.ImageSpec(image=image)), self.pull_timeout
            )
        except RuntimeFailure as e:
            raise ImagePullError(f"pull {image}: {e}") from None
        return str(r.image_ref)

    async def image_ref(self, image: str) -> str | None:
        r = await self._call("images", "ImageStatus", pb.ImageStatusRequest(image=pb.ImageSpec(image=image)))
        if not r.HasField("image") or not r.image.id:
            return None
        return str(r.image.id)

    async def remove_image(self, image: str) -> None:
        try:
            await self._call("images", "RemoveImage", pb.RemoveImageRequest(image=pb.ImageSpec(image=image)))
        except NotFoundInRuntime:
            pass

    async def run_sandbox(self, config: SandboxConfig) -> str:
        r = await self._call(
            "runtime", "RunPodSandbox", pb.RunPodSandboxRequest(config=sandbox_config_pb(config)), self.timeout * 3
        )
        return str(r.pod_sandbox_id)

    async def stop_sandbox(self, sandbox_id: str) -> None:
        try:
            await self._call(
                "runtime", "StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), self.timeout * 3
            )
        except NotFoundInRuntime:
            pass

    async def remove_sandbox(self, sandbox_id: str) -> None:
        try:
            await self._call(
                "runtime", "RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), self.timeout * 3
            )
        except NotFoundInRuntime:
            pass

    async def sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        r = await self._call("runtime", "PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id))
        return _sandbox_status(r.status, r.status.network.ip)

    async def list_sandboxes(self) -> list[SandboxStatus]:
        """Every sandbox; the IP of ready ones is filled in (one status call each)."""
        r = await self._call("runtime", "ListPodSandbox", pb.ListPodSandboxRequest())

        async def one(item: Any) -> SandboxStatus | None:
            if item.state != pb.SANDBOX_READY:
                return _sandbox_status(item)
            try:
                return await self.sandbox_status(item.id)
            except NotFoundInRuntime:
                return None  # removed meanwhile

        found = await asyncio.gather(*(one(item) for item in r.items))
        return [s for s in found if s is not None]

    async def create_container(self, sandbox_id: str, config: ContainerConfig, sandbox: SandboxConfig) -> str:
        request = pb.CreateContainerRequest(
            pod_sandbox_id=sandbox_id,
            config=container_config_pb(config, sandbox),
            sandbox_config=sandbox_config_pb(sandbox),
        )
        r = await self._call("runtime", "CreateContainer", request, self.timeout * 3)
        return str(r.container_id)

    async def start_container(self, container_id: str) -> None:
        await self._call(
            "runtime", "StartContainer", pb.StartContainerRequest(container_id=container_id), self.timeout * 3
        )

    async def stop_container(self, container_id: str, timeout: int) -> None:
        try:
            await self._call(
                "runtime",
                "StopContainer",
                pb.StopContainerRequest(container_id=container_id, timeout=max(0, int(timeout))),
                max(0, timeout) + self.timeout,
            )
        except NotFoundInRuntime:
            pass

    async def remove_container(self, container_id: str) -> None:
        try:
            await self._call("runtime", "RemoveContainer", pb.RemoveContainerRequest(container_id=container_id))
        except NotFoundInRuntime:
            pass

    async def container_status(self, container_id: str) -> ContainerStatus:
        # ContainerStatus does not name the sandbox; the list entry does: ask both at once.
        r, lst = await asyncio.gather(
            self._call("runtime", "ContainerStatus", pb.ContainerStatusRequest(container_id=container_id)),
            self._call("runtime", "ListContainers", _list_one(container_id)),
        )
        sandbox_id = lst.containers[0].pod_sandbox_id if lst.containers else ""
        return _container_status(r.status, sandbox_id)

    async def list_containers(self, sandbox_id: str | None = None) -> list[ContainerStatus]:
        """Every container (of ``sandbox_id`` if given), with full status (one status call each)."""
        request = pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sandbox_id or ""))
        r = await self._call("runtime", "ListContainers", request)

        async def one(item: Any) -> ContainerStatus | None:
            try:
                s = await self._call("runtime", "ContainerStatus", pb.ContainerStatusRequest(container_id=item.id))
            except NotFoundInRuntime:
                return None  # removed meanwhile
            return _container_status(s.status, item.pod_sandbox_id)

        found = await asyncio.gather(*(one(item) for item in r.containers))
        return [s for s in found if s is not None]

    async def exec_sync(self, container_id: str, command: list[str], timeout: int) -> ExecResult:
        request = pb.ExecSyncRequest(container_id=container_id, cmd=command, timeout=max(0, int(timeout)))
        deadline = (timeout + self.timeout) if timeout > 0 else None
        runtime, _ = self._stubs()
        try:
            r = await runtime.ExecSync(request, timeout=deadline)
        except grpc.aio.AioRpcError as e:
            raise self._error("ExecSync", e) from None
        return ExecResult(exit_code=r.exit_code, stdout=r.stdout, stderr=r.stderr)

    async def container_stats(self, container_id: str) -> ContainerStats:
        r = await self._call("runtime", "ContainerStats", pb.ContainerStatsRequest(container_id=container_id))
        s = r.stats
        return ContainerStats(
            container_id=s.attributes.id or container_id,
            cpu_usage_core_nanoseconds=s.cpu.usage_core_nano_seconds.value,
            memory_working_set_bytes=s.memory.working_set_bytes.value,
            timestamp=s.cpu.timestamp or s.memory.timestamp,
        )

    # -- node health and garbage collection ------------------------------------------------------

    async def runtime_status(self) -> RuntimeInfo:
        r = await self._call("runtime", "Status", pb.StatusRequest(verbose=True))
        conditions = tuple(RuntimeCondition(type=c.type, status=c.status, reason=c.reason,
                                            message=one_line(c.message) if c.message else "")
                           for c in r.status.conditions)
        netns_dir = sandbox_image = ""
        try:
            config = json.loads(r.info.get("config") or "{}")
        except ValueError:
            config = {}
        if isinstance(config, dict):
            # containerd 1.6+: netns_mounts_under_state_dir puts them in <CRI state dir>/netns, a folder the
            # cluster owns; the default /var/run/netns is shared with the host, so it is never named here.
            if config.get("netnsMountsUnderStateDir") and config.get("stateDir"):
                netns_dir = os.path.join(str(config["stateDir"]), "netns")
            if config.get("sandboxImage"):
                sandbox_image = normalize_image(str(config["sandboxImage"]))
        return RuntimeInfo(conditions=conditions, netns_dir=netns_dir, sandbox_image=sandbox_image)

    async def list_images(self) -> list[ImageInfo]:
        r = await self._call("images", "ListImages", pb.ListImagesRequest())
        return [ImageInfo(id=i.id, repo_tags=tuple(i.repo_tags), repo_digests=tuple(i.repo_digests), size=i.size,
                          pinned=i.pinned) for i in r.images]

    async def image_fs_info(self) -> list[FsUsage]:
        r = await self._call("images", "ImageFsInfo", pb.ImageFsInfoRequest())
        return [FsUsage(mountpoint=f.fs_id.mountpoint, used_bytes=f.used_bytes.value, inodes_used=f.inodes_used.value)
                for f in r.image_filesystems]

    async def reopen_container_log(self, container_id: str) -> None:
        await self._call("runtime", "ReopenContainerLog", pb.ReopenContainerLogRequest(container_id=container_id))

    async def sandbox_netns(self, sandbox_id: str) -> str:
        r = await self._call("runtime", "PodSandboxStatus",
                             pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True))
        if r.status.state != pb.SANDBOX_READY:
            return ""  # containerd closes (removes) the netns when it stops the sandbox
        try:
            info = json.loads(r.info.get("info") or "{}")
            namespaces = info["runtimeSpec"]["linux"]["namespaces"]
        except (ValueError, KeyError, TypeError):
            return ""
        return next((str(ns.get("path") or "") for ns in namespaces if ns.get("type") == "network"), "")
