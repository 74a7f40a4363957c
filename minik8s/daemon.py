"""What every minik8s daemon's ``main`` shares: structured log lines and the two-signal stop.

::

    setup_logging("info")                      # time=… level=… logger=… msg=…, httpx's per-request lines off
    asyncio.run(serve())
        stop_on_signals(component.stop, log)   # 1st SIGTERM/SIGINT: stop gently; 2nd: exit at once

A gentle stop lets work in flight finish or be cancelled; every daemon is level-triggered (or resumes
from what it recorded in the API), so whatever was left is picked up by the next start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

LOG_FORMAT = "time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"


def setup_logging(level: str) -> None:
    """Root logging at ``level`` in the cluster's ``key=value`` format. httpx logs every request at INFO,
    a line per API call or forwarded request; it is kept at WARNING unless ``level`` is debug."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    if level.lower() != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)


def stop_on_signals(stop: Callable[[], None], log: logging.Logger) -> None:
    """On the running loop: the first SIGTERM or SIGINT calls ``stop`` (which must only ask the daemon to
    stop: it runs in the loop); a second one exits the process at once (status 1)."""
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting now")
            os._exit(1)
        log.info("stopping (send the signal again to force)")
        stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
