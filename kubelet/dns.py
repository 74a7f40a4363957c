"""A pod's resolv.conf settings from its ``dnsPolicy`` and ``dnsConfig``. Pure apart from reading the node's file.

::

    dnsPolicy ClusterFirst (default), or ClusterFirstWithHostNet ─┬─ --cluster-dns set, not hostNetwork
                                                                  │    → nameserver CLUSTER_DNS
                                                                  │      search NS.svc.DOMAIN svc.DOMAIN DOMAIN
                                                                  │      options ndots:5
                                                                  └─ else → as Default (Kubernetes does the same)
    ClusterFirst with hostNetwork                                  → as Default
    Default                                                        → the node's resolv.conf
    None                                                           → only dnsConfig
    then dnsConfig (any policy): nameservers and searches appended (no duplicates), options merged by name

The result goes through the CRI (``DNSConfig``) and containerd writes the pod's /etc/resolv.conf. An all-empty
result (Default without dnsConfig) leaves DNSConfig unset, so containerd copies the node's file itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MAX_NAMESERVERS = 3  # glibc's MAXNS
MAX_SEARCHES = 32  # Kubernetes' MaxDNSSearchPaths
NDOTS = "ndots:5"


@dataclasses.dataclass(frozen=True)
class PodDns:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def parse_resolv_conf(text: str) -> PodDns:
    """``nameserver``, ``search`` / ``domain`` and ``options`` of a resolv.conf (the last search line wins)."""
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver" and values:
            servers.append(values[0])
        elif key in ("search", "domain"):
            searches = list(values)
        elif key == "options":
            options.extend(values)
    return PodDns(tuple(servers), tuple(searches), tuple(options))


def read_node_resolv_conf(path: str = "/etc/resolv.conf") -> PodDns:
    try:
        return parse_resolv_conf(Path(path).read_text())
    except OSError:
        return PodDns()


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _merge_options(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    """Options by name (``ndots:5`` is named ``ndots``); a later one replaces an earlier one of its name."""
    merged: dict[str, str] = {}
    for opt in [*base, *extra]:
        merged[opt.split(":", 1)[0]] = opt
    return list(merged.values())


def pod_dns(spec: Mapping[str, Any], namespace: str, *, cluster_dns: Sequence[str], cluster_domain: str,
            node: PodDns | None = None) -> PodDns:
    """The DNS settings of a pod with ``spec`` in ``namespace`` (see the module docstring).

    ``node`` is the node's own resolv.conf (read lazily when a policy needs it).
    """
    policy = str(spec.get("dnsPolicy") or "ClusterFirst")
    host_network = bool(spec.get("hostNetwork"))
    domain = cluster_domain.strip(".")
    cluster = bool(cluster_dns) and (policy == "ClusterFirstWithHostNet"
                                     or (policy == "ClusterFirst" and not host_network))
    config = spec.get("dnsConfig") or {}
    if cluster:
        searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain] if domain else []
        base = PodDns(tuple(cluster_dns), tuple(searches), (NDOTS,))
    elif policy == "None":
        base = PodDns()
    elif not config:
        return PodDns()  # containerd copies the node's resolv.conf
    else:
        base = node if node is not None else read_node_resolv_conf()
    servers = _unique([*base.servers, *(str(s) for s in config.get("nameservers") or [])])[:MAX_NAMESERVERS]
    searches = _unique([*base.searches, *(str(s) for s in config.get("searches") or [])])[:MAX_SEARCHES]
    extra = [f"{o['name']}:{o['value']}" if o.get("value") not in (None, "") else str(o["name"])
             for o in config.get("options") or [] if isinstance(o, Mapping) and o.get("name")]
    return PodDns(tuple(servers), tuple(searches), tuple(_merge_options(base.options, extra)))
