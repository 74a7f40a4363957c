"""``minik8s-kubelet``: flags and ``MINIK8S_KUBELET_*`` env vars → KubeletConfig → Kubelet.run().

The first SIGTERM/SIGINT stops gently (loops and workers end, pods keep running for the next
kubelet to adopt); a second one cancels whatever is still winding down.

Durations take seconds (``10``, ``0.5``) or Go-style units as Kubernetes' flags do (``10s``, ``1m``, ``300ms``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import signal
import socket
from collections.abc import Callable
from typing import Any

import click

from kubelet.kubelet import Kubelet, KubeletConfig
from kubelet.node_status import parse_eviction, parse_reserved
from minik8s.api.quantity import parse_quantity
from minik8s.client.rest import AsyncApiClient
from minik8s.daemon import setup_logging

DEFAULTS = KubeletConfig(node_name="node")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``10`` / ``2.5`` (seconds) or ``1m30s`` / ``300ms``. Raises ``ValueError``."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"bad duration {text!r}: use seconds or units like 10s, 1m, 300ms") from None
        value = sum(float(n) * _UNIT[u] for n, u in parts)
    if value < 0:
        raise ValueError(f"bad duration {text!r}: negative")
    return value


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def parse_labels(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad label {item!r}: expected key=value")
        out.append((key.strip(), value.strip()))
    return tuple(out)


DURATION = Duration()


def _checked(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback: ``parse(value)``, a ``ValueError`` becoming a usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return parse(str(value))
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def _bytes(text: str) -> int:
    amount = parse_quantity(text)
    if amount <= 0:
        raise ValueError(f"{text!r}: must be positive")
    return int(amount)


def _ips(text: str) -> tuple[str, ...]:
    ips = tuple(p.strip() for p in text.split(",") if p.strip())
    for ip in ips:
        ipaddress.IPv4Address(ip)  # a ValueError names the bad one
    return ips


def _domain(text: str) -> str:
    domain = text.strip().strip(".")
    if not domain or " " in domain:
        raise ValueError(f"{text!r} is not a DNS domain")
    return domain


def _eviction(text: str) -> str:
    parse_eviction(text)
    return text


# Node health and garbage collection (kubelet/node_status.py, gc.py, logrotate.py), Kubernetes' defaults.
_NODE_HEALTH_OPTIONS = [
    click.option("--eviction-hard", default=DEFAULTS.eviction_hard, callback=_checked(_eviction),
                 help="Pressure thresholds: MemoryPressure, DiskPressure, PIDPressure (no pod is evicted)."),
    click.option("--eviction-pressure-transition-period", "eviction_pressure_transition_period", default="5m",
                 type=DURATION, help="How long a pressure condition stays after its threshold was last crossed."),
    click.option("--container-log-max-size", default="10Mi", callback=_checked(_bytes),
                 help="A container's log file is rotated once it is bigger."),
    click.option("--container-log-max-files", default=DEFAULTS.container_log_max_files, type=click.IntRange(2),
                 help="Log files kept per container, the current one included."),
    click.option("--container-log-monitor-interval", default="10s", type=DURATION),
    click.option("--container-gc-period", default="1m", type=DURATION,
                 help="Dead containers and sandboxes, orphaned cgroups, netns and log files."),
    click.option("--maximum-dead-containers-per-container", "max_per_pod_container",
                 default=DEFAULTS.max_per_pod_container, type=int),
    click.option("--maximum-dead-containers", "max_containers", default=DEFAULTS.max_containers, type=int),
    click.option("--minimum-container-ttl-duration", "min_container_age", default="0s", type=DURATION),
    click.option("--image-gc-period", default="5m", type=DURATION),
    click.option("--image-gc-high-threshold", default=DEFAULTS.image_gc_high_threshold, type=click.IntRange(0, 100),
                 help="Percent of the image file system in use that starts image GC."),
    click.option("--image-gc-low-threshold", default=DEFAULTS.image_gc_low_threshold, type=click.IntRange(0, 100),
                 help="Percent in use that image GC frees down to."),
    click.option("--minimum-image-ttl-duration", "min_image_age", default="2m", type=DURATION,
                 help="An unused image younger than this is never garbage collected."),
]


def node_health_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_NODE_HEALTH_OPTIONS):
        f = option(f)
    return f


@click.command(context_settings={"auto_envvar_prefix": "MINIK8S_KUBELET", "show_default": True})
@click.option("--apiserver", default=DEFAULTS.apiserver, help="The apiserver's URL.")
@click.option("--node-name", default=None, help="This node's name [default: the host name].")
@click.option("--cri-socket", required=True, help="containerd's CRI socket (the cluster's own; never the system's).")
@click.option("--root-dir", required=True, help="The kubelet's folder: pods/<uid>/ (volumes, logs).")
@click.option("--pod-cidr", default="", help="This node's pod CIDR (its .1 is the bridge and the node's InternalIP).")
@click.option("--cgroup-root", default=DEFAULTS.cgroup_root, help="cgroupfs parent of every pod (…/pod<uid>).")
@click.option("--port", default=DEFAULTS.port, type=int, help="The kubelet API's port on 127.0.0.1.")
@click.option("--system-reserved", default=DEFAULTS.system_reserved,
              help="What allocatable leaves to the system and the control plane.")
@click.option("--node-labels", default="", help="Extra node labels, k=v,k2=v2.")
@click.option("--max-pods", default=DEFAULTS.max_pods, type=int)
# Cluster DNS (kubelet/dns.py); both reach KubeletConfig through **node_health.
@click.option("--cluster-dns", default="", callback=_checked(_ips),
              help="Nameserver IPs (comma-separated) of ClusterFirst pods; empty: pods get the node's resolv.conf.")
@click.option("--cluster-domain", default=DEFAULTS.cluster_domain, callback=_checked(_domain),
              help="The cluster's DNS domain: ClusterFirst pods search NS.svc.DOMAIN svc.DOMAIN DOMAIN.")
@click.option("--node-status-update-frequency", default="10s", type=DURATION)
@click.option("--metrics-resolution", default="15s", type=DURATION,
              help="How often containers' cpu and memory are sampled for /stats/summary (kubelet/metrics.py).")
@node_health_options
@click.option("--sync-frequency", default="10s", type=DURATION,
              help="Resync of every pod (Kubernetes: 1m; see KubeletConfig for why 10s).")
@click.option("--runtime-relist-period", default="1s", type=DURATION, help="How often the runtime is listed.")
@click.option("--image-pull-backoff", default="10s", type=DURATION, help="First image pull back-off.")
@click.option("--image-pull-backoff-max", default="300s", type=DURATION)
@click.option("--crash-backoff-base", default="10s", type=DURATION, help="First crash-loop back-off.")
@click.option("--crash-backoff-max", default="300s", type=DURATION)
@click.option("--runtime-request-timeout", default="10s", type=DURATION, help="Deadline of one CRI call.")
@click.option("--readiness-fast-interval", default="50ms", type=DURATION,
              help="Readiness probing right after a container starts, until its first success.")
@click.option("--log-level", default=DEFAULTS.log_level, type=click.Choice(["debug", "info", "warning", "error"]))
def main(apiserver: str, node_name: str | None, cri_socket: str, root_dir: str, pod_cidr: str, cgroup_root: str,
         port: int, system_reserved: str, node_labels: str, max_pods: int, node_status_update_frequency: float,
         sync_frequency: float, runtime_relist_period: float, image_pull_backoff: float,
         image_pull_backoff_max: float, crash_backoff_base: float, crash_backoff_max: float,
         runtime_request_timeout: float, readiness_fast_interval: float, log_level: str, **node_health: Any) -> None:
    """Run pods bound to this node on containerd through the CRI."""
    try:
        parse_reserved(system_reserved)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--system-reserved") from None
    try:
        labels = parse_labels(node_labels)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--node-labels") from None
    config = KubeletConfig(
        apiserver=apiserver, node_name=(node_name or socket.gethostname()).lower(), cri_socket=cri_socket,
        root_dir=os.path.abspath(root_dir), pod_cidr=pod_cidr, cgroup_root=cgroup_root, port=port,
        system_reserved=system_reserved, node_labels=labels, max_pods=max_pods,
        node_status_update_frequency=node_status_update_frequency, sync_frequency=sync_frequency,
        runtime_relist_period=runtime_relist_period, image_pull_backoff=image_pull_backoff,
        image_pull_backoff_max=image_pull_backoff_max, crash_backoff_base=crash_backoff_base,
        crash_backoff_max=crash_backoff_max, runtime_request_timeout=runtime_request_timeout,
        readiness_fast_interval=readiness_fast_interval, log_level=log_level, **node_health)
    if config.image_gc_low_threshold > config.image_gc_high_threshold:
        raise click.BadParameter("must not be above --image-gc-high-threshold", param_hint="--image-gc-low-threshold")
    setup_logging(log_level)
    asyncio.run(run(config))


async def run(config: KubeletConfig) -> None:
    from kubelet.cri_runtime import CriRuntime  # grpc only in the real daemon

    runtime = CriRuntime(config.cri_socket, timeout=config.runtime_request_timeout)
    client = AsyncApiClient(config.apiserver)
    kubelet = Kubelet(config, client=client, runtime=runtime)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            logging.getLogger("kubelet").info("%s: stopping (pods keep running)", sig.name)
            kubelet.request_stop()
        elif main_task is not None:
            logging.getLogger("kubelet").warning("%s again: stopping now", sig.name)
            main_task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await kubelet.run()
    except asyncio.CancelledError:
        pass
    finally:
        await client.aclose()
        await runtime.close()


if __name__ == "__main__":
    main()
