"""Functions: cold start, warm overhead, deploy time and scale-out reaction, each against a floor measured in
the same run on the same image.

    python benchmarks/bench_functions.py [--count 10] [--requests 300] [--seconds 5]

Starts a whole cluster of its own (``minik8s.cluster``, the gateway included) in a short temporary home on
free loopback ports and removes it at the end. The gateway runs with Knative's autoscaler windows except the
tick (0.2 s) and the stable window (6 s), so that a function with ``idleTimeout: 1`` returns to zero between
samples. It prints:

1. **build + push** of a function image on the cached base (``serverless.builder.Builder`` in process,
   a new code digest each time), and **deploy time** = upload + create until the first 200 from a cold
   function (goal ≤ 500 ms; build + push alone ≤ 100 ms);
2. **cold start** = zero pods, no sandbox, the image already in containerd → first 200 through the
   trigger, ``--count`` times, against the **CRI floor**: the kubelet stopped, RunPodSandbox +
   CreateContainer + StartContainer of the same image + the first 200 of ``POST /`` on the pod IP,
   driven directly (goal: p50 ≤ 1.5x the floor). A pod watch splits the cold path into steps;
3. **warm overhead**: the same keep-alive client calls the pod directly and through the gateway,
   ``--requests`` sequential calls each (p50 difference; goal ≤ +1 ms) and 8 threads for ``--seconds``
   (throughput ratio; goal ≥ 0.8);
4. **scale-out reaction**: a 200 ms function at 1 call in flight, then a step to 6: time to the
   autoscaler's scale write and to a second pod answering.

Every wait has a deadline; traffic goes only to loopback and to pod IPs on the cluster's bridge. Exits 0
once the figures are printed (the goals are reported, not enforced).
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
from serverless.builder import Builder

NS = "bench"
FN = "/apis/minik8s.io/v1/namespaces/bench/functions"
ADD = "def run(x, y):\n    return x + y\n"
SLOW = "import socket\nimport time\n\n\ndef run(ms=0):\n    time.sleep(ms / 1000)\n    return socket.gethostname()\n"
LIMIT = 60.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"p50 {pct(ms, 0.5):7.1f} ms   p95 {pct(ms, 0.95):7.1f} ms   max {max(ms):7.1f} ms   (n={len(ms)})"


# ---- the cluster ----------------------------------------------------------------------------------------


def start_cluster() -> tuple[Cluster, Identity]:
    home = tempfile.mkdtemp(prefix="mk8s-bfn-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIK8S_") and k != "KUBECONFIG"}
    env.update({"MINIK8S_HOME": home, "MINIK8S_STOP_GRACE": "5", "MINIK8S_START_TIMEOUT": "120",
                "MINIK8S_NODE_NAME": "bench-node", "MINIK8S_SKIP_EXAMPLE": "1",
                "MINIK8S_CONTROLLER_MANAGER_ARGS": "--port 0",
                "MINIK8S_GATEWAY_ARGS": "--tick 0.2 --stable-window 6"})
    cluster = Cluster(Layout(home), environ=env, out=lambda line: print(f"  | {line}", flush=True))
    return cluster, cluster.up()


def gateway_url(ident: Identity) -> str:
    return f"http://127.0.0.1:{ident.gateway_port}"


def node_ready(api: httpx.Client) -> bool:
    r = api.get("/api/v1/nodes/bench-node")
    return r.status_code == 200 and any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in r.json()["status"].get("conditions") or [])


def upload(api: httpx.Client, name: str, code: str) -> str:
    r = api.post(f"{FN}/{name}/code", params={"filename": "main.py"}, content=code.encode(),
                 headers={"Content-Type": "text/x-python"})
    assert r.status_code == 201, r.text
    return str(r.json()["codeDigest"])


def create_function(api: httpx.Client, name: str, code: str, **spec: Any) -> None:
    digest = upload(api, name, code)
    body = {"apiVersion": "minik8s.io/v1", "kind": "Function", "metadata": {"name": name, "namespace": NS},
            "spec": {"codeDigest": digest, **spec}}
    r = api.post(FN, json=body)
    assert r.status_code == 201, r.text


def function(api: httpx.Client, name: str) -> dict[str, Any]:
    r = api.get(f"{FN}/{name}")
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def wait_built(api: httpx.Client, name: str) -> dict[str, Any]:
    def built() -> dict[str, Any] | None:
        fn = function(api, name)
        st = fn.get("status") or {}
        return fn if st.get("image") and st.get("codeDigest") == fn["spec"]["codeDigest"] else None

    return wait_until(built, timeout=LIMIT, interval=0.005, what=f"function {name} built")  # type: ignore[no-any-return]


def fn_pods(api: httpx.Client, name: str) -> list[dict[str, Any]]:
    r = api.get(f"/api/v1/namespaces/{NS}/pods", params={"labelSelector": f"minik8s.io/function={name}"})
    return list(r.json()["items"])


def replicas(api: httpx.Client, name: str) -> int:
    r = api.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{name}")
    return int(r.json()["spec"]["replicas"]) if r.status_code == 200 else 0


def sandboxes(rt_socket: str) -> int:
    """Running pod sandboxes of the bench namespace in the cluster's containerd (ctr would do the same)."""
    async def count() -> int:
        async with CriRuntime(rt_socket, timeout=10) as rt:
            return sum(1 for s in await rt.list_sandboxes() if s.namespace == NS and s.state == "READY")
    return asyncio.run(count())


def wait_zero(api: httpx.Client, name: str, rt_socket: str) -> None:
    wait_until(lambda: not fn_pods(api, name) and sandboxes(rt_socket) == 0, timeout=120, interval=0.1,
               what=f"{name} at zero pods and zero sandboxes")


def call_until_ok(client: httpx.Client, url: str, body: dict[str, Any], deadline: float) -> float:
    """POST until 200 (a function not built yet answers 503 at once); the monotonic time of the 200."""
    while time.monotonic() < deadline:
        r = client.post(url, json=body, timeout=LIMIT)
        if r.status_code == 200:
            return time.monotonic()
        if r.status_code not in (404, 503):
            raise RuntimeError(f"{url}: {r.status_code} {r.text}")
        time.sleep(0.005)
    raise TimeoutError(url)


class PodSteps:
    """A pod watch on the bench namespace: when each pod was created, bound, got an IP, became ready."""

    def __init__(self, api_url: str) -> None:
        self.seen: dict[str, dict[str, float]] = {}
        self._client = httpx.Client(base_url=api_url, timeout=httpx.Timeout(10, read=None))
        rv = self._client.get(f"/api/v1/namespaces/{NS}/pods").json()["metadata"]["resourceVersion"]
        self._stop = False
        threading.Thread(target=self._run, args=(rv,), daemon=True).start()

    def _run(self, rv: str) -> None:
        params = {"watch": "true", "resourceVersion": rv}
        try:
            with self._client.stream("GET", f"/api/v1/namespaces/{NS}/pods", params=params) as r:
                for line in r.iter_lines():
                    if self._stop:
                        return
                    if not line.strip():
                        continue
                    ev, now = json.loads(line), time.monotonic()
                    pod = ev.get("object") or {}
                    steps = self.seen.setdefault(pod.get("metadata", {}).get("name", ""), {})
                    steps.setdefault("created", now)
                    if pod.get("spec", {}).get("nodeName"):
                        steps.setdefault("bound", now)
                    if pod.get("status", {}).get("podIP"):
                        steps.setdefault("ip", now)
                    if any(c.get("type") == "Ready" and c.get("status") == "True"
                           for c in pod.get("status", {}).get("conditions") or []):
                        steps.setdefault("ready", now)
        except (httpx.HTTPError, ValueError):
            return

    def close(self) -> None:
        self._stop = True
        self._client.close()


# ---- 1. build, push, deploy ---------------------------------------------------------------------------


def bench_build(ident: Identity, count: int) -> list[float]:
    out = []
    with Builder(ident.registry_url) as builder:
        for i in range(count):
            info = builder.store_code(f"{ADD}\n# variant {uuid.uuid4().hex} {i}\n".encode(), filename="main.py")
            t0 = time.monotonic()
            builder.build(NS, "buildbench", info.digest)
            out.append(time.monotonic() - t0)
    return out


def bench_deploy(api: httpx.Client, gw: str, count: int) -> list[float]:
    out = []
    with httpx.Client() as client:
        for i in range(count):
            name = f"deploy{i}"
            t0 = time.monotonic()
            create_function(api, name, f"{ADD}# {i}\n", idleTimeout=1)
            t1 = call_until_ok(client, f"{gw}/function/{NS}/{name}", {"x": 1, "y": 2}, t0 + LIMIT)
            out.append(t1 - t0)
    return out


# ---- 2. cold start and its floor -----------------------------------------------------------------------


def bench_cold(api: httpx.Client, gw: str, rt_socket: str, steps: PodSteps, count: int
               ) -> tuple[list[float], dict[str, list[float]]]:
    create_function(api, "cold", ADD, idleTimeout=1)
    wait_built(api, "cold")
    url = f"{gw}/function/{NS}/cold"
    out: list[float] = []
    parts: dict[str, list[float]] = {"request -> pod created": [], "created -> bound": [], "bound -> podIP": [],
                                     "podIP -> first 200": [], "podIP -> Ready in the API": []}
    with httpx.Client() as client:
        call_until_ok(client, url, {"x": 1, "y": 2}, time.monotonic() + LIMIT)  # pulls the image once
        for _ in range(count):
            wait_zero(api, "cold", rt_socket)
            before = set(steps.seen)
            t0 = time.monotonic()
            t1 = call_until_ok(client, url, {"x": 1, "y": 2}, t0 + LIMIT)
            out.append(t1 - t0)
            new = [s for n, s in list(steps.seen.items()) if n not in before and n]
            if new:
                s = min(new, key=lambda x: x.get("created", 1e18))
                if {"created", "bound", "ip"} <= set(s):
                    parts["request -> pod created"].append(s["created"] - t0)
                    parts["created -> bound"].append(s["bound"] - s["created"])
                    parts["bound -> podIP"].append(s["ip"] - s["bound"])
                    parts["podIP -> first 200"].append(t1 - s["ip"])
                    wait_until(lambda s=s: "ready" in s, timeout=LIMIT, interval=0.01, what="Ready")  # type: ignore[misc]
                    parts["podIP -> Ready in the API"].append(s["ready"] - s["ip"])
    return out, parts


def post_until_ok(ip: str, deadline: float) -> float:
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            try:
                if client.post(f"http://{ip}:8080/", json={"x": 1, "y": 2}, timeout=1).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    raise TimeoutError(ip)


async def floor_samples(socket_path: str, image_ref: str, cgroup_root: str, log_root: Path, count: int
                        ) -> list[float]:
    async with CriRuntime(socket_path, timeout=60) as rt:
        image = await rt.pull_image(image_ref)  # already in containerd: not part of the floor
        out = []
        for i in range(count + 1):
            uid = str(uuid.uuid4())
            sandbox = SandboxConfig(pod_uid=uid, name=f"floor-{uid[:8]}", namespace="floor", hostname="floor",
                                    log_directory=str(log_root / uid), cgroup_parent=f"{cgroup_root}/pod{uid}")
            container = ContainerConfig(name="function", image=image, log_path="function/0.log",
                                        envs=(("MINIK8S_FUNCTION", "floor/add"), ("MINIK8S_WORKERS", "2")))
            (log_root / uid).mkdir(parents=True)
            t0 = time.monotonic()
            sid = await rt.run_sandbox(sandbox)
            ip = (await rt.sandbox_status(sid)).ip
            cid = await rt.create_container(sid, container, sandbox)
            await rt.start_container(cid)
            t1 = await asyncio.to_thread(post_until_ok, ip, t0 + LIMIT)
            if i:  # the first one warms caches
                out.append(t1 - t0)
            await rt.stop_sandbox(sid)
            await rt.remove_sandbox(sid)
            cgroups.remove_pod_cgroups(f"{cgroup_root}/pod{uid}")
        return out


def measure_floor(cluster: Cluster, ident: Identity, api: httpx.Client, image: str, count: int) -> list[float]:
    """The floor with the kubelet stopped (it would kill sandboxes the API does not know), then it comes back."""
    lay = cluster.layout
    cluster.supervisor.stop("kubelet")
    log_root = Path(tempfile.mkdtemp(prefix="floor-", dir=str(lay.kubelet)))
    try:
        return asyncio.run(floor_samples(str(lay.containerd_socket), image, ident.cgroup_root, log_root, count))
    finally:
        shutil.rmtree(log_root, ignore_errors=True)
        cluster.supervisor.start("kubelet")
        wait_until(lambda: node_ready(api), timeout=60, interval=0.2, what="the node Ready again")


# ---- 3. warm overhead ----------------------------------------------------------------------------------


def sequential(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client() as client:
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.post(url, json={"x": 1, "y": 2})
            out.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    return out


def throughput(url: str, seconds: float, threads: int = 8) -> float:
    done = [0] * threads
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                if client.post(url, json={"x": 1, "y": 2}).status_code == 200:
                    done[i] += 1

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return sum(done) / seconds


def bench_warm(api: httpx.Client, gw: str, n: int, seconds: float) -> dict[str, float]:
    create_function(api, "warm", ADD, minScale=1)
    wait_built(api, "warm")
    url = f"{gw}/function/{NS}/warm"
    with httpx.Client() as client:
        call_until_ok(client, url, {"x": 1, "y": 2}, time.monotonic() + LIMIT)

    def pod_ip() -> str | None:
        pods = [p for p in fn_pods(api, "warm") if p.get("status", {}).get("podIP")]
        return pods[0]["status"]["podIP"] if pods else None

    direct = f"http://{wait_until(pod_ip, timeout=LIMIT, interval=0.05, what='the warm pod IP')}:8080/"
    sequential(direct, 50)
    sequential(url, 50)  # warm both paths
    d, g = sequential(direct, n), sequential(url, n)
    td, tg = throughput(direct, seconds), throughput(url, seconds)
    return {"direct_p50": pct(d, 0.5), "gateway_p50": pct(g, 0.5), "direct_p95": pct(d, 0.95),
            "gateway_p95": pct(g, 0.95), "direct_rps": td, "gateway_rps": tg}


# ---- 4. scale-out reaction -----------------------------------------------------------------------------


def bench_step(api: httpx.Client, gw: str) -> tuple[float, float]:
    create_function(api, "step", SLOW, minScale=1, maxScale=4, targetConcurrency=1)
    wait_built(api, "step")
    url = f"{gw}/function/{NS}/step"
    with httpx.Client() as client:
        first = client.post(url, json={"ms": 0}, timeout=LIMIT).json()
    hosts: set[str] = {first}
    stop = threading.Event()
    lock = threading.Lock()
    t_write = t_second = 0.0

    def caller() -> None:
        nonlocal t_second
        with httpx.Client(timeout=LIMIT) as client:
            while not stop.is_set():
                r = client.post(url, json={"ms": 200})
                if r.status_code == 200:
                    with lock:
                        if r.json() not in hosts and not t_second:
                            t_second = time.monotonic()
                        hosts.add(r.json())

    t0 = time.monotonic()
    threads = [threading.Thread(target=caller, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: replicas(api, "step") > 1, timeout=LIMIT, interval=0.01, what="a scale write above 1")
        t_write = time.monotonic()
        wait_until(lambda: t_second, timeout=LIMIT, interval=0.01, what="a second pod answering")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=LIMIT)
    return t_write - t0, t_second - t0


# ---- main ----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10, help="samples of cold start, floor, deploy and build")
    parser.add_argument("--requests", type=int, default=300, help="sequential warm calls per path")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of each throughput run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_functions: needs root (a whole cluster: containerd, bridges, iptables)", file=sys.stderr)
        return 1
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    t_start = time.monotonic()
    cluster, ident = start_cluster()
    api = httpx.Client(base_url=ident.api_url, timeout=LIMIT)
    steps: PodSteps | None = None
    try:
        print(f"cluster in {cluster.layout.home} up in {time.monotonic() - t_start:.1f}s", flush=True)
        wait_until(lambda: node_ready(api), timeout=60, interval=0.2, what="the node Ready")
        api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        gw = gateway_url(ident)
        socket_path = str(cluster.layout.containerd_socket)

        build = bench_build(ident, args.count)
        deploy = bench_deploy(api, gw, max(3, args.count // 2))
        steps = PodSteps(ident.api_url)
        cold, parts = bench_cold(api, gw, socket_path, steps, args.count)
        image = function(api, "cold")["status"]["image"]
        floor = measure_floor(cluster, ident, api, image, args.count)
        warm = bench_warm(api, gw, args.requests, args.seconds)
        to_write, to_second = bench_step(api, gw)

        print()
        print(f"build + push (cached base)            {summary(build)}   goal p50 <= 100 ms")
        print(f"deploy: upload+create -> first 200    {summary(deploy)}   goal p50 <= 500 ms")
        print(f"CRI floor: sandbox+container+200      {summary(floor)}")
        print(f"cold start: request -> 200            {summary(cold)}")
        for part, values in parts.items():
            if values:
                print(f"   {part:34} {summary(values)}")
        ratio = pct(cold, 0.5) / pct(floor, 0.5)
        print(f"cold start p50 / floor p50 = {ratio:.2f}x   (goal <= 1.5x)")
        extra_ms = (warm["gateway_p50"] - warm["direct_p50"]) * 1000
        print(f"warm, sequential: direct p50 {warm['direct_p50'] * 1000:.2f} ms, gateway p50 "
              f"{warm['gateway_p50'] * 1000:.2f} ms  -> +{extra_ms:.2f} ms (goal <= +1 ms); p95 "
              f"{warm['direct_p95'] * 1000:.2f} / {warm['gateway_p95'] * 1000:.2f} ms")
        print(f"warm, 8 threads: direct {warm['direct_rps']:.0f}/s, gateway {warm['gateway_rps']:.0f}/s "
              f"-> {warm['gateway_rps'] / warm['direct_rps']:.2f}x (goal >= 0.8x)")
        print(f"scale-out step 1 -> 6 in flight: scale write after {to_write * 1000:.0f} ms, "
              f"second pod answering after {to_second * 1000:.0f} ms")
        return 0
    finally:
        if steps is not None:
            steps.close()
        api.close()
        problems = cluster.down()
        if problems:
            print(f"down: {problems}", file=sys.stderr)
        cluster.purge()
        shutil.rmtree(cluster.layout.home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
