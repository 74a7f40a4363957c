"""The kube-dns Service and Endpoints that carry pods' DNS questions to the host's ``minik8s-dns``.

::

    pod ── udp/tcp DNS_IP:53 ──▶ kubeproxy DNAT (Service kube-dns, no selector) ──▶ Endpoints kube-dns
        ──▶ NODE_IP:DNS_PORT (the bridge address, where minik8s-dns listens on 0.0.0.0)

``make up`` (``Cluster.up``) calls :func:`ensure` once the apiserver answers: both objects are created
when missing and rewritten when they differ from :func:`service` / :func:`endpoints` (a Service with
another ClusterIP is deleted and created again: a ClusterIP cannot change). The Service has no
selector, so the Endpoints controller leaves its Endpoints alone.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from minik8s.cluster.layout import Identity

NAMESPACE = "kube-system"
NAME = "kube-dns"
DNS_SERVICE_PORT = 53
PORTS = (("dns", "UDP"), ("dns-tcp", "TCP"))
LABELS = {"k8s-app": "kube-dns", "kubernetes.io/name": "minik8s-dns"}


class KubeDnsError(RuntimeError):
    """The apiserver refused the kube-dns objects (the message says what it answered)."""


def service(ident: Identity) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "spec": {"type": "ClusterIP", "clusterIP": ident.dns_ip,
                 "ports": [{"name": name, "port": DNS_SERVICE_PORT, "protocol": proto, "targetPort": ident.dns_port}
                           for name, proto in PORTS]},
    }


def endpoints(ident: Identity) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS)},
        "subsets": [{"addresses": [{"ip": ident.gateway}],
                     "ports": [{"name": name, "port": ident.dns_port, "protocol": proto} for name, proto in PORTS]}],
    }


def _ports(spec_ports: Any) -> list[tuple[str, int, str, Any]]:
    return sorted((str(p.get("name") or ""), int(p.get("port") or 0), str(p.get("protocol") or "TCP"),
                   p.get("targetPort")) for p in spec_ports or [] if isinstance(p, dict))


def service_matches(current: dict[str, Any], want: dict[str, Any]) -> bool:
    cur, new = current.get("spec") or {}, want["spec"]
    return (cur.get("clusterIP") == new["clusterIP"] and not cur.get("selector")
            and cur.get("type", "ClusterIP") == "ClusterIP" and _ports(cur.get("ports")) == _ports(new["ports"]))


def _subsets(obj: dict[str, Any]) -> list[tuple[list[str], list[tuple[str, int, str, Any]]]]:
    return sorted((sorted(str(a.get("ip")) for a in s.get("addresses") or []), _ports(s.get("ports")))
                  for s in obj.get("subsets") or [])


def endpoints_match(current: dict[str, Any], want: dict[str, Any]) -> bool:
    return _subsets(current) == _subsets(want)


class _Api:
    def __init__(self, base: str, timeout: float) -> None:
        self.base, self.timeout = base.rstrip("/"), timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return int(r.status), json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"{}")
            except ValueError:
                answer = {}
            return int(exc.code), answer if isinstance(answer, dict) else {}
        except OSError as exc:
            raise KubeDnsError(f"{method} {path}: {exc}") from exc


def _fail(what: str, code: int, answer: dict[str, Any]) -> KubeDnsError:
    return KubeDnsError(f"{what}: HTTP {code} {answer.get('message') or answer}")


def ensure(ident: Identity, out: Callable[[str], None] = print, *, timeout: float = 10.0,
           attempts: int = 5) -> None:
    """Make kube-system/kube-dns (Service and Endpoints) what :func:`service` and :func:`endpoints` say.

    Idempotent; retries a write that lost a race (409). Raises :class:`KubeDnsError`.
    """
    api = _Api(ident.api_url, timeout)
    code, answer = api.call("POST", "/api/v1/namespaces",
                            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    if code not in (201, 409):
        raise _fail(f"namespace {NAMESPACE}", code, answer)
    for kind, plural, want, same in (("Service", "services", service(ident), service_matches),
                                     ("Endpoints", "endpoints", endpoints(ident), endpoints_match)):
        path = f"/api/v1/namespaces/{NAMESPACE}/{plural}"
        for attempt in range(attempts):
            code, current = api.call("GET", f"{path}/{NAME}")
            if code == 404:
                code, answer = api.call("POST", path, want)
                if code == 201:
                    out(f"{kind} {NAMESPACE}/{NAME} created ({ident.dns_ip}:53 → {ident.gateway}:{ident.dns_port})")
                    break
            elif code != 200:
                raise _fail(f"GET {kind} {NAMESPACE}/{NAME}", code, current)
            elif same(current, want):
                break
            elif kind == "Service" and (current.get("spec") or {}).get("clusterIP") != ident.dns_ip:
                out(f"Service {NAMESPACE}/{NAME} has another ClusterIP: replacing it")
                code, answer = api.call("DELETE", f"{path}/{NAME}")
                if code not in (200, 202, 404):
                    raise _fail(f"DELETE Service {NAMESPACE}/{NAME}", code, answer)
                continue
            else:
                body = json.loads(json.dumps(current))
                if kind == "Service":
                    body["spec"].pop("selector", None)
                    body["spec"].update(type="ClusterIP", ports=want["spec"]["ports"])
                else:
                    body["subsets"] = want["subsets"]
                code, answer = api.call("PUT", f"{path}/{NAME}", body)
                if code == 200:
                    out(f"{kind} {NAMESPACE}/{NAME} updated")
                    break
            if code not in (409,) or attempt == attempts - 1:
                raise _fail(f"{kind} {NAMESPACE}/{NAME}", code, answer)
            time.sleep(0.1 * (attempt + 1))  # a concurrent writer won: read again
