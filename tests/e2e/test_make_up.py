"""``make up`` gives a working cluster, a second ``make up`` changes nothing, ``make down`` ends it.

Runs the real Makefile and scripts in a throw-away ``MINIK8S_HOME`` on free loopback ports, then
talks to the cluster with the real ``kubectl``, ``minictl`` and ``ctr``; ``make status`` tells what
runs; after ``make down`` no process, mount, netns, bridge, iptables chain or cgroup folder of the
cluster is left.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from minik8s.cluster import Cluster, Layout, cleanup
from minik8s.cluster.layout import stored_identity
from minik8s.testing import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
DAEMONS = ("etcd", "containerd", "registry", "apiserver")

# The first make up on a machine may build the base images into the shared cache (debootstrap).
pytestmark = [pytest.mark.timeout(900)]


def make(target: str, env: dict[str, str], timeout: float = 300, ok: tuple[int, ...] = (0,)
         ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["make", "-C", str(REPO), "--no-print-directory", target], env=env,
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                            check=False)
    assert result.returncode in ok, f"make {target} failed:\n{result.stdout}\n{result.stderr}"
    return result


def distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def pids(home: Path) -> dict[str, int]:
    """Every program of the cluster's supervisord and its pid (all must be RUNNING)."""
    procs = Cluster(Layout(home), out=lambda _: None).status()
    assert procs is not None, "the cluster's supervisord does not answer"
    assert all(p["statename"] == "RUNNING" for p in procs), procs
    found = {p["name"]: int(p["pid"]) for p in procs}
    assert set(DAEMONS) <= set(found), found
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture()
def cluster_env() -> Iterator[dict[str, str]]:
    """Environment for a cluster of this test's own; ``make down`` and removal always follow."""
    home = tempfile.mkdtemp(prefix="mk8s-e2e-", dir="/tmp")  # short: unix sockets live under it
    etcd_port, peer_port, api_port, registry_port, kubelet_port = distinct_free_ports(5)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MINIK8S_")},
           "MINIK8S_HOME": home, "MINIK8S_ETCD_PORT": str(etcd_port),
           "MINIK8S_ETCD_PEER_PORT": str(peer_port), "MINIK8S_API_PORT": str(api_port),
           "MINIK8S_REGISTRY_PORT": str(registry_port), "MINIK8S_KUBELET_PORT": str(kubelet_port),
           "KUBECONFIG": os.path.join(home, "kubeconfig")}
    env.pop("MINIK8S_SERVER", None)  # minictl must find the server through $MINIK8S_HOME/config
    try:
        yield env
    finally:
        subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "down"],
                       env={**env, "MINIK8S_PURGE": "1"}, capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL, check=False)
        shutil.rmtree(home, ignore_errors=True)


def kubectl(env: dict[str, str], *args: str) -> str:
    cache = os.path.join(env["MINIK8S_HOME"], "kube-cache")  # never the user's ~/.kube/cache
    result = subprocess.run(["kubectl", "--cache-dir", cache, "--request-timeout", "20s", *args], env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def minictl(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "minictl.main", *args], env=env, cwd=str(REPO),
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, f"minictl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_make_up_twice_then_down(cluster_env: dict[str, str]) -> None:
    env = cluster_env
    home = Path(env["MINIK8S_HOME"])
    ports = [int(env[var]) for var in ("MINIK8S_ETCD_PORT", "MINIK8S_ETCD_PEER_PORT", "MINIK8S_API_PORT",
                                       "MINIK8S_REGISTRY_PORT")]
    api = f"http://127.0.0.1:{env['MINIK8S_API_PORT']}"

    make("up", env, timeout=840)
    first = pids(home)
    assert all(alive(pid) for pid in first.values()), first
    ident = stored_identity(Layout(home))
    assert ident is not None and ident.registry_port == int(env["MINIK8S_REGISTRY_PORT"])
    status = make("status", env)
    assert all(f"{name} " in status.stdout and "RUNNING" in status.stdout for name in DAEMONS), status.stdout
    sock = home / "run" / "containerd.sock"
    ctr = subprocess.run(["ctr", "--address", str(sock), "version"], capture_output=True, text=True, timeout=30,
                         check=False)
    assert ctr.returncode == 0 and "Server:" in ctr.stdout, ctr.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{env['MINIK8S_REGISTRY_PORT']}/v2/", timeout=10) as r:
        assert r.status == 200
    assert f"server: {api}" in (home / "kubeconfig").read_text()
    assert f"server: {api}" in (home / "config").read_text()
    assert f"MINIK8S_API_PORT={env['MINIK8S_API_PORT']}" in (home / "cluster.env").read_text()

    names = kubectl(env, "get", "namespaces", "-o", "name").split()
    assert {"namespace/default", "namespace/kube-system"} <= set(names), names
    table = kubectl(env, "get", "namespaces")
    assert "default" in table and "kube-system" in table, table
    shown = minictl(env, "get", "ns")
    assert "default" in shown and "kube-system" in shown, shown

    # Again, with the ports left to cluster.env: nothing restarts, everything stays healthy.
    again_env = {k: v for k, v in env.items() if not k.endswith("_PORT")}
    second = make("up", again_env)
    assert "already running" in second.stdout, second.stdout
    assert pids(home) == first
    assert "namespace/default" in kubectl(env, "get", "namespaces", "-o", "name").split()

    make("down", env, timeout=180)
    for name, pid in first.items():
        wait_until(lambda pid=pid: not alive(pid), timeout=30, what=f"{name} (pid {pid}) to exit")
    for port in ports:
        wait_until(lambda port=port: not listening(port), timeout=30, what=f"port {port} to close")
    assert not list((home / "run").glob("*.pid"))
    assert not list((home / "run").glob("*.sock"))
    assert (home / "etcd").is_dir(), "make down keeps the data"
    assert make("status", env, ok=(2,)).stdout.strip().endswith("not running")  # make turns exit 3 into 2

    # Nothing of the cluster is left on the host.
    assert not cleanup.marked_processes(home)
    assert not cleanup.shim_processes(sock)
    assert not cleanup.mounts_under(home)
    assert not cleanup.link_exists(ident.bridge)
    assert not [ns for ns in cleanup.netns_on_bridge(ident.bridge)]
    assert not cleanup.iptables_chains(ident.chain_prefix)
    assert not cleanup.cgroup_dirs(ident.cgroup_root)
