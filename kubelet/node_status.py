"""The kubelet's Node: registration (create or update) and heartbeats through ``nodes/{name}/status``.

::

    register()  ── POST nodes (or GET + PUT when it exists: labels, podCIDR) ──▶ PUT nodes/{name}/status
    run()       ── every node-status-update-frequency: probe the runtime, PUT status (lastHeartbeatTime)

Capacity comes from the machine (cpu = usable cores, memory = MemTotal, pods = max-pods);
allocatable = capacity minus the system reserve, because the control plane runs on these same cores.
The InternalIP is the pod CIDR's gateway (``.1``): an address on the bridge this cluster made,
reachable from every pod and from the host, never the machine's external address.

Conditions, on every heartbeat:

- ``Ready``: True (``KubeletReady``) when the runtime answers and says RuntimeReady and NetworkReady;
  else False with ``ContainerRuntimeUnreachable`` (no answer: containerd is down), ``ContainerRuntimeNotReady``
  or ``NetworkPluginNotReady`` (its CRI Status says so) and the runtime's words as the message.
- ``MemoryPressure`` / ``DiskPressure`` / ``PIDPressure``: True while an ``--eviction-hard`` threshold is
  crossed (Kubernetes' signals: ``memory.available``, ``nodefs.available``, ``nodefs.inodesFree``,
  ``imagefs.available``, ``imagefs.inodesFree``, ``pid.available``; a quantity or a percentage of
  capacity), and for ``--eviction-pressure-transition-period`` (5m) after the last time one was, so a
  node near a threshold does not flap. ``PressureMonitor`` decides; ``MachineObserver`` measures as the
  kubelet does: memory.available = MemTotal - working set of the root memory cgroup (usage -
  inactive file), nodefs = the file system of ``--root-dir``, imagefs = the one the runtime's
  ImageFsInfo names. minik8s does not evict pods under pressure (Kubernetes would); disk pressure
  makes the image GC run at once (``kubelet/gc.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import logging
import os
import platform
import socket
import time
from collections.abc import Awaitable, Callable
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
UNDER_PRESSURE = {"MemoryPressure": ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
                  "DiskPressure": ("KubeletHasDiskPressure", "kubelet has disk pressure"),
                  "PIDPressure": ("KubeletHasInsufficientPID", "kubelet has insufficient PID available")}
# Kubernetes' --eviction-hard default on Linux.
DEFAULT_EVICTION_HARD = ("memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,"
                         "imagefs.available<15%,imagefs.inodesFree<5%")
SIGNAL_CONDITIONS = {"memory.available": "MemoryPressure", "nodefs.available": "DiskPressure",
                     "nodefs.inodesFree": "DiskPressure", "imagefs.available": "DiskPressure",
                     "imagefs.inodesFree": "DiskPressure", "pid.available": "PIDPressure"}
Observations = dict[str, tuple[int, int]]  # signal → (available, capacity)


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


@dataclass(frozen=True)
class Threshold:
    """``memory.available<100Mi`` or ``nodefs.available<10%``: crossed when available < the limit."""

    signal: str
    quantity: Fraction | None = None
    percentage: Fraction | None = None  # of capacity, 0..1

    def limit(self, capacity: int) -> Fraction:
        return self.quantity if self.quantity is not None else Fraction(capacity) * (self.percentage or 0)

    def crossed(self, available: int, capacity: int) -> bool:
        return available < self.limit(capacity)

    def __str__(self) -> str:
        value = f"{float(self.percentage * 100):g}%" if self.percentage is not None else str(self.quantity)
        return f"{self.signal}<{value}"


def parse_eviction(text: str) -> tuple[Threshold, ...]:
    """``memory.available<100Mi,nodefs.available<10%`` → thresholds. Raises ``ValueError``."""
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        signal, sep, value = item.partition("<")
        signal, value = signal.strip(), value.strip()
        if not sep or signal not in SIGNAL_CONDITIONS:
            raise ValueError(f"bad eviction threshold {item!r}: expected SIGNAL<QUANTITY or SIGNAL<PERCENT%, "
                             f"SIGNAL one of {', '.join(SIGNAL_CONDITIONS)}")
        if value.endswith("%"):
            try:
                pct = Fraction(value[:-1]) / 100
            except ValueError:
                raise ValueError(f"bad eviction threshold {item!r}: bad percentage") from None
            if not 0 <= pct <= 1:
                raise ValueError(f"bad eviction threshold {item!r}: percentage out of 0..100")
            out.append(Threshold(signal, percentage=pct))
        else:
            amount = parse_quantity(value)
            if amount < 0:
                raise ValueError(f"bad eviction threshold {item!r}: negative")
            out.append(Threshold(signal, quantity=amount))
    return tuple(out)


@dataclass
class MachineObserver:
    """Measures the eviction signals on this machine (see the module docstring). Blocking parts run in a thread."""

    root_dir: str
    runtime: rt.Runtime | None = None
    proc: str = "/proc"
    memory_cgroup: str = "/sys/fs/cgroup/memory"

    def _memory(self) -> tuple[int, int]:
        info = {}
        for line in _read(f"{self.proc}/meminfo").splitlines():
            key, _, rest = line.partition(":")
            with contextlib.suppress(ValueError, IndexError):
                info[key] = int(rest.split()[0]) * 1024
        capacity = info.get("MemTotal", 0)
        usage = _read(f"{self.memory_cgroup}/memory.usage_in_bytes")
        stat = dict(line.split() for line in _read(f"{self.memory_cgroup}/memory.stat").splitlines()
                    if len(line.split()) == 2)
        if usage.isdigit() and "total_inactive_file" in stat:
            working_set = max(0, int(usage) - int(stat["total_inactive_file"]))
            return max(0, capacity - working_set), capacity
        return info.get("MemAvailable", capacity), capacity

    @staticmethod
    def _fs(path: str, prefix: str, out: Observations) -> None:
        st = os.statvfs(path)
        out[f"{prefix}.available"] = (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
        if st.f_files:
            out[f"{prefix}.inodesFree"] = (st.f_favail, st.f_files)

    def _pids(self) -> tuple[int, int]:
        pid_max = int(_read(f"{self.proc}/sys/kernel/pid_max") or 4194304)
        fields = _read(f"{self.proc}/loadavg").split()
        running = int(fields[3].split("/")[1]) if len(fields) > 3 and "/" in fields[3] else 0
        return pid_max - running, pid_max

    def _blocking(self, imagefs: str) -> Observations:
        out: Observations = {"memory.available": self._memory(), "pid.available": self._pids()}
        with contextlib.suppress(OSError):
            self._fs(self.root_dir or "/", "nodefs", out)
        with contextlib.suppress(OSError):
            self._fs(imagefs or self.root_dir or "/", "imagefs", out)
        return out

    async def __call__(self) -> Observations:
        imagefs = ""
        if self.runtime is not None:
            with contextlib.suppress(rt.RuntimeFailure, AttributeError):
                filesystems = await self.runtime.image_fs_info()
                imagefs = filesystems[0].mountpoint if filesystems else ""
        return await asyncio.to_thread(self._blocking, imagefs)


@dataclass
class PressureMonitor:
    """Turns observations into pressure conditions, held for ``transition_period`` after the last crossing."""

    observe: Callable[[], Awaitable[Observations]]
    thresholds: tuple[Threshold, ...] = field(default_factory=lambda: parse_eviction(DEFAULT_EVICTION_HARD))
    transition_period: float = 300.0
    clock: Callable[[], float] = time.monotonic
    on_disk_pressure: Callable[[], None] | None = None  # called when DiskPressure turns True
    _last_crossed: dict[str, tuple[float, str]] = field(default_factory=dict)  # condition → (when, why)
    _state: dict[str, bool] = field(default_factory=dict)
    last: Observations = field(default_factory=dict)

    async def conditions(self) -> dict[str, tuple[bool, str]]:
        """Condition type → (under pressure, what crossed) for the three pressure conditions."""
        try:
            self.last = await self.observe()
        except (OSError, ValueError) as exc:
            log.warning("cannot observe the node's resources: %s", exc)
        now = self.clock()
        for t in self.thresholds:
            if t.signal in self.last:
                available, capacity = self.last[t.signal]
                if capacity > 0 and t.crossed(available, capacity):
                    self._last_crossed[SIGNAL_CONDITIONS[t.signal]] = (
                        now, f"{t.signal} is {available} (threshold {t})")
        out = {}
        for ctype in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            when, why = self._last_crossed.get(ctype, (None, ""))
            pressure = when is not None and now - when < self.transition_period
            if pressure and not self._state.get(ctype) and ctype == "DiskPressure" and self.on_disk_pressure:
                self.on_disk_pressure()
            self._state[ctype] = pressure
            out[ctype] = (pressure, why if pressure else "")
        return out


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
    pressure: PressureMonitor | None = None  # None: the pressure conditions are always False
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

    async def _probe(self) -> tuple[str, str]:
        """("" when ready, else the Ready condition's reason; the message)."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the call completes, and the kubelet would then never stop.
            async with asyncio.timeout(10):
                self.runtime_version = await self.runtime.version()
                info = await self.runtime.runtime_status()
        except (rt.RuntimeFailure, TimeoutError, OSError) as exc:
            return "ContainerRuntimeUnreachable", f"container runtime is down: {str(exc) or type(exc).__name__}"
        for ctype, reason in (("RuntimeReady", "ContainerRuntimeNotReady"), ("NetworkReady", "NetworkPluginNotReady")):
            cond = info.condition(ctype)
            if cond is not None and not cond.status:
                what = "container runtime" if ctype == "RuntimeReady" else "container runtime network"
                return reason, (f"{what} not ready: {ctype}=false reason:{cond.reason} message:{cond.message}")
        return "", ""

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
        not_ready, why = await self._probe()
        pressure = await self.pressure.conditions() if self.pressure is not None else {}
        now = self.now()
        conditions = []
        for ctype, reason, msg in PRESSURE_CONDITIONS:
            under, detail = pressure.get(ctype, (False, ""))
            if under:
                reason, msg = UNDER_PRESSURE[ctype]
                msg = f"{msg}: {detail}" if detail else msg
            conditions.append(self._condition(ctype, "True" if under else "False", reason, msg, now))
        if not not_ready:
            conditions.append(self._condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", now))
        else:
            conditions.append(self._condition("Ready", "False", not_ready, why, now))
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
