"""``minik8s-dns``: flags and ``MINIK8S_DNS_*`` env vars → DnsConfig → DnsServer.run().

The first SIGTERM/SIGINT stops gently (sockets closed, informers stopped); a second one exits at once.
Durations take seconds (``10``, ``0.5``) or units (``10s``, ``1m``, ``500ms``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import click

from clusterdns.server import DnsConfig, DnsServer
from minik8s.client.config import ConfigError, load_config
from minik8s.client.rest import AsyncApiClient
from minik8s.daemon import setup_logging, stop_on_signals

DEFAULTS = DnsConfig()
log = logging.getLogger("minik8s.clusterdns")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        m = _DURATION.match(str(value).strip())
        if not m:
            self.fail(f"{value!r} is not a duration (e.g. 10s, 1m, 500ms)", param, ctx)
        return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]


@click.command(context_settings={"auto_envvar_prefix": "MINIK8S_DNS", "show_default": True})
@click.option("--apiserver", default=None,
              help="The apiserver URL (default: MINIK8S_SERVER, then $MINIK8S_HOME/config).")
@click.option("--bind-address", default=DEFAULTS.bind_address,
              help="Address of the DNS sockets (pods reach it at the node's bridge address through kube-dns).")
@click.option("--port", default=DEFAULTS.port, type=click.IntRange(0, 65535),
              help="UDP and TCP port (0: a free one, logged).")
@click.option("--cluster-domain", default=DEFAULTS.domain, help="The zone answered; everything else is REFUSED.")
@click.option("--ttl", default=DEFAULTS.ttl, type=click.IntRange(0, 3600),
              help="TTL of answers and of negative answers (seconds).")
@click.option("--tcp-idle-timeout", default="10s", type=Duration(),
              help="A TCP client silent for this long is disconnected.")
@click.option("--metrics-bind-address", default=DEFAULTS.metrics_bind_address)
@click.option("--metrics-port", default=DEFAULTS.metrics_port, type=click.IntRange(0, 65535),
              help="Port of /healthz and /metrics (0: off).")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def main(apiserver: str | None, bind_address: str, port: int, cluster_domain: str, ttl: int,
         tcp_idle_timeout: float, metrics_bind_address: str, metrics_port: int, log_level: str) -> None:
    """Serve the cluster's DNS zone from Services and Endpoints (never forwards)."""
    setup_logging(log_level)
    try:
        server = load_config(server=apiserver).server
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if not cluster_domain.strip(". "):
        raise click.BadParameter("must not be empty", param_hint="--cluster-domain")
    config = DnsConfig(bind_address=bind_address, port=port, domain=cluster_domain, ttl=ttl,
                       tcp_idle_timeout=tcp_idle_timeout, metrics_bind_address=metrics_bind_address,
                       metrics_port=metrics_port)
    asyncio.run(_serve(server, config))


async def _serve(server: str, config: DnsConfig) -> None:
    async with AsyncApiClient(server) as client:
        dns = DnsServer(client, config)
        stop_on_signals(dns.stop, log)
        log.info("minik8s-dns starting against %s", server)
        await dns.run()


if __name__ == "__main__":
    main()
