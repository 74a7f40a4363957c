"""``minik8s-ingress``: flags and ``MINIK8S_INGRESS_*`` env vars → the ingress controller and its nginx.

The first SIGTERM/SIGINT stops gently (nginx gets SIGQUIT: in-flight requests finish), a second one
exits at once (nginx dies with it: it carries a parent-death signal).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
from pathlib import Path

import click

from ingress.controller import ControllerConfig, IngressController
from ingress.nginx import Nginx
from ingress.nginxconf import DEFAULT_CLASS, Settings
from minik8s.client.config import ConfigError, load_config
from minik8s.client.rest import AsyncApiClient
from minik8s.daemon import setup_logging, stop_on_signals

log = logging.getLogger("minik8s.ingress")


@click.command(context_settings={"auto_envvar_prefix": "MINIK8S_INGRESS", "show_default": True})
@click.option("--apiserver", default=None,
              help="The apiserver URL (default: MINIK8S_SERVER, then $MINIK8S_HOME/config).")
@click.option("--nginx", "nginx_binary", default="/usr/sbin/nginx", help="The nginx binary (Debian's package nginx).")
@click.option("--state-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="nginx.conf, nginx.pid and nginx's temporary files live here.")
@click.option("--bind-address", default="0.0.0.0",
              help="Address nginx listens on (pods reach it at the node's bridge address).")
@click.option("--port", default=18082, type=click.IntRange(1, 65535), help="Port nginx listens on (HTTP).")
@click.option("--ingress-class", default=DEFAULT_CLASS,
              help="Serve Ingresses whose ingressClassName is this, or that name no class.")
@click.option("--node-ip", default="", help="Written to status.loadBalancer.ingress[].ip of each Ingress served "
                                            "(empty: status untouched).")
@click.option("--worker-processes", default=2, type=click.IntRange(1, 64), help="nginx worker processes.")
@click.option("--sync-period", default=30.0, type=float, help="Seconds between full resyncs.")
@click.option("--min-sync-period", default=0.2, type=float,
              help="At least this many seconds between two syncs (batches bursts of changes into one reload).")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def main(apiserver: str | None, nginx_binary: str, state_dir: Path, bind_address: str, port: int, ingress_class: str,
         node_ip: str, worker_processes: int, sync_period: float, min_sync_period: float, log_level: str) -> None:
    """Serve the cluster's Ingresses with nginx."""
    setup_logging(log_level)
    try:
        server = load_config(server=apiserver).server
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    binary = shutil.which(nginx_binary) or nginx_binary
    if not os.access(binary, os.X_OK):
        raise click.UsageError(f"no nginx at {nginx_binary} (Debian package nginx; make deps installs it)")
    state = state_dir.expanduser().resolve()
    # Workers keep the daemon's user (root in the cluster), so they can use the state folder under its home.
    user = pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None
    settings = Settings(port=port, state_dir=state, bind_address=bind_address, worker_processes=worker_processes,
                        user=user)
    cfg = ControllerConfig(settings=settings, ingress_class=ingress_class, node_ip=node_ip, sync_period=sync_period,
                           min_sync_period=min_sync_period)
    asyncio.run(_serve(server, cfg, Nginx(binary, state)))


async def _serve(server: str, cfg: ControllerConfig, nginx: Nginx) -> None:
    async with AsyncApiClient(server) as client:
        controller = IngressController(client, cfg, nginx)
        stop_on_signals(controller.stop, log)
        log.info("ingress controller (class %s) starting against %s; nginx on %s:%d, state in %s",
                 cfg.ingress_class, server, cfg.settings.bind_address, cfg.settings.port, cfg.settings.state_dir)
        await controller.run()


if __name__ == "__main__":
    main()
