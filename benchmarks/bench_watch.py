"""Watch fan-out: how long until every watcher has an update, for 1 watcher and for 1,000.

    python benchmarks/bench_watch.py [--watchers 1000] [--updates 20] [--client httpx|lean]

Starts its own etcd and apiserver (loopback, free ports). ``--watchers`` watch streams (one
process, asyncio; httpx streams by default, or a minimal asyncio HTTP/1.1 reader with
``--client lean`` to take httpx's per-event cost out of the figure) watch one Pod by name. A
separate writer process PATCHes the Pod ``--updates`` times, one at a time, and reports the
``time.monotonic()`` at which each PATCH was acknowledged (CLOCK_MONOTONIC is system-wide, so the
two processes' clocks agree). Delivery latency = arrival at a watcher - acknowledgement of the
write; the same is measured with 1 watcher as the floor. Goal: p99 <= 100 ms for 1,000 watchers.

Every wait is bounded; exits 0 once the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from minik8s.testing import ApiserverProcess, EtcdProcess

NS = "default"
POD = "watched"
RV_RE = re.compile(rb'"resourceVersion":"(\d+)"')

WRITER = r"""
import json, sys, time, httpx
url, path = sys.argv[1], sys.argv[2]
with httpx.Client(base_url=url, timeout=10) as c:
    for n, line in enumerate(sys.stdin):
        body = json.dumps({"metadata": {"annotations": {"n": str(n)}}})
        sent = time.monotonic()
        r = c.patch(path, content=body, headers={"Content-Type": "application/merge-patch+json"})
        acked = time.monotonic()
        rv = r.json()["metadata"]["resourceVersion"] if r.status_code == 200 else "0"
        print(rv, sent, acked, r.status_code, flush=True)
"""


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


class Arrivals:
    """Arrival times of each resourceVersion over all watchers."""

    def __init__(self) -> None:
        self.times: dict[int, list[float]] = defaultdict(list)
        self.changed = asyncio.Event()
        self.connected = 0
        self.failed: list[str] = []

    def saw(self, rv: int, t: float) -> None:
        self.times[rv].append(t)
        self.changed.set()

    async def wait_count(self, rv: int, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.times[rv]) < n:
            left = deadline - time.monotonic()
            if left <= 0 or self.failed:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return True


def _scan(buf: bytes, arrivals: Arrivals, t: float) -> bytes:
    """Record every complete event line in ``buf``; return the incomplete rest."""
    *lines, rest = buf.split(b"\n")
    for line in lines:
        m = RV_RE.search(line)
        if m:
            arrivals.saw(int(m.group(1)), t)
    return rest


async def httpx_watcher(client: httpx.AsyncClient, params: dict[str, str], arrivals: Arrivals) -> None:
    path = f"/api/v1/namespaces/{NS}/pods"
    try:
        async with client.stream("GET", path, params=params) as r:
            if r.status_code != 200:
                arrivals.failed.append(f"watch answered {r.status_code}")
                return
            arrivals.connected += 1
            buf = b""
            async for chunk in r.aiter_raw():
                buf = _scan(buf + chunk, arrivals, time.monotonic())
    except (httpx.HTTPError, asyncio.CancelledError):
        return


async def lean_watcher(host: str, port: int, params: dict[str, str], arrivals: Arrivals) -> None:
    """A minimal HTTP/1.1 chunked-stream reader (no client library in the way)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        arrivals.failed.append(f"connect: {e}")
        return
    try:
        writer.write(f"GET /api/v1/namespaces/{NS}/pods?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if int(head.split(b" ", 2)[1]) != 200:
            arrivals.failed.append(f"watch answered {head[:40]!r}")
            return
        arrivals.connected += 1
        buf = b""
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                return
            data = await reader.readexactly(size + 2)
            buf = _scan(buf + data[:-2], arrivals, time.monotonic())
    except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError, TimeoutError, ValueError):
        return
    finally:
        writer.close()


async def watcher_gauge(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    m = re.search(r'apiserver_registered_watchers\{resource="pods"\} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


async def measure(url: str, watchers: int, updates: int,
                  client_kind: str) -> tuple[list[float], list[float], list[float]]:
    """Latencies (s) of every (update, watcher) pair from the write's acknowledgement and from its
    sending, and per update the time from the acknowledgement until the last watcher had it."""
    arrivals = Arrivals()
    limits = httpx.Limits(max_connections=watchers + 16, max_keepalive_connections=16)
    timeout = httpx.Timeout(connect=30, read=120, write=10, pool=30)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        pod = (await client.get(f"/api/v1/namespaces/{NS}/pods/{POD}")).json()
        params = {"watch": "true", "resourceVersion": pod["metadata"]["resourceVersion"],
                  "fieldSelector": f"metadata.name={POD}"}
        base_gauge = await watcher_gauge(client)
        tasks = []
        for i in range(watchers):
            if client_kind == "lean":
                tasks.append(asyncio.create_task(lean_watcher(host, int(port), params, arrivals)))
            else:
                tasks.append(asyncio.create_task(httpx_watcher(client, params, arrivals)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)     # pacing of connection setup, not a wait for a condition
        deadline = time.monotonic() + 60
        while (arrivals.connected < watchers or await watcher_gauge(client) < base_gauge + watchers) \
                and not arrivals.failed:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {arrivals.connected} of {watchers} watchers connected in 60 s")
            await asyncio.sleep(0.1)          # polling with a deadline
        if arrivals.failed:
            raise SystemExit(f"watchers failed: {arrivals.failed[:3]}")

        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, url, f"/api/v1/namespaces/{NS}/pods/{POD}",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert writer.stdin is not None and writer.stdout is not None
        latencies: list[float] = []
        from_sent: list[float] = []
        last: list[float] = []
        try:
            for _ in range(updates):
                writer.stdin.write(b"go\n")
                await writer.stdin.drain()
                line = await asyncio.wait_for(writer.stdout.readline(), 30)
                rv_text, sent_text, acked_text, code = line.decode().split()
                if code != "200":
                    raise SystemExit(f"PATCH answered {code}")
                rv, sent, acked = int(rv_text), float(sent_text), float(acked_text)
                if not await arrivals.wait_count(rv, watchers, 30):
                    raise SystemExit(f"only {len(arrivals.times[rv])} of {watchers} watchers got rv {rv} in 30 s")
                got = [t - acked for t in arrivals.times[rv]]
                latencies += got
                from_sent += [t - sent for t in arrivals.times[rv]]
                last.append(max(got))
                await asyncio.sleep(0.2)      # spacing between updates (pacing, not a condition)
        finally:
            writer.stdin.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait(), 10)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, from_sent, last


def report(label: str, lat: list[float], from_sent: list[float], last: list[float]) -> float:
    ms = [x * 1000 for x in lat]
    sent_ms = [x * 1000 for x in from_sent]
    p99 = pct(ms, .99)
    print(f"{label}: {len(ms)} deliveries; from the write's ack: p50 {pct(ms, .5):.1f} ms, p99 {p99:.1f} ms, "
          f"max {max(ms):.1f} ms, min {min(ms):.1f} ms; from sending the write: p50 {pct(sent_ms, .5):.1f} ms, "
          f"p99 {pct(sent_ms, .99):.1f} ms; last watcher per update p50 {pct(last, .5) * 1000:.1f} ms")
    return p99


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--client", choices=("httpx", "lean"), default="httpx")
    args = ap.parse_args()

    # 1,000 client sockets here and 1,000 in the apiserver (which inherits this limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.watchers + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"watch client: {args.client}")
    with EtcdProcess() as etcd, ApiserverProcess(etcd.endpoint, extra_args=["--compaction-interval", "0",
                                                                            "--log-level", "warning"]) as api:
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}}
        r = httpx.post(f"{api.url}/api/v1/namespaces/{NS}/pods", json=body, timeout=10)
        assert r.status_code == 201, r.text
        print(f"event size: {len(json.dumps({'type': 'MODIFIED', 'object': r.json()}))} bytes")

        report("1 watcher (floor)", *asyncio.run(measure(api.url, 1, args.updates, args.client)))
        p99 = report(f"{args.watchers} watchers", *asyncio.run(measure(api.url, args.watchers, args.updates,
                                                                        args.client)))
        print(f"goal p99 <= 100 ms with {args.watchers} watchers: {'met' if p99 <= 100 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
