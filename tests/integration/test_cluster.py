"""Real clusters under temporary homes: etcd, containerd, registry and apiserver under the cluster's
own supervisord; restarts; two clusters side by side; ``down`` leaves nothing of the cluster behind.

Runs as root (CI does); needs no kubelet or scheduler. Network setup that containerd would do for a
pod is done here by running the cluster's own CNI conflist by hand, so that ``down``'s cleanup of
bridges, network namespaces, portmap chains, mounts and cgroups is checked on real kernel objects.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minik8s.cluster import Cluster, Layout, cleanup
from minik8s.cluster.configs import find_cni_bin_dir
from minik8s.cluster.layout import Identity
from minik8s.testing import free_port, wait_until

# Real parts only, never skipped: `make test` installs them and runs as root, so a missing one fails.
pytestmark = [pytest.mark.timeout(300)]

SYSTEM_SOCKET = Path("/run/containerd/containerd.sock")


def run(*cmd: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, input=input, env=env, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)} failed: {res.stderr}{res.stdout}"
    return res.stdout


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as r:
        return int(r.status)


ClusterFactory = Callable[[], Cluster]


@pytest.fixture()
def make_cluster() -> Iterator[ClusterFactory]:
    """Clusters in short temporary homes; each is purged at the end, whatever happened."""
    made: list[Cluster] = []

    def factory() -> Cluster:
        home = tempfile.mkdtemp(prefix="mk8s-it-", dir="/tmp")
        lines: list[str] = []
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MINIK8S_")},
               "MINIK8S_HOME": home, "MINIK8S_SKIP_SEED": "1", "MINIK8S_START_RETRIES": "2",
               "MINIK8S_STOP_GRACE": "5", "MINIK8S_START_TIMEOUT": "60",
               "MINIK8S_WITHOUT": "kubelet,scheduler"}  # the node's daemons have tests of their own
        cluster = Cluster(Layout(home), environ=env, out=lines.append)
        cluster.lines = lines  # type: ignore[attr-defined]
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        try:
            if cluster.layout.home.exists():
                cluster.purge()
        finally:
            shutil.rmtree(cluster.layout.home, ignore_errors=True)


def programs(cluster: Cluster) -> dict[str, dict[str, Any]]:
    procs = cluster.status()
    assert procs is not None
    return {p["name"]: p for p in procs}


def listening_ports(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of TCP listeners owned by ``pids`` (from ``ss``)."""
    found = set()
    for line in run("ss", "-Hltnp").splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            local = line.split()[3]
            addr, _, port = local.rpartition(":")
            found.add((addr, int(port)))
    return found


def family(pid: int) -> set[int]:
    """``pid`` and its descendants."""
    out = {pid}
    changed = True
    while changed:
        changed = False
        for p in Path("/proc").iterdir():
            if not p.name.isdigit() or int(p.name) in out:
                continue
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in out:
                out.add(int(p.name))
                changed = True
    return out


def cni(cluster: Cluster, command: str, netns: str, container_id: str,
        port_mappings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the cluster's conflist (bridge, then portmap) as containerd's CRI would for a pod."""
    conflist = json.loads(cluster.layout.cni_conflist.read_text())
    bin_dir = find_cni_bin_dir()
    prev: dict[str, Any] | None = None
    for plugin in conflist["plugins"]:
        conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
        if prev is not None:
            conf["prevResult"] = prev
        if plugin["type"] == "portmap":
            conf["runtimeConfig"] = {"portMappings": port_mappings or []}
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
               "CNI_IFNAME": "eth0", "CNI_PATH": bin_dir, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        out = run(f"{bin_dir}/{plugin['type']}", input=json.dumps(conf), env=env)
        if out.strip():
            prev = json.loads(out)
    assert prev is not None
    return prev


def traces(cluster: Cluster, ident: Identity, portmap_chains: tuple[str, ...] = ()) -> dict[str, object]:
    """Everything of this cluster that could outlive it on the host (empty values: nothing)."""
    saved = run("iptables-save")
    return {
        "processes": cleanup.marked_processes(cluster.layout.home),
        "shims": cleanup.shim_processes(cluster.layout.containerd_socket),
        "mounts": [line for line in Path("/proc/mounts").read_text().splitlines()
                   if str(cluster.layout.home) in line],
        "bridge": ident.bridge in run("ip", "-o", "link", "show"),
        "netns": [ns for ns in run("ip", "netns", "list").split() if ident.cluster_id in ns],
        "chains": [line for line in saved.splitlines() if ident.chain_prefix in line
                   or f'\\"{ident.cni_network_name}\\"' in line
                   or any(f"{c} " in line or line.endswith(c) for c in portmap_chains)],
        "cgroups": cleanup.cgroup_dirs(ident.cgroup_root),
    }


def test_up_restart_repair_and_down_leaves_nothing(make_cluster: ClusterFactory) -> None:
    system_socket_before = SYSTEM_SOCKET.exists()
    cluster = make_cluster()
    lay = cluster.layout
    ident = cluster.up()
    assert lay.supervisor_socket.is_socket() and lay.containerd_socket.is_socket()

    # Each part answers on the cluster's own endpoints.
    version = run("ctr", "--address", str(lay.containerd_socket), "version")
    assert "Server:" in version
    assert http_status(f"{ident.registry_url}/v2/") == 200
    assert http_status(f"{ident.api_url}/readyz") == 200
    progs = programs(cluster)
    assert set(progs) >= {"etcd", "containerd", "registry", "apiserver"}
    assert all(p["statename"] == "RUNNING" for p in progs.values()), progs

    # Nothing on the system defaults; everything on loopback; the system socket untouched.
    pids: set[int] = set()
    for p in progs.values():
        pids |= family(p["pid"])
    ports = listening_ports(pids)
    assert {port for _, port in ports} >= {ident.etcd_port, ident.api_port, ident.registry_port}
    assert not {port for _, port in ports} & {2379, 2380, 5000}, ports
    # Only the ingress's nginx and the cluster DNS listen on every address (pods reach them at the node's
    # bridge address, docs/addons.md).
    public = {ident.ingress_port, ident.dns_port}
    assert all(addr == "127.0.0.1" or port in public for addr, port in ports), ports
    assert SYSTEM_SOCKET.exists() == system_socket_before
    for pid in pids:
        assert str(SYSTEM_SOCKET) not in " ".join(cleanup.cmdline(pid))

    # A killed containerd comes back by itself.
    old = progs["containerd"]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: programs(cluster)["containerd"]["statename"] == "RUNNING"
               and programs(cluster)["containerd"]["pid"] != old, timeout=30, what="containerd restarted")
    wait_until(lambda: cluster.checks(ident)["containerd"](), timeout=30, what="containerd answering again")

    # A program that went FATAL (its port taken while it restarted) is started again by up().
    cluster.supervisor.stop("registry")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", ident.registry_port))
        squatter.listen()
        cluster.supervisor.start("registry")
        wait_until(lambda: programs(cluster)["registry"]["statename"] == "FATAL", timeout=60,
                   what="registry FATAL")
    cluster.up()
    assert any("registry was FATAL" in line for line in cluster.lines)  # type: ignore[attr-defined]
    assert programs(cluster)["registry"]["statename"] == "RUNNING"
    assert http_status(f"{ident.registry_url}/v2/") == 200
    assert any("etcd already running" in line for line in cluster.lines)  # type: ignore[attr-defined]

    # What containerd and the CNI plugins would leave for a pod: a bridge, netns (named and under
    # containerd/state), a portmap chain, a chain of the cluster's own prefix, mounts, a cgroup with a process.
    named = f"mk8s-test-{ident.cluster_id}"
    run("ip", "netns", "add", named)
    result = cni(cluster, "ADD", f"/var/run/netns/{named}", "c-named",
                 [{"hostPort": free_port(), "containerPort": 80, "protocol": "tcp"}])
    assert result["ips"][0]["address"].startswith(ident.pod_cidr.rsplit(".", 2)[0])
    state_ns = lay.containerd_state / "netns" / f"cni-{ident.cluster_id}"
    state_ns.parent.mkdir(parents=True, exist_ok=True)
    state_ns.touch()
    run("unshare", f"--net={state_ns}", "true")
    cni(cluster, "ADD", str(state_ns), "c-state")
    run("iptables", "-w", "5", "-t", "nat", "-N", f"{ident.chain_prefix}-SVC")
    run("iptables", "-w", "5", "-t", "nat", "-A", "OUTPUT", "-j", f"{ident.chain_prefix}-SVC")
    (lay.kubelet / "tmpfs").mkdir()
    run("mount", "-t", "tmpfs", "tmpfs", str(lay.kubelet / "tmpfs"))
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    for ctrl in ("memory", "pids"):
        cg = Path("/sys/fs/cgroup") / ctrl / ident.cgroup_root.strip("/") / "podtest"
        if cg.parent.parent.is_dir():
            cg.mkdir(parents=True, exist_ok=True)
            (cg / "cgroup.procs").write_text(str(sleeper.pid))
    dn_chains = tuple(sorted({m.group(1) for line in run("iptables-save", "-t", "nat").splitlines()
                              if f'\\"{ident.cni_network_name}\\"' in line
                              and (m := re.search(r"-j (CNI-DN-\w+)", line))}))
    assert dn_chains, "portmap made its per-pod chain"
    before = traces(cluster, ident, dn_chains)
    assert before["bridge"] and before["netns"] and before["chains"] and before["mounts"] and before["cgroups"]

    assert cluster.down() == []
    sleeper.wait(timeout=10)
    after = traces(cluster, ident, dn_chains)
    assert not any(after.values()), after
    assert not lay.supervisor_socket.exists() and not lay.containerd_socket.exists()
    for port in ident.ports().values():
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert (lay.etcd / "member").is_dir(), "down keeps the data"
    assert not list((lay.cni_ipam / ident.cni_network_name).glob("10.*"))

    # And it comes up again on the same identity.
    assert cluster.up() == ident
    assert http_status(f"{ident.registry_url}/v2/") == 200


def test_two_clusters_side_by_side(make_cluster: ClusterFactory) -> None:
    a, b = make_cluster(), make_cluster()
    ia, ib = a.up(), b.up()
    for field in ("cluster_id", "bridge", "pod_cidr", "chain_prefix", "cgroup_root"):
        assert getattr(ia, field) != getattr(ib, field), field
    assert not set(ia.ports().values()) & set(ib.ports().values())
    uuids = set()
    for cluster, ident in ((a, ia), (b, ib)):
        out = run("ctr", "--address", str(cluster.layout.containerd_socket), "version")
        uuids.add(re.search(r"UUID: (\S+)", out).group(1))  # type: ignore[union-attr]
        assert http_status(f"{ident.registry_url}/v2/") == 200
        assert http_status(f"{ident.api_url}/readyz") == 200
    assert len(uuids) == 2, "each cluster has a containerd of its own"

    # Each cluster's pod network is its own bridge and subnet.
    for cluster, ident in ((a, ia), (b, ib)):
        ns = f"mk8s-test-{ident.cluster_id}"
        run("ip", "netns", "add", ns)
        result = cni(cluster, "ADD", f"/var/run/netns/{ns}", f"c-{ident.cluster_id}")
        assert result["ips"][0]["gateway"] == ident.gateway
        assert f"inet {ident.gateway}/24" in run("ip", "-o", "addr", "show", "dev", ident.bridge)

    # Stopping one leaves the other whole.
    assert a.down() == []
    assert not any(traces(a, ia).values())
    assert programs(b)["containerd"]["statename"] == "RUNNING"
    assert traces(b, ib)["bridge"] and traces(b, ib)["netns"]
    assert http_status(f"{ib.registry_url}/v2/") == 200
    assert b.down() == []
    assert not any(traces(b, ib).values())
