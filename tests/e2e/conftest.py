"""One whole cluster for the node tests: etcd, containerd, registry, apiserver, scheduler and kubelet.

``node_cluster`` (session scope) starts it with ``minik8s.cluster`` in a short temporary home (unix
socket paths are limited), free loopback ports and short kubelet timers (``MINIK8S_KUBELET_ARGS``),
seeds the cluster images (pause, busybox, python:3.11) into its registry, and at the end runs
``down()`` and asserts that nothing of the cluster is left on the host: no process, shim, mount,
netns, bridge, iptables chain, cgroup folder or IPAM allocation. ``node_ns`` gives a test a
namespace of its own whose pods are deleted (and waited for) afterwards.

The helpers read the real parts: ``ctr -n k8s.io`` on the cluster's socket, cgroupfs, the netns
mounts under ``containerd/state/netns``, host-local's IPAM folder, ``iptables-save``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from minik8s.cluster import Cluster, Identity, Layout, cleanup
from minik8s.testing import wait_until

REPO = Path(__file__).resolve().parents[2]
NEEDED = ("containerd", "runc", "ctr", "docker-registry", "etcd", "iptables-save", "nsenter")
NODE_NAME = "e2e-node"
# Short timers so failures and back-offs show within seconds (each is a kubelet flag with Kubernetes' default).
KUBELET_ARGS = ("--node-status-update-frequency 1s --sync-frequency 2s --runtime-relist-period 0.5s "
                "--image-pull-backoff 1s --image-pull-backoff-max 4s --crash-backoff-base 1s "
                "--crash-backoff-max 5s --container-log-max-size 64Ki --container-log-max-files 2 "
                "--container-log-monitor-interval 200ms --container-gc-period 1s --metrics-resolution 1s")
CLUSTER_IMAGES = ("library/pause", "library/busybox", "library/python")


def node_cluster_missing() -> str | None:
    if os.geteuid() != 0:
        return "a whole cluster needs root (containerd, bridges, iptables, cgroups)"
    missing = [p for p in NEEDED if not shutil.which(p)]
    if missing:
        return f"make deps installs {', '.join(missing)}"
    if not Path("/sys/fs/cgroup/memory").is_dir():
        return "the kubelet's cgroup checks need cgroup v1 (memory hierarchy)"
    return None


def run(*cmd: str, timeout: float = 30, check: bool = True, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, env=env,
                         input=input, stdin=None if input is not None else subprocess.DEVNULL)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res


class Api:
    """Plain JSON over HTTP to the cluster's apiserver (the tests check the API with it, not with our client)."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=20)

    def get(self, path: str) -> dict[str, Any]:
        r = self.http.get(path)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()  # type: ignore[no-any-return]

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        r = self.http.get(path)
        if r.status_code == 404:
            return None
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()  # type: ignore[no-any-return]

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(path, json=body)
        assert r.status_code == 201, f"POST {path}: {r.status_code} {r.text}"
        return r.json()  # type: ignore[no-any-return]

    def delete(self, path: str, **params: Any) -> int:
        return self.http.delete(path, params=params).status_code

    def pod(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.get_or_none(f"/api/v1/namespaces/{ns}/pods/{name}")

    def pods(self, ns: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v1/namespaces/{ns}/pods")["items"])

    def create_pod(self, ns: str, pod: dict[str, Any]) -> dict[str, Any]:
        return self.create(f"/api/v1/namespaces/{ns}/pods", pod)

    def events(self, ns: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v1/namespaces/{ns}/events")["items"])


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    for s in (pod.get("status") or {}).get("containerStatuses") or []:
        if s.get("name") == name:
            return dict(s)
    return {}


def is_running(pod: dict[str, Any] | None) -> bool:
    """Phase Running, Ready=True and every container running and ready."""
    if not pod:
        return False
    status = pod.get("status") or {}
    names = [c["name"] for c in pod["spec"]["containers"]]
    statuses = {s["name"]: s for s in status.get("containerStatuses") or []}
    return (status.get("phase") == "Running" and condition(pod, "Ready").get("status") == "True"
            and set(statuses) == set(names)
            and all("running" in (s.get("state") or {}) and s.get("ready") for s in statuses.values()))


def http_get(url: str, timeout: float = 2) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return int(r.status), r.read().decode(errors="replace")


@dataclass
class NodeCluster:
    """The running cluster and what the tests read from its real parts."""

    cluster: Cluster
    ident: Identity
    env: dict[str, str]  # for minictl / kubectl / make in subprocesses
    api: Api
    node_name: str = NODE_NAME
    kube_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mk8s-kube-")))

    @property
    def layout(self) -> Layout:
        return self.cluster.layout

    @property
    def socket(self) -> str:
        return str(self.layout.containerd_socket)

    # -- the CLIs ---------------------------------------------------------------------------------

    def minictl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(sys.executable, "-m", "minictl.main", *args, env=self.env, check=check, timeout=timeout)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The real kubectl with the cluster's kubeconfig and a discovery cache in a temporary folder."""
        env = {**self.env, "HOME": str(self.kube_dir)}
        return run("kubectl", "--kubeconfig", str(self.layout.kubeconfig), "--cache-dir", str(self.kube_dir / "cache"),
                   "--request-timeout", "20s", *args, env=env, check=check, timeout=timeout)

    def ctr(self, *args: str) -> str:
        return run("ctr", "-n", "k8s.io", "--address", self.socket, *args).stdout

    # -- the real parts ---------------------------------------------------------------------------

    def containers(self) -> set[str]:
        """Every container of the cluster's containerd (sandboxes' pause containers included)."""
        return set(self.ctr("containers", "ls", "-q").split())

    def tasks(self) -> set[str]:
        return {line.split()[0] for line in self.ctr("tasks", "ls").splitlines()[1:] if line.strip()}

    def ipam_ips(self) -> set[str]:
        folder = self.layout.cni_ipam / self.ident.cni_network_name
        return {p.name for p in folder.iterdir() if p.name.count(".") == 3} if folder.is_dir() else set()

    def netns_mounts(self) -> list[str]:
        """Mount points of pod network namespaces (under containerd/state/netns, not /var/run/netns)."""
        return [m for m in cleanup.mounts_under(self.layout.home) if "/netns/" in m]

    def pod_cgroups(self, uid: str) -> list[Path]:
        """The pod's cgroup folders that exist, in every v1 hierarchy."""
        rel = f"{self.ident.cgroup_root.strip('/')}/pod{uid}"
        return [p for p in (d / rel for d in Path("/sys/fs/cgroup").iterdir()) if p.is_dir()]

    def container_cgroup(self, controller: str, uid: str, container_id: str) -> Path:
        return Path("/sys/fs/cgroup") / controller / self.ident.cgroup_root.strip("/") / f"pod{uid}" / container_id

    def registry_log(self) -> str:
        return self.layout.log("registry").read_text(errors="replace")

    def catalog(self) -> list[str]:
        return list(json.loads(http_get(f"{self.ident.registry_url}/v2/_catalog")[1])["repositories"])

    # -- waits ------------------------------------------------------------------------------------

    def wait_pod(self, ns: str, name: str, predicate: Callable[[dict[str, Any]], object], *, timeout: float = 60,
                 what: str = "") -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            pod = self.api.pod(ns, name)
            if pod is not None:
                last["pod"] = pod
            return pod if pod is not None and predicate(pod) else None

        try:
            return wait_until(check, timeout=timeout, interval=0.1, what=what or f"pod {ns}/{name}")  # type: ignore[no-any-return]
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; the pod's last status: {json.dumps((last.get('pod') or {}).get('status'))}"
                                 f"\nkubelet log tail:\n{tail(self.layout.log('kubelet'))}") from None

    def wait_running(self, ns: str, name: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_pod(ns, name, is_running, timeout=timeout, what=f"pod {ns}/{name} Running and ready")

    def delete_pod(self, ns: str, name: str, timeout: float = 60) -> None:
        """Delete (gracefully, as a user does) and wait until the kubelet removed the API object."""
        self.api.delete(f"/api/v1/namespaces/{ns}/pods/{name}")
        wait_until(lambda: self.api.pod(ns, name) is None, timeout=timeout, interval=0.1,
                   what=f"pod {ns}/{name} to be gone from the API")

    def node(self) -> dict[str, Any]:
        return self.api.get(f"/api/v1/nodes/{self.node_name}")

    # The module's helpers, for test modules (which cannot import a conftest by name).
    condition = staticmethod(condition)
    container_status = staticmethod(container_status)
    is_running = staticmethod(is_running)
    http_get = staticmethod(http_get)
    run = staticmethod(run)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def leftovers(cluster: Cluster, ident: Identity) -> dict[str, object]:
    """Everything of this cluster that could outlive ``down()`` on the host (all empty: nothing)."""
    lay = cluster.layout
    saved = run("iptables-save").stdout
    ipam = lay.cni_ipam / ident.cni_network_name
    return {
        "processes": cleanup.marked_processes(lay.home),
        "shims": cleanup.shim_processes(lay.containerd_socket),
        "mounts": cleanup.mounts_under(lay.home),
        "bridge": cleanup.link_exists(ident.bridge),
        "netns": cleanup.netns_on_bridge(ident.bridge),
        "chains": [line for line in saved.splitlines()
                   if ident.chain_prefix in line or f'\\"{ident.cni_network_name}\\"' in line],
        "cgroups": cleanup.cgroup_dirs(ident.cgroup_root),
        "ipam": sorted(p.name for p in ipam.glob("10.*")) if ipam.is_dir() else [],
    }


def cluster_env(home: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIK8S_") and k != "KUBECONFIG"}
    env.update({"MINIK8S_HOME": home, "MINIK8S_STOP_GRACE": "5", "MINIK8S_START_TIMEOUT": "120",
                "MINIK8S_START_RETRIES": "5", "MINIK8S_NODE_NAME": NODE_NAME, "MINIK8S_KUBELET_ARGS": KUBELET_ARGS,
                "PYTHONPATH": str(REPO),
                # No fixed metrics port (10252) for the controller-manager: clusters of parallel runs would collide.
                # Short HPA timers (Kubernetes: 15s sync, 5m downscale stabilization, 5m cpu init, 30s readiness).
                "MINIK8S_CONTROLLER_MANAGER_ARGS": (
                    "--port 0 --horizontal-pod-autoscaler-sync-period 2s "
                    "--horizontal-pod-autoscaler-downscale-stabilization 10s "
                    "--horizontal-pod-autoscaler-cpu-initialization-period 5s "
                    "--horizontal-pod-autoscaler-initial-readiness-delay 5s"),
                # Short autoscaler windows (Knative's defaults are 60 s stable, 2 s tick) and activation flushes.
                "MINIK8S_GATEWAY_ARGS": "--stable-window 6 --tick 0.5 --activation-flush-interval 0.5"})
    env.update(extra)
    return env


def assert_seeded(ident: Identity) -> None:
    """``up()`` seeded the cluster's own images into its registry."""
    missing = [repo for repo in CLUSTER_IMAGES if repo not in _catalog(ident)]
    assert not missing, f"the cluster registry lacks {missing} after up()"


def _catalog(ident: Identity) -> list[str]:
    return list(json.loads(http_get(f"{ident.registry_url}/v2/_catalog")[1])["repositories"])


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[NodeCluster]:
    reason = node_cluster_missing()
    if reason:
        # Never a skip: `make test` installs every part and runs as root, so this is a broken install.
        pytest.fail(reason)
    home = tempfile.mkdtemp(prefix="mk8s-n-", dir="/tmp")
    env = cluster_env(home)
    lines: list[str] = []
    cluster = Cluster(Layout(home), environ=env, out=lines.append)
    try:
        t0 = time.monotonic()
        ident = cluster.up()
        assert_seeded(ident)
        programs = {p["name"]: p["statename"] for p in cluster.status() or []}
        assert programs.get("kubelet") == "RUNNING" and programs.get("scheduler") == "RUNNING", programs
        api = Api(ident.api_url)
        nc = NodeCluster(cluster=cluster, ident=ident, env={**env, "KUBECONFIG": str(cluster.layout.kubeconfig)},
                         api=api)
        wait_until(lambda: condition(nc.node(), "Ready").get("status") == "True", timeout=60, interval=0.2,
                   what=f"node {NODE_NAME} Ready")
        print(f"\nnode cluster in {home} up in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        yield nc
        api.http.close()
        shutil.rmtree(nc.kube_dir, ignore_errors=True)
        problems = cluster.down()
        assert problems == [], problems
        left = leftovers(cluster, ident)
        assert not any(left.values()), f"down() left behind: {left}"
    finally:
        if cluster.layout.home.exists():
            try:
                cluster.purge()
            finally:
                shutil.rmtree(home, ignore_errors=True)


@pytest.fixture()
def node_ns(node_cluster: NodeCluster) -> Iterator[str]:
    """A namespace of this test's own; its pods are deleted (and waited for) afterwards."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    node_cluster.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": name}})
    yield name
    api = node_cluster.api
    for pod in api.pods(name):
        api.delete(f"/api/v1/namespaces/{name}/pods/{pod['metadata']['name']}")
    # A pod never bound to a node has no kubelet to finish its deletion: the apiserver removes it at once.
    wait_until(lambda: not api.pods(name), timeout=60, interval=0.2, what=f"the pods of {name} to be gone")
    api.delete(f"/api/v1/namespaces/{name}")
