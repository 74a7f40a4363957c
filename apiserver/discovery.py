"""Discovery documents (``/version``, ``/api``, ``/apis``, resource lists) built from the registry.

kubectl reads these to map ``po``, ``deploy`` or ``get all`` onto URLs; shapes are in
``shared/design/KUBE-API.md``. We answer the plain (non-aggregated) documents with
``application/json``, which kubectl 1.32 accepts as a clean fallback.
"""

from __future__ import annotations

from typing import Any

from apiserver import resource_metrics
from minik8s.api import registry
from minik8s.api.registry import ResourceType

SERVER_MAJOR, SERVER_MINOR = "1", "32"


def version() -> dict[str, Any]:
    return {"major": SERVER_MAJOR, "minor": SERVER_MINOR, "gitVersion": f"v{SERVER_MAJOR}.{SERVER_MINOR}.0-minik8s",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-11-21T00:00:00Z", "goVersion": "python3.11",
            "compiler": "cpython", "platform": "linux/amd64"}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def api_group_list() -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in registry.groups().items() if g]
    groups.append(resource_metrics.group())  # metrics.k8s.io: built from the kubelets, not stored
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(name: str) -> dict[str, Any] | None:
    if name == resource_metrics.GROUP:
        return {"kind": "APIGroup", "apiVersion": "v1", **resource_metrics.group()}
    versions = registry.groups().get(name)
    if not name or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _entry(r: ResourceType) -> dict[str, Any]:
    e: dict[str, Any] = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
                         "verbs": list(r.verbs)}
    if r.short_names:
        e["shortNames"] = list(r.short_names)
    if r.categories:
        e["categories"] = list(r.categories)
    return e


_SUBRESOURCE: dict[str, tuple[str, list[str], str, str]] = {
    # subresource → (kind, verbs, group, version of the kind served there)
    "status": ("", ["get", "patch", "update"], "", ""),
    "scale": ("Scale", ["get", "patch", "update"], "autoscaling", "v1"),
    "binding": ("Binding", ["create"], "", ""),
    "log": ("Pod", ["get"], "", ""),
    "code": ("FunctionCode", ["create"], "", ""),
}


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    if (group, version) == (resource_metrics.GROUP, resource_metrics.VERSION):
        return resource_metrics.resource_list()
    resources = [r for r in registry.RESOURCES if r.group == group and r.version == version]
    if not resources:
        return None
    out: list[dict[str, Any]] = []
    for r in resources:
        out.append(_entry(r))
        for sub in r.subresources:
            kind, verbs, g, v = _SUBRESOURCE[sub]
            e: dict[str, Any] = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                                 "kind": kind or r.kind, "verbs": verbs}
            if g:
                e["group"], e["version"] = g, v
            out.append(e)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}
