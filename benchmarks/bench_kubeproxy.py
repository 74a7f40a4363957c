"""kubeproxy: endpoint change → iptables programmed, and the cost of a ClusterIP hop (root only).

    python benchmarks/bench_kubeproxy.py [--changes 50] [--services 50] [--duration 5] [--connections 16]

Starts its own etcd, apiserver (its own ClusterIP range), a network lab (kubeproxy/lab.py: its own
bridge + 2 netns running http.server) and a real ``minik8s-kubeproxy`` with a random chain prefix.

1. programming latency: ``--services`` background Services (with endpoints) exist; then ``--changes``
   times an Endpoints object is replaced (toggling 2 ↔ 1 addresses) and ``iptables-save -t nat`` is
   polled (every 10 ms) until the DNAT rules match: API write returned → rules visible, p50/p99
   (goal p99 ≤ 200 ms). kubeproxy's own histogram (Endpoints change observed → restore done) is
   printed too.
2. data path: the same load tool against the backend's pod IP and against the ClusterIP, in this run:
   ``wrk`` (Debian) with ``Connection: close`` (a new connection, hence a new NAT decision, per
   request) when installed, else a bounded Python loop; requests/s, latency, and the ratio.

Everything it creates (chains, jump rules, netns, bridge) is removed at the end. Bounded in time.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from kubeproxy import iptables
from kubeproxy.lab import BACKEND_PORT, Lab, free_subnet, sh
from kubeproxy.rules import ProxyConfig
from minik8s.api import registry
from minik8s.client.rest import ApiClient
from minik8s.testing import ApiserverProcess, EtcdProcess, free_port

GOAL_P99_MS = 200.0
EPS = registry.lookup("endpoints")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def ep_obj(ns: str, name: str, ips: list[str], rv: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if rv:
        meta["resourceVersion"] = rv
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}]}]}


def targets(ns: str, name: str) -> set[str]:
    out = sh("iptables-save", "-t", "nat").stdout
    tag = f'"{ns}/{name}:http"'
    return {line.rsplit(" ", 1)[1] for line in out.splitlines() if tag in line and "--to-destination" in line}


def wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wrk(url: str, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency",
                          "-H", "Connection: close", url], capture_output=True, text=True,
                         timeout=duration + 30, check=False).stdout
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\b", out, re.M)
        return float(m.group(1)) * unit[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: (.*)|Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(rps.group(1)) if rps else float("nan"), "p50_ms": ms("50%"), "p99_ms": ms("99%"),
            "errors": 1.0 if errors else 0.0}


def py_load(host: str, duration: int) -> dict[str, float]:
    lat: list[float] = []
    errors = 0
    end = time.monotonic() + duration
    while time.monotonic() < end and len(lat) + errors < 200_000:
        t0 = time.perf_counter()
        try:
            h = http.client.HTTPConnection(host, 80 if not host.endswith(f":{BACKEND_PORT}") else None, timeout=2)
            h.request("GET", "/id")
            h.getresponse().read()
            h.close()
            lat.append((time.perf_counter() - t0) * 1000)
        except OSError:
            errors += 1
    return {"rps": len(lat) / duration, "p50_ms": pct(lat, 0.5) if lat else float("nan"),
            "p99_ms": pct(lat, 0.99) if lat else float("nan"), "errors": float(errors)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (iptables, netns)")
        return 2
    tag = f"{random.getrandbits(24):06x}"
    script = Path(sys.executable).parent / "minik8s-kubeproxy"
    svc_range = free_subnet()
    proc: subprocess.Popen[bytes] | None = None
    cfg: ProxyConfig | None = None
    api_args = ["--compaction-interval", "0", "--service-cluster-ip-range", str(svc_range)]
    with EtcdProcess() as etcd, ApiserverProcess(etcd.endpoint, extra_args=api_args) as api, Lab(2) as lab, \
            ApiClient(api.url) as client:
        try:
            cfg = ProxyConfig(f"KPB{tag}", cluster_cidr=str(lab.net), node_ip=lab.gateway)
            mport = free_port()
            log = open(f"/tmp/bench-kubeproxy-{tag}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen([str(script), "--apiserver", api.url, "--chain-prefix", cfg.chain_prefix,
                                     "--cluster-cidr", str(lab.net), "--node-ip", lab.gateway,
                                     "--bridge", lab.bridge, "--metrics-port", str(mport)],
                                    stdout=log, stderr=subprocess.STDOUT)
            ns = f"kpb-{tag}"
            client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            n_bg = min(args.services, 200)
            for i in range(n_bg):  # the svc range is a /24: at most ~250 services
                name = f"bg{i}"
                client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                               "spec": {"ports": [{"name": "http", "port": 80}]}}, namespace=ns)
                client.create(ep_obj(ns, name, lab.ips), namespace=ns)
            svc = client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                                 "spec": {"ports": [{"name": "http", "port": 80}]}}, namespace=ns)
            client.create(ep_obj(ns, "web", [lab.ips[0]]), namespace=ns)
            cip = svc["spec"]["clusterIP"]
            if not wait(lambda: targets(ns, "web") == {f"{lab.ips[0]}:{BACKEND_PORT}"}, 60):
                print("kubeproxy never programmed the service; see the log", log.name)
                return 1

            lat: list[float] = []
            sets = [lab.ips, [lab.ips[0]]]
            for i in range(args.changes):
                ips = sets[i % 2]
                want = {f"{ip}:{BACKEND_PORT}" for ip in ips}
                cur = client.get(EPS, "web", ns)
                client.replace(ep_obj(ns, "web", ips, cur["metadata"]["resourceVersion"]))
                t0 = time.monotonic()
                if not wait(lambda w=want: targets(ns, "web") == w, 10):  # type: ignore[misc]
                    print(f"change {i}: rules not programmed within 10 s")
                    return 1
                lat.append((time.monotonic() - t0) * 1000)
            metrics = httpx.get(f"http://127.0.0.1:{mport}/metrics", timeout=5).text

            def sample(name: str) -> float:
                m = re.search(rf"^{name} ([\d.e+-]+)$", metrics, re.M)
                return float(m.group(1)) if m else float("nan")

            hs, hc = (sample("kubeproxy_network_programming_duration_seconds_sum"),
                      sample("kubeproxy_network_programming_duration_seconds_count"))
            ss, sc = (sample("kubeproxy_sync_proxy_rules_duration_seconds_sum"),
                      sample("kubeproxy_sync_proxy_rules_duration_seconds_count"))
            print(f"== endpoint change → iptables programmed ({args.changes} changes, {n_bg + 1} services, "
                  f"{2 * n_bg + 1} endpoints)")
            print(f"   API write → rules visible: p50 {pct(lat, 0.5):.1f} ms  p99 {pct(lat, 0.99):.1f} ms  "
                  f"max {max(lat):.1f} ms  mean {statistics.mean(lat):.1f} ms  "
                  f"(goal p99 ≤ {GOAL_P99_MS:.0f} ms: {'met' if pct(lat, 0.99) <= GOAL_P99_MS else 'NOT met'})")
            print(f"   kubeproxy histogram (observed → applied): mean {1000 * hs / max(hc, 1):.1f} ms over "
                  f"{hc:.0f}; sync (save+restore) mean {1000 * ss / max(sc, 1):.1f} ms over {sc:.0f} syncs")

            # data path: one backend, direct vs ClusterIP
            tool = "wrk" if shutil.which("wrk") else "python loop"
            print(f"== data path ({tool}, {args.duration}s each, new connection per request, backend: "
                  f"python http.server in a netns)")
            if tool == "wrk":
                direct = wrk(f"http://{lab.ips[0]}:{BACKEND_PORT}/id", args.duration, args.connections)
                via = wrk(f"http://{cip}:80/id", args.duration, args.connections)
            else:
                direct = py_load(f"{lab.ips[0]}:{BACKEND_PORT}", args.duration)
                via = py_load(cip, args.duration)
            for label, r in (("pod IP   ", direct), ("ClusterIP", via)):
                print(f"   {label}: {r['rps']:.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
                      f"{'  (errors reported)' if r['errors'] else ''}")
            print(f"   ratio ClusterIP / pod IP: {via['rps'] / direct['rps']:.2f} (req/s), "
                  f"{via['p50_ms'] / direct['p50_ms']:.2f} (p50 latency)")
            print(f"machine: {os.cpu_count()} CPUs; kubeproxy log {log.name}")
            return 0
        finally:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            if cfg is not None:
                iptables.cleanup_blocking(cfg)


if __name__ == "__main__":
    sys.exit(main())
