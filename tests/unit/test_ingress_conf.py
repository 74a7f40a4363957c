"""ingress/nginxconf.py: Ingresses, Services and Endpoints → routes and nginx.conf (pure; no nginx runs here).

The last tests run the real ``nginx -t`` on generated configs when nginx is installed (make deps installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ingress import nginxconf
from ingress.nginxconf import Backend, Settings

pytestmark = [pytest.mark.timeout(30)]


def ingress(name: str, rules: list[dict[str, Any]], *, ns: str = "default", created: str = "2024-01-01T00:00:00Z",
            cls: str | None = None, default: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": rules}
    if cls is not None:
        spec["ingressClassName"] = cls
    if default is not None:
        spec["defaultBackend"] = default
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created}, "spec": spec}


def backend(svc: str, port: int | str = 80) -> dict[str, Any]:
    ref = {"number": port} if isinstance(port, int) else {"name": port}
    return {"service": {"name": svc, "port": ref}}


def rule(host: str | None, *paths: tuple[str, str, str]) -> dict[str, Any]:
    r: dict[str, Any] = {"http": {"paths": [{"path": p, "pathType": t, "backend": backend(s)} for p, t, s in paths]}}
    if host:
        r["host"] = host
    return r


def service(name: str, *, ns: str = "default", port: int = 80, port_name: str = "http",
            target: int | str = 8080) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"name": port_name, "port": port, "targetPort": target, "protocol": "TCP"}]}}


def endpoints(name: str, ips: list[str], *, ns: str = "default", port: int = 8080, port_name: str = "http",
              not_ready: list[str] | None = None) -> dict[str, Any]:
    subset: dict[str, Any] = {"addresses": [{"ip": ip} for ip in ips],
                              "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {"metadata": {"name": name, "namespace": ns}, "subsets": [subset]}


SVCS = nginxconf.by_key([service("a"), service("b"), service("empty")])
EPS = nginxconf.by_key([endpoints("a", ["10.0.0.2", "10.0.0.1"]), endpoints("b", ["10.0.0.3"]),
                        endpoints("empty", [], not_ready=["10.0.0.9"])])


def settings(tmp: Path = Path("/tmp/mk8s-ing"), port: int = 18082, user: str | None = None) -> Settings:
    return Settings(port=port, state_dir=tmp, user=user)


# ---- path semantics -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "path", "match"), [
    ("/", "/anything", True), ("/foo", "/foo", True), ("/foo", "/foo/", True), ("/foo", "/foo/bar", True),
    ("/foo", "/foobar", False), ("/foo/", "/foo", True), ("/foo/bar", "/foo/bar/baz", True),
    ("/foo/bar", "/foo/barbaz", False), ("/aaa/bb", "/aaa/bbb", False),
])
def test_prefix_is_element_wise(prefix: str, path: str, match: bool) -> None:
    assert nginxconf.prefix_matches(prefix, path) is match


def test_normalize() -> None:
    assert nginxconf.normalize("/foo/", "Prefix") == ("Prefix", "/foo")
    assert nginxconf.normalize("/foo/", "Exact") == ("Exact", "/foo/")
    assert nginxconf.normalize("/x", "ImplementationSpecific") == ("Prefix", "/x")
    assert nginxconf.normalize("", "ImplementationSpecific") == ("Prefix", "/")
    assert nginxconf.normalize("/", "Prefix") == ("Prefix", "/")


def test_prefix_gives_an_exact_and_a_slash_location_exact_wins_its_path() -> None:
    rt = nginxconf.routing([ingress("i", [rule(None, ("/foo", "Prefix", "a"), ("/foo", "Exact", "b"))])], SVCS, EPS)
    locs = nginxconf.locations(rt.servers[""], None)
    body = [loc.split("  #")[0] for loc in locs]
    assert body == ["location = /foo { proxy_pass http://default_b_80; }",
                    "location /foo/ { proxy_pass http://default_a_80; }",
                    "location / { return 404; }"]


def test_order_exact_first_then_longest_prefix() -> None:
    rt = nginxconf.routing([ingress("i", [rule(None, ("/a", "Prefix", "a"), ("/a/b/c", "Prefix", "b"),
                                                ("/z", "Exact", "a"), ("/a/b", "Prefix", "a"),
                                                ("/", "Prefix", "b"), ("/b", "Exact", "b"))])], SVCS, EPS)
    assert [(r.path_type, r.path) for r in rt.servers[""]] == [
        ("Exact", "/b"), ("Exact", "/z"), ("Prefix", "/a/b/c"), ("Prefix", "/a/b"), ("Prefix", "/a"), ("Prefix", "/")]
    locs = [loc.split(" {")[0] for loc in nginxconf.locations(rt.servers[""], None)]
    assert locs == ["location = /b", "location = /z", "location = /a/b/c", "location /a/b/c/", "location = /a/b",
                    "location /a/b/", "location = /a", "location /a/", "location /"]  # "/" routed: no 404 catch-all


# ---- hosts ----------------------------------------------------------------------------------------------


def test_hosts_get_servers_and_hostless_rules_join_every_server() -> None:
    rt = nginxconf.routing([ingress("i", [rule("foo.example.com", ("/", "Prefix", "a")),
                                          rule(None, ("/", "Prefix", "b"), ("/shared", "Prefix", "b"))])], SVCS, EPS)
    assert list(rt.servers) == ["", "foo.example.com"]
    foo = {(r.path, r.backend.upstream) for r in rt.servers["foo.example.com"]}
    assert foo == {("/", "default_a_80"), ("/shared", "default_b_80")}  # its own "/" wins over the host-less one
    anyhost = {(r.path, r.backend.upstream) for r in rt.servers[""]}
    assert anyhost == {("/", "default_b_80"), ("/shared", "default_b_80")}
    text = nginxconf.render(rt, settings())
    assert "listen 0.0.0.0:18082 default_server;\n        server_name _;" in text
    assert "server_name foo.example.com;" in text


def test_wildcard_host_matches_one_label() -> None:
    name = nginxconf.server_name("*.foo.com")
    assert name == r"~^[^.]+\.foo\.com$"
    text = nginxconf.render(nginxconf.routing([ingress("i", [rule("*.foo.com", ("/", "Prefix", "a"))])], SVCS, EPS),
                            settings())
    assert r'server_name "~^[^.]+\\.foo\\.com$";' in text


def test_no_rule_no_default_backend_is_404_and_default_backend_catches_the_rest() -> None:
    rt = nginxconf.routing([ingress("i", [rule("h.com", ("/x", "Exact", "a"))])], SVCS, EPS)
    assert nginxconf.locations(rt.servers[""], rt.default_backend) == ["location / { return 404; }  # no rule matched"]
    rt = nginxconf.routing([ingress("i", [rule("h.com", ("/x", "Exact", "a"))], default=backend("b"))], SVCS, EPS)
    assert rt.default_backend == Backend("default_b_80", ("10.0.0.3:8080",))
    assert nginxconf.locations(rt.servers["h.com"], rt.default_backend)[-1].startswith(
        "location / { proxy_pass http://default_b_80; }")


# ---- backends -------------------------------------------------------------------------------------------


def test_upstream_of_ready_endpoints_and_503_without_any() -> None:
    rt = nginxconf.routing([ingress("i", [rule(None, ("/a", "Prefix", "a"), ("/e", "Prefix", "empty"),
                                                ("/m", "Prefix", "missing"))])], SVCS, EPS)
    text = nginxconf.render(rt, settings())
    assert "upstream default_a_80 {\n        server 10.0.0.1:8080;\n        server 10.0.0.2:8080;\n    }" in text
    assert "10.0.0.9" not in text  # not ready
    assert "location /e/ { return 503; }" in text and "location /m/ { return 503; }" in text
    assert "upstream default_empty_80" not in text  # nginx refuses an upstream without servers


def test_named_service_port_and_named_target_port_resolved_through_endpoints() -> None:
    svcs = nginxconf.by_key([service("w", port=8000, port_name="web", target="http-alt")])
    eps = nginxconf.by_key([endpoints("w", ["10.1.0.5"], port=9090, port_name="web")])
    by_name = nginxconf.resolve_backend("default", backend("w", "web"), svcs, eps)
    by_number = nginxconf.resolve_backend("default", backend("w", 8000), svcs, eps)
    assert by_name == Backend("default_w_web", ("10.1.0.5:9090",))
    assert by_number == Backend("default_w_8000", ("10.1.0.5:9090",))
    assert nginxconf.resolve_backend("default", backend("w", 81), svcs, eps) == Backend("default_w_81", ())


def test_namespaces_are_kept_apart() -> None:
    svcs = nginxconf.by_key([service("a", ns="x")])
    eps = nginxconf.by_key([endpoints("a", ["10.2.0.1"], ns="x")])
    rt = nginxconf.routing([ingress("i", [rule(None, ("/", "Prefix", "a"))], ns="x"),
                            ingress("j", [rule("j.com", ("/", "Prefix", "a"))], ns="y")], svcs, eps)
    assert rt.servers[""][0].backend == Backend("x_a_80", ("10.2.0.1:8080",))
    assert rt.servers["j.com"][0].backend == Backend("y_a_80", ())


# ---- classes and conflicts ------------------------------------------------------------------------------


def test_other_classes_are_ignored() -> None:
    ours = ingress("ours", [rule("a.com", ("/", "Prefix", "a"))], cls="minik8s")
    none = ingress("none", [rule("b.com", ("/", "Prefix", "a"))])
    other = ingress("other", [rule("c.com", ("/", "Prefix", "a"))], cls="nginx")
    legacy = ingress("legacy", [rule("d.com", ("/", "Prefix", "a"))])
    legacy["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "traefik"}
    rt = nginxconf.routing([ours, none, other, legacy], SVCS, EPS)
    assert set(rt.servers) == {"", "a.com", "b.com"}


def test_the_oldest_ingress_keeps_a_contested_path() -> None:
    young = ingress("young", [rule("h.com", ("/p", "Prefix", "b"))], created="2024-02-01T00:00:00Z")
    old = ingress("old", [rule("h.com", ("/p", "Prefix", "a"))], created="2024-01-01T00:00:00Z")
    rt = nginxconf.routing([young, old], SVCS, EPS)
    [r] = rt.servers["h.com"]
    assert (r.source, r.backend.upstream) == ("default/old", "default_a_80")


def test_paths_with_odd_characters_are_quoted() -> None:
    rt = nginxconf.routing([ingress("i", [rule(None, ("/a b", "Exact", "a"), ('/q"{;}', "Prefix", "a"))])], SVCS, EPS)
    text = nginxconf.render(rt, settings())
    assert 'location = "/a b" {' in text
    assert 'location "/q\\"{;}/" {' in text


def test_render_keeps_every_file_under_the_state_folder() -> None:
    text = nginxconf.render(nginxconf.routing([], SVCS, EPS), settings(Path("/s/ingress"), 1234))
    assert "daemon off;" in text and "pid /s/ingress/nginx.pid;" in text and "error_log stderr warn;" in text
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{kind}_temp_path /s/ingress/tmp/{kind};" in text
    assert "/var/" not in text and "user " not in text
    assert "user root;" in nginxconf.render(nginxconf.routing([], SVCS, EPS), settings(user="root"))
    assert nginxconf.load_balancer_status("10.88.3.1") == {"ingress": [{"ip": "10.88.3.1"}]}


# ---- the real nginx -t ----------------------------------------------------------------------------------


NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")


def test_generated_configs_pass_nginx_t(tmp_path: Path) -> None:
    # Never a skip: `make test` installs nginx, so a missing one is a broken install.
    assert NGINX is not None, "nginx is not installed (make deps installs it)"
    (tmp_path / "tmp").mkdir()
    ings = [ingress("i", [rule("h.com", ("/foo", "Prefix", "a"), ("/foo", "Exact", "b"), ("/x/", "Exact", "empty")),
                          rule("*.w.com", ("/", "Prefix", "b")),
                          rule(None, ("/a b", "Exact", "a"), ('/q"{;}', "Prefix", "missing"), ("/", "Prefix", "a"))],
                    default=backend("b"))]
    for rt in (nginxconf.routing(ings, SVCS, EPS), nginxconf.routing([], SVCS, EPS)):
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginxconf.render(rt, settings(tmp_path, user="root")))
        assert NGINX is not None
        res = subprocess.run([NGINX, "-t", "-q", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
                             capture_output=True, text=True, timeout=20, check=False)
        assert res.returncode == 0, res.stderr + "\n" + conf.read_text()


# ---- the cluster's program --------------------------------------------------------------------------------


def test_the_cluster_runs_the_ingress_program(tmp_path: Path) -> None:
    import dataclasses

    from minik8s.cluster import configs
    from minik8s.cluster.cluster import Cluster
    from minik8s.cluster.layout import Layout, load_identity

    lay = Layout(tmp_path / "mk8s-i")
    cluster = Cluster(lay, environ={"MINIK8S_INGRESS_ARGS": "--worker-processes 1"}, out=lambda _: None)
    ident = load_identity(lay, environ={})
    bins = dataclasses.replace(cluster.binaries(), ingress="/v/bin/minik8s-ingress", nginx="/usr/sbin/nginx")
    prog = {p.name: p for p in configs.programs(lay, ident, bins, cluster.options())}["ingress"]
    assert prog.command == ["/v/bin/minik8s-ingress", "--apiserver", ident.api_url, "--nginx", "/usr/sbin/nginx",
                            "--state-dir", str(lay.home / "ingress"), "--port", str(ident.ingress_port),
                            "--node-ip", ident.gateway, "--worker-processes", "1"]
    assert Cluster(lay, environ={"MINIK8S_WITHOUT": "ingress"}, out=lambda _: None).binaries().ingress is None
