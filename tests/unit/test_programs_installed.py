"""Every external program that the scripts and the code call comes from a package ``make up`` installs.

``PROGRAMS`` is the explicit list (program → Debian package). The test checks that each program is
on this machine, that ``dpkg -S`` names that package as its owner, and that the package is in
scripts/install-deps.sh's ``APT_PACKAGES`` (or is Essential, or is apt itself, which installs the
rest). A scan of the Python sources makes sure no new ``subprocess`` call slips past the list.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# program -> Debian package, for scripts/*.sh, minik8s/ (cluster, images), kubelet/ and apiserver/.
PROGRAMS = {
    # scripts/install-deps.sh, test.sh, bench.sh
    "apt-get": "apt", "apt-cache": "apt", "dpkg": "dpkg", "dpkg-query": "dpkg",
    "python3": "python3-minimal", "curl": "curl", "pgrep": "procps",
    "sha256sum": "coreutils", "cut": "coreutils", "comm": "coreutils", "sort": "coreutils", "tr": "coreutils",
    "cat": "coreutils", "timeout": "coreutils", "mktemp": "coreutils", "chroot": "coreutils",
    "grep": "grep", "sed": "sed",
    # the cluster's daemons (minik8s/cluster) and what containerd runs for them
    "etcd": "etcd-server", "etcdctl": "etcd-client",
    "containerd": "containerd", "ctr": "containerd", "containerd-shim-runc-v2": "containerd", "runc": "runc",
    "docker-registry": "docker-registry",
    # host setup and cleanup (minik8s/cluster)
    "ip": "iproute2", "ss": "iproute2", "modprobe": "kmod",
    "iptables": "iptables", "iptables-save": "iptables", "iptables-restore": "iptables",
    "mount": "mount", "umount": "mount",
    # images (minik8s/images) and the pause process
    "debootstrap": "debootstrap", "catatonit": "catatonit", "busybox": "busybox-static",
    # benchmarks/bench_kubeproxy.py: the same HTTP load tool for both arms
    "wrk": "wrk",
    # the ingress controller's proxy (ingress/nginx.py)
    "nginx": "nginx",
}
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")

# Programs the Python sources start: the first element of a literal argv list passed to a
# subprocess call (or assigned to ``cmd``). Paths and variables are not programs of this list.
SOURCES = ("minik8s", "kubelet", "apiserver")
CALL_RE = re.compile(r"(?:\brun|Popen|check_output|check_call|\bcall|_run|create_subprocess_exec|\bcmd\s*=)\s*\(?"
                     r"\s*\[\s*f?\"([A-Za-z][\w.+-]*)\"")
NOT_PROGRAMS = frozenset({"--address"})


def apt_packages() -> set[str]:
    text = (REPO / "scripts/install-deps.sh").read_text()
    m = re.search(r'^APT_PACKAGES="([^"]*)"', text, re.M)
    assert m, "install-deps.sh has no APT_PACKAGES list"
    return set(m.group(1).replace("\\\n", " ").split())


def essential(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", package], capture_output=True, text=True,
                         timeout=30, check=False)
    return out.stdout.strip() == "yes"


def owner(path: str) -> str | None:
    """The package that owns ``path`` (trying the usr-merged and resolved spellings)."""
    candidates = [path, str(Path(path).resolve())]
    for p in list(candidates):
        for a, b in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/"), ("/usr/sbin/", "/bin/"),
                     ("/usr/bin/", "/sbin/")):
            if p.startswith(a):
                candidates.append(b + p[len(a):])
    for p in candidates:
        out = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True, timeout=30, check=False)
        if out.returncode == 0 and ":" in out.stdout:
            return out.stdout.split(":", 1)[0].split(",")[0].strip()
    return None




@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_program_comes_from_an_installed_package(program: str) -> None:
    package = PROGRAMS[program]
    path = shutil.which(program, path=SYSTEM_PATH)
    assert path, f"{program} is not installed (package {package}): run make deps"
    assert owner(path) == package, f"{path} belongs to {owner(path)}, not {package}"
    assert package in apt_packages() or essential(package) or package in ("apt", "python3-minimal"), (
        f"{package} (for {program}) is not in scripts/install-deps.sh's APT_PACKAGES")


def test_cni_plugins_come_from_containernetworking_plugins() -> None:
    from minik8s.cluster.configs import find_cni_bin_dir

    bin_dir = Path(find_cni_bin_dir())
    for plugin in CNI_PLUGINS:
        assert owner(str(bin_dir / plugin)) == "containernetworking-plugins", plugin
    assert "containernetworking-plugins" in apt_packages()


def test_every_program_the_sources_start_is_listed() -> None:
    found: dict[str, str] = {}
    for top in SOURCES:
        for path in (REPO / top).rglob("*.py"):
            for m in CALL_RE.finditer(path.read_text(errors="replace")):
                found.setdefault(m.group(1), str(path.relative_to(REPO)))
    missing = {prog: where for prog, where in found.items() if prog not in PROGRAMS and prog not in NOT_PROGRAMS}
    assert not missing, f"programs called but not in PROGRAMS (add them with their package): {missing}"
    assert {"ctr", "ip", "modprobe", "iptables-save"} <= set(found), found
