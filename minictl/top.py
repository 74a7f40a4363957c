"""``minictl top pod|node``: cpu and memory in use, from the apiserver's ``metrics.k8s.io`` API, printed
as kubectl top prints them.

::

    minictl top pod [NAME] [-n NS | -A] [-l SEL] [--containers] [--sort-by cpu|memory] [--no-headers]
        NAME  CPU(cores)  MEMORY(bytes)             123m, 45Mi (a pod's containers summed)
    minictl top node [NAME] [-l SEL] [--sort-by cpu|memory] [--no-headers]
        NAME  CPU(cores)  CPU(%)  MEMORY(bytes)  MEMORY(%)   percentages of the node's status.allocatable

Quantities are rounded as kubectl rounds them: cpu up to whole millicores, memory up to bytes and then
down to whole MiB. No metrics at all ends in "error: metrics not available yet" (pods that exist but
have no two samples yet, or nodes whose kubelet has not answered); the commands need ``ctx.obj`` to
have :class:`SessionLike`'s attributes (``minictl.main.Session``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, Protocol

import click

from minictl.printers import aligned
from minik8s.api import registry
from minik8s.api.quantity import parse_quantity
from minik8s.client.rest import ApiClient
from minik8s.errors import NotFound

METRICS = "/apis/metrics.k8s.io/v1beta1"
_PODS = registry.lookup("pods")
_NODES = registry.lookup("nodes")
MI = 1024 * 1024


class SessionLike(Protocol):
    """What these commands use of ``minictl.main.Session``."""

    namespace_flag: str | None

    @property
    def client(self) -> ApiClient: ...

    @property
    def namespace(self) -> str: ...


def _session() -> SessionLike:
    obj = click.get_current_context().find_root().obj
    if obj is None:
        raise click.UsageError("minictl was started without a session")
    session: SessionLike = obj
    return session


def _set_namespace(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.find_root().obj.namespace_flag = value


def _quantity(value: Any) -> Fraction:
    if isinstance(value, Fraction):
        return value
    try:
        return parse_quantity(str(value if value is not None else "0"))
    except ValueError:
        return Fraction(0)


def millicores(value: Any) -> int:
    """kubectl's ``MilliValue()``: rounded up."""
    return math.ceil(_quantity(value) * 1000)


def format_cpu(value: Any) -> str:
    return f"{millicores(value)}m"


def format_memory(value: Any) -> str:
    """kubectl's ``Value() / 1Mi`` with the ``Mi`` suffix."""
    return f"{math.ceil(_quantity(value)) // MI}Mi"


def percent(usage: Any, allocatable: Any, *, cpu: bool) -> str:
    whole = millicores(allocatable) if cpu else math.ceil(_quantity(allocatable)) * 1000
    used = millicores(usage) if cpu else math.ceil(_quantity(usage)) * 1000
    return f"{used * 100 // whole}%" if whole > 0 else "<unknown>"


def pod_usage(metrics: Mapping[str, Any]) -> tuple[Fraction, Fraction]:
    """(cpu cores, memory bytes) of a PodMetrics: its containers summed."""
    cpu = sum((_quantity((c.get("usage") or {}).get("cpu")) for c in metrics.get("containers") or []), Fraction(0))
    mem = sum((_quantity((c.get("usage") or {}).get("memory")) for c in metrics.get("containers") or []), Fraction(0))
    return cpu, mem


def pod_rows(items: list[dict[str, Any]], *, all_namespaces: bool, containers: bool,
             sort_by: str | None) -> list[list[str]]:
    """The table of ``top pod`` (header first)."""
    def key(m: dict[str, Any]) -> Any:
        cpu, mem = pod_usage(m)
        return -(cpu if sort_by == "cpu" else mem)

    if sort_by:
        items = sorted(items, key=key)
    head = (["NAMESPACE"] if all_namespaces else []) + (["POD", "NAME"] if containers else ["NAME"])
    rows = [[*head, "CPU(cores)", "MEMORY(bytes)"]]
    for m in items:
        meta = m.get("metadata") or {}
        first = [str(meta.get("namespace", ""))] if all_namespaces else []
        if containers:
            for c in m.get("containers") or []:
                usage = c.get("usage") or {}
                rows.append([*first, str(meta.get("name", "")), str(c.get("name", "")),
                             format_cpu(usage.get("cpu")), format_memory(usage.get("memory"))])
        else:
            cpu, mem = pod_usage(m)
            rows.append([*first, str(meta.get("name", "")), format_cpu(cpu), format_memory(mem)])
    return rows


def node_rows(items: list[dict[str, Any]], allocatable: Mapping[str, Mapping[str, Any]], *,
              sort_by: str | None) -> list[list[str]]:
    """The table of ``top node`` (header first); percentages against each node's ``status.allocatable``."""
    if sort_by:
        items = sorted(items, key=lambda m: -_quantity((m.get("usage") or {}).get(sort_by)))
    rows = [["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]]
    for m in items:
        name = str((m.get("metadata") or {}).get("name", ""))
        usage = m.get("usage") or {}
        alloc = allocatable.get(name) or {}
        rows.append([name, format_cpu(usage.get("cpu")), percent(usage.get("cpu"), alloc.get("cpu"), cpu=True),
                     format_memory(usage.get("memory")),
                     percent(usage.get("memory"), alloc.get("memory"), cpu=False)])
    return rows


def _print(rows: list[list[str]], no_headers: bool) -> None:
    for line in aligned(rows[1:] if no_headers else rows):
        click.echo(line)


def _not_available() -> None:
    click.echo("error: metrics not available yet", err=True)
    raise click.exceptions.Exit(1)


def _get(client: ApiClient, path: str, params: dict[str, str]) -> Any:
    try:
        return client.request("GET", path, params=params)
    except NotFound as exc:
        if "metrics.k8s.io" in str(exc) and ("podmetrics" in str(exc) or "nodemetrics" in str(exc)):
            raise
        click.echo("error: Metrics API not available", err=True)
        raise click.exceptions.Exit(1) from None


_SORT = click.Choice(["cpu", "memory"])


@click.group("top")
def top() -> None:
    """Show cpu and memory in use by pods or nodes (the metrics.k8s.io API)."""


@top.command("pod")
@click.argument("name", required=False)
@click.option("-n", "--namespace", expose_value=False, callback=_set_namespace, help="The namespace of the pods.")
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-l", "--selector", default="", help="Label selector, e.g. app=web.")
@click.option("--containers", is_flag=True, help="One line per container.")
@click.option("--sort-by", type=_SORT, default=None)
@click.option("--no-headers", is_flag=True)
def top_pod(name: str | None, all_namespaces: bool, selector: str, containers: bool, sort_by: str | None,
            no_headers: bool) -> None:
    """Show cpu (cores) and memory (bytes) of pods."""
    session = _session()
    client = session.client
    ns = None if all_namespaces else session.namespace
    if name:
        if ns is None:
            raise click.UsageError("a pod name cannot be given with --all-namespaces")
        items = [_get(client, f"{METRICS}/namespaces/{ns}/pods/{name}", {})]
    else:
        params = {"labelSelector": selector} if selector else {}
        path = f"{METRICS}/pods" if ns is None else f"{METRICS}/namespaces/{ns}/pods"
        items = list((_get(client, path, params) or {}).get("items") or [])
    if not items:
        pods, _ = client.list(_PODS, ns, label_selector=selector or None)
        if pods:
            _not_available()
        where = "any namespace" if ns is None else f"{ns} namespace"
        click.echo(f"No resources found in {where}.", err=True)
        return
    _print(pod_rows(items, all_namespaces=ns is None, containers=containers, sort_by=sort_by), no_headers)


@top.command("node")
@click.argument("name", required=False)
@click.option("-l", "--selector", default="", help="Label selector, e.g. kubernetes.io/os=linux.")
@click.option("--sort-by", type=_SORT, default=None)
@click.option("--no-headers", is_flag=True)
def top_node(name: str | None, selector: str, sort_by: str | None, no_headers: bool) -> None:
    """Show cpu (cores) and memory (bytes) of nodes, and their share of each node's allocatable."""
    client = _session().client
    if name:
        items = [_get(client, f"{METRICS}/nodes/{name}", {})]
        nodes = [client.get(_NODES, name)]
    else:
        items = list((_get(client, f"{METRICS}/nodes", {"labelSelector": selector} if selector else {})
                      or {}).get("items") or [])
        nodes, _ = client.list(_NODES, label_selector=selector or None)
    if not items:
        _not_available()
    allocatable = {str(n["metadata"]["name"]): (n.get("status") or {}).get("allocatable") or {} for n in nodes}
    _print(node_rows(items, allocatable, sort_by=sort_by), no_headers)
