"""The files a cluster runs on, as text: pure functions of the ``Layout`` and ``Identity``.

containerd ``config.toml`` (and its ``certs.d`` registry hosts), the CNI conflist, the registry
``config.yml`` and ``supervisord.conf``. Nothing here writes a file or starts a process; the
few facts that come from the machine (where the CNI plugins are, the node name) are looked up by
the helpers at the bottom and passed in.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import yaml

from minik8s.cluster.layout import Identity, Layout

SANDBOX_IMAGE = "docker.io/library/pause:3.9"
CLUSTER_DOMAIN = "cluster.local"
CNI_VERSION = "0.4.0"
# containerd plugins that would look at system paths or at kernel features we never use.
DISABLED_CONTAINERD_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def containerd_config(layout: Layout, ident: Identity, *, cni_bin_dir: str) -> str:
    """containerd 1.6 ``config.toml`` (version 2) with the CRI settings of ARCHITECTURE.md."""
    q = _toml_str
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    disabled = ", ".join(q(p) for p in DISABLED_CONTAINERD_PLUGINS)
    return f"""\
# containerd of the minik8s cluster {ident.cluster_id} in {layout.home} (generated; make up rewrites it)
version = 2
root = {q(str(layout.containerd_root))}
state = {q(str(layout.containerd_state))}
disabled_plugins = [{disabled}]
oom_score = 0

[grpc]
  address = {q(str(layout.containerd_socket))}

[ttrpc]
  address = {q(str(layout.containerd_ttrpc_socket))}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {q(str(layout.containerd_root / "opt"))}

  [plugins."io.containerd.runtime.v1.linux"]
    runtime_root = {q(str(layout.containerd_state / "runtime-v1"))}

{cri}]
    sandbox_image = {q(SANDBOX_IMAGE)}
    restrict_oom_score_adj = true
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    netns_mounts_under_state_dir = true
    max_container_log_line_size = 16384

{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

{cri}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

{cri}.containerd.runtimes.runc.options]
    SystemdCgroup = false
    Root = {q(str(layout.runc_root))}

{cri}.cni]
    bin_dir = {q(cni_bin_dir)}
    conf_dir = {q(str(layout.cni_conf))}
    max_conf_num = 1

{cri}.registry]
    config_path = {q(str(layout.certs_d))}
"""


def registry_hosts_toml(ident: Identity) -> str:
    """``certs.d/<host>/hosts.toml``: every pull goes to the cluster registry over plain http."""
    url = ident.registry_url
    return f"""\
# Every image name resolves through the cluster registry only (never the internet).
server = "{url}"

[host."{url}"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
"""


def registry_hosts_files(ident: Identity) -> dict[str, str]:
    """Relative path under ``certs.d`` → contents."""
    text = registry_hosts_toml(ident)
    return {"docker.io/hosts.toml": text, "_default/hosts.toml": text}


def cni_conflist(ident: Identity, *, ipam_dir: Path) -> str:
    """The cluster's CNI network: bridge (host-local IPAM) then portmap; no loopback (containerd adds it)."""
    conf = {
        "cniVersion": CNI_VERSION,
        "name": ident.cni_network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": ident.bridge,
                "isGateway": True,
                "hairpinMode": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": str(ident.network), "gateway": ident.gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


def registry_config(layout: Layout, ident: Identity) -> str:
    """Debian ``docker-registry`` (distribution v2) config: loopback, own storage, deletes allowed."""
    conf = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(layout.registry_data)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": ident.registry_host, "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "health": {"storagedriver": {"enabled": False}},
    }
    return "# the minik8s cluster registry (generated; make up rewrites it)\n" + yaml.safe_dump(conf, sort_keys=False)


@dataclasses.dataclass(frozen=True)
class Program:
    """One ``[program:NAME]`` of supervisord."""

    name: str
    command: list[str]
    priority: int
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    directory: str | None = None
    startsecs: int = 1


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Where the programs are (looked up on the machine by ``find_binaries``)."""

    etcd: str = "/usr/bin/etcd"
    containerd: str = "/usr/bin/containerd"
    registry: str = "/usr/bin/docker-registry"
    python: str = "python3"
    kubelet: str | None = None  # the console script, when the kubelet exists
    scheduler: str | None = None
    controller_manager: str | None = None
    kubeproxy: str | None = None
    gateway: str | None = None  # minik8s-gateway: serverless functions (docs/serverless.md)
    dns: str | None = None  # minik8s-dns: the cluster's DNS (docs/dns.md)
    ingress: str | None = None  # minik8s-ingress: Ingresses served by nginx (docs/ingress.md)
    nginx: str = "/usr/sbin/nginx"
    repo: str | None = None  # working directory of python -m programs


@dataclasses.dataclass(frozen=True)
class SupervisorOptions:
    start_retries: int = 1000
    stop_grace: int = 15
    apiserver_args: tuple[str, ...] = ()
    kubelet_args: tuple[str, ...] = ()
    scheduler_args: tuple[str, ...] = ()
    controller_manager_args: tuple[str, ...] = ()
    kubeproxy_args: tuple[str, ...] = ()
    gateway_args: tuple[str, ...] = ()
    dns_args: tuple[str, ...] = ()
    ingress_args: tuple[str, ...] = ()
    node_name: str = "minik8s-node"
    etcd_unsupported_arch: str | None = None  # Debian's etcd 3.4 wants ETCD_UNSUPPORTED_ARCH=arm64


def programs(layout: Layout, ident: Identity, bins: Binaries, opts: SupervisorOptions) -> list[Program]:
    """The cluster's daemons, in start order (supervisord priority), each with explicit flags."""
    peer = f"http://127.0.0.1:{ident.etcd_peer_port}"
    etcd_env = {"ETCD_UNSUPPORTED_ARCH": opts.etcd_unsupported_arch} if opts.etcd_unsupported_arch else {}
    # The apiserver proxies function code uploads to the gateway; without one it answers them 503.
    serverless = ["--serverless-url", ident.gateway_url] if bins.gateway else []
    out = [
        Program("etcd", [bins.etcd, "--name", "minik8s", "--data-dir", str(layout.etcd),
                         "--listen-client-urls", ident.etcd_url, "--advertise-client-urls", ident.etcd_url,
                         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                         "--initial-cluster", f"minik8s={peer}", "--logger", "zap", "--log-level", "warn"],
                priority=10, environment=etcd_env),
        Program("containerd", [bins.containerd, "--config", str(layout.containerd_config)], priority=10),
        Program("registry", [bins.registry, "serve", str(layout.registry_config)], priority=10),
        Program("apiserver", [bins.python, "-m", "apiserver.main", "--etcd-endpoints", ident.etcd_endpoint,
                              "--bind-address", "127.0.0.1", "--port", str(ident.api_port),
                              "--service-cluster-ip-range", ident.service_cidr, *serverless,
                              *opts.apiserver_args],
                priority=20, directory=bins.repo),
    ]
    if bins.scheduler:
        out.append(Program("scheduler", [bins.scheduler, "--apiserver", ident.api_url, *opts.scheduler_args],
                           priority=30, directory=bins.repo))
    if bins.controller_manager:
        out.append(Program("controller-manager", [bins.controller_manager, "--apiserver", ident.api_url,
                                                  *opts.controller_manager_args], priority=30, directory=bins.repo))
    if bins.kubelet:
        # Pods use the cluster DNS (kube-dns's ClusterIP) only when the cluster runs it.
        cluster_dns = ["--cluster-dns", ident.dns_ip, "--cluster-domain", CLUSTER_DOMAIN] if bins.dns else []
        out.append(Program("kubelet", [bins.kubelet, "--apiserver", ident.api_url, "--node-name", opts.node_name,
                                       "--cri-socket", str(layout.containerd_socket),
                                       "--root-dir", str(layout.kubelet), "--pod-cidr", ident.pod_cidr,
                                       "--cgroup-root", ident.cgroup_root, "--port", str(ident.kubelet_port),
                                       *cluster_dns, *opts.kubelet_args],
                           priority=30, directory=bins.repo))
    if bins.kubeproxy:
        # metrics off: the cluster has no port of its own for them yet (MINIK8S_KUBEPROXY_ARGS can set one).
        out.append(Program("kubeproxy", [bins.kubeproxy, "--apiserver", ident.api_url,
                                         "--chain-prefix", ident.chain_prefix, "--cluster-cidr", ident.pod_cidr,
                                         "--bridge", ident.bridge, "--node-ip", ident.gateway,
                                         "--metrics-port", "0", *opts.kubeproxy_args],
                           priority=30, directory=bins.repo))
    if bins.dns:
        # On every address: pods reach it at the bridge address (kube-dns's Endpoints), and the bridge
        # appears only with the first pod. It answers only the cluster domain (REFUSED for the rest).
        out.append(Program("dns", [bins.dns, "--apiserver", ident.api_url, "--bind-address", "0.0.0.0",
                                   "--port", str(ident.dns_port), "--cluster-domain", CLUSTER_DOMAIN,
                                   *opts.dns_args],
                           priority=30, directory=bins.repo))
    if bins.gateway:
        # After the apiserver and the registry (it lists/watches the one and pushes images to the other).
        out.append(Program("gateway", [bins.gateway, "--apiserver", ident.api_url, "--registry", ident.registry_url,
                                       "--bind-address", "127.0.0.1", "--port", str(ident.gateway_port),
                                       "--state-dir", str(layout.gateway), *opts.gateway_args],
                           priority=30, directory=bins.repo))
    if bins.ingress:
        # nginx is the daemon's child, with its config, pid and temporary files under HOME/ingress.
        out.append(Program("ingress", [bins.ingress, "--apiserver", ident.api_url, "--nginx", bins.nginx,
                                       "--state-dir", str(ingress_dir(layout)), "--port", str(ident.ingress_port),
                                       "--node-ip", ident.gateway, *opts.ingress_args],
                           priority=30, directory=bins.repo))
    return out


def ingress_dir(layout: Layout) -> Path:
    """The ingress controller's state folder: nginx.conf, nginx.pid, nginx's temporary files."""
    return layout.home / "ingress"


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _ini(value: str) -> str:
    """A value for supervisord's ini: ``%`` is its interpolation character."""
    return value.replace("%", "%%")


def _env(env: dict[str, str]) -> str:
    return ",".join(f'{k}="{_ini(v)}"' for k, v in env.items())


def supervisord_conf(layout: Layout, ident: Identity, progs: list[Program], opts: SupervisorOptions) -> str:
    """``supervisord.conf``: a unix socket under run/, logs under logs/, one program per daemon."""
    env = {"MINIK8S_HOME": str(layout.home), "MINIK8S_CLUSTER_ID": ident.cluster_id, "PATH": SYSTEM_PATH}
    lines = [
        f"; supervisord of the minik8s cluster {ident.cluster_id} in {_ini(str(layout.home))} (generated)",
        "[unix_http_server]",
        f"file = {_ini(str(layout.supervisor_socket))}",
        "chmod = 0700",
        "",
        "[supervisord]",
        f"pidfile = {_ini(str(layout.supervisord_pid))}",
        f"logfile = {_ini(str(layout.supervisord_log))}",
        "logfile_maxbytes = 10MB",
        "logfile_backups = 2",
        "loglevel = info",
        f"childlogdir = {_ini(str(layout.logs))}",
        f"directory = {_ini(str(layout.home))}",
        "nodaemon = false",
        "user = root",
        f"identifier = minik8s-{ident.cluster_id}",
        f"environment = {_env(env)}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl = unix://{_ini(str(layout.supervisor_socket))}",
    ]
    for p in progs:
        lines += [
            "",
            f"[program:{p.name}]",
            f"command = {_ini(shlex.join(p.command))}",
            f"priority = {p.priority}",
            "autostart = true",
            "autorestart = true",
            f"startsecs = {p.startsecs}",
            f"startretries = {opts.start_retries}",
            "stopsignal = TERM",
            f"stopwaitsecs = {opts.stop_grace}",
            "stopasgroup = true",
            "killasgroup = true",
            "redirect_stderr = true",
            f"stdout_logfile = {_ini(str(layout.log(p.name)))}",
            "stdout_logfile_maxbytes = 50MB",
            "stdout_logfile_backups = 2",
        ]
        if p.directory:
            lines.append(f"directory = {_ini(p.directory)}")
        if p.environment:
            lines.append(f"environment = {_env(p.environment)}")
    return "\n".join(lines) + "\n"


def kubeconfig(ident: Identity) -> str:
    """For kubectl: a loopback development cluster, plain http, no credentials."""
    return f"""\
apiVersion: v1
kind: Config
clusters:
- name: minik8s
  cluster:
    server: {ident.api_url}
contexts:
- name: minik8s
  context:
    cluster: minik8s
    namespace: default
    user: minik8s
current-context: minik8s
users:
- name: minik8s
  user: {{}}
preferences: {{}}
"""


def minictl_config(layout: Layout, ident: Identity) -> str:
    return f"# minictl's settings for the cluster in {layout.home} (written by make up)\nserver: {ident.api_url}\n"


# ---- facts from the machine ------------------------------------------------------------------

CNI_BIN_CANDIDATES = ("/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni")


def find_cni_bin_dir() -> str:
    """The folder with the CNI plugins: from ``dpkg -L containernetworking-plugins``, else a usual place."""
    try:
        out = subprocess.run(["dpkg", "-L", "containernetworking-plugins"], capture_output=True, text=True,
                             timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        if line.endswith("/bridge") and Path(line).is_file():
            return str(Path(line).parent)
    for cand in CNI_BIN_CANDIDATES:
        if (Path(cand) / "bridge").is_file():
            return cand
    return CNI_BIN_CANDIDATES[0]


def node_name() -> str:
    """The host name as a DNS-1123 name, else ``minik8s-node``."""
    name = re.sub(r"[^a-z0-9.-]", "-", socket.gethostname().lower()).strip("-.")
    return name[:63].strip("-.") or "minik8s-node"


def which(prog: str, default: str) -> str:
    return shutil.which(prog, path=SYSTEM_PATH) or default
