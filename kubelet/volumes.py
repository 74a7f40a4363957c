"""Pod volumes on the node: emptyDir folders, hostPath checks, and the mounts each container gets.

::

    <root-dir>/pods/<pod uid>/
        volumes/kubernetes.io~empty-dir/<volume name>/    one folder per emptyDir, shared by the pod's containers
        logs/                                             the CRI log directory of the pod's sandbox

``VolumeManager.setup(pod)`` makes what the pod needs and returns the host path of every volume;
``mounts_for(container, paths)`` turns ``volumeMounts`` into runtime ``Mount``s;
``teardown(uid)`` removes the pod's folder (emptyDir contents and logs) once the pod is gone.

All methods are blocking file-system work on small trees; callers run them in a thread.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from kubelet.runtime import Mount

EMPTY_DIR_PLUGIN = "kubernetes.io~empty-dir"


class VolumeError(Exception):
    """A volume cannot be set up (hostPath of the wrong type, unknown volume name). One-line message."""


class VolumeManager:
    """Owns ``<root_dir>/pods``. Idempotent: ``setup`` twice gives the same paths and keeps contents."""

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        self.root_dir = Path(root_dir)

    def pod_dir(self, uid: str) -> Path:
        if not uid or "/" in uid or uid in (".", ".."):
            raise VolumeError(f"bad pod uid {uid!r}")
        return self.root_dir / "pods" / uid

    def log_dir(self, uid: str) -> Path:
        return self.pod_dir(uid) / "logs"

    def empty_dir(self, uid: str, name: str) -> Path:
        return self.pod_dir(uid) / "volumes" / EMPTY_DIR_PLUGIN / name

    def setup(self, pod: dict[str, Any]) -> dict[str, str]:
        """Create the pod's folders and emptyDirs, check hostPaths; return volume name → host path.

        Raises ``VolumeError`` for a hostPath whose ``type`` does not match what is on disk.
        """
        uid = str(pod["metadata"]["uid"])
        self.log_dir(uid).mkdir(parents=True, exist_ok=True)
        paths: dict[str, str] = {}
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = str(volume.get("name") or "")
            if "emptyDir" in volume:
                path = self.empty_dir(uid, name)
                path.mkdir(parents=True, exist_ok=True)
                # World-writable as in Kubernetes: containers running as any user share the folder.
                # medium: Memory would need a tmpfs mount (CAP_SYS_ADMIN); a plain folder serves the same API.
                os.chmod(path, 0o777)
                paths[name] = str(path)
            elif "hostPath" in volume:
                source = volume["hostPath"] or {}
                paths[name] = _host_path(str(source.get("path") or ""), str(source.get("type") or ""), name)
            else:
                raise VolumeError(f"volume {name!r}: only emptyDir and hostPath volumes are supported")
        return paths

    def mounts_for(self, container: dict[str, Any], paths: dict[str, str]) -> tuple[Mount, ...]:
        """The container's ``volumeMounts`` as runtime mounts (``subPath`` joined under the volume)."""
        mounts = []
        for vm in container.get("volumeMounts") or []:
            name = str(vm.get("name") or "")
            if name not in paths:
                raise VolumeError(f"container {container.get('name')!r} mounts unknown volume {name!r}")
            host = paths[name]
            sub = str(vm.get("subPath") or "")
            if sub:
                if sub.startswith("/") or ".." in Path(sub).parts:
                    raise VolumeError(f"volumeMount {name!r}: subPath must be a relative path without '..'")
                host = os.path.join(host, sub)
                if not os.path.exists(host):
                    os.makedirs(host, exist_ok=True)  # Kubernetes creates a missing subPath as a folder
            mounts.append(Mount(container_path=str(vm.get("mountPath") or ""), host_path=host,
                                readonly=bool(vm.get("readOnly", False))))
        return tuple(mounts)

    def teardown(self, uid: str) -> None:
        """Remove the pod's folder (emptyDirs and logs). Missing folders are fine."""
        shutil.rmtree(self.pod_dir(uid), ignore_errors=True)

    def known_pod_uids(self) -> list[str]:
        """Uids that still have a folder here (for housekeeping of pods that are gone)."""
        base = self.root_dir / "pods"
        try:
            return sorted(p.name for p in base.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []


def _host_path(path: str, kind: str, name: str) -> str:
    """Check (or create) a hostPath per its ``type``, as Kubernetes' hostPath plugin does."""
    if not path.startswith("/"):
        raise VolumeError(f"hostPath volume {name!r}: path {path!r} must be absolute")
    if kind == "DirectoryOrCreate":
        os.makedirs(path, mode=0o755, exist_ok=True)
    elif kind == "FileOrCreate":
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        if not os.path.exists(path):
            Path(path).touch(mode=0o644)
    checks = {"Directory": stat.S_ISDIR, "DirectoryOrCreate": stat.S_ISDIR, "File": stat.S_ISREG,
              "FileOrCreate": stat.S_ISREG, "Socket": stat.S_ISSOCK, "CharDevice": stat.S_ISCHR,
              "BlockDevice": stat.S_ISBLK}
    check = checks.get(kind)
    if check is not None:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise VolumeError(f"hostPath volume {name!r}: {path} does not exist (type {kind})") from None
        if not check(mode):
            raise VolumeError(f"hostPath volume {name!r}: {path} is not a {kind}")
    elif kind not in ("",):
        raise VolumeError(f"hostPath volume {name!r}: unknown type {kind!r}")
    return path
