"""The kubelet's Node: registration (create or update) and heartbeats through ``nodes/{name}/status``.

::

    register()  ── POST nodes (or GET + PUT when it exists: labels, podCIDR) ──▶ PUT nodes/{name}/status
    run()       ── every node-status-update-frequency: probe the runtime, PUT status (lastHeartbeatTime)

Capacity comes from the machine (cpu = usable cores, memory = MemTotal, pods = max-pods);
allocatable = capacity minus the system reserve, because the control plane runs on these same cores.
The InternalIP is the pod CIDR's gateway (``.1``): an address on the bridge this cluster made,
reachable from every pod and from the host, never the machine's external address.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import os
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from kubelet import runtime as rt
from minik8s.api import registry
from minik8s.api.quantity import format_cpu, format_memory, parse_quantity
from minik8s.errors import AlreadyExists, ApiError, Conflict, ConnectionFailed, NotFound
from minik8s.timeutil import rfc3339

log = logging.getLogger(__name__)

NODES = registry.lookup("nodes")

KUBELET_VERSION = "v1.32.0-minik8s"
PRESSURE_CONDITIONS = (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                       ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                       ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))


@dataclass(frozen=True)
class MachineInfo:
    """What the node is made of; ``read_machine()`` fills it from /proc and /etc."""

    cpus: int
    memory_bytes: int
    kernel_version: str = ""
    os_image: str = ""
    architecture: str = ""
    machine_id: str = ""
    boot_id: str = ""
    hostname: str = ""


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        key, _, value = line.partition("=")
        if key == "PRETTY_NAME":
            return value.strip().strip('"')
    return "Linux"


def _memory_total() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def read_machine() -> MachineInfo:
    try:
        cpus = len(os.sched_getaffinity(0))  # what nproc says: the cores this process may use
    except AttributeError:
        cpus = os.cpu_count() or 1
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return MachineInfo(cpus=cpus, memory_bytes=_memory_total(), kernel_version=platform.release(),
                       os_image=_os_image(), architecture=arch, machine_id=_read("/etc/machine-id"),
                       boot_id=_read("/proc/sys/kernel/random/boot_id"), hostname=socket.gethostname())


def parse_reserved(text: str) -> dict[str, Fraction]:
    """``cpu=500m,memory=512Mi`` → {"cpu": 1/2, "memory": 536870912}. Raises ``ValueError``."""
    out: dict[str, Fraction] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in ("cpu", "memory", "pods", "ephemeral-storage"):
            raise ValueError(f"bad reservation {item!r}: expected cpu=QUANTITY or memory=QUANTITY")
        amount = parse_quantity(value.strip())
        if amount < 0:
            raise ValueError(f"bad reservation {item!r}: negative")
        out[key.strip()] = amount
    return out


def pod_gateway(pod_cidr: str) -> str:
    """The first address of the pod CIDR: the bridge's address (``10.88.3.0/24`` → ``10.88.3.1``)."""
    return str(ipaddress.ip_network(pod_cidr, strict=False)[1])


@dataclass
class NodeStatusManager:
    """Registers the Node and keeps its status fresh. ``probe`` says whether the runtime answers."""

    client: Any
    runtime: rt.Runtime
    node_name: str
    pod_cidr: str
    kubelet_port: int
    reserved: dict[str, Fraction] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    max_pods: int = 110
    update_frequency: float = 10.0
    machine: MachineInfo = field(default_factory=read_machine)
    now: Callable[[], str] = rfc3339
    runtime_version: str = ""
    _conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    heartbeats: int = 0

    @property
    def internal_ip(self) -> str:
        return pod_gateway(self.pod_cidr) if self.pod_cidr else "127.0.0.1"

    def node_labels(self) -> dict[str, str]:
        return {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": self.machine.architecture or "amd64", **self.labels}

    def capacity(self) -> dict[str, Fraction]:
        return {"cpu": Fraction(self.machine.cpus), "memory": Fraction(self.machine.memory_bytes),
                "pods": Fraction(self.max_pods)}

    def allocatable(self) -> dict[str, Fraction]:
        return {k: max(Fraction(0), v - self.reserved.get(k, Fraction(0))) for k, v in self.capacity().items()}

    async def _probe(self) -> tuple[bool, str]:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the call completes, and the kubelet would then never stop.
            async with asyncio.timeout(10):
                self.runtime_version = await self.runtime.version()
            return True, ""
        except (rt.RuntimeFailure, TimeoutError, OSError) as exc:
            return False, str(exc) or type(exc).__name__

    def _condition(self, ctype: str, status: str, reason: str, message: str, now: str) -> dict[str, Any]:
        prev = self._conditions.get(ctype)
        # lastTransitionTime moves only when the status flips; lastHeartbeatTime on every report.
        transition = prev["lastTransitionTime"] if prev and prev["status"] == status else now
        cond = {"type": ctype, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": transition}
        self._conditions[ctype] = cond
        return cond

    async def status(self) -> dict[str, Any]:
        """The Node status now (probes the runtime)."""
        ok, why = await self._probe()
        now = self.now()
        conditions = [self._condition(t, "False", reason, msg, now) for t, reason, msg in PRESSURE_CONDITIONS]
        if ok:
            conditions.append(self._condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", now))
        else:
            conditions.append(self._condition("Ready", "False", "ContainerRuntimeUnreachable",
                                              f"container runtime is down: {why}", now))
        cap, alloc = self.capacity(), self.allocatable()
        m = self.machine
        return {
            "capacity": {"cpu": format_cpu(cap["cpu"]), "memory": format_memory(cap["memory"]),
                         "pods": str(int(cap["pods"]))},
            "allocatable": {"cpu": format_cpu(alloc["cpu"]), "memory": format_memory(alloc["memory"]),
                            "pods": str(int(alloc["pods"]))},
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": self.internal_ip},
                          {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {"machineID": m.machine_id, "systemUUID": m.machine_id, "bootID": m.boot_id,
                         "kernelVersion": m.kernel_version, "osImage": m.os_image,
                         "containerRuntimeVersion": self._runtime_version_string(),
                         "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                         "operatingSystem": "linux", "architecture": m.architecture},
        }

    def _runtime_version_string(self) -> str:
        # "containerd 1.6.20 (CRI v1)" → "containerd://1.6.20", as kubectl shows it.
        parts = self.runtime_version.split()
        return f"{parts[0]}://{parts[1]}" if len(parts) >= 2 else self.runtime_version

    async def register(self) -> dict[str, Any]:
        """Create the Node, or bring an existing one up to date (labels, podCIDR, status)."""
        status = await self.status()
        spec: dict[str, Any] = {}
        if self.pod_cidr:
            spec = {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]}
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "labels": self.node_labels()}, "spec": spec, "status": status}
        try:
            created = await self.client.create(body)
            log.info("registered node %s", self.node_name)
            return dict(created)
        except AlreadyExists:
            pass

        def update(node: dict[str, Any]) -> dict[str, Any]:
            node.setdefault("metadata", {}).setdefault("labels", {}).update(self.node_labels())
            node.setdefault("spec", {}).update(spec)
            return node

        await self.client.update_with_retry(NODES, self.node_name, None, update)
        node = await self._write_status(status)
        log.info("node %s already registered; updated it", self.node_name)
        return node

    async def _write_status(self, status: dict[str, Any]) -> dict[str, Any]:
        def put(node: dict[str, Any]) -> dict[str, Any]:
            node["status"] = {**(node.get("status") or {}), **copy.deepcopy(status)}
            return node

        return dict(await self.client.update_with_retry(NODES, self.node_name, None, put, subresource="status"))

    async def heartbeat(self) -> None:
        """One status report. A Node deleted under us is registered again."""
        try:
            await self._write_status(await self.status())
        except NotFound:
            await self.register()
        self.heartbeats += 1

    async def run(self) -> None:
        """Heartbeat every ``update_frequency`` seconds until cancelled; errors are logged, not raised."""
        while True:
            await asyncio.sleep(self.update_frequency)
            try:
                await self.heartbeat()
            except (ApiError, ConnectionFailed, Conflict) as exc:
                log.warning("node status update failed: %s", exc)
