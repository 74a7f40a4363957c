"""Kubernetes URL paths → what they name.

    /api/v1/namespaces/{ns}/pods/{name}/status         core group, namespaced, subresource
    /apis/apps/v1/namespaces/{ns}/deployments/{name}   named group
    /api/v1/nodes/{name}                                cluster-scoped
    /api/v1/pods                                        a namespaced kind across all namespaces
    /api/v1/namespaces/{name}/status                    a Namespace's own subresource
    /version, /api, /apis, /apis/{g}[/{v}], /openapi/v2, /healthz, /readyz, /metrics

``parse_path`` raises ``NotFound`` for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from minik8s.api import registry
from minik8s.api.registry import ResourceType
from minik8s.errors import NotFound

SPECIAL = ("/version", "/healthz", "/livez", "/readyz", "/metrics", "/openapi/v2")


@dataclass(frozen=True)
class Target:
    rt: ResourceType | None = None
    namespace: str | None = None
    name: str = ""
    subresource: str = ""
    special: str = ""  # a non-resource path such as "/version" or "/apis/apps/v1"

    @property
    def resource_label(self) -> str:
        if self.rt is None:
            return self.special or "-"
        return f"{self.rt.plural}/{self.subresource}" if self.subresource else self.rt.plural

    def verb(self, method: str, watch: bool) -> str:
        if self.rt is None:
            return method.lower()
        if method == "GET":
            return "get" if self.name and not watch else ("watch" if watch else "list")
        return {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if self.name else "deletecollection"}.get(method, method.lower())


def _missing() -> NotFound:
    return NotFound("the server could not find the requested resource")


def parse_path(path: str) -> Target:
    path = "/" + path.strip("/")
    if path in SPECIAL:
        return Target(special=path)
    seg = [s for s in path.split("/") if s]
    if not seg:
        raise _missing()
    if seg[0] == "api":
        if len(seg) == 1:
            return Target(special="/api")
        if seg[1] != "v1":
            raise _missing()
        if len(seg) == 2:
            return Target(special="/api/v1")
        group, version, rest = "", "v1", seg[2:]
    elif seg[0] == "apis":
        if len(seg) <= 3:
            return Target(special="/" + "/".join(seg))
        group, version, rest = seg[1], seg[2], seg[3:]
    else:
        raise _missing()
    if rest and rest[0] == "watch":  # the old /api/v1/watch/... spelling
        rest = rest[1:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rt = registry.by_plural(group, version, rest[2])
        if rt is not None and rt.namespaced and len(rest) <= 5:
            return Target(rt, rest[1], rest[3] if len(rest) > 3 else "", rest[4] if len(rest) > 4 else "")
    if not rest or len(rest) > 3:
        raise _missing()
    rt = registry.by_plural(group, version, rest[0])
    if rt is None:
        raise _missing()
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if rt.namespaced and name:
        raise _missing()
    if sub and sub not in rt.subresources and sub != "finalize":
        raise _missing()
    return Target(rt, None, name, sub)
