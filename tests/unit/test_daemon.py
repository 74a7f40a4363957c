"""minik8s.daemon: the two-signal stop and the log format every daemon shares."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import asyncio, logging, os, signal, sys
    from minik8s.daemon import setup_logging, stop_on_signals

    async def main() -> None:
        setup_logging("info")
        stopped = asyncio.Event()
        stop_on_signals(stopped.set, logging.getLogger("child"))
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stopped.wait(), 5)
        print("gentle stop", flush=True)
        if sys.argv[1] == "twice":
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(5)  # the second signal exits the process before this ends
        print("returned", flush=True)

    asyncio.run(main())
""")


def run_child(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=30,
                          cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=False)


def test_the_first_signal_asks_the_daemon_to_stop() -> None:
    res = run_child("once")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["gentle", "stop", "returned"]
    assert "level=INFO logger=child msg=stopping (send the signal again to force)" in res.stderr


def test_a_second_signal_exits_at_once() -> None:
    res = run_child("twice")
    assert res.returncode == 1, res.stderr
    assert "returned" not in res.stdout
    assert "msg=second signal: exiting now" in res.stderr


def test_httpx_request_lines_are_quiet_unless_debugging() -> None:
    from minik8s.daemon import setup_logging

    root, httpx_log = logging.getLogger(), logging.getLogger("httpx")
    saved = (root.level, list(root.handlers), httpx_log.level)
    try:
        setup_logging("info")
        assert httpx_log.getEffectiveLevel() == logging.WARNING
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        httpx_log.setLevel(saved[2])
