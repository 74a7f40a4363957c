"""``minik8s-apiserver``: flags and ``MINIK8S_*`` env vars → Config → uvicorn serving the app.

The first SIGTERM/SIGINT stops gently (open watches get a few seconds), a second one forces.
"""

from __future__ import annotations

import click
import uvicorn

from apiserver.app import create_app
from apiserver.config import Config
from minik8s.daemon import setup_logging

DEFAULTS = Config()


@click.command(context_settings={"auto_envvar_prefix": "MINIK8S_APISERVER", "show_default": True})
@click.option("--etcd-endpoints", default=",".join(DEFAULTS.etcd_endpoints), envvar="MINIK8S_ETCD_ENDPOINTS",
              help="Comma-separated etcd client endpoints (host:port).")
@click.option("--bind-address", default=DEFAULTS.bind_address,
              help="Address to listen on. Loopback only until authentication lands.")
@click.option("--port", default=DEFAULTS.port, type=int, help="Port to listen on (plain HTTP).")
@click.option("--compaction-interval", default=DEFAULTS.compaction_interval, type=float,
              help="Seconds between etcd compactions; 0 disables.")
@click.option("--event-ttl", default=DEFAULTS.event_ttl, type=int, help="Seconds an Event lives.")
@click.option("--service-cluster-ip-range", default=DEFAULTS.service_cluster_ip_range)
@click.option("--service-node-port-range", default=DEFAULTS.service_node_port_range)
@click.option("--max-request-bytes", default=DEFAULTS.max_request_bytes, type=int)
@click.option("--watch-cache-window", default=DEFAULTS.watch_cache_window, type=int,
              help="Events kept in memory per resource for resuming watches.")
@click.option("--bookmark-interval", default=DEFAULTS.bookmark_interval, type=float)
@click.option("--namespace-sync-interval", default=DEFAULTS.namespace_sync_interval, type=float)
@click.option("--serverless-url", default=DEFAULTS.serverless_url,
              help="Base URL of the serverless gateway (minik8s-gateway) that function code uploads are proxied "
                   "to; empty: uploads answer 503.")
@click.option("--serverless-timeout", default=DEFAULTS.serverless_timeout, type=float,
              help="Seconds a function code upload may wait for the serverless gateway.")
@click.option("--max-code-upload-bytes", default=DEFAULTS.max_code_upload_bytes, type=int,
              help="Largest body accepted on functions/NAME/code.")
@click.option("--log-level", default=DEFAULTS.log_level,
              type=click.Choice(["debug", "info", "warning", "error"]))
def main(etcd_endpoints: str, bind_address: str, port: int, compaction_interval: float, event_ttl: int,
         service_cluster_ip_range: str, service_node_port_range: str, max_request_bytes: int,
         watch_cache_window: int, bookmark_interval: float, namespace_sync_interval: float, serverless_url: str,
         serverless_timeout: float, max_code_upload_bytes: int, log_level: str) -> None:
    """Serve the minik8s API (Kubernetes REST shapes) with its state in etcd."""
    if bind_address not in ("127.0.0.1", "localhost", "::1"):
        raise click.BadParameter("the apiserver has no authentication yet, so it listens on loopback only",
                                 param_hint="--bind-address")
    config = Config(etcd_endpoints=tuple(e.strip() for e in etcd_endpoints.split(",") if e.strip()),
                    bind_address=bind_address, port=port, compaction_interval=compaction_interval,
                    event_ttl=event_ttl, service_cluster_ip_range=service_cluster_ip_range,
                    service_node_port_range=service_node_port_range, max_request_bytes=max_request_bytes,
                    watch_cache_window=watch_cache_window, bookmark_interval=bookmark_interval,
                    namespace_sync_interval=namespace_sync_interval, serverless_url=serverless_url.rstrip("/"),
                    serverless_timeout=serverless_timeout, max_code_upload_bytes=max_code_upload_bytes,
                    log_level=log_level)
    setup_logging(log_level)
    uvicorn.run(create_app(config), host=bind_address, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=3, lifespan="on", proxy_headers=False, server_header=False)


if __name__ == "__main__":
    main()
