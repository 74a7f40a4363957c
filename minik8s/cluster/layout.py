"""Where one cluster keeps everything, and who it is (docs/node.md is the contract).

``Layout(home)`` names every path under ``$MINIK8S_HOME``; ``Identity`` is the cluster's
``cluster.env``: its id, ports, pod CIDR, bridge, iptables chain prefix and cgroup root. Both are
plain values: nothing here starts a process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path

SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL

DEFAULT_HOME = Path("~/.minik8s")
DEFAULT_PORTS = {
    "MINIK8S_ETCD_PORT": 23790,
    "MINIK8S_ETCD_PEER_PORT": 23800,
    "MINIK8S_API_PORT": 18080,
    "MINIK8S_REGISTRY_PORT": 15000,
    "MINIK8S_KUBELET_PORT": 10250,
    "MINIK8S_GATEWAY_PORT": 18081,
    "MINIK8S_DNS_PORT": 10053,
    "MINIK8S_INGRESS_PORT": 18082,
}
PORT_KEYS = tuple(DEFAULT_PORTS)
# Ports a cluster must never take: the system's etcd, its registry, kubectl proxy.
RESERVED_PORTS = frozenset({2379, 2380, 5000, 8001})


class LayoutError(ValueError):
    """A home or an identity that cannot work (too long a socket path, a bad port, ...)."""


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """``home`` (default ``$MINIK8S_HOME``, else ``~/.minik8s``) as an absolute path, symlinks resolved."""
    raw = home if home is not None else os.environ.get("MINIK8S_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def is_default_home(home: Path) -> bool:
    return resolve_home(home) == DEFAULT_HOME.expanduser().resolve()


class Layout:
    """Every path of one cluster (docs/node.md "One cluster = one state directory")."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.home = resolve_home(home)

    def __repr__(self) -> str:
        return f"Layout({str(self.home)!r})"

    # top level
    @property
    def cluster_env(self) -> Path:
        return self.home / "cluster.env"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    @property
    def config(self) -> Path:
        return self.home / "config"

    @property
    def supervisord_conf(self) -> Path:
        return self.home / "supervisord.conf"

    # run/ and logs/
    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def supervisor_socket(self) -> Path:
        return self.run / "supervisor.sock"

    @property
    def supervisord_pid(self) -> Path:
        return self.run / "supervisord.pid"

    @property
    def supervisord_log(self) -> Path:
        return self.logs / "supervisord.log"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def containerd_ttrpc_socket(self) -> Path:
        return self.run / "containerd.sock.ttrpc"

    def log(self, program: str) -> Path:
        return self.logs / f"{program}.log"

    # etcd
    @property
    def etcd(self) -> Path:
        return self.home / "etcd"

    # containerd
    @property
    def containerd(self) -> Path:
        return self.home / "containerd"

    @property
    def containerd_root(self) -> Path:
        return self.containerd / "root"

    @property
    def containerd_state(self) -> Path:
        return self.containerd / "state"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def certs_d(self) -> Path:
        return self.containerd / "certs.d"

    @property
    def runc_root(self) -> Path:
        return self.containerd_state / "runc"

    # cni
    @property
    def cni(self) -> Path:
        return self.home / "cni"

    @property
    def cni_conf(self) -> Path:
        return self.cni / "conf"

    @property
    def cni_conflist(self) -> Path:
        return self.cni_conf / "10-minik8s.conflist"

    @property
    def cni_ipam(self) -> Path:
        return self.cni / "ipam"

    # registry
    @property
    def registry(self) -> Path:
        return self.home / "registry"

    @property
    def registry_config(self) -> Path:
        return self.registry / "config.yml"

    @property
    def registry_data(self) -> Path:
        return self.registry / "data"

    # kubelet
    @property
    def kubelet(self) -> Path:
        return self.home / "kubelet"

    # the serverless gateway's own state (activations.db)
    @property
    def gateway(self) -> Path:
        return self.home / "gateway"

    def sockets(self) -> list[Path]:
        return [self.supervisor_socket, self.containerd_socket, self.containerd_ttrpc_socket]

    def check(self) -> None:
        """Raise ``LayoutError`` when a unix socket path of this home would be too long."""
        for sock in self.sockets():
            n = len(os.fsencode(sock))
            if n > SOCKET_PATH_MAX:
                raise LayoutError(
                    f"MINIK8S_HOME {self.home} is too long: the socket {sock} would be {n} bytes "
                    f"(unix sockets allow {SOCKET_PATH_MAX}); use a shorter home such as /tmp/mk8s-XXXX")

    def dirs(self) -> list[Path]:
        """Folders ``make up`` creates."""
        return [self.home, self.run, self.logs, self.etcd, self.containerd, self.containerd_root,
                self.containerd_state, self.certs_d, self.cni_conf, self.cni_ipam, self.registry,
                self.registry_data, self.kubelet, self.gateway]


def cluster_id(home: Path) -> str:
    """6 hex characters from the absolute home path."""
    return hashlib.sha256(os.fsencode(resolve_home(home))).hexdigest()[:6]


def _pod_cidr_for(cid: str) -> str:
    n = 1 + int(cid, 16) % 254
    return f"10.88.{n}.0/24"


DEFAULT_SERVICE_CIDR = "10.96.0.0/16"


def _service_cidr_for(cid: str) -> str:
    """A /24 of its own for a cluster in another home: kubeproxy's rules match ClusterIPs by destination
    only, so two clusters side by side must never hand out the same ClusterIP (the DNS IP above all)."""
    n = 1 + int(cid, 16) % 254
    return f"10.97.{n}.0/24"


@dataclasses.dataclass(frozen=True)
class Identity:
    """The contents of ``cluster.env`` (docs/node.md)."""

    cluster_id: str
    etcd_port: int
    etcd_peer_port: int
    api_port: int
    registry_port: int
    kubelet_port: int
    gateway_port: int
    dns_port: int
    ingress_port: int
    pod_cidr: str
    bridge: str
    chain_prefix: str
    cgroup_root: str
    service_cidr: str = DEFAULT_SERVICE_CIDR

    # derived values
    @property
    def etcd_endpoint(self) -> str:
        return f"127.0.0.1:{self.etcd_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{self.etcd_endpoint}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def registry_url(self) -> str:
        return f"http://{self.registry_host}"

    @property
    def gateway_url(self) -> str:
        """The serverless gateway (functions' HTTP triggers, code uploads); docs/serverless.md."""
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def dns_ip(self) -> str:
        """The kube-dns Service's fixed ClusterIP: the 10th address of the service range (as kubeadm does)."""
        return str(ipaddress.IPv4Network(self.service_cidr, strict=False).network_address + 10)

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.pod_cidr, strict=False)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def cni_network_name(self) -> str:
        return f"minik8s-{self.cluster_id}"

    def ports(self) -> dict[str, int]:
        return {"MINIK8S_ETCD_PORT": self.etcd_port, "MINIK8S_ETCD_PEER_PORT": self.etcd_peer_port,
                "MINIK8S_API_PORT": self.api_port, "MINIK8S_REGISTRY_PORT": self.registry_port,
                "MINIK8S_KUBELET_PORT": self.kubelet_port, "MINIK8S_GATEWAY_PORT": self.gateway_port,
                "MINIK8S_DNS_PORT": self.dns_port, "MINIK8S_INGRESS_PORT": self.ingress_port}

    def to_env(self) -> dict[str, str]:
        return {"MINIK8S_CLUSTER_ID": self.cluster_id, **{k: str(v) for k, v in self.ports().items()},
                "MINIK8S_POD_CIDR": self.pod_cidr, "MINIK8S_SERVICE_CIDR": self.service_cidr,
                "MINIK8S_BRIDGE": self.bridge,
                "MINIK8S_CHAIN_PREFIX": self.chain_prefix, "MINIK8S_CGROUP_ROOT": self.cgroup_root}

    def render(self, home: Path) -> str:
        lines = [f"# minik8s cluster in {home}; written by `make up` (python -m minik8s.cluster up)"]
        lines += [f"{k}={v}" for k, v in self.to_env().items()]
        return "\n".join(lines) + "\n"

    def validate(self) -> None:
        ports = self.ports()
        for key, port in ports.items():
            if not 1 <= port <= 65535:
                raise LayoutError(f"{key} must be a port number, not {port}")
            if port in RESERVED_PORTS:
                raise LayoutError(f"{key}={port} is a system default port; minik8s never uses it")
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port in seen:
                raise LayoutError(f"{key} and {seen[port]} are both {port}")
            seen[port] = key
        try:
            net = ipaddress.IPv4Network(self.pod_cidr, strict=True)
        except ValueError as exc:
            raise LayoutError(f"MINIK8S_POD_CIDR {self.pod_cidr!r} is not an IPv4 network: {exc}") from None
        if net.prefixlen > 28:
            raise LayoutError(f"MINIK8S_POD_CIDR {self.pod_cidr} is too small")
        try:
            svc = ipaddress.IPv4Network(self.service_cidr, strict=True)
        except ValueError as exc:
            raise LayoutError(f"MINIK8S_SERVICE_CIDR {self.service_cidr!r} is not an IPv4 network: {exc}") from None
        if svc.prefixlen > 28:
            raise LayoutError(f"MINIK8S_SERVICE_CIDR {self.service_cidr} is too small")
        if svc.overlaps(net):
            raise LayoutError(f"MINIK8S_SERVICE_CIDR {self.service_cidr} overlaps MINIK8S_POD_CIDR {self.pod_cidr}")
        if len(self.bridge) > 15:
            raise LayoutError(f"MINIK8S_BRIDGE {self.bridge!r} is longer than 15 characters")
        if not self.chain_prefix or len(self.chain_prefix) > 16:
            raise LayoutError(f"MINIK8S_CHAIN_PREFIX {self.chain_prefix!r} must be 1-16 characters")
        if not self.cgroup_root.startswith("/") or self.cgroup_root.rstrip("/") == "":
            raise LayoutError(f"MINIK8S_CGROUP_ROOT {self.cgroup_root!r} must be an absolute path below /")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of ``path`` (comments and blank lines skipped); empty when it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def free_ports(n: int, avoid: set[int] | None = None) -> list[int]:
    """``n`` distinct free loopback ports (held open together, so they cannot repeat)."""
    avoid = set(avoid or ()) | set(RESERVED_PORTS)
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port not in avoid:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def load_identity(layout: Layout, environ: Mapping[str, str] | None = None) -> Identity:
    """The cluster's identity. Each value: ``MINIK8S_*`` in ``environ``, else ``cluster.env``, else a default.

    Default ports are those of docs/node.md for the default home (``~/.minik8s``) and free loopback
    ports for any other home. The cluster id always comes from the home path.
    """
    env = os.environ if environ is None else environ
    stored = read_env_file(layout.cluster_env)
    cid = cluster_id(layout.home)

    def pick(key: str) -> str | None:
        value = env.get(key) or stored.get(key)
        return value or None

    ports: dict[str, int] = {}
    missing: list[str] = []
    for key in PORT_KEYS:
        value = pick(key)
        if value is None:
            missing.append(key)
            continue
        try:
            ports[key] = int(value)
        except ValueError:
            raise LayoutError(f"{key} must be a port number, not {value!r}") from None
    if missing:
        if is_default_home(layout.home):
            for key in missing:
                ports[key] = DEFAULT_PORTS[key]
        else:
            for key, port in zip(missing, free_ports(len(missing), set(ports.values())), strict=True):
                ports[key] = port
    ident = Identity(
        cluster_id=cid,
        etcd_port=ports["MINIK8S_ETCD_PORT"],
        etcd_peer_port=ports["MINIK8S_ETCD_PEER_PORT"],
        api_port=ports["MINIK8S_API_PORT"],
        registry_port=ports["MINIK8S_REGISTRY_PORT"],
        kubelet_port=ports["MINIK8S_KUBELET_PORT"],
        gateway_port=ports["MINIK8S_GATEWAY_PORT"],
        dns_port=ports["MINIK8S_DNS_PORT"],
        ingress_port=ports["MINIK8S_INGRESS_PORT"],
        pod_cidr=pick("MINIK8S_POD_CIDR") or _pod_cidr_for(cid),
        service_cidr=pick("MINIK8S_SERVICE_CIDR") or (DEFAULT_SERVICE_CIDR if is_default_home(layout.home)
                                                     else _service_cidr_for(cid)),
        bridge=pick("MINIK8S_BRIDGE") or f"mk{cid}",
        chain_prefix=pick("MINIK8S_CHAIN_PREFIX") or f"MK8S-{cid}",
        cgroup_root=pick("MINIK8S_CGROUP_ROOT") or f"/minik8s-{cid}",
    )
    ident.validate()
    return ident


def stored_identity(layout: Layout) -> Identity | None:
    """The identity in ``cluster.env`` alone (no environment, no defaults); None without a complete file."""
    stored = read_env_file(layout.cluster_env)
    if not all(k in stored for k in (*PORT_KEYS, "MINIK8S_POD_CIDR", "MINIK8S_BRIDGE")):
        return None
    return load_identity(layout, environ={})


def save_identity(layout: Layout, ident: Identity) -> None:
    layout.home.mkdir(parents=True, exist_ok=True)
    write_atomic(layout.cluster_env, ident.render(layout.home))


def write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` through a temporary file; True when the contents changed."""
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True
