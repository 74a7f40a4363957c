"""Ingresses, Services and Endpoints → the text of ``nginx.conf``: pure functions, no I/O.

::

    ingresses (ours: ingressClassName = --ingress-class, or none), oldest first
      └─ routes(): (host, pathType, path) → backend; the first Ingress to claim a key keeps it
           └─ backend → Service port → Endpoints port of the same name → ready "ip:port" (an upstream)
    routing() ─▶ Routing(servers: host → routes, default backend, upstreams) ─▶ render() ─▶ nginx.conf

Matching follows the Ingress API:

- ``Exact`` ``/p``                 → ``location = /p``
- ``Prefix`` ``/p`` (or ``/p/``)   → ``location = /p`` and ``location /p/``: element-wise, so ``/p`` and
  ``/p/q`` match but ``/pq`` does not; ``Prefix /`` → ``location /``. nginx picks an exact location
  before any prefix and the longest prefix among prefixes, which is the API's precedence.
- ``ImplementationSpecific``        = ``Prefix`` (an empty path = ``/``).
- a rule's ``host``: exact (``server_name foo.com``) or one-label wildcard (``*.foo.com`` matches
  ``a.foo.com``, not ``a.b.foo.com``); a rule without host applies to every host: its paths join each
  named host's server (that host's own rule wins on the same path) and the default server.
- unmatched host or path → the oldest Ingress's ``spec.defaultBackend`` if any, else 404; a backend
  with no ready endpoint (no Service, no such port, nothing ready) → 503.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Obj = Mapping[str, Any]
DEFAULT_CLASS = "minik8s"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
EXACT, PREFIX = "Exact", "Prefix"
# Characters a location may hold without quotes (no space, ';', '{', '}', quotes, '#' or backslash).
_BARE = re.compile(r"^[A-Za-z0-9/._~%:@!$&*+,=-]+$")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What nginx needs besides the routing: where it listens and where its files live."""

    port: int
    state_dir: Path
    bind_address: str = "0.0.0.0"
    worker_processes: int = 2
    worker_connections: int = 4096
    shutdown_timeout_s: int = 30  # old workers after a reload finish within this, then are closed
    # Workers' user. The daemon runs as root with its state folder under the cluster home (~/.minik8s:
    # /root is 0700), where nginx's default worker user (nobody) could not buffer a large body.
    user: str | None = None

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "nginx.pid"

    @property
    def temp_dir(self) -> Path:
        return self.state_dir / "tmp"


@dataclasses.dataclass(frozen=True)
class Backend:
    """One Ingress backend resolved: ``upstream`` names the nginx upstream; no ``servers`` → 503."""

    upstream: str
    servers: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Route:
    host: str  # "" = any host
    path_type: str  # Exact or Prefix (ImplementationSpecific is Prefix here)
    path: str  # normalized: Prefix paths lose a trailing "/" (except "/" itself)
    backend: Backend
    source: str  # namespace/name of the Ingress


@dataclasses.dataclass(frozen=True)
class Routing:
    servers: dict[str, list[Route]]  # host ("" = the default server) → routes in match order
    default_backend: Backend | None

    def upstreams(self) -> list[Backend]:
        """Every backend with servers, once each, by name."""
        found = {r.backend.upstream: r.backend for routes in self.servers.values() for r in routes}
        if self.default_backend is not None:
            found[self.default_backend.upstream] = self.default_backend
        return [found[k] for k in sorted(found) if found[k].servers]


# ---- which Ingresses -------------------------------------------------------------------------------------


def is_ours(ing: Obj, ingress_class: str = DEFAULT_CLASS) -> bool:
    """An Ingress of ``ingress_class``: its ``ingressClassName`` (or the legacy annotation) names it, or
    neither is set."""
    spec = ing.get("spec") or {}
    name = spec.get("ingressClassName") or ((ing.get("metadata") or {}).get("annotations") or {}).get(
        CLASS_ANNOTATION)
    return not name or name == ingress_class


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _age_order(ing: Obj) -> tuple[str, str]:
    return (str((ing.get("metadata") or {}).get("creationTimestamp") or ""), _key(ing))


# ---- paths -----------------------------------------------------------------------------------------------


def normalize(path: str | None, path_type: str | None) -> tuple[str, str]:
    """(pathType, path) as routed: ImplementationSpecific → Prefix, an empty path → "/", a Prefix's
    trailing slashes dropped (the API ignores them: ``/foo/`` matches ``/foo``)."""
    ptype = EXACT if path_type == EXACT else PREFIX
    path = path or "/"
    if ptype == PREFIX and path != "/":
        path = path.rstrip("/") or "/"
    return ptype, path


def prefix_matches(prefix: str, path: str) -> bool:
    """The API's Prefix rule, by path element: ``/foo`` matches ``/foo``, ``/foo/``, ``/foo/bar``, not ``/foobar``."""
    want = [p for p in prefix.split("/") if p]
    have = [p for p in path.split("/") if p]
    return have[:len(want)] == want


# ---- backends --------------------------------------------------------------------------------------------


def upstream_name(namespace: str, service: str, port: str | int) -> str:
    # Namespaces and Service names are DNS labels (no "_"), so "_" keeps names apart.
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{namespace}_{service}_{port}")


def resolve_backend(namespace: str, backend: Obj | None, services: Mapping[str, Obj],
                    endpoints: Mapping[str, Obj]) -> Backend | None:
    """The ready ``ip:port`` servers of ``backend`` (an IngressBackend) in ``namespace``.

    The Service port is found by number or name; its endpoints port is the Endpoints port of the same
    name (the Endpoints controller already resolved a named targetPort to a number, pod by pod). None
    for a backend that names no Service (a ``resource`` backend, which minik8s does not route).
    """
    svc_ref = (backend or {}).get("service") or {}
    name = svc_ref.get("name")
    if not name:
        return None
    port_ref = svc_ref.get("port") or {}
    number, port_name = port_ref.get("number"), port_ref.get("name")
    label = number if number is not None else port_name or ""
    upstream = upstream_name(namespace, name, label)
    svc = services.get(f"{namespace}/{name}")
    sport: Obj | None = None
    for sp in ((svc or {}).get("spec") or {}).get("ports") or []:
        if (number is not None and sp.get("port") == number) or (port_name and sp.get("name") == port_name):
            sport = sp
            break
    if svc is None or sport is None or (sport.get("protocol") or "TCP") != "TCP":
        return Backend(upstream, ())
    want = sport.get("name") or ""
    servers: set[str] = set()
    for subset in (endpoints.get(f"{namespace}/{name}") or {}).get("subsets") or []:
        ports = [p for p in subset.get("ports") or [] if (p.get("protocol") or "TCP") == "TCP"]
        match = [p for p in ports if (p.get("name") or "") == want]
        for p in match[:1]:
            for addr in subset.get("addresses") or []:  # ready ones only (notReadyAddresses are not)
                if addr.get("ip"):
                    servers.add(f"{addr['ip']}:{p['port']}")
    return Backend(upstream, tuple(sorted(servers)))


# ---- routing ---------------------------------------------------------------------------------------------


def routes(ingresses: Iterable[Obj], services: Mapping[str, Obj], endpoints: Mapping[str, Obj], *,
           ingress_class: str = DEFAULT_CLASS) -> tuple[list[Route], Backend | None]:
    """Every route of our Ingresses, the oldest Ingress first, one per (host, pathType, path); and the
    default backend (of the oldest Ingress that has one)."""
    taken: dict[tuple[str, str, str], Route] = {}
    default: Backend | None = None
    for ing in sorted((i for i in ingresses if is_ours(i, ingress_class)), key=_age_order):
        ns = (ing.get("metadata") or {}).get("namespace") or "default"
        spec = ing.get("spec") or {}
        if default is None and spec.get("defaultBackend"):
            default = resolve_backend(ns, spec.get("defaultBackend"), services, endpoints)
        for rule in spec.get("rules") or []:
            host = (rule.get("host") or "").lower()
            for item in ((rule.get("http") or {}).get("paths")) or []:
                backend = resolve_backend(ns, item.get("backend"), services, endpoints)
                if backend is None:
                    continue
                ptype, path = normalize(item.get("path"), item.get("pathType"))
                taken.setdefault((host, ptype, path), Route(host, ptype, path, backend, _key(ing)))
    return list(taken.values()), default


def _match_order(route: Route) -> tuple[int, int, str]:
    """Exact before Prefix, then the longest path first (the order nginx itself decides by)."""
    return (0 if route.path_type == EXACT else 1, -len(route.path), route.path)


def routing(ingresses: Iterable[Obj], services: Mapping[str, Obj], endpoints: Mapping[str, Obj], *,
            ingress_class: str = DEFAULT_CLASS) -> Routing:
    """The servers: one per named host (its routes, then the host-less ones it does not override) and
    the default server "" (the host-less routes)."""
    found, default = routes(ingresses, services, endpoints, ingress_class=ingress_class)
    anyhost = [r for r in found if not r.host]
    servers: dict[str, list[Route]] = {"": sorted(anyhost, key=_match_order)}
    for host in sorted({r.host for r in found if r.host}):
        own = [r for r in found if r.host == host]
        keys = {(r.path_type, r.path) for r in own}
        merged = own + [r for r in anyhost if (r.path_type, r.path) not in keys]
        servers[host] = sorted(merged, key=_match_order)
    return Routing(servers, default)


def by_key(objs: Iterable[Obj]) -> dict[str, Obj]:
    """``namespace/name`` → object (the shape ``routing`` takes Services and Endpoints in)."""
    return {_key(o): o for o in objs}


# ---- rendering -------------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    if _BARE.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_name(host: str) -> str:
    if not host:
        return "_"
    if host.startswith("*."):  # the API's wildcard covers exactly one label
        return "~^[^.]+" + re.escape(host[1:]).replace("\\-", "-") + "$"
    return host


def _action(backend: Backend | None) -> str:
    if backend is None:
        return "return 404;"
    if not backend.servers:
        return "return 503;"
    return f"proxy_pass http://{backend.upstream};"


def locations(routes_: list[Route], default: Backend | None) -> list[str]:
    """The ``location`` blocks of one server, in match order; a catch-all ``/`` unless a route is one."""
    out: list[str] = []
    exact = {r.path for r in routes_ if r.path_type == EXACT}
    has_root = False
    for r in routes_:
        act = _action(r.backend)
        comment = f"  # {r.source}: {r.path_type} {r.path}"
        if r.path_type == EXACT:
            out.append(f"location = {_quote(r.path)} {{ {act} }}{comment}")
        elif r.path == "/":
            has_root = True
            out.append(f"location / {{ {act} }}{comment}")
        else:
            if r.path not in exact:  # an Exact route of the same path wins the exact match
                out.append(f"location = {_quote(r.path)} {{ {act} }}{comment}")
            out.append(f"location {_quote(r.path + '/')} {{ {act} }}{comment}")
    if not has_root:
        out.append(f"location / {{ {_action(default)} }}  # no rule matched")
    return out


def render(rt: Routing, settings: Settings) -> str:
    """The whole ``nginx.conf``: foreground master, logs to stderr, every path under the state folder."""
    tmp = settings.temp_dir
    listen = f"{settings.bind_address}:{settings.port}"
    lines = [
        "# generated by minik8s-ingress from the cluster's Ingresses; rewritten on every change",
        "daemon off;",
        "master_process on;",
        *([f"user {_quote(settings.user)};"] if settings.user else []),
        f"worker_processes {settings.worker_processes};",
        f"pid {_quote(str(settings.pid_file))};",
        "error_log stderr warn;",
        f"worker_shutdown_timeout {settings.shutdown_timeout_s}s;",
        f"events {{ worker_connections {settings.worker_connections}; }}",
        "",
        "http {",
        "    access_log off;",
        "    server_tokens off;",
        "    default_type text/plain;",
        "    server_names_hash_bucket_size 128;",
        *(f"    {kind}_temp_path {_quote(str(tmp / kind))};"
          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        "    proxy_set_header Host $http_host;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Host $host;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_connect_timeout 5s;",
        "    proxy_next_upstream error timeout;",
    ]
    for b in rt.upstreams():
        lines += ["", f"    upstream {b.upstream} {{", *(f"        server {s};" for s in b.servers), "    }"]
    for host, routes_ in rt.servers.items():
        default_server = " default_server" if not host else ""
        lines += ["", "    server {", f"        listen {listen}{default_server};",
                  f"        server_name {_quote(server_name(host))};"]
        lines += [f"        {loc}" for loc in locations(routes_, rt.default_backend)]
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def load_balancer_status(ip: str) -> dict[str, Any]:
    """``status.loadBalancer`` of an Ingress we serve."""
    return {"ingress": [{"ip": ip}]} if ip else {}
