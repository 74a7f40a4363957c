"""``minik8s-controller-manager``: flags and ``MINIK8S_CONTROLLER_MANAGER_*`` env vars → ManagerConfig →
every enabled controller.

The first SIGTERM/SIGINT stops gently (syncs in flight finish or are cancelled; everything is level-
triggered, so the next controller-manager converges whatever was left), a second one exits at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from controllers.hpa import parse_duration
from controllers.manager import CONTROLLERS, ControllerManager, ManagerConfig
from minik8s.client.config import ConfigError, load_config
from minik8s.client.rest import AsyncApiClient
from minik8s.daemon import setup_logging, stop_on_signals

DEFAULTS = ManagerConfig()
log = logging.getLogger("minik8s.controllers")


class Duration(click.ParamType):
    """Seconds (``15``, ``2.5``) or a Go duration (``15s``, ``5m``, ``1m30s``, ``500ms``), as Kubernetes' flags."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds: float | None = float(value)
        else:
            text = str(value).strip()
            try:
                seconds = float(text)
            except ValueError:
                seconds = parse_duration(text)
        if seconds is None or seconds < 0:
            self.fail(f"bad duration {value!r}: use seconds or units like 15s, 5m, 300ms", param, ctx)
        return seconds


@click.command(context_settings={"auto_envvar_prefix": "MINIK8S_CONTROLLER_MANAGER", "show_default": True})
@click.option("--apiserver", default=None,
              help="The apiserver URL (default: MINIK8S_SERVER, then $MINIK8S_HOME/config).")
@click.option("--controllers", "selection", default=",".join(DEFAULTS.controllers),
              help=f"Controllers to run: '*' for all, 'name' to enable, '-name' to disable "
                   f"(known: {', '.join(CONTROLLERS)}).")
@click.option("--min-resync-period", default=DEFAULTS.min_resync_period, type=float,
              help="Seconds between full re-deliveries of every informer's cache (Kubernetes: 12h).")
@click.option("--concurrent-endpoint-syncs", default=DEFAULTS.concurrent_endpoint_syncs, type=click.IntRange(1),
              help="Endpoints workers.")
@click.option("--concurrent-replicaset-syncs", default=DEFAULTS.concurrent_replicaset_syncs,
              type=click.IntRange(1), help="ReplicaSet workers.")
@click.option("--concurrent-deployment-syncs", default=DEFAULTS.concurrent_deployment_syncs,
              type=click.IntRange(1), help="Deployment workers.")
@click.option("--concurrent-gc-syncs", default=DEFAULTS.concurrent_gc_syncs, type=click.IntRange(1),
              help="Garbage collector workers.")
@click.option("--concurrent-horizontal-pod-autoscaler-syncs", "concurrent_hpa_syncs",
              default=DEFAULTS.concurrent_hpa_syncs, type=click.IntRange(1), help="HorizontalPodAutoscaler workers.")
@click.option("--horizontal-pod-autoscaler-sync-period", "hpa_sync_period", default="15s", type=Duration(),
              help="How often each HorizontalPodAutoscaler is reconciled.")
@click.option("--horizontal-pod-autoscaler-tolerance", "hpa_tolerance", default=DEFAULTS.hpa_tolerance,
              type=click.FloatRange(0), help="Usage/target ratios within 1 ± this cause no scaling.")
@click.option("--horizontal-pod-autoscaler-downscale-stabilization", "hpa_downscale_stabilization", default="5m",
              type=Duration(), help="Scale-down stabilization window when an HPA's behavior sets none.")
@click.option("--horizontal-pod-autoscaler-cpu-initialization-period", "hpa_cpu_initialization_period",
              default="5m", type=Duration(), help="After a pod starts, cpu samples are skipped until it is ready "
                                                  "and a sample begins after that.")
@click.option("--horizontal-pod-autoscaler-initial-readiness-delay", "hpa_initial_readiness_delay", default="30s",
              type=Duration(), help="After a pod starts, readiness changes within this delay count as initial.")
@click.option("--bind-address", default=DEFAULTS.host, help="Address of /healthz and /metrics (keep it loopback).")
@click.option("--port", default=DEFAULTS.port, type=click.IntRange(0, 65535),
              help="Port of /healthz and /metrics; 0 turns the server off.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def main(apiserver: str | None, selection: str, min_resync_period: float, concurrent_endpoint_syncs: int,
         concurrent_replicaset_syncs: int, concurrent_deployment_syncs: int, concurrent_gc_syncs: int,
         concurrent_hpa_syncs: int, hpa_sync_period: float, hpa_tolerance: float, hpa_downscale_stabilization: float,
         hpa_cpu_initialization_period: float, hpa_initial_readiness_delay: float,
         bind_address: str, port: int, log_level: str) -> None:
    """Run the cluster's controllers: Endpoints, ReplicaSet, Deployment, garbage collector,
    HorizontalPodAutoscaler."""
    setup_logging(log_level)
    try:
        server = load_config(server=apiserver).server
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    names = tuple(s.strip() for s in selection.split(",") if s.strip())
    unknown = [n for n in names if n.lstrip("-") not in CONTROLLERS and n != "*"]
    if unknown:
        raise click.UsageError(f"unknown controllers: {', '.join(unknown)}")
    config = ManagerConfig(controllers=names, min_resync_period=min_resync_period,
                           concurrent_endpoint_syncs=concurrent_endpoint_syncs,
                           concurrent_replicaset_syncs=concurrent_replicaset_syncs,
                           concurrent_deployment_syncs=concurrent_deployment_syncs,
                           concurrent_gc_syncs=concurrent_gc_syncs, concurrent_hpa_syncs=concurrent_hpa_syncs,
                           hpa_sync_period=hpa_sync_period or DEFAULTS.hpa_sync_period, hpa_tolerance=hpa_tolerance,
                           hpa_downscale_stabilization=hpa_downscale_stabilization,
                           hpa_cpu_initialization_period=hpa_cpu_initialization_period,
                           hpa_initial_readiness_delay=hpa_initial_readiness_delay, host=bind_address, port=port)
    asyncio.run(_serve(server, config))


async def _serve(server: str, config: ManagerConfig) -> None:
    async with AsyncApiClient(server) as client:
        manager = ControllerManager(client, config)
        stop_on_signals(manager.stop, log)
        log.info("controller-manager starting against %s", server)
        await manager.run()


if __name__ == "__main__":
    main()
