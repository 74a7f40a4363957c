"""``Cluster(layout)``: start, stop, inspect and remove one cluster (what ``make up/down/status/clean`` run).

up: write every config, set the kernel knobs, start (or update) the cluster's supervisord, start
any program that is not running, wait (bounded) until etcd, containerd, the registry and the
apiserver answer, seed the cluster images, write kubeconfig and config.
down: supervisord stops every program; then whatever the daemons leave on the host is removed
(see ``cleanup``). Nothing outside this one cluster is ever touched.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import ipaddress
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from minik8s.cluster import cleanup, configs, kube_dns
from minik8s.cluster.layout import (
    Identity,
    Layout,
    LayoutError,
    load_identity,
    save_identity,
    stored_identity,
    write_atomic,
)
from minik8s.cluster.supervisor import RUNNING_STATES, Supervisor

REPO = Path(__file__).resolve().parents[2]
HEALTH_CHECKED = ("etcd", "containerd", "registry", "apiserver")
# Checked by their health endpoint too when the cluster runs them (else only RUNNING is waited for).
OPTIONAL_HEALTH_CHECKED = ("gateway", "ingress")


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped; the message says why and where the logs are."""


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


class Cluster:
    """One cluster under ``layout.home``."""

    def __init__(self, layout: Layout, *, environ: Mapping[str, str] | None = None,
                 out: Callable[[str], None] | None = None) -> None:
        self.layout = layout
        self.environ = dict(os.environ if environ is None else environ)
        self.out = out or (lambda line: print(line, flush=True))
        self.start_timeout = float(self.environ.get("MINIK8S_START_TIMEOUT") or 60)
        self.stop_grace = int(self.environ.get("MINIK8S_STOP_GRACE") or 15)
        self.start_retries = int(self.environ.get("MINIK8S_START_RETRIES") or 1000)
        self.supervisor = Supervisor(layout.supervisor_socket)

    # ---- identity and configs -------------------------------------------------------------

    def identity(self) -> Identity:
        """The identity ``up`` would use (environment, else cluster.env, else defaults)."""
        return load_identity(self.layout, self.environ)

    def known_identity(self) -> Identity:
        """The identity in cluster.env, else the one derived from the home (for down/status)."""
        return stored_identity(self.layout) or load_identity(self.layout, {})

    def binaries(self) -> configs.Binaries:
        bindir = Path(sys.executable).parent
        without = set((self.environ.get("MINIK8S_WITHOUT") or "").replace(",", " ").split())

        def console_script(name: str, module: str) -> str | None:
            script = bindir / name
            if not script.exists():
                return None
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            return str(script) if found else None

        return configs.Binaries(
            etcd=configs.which("etcd", "/usr/bin/etcd"),
            containerd=configs.which("containerd", "/usr/bin/containerd"),
            registry=configs.which("docker-registry", "/usr/bin/docker-registry"),
            python=sys.executable,
            kubelet=None if "kubelet" in without else console_script("minik8s-kubelet", "kubelet.main"),
            scheduler=None if "scheduler" in without else console_script("minik8s-scheduler", "scheduler.main"),
            controller_manager=None if "controller-manager" in without else console_script(
                "minik8s-controller-manager", "controllers.main"),
            kubeproxy=None if "kubeproxy" in without else console_script("minik8s-kubeproxy", "kubeproxy.main"),
            gateway=None if "gateway" in without else console_script("minik8s-gateway", "serverless.main"),
            dns=None if "dns" in without else console_script("minik8s-dns", "clusterdns.main"),
            ingress=None if "ingress" in without else console_script("minik8s-ingress", "ingress.main"),
            nginx=configs.which("nginx", "/usr/sbin/nginx"),
            repo=str(REPO),
        )

    def options(self) -> configs.SupervisorOptions:
        return configs.SupervisorOptions(
            start_retries=self.start_retries,
            stop_grace=self.stop_grace,
            apiserver_args=tuple(shlex.split(self.environ.get("MINIK8S_APISERVER_ARGS") or "")),
            kubelet_args=tuple(shlex.split(self.environ.get("MINIK8S_KUBELET_ARGS") or "")),
            scheduler_args=tuple(shlex.split(self.environ.get("MINIK8S_SCHEDULER_ARGS") or "")),
            controller_manager_args=tuple(shlex.split(self.environ.get("MINIK8S_CONTROLLER_MANAGER_ARGS") or "")),
            kubeproxy_args=tuple(shlex.split(self.environ.get("MINIK8S_KUBEPROXY_ARGS") or "")),
            gateway_args=tuple(shlex.split(self.environ.get("MINIK8S_GATEWAY_ARGS") or "")),
            dns_args=tuple(shlex.split(self.environ.get("MINIK8S_DNS_ARGS") or "")),
            ingress_args=tuple(shlex.split(self.environ.get("MINIK8S_INGRESS_ARGS") or "")),
            node_name=self.environ.get("MINIK8S_NODE_NAME") or configs.node_name(),
            etcd_unsupported_arch="arm64" if platform.machine() == "aarch64" else None,
        )

    def write_configs(self, ident: Identity) -> set[str]:
        """Write every generated file; return the names of programs whose own config file changed."""
        lay = self.layout
        for d in lay.dirs():
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(lay.run, 0o700)
        changed: set[str] = set()
        save_identity(lay, ident)
        if write_atomic(lay.containerd_config,
                        configs.containerd_config(lay, ident, cni_bin_dir=configs.find_cni_bin_dir())):
            changed.add("containerd")
        for rel, text in configs.registry_hosts_files(ident).items():
            write_atomic(lay.certs_d / rel, text)
        write_atomic(lay.cni_conflist, configs.cni_conflist(ident, ipam_dir=lay.cni_ipam))
        if write_atomic(lay.registry_config, configs.registry_config(lay, ident)):
            changed.add("registry")
        opts = self.options()
        write_atomic(lay.supervisord_conf,
                     configs.supervisord_conf(lay, ident, configs.programs(lay, ident, self.binaries(), opts), opts))
        return changed

    # ---- up -------------------------------------------------------------------------------

    def up(self, *, seed: bool | None = None) -> Identity:
        lay = self.layout
        lay.check()
        if os.geteuid() != 0:
            raise ClusterError("make up needs root: containerd, CNI bridges, iptables and cgroups do")
        running = self.supervisor.answering()
        ident = self.identity()
        stored = stored_identity(lay)
        if running and stored is not None and stored != ident:
            diff = [f"{k}={v} (running: {stored.to_env()[k]})" for k, v in ident.to_env().items()
                    if stored.to_env()[k] != v]
            raise ClusterError(f"the cluster in {lay.home} runs with other settings: {', '.join(diff)}; "
                               "run 'make down' before changing them")
        if not running:
            self._refuse_busy_ports(ident)
        self._check_pod_cidr(ident)
        changed = self.write_configs(ident)
        self._kernel_settings()
        if running:
            added, updated, removed = self.supervisor.update()
            for name in added + updated:
                self.out(f"{name}: configuration changed, (re)started")
            for name in removed:
                self.out(f"{name}: removed")
            for name in sorted(changed - set(added) - set(updated)):
                info = self._info(name)
                if info and info["statename"] in RUNNING_STATES:
                    self.out(f"{name}: its config file changed: restarting it")
                    self.supervisor.stop(name)
                    self.supervisor.start(name)
        else:
            self._start_supervisord()
        before = {p["name"]: p for p in self.supervisor.processes()}
        for name, info in before.items():
            if info["statename"] in ("STOPPED", "EXITED", "FATAL", "UNKNOWN"):
                self.out(f"{name} was {info['statename']}: starting it")
                self.supervisor.start(name)
        self._wait_healthy(ident)
        for name, info in before.items():
            now = self._info(name) or {}
            if info["statename"] == "RUNNING" and now.get("pid") == info["pid"]:
                self.out(f"{name} already running (pid {info['pid']})")
            else:
                self.out(f"{name} started (pid {now.get('pid')})")
        if "dns" in before:  # the Service and Endpoints that carry pods' DNS to minik8s-dns (docs/dns.md)
            try:
                kube_dns.ensure(ident, self.out)
            except kube_dns.KubeDnsError as exc:
                raise ClusterError(f"cannot set up kube-system/kube-dns: {exc}") from exc
        if seed if seed is not None else self.environ.get("MINIK8S_SKIP_SEED") != "1":
            self._seed(ident)
        write_atomic(lay.kubeconfig, configs.kubeconfig(ident))
        write_atomic(lay.config, configs.minictl_config(lay, ident))
        gateway = f"gateway {ident.gateway_url}, " if "gateway" in before else ""
        self.out(f"minik8s is up: apiserver {ident.api_url}, {gateway}etcd {ident.etcd_url}, "
                 f"registry {ident.registry_url},\n"
                 f"  containerd {lay.containerd_socket}, pods {ident.pod_cidr} on bridge {ident.bridge}, "
                 f"state in {lay.home}\n"
                 f"  export KUBECONFIG={lay.kubeconfig}; kubectl get namespaces\n"
                 f"  .venv/bin/minictl get namespaces        (reads {lay.config})\n"
                 f"  make status / make down                 (data stays until 'make clean')")
        return ident

    def _refuse_busy_ports(self, ident: Identity) -> None:
        for key, port in ident.ports().items():
            if port_in_use(port):
                raise ClusterError(f"port {port} ({key}) is taken by a process that is not this cluster's; "
                                   "pick another with the MINIK8S_*_PORT variables")

    def _check_pod_cidr(self, ident: Identity) -> None:
        """Refuse a pod CIDR that a route of another interface already covers (another cluster's bridge)."""
        net = ident.network
        try:
            lines = Path("/proc/net/route").read_text().splitlines()[1:]
        except OSError:
            return
        for line in lines:
            f = line.split()
            if len(f) < 8 or f[0] == ident.bridge:
                continue
            dest = ipaddress.IPv4Address(int(f[1], 16).to_bytes(4, "little"))
            mask = ipaddress.IPv4Address(int(f[7], 16).to_bytes(4, "little"))
            if str(mask) == "0.0.0.0":
                continue
            route = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
            if route.overlaps(net):
                raise ClusterError(f"pod CIDR {net} of this cluster overlaps {route} on {f[0]} "
                                   "(another cluster's bridge?); set MINIK8S_POD_CIDR to a free /24")

    def _kernel_settings(self) -> None:
        """Bridged pod traffic must pass iptables (services), and the host routes for pods."""
        bridge_knob = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        if not bridge_knob.exists():
            res = subprocess.run(["modprobe", "br_netfilter"], capture_output=True, text=True, timeout=30,
                                 check=False)
            if res.returncode != 0 and not bridge_knob.exists():
                self.out(f"warning: modprobe br_netfilter failed: {res.stderr.strip()}")
        for knob in (bridge_knob, Path("/proc/sys/net/ipv4/ip_forward")):
            try:
                if knob.read_text().strip() != "1":
                    knob.write_text("1\n")
            except OSError as exc:
                self.out(f"warning: cannot set {knob} to 1: {exc}")

    def _supervisord_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.environ.items()
               if not k.startswith("MINIK8S_") and k not in ("KUBECONFIG", "PYTHONPATH")}
        env[cleanup.MARKER] = str(self.layout.home)
        env["MINIK8S_HOME"] = str(self.layout.home)
        env["PATH"] = configs.SYSTEM_PATH
        return env

    def _start_supervisord(self) -> None:
        lay = self.layout
        self._stop_stale_supervisord()
        lay.supervisor_socket.unlink(missing_ok=True)
        supervisord = Path(sys.executable).parent / "supervisord"
        start_log = lay.logs / "supervisord.start.log"
        with open(start_log, "w") as log:
            res = subprocess.run([str(supervisord), "-c", str(lay.supervisord_conf)], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, env=self._supervisord_env(),
                                 cwd=str(lay.home), timeout=60, check=False)
        if res.returncode != 0:
            raise ClusterError(f"supervisord failed (exit {res.returncode}):\n{_tail(start_log)}")
        self._wait(lambda: self.supervisor.answering(), 30, "supervisord to answer on "
                   f"{lay.supervisor_socket}", lay.supervisord_log)
        self.out(f"supervisord started (pid {self.supervisor.pid()})")

    def _stop_stale_supervisord(self) -> None:
        """A supervisord of this home that no longer answers: SIGTERM, then SIGKILL."""
        pid = self._supervisord_pid()
        if pid is None:
            return
        self.out(f"supervisord (pid {pid}) does not answer: stopping it")
        if cleanup.kill_all([pid], sig=signal.SIGTERM, timeout=self.stop_grace + 5):
            cleanup.kill_all([pid], timeout=10)

    def _supervisord_pid(self) -> int | None:
        try:
            pid = int(self.layout.supervisord_pid.read_text().strip())
        except (OSError, ValueError):
            return None
        args = cleanup.cmdline(pid)
        if cleanup.alive(pid) and any("supervisord" in a for a in args[:2]) and str(
                self.layout.supervisord_conf) in args:
            return pid
        return None

    def _info(self, name: str) -> dict[str, Any] | None:
        try:
            return self.supervisor.process(name)
        except Exception:  # noqa: BLE001 - a program that supervisord does not know
            return None

    def _wait(self, check: Callable[[], object], timeout: float, what: str, log: Path,
              program: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):  # not ready yet
                if check():
                    return
            if program is not None:
                info = self._info(program)
                if info is not None and info["statename"] == "FATAL":
                    raise ClusterError(f"{program} cannot start ({info.get('spawnerr') or 'FATAL'}); "
                                       f"last lines of {log}:\n{_tail(log)}")
            if time.monotonic() >= deadline:
                raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; last lines of {log}:\n"
                                   f"{_tail(log)}")
            time.sleep(0.1)

    def checks(self, ident: Identity) -> dict[str, Callable[[], bool]]:
        lay = self.layout

        def etcd() -> bool:
            try:
                with urllib.request.urlopen(f"{ident.etcd_url}/health", timeout=2) as r:
                    return bool(json.loads(r.read()).get("health") == "true")
            except (OSError, ValueError):
                return False

        def containerd() -> bool:
            return self.ctr("version", timeout=5).returncode == 0

        return {
            "etcd": etcd,
            "containerd": containerd,
            "registry": lambda: _http_status(f"{ident.registry_url}/v2/") == 200,
            "apiserver": lambda: _http_status(f"{ident.api_url}/readyz") == 200,
            "gateway": lambda: _http_status(f"{ident.gateway_url}/healthz") == 200,
            # nginx answers (404 for an unknown host) once the controller has synced and started it.
            "ingress": lambda: _http_status(ident.ingress_url) is not None,
            "supervisord": lambda: lay.supervisor_socket.exists() and self.supervisor.answering(),
        }

    def ctr(self, *args: str, namespace: str | None = None, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this cluster's containerd (never the system's)."""
        cmd = ["ctr", "--address", str(self.layout.containerd_socket)]
        if namespace:
            cmd += ["--namespace", namespace]
        try:
            return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 124, "", "timeout")

    def _wait_healthy(self, ident: Identity) -> None:
        checks = self.checks(ident)
        names = {p["name"] for p in self.supervisor.processes()}
        deadline = time.monotonic() + self.start_timeout
        answering = [*HEALTH_CHECKED, *(n for n in OPTIONAL_HEALTH_CHECKED if n in names)]
        for name in answering:
            check = checks[name]
            self._wait(lambda name=name, check=check: check() and self._is_running(name),  # type: ignore[misc]
                       max(1.0, deadline - time.monotonic()), f"{name} to answer", self.layout.log(name),
                       program=name)
        for name in sorted(names - set(answering)):
            self._wait(functools.partial(self._is_running, name), max(1.0, deadline - time.monotonic()),
                       f"{name} to run", self.layout.log(name), program=name)

    def _is_running(self, name: str) -> bool:
        return (self._info(name) or {}).get("statename") == "RUNNING"

    def _seed(self, ident: Identity) -> None:
        """Push the cluster's own images (built once into the shared cache) into its registry."""
        from minik8s.images.base import seed  # imported here: only `up` needs the image tools

        self.out(f"seeding the cluster images into {ident.registry_url}")
        seed(ident.registry_url)

    # ---- status ---------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]] | None:
        """supervisord's view of every program, or None when the cluster's supervisord is not running."""
        if not self.supervisor.answering():
            return None
        return self.supervisor.processes()

    # ---- down -----------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop everything and remove what the daemons left on the host; return what could not be removed."""
        ident = self.known_identity()
        if self.supervisor.answering():
            for name in ("kubelet", "controller-manager", "scheduler"):
                if self._info(name) is not None:
                    self.supervisor.stop(name)
            if self.checks(ident)["containerd"]():
                self._kill_containerd_tasks()
            pid = self.supervisor.pid()
            self.out(f"stopping supervisord (pid {pid}) and its programs")
            with contextlib.suppress(Exception):  # it may close the socket while answering
                self.supervisor.shutdown()
            if cleanup.kill_all([pid], sig=0, timeout=self.stop_grace * 2 + 15):
                self.out(f"supervisord (pid {pid}) still runs: SIGKILL")
                cleanup.kill_all([pid])
        else:
            self._stop_stale_supervisord()
        return self._cleanup(ident)

    def _kill_containerd_tasks(self) -> None:
        """Kill every task of this containerd, in every namespace (bounded), while it still answers."""
        deadline = time.monotonic() + 30
        res = self.ctr("namespaces", "ls", "-q")
        for ns in res.stdout.split() if res.returncode == 0 else []:
            tasks = self.ctr("tasks", "ls", "-q", namespace=ns)
            for task in tasks.stdout.split() if tasks.returncode == 0 else []:
                if time.monotonic() >= deadline:
                    return
                self.ctr("tasks", "delete", "--force", task, namespace=ns, timeout=10)

    def _cleanup(self, ident: Identity) -> list[str]:
        lay = self.layout
        problems: list[str] = []
        # Processes: anything started under this cluster's supervisord, then shims of its containerd.
        leftovers = cleanup.marked_processes(lay.home)
        shims = cleanup.shim_processes(lay.containerd_socket)
        sockets = [s for s in (cleanup.shim_socket(cleanup.cmdline(p)) for p in shims) if s is not None]
        if leftovers or shims:
            self.out(f"killing {len(set(leftovers + shims))} leftover processes of this cluster")
            cleanup.kill_all(set(leftovers + shims), sig=signal.SIGTERM, timeout=5)
            if left := cleanup.kill_all(set(leftovers + shims), timeout=10):
                problems.append(f"processes still alive: {left}")
        for s in sockets:
            s.unlink(missing_ok=True)
        # Containers: everything in the cluster's cgroup root.
        if left_cg := cleanup.remove_cgroups(ident.cgroup_root):
            problems.append(f"cgroup folders that stay: {[str(p) for p in left_cg]}")
        # Network namespaces named on the host whose interface sits on this cluster's bridge.
        for ns in cleanup.netns_on_bridge(ident.bridge):
            self.out(f"deleting network namespace {ns}")
            cleanup.delete_netns(ns)
        # Mounts (rootfs, shm, the pods' netns under containerd/state) under the home.
        if left_mounts := cleanup.unmount_all(lay.home):
            problems.append(f"mounts that stay: {left_mounts}")
        if cleanup.link_exists(ident.bridge):
            self.out(f"deleting bridge {ident.bridge}")
            cleanup.delete_link(ident.bridge)
            if cleanup.link_exists(ident.bridge):
                problems.append(f"bridge {ident.bridge} stays")
        if err := cleanup.iptables_cleanup(ident.chain_prefix, ident.cni_network_name):
            problems.append(err)
        cleanup.clear_ipam(lay.cni_ipam, ident.cni_network_name)
        for sock in lay.sockets():
            sock.unlink(missing_ok=True)
        lay.supervisord_pid.unlink(missing_ok=True)
        for p in problems:
            self.out(f"warning: {p}")
        self.out(f"minik8s in {lay.home} is down")
        return problems

    # ---- purge ----------------------------------------------------------------------------

    def purge(self) -> None:
        """``down`` and remove the home (only a folder that is plainly a minik8s home)."""
        home = self.layout.home
        if not home.exists():
            self.out(f"no cluster in {home}")
            return
        if home == Path("/") or home == Path.home().resolve():
            raise ClusterError(f"refusing to remove {home}")
        if not self.layout.cluster_env.exists() and any(home.iterdir()):
            raise ClusterError(f"{home} has no cluster.env: not removing it")
        problems = self.down()
        if cleanup.mounts_under(home):
            raise ClusterError(f"not removing {home}: mounts remain under it: {problems}")
        shutil.rmtree(home)
        self.out(f"removed {home}")


def describe(procs: list[dict[str, Any]] | None, layout: Layout) -> str:
    if procs is None:
        return f"minik8s in {layout.home}: not running"
    rows = [f"minik8s in {layout.home}:"]
    for p in procs:
        rows.append(f"  {p['name']:<11} {p['statename']:<9} {p['description']}")
    return "\n".join(rows)


__all__ = ["Cluster", "ClusterError", "LayoutError", "describe"]
