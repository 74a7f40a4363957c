"""Pod create throughput and latency through the API, against a floor of raw etcd transactions.

    python benchmarks/bench_create.py [--count 3000] [--concurrency 16] [--rate 100] [--seconds 10]

Starts its own etcd and apiserver (loopback, free ports) and prints:

1. raw floor: ``--count`` create-if-absent etcd transactions (aetcd, the same JSON the apiserver
   stores for a Pod, the same compare/put/failure-read shape) from ``--concurrency`` async clients;
2. API: ``--count`` Pod creates (HTTP POST, JSON) from ``--concurrency`` async HTTP clients, and
   the ratio API / raw (goal: >= 0.5);
3. steady load: one create every 1/``--rate`` s for ``--seconds`` s (open loop), p50/p99/max
   latency (goal: p99 <= 50 ms).

Every loop is bounded in count and time. Exits 0 once the figures are printed (goals are reported,
not enforced).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aetcd
import httpx

from minik8s.testing import ApiserverProcess, EtcdProcess

NS = "default"
PHASE_LIMIT = 60.0      # seconds any one phase may take


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
            "spec": {"containers": [{"name": "main", "image": "busybox:latest", "command": ["sleep", "3600"],
                                     "ports": [{"containerPort": 8080}],
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of ``pid`` (None: this process)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by the apiserver, etcd and this client over a phase."""

    def __init__(self, **pids: int | None) -> None:
        self.pids = pids

    def __enter__(self) -> CpuMeter:
        self.start = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        used = {k: cpu_seconds(p) - self.start[k] for k, p in self.pids.items()}
        self.summary = ", ".join(f"{k} {v / wall * 100:.0f}%" for k, v in used.items())


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def raw_floor(endpoint: str, stored: dict[str, Any], count: int, concurrency: int) -> tuple[float, int]:
    """Create-if-absent transactions straight to etcd; returns (creates/s, done)."""
    host, port = endpoint.rsplit(":", 1)
    clients = [aetcd.Client(host, int(port), timeout=10) for _ in range(concurrency)]
    for c in clients:
        await c.connect()
    meta = dict(stored["metadata"])
    meta.pop("resourceVersion", None)
    todo = iter(range(count))
    done = 0
    deadline = time.monotonic() + PHASE_LIMIT

    async def worker(c: aetcd.Client) -> None:
        nonlocal done
        for i in todo:
            if time.monotonic() > deadline:
                return
            name = f"raw-{i}"
            obj = {**stored, "metadata": {**meta, "name": name, "uid": f"uid-{i}"}}
            key = f"/bench-raw/pods/{NS}/{name}".encode()   # outside /registry/: no apiserver watches it
            value = json.dumps(obj, separators=(",", ":")).encode()
            ok, _ = await c.transaction(compare=[c.transactions.create(key) == 0],
                                        success=[c.transactions.put(key, value)],
                                        failure=[c.transactions.get(key)])
            assert ok
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - start
    for c in clients:
        await c.close()
    return done / elapsed, done


async def api_throughput(url: str, count: int, concurrency: int,
                         prefix: str = "tp") -> tuple[float, int, list[float]]:
    """Pod creates through the API; returns (creates/s, done, latencies)."""
    todo = iter(range(count))
    done = 0
    latencies: list[float] = []
    deadline = time.monotonic() + PHASE_LIMIT

    async def worker() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            for i in todo:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                r = await c.post(f"/api/v1/namespaces/{NS}/pods", json=pod(f"{prefix}-{i}"))
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 201, r.text
                done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start), done, latencies


class LeanHttp:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (one connection, one request at a time).

    httpx costs about as much CPU per request as the apiserver itself on a 2-core machine, which
    would measure the client; this one costs a few tens of microseconds per request.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> LeanHttp:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.writer is not None
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await asyncio.wait_for(self.reader.readexactly(length), 30)


async def api_throughput_lean(url: str, count: int, concurrency: int) -> tuple[float, int, list[float]]:
    """Pod creates through the API with ``LeanHttp``; returns (creates/s, done, latencies)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    todo = iter(range(count))
    done = 0
    latencies: list[float] = []
    deadline = time.monotonic() + PHASE_LIMIT
    path = f"/api/v1/namespaces/{NS}/pods"

    async def worker() -> None:
        nonlocal done
        async with LeanHttp(host, int(port)) as c:
            for i in todo:
                if time.monotonic() > deadline:
                    return
                body = json.dumps(pod(f"lean-{i}")).encode()
                t0 = time.perf_counter()
                status, text = await c.post(path, body)
                latencies.append(time.perf_counter() - t0)
                assert status == 201, text[:300]
                done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start), done, latencies


async def steady(url: str, rate: float, seconds: float) -> tuple[list[float], int]:
    """Open-loop creates at ``rate``/s; returns (latencies, errors)."""
    n = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as c:
        # Warm the connection pool so the first requests do not pay for TCP setup.
        await asyncio.gather(*(c.get("/healthz") for _ in range(16)))

        async def one(i: int) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            r = await c.post(f"/api/v1/namespaces/{NS}/pods", json=pod(f"st-{i}"))
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 201:
                errors += 1

        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)          # pacing of an open-loop load, not a wait for a condition
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.wait_for(asyncio.gather(*tasks), PHASE_LIMIT)
    return latencies, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with EtcdProcess() as etcd, ApiserverProcess(etcd.endpoint, extra_args=["--compaction-interval", "0",
                                                                            "--log-level", "warning"]) as api:
        sample = httpx.post(f"{api.url}/api/v1/namespaces/{NS}/pods", json=pod("sample"), timeout=10)
        assert sample.status_code == 201, sample.text
        stored = sample.json()
        print(f"payload: {len(json.dumps(stored, separators=(',', ':')))} bytes of JSON per Pod")

        assert etcd.proc is not None and api.proc is not None
        pids = {"apiserver": api.proc.pid, "etcd": etcd.proc.pid, "client": None}
        # Warm-up: the first writes of a kind load schema tables and open connections.
        asyncio.run(api_throughput(api.url, 100, 4, prefix="warm"))

        with CpuMeter(**pids) as cpu:
            raw_rate, raw_done = asyncio.run(raw_floor(etcd.endpoint, stored, args.count, args.concurrency))
        print(f"raw etcd create-if-absent txns: {raw_done} in {raw_done / raw_rate:.2f}s = {raw_rate:.0f}/s "
              f"({args.concurrency} concurrent aetcd clients); CPU: {cpu.summary}")

        with CpuMeter(**pids) as cpu:
            lean_rate, lean_done, lat = asyncio.run(api_throughput_lean(api.url, args.count, args.concurrency))
        print(f"API pod creates (lean HTTP/1.1 client): {lean_done} in {lean_done / lean_rate:.2f}s = "
              f"{lean_rate:.0f}/s ({args.concurrency} connections); latency p50 {pct(lat, .5) * 1000:.1f} ms "
              f"p99 {pct(lat, .99) * 1000:.1f} ms; CPU: {cpu.summary}")
        with CpuMeter(**pids) as cpu:
            api_rate, api_done, lat = asyncio.run(api_throughput(api.url, args.count, args.concurrency))
        print(f"API pod creates (httpx client): {api_done} in {api_done / api_rate:.2f}s = {api_rate:.0f}/s "
              f"({args.concurrency} concurrent AsyncClients); latency p50 {pct(lat, .5) * 1000:.1f} ms "
              f"p99 {pct(lat, .99) * 1000:.1f} ms; CPU: {cpu.summary}")
        ratio = lean_rate / raw_rate
        print(f"ratio API (lean client) / raw: {ratio:.2f} (goal >= 0.50: {'met' if ratio >= 0.5 else 'MISSED'}); "
              f"with the httpx client: {api_rate / raw_rate:.2f}")

        with CpuMeter(**pids) as cpu:
            lat, errors = asyncio.run(steady(api.url, args.rate, args.seconds))
        p50, p99 = pct(lat, .5) * 1000, pct(lat, .99) * 1000
        print(f"steady {args.rate:.0f} creates/s for {args.seconds:.0f}s: {len(lat)} creates, {errors} errors; "
              f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat) * 1000:.1f} ms, "
              f"mean {statistics.mean(lat) * 1000:.1f} ms (goal p99 <= 50 ms: {'met' if p99 <= 50 else 'MISSED'}); "
              f"CPU: {cpu.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
