"""Pod create → Running and ready, and → first HTTP answer, against the raw CRI floor measured in the same run.

    python benchmarks/bench_pod_ready.py [--count 20] [--kubelet-args "..."]

Starts a whole cluster of its own (``minik8s.cluster``: etcd, containerd, registry, apiserver,
scheduler, kubelet) in a short temporary home on free loopback ports, with the kubelet's default
timers, and removes it at the end. The pod is busybox httpd (a cached image: pulled once in a warm-up)
with a small cpu request. It prints:

1. raw CRI floor: the kubelet stopped, ``kubelet.cri_runtime.CriRuntime`` drives the same
   containerd directly — RunPodSandbox (CNI IP) + CreateContainer + StartContainer + the first
   successful HTTP GET of the pod IP — ``--count`` times one after another (half before the
   cluster's phases, half after: the load of a shared machine drifts), and ``--count`` at once;
2. through the cluster: POST the pod → a watch sees phase Running with every container ready, and
   → the first successful HTTP GET of its IP (polled from the moment the watch shows the IP),
   ``--count`` pods one after another, then ``--count`` created at once;
3. p50 / p95 / max of each, and the ratio cluster / floor at p50 (goal: create → first HTTP
   p50 <= 1.3 x the floor).

Every wait has a deadline; traffic goes only to loopback and to the pod IPs on the cluster's bridge.
Exits 0 once the figures are printed (the goal is reported, not enforced).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from kubelet import cgroups
from kubelet.cri_runtime import CriRuntime
from kubelet.runtime import ContainerConfig, SandboxConfig
from minik8s.cluster import Cluster, Identity, Layout
from minik8s.testing import wait_until

NS = "bench"
POD_LIMIT = 60.0  # seconds one pod may take to answer
HTTPD = "trap 'exit 0' TERM; echo ok > /tmp/index.html; httpd -f -p 80 -h /tmp & wait"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"p50 {pct(ms, 0.5):7.1f} ms   p95 {pct(ms, 0.95):7.1f} ms   max {max(ms):7.1f} ms   (n={len(ms)})"


def http_ok(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}/index.html", timeout=0.5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_http(ip: str, deadline: float) -> float:
    """Poll the pod IP every 5 ms until HTTP 200; returns the monotonic time of the first success."""
    while time.monotonic() < deadline:
        if http_ok(ip):
            return time.monotonic()
        time.sleep(0.005)
    raise TimeoutError(f"no HTTP answer from {ip}")


def bench_pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"terminationGracePeriodSeconds": 2,
                     # A cached image: IfNotPresent (busybox means :latest, whose default policy is Always,
                     # a registry round trip per pod that the floor does not make).
                     "containers": [{"name": "web", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                     "command": ["sh", "-c", HTTPD],
                                     "ports": [{"containerPort": 80}],
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


def ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    cs = status.get("containerStatuses") or []
    return (status.get("phase") == "Running" and len(cs) == len(pod["spec"]["containers"])
            and all(c.get("ready") and "running" in (c.get("state") or {}) for c in cs))


# ---- the cluster ------------------------------------------------------------------------------------


class PodWatch:
    """One watch on the bench namespace; records when each pod first shows an IP and first is ready."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.ip: dict[str, str] = {}
        self.ip_seen: dict[str, float] = {}
        self.ready_at: dict[str, float] = {}
        self.bound_at: dict[str, float] = {}
        self.created_at: dict[str, float] = {}
        self.cond = threading.Condition()
        self._stop = False
        self._client = httpx.Client(base_url=api, timeout=httpx.Timeout(10, read=None))
        rv = self._client.get(f"/api/v1/namespaces/{NS}/pods").json()["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, args=(rv,), daemon=True)
        self._thread.start()

    def _run(self, rv: str) -> None:
        params = {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "false"}
        try:
            with self._client.stream("GET", f"/api/v1/namespaces/{NS}/pods", params=params) as r:
                for line in r.iter_lines():
                    if self._stop:
                        return
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    now = time.monotonic()
                    pod = event.get("object") or {}
                    name = (pod.get("metadata") or {}).get("name")
                    if event.get("type") not in ("ADDED", "MODIFIED") or not name:
                        continue
                    with self.cond:
                        ip = (pod.get("status") or {}).get("podIP")
                        if (pod.get("spec") or {}).get("nodeName") and name not in self.bound_at:
                            self.bound_at[name] = now
                        if ip and name not in self.ip:
                            self.ip[name], self.ip_seen[name] = ip, now
                        if ready(pod) and name not in self.ready_at:
                            self.ready_at[name] = now
                        self.cond.notify_all()
        except (httpx.HTTPError, ValueError):
            if not self._stop:
                raise

    def wait(self, name: str, table: dict[str, Any], deadline: float) -> Any:
        with self.cond:
            while name not in table:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"pod {name}: not seen in time")
                self.cond.wait(min(left, 1.0))
            return table[name]

    def close(self) -> None:
        self._stop = True
        self._client.close()


def start_cluster(kubelet_args: str) -> tuple[Cluster, Identity]:
    home = tempfile.mkdtemp(prefix="mk8s-bpr-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIK8S_") and k != "KUBECONFIG"}
    env.update({"MINIK8S_HOME": home, "MINIK8S_STOP_GRACE": "5", "MINIK8S_START_TIMEOUT": "120",
                "MINIK8S_NODE_NAME": "bench-node", "MINIK8S_KUBELET_ARGS": kubelet_args})
    cluster = Cluster(Layout(home), environ=env, out=lambda line: print(f"  | {line}", flush=True))
    ident = cluster.up()
    return cluster, ident


def node_ready(api: httpx.Client) -> bool:
    r = api.get("/api/v1/nodes/bench-node")
    if r.status_code != 200:
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in r.json()["status"].get("conditions") or [])


def one_pod(api: httpx.Client, watch: PodWatch, name: str) -> tuple[float, float]:
    """Create ``name``; return (create → ready, create → first HTTP 200) in seconds."""
    t0 = time.monotonic()
    watch.created_at[name] = t0
    r = api.post(f"/api/v1/namespaces/{NS}/pods", json=bench_pod(name))
    r.raise_for_status()
    deadline = t0 + POD_LIMIT
    ip = watch.wait(name, watch.ip, deadline)
    t_http = wait_http(ip, deadline)
    t_ready = watch.wait(name, watch.ready_at, deadline)
    return t_ready - t0, t_http - t0


def breakdown(watch: PodWatch, names: list[str]) -> str:
    """p50 of create → bound (scheduler) → podIP in the API → ready (kubelet), in ms."""
    def p50_ms(a: dict[str, float], b: dict[str, float]) -> float:
        return pct([b[n] - a[n] for n in names], 0.5) * 1000

    return (f"create -> bound {p50_ms(watch.created_at, watch.bound_at):.1f} ms, "
            f"bound -> podIP in the API {p50_ms(watch.bound_at, watch.ip_seen):.1f} ms, "
            f"podIP -> ready {p50_ms(watch.ip_seen, watch.ready_at):.1f} ms (p50 of each step)")


def delete_all(api: httpx.Client) -> None:
    for pod in api.get(f"/api/v1/namespaces/{NS}/pods").json()["items"]:
        api.delete(f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}")
    wait_until(lambda: not api.get(f"/api/v1/namespaces/{NS}/pods").json()["items"], timeout=120, interval=0.2,
               what="the bench pods to be deleted")


def cluster_phase(api: httpx.Client, watch: PodWatch, prefix: str, count: int, concurrent: bool
                  ) -> tuple[list[float], list[float]]:
    names = [f"{prefix}-{i}" for i in range(count)]
    if concurrent:
        with concurrent_pool(count) as pool:
            results = list(pool.map(lambda n: one_pod(api, watch, n), names))
    else:
        results = [one_pod(api, watch, n) for n in names]
    delete_all(api)
    print(f"  {prefix}: {breakdown(watch, names)}", flush=True)
    return [r[0] for r in results], [r[1] for r in results]


def concurrent_pool(n: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=n)


# ---- the raw CRI floor ------------------------------------------------------------------------------


async def floor_one(rt: CriRuntime, image: str, cgroup_root: str, log_root: Path) -> tuple[float, str]:
    uid = str(uuid.uuid4())
    sandbox = SandboxConfig(pod_uid=uid, name=f"floor-{uid[:8]}", namespace="floor", hostname="floor",
                            log_directory=str(log_root / uid), cgroup_parent=f"{cgroup_root}/pod{uid}")
    container = ContainerConfig(name="web", image=image, command=("sh", "-c", HTTPD), log_path="web/0.log")
    (log_root / uid).mkdir(parents=True)
    t0 = time.monotonic()
    sid = await rt.run_sandbox(sandbox)
    ip = (await rt.sandbox_status(sid)).ip
    cid = await rt.create_container(sid, container, sandbox)
    await rt.start_container(cid)
    t1 = await asyncio.to_thread(wait_http, ip, t0 + POD_LIMIT)
    return t1 - t0, sid


async def floor_phase(socket_path: str, cgroup_root: str, log_root: Path, count: int, at_once: int
                      ) -> tuple[list[float], list[float]]:
    """``count`` floor pods one after another, then ``at_once`` pods at once; all removed afterwards."""
    async with CriRuntime(socket_path, timeout=60) as rt:
        image = await rt.pull_image("docker.io/library/busybox:latest")  # cached: not part of the floor

        async def cleanup() -> None:
            for s in await rt.list_sandboxes():
                if s.namespace == "floor":
                    await rt.stop_sandbox(s.id)
                    await rt.remove_sandbox(s.id)
                    cgroups.remove_pod_cgroups(f"{cgroup_root}/pod{s.pod_uid}")

        await floor_one(rt, image, cgroup_root, log_root)  # warm-up
        await cleanup()
        seq = [(await floor_one(rt, image, cgroup_root, log_root))[0] for _ in range(count)]
        await cleanup()
        both: list[tuple[float, str]] = []
        if at_once:
            both = await asyncio.gather(*(floor_one(rt, image, cgroup_root, log_root) for _ in range(at_once)))
            await cleanup()
        return seq, [took for took, _ in both]


def measure_floor(cluster: Cluster, ident: Identity, api: httpx.Client, count: int, at_once: int = 0
                  ) -> tuple[list[float], list[float]]:
    """The floor with the kubelet stopped (it would kill sandboxes the API does not know), then the kubelet back."""
    lay = cluster.layout
    cluster.supervisor.stop("kubelet")
    log_root = Path(tempfile.mkdtemp(prefix="floor-", dir=str(lay.kubelet)))
    try:
        return asyncio.run(floor_phase(str(lay.containerd_socket), ident.cgroup_root, log_root, count, at_once))
    finally:
        shutil.rmtree(log_root, ignore_errors=True)
        cluster.supervisor.start("kubelet")
        wait_until(lambda: node_ready(api), timeout=60, interval=0.2, what="the node Ready again")


# ---- main ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20, help="pods per phase")
    parser.add_argument("--kubelet-args", default="", help="extra kubelet flags (default: Kubernetes' timers)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_pod_ready: needs root (a whole cluster: containerd, bridges, iptables)", file=sys.stderr)
        return 1
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    t_start = time.monotonic()
    cluster, ident = start_cluster(args.kubelet_args)
    lay = cluster.layout
    api = httpx.Client(base_url=ident.api_url, timeout=30)
    watch: PodWatch | None = None
    try:
        print(f"cluster in {lay.home} up in {time.monotonic() - t_start:.1f}s")
        wait_until(lambda: node_ready(api), timeout=60, interval=0.2, what="the node Ready")
        api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})

        # 1. The floor (sequential half before and half after the cluster's phases: the machine's load drifts).
        half = max(1, args.count // 2)
        floor_seq, floor_conc = measure_floor(cluster, ident, api, half, args.count)

        # 2. Through the cluster: one warm-up pod (pulls busybox into containerd), then the phases.
        watch = PodWatch(ident.api_url)
        one_pod(api, watch, "warmup")
        delete_all(api)
        seq_ready, seq_http = cluster_phase(api, watch, "seq", args.count, concurrent=False)
        conc_ready, conc_http = cluster_phase(api, watch, "conc", args.count, concurrent=True)
        floor_seq += measure_floor(cluster, ident, api, args.count - half)[0]

        # 3. Figures.
        p50 = lambda v: pct(v, 0.5)  # noqa: E731
        print()
        at_once = f"{args.count} at once"
        print(f"raw CRI floor, {'sequential':12} sandbox+create+start+HTTP   {summary(floor_seq)}")
        print(f"raw CRI floor, {at_once:12} sandbox+create+start+HTTP   {summary(floor_conc)}")
        print(f"cluster,       {'sequential':12} create -> Running+ready     {summary(seq_ready)}")
        print(f"cluster,       {'sequential':12} create -> first HTTP 200    {summary(seq_http)}")
        print(f"cluster,       {at_once:12} create -> Running+ready     {summary(conc_ready)}")
        print(f"cluster,       {at_once:12} create -> first HTTP 200    {summary(conc_http)}")
        print()
        ratio_seq = p50(seq_http) / p50(floor_seq)
        ratio_conc = p50(conc_http) / p50(floor_conc)
        verdict = "met" if ratio_seq <= 1.3 else "MISSED"
        print(f"ratio create -> first HTTP / floor at p50: sequential {ratio_seq:.2f}x, "
              f"{args.count} at once {ratio_conc:.2f}x (vs the concurrent floor)   goal <= 1.3x sequential: {verdict}")
        print(f"ratio create -> Running+ready / floor at p50: sequential {p50(seq_ready) / p50(floor_seq):.2f}x, "
              f"{args.count} at once {p50(conc_ready) / p50(floor_conc):.2f}x")
        return 0
    finally:
        if watch is not None:
            watch.close()
        api.close()
        problems = cluster.down()
        if problems:
            print(f"bench_pod_ready: down() left: {problems}", file=sys.stderr)
        cluster.purge()
        shutil.rmtree(lay.home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
