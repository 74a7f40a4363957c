"""``make up`` runs pods: the example pod answers HTTP on its IP, and ``make down`` leaves nothing behind.

Runs the real Makefile in a throw-away ``MINIK8S_HOME`` on free loopback ports, applies
examples/pod-multi.yaml with ``minictl`` as the README says, gets HTTP 200 from the pod IP, then
``make down``: no process, shim, mount, pod netns, bridge, iptables chain, cgroup folder or IPAM
allocation of that cluster may be left on the host.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from minik8s.cluster import Cluster, Layout, cleanup
from minik8s.cluster.layout import stored_identity
from minik8s.testing import wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pod-multi.yaml"

# The first make up on a machine may build the base images into the shared cache (debootstrap).
pytestmark = [pytest.mark.timeout(900)]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make(target: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["make", "-C", str(REPO), "--no-print-directory", target], env=env, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, f"make {target} failed:\n{result.stdout}\n{result.stderr}"
    return result


def minictl(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "minictl.main", *args], env=env, cwd=str(REPO),
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, f"minictl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture()
def env() -> Iterator[dict[str, str]]:
    home = tempfile.mkdtemp(prefix="mk8s-mu-", dir="/tmp")  # short: unix sockets live under it
    etcd, peer, api, registry, kubelet = free_ports(5)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MINIK8S_") and k != "KUBECONFIG"},
           "MINIK8S_HOME": home, "MINIK8S_ETCD_PORT": str(etcd), "MINIK8S_ETCD_PEER_PORT": str(peer),
           "MINIK8S_API_PORT": str(api), "MINIK8S_REGISTRY_PORT": str(registry),
           "MINIK8S_KUBELET_PORT": str(kubelet), "MINIK8S_STOP_GRACE": "5"}
    try:
        yield env
    finally:
        subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "down"], env={**env, "MINIK8S_PURGE": "1"},
                       capture_output=True, timeout=180, stdin=subprocess.DEVNULL, check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_make_up_runs_the_example_pod_and_make_down_leaves_nothing(env: dict[str, str]) -> None:
    home = Path(env["MINIK8S_HOME"])
    example = yaml.safe_load(EXAMPLE.read_text())
    host_path = Path(next(v["hostPath"]["path"] for v in example["spec"]["volumes"] if "hostPath" in v))
    host_path_existed = host_path.exists()

    up = make("up", env, timeout=840)
    lay = Layout(home)
    # make up ends with the example adder deployed and the curl line that calls it; the line works as printed.
    curl = [line.strip() for line in up.stdout.splitlines() if line.strip().startswith("curl -X POST")]
    assert curl, up.stdout
    answer = subprocess.run([*shlex.split(curl[-1]), "-s", "-m", "120"], capture_output=True, text=True,
                            timeout=130, check=False)
    assert answer.returncode == 0 and json.loads(answer.stdout) == 8, (curl[-1], answer.stdout, answer.stderr)
    ident = stored_identity(lay)
    assert ident is not None
    programs = {p["name"]: p["statename"] for p in Cluster(lay, out=lambda _: None).status() or []}
    assert programs.get("kubelet") == "RUNNING" and programs.get("scheduler") == "RUNNING", programs
    assert {"library/pause", "library/busybox", "library/python"} <= set(
        yaml.safe_load(urllib.request.urlopen(f"{ident.registry_url}/v2/_catalog", timeout=10).read())["repositories"])

    try:
        assert "pod/multi created" in minictl(env, "apply", "-f", str(EXAMPLE))

        def pod_ip() -> str:
            out = minictl(env, "get", "pod", "multi", "-o", "jsonpath={.status.phase} {.status.podIP}").split()
            return out[1] if len(out) == 2 and out[0] == "Running" else ""

        ip = wait_until(pod_ip, timeout=120, interval=0.2, what="the example pod Running with an IP")
        wide = minictl(env, "get", "pods", "-o", "wide")
        assert "multi" in wide and "2/2" in wide and ip in wide, wide

        def http_200() -> str:
            with urllib.request.urlopen(f"http://{ip}/", timeout=2) as r:
                return r.read().decode() if r.status == 200 else ""

        body = wait_until(http_200, timeout=30, interval=0.2, what=f"HTTP 200 from http://{ip}/")
        assert body.startswith(f"hello from multi ({ip})"), body
        logs = wait_until(lambda: (out := minictl(env, "logs", "multi", "-c", "client")) and "fetched:" in out and out,
                          timeout=30, what="the client's log")
        assert f"fetched: {body.strip()}" in logs, logs
        assert minictl(env, "exec", "multi", "-c", "client", "--", "cat", "/shared/index.html") == body
        assert [m for m in cleanup.mounts_under(home) if "/netns/" in m], "the pod's netns is a mount under the home"
        assert cleanup.cgroup_dirs(ident.cgroup_root)

        # make down with the pod still running: everything goes.
        make("down", env, timeout=180)
        saved = subprocess.run(["iptables-save"], capture_output=True, text=True, timeout=30, check=True).stdout
        ipam = lay.cni_ipam / ident.cni_network_name
        left = {
            "processes": cleanup.marked_processes(home),
            "shims": cleanup.shim_processes(lay.containerd_socket),
            "mounts": cleanup.mounts_under(home),
            "netns": cleanup.netns_on_bridge(ident.bridge),
            "bridge": cleanup.link_exists(ident.bridge),
            "chains": [line for line in saved.splitlines()
                       if ident.chain_prefix in line or f'\\"{ident.cni_network_name}\\"' in line],
            "cgroups": cleanup.cgroup_dirs(ident.cgroup_root),
            "ipam": sorted(p.name for p in ipam.glob("10.*")) if ipam.is_dir() else [],
        }
        assert not any(left.values()), f"make down left behind: {left}"
        ip_link = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout
        assert ident.bridge not in ip_link
        # (No request to the pod IP now: without the bridge's route it would leave through the default route.)
    finally:
        if not host_path_existed:
            shutil.rmtree(host_path, ignore_errors=True)
