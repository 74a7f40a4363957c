"""``minik8s-kubeproxy``: flags and ``MINIK8S_KUBEPROXY_*`` env vars → the proxier loop.

SIGTERM/SIGINT stop it; the rules stay in the kernel (traffic keeps flowing while it is down, as
with kube-proxy). ``--cleanup`` removes every chain of the prefix and our jump rules, then exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal

import click
from prometheus_client import CollectorRegistry, start_http_server

from kubeproxy import iptables
from kubeproxy.proxier import Proxier
from kubeproxy.rules import ProxyConfig
from minik8s.client.config import ConfigError, load_config
from minik8s.client.rest import AsyncApiClient
from minik8s.daemon import setup_logging

log = logging.getLogger("minik8s.kubeproxy")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h)?)$")


def parse_duration(value: str) -> float:
    """``30s``, ``1m``, ``500ms``, ``0`` or a plain number of seconds → seconds."""
    m = _DURATION.match(value.strip())
    if not m:
        raise click.BadParameter(f"{value!r} is not a duration (e.g. 30s, 1m, 500ms)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]


@click.command(context_settings={"auto_envvar_prefix": "MINIK8S_KUBEPROXY", "show_default": True})
@click.option("--apiserver", default=None,
              help="The apiserver URL (default: MINIK8S_SERVER, then $MINIK8S_HOME/config).")
@click.option("--chain-prefix", envvar=["MINIK8S_KUBEPROXY_CHAIN_PREFIX", "MINIK8S_CHAIN_PREFIX"], required=True,
              help="Every chain is named <prefix>-…; chains with the prefix that are not wanted are deleted.")
@click.option("--cluster-cidr", default="", help="Pod CIDR: traffic to a ClusterIP from outside it is masqueraded.")
@click.option("--bridge", default="", help="The cluster's bridge (informational; hairpin mode is set by CNI).")
@click.option("--node-ip", default="",
              help="NodePorts answer on 127.0.0.0/8 and this address only (empty: every local address).")
@click.option("--masquerade-bit", default=14, type=click.IntRange(0, 31),
              help="fwmark bit that marks packets to masquerade (Kubernetes: 14).")
@click.option("--metrics-bind-address", default="127.0.0.1")
@click.option("--metrics-port", default=10249, type=click.IntRange(0, 65535), help="/metrics port (0: off).")
@click.option("--sync-period", default="30s", help="Full resync at least this often (Kubernetes: 30s).")
@click.option("--min-sync-period", default="0", help="At most one sync per this period (Kubernetes: 0).")
@click.option("--cleanup", is_flag=True, help="Remove the chains of the prefix and our jump rules, then exit.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def main(apiserver: str | None, chain_prefix: str, cluster_cidr: str, bridge: str, node_ip: str,
         masquerade_bit: int, metrics_bind_address: str, metrics_port: int, sync_period: str,
         min_sync_period: str, cleanup: bool, log_level: str) -> None:
    """Program iptables NAT chains for Services and Endpoints."""
    setup_logging(log_level)
    try:
        cfg = ProxyConfig(chain_prefix=chain_prefix, cluster_cidr=cluster_cidr, node_ip=node_ip,
                          masquerade_bit=masquerade_bit)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if cleanup:
        removed = iptables.cleanup_blocking(cfg)
        log.info("cleanup of %s: %s", chain_prefix, "removed our chains and rules" if removed else "nothing to do")
        return
    try:
        server = load_config(server=apiserver).server
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    reg = CollectorRegistry()
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_bind_address, registry=reg)
    iptables.enable_route_localnet()
    log.info("kubeproxy %s starting against %s (pod CIDR %s, bridge %s, node IP %s, metrics %s)", chain_prefix,
             server, cluster_cidr or "-", bridge or "-", node_ip or "-",
             f"{metrics_bind_address}:{metrics_port}" if metrics_port else "off")
    asyncio.run(_serve(server, cfg, parse_duration(sync_period), parse_duration(min_sync_period), reg))


async def _serve(server: str, cfg: ProxyConfig, sync_period: float, min_sync_period: float,
                 reg: CollectorRegistry) -> None:
    async with AsyncApiClient(server) as client:
        proxier = Proxier(client, cfg, sync_period=sync_period, min_sync_period=min_sync_period,
                          metrics_registry=reg)
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                os._exit(1)
            log.info("stopping (the rules stay in the kernel)")
            proxier.stop()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await proxier.run()


if __name__ == "__main__":
    main()
