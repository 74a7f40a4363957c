"""cgroupfs (v1, as on our machines) helpers for the kubelet: where a pod's cgroups are, what limits
they hold, and removing a pod's folders once its containers are gone (containerd leaves the pod's
``cgroup_parent`` behind in every hierarchy).

A *cgroup path* here is the cgroupfs-relative path containerd is given, e.g. the pod's
``/minik8s-3fa2c1/pod<uid>``; with the cgroupfs driver a container's cgroup is
``<cgroup_parent>/<container id>``, in every hierarchy:

    /sys/fs/cgroup/memory/minik8s-3fa2c1/pod<uid>/<container id>/memory.limit_in_bytes
    /sys/fs/cgroup/cpu/minik8s-3fa2c1/pod<uid>/<container id>/cpu.cfs_quota_us
"""

from __future__ import annotations

import os
from pathlib import Path

MOUNTS_FILE = "/proc/self/mounts"
# The v1 controllers (plus named hierarchies such as name=systemd) recognised in mount options.
_V1_CONTROLLERS = {
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
}


def hierarchies(mounts_file: str = MOUNTS_FILE) -> dict[str, Path]:
    """Every mounted cgroup hierarchy: controller name → mount point. A v1 hierarchy is listed under
    each of its controllers (``cpu`` and ``cpuacct`` may share one), a named one as ``name=…``, the
    v2 (unified) one as ``unified``."""
    out: dict[str, Path] = {}
    with open(mounts_file) as f:
        for entry in f:
            fields = entry.split()
            if len(fields) < 4:
                continue
            mount_point, fstype, options = fields[1], fields[2], fields[3].split(",")
            if fstype == "cgroup":
                for opt in options:
                    if opt in _V1_CONTROLLERS or opt.startswith("name="):
                        out.setdefault(opt, Path(mount_point))
            elif fstype == "cgroup2":
                out.setdefault("unified", Path(mount_point))
    return out


def _check(cgroup_path: str) -> str:
    """``cgroup_path`` without its leading slash; refuses the root and anything with ``..``."""
    rel = cgroup_path.strip("/")
    if not cgroup_path.startswith("/") or not rel or ".." in rel.split("/"):
        raise ValueError(f"not a cgroup path below the root: {cgroup_path!r}")
    return rel


def cgroup_dir(controller: str, cgroup_path: str) -> Path:
    """The folder of ``cgroup_path`` in ``controller``'s hierarchy (it may not exist)."""
    mounts = hierarchies()
    if controller not in mounts:
        raise FileNotFoundError(f"cgroup controller {controller!r} is not mounted")
    return mounts[controller] / _check(cgroup_path)


def pod_cgroup_dirs(cgroup_parent: str) -> dict[str, Path]:
    """The folders of a pod's ``cgroup_parent`` in every hierarchy, existing or not."""
    rel = _check(cgroup_parent)
    return {controller: mount / rel for controller, mount in hierarchies().items()}


def container_cgroup_path(cgroup_parent: str, container_id: str) -> str:
    """The cgroup path of a container created under ``cgroup_parent`` (containerd, cgroupfs driver)."""
    return f"{cgroup_parent.rstrip('/')}/{container_id}"


def read_int(controller: str, cgroup_path: str, filename: str) -> int:
    return int((cgroup_dir(controller, cgroup_path) / filename).read_text().split()[0])


def memory_limit_in_bytes(cgroup_path: str) -> int:
    """``memory.limit_in_bytes`` (a huge number, 2^63 rounded to pages, when unlimited)."""
    return read_int("memory", cgroup_path, "memory.limit_in_bytes")


def cpu_cfs_quota_us(cgroup_path: str) -> int:
    """``cpu.cfs_quota_us`` (-1 when unlimited)."""
    return read_int("cpu", cgroup_path, "cpu.cfs_quota_us")


def cpu_cfs_period_us(cgroup_path: str) -> int:
    return read_int("cpu", cgroup_path, "cpu.cfs_period_us")


def cpu_shares(cgroup_path: str) -> int:
    return read_int("cpu", cgroup_path, "cpu.shares")


def memory_failcnt(cgroup_path: str) -> int:
    """How often the memory limit was hit."""
    return read_int("memory", cgroup_path, "memory.failcnt")


def memory_oom_control(cgroup_path: str) -> dict[str, int]:
    """``memory.oom_control`` as a dict: ``oom_kill_disable``, ``under_oom``, ``oom_kill`` (kills so far)."""
    text = (cgroup_dir("memory", cgroup_path) / "memory.oom_control").read_text()
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if line.strip())}


def remove_pod_cgroups(cgroup_parent: str) -> list[Path]:
    """Remove ``cgroup_parent`` and every folder below it, bottom-up, in every hierarchy.

    A cgroup folder can be removed only when no process and no child is left in it, so call this
    after the pod's sandbox is stopped and removed. Returns the folders that could not be removed
    (still busy) — an empty list means the pod's cgroups are gone. Idempotent.
    """
    left: list[Path] = []
    for top in pod_cgroup_dirs(cgroup_parent).values():
        if not top.is_dir():
            continue
        for folder, _subdirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(Path(folder))
    return left
