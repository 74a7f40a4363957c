"""The cluster's generated files parse and carry the cluster's identity; identity rules of docs/node.md."""

from __future__ import annotations

import configparser
import dataclasses
import json
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from minik8s.cluster import Cluster, cleanup, configs
from minik8s.cluster.layout import (
    DEFAULT_PORTS,
    Identity,
    Layout,
    LayoutError,
    cluster_id,
    load_identity,
    save_identity,
    stored_identity,
)


@pytest.fixture()
def lay(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "mk8s-a")


@pytest.fixture()
def ident(lay: Layout) -> Identity:
    return load_identity(lay, environ={})


def test_identity_from_home_path(lay: Layout, ident: Identity) -> None:
    cid = cluster_id(lay.home)
    assert len(cid) == 6 and int(cid, 16) >= 0
    assert ident.cluster_id == cid
    assert ident.bridge == f"mk{cid}" and len(ident.bridge) <= 15
    assert ident.chain_prefix == f"MK8S-{cid}"
    assert ident.cgroup_root == f"/minik8s-{cid}"
    assert ident.pod_cidr.startswith("10.88.") and ident.pod_cidr.endswith(".0/24")
    ports = list(ident.ports().values())
    assert len(set(ports)) == len(ports)
    assert not {2379, 2380, 5000} & set(ports)
    assert Layout(lay.home.parent / "mk8s-b").home != lay.home
    assert cluster_id(lay.home.parent / "mk8s-b") != cid


def test_default_home_gets_documented_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    ident = load_identity(Layout(tmp_path / ".minik8s"), environ={})
    assert ident.ports() == DEFAULT_PORTS


def test_environment_then_cluster_env_then_default(lay: Layout, ident: Identity) -> None:
    save_identity(lay, ident)
    assert stored_identity(lay) == ident
    assert load_identity(lay, environ={}) == ident  # reused, not new free ports
    env = {"MINIK8S_API_PORT": "19999", "MINIK8S_POD_CIDR": "10.99.7.0/24"}
    other = load_identity(lay, environ=env)
    assert other.api_port == 19999 and other.pod_cidr == "10.99.7.0/24"
    assert other.etcd_port == ident.etcd_port
    text = lay.cluster_env.read_text()
    for key, value in ident.to_env().items():
        assert f"{key}={value}\n" in text


@pytest.mark.parametrize("env, message", [
    ({"MINIK8S_API_PORT": "5000"}, "system default"),
    ({"MINIK8S_API_PORT": "x"}, "port number"),
    ({"MINIK8S_POD_CIDR": "10.88.1.5/24"}, "not an IPv4 network"),
    ({"MINIK8S_BRIDGE": "a-very-long-bridge-name"}, "15 characters"),
])
def test_bad_identity_values(lay: Layout, env: dict[str, str], message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        load_identity(lay, environ=env)


def test_socket_path_length_is_checked(tmp_path: Path) -> None:
    Layout(tmp_path / "short").check()
    with pytest.raises(LayoutError, match="too long"):
        Layout("/tmp/" + "x" * 90).check()


def test_containerd_config(lay: Layout, ident: Identity) -> None:
    conf = tomllib.loads(configs.containerd_config(lay, ident, cni_bin_dir="/usr/lib/cni"))
    assert conf["version"] == 2
    assert conf["root"] == str(lay.containerd_root) and conf["state"] == str(lay.containerd_state)
    assert conf["grpc"]["address"] == str(lay.containerd_socket)
    assert conf["ttrpc"]["address"].startswith(str(lay.run))
    assert conf["debug"]["address"] == "" and conf["metrics"]["address"] == ""
    assert "/run/containerd/containerd.sock" not in json.dumps(conf)
    cri = conf["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "docker.io/library/pause:3.9"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["Root"].startswith(str(lay.home))
    assert cri["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": str(lay.cni_conf), "max_conf_num": 1}
    assert cri["registry"]["config_path"] == str(lay.certs_d)
    assert conf["plugins"]["io.containerd.internal.v1.opt"]["path"].startswith(str(lay.home))
    assert "io.containerd.snapshotter.v1.btrfs" in conf["disabled_plugins"]


def test_registry_hosts(ident: Identity) -> None:
    files = configs.registry_hosts_files(ident)
    assert set(files) == {"docker.io/hosts.toml", "_default/hosts.toml"}
    for text in files.values():
        hosts = tomllib.loads(text)
        assert hosts["server"] == f"http://127.0.0.1:{ident.registry_port}"
        assert hosts["host"][hosts["server"]]["capabilities"] == ["pull", "resolve"]


def test_cni_conflist(lay: Layout, ident: Identity) -> None:
    conf = json.loads(configs.cni_conflist(ident, ipam_dir=lay.cni_ipam))
    assert conf["cniVersion"] == "0.4.0"
    assert conf["name"] == ident.cni_network_name
    bridge, portmap = conf["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == ident.bridge
    assert bridge["isGateway"] is True and bridge["hairpinMode"] is True and bridge["ipMasq"] is False
    ipam = bridge["ipam"]
    assert ipam["type"] == "host-local" and ipam["dataDir"] == str(lay.cni_ipam)
    assert ipam["ranges"] == [[{"subnet": ident.pod_cidr, "gateway": ident.gateway}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}]
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    assert all(p["type"] != "loopback" for p in conf["plugins"])


def test_registry_config(lay: Layout, ident: Identity) -> None:
    conf = yaml.safe_load(configs.registry_config(lay, ident))
    assert conf["storage"]["filesystem"]["rootdirectory"] == str(lay.registry_data)
    assert conf["storage"]["delete"] == {"enabled": True}
    assert conf["http"]["addr"] == f"127.0.0.1:{ident.registry_port}"
    assert "debug" not in conf["http"]


def _supervisord(lay: Layout, ident: Identity, bins: configs.Binaries) -> configparser.ConfigParser:
    opts = configs.SupervisorOptions(start_retries=7, stop_grace=9, apiserver_args=("--x", "1"), node_name="n1")
    text = configs.supervisord_conf(lay, ident, configs.programs(lay, ident, bins, opts), opts)
    parser = configparser.ConfigParser()  # with %-interpolation, as supervisord reads it
    parser.read_string(text)
    return parser


def test_supervisord_conf(lay: Layout, ident: Identity) -> None:
    conf = _supervisord(lay, ident, configs.Binaries(python="/v/bin/python"))
    assert conf["unix_http_server"]["file"] == str(lay.supervisor_socket)
    assert conf["supervisord"]["pidfile"] == str(lay.supervisord_pid)
    assert conf["supervisord"]["logfile"].startswith(str(lay.logs))
    assert {s for s in conf.sections() if s.startswith("program:")} == {
        "program:etcd", "program:containerd", "program:registry", "program:apiserver"}
    for name in ("etcd", "containerd", "registry", "apiserver"):
        prog = conf[f"program:{name}"]
        assert prog["autorestart"] == "true" and prog["startretries"] == "7" and prog["stopwaitsecs"] == "9"
        assert prog["stopasgroup"] == "true" and prog["killasgroup"] == "true"
        assert prog["stdout_logfile"] == str(lay.log(name))
        assert shlex.split(prog["command"])[0].startswith("/")
    etcd = shlex.split(conf["program:etcd"]["command"])
    assert ident.etcd_url in etcd and str(lay.etcd) in etcd
    assert str(lay.containerd_config) in conf["program:containerd"]["command"]
    assert str(lay.registry_config) in conf["program:registry"]["command"]
    api = shlex.split(conf["program:apiserver"]["command"])
    assert api[:3] == ["/v/bin/python", "-m", "apiserver.main"]
    assert ident.etcd_endpoint in api and str(ident.api_port) in api and api[-2:] == ["--x", "1"]


def test_supervisord_conf_with_kubelet_and_scheduler(lay: Layout, ident: Identity) -> None:
    bins = configs.Binaries(kubelet="/v/bin/minik8s-kubelet", scheduler="/v/bin/minik8s-scheduler")
    conf = _supervisord(lay, ident, bins)
    kubelet = shlex.split(conf["program:kubelet"]["command"])
    flags = dict(zip(kubelet[1::2], kubelet[2::2], strict=True))
    assert flags == {"--apiserver": ident.api_url, "--node-name": "n1",
                     "--cri-socket": str(lay.containerd_socket), "--root-dir": str(lay.kubelet),
                     "--pod-cidr": ident.pod_cidr, "--cgroup-root": ident.cgroup_root,
                     "--port": str(ident.kubelet_port)}
    assert shlex.split(conf["program:scheduler"]["command"]) == [
        "/v/bin/minik8s-scheduler", "--apiserver", ident.api_url]
    assert int(conf["program:kubelet"]["priority"]) > int(conf["program:apiserver"]["priority"])


def test_supervisord_conf_with_the_gateway(lay: Layout, ident: Identity) -> None:
    conf = _supervisord(lay, ident, configs.Binaries(python="/v/bin/python", gateway="/v/bin/minik8s-gateway"))
    gateway = shlex.split(conf["program:gateway"]["command"])
    assert gateway[0] == "/v/bin/minik8s-gateway"
    assert dict(zip(gateway[1::2], gateway[2::2], strict=True)) == {
        "--apiserver": ident.api_url, "--registry": ident.registry_url, "--bind-address": "127.0.0.1",
        "--port": str(ident.gateway_port), "--state-dir": str(lay.gateway)}
    assert int(conf["program:gateway"]["priority"]) > int(conf["program:apiserver"]["priority"])
    assert int(conf["program:gateway"]["priority"]) > int(conf["program:registry"]["priority"])
    assert conf["program:gateway"]["stdout_logfile"] == str(lay.log("gateway"))
    # The apiserver proxies code uploads to it; the user's extra flags still come last.
    api = shlex.split(conf["program:apiserver"]["command"])
    at = api.index("--serverless-url")
    assert api[at + 1] == f"http://127.0.0.1:{ident.gateway_port}" == ident.gateway_url
    assert api[-2:] == ["--x", "1"]


def test_without_the_gateway_the_apiserver_has_no_serverless_url(lay: Layout, ident: Identity) -> None:
    conf = _supervisord(lay, ident, configs.Binaries(python="/v/bin/python"))
    assert "program:gateway" not in conf.sections()
    assert "--serverless-url" not in conf["program:apiserver"]["command"]


def test_gateway_args_and_without_knob(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "mk8s-g")
    with_args = Cluster(lay, environ={"MINIK8S_GATEWAY_ARGS": "--stable-window 10 --tick 1"}, out=lambda _: None)
    opts = with_args.options()
    assert opts.gateway_args == ("--stable-window", "10", "--tick", "1")
    bins = dataclasses.replace(with_args.binaries(), gateway="/v/bin/minik8s-gateway")
    ident = load_identity(lay, environ={})
    prog = {p.name: p for p in configs.programs(lay, ident, bins, opts)}["gateway"]
    assert prog.command[-4:] == ["--stable-window", "10", "--tick", "1"]
    assert Cluster(lay, environ={"MINIK8S_WITHOUT": "kubelet,gateway"}, out=lambda _: None).binaries().gateway is None


def test_gateway_port_default_distinct_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lay: Layout,
                                                ident: Identity) -> None:
    assert DEFAULT_PORTS["MINIK8S_GATEWAY_PORT"] == 18081
    assert ident.ports()["MINIK8S_GATEWAY_PORT"] == ident.gateway_port
    assert len(set(ident.ports().values())) == len(ident.ports())
    save_identity(lay, ident)
    assert f"MINIK8S_GATEWAY_PORT={ident.gateway_port}\n" in lay.cluster_env.read_text()
    assert load_identity(lay, environ={}).gateway_port == ident.gateway_port
    assert load_identity(lay, environ={"MINIK8S_GATEWAY_PORT": "18555"}).gateway_port == 18555
    with pytest.raises(LayoutError, match="MINIK8S_GATEWAY_PORT and MINIK8S_API_PORT are both"):
        load_identity(lay, environ={"MINIK8S_GATEWAY_PORT": str(ident.api_port)})
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_identity(Layout(tmp_path / ".minik8s"), environ={}).gateway_url == "http://127.0.0.1:18081"


def test_cluster_env_from_before_the_gateway_gets_a_gateway_port(lay: Layout, ident: Identity) -> None:
    """A cluster.env written before the gateway existed: every old value stays, the gateway port is added."""
    save_identity(lay, ident)
    old = "".join(line + "\n" for line in lay.cluster_env.read_text().splitlines()
                  if not line.startswith("MINIK8S_GATEWAY_PORT="))
    lay.cluster_env.write_text(old)
    assert stored_identity(lay) is None  # incomplete: up does not compare it with the running cluster
    again = load_identity(lay, environ={})
    assert dataclasses.replace(again, gateway_port=ident.gateway_port) == ident
    assert again.gateway_port not in {v for k, v in again.ports().items() if k != "MINIK8S_GATEWAY_PORT"}


def test_percent_in_home_is_escaped(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "a%b")
    ident = load_identity(lay, environ={})
    conf = _supervisord(lay, ident, configs.Binaries())
    assert conf["program:etcd"]["stdout_logfile"] == str(lay.log("etcd"))


SAVED = r"""# Generated by iptables-save
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-DN-aaa - [0:0]
:CNI-DN-bbb - [0:0]
:MK8S-abc123-SERVICES - [0:0]
:MK8S-abc999-SERVICES - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A PREROUTING -j MK8S-abc123-SERVICES
-A OUTPUT -j MK8S-abc999-SERVICES
-A CNI-HOSTPORT-DNAT -m comment --comment "dnat name: \"minik8s-abc123\" id: \"c1\"" --dport 80 -j CNI-DN-aaa
-A CNI-HOSTPORT-DNAT -m comment --comment "dnat name: \"minik8s-abc999\" id: \"c2\"" --dport 81 -j CNI-DN-bbb
-A CNI-DN-aaa -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.88.1.2:80
-A CNI-DN-bbb -m comment --comment "dnat name: \"minik8s-abc999\" id: \"c2\"" -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
COMMIT
"""


def test_iptables_cleanup_touches_only_this_cluster() -> None:
    script = cleanup.iptables_cleanup_script(SAVED, "MK8S-abc123", "minik8s-abc123")
    lines = script.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert "-D PREROUTING -j MK8S-abc123-SERVICES" in lines
    assert any(line.startswith("-D CNI-HOSTPORT-DNAT") and "CNI-DN-aaa" in line for line in lines)
    assert {"-X MK8S-abc123-SERVICES", "-X CNI-DN-aaa", "-F CNI-DN-aaa"} <= set(lines)
    assert "abc999" not in script and "CNI-DN-bbb" not in script
    assert "-X CNI-HOSTPORT-DNAT" not in lines
    assert cleanup.iptables_cleanup_script(SAVED, "MK8S-ffffff", "minik8s-ffffff") == ""


def test_shim_socket_path() -> None:
    args = ["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc", "-address", "/tmp/x/c.sock"]
    sock = cleanup.shim_socket(args)
    assert sock is not None and sock.parent == Path("/run/containerd/s") and len(sock.name) == 64
    assert cleanup.shim_socket(["containerd-shim-runc-v2"]) is None
