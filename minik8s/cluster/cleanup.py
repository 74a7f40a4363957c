"""Removing what a cluster leaves on the host after its daemons stopped.

Each function touches only what provably belongs to one cluster: processes carrying its marker
variable, cgroup folders under its cgroup root, mounts under its home, network namespaces whose
interface sits on its bridge, its bridge, and iptables chains with its prefix (or CNI portmap
chains whose rules name its CNI network). Every wait is bounded.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/var/run/netns")
SHIM_SOCKET_DIR = Path("/run/containerd/s")  # containerd 1.6 shims always put their socket here
MARKER = "MINIK8S_SUPERVISED"  # in the environment of supervisord and everything it starts


def _run(cmd: list[str], *, timeout: float = 10, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, check=False)


# ---- processes ----------------------------------------------------------------------------

def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def marked_processes(home: Path) -> list[int]:
    """Processes whose environment carries ``MINIK8S_SUPERVISED=<home>`` (supervisord and its children),
    and the ingress's nginx processes, whose working folder is under the home: nginx writes its process
    titles over its environment, so the marker cannot be read there."""
    want = f"{MARKER}={home}".encode()
    me = os.getpid()
    found = []
    for pid in _all_pids():
        if pid == me:
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if (want in env.split(b"\0") or _nginx_under(pid, home)) and alive(pid):
            found.append(pid)
    return found


def _nginx_under(pid: int, home: Path) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return os.path.basename(exe).startswith("nginx") and (cwd == home or home in cwd.parents)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def shim_processes(containerd_socket: Path) -> list[int]:
    """containerd-shim processes started by the containerd listening on ``containerd_socket``."""
    found = []
    for pid in _all_pids():
        args = cmdline(pid)
        if args and "containerd-shim" in os.path.basename(args[0]) and _flag(args, "-address") == str(
                containerd_socket):
            found.append(pid)
    return found


def _flag(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args[:-1]):
        if a == name:
            return args[i + 1]
    return None


def shim_socket(args: list[str]) -> Path | None:
    """The socket file a containerd 1.6 shim with these arguments listens on (to remove it after a kill)."""
    ns, cid, address = _flag(args, "-namespace"), _flag(args, "-id"), _flag(args, "-address")
    if not (ns and cid and address):
        return None
    digest = hashlib.sha256(os.path.join(address, ns, cid).encode()).hexdigest()
    return SHIM_SOCKET_DIR / digest


def kill_all(pids: Iterable[int], *, sig: int = signal.SIGKILL, timeout: float = 10) -> list[int]:
    """Send ``sig`` to each pid, wait (bounded) until they are gone; return those still alive."""
    pids = list(pids)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


# ---- cgroups --------------------------------------------------------------------------------

def cgroup_dirs(cgroup_root: str) -> list[Path]:
    """Every folder of ``cgroup_root`` in every mounted hierarchy, deepest first."""
    rel = cgroup_root.strip("/")
    if not rel:
        return []
    tops: list[Path] = []
    if (CGROUP_FS / "cgroup.controllers").exists():  # cgroup v2 only
        tops.append(CGROUP_FS / rel)
    elif CGROUP_FS.is_dir():
        for hierarchy in sorted(CGROUP_FS.iterdir()):
            if hierarchy.is_symlink() or not hierarchy.is_dir():
                continue
            tops.append(hierarchy / rel)
    found: list[Path] = []
    for top in tops:
        if top.is_dir():
            found += [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def cgroup_pids(dirs: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for d in dirs:
        try:
            pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        except (OSError, ValueError):
            continue
    return pids


def remove_cgroups(cgroup_root: str, *, timeout: float = 10) -> list[Path]:
    """Kill what runs under ``cgroup_root`` and remove its folders; return folders that stay."""
    deadline = time.monotonic() + timeout
    dirs = cgroup_dirs(cgroup_root)
    while True:
        pids = cgroup_pids(dirs)
        if pids:
            kill_all(pids, timeout=max(0.1, deadline - time.monotonic()))
        left = []
        for d in cgroup_dirs(cgroup_root):
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(d)
        if not left or time.monotonic() >= deadline:
            return left
        dirs = left
        time.sleep(0.05)


# ---- mounts and network namespaces ----------------------------------------------------------

def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` (from /proc/self/mountinfo), deepest first."""
    prefix = str(root).rstrip("/") + "/"
    points = set()
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point == str(root) or point.startswith(prefix):
                points.add(point)
    return sorted(points, key=lambda p: (p.count("/"), p), reverse=True)


_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def unmount(point: str) -> bool:
    """Unmount ``point`` (lazily when busy); True when it is no longer mounted."""
    for flags in (0, MNT_DETACH):
        if _libc.umount2(os.fsencode(point), flags) == 0:
            return True
        if ctypes.get_errno() in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            return True
    return False


def unmount_all(root: Path, *, rounds: int = 5) -> list[str]:
    """Unmount everything under ``root`` (stacked mounts need several rounds); return what stays."""
    for _ in range(rounds):
        points = mounts_under(root)
        if not points:
            return []
        for p in points:
            unmount(p)
    return mounts_under(root)


def bridge_ports(bridge: str) -> set[int]:
    """ifindexes of the interfaces enslaved to ``bridge``."""
    found = set()
    brif = Path("/sys/class/net") / bridge / "brif"
    if brif.is_dir():
        for port in brif.iterdir():
            try:
                found.add(int((Path("/sys/class/net") / port.name / "ifindex").read_text()))
            except (OSError, ValueError):
                continue
    return found


def netns_on_bridge(bridge: str) -> list[str]:
    """Named netns (``ip netns``) with an interface whose host peer is a port of ``bridge``."""
    ports = bridge_ports(bridge)
    if not ports or not NETNS_DIR.is_dir():
        return []
    found = []
    for ns in sorted(NETNS_DIR.iterdir()):
        try:
            out = _run(["ip", "-n", ns.name, "-o", "link", "show"], timeout=5).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        peers = {int(m) for m in re.findall(r"@if(\d+):", out)}
        if peers & ports:
            found.append(ns.name)
    return found


def delete_netns(name: str) -> None:
    _run(["ip", "netns", "delete", name], timeout=10)


def delete_link(name: str) -> None:
    if (Path("/sys/class/net") / name).exists():
        _run(["ip", "link", "delete", name], timeout=10)


def link_exists(name: str) -> bool:
    return (Path("/sys/class/net") / name).exists()


# ---- iptables -------------------------------------------------------------------------------

def _jump_target(rule: str) -> str | None:
    m = re.search(r"(?:^|\s)-[jg] (\S+)", rule)
    return m.group(1) if m else None


# portmap's chains shared by every CNI network on the host: never deleted, only our rules in them.
SHARED_CNI_CHAINS = frozenset({"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SNAT", "CNI-HOSTPORT-MASQ",
                               "CNI-HOSTPORT-SETMARK"})


def iptables_cleanup_script(saved: str, chain_prefix: str, network_name: str) -> str:
    """An ``iptables-restore --noflush`` script deleting this cluster's chains and every rule using them.

    Chains: those named ``chain_prefix…``, and CNI portmap chains (``CNI-DN-…``) that a rule carrying
    the comment of this cluster's CNI network jumps to (or that hold such a rule). Rules: those
    jumping to such a chain and those whose comment names the network. Empty when nothing is to delete.
    """
    net_re = re.compile(r'name: \\?"' + re.escape(network_name) + r'\\?"')
    out: list[str] = []
    table = ""
    chains: list[str] = []
    rules: list[tuple[str, str]] = []

    def flush_table() -> None:
        doomed = {c for c in chains if c.startswith(chain_prefix)}
        ours = [(c, r) for c, r in rules if net_re.search(r)]
        doomed |= {c for c, _ in ours if c.startswith("CNI-") and c not in SHARED_CNI_CHAINS}
        doomed |= {t for _, r in ours if (t := _jump_target(r)) and t.startswith("CNI-") and t in chains
                   and t not in SHARED_CNI_CHAINS}
        deletes = [f"-D {c} {r}" for c, r in rules
                   if c not in doomed and (_jump_target(r) in doomed or net_re.search(r))]
        if not doomed and not deletes:
            return
        out.append(f"*{table}")
        out.extend(deletes)
        out.extend(f"-F {c}" for c in sorted(doomed))
        out.extend(f"-X {c}" for c in sorted(doomed))
        out.append("COMMIT")

    for line in saved.splitlines():
        if line.startswith("*"):
            table, chains, rules = line[1:].strip(), [], []
        elif line.startswith(":") and table:
            chains.append(line[1:].split()[0])
        elif line.startswith("-A ") and table:
            _, chain, rest = line.split(" ", 2)
            rules.append((chain, rest))
        elif line.strip() == "COMMIT" and table:
            flush_table()
            table = ""
    return "\n".join(out) + ("\n" if out else "")


def iptables_chains(chain_prefix: str) -> list[str]:
    """``table/chain`` for every chain whose name starts with ``chain_prefix``."""
    saved = _run(["iptables-save"], timeout=20).stdout
    found, table = [], ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and line[1:].startswith(chain_prefix):
            found.append(f"{table}/{line[1:].split()[0]}")
    return found


def iptables_cleanup(chain_prefix: str, network_name: str) -> str | None:
    """Delete this cluster's iptables chains and rules; return an error text or None."""
    saved = _run(["iptables-save"], timeout=20)
    if saved.returncode != 0:
        return f"iptables-save failed: {saved.stderr.strip()}"
    script = iptables_cleanup_script(saved.stdout, chain_prefix, network_name)
    if not script:
        return None
    res = _run(["iptables-restore", "-w", "5", "--noflush"], input=script, timeout=30)
    if res.returncode != 0:
        return f"iptables-restore failed: {res.stderr.strip()}\n{script}"
    return None


# ---- CNI IPAM -------------------------------------------------------------------------------

def clear_ipam(ipam_dir: Path, network_name: str) -> None:
    """Forget host-local's allocations of ``network_name`` (all its pods are gone)."""
    d = ipam_dir / network_name
    if d.is_dir():
        for f in d.iterdir():
            if f.is_file():
                f.unlink(missing_ok=True)
