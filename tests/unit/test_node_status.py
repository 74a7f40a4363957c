"""Node health (kubelet/node_status.py): Ready from the runtime's answers, pressure conditions from
eviction thresholds, held for the transition period; the machine's signals read as the kubelet does."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from kubelet import runtime as rt
from kubelet.fake_runtime import FakeRuntime
from kubelet.node_status import (
    DEFAULT_EVICTION_HARD,
    MachineInfo,
    MachineObserver,
    NodeStatusManager,
    Observations,
    PressureMonitor,
    Threshold,
    parse_eviction,
)

Mi = 1024 * 1024


def test_parse_eviction_thresholds() -> None:
    parsed = parse_eviction(DEFAULT_EVICTION_HARD)
    assert parsed[0] == Threshold("memory.available", quantity=Fraction(100 * Mi))
    assert Threshold("nodefs.available", percentage=Fraction(1, 10)) in parsed
    assert {t.signal for t in parsed} == {"memory.available", "nodefs.available", "nodefs.inodesFree",
                                          "imagefs.available", "imagefs.inodesFree"}
    assert str(parsed[1]) == "nodefs.available<10%"
    assert parse_eviction("") == ()
    for bad in ("memory.free<1Gi", "memory.available>1Gi", "nodefs.available<150%", "nodefs.available<x%",
                "memory.available<-1"):
        with pytest.raises(ValueError):
            parse_eviction(bad)


class Signals:
    def __init__(self, **values: tuple[int, int]) -> None:
        self.values: Observations = {k.replace("_", "."): v for k, v in values.items()}

    async def __call__(self) -> Observations:
        return dict(self.values)


async def test_pressure_turns_on_at_a_threshold_and_off_only_after_the_transition_period() -> None:
    signals = Signals(memory_available=(500 * Mi, 1000 * Mi), nodefs_available=(50, 100), pid_available=(10, 100))
    clock = [0.0]
    disk_calls: list[int] = []
    monitor = PressureMonitor(signals, parse_eviction("memory.available<100Mi,nodefs.available<10%,pid.available<5%"),
                              transition_period=60, clock=lambda: clock[0],
                              on_disk_pressure=lambda: disk_calls.append(1))
    assert await monitor.conditions() == {"MemoryPressure": (False, ""), "DiskPressure": (False, ""),
                                          "PIDPressure": (False, "")}
    signals.values["memory.available"] = (99 * Mi, 1000 * Mi)
    signals.values["nodefs.available"] = (9, 100)
    got = await monitor.conditions()
    assert got["MemoryPressure"][0] and "memory.available is 103809024 (threshold memory.available<104857600)" in \
        got["MemoryPressure"][1]
    assert got["DiskPressure"] == (True, "nodefs.available is 9 (threshold nodefs.available<10%)")
    assert disk_calls == [1]
    await monitor.conditions()
    assert disk_calls == [1]  # only when it turns on
    signals.values["memory.available"] = (900 * Mi, 1000 * Mi)
    signals.values["nodefs.available"] = (90, 100)
    clock[0] = 59
    assert (await monitor.conditions())["MemoryPressure"][0]  # still within the transition period
    clock[0] = 61
    assert await monitor.conditions() == {"MemoryPressure": (False, ""), "DiskPressure": (False, ""),
                                          "PIDPressure": (False, "")}


def machine() -> MachineInfo:
    return MachineInfo(cpus=4, memory_bytes=8 * 1024 * Mi, kernel_version="6.1", os_image="Debian",
                       architecture="amd64")


async def test_node_conditions_show_pressure_and_the_runtime_s_readiness() -> None:
    runtime = FakeRuntime()
    signals = Signals(memory_available=(50 * Mi, 8192 * Mi), imagefs_inodesFree=(1, 100))
    mgr = NodeStatusManager(client=None, runtime=runtime, node_name="n", pod_cidr="10.88.7.0/24", kubelet_port=1,
                            machine=machine(), pressure=PressureMonitor(signals),
                            now=lambda: "2027-01-01T00:00:00Z")
    conditions = {c["type"]: c for c in (await mgr.status())["conditions"]}
    assert (conditions["MemoryPressure"]["status"], conditions["MemoryPressure"]["reason"]) == (
        "True", "KubeletHasInsufficientMemory")
    assert conditions["MemoryPressure"]["message"].startswith("kubelet has insufficient memory available: ")
    assert (conditions["DiskPressure"]["status"], conditions["DiskPressure"]["reason"]) == (
        "True", "KubeletHasDiskPressure")
    assert (conditions["PIDPressure"]["status"], conditions["PIDPressure"]["reason"]) == (
        "False", "KubeletHasSufficientPID")
    assert conditions["Ready"]["status"] == "True"  # pressure alone leaves the node Ready, as in Kubernetes

    runtime.conditions = [rt.RuntimeCondition("RuntimeReady", True),
                          rt.RuntimeCondition("NetworkReady", False, "NetworkPluginNotReady",
                                              "cni config uninitialized")]
    ready = {c["type"]: c for c in (await mgr.status())["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "NetworkPluginNotReady")
    assert "cni config uninitialized" in ready["message"]
    runtime.conditions = [rt.RuntimeCondition("RuntimeReady", False, "Broken", "no shims")]
    ready = {c["type"]: c for c in (await mgr.status())["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ContainerRuntimeNotReady")
    runtime.conditions = []
    runtime.fail_next["runtime_status"] = rt.RuntimeFailure("Status: container runtime unavailable at /x.sock")
    ready = {c["type"]: c for c in (await mgr.status())["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ContainerRuntimeUnreachable")
    assert "unavailable at /x.sock" in ready["message"]
    ready = {c["type"]: c for c in (await mgr.status())["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")  # back


async def test_without_a_monitor_there_is_never_pressure() -> None:
    mgr = NodeStatusManager(client=None, runtime=FakeRuntime(), node_name="n", pod_cidr="", kubelet_port=1,
                            machine=machine())
    conditions = {c["type"]: c["status"] for c in (await mgr.status())["conditions"]}
    assert conditions == {"MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"}


def fake_proc(tmp_path: Path, *, cgroup: bool) -> tuple[Path, Path]:
    proc, memcg = tmp_path / "proc", tmp_path / "memcg"
    (proc / "sys/kernel").mkdir(parents=True)
    memcg.mkdir()
    (proc / "meminfo").write_text("MemTotal:       1024000 kB\nMemFree:  1000 kB\nMemAvailable:    512000 kB\n")
    (proc / "sys/kernel/pid_max").write_text("32768\n")
    (proc / "loadavg").write_text("0.50 0.40 0.30 3/768 12345\n")
    if cgroup:
        (memcg / "memory.usage_in_bytes").write_text(f"{600 * 1024 * 1024}\n")
        (memcg / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {100 * 1024 * 1024}\n")
    return proc, memcg


@pytest.mark.parametrize("cgroup", [True, False])
async def test_machine_observer_reads_memory_pids_and_file_systems(tmp_path: Path, cgroup: bool) -> None:
    proc, memcg = fake_proc(tmp_path, cgroup=cgroup)
    runtime = FakeRuntime()
    runtime.imagefs = str(tmp_path)
    seen: dict[str, Any] = await MachineObserver(str(tmp_path), runtime, proc=str(proc), memory_cgroup=str(memcg))()
    capacity = 1024000 * 1024
    # The working set (usage - inactive file) of the root cgroup, else MemAvailable.
    expected = capacity - 500 * 1024 * 1024 if cgroup else 512000 * 1024
    assert seen["memory.available"] == (expected, capacity)
    assert seen["pid.available"] == (32768 - 768, 32768)
    for fs in ("nodefs", "imagefs"):
        available, total = seen[f"{fs}.available"]
        assert 0 <= available <= total and total > 0
        assert seen[f"{fs}.inodesFree"][1] > 0
