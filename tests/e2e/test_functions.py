"""Functions on the real cluster: minictl uploads code, the gateway's builder pushes the image to the cluster
registry, the function controller keeps a Deployment and a Service, and HTTP triggers on the gateway scale
the function from zero and back.

Besides the API, the checks read the real parts: pod sandboxes in the cluster's containerd (``ctr``), the
registry's tags and manifests, and the gateway's process under supervisord (for kill -9). Traffic goes only
to the gateway on 127.0.0.1 and to the cluster's registry on 127.0.0.1. Every load loop is bounded in count
and time.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import io
import json
import os
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from minik8s.testing import wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "functions"
FN_LABEL = "minik8s.io/function"
MANIFEST_ACCEPT = ("application/vnd.oci.image.manifest.v1+json, "
                   "application/vnd.docker.distribution.manifest.v2+json")


def _traffic() -> Any:
    name = "minik8s_e2e_traffic"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("traffic.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


tr = _traffic()
pytestmark = [pytest.mark.timeout(300)]

FUNCTIONS = "/apis/minik8s.io/v1/namespaces/{ns}/functions"
SLOW = """\
import socket
import time


def run(ms=0):
    time.sleep(ms / 1000)
    return socket.gethostname()
"""


@pytest.fixture()
def fn_ns(node_cluster: Any) -> Iterator[str]:
    ns = tr.create_namespace(node_cluster, "fn")
    yield ns
    tr.delete_namespace(node_cluster, ns, timeout=180)


# ---- helpers ---------------------------------------------------------------------------------------------------


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def create(nc: Any, ns: str, name: str, *args: str, check: bool = True) -> Any:
    return nc.minictl("function", "create", name, "-n", ns, *args, check=check, timeout=180)


def function(nc: Any, ns: str, name: str) -> dict[str, Any] | None:
    return nc.api.get_or_none(f"{FUNCTIONS.format(ns=ns)}/{name}")


def url_of(nc: Any, ns: str, name: str) -> str:
    fn = function(nc, ns, name)
    assert fn is not None, f"function {ns}/{name} does not exist"
    url = (fn.get("status") or {}).get("url")
    assert url, f"function {ns}/{name} has no status.url: {fn.get('status')}"
    return str(url)


def call(url: str, body: dict[str, Any] | None = None, timeout: float = 90) -> httpx.Response:
    return httpx.post(url, json=body or {}, timeout=timeout)


def fn_pods(nc: Any, ns: str, name: str) -> list[dict[str, Any]]:
    return [p for p in tr.pods(nc, ns, f"{FN_LABEL}={name}") if tr.is_live(p)]


def deployment(nc: Any, ns: str, name: str) -> dict[str, Any] | None:
    return nc.api.get_or_none(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")


def activations(nc: Any, ns: str, name: str) -> list[dict[str, Any]]:
    got = nc.api.get(f"/apis/minik8s.io/v1/namespaces/{ns}/activations?labelSelector={FN_LABEL}%3D{name}")
    return list(got["items"])


def registry_tags(nc: Any, repo: str) -> list[str]:
    r = httpx.get(f"{nc.ident.registry_url}/v2/{repo}/tags/list", timeout=10)
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    return list(r.json().get("tags") or [])


def image_layers(nc: Any, image: str) -> list[str]:
    """The layer digests of ``HOST:PORT/REPO@sha256:…`` read from the cluster registry."""
    ref = image.split("/", 1)[1]
    repo, digest = ref.split("@", 1)
    r = httpx.get(f"{nc.ident.registry_url}/v2/{repo}/manifests/{digest}", headers={"Accept": MANIFEST_ACCEPT},
                  timeout=10)
    assert r.status_code == 200, r.text
    return [layer["digest"] for layer in r.json()["layers"]]


def one_line_error(res: Any) -> str:
    assert res.returncode != 0, f"expected a failure, got: {res.stdout}"
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines()
             if line.strip() and not line.startswith(("uploading", "building"))]
    assert lines, res.stderr
    return lines[-1]


class Calls:
    """A bounded load loop: ``threads`` threads POST ``body`` to ``url`` back to back until stopped, at most
    ``max_seconds`` and ``max_requests`` in all. Records (status, json body or text, error) of each call."""

    def __init__(self, url: str, body: dict[str, Any], *, threads: int = 4, max_seconds: float = 120,
                 max_requests: int = 20000, timeout: float = 30) -> None:
        self.url, self.body, self.timeout = url, body, timeout
        self.max_seconds, self.max_requests = max_seconds, max_requests
        self.results: list[tuple[int, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Calls:
        self._deadline = time.monotonic() + self.max_seconds
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                with self._lock:
                    if len(self.results) + len(self.errors) >= self.max_requests:
                        return
                try:
                    r = client.post(self.url, json=self.body)
                    value = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
                    with self._lock:
                        self.results.append((r.status_code, value))
                except Exception as exc:
                    with self._lock:
                        self.errors.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
            assert not t.is_alive(), "the load loop did not end"

    def failures(self) -> list[Any]:
        with self._lock:
            return [*self.errors, *[(s, v) for s, v in self.results if s != 200]]

    def values(self) -> list[Any]:
        with self._lock:
            return [v for s, v in self.results if s == 200]


# ---- create, call, list ------------------------------------------------------------------------------------------


def test_create_call_and_list_the_adder(node_cluster: Any, fn_ns: str) -> None:
    nc, ns = node_cluster, fn_ns
    res = create(nc, ns, "add", "--file", str(EXAMPLES / "add.py"))
    assert "curl -X POST" in res.stdout, res.stdout
    url = url_of(nc, ns, "add")
    assert url.endswith(f"/function/{ns}/add")
    r = call(url, {"x": 3, "y": 5})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == 8
    assert r.headers.get("x-minik8s-activation-id")
    assert call(url, {"x": 10, "y": -4}).json() == 6
    assert call(url, {"x": "mini", "y": "k8s"}).json() == "minik8s"
    bad = call(url, {"x": 1})
    assert bad.status_code == 400 and "argument" in bad.json()["error"], bad.text
    # Both CLIs list it.
    assert "add" in nc.minictl("get", "functions", "-n", ns).stdout
    assert "add" in nc.kubectl("get", "functions", "-n", ns).stdout
    out = nc.minictl("function", "invoke", "add", "-n", ns, "-d", '{"x": 40, "y": 2}').stdout
    assert json.loads(out) == 42
    # Every call left an activation record (written in batches: wait for the flush).
    wait_until(lambda: len(activations(nc, ns, "add")) >= 5, timeout=30, interval=0.2,
               what="activation records of add")
    listed = nc.minictl("function", "activations", "add", "-n", ns).stdout
    assert "success" in listed, listed


# ---- cold start ----------------------------------------------------------------------------------------------


def test_twenty_concurrent_first_requests_cold_start_with_one_scale_write(node_cluster: Any, fn_ns: str,
                                                                          tmp_path: Path) -> None:
    nc, ns = node_cluster, fn_ns
    create(nc, ns, "cold", "--file", str(write(tmp_path, "cold.py", SLOW)), "--max-scale", "3")
    url = url_of(nc, ns, "cold")
    dep = wait_until(lambda: deployment(nc, ns, "cold"), timeout=30, interval=0.1, what="the Deployment")
    assert dep["spec"]["replicas"] == 0
    assert tr.ns_sandboxes(nc, ns) == {}, "a sandbox of the function runs before any request"
    with tr.Watch(nc, f"/apis/apps/v1/namespaces/{ns}/deployments") as watch:
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: call(url, {"ms": 50}, timeout=120), range(20)))
        bad = [(r.status_code, r.text) for r in answers if r.status_code != 200]
        assert not bad, bad
        assert all(isinstance(r.json(), str) and r.json() for r in answers)
        scales = [obj["spec"]["replicas"] for _, typ, obj in list(watch.events) if typ == "MODIFIED"]
    ups = [(a, b) for a, b in zip([0, *scales], scales, strict=False) if a == 0 and b > 0]
    assert len(ups) == 1, f"scale writes seen on the Deployment: {scales}"
    assert tr.ns_sandboxes(nc, ns), "no sandbox runs in containerd after the cold start"


# ---- scale out and back to zero ----------------------------------------------------------------------------


def test_load_scales_out_and_idle_returns_to_zero_pods_and_sandboxes(node_cluster: Any, fn_ns: str,
                                                                      tmp_path: Path) -> None:
    nc, ns = node_cluster, fn_ns
    create(nc, ns, "busy", "--file", str(write(tmp_path, "busy.py", SLOW)), "--target-concurrency", "1",
           "--max-scale", "4", "--idle-timeout", "4")
    url = url_of(nc, ns, "busy")
    served: set[str] = set()
    with Calls(url, {"ms": 150}, threads=6, max_seconds=90) as load:
        def spread() -> bool:
            served.update(v for v in load.values() if isinstance(v, str))
            dep = deployment(nc, ns, "busy") or {}
            return len(served) >= 2 and int(dep.get("spec", {}).get("replicas") or 0) > 1

        wait_until(spread, timeout=80, interval=0.5, what="the function to scale above 1 with several pods serving")
    assert not load.failures(), load.failures()[:5]
    assert len(served) >= 2, served
    # Idle: back to zero pods and zero sandboxes in containerd.
    wait_until(lambda: not fn_pods(nc, ns, "busy") and not tr.ns_sandboxes(nc, ns), timeout=120, interval=0.5,
               what="zero pods and zero sandboxes after the idle window")
    assert (deployment(nc, ns, "busy") or {})["spec"]["replicas"] == 0


# ---- update and delete -----------------------------------------------------------------------------------------


def test_update_under_load_fails_nothing_and_delete_leaves_nothing(node_cluster: Any, fn_ns: str,
                                                                   tmp_path: Path) -> None:
    nc, ns = node_cluster, fn_ns
    v1 = write(tmp_path, "v1.py", "def run():\n    return 'v1'\n")
    v2 = write(tmp_path, "v2.py", "def run():\n    return 'v2'\n")
    create(nc, ns, "ver", "--file", str(v1), "--min-scale", "1")
    url = url_of(nc, ns, "ver")
    assert call(url).json() == "v1"
    repo = f"minik8s-functions/{ns}/ver"
    with Calls(url, {}, threads=2, max_seconds=120, timeout=30) as load:
        wait_until(lambda: len(load.values()) >= 10, timeout=30, interval=0.1, what="calls before the update")
        nc.minictl("function", "update", "ver", "-n", ns, "--file", str(v2), timeout=180)

        def switched() -> bool:
            tail = load.values()[-20:]
            return len(tail) == 20 and all(v == "v2" for v in tail)

        wait_until(switched, timeout=90, interval=0.2, what="every answer to be v2")
    assert not load.failures(), load.failures()[:5]
    assert set(load.values()) == {"v1", "v2"}
    assert len(registry_tags(nc, repo)) == 2
    # Delete: pods, Deployment, Service, the function's images; the sandboxes in containerd.
    nc.minictl("function", "delete", "ver", "-n", ns)
    wait_until(lambda: function(nc, ns, "ver") is None and deployment(nc, ns, "ver") is None
               and nc.api.get_or_none(f"/api/v1/namespaces/{ns}/services/ver") is None
               and not fn_pods(nc, ns, "ver"), timeout=90, interval=0.3, what="the function and its objects gone")
    wait_until(lambda: not tr.ns_sandboxes(nc, ns), timeout=60, interval=0.3, what="no sandbox left")
    assert registry_tags(nc, repo) == []


# ---- dependencies ------------------------------------------------------------------------------------------------


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


def test_zip_function_imports_a_dependency_and_shares_its_layer(node_cluster: Any, fn_ns: str,
                                                                tmp_path: Path) -> None:
    nc, ns = node_cluster, fn_ns
    main = (EXAMPLES / "hello-deps" / "main.py").read_text()
    reqs = (EXAMPLES / "hello-deps" / "requirements.txt").read_text()
    (tmp_path / "deps.zip").write_bytes(_zip({"main.py": main, "requirements.txt": reqs}))
    (tmp_path / "deps2.zip").write_bytes(_zip({"main.py": main + "\n# another function\n",
                                                "requirements.txt": reqs}))
    (tmp_path / "nodeps.zip").write_bytes(_zip({"main.py": main}))
    create(nc, ns, "deps", "--zip", str(tmp_path / "deps.zip"))
    r = call(url_of(nc, ns, "deps"), {"n": 1234567})
    assert r.status_code == 200, r.text
    assert "1.2 million" in json.dumps(r.json()), r.text
    # Negative control: the same code without requirements.txt fails with a clear import error.
    create(nc, ns, "nodeps", "--zip", str(tmp_path / "nodeps.zip"))
    r = call(url_of(nc, ns, "nodeps"), {"n": 1})
    assert r.status_code == 500, r.text
    assert "No module named 'humanize'" in r.json()["error"], r.text
    # A second function with the same requirements reuses the same dependency layer.
    create(nc, ns, "deps2", "--zip", str(tmp_path / "deps2.zip"))
    first = image_layers(nc, function(nc, ns, "deps")["status"]["image"])  # type: ignore[index]
    second = image_layers(nc, function(nc, ns, "deps2")["status"]["image"])  # type: ignore[index]
    assert first[-2] == second[-2], (first, second)
    assert first[-1] != second[-1]
    base = image_layers(nc, function(nc, ns, "nodeps")["status"]["image"])  # type: ignore[index]
    assert len(base) == len(first) - 1 and first[-2] not in base


# ---- bad input and failing functions -----------------------------------------------------------------------


def test_bad_uploads_are_refused_with_one_line_and_nothing_stored(node_cluster: Any, fn_ns: str,
                                                                  tmp_path: Path) -> None:
    nc, ns = node_cluster, fn_ns
    (tmp_path / "slip.zip").write_bytes(_zip({"main.py": "def run():\n    return 1\n", "../../evil.py": "x = 1\n"}))
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("main.py", "def run():\n    return 1\n")
        z.writestr("blob.bin", os.urandom(1024) * (100 * 1024))  # 100 MB
    cases = {
        "slip": (["--zip", str(tmp_path / "slip.zip")], ".."),
        "big": (["--zip", str(big)], "large"),
        "syntax": (["--file", str(write(tmp_path, "syntax.py", "def run(:\n    return 1\n"))], "line 1"),
        "noentry": (["--file", str(write(tmp_path, "noentry.py", "def main():\n    return 1\n"))], "run"),
    }
    before = set(nc.catalog())
    for name, (args, word) in cases.items():
        line = one_line_error(create(nc, ns, name, *args, check=False))
        assert word in line, (name, line)
        assert function(nc, ns, name) is None, f"{name}: a Function was stored"
    assert set(nc.catalog()) == before, "a bad upload left a repository in the registry"
    assert not (Path("/") / "evil.py").exists()


def test_an_exception_is_a_500_with_a_traceback_and_a_timeout_is_a_504_on_a_usable_pod(node_cluster: Any,
                                                                                       fn_ns: str,
                                                                                       tmp_path: Path) -> None:
    nc, ns = node_cluster, fn_ns
    code = SLOW + "\n\ndef boom():\n    return 1 / 0\n"
    create(nc, ns, "slow", "--file", str(write(tmp_path, "slow.py", code)), "--timeout", "2")
    url = url_of(nc, ns, "slow")
    host = call(url, {"ms": 0}).json()
    r = call(url, {"ms": 10_000})
    assert r.status_code == 504, r.text
    assert "timed out" in r.json()["error"]
    again = call(url, {"ms": 0})
    assert again.status_code == 200 and again.json() == host, "the pod that timed out did not answer the next call"
    create(nc, ns, "boom", "--file", str(write(tmp_path, "boom.py", code)), "--entry-point", "boom")
    r = call(url_of(nc, ns, "boom"))
    assert r.status_code == 500, r.text
    body = r.json()
    assert body["type"] == "ZeroDivisionError" and "Traceback" in body["traceback"], body
    act_id = r.headers["x-minik8s-activation-id"]

    def record() -> dict[str, Any] | None:
        return nc.api.get_or_none(f"/apis/minik8s.io/v1/namespaces/{ns}/activations/{act_id}")

    act = wait_until(record, timeout=30, interval=0.2, what="the activation record of the failed call")
    assert act["spec"]["status"] == "error" and act["spec"]["statusCode"] == 500
    assert "ZeroDivisionError" in act["spec"]["result"]
    logs = nc.minictl("function", "logs", act_id, "-n", ns).stdout
    assert "ZeroDivisionError" in logs


# ---- the gateway killed ---------------------------------------------------------------------------------------


def test_kill_9_of_the_gateway_keeps_scale_and_activations(node_cluster: Any, fn_ns: str, tmp_path: Path) -> None:
    nc, ns = node_cluster, fn_ns
    create(nc, ns, "k9", "--file", str(write(tmp_path, "k9.py", SLOW)), "--idle-timeout", "120")
    url = url_of(nc, ns, "k9")
    ids = []
    for _ in range(10):
        r = call(url, {"ms": 0})
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-minik8s-activation-id"])
    # Past the loss window (the flush interval), every record is in the API.
    wait_until(lambda: {a["metadata"]["name"] for a in activations(nc, ns, "k9")} >= set(ids), timeout=30,
               interval=0.2, what="the activation records before the kill")
    replicas = deployment(nc, ns, "k9")["spec"]["replicas"]  # type: ignore[index]
    assert replicas >= 1
    with Calls(url, {"ms": 20}, threads=3, max_seconds=90, timeout=20) as load:
        wait_until(lambda: len(load.values()) >= 10, timeout=30, interval=0.1, what="calls before the kill")
        pid = int(tr.program(nc, "gateway")["pid"])
        os.kill(pid, signal.SIGKILL)
        tr.wait_restarted(nc, "gateway", pid)
        mark = len(load.values())
        wait_until(lambda: len(load.values()) >= mark + 20, timeout=60, interval=0.1,
                   what="the restarted gateway to serve again")
    assert call(url, {"ms": 0}).status_code == 200
    # Scale state survived: the restarted autoscaler did not drop the function to zero.
    assert deployment(nc, ns, "k9")["spec"]["replicas"] >= 1  # type: ignore[index]
    names = {a["metadata"]["name"] for a in activations(nc, ns, "k9")}
    assert set(ids) <= names
    print(f"\ncalls through the gateway kill: {len(load.values())} ok, {len(load.failures())} failed "
          f"(in flight at the kill)")

