"""``minik8s-scheduler``: flags and ``MINIK8S_SCHEDULER_*`` env vars → SchedulerConfig → the scheduler loop.

The first SIGTERM/SIGINT stops gently (bindings in flight are dropped; their pods stay pending and are
scheduled again by the next scheduler), a second one exits at once.
"""

from __future__ import annotations

import asyncio
import logging

import click

from minik8s.client.config import ConfigError, load_config
from minik8s.client.rest import AsyncApiClient
from minik8s.daemon import setup_logging, stop_on_signals
from scheduler.schedule import POLICIES
from scheduler.scheduler import Scheduler, SchedulerConfig

DEFAULTS = SchedulerConfig()
log = logging.getLogger("minik8s.scheduler")


@click.command(context_settings={"auto_envvar_prefix": "MINIK8S_SCHEDULER", "show_default": True})
@click.option("--apiserver", default=None,
              help="The apiserver URL (default: MINIK8S_SERVER, then $MINIK8S_HOME/config).")
@click.option("--policy", default=DEFAULTS.policy, type=click.Choice(POLICIES),
              help="default: filter, then score (least requested, balanced, owner spread); "
                   "round-robin: the next node in name order that fits.")
@click.option("--scheduler-name", default=DEFAULTS.scheduler_name,
              help="Schedule only pods whose spec.schedulerName is this.")
@click.option("--retry-period", default=DEFAULTS.retry_period, type=float,
              help="Seconds before an unschedulable pod is tried again when nothing changed "
                   "(Kubernetes: 300, podMaxInUnschedulablePodsDuration; 60 here, a small cluster can afford it).")
@click.option("--percentage-of-nodes-to-score", default=DEFAULTS.percentage_of_nodes_to_score,
              type=click.IntRange(0, 100), help="Stop filtering once this share of nodes fits (0: adaptive, "
                                                "as Kubernetes; 100: every node).")
@click.option("--bind-concurrency", default=DEFAULTS.bind_concurrency, type=click.IntRange(1, 1024),
              help="Bindings written at the same time.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def main(apiserver: str | None, policy: str, scheduler_name: str, retry_period: float,
         percentage_of_nodes_to_score: int, bind_concurrency: int, log_level: str) -> None:
    """Bind pending pods to nodes: filter → score → bind."""
    setup_logging(log_level)
    try:
        server = load_config(server=apiserver).server
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    config = SchedulerConfig(policy=policy, scheduler_name=scheduler_name, retry_period=retry_period,
                             percentage_of_nodes_to_score=percentage_of_nodes_to_score,
                             bind_concurrency=bind_concurrency)
    asyncio.run(_serve(server, config))


async def _serve(server: str, config: SchedulerConfig) -> None:
    async with AsyncApiClient(server) as client:
        sched = Scheduler(client, config)
        stop_on_signals(sched.stop, log)
        log.info("scheduler %s starting against %s", config.scheduler_name, server)
        await sched.run()


if __name__ == "__main__":
    main()
