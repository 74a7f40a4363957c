"""Shared pieces of the Services and workloads end-to-end tests (test_services.py, test_workloads.py).

- the pod template: busybox httpd on port 8080 answering ``"<pod name> <version>"``, ready while the file
  ``/tmp/ready`` exists (an exec readiness probe), with a preStop sleep of 2 s;
- plain requests with a new TCP connection each and no retries (``get_once``), a bounded load loop in a
  thread (``Load``), requests from inside a pod (busybox ``wget`` under ``timeout``, through ``minictl exec``);
- a watch on a collection from a list's resourceVersion (``Watch``), replayed to sample pod counts;
- the real parts: the cluster's NAT rules (``iptables-save -t nat``, lines with the cluster's chain
  prefix), the pod sandboxes running in containerd (``ctr``), the programs under supervisord.

Loaded by the test modules under a name of their own (``minik8s_e2e_traffic``), as helpers.py is.
"""

from __future__ import annotations

import collections
import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from minik8s.cluster.supervisor import Supervisor
from minik8s.testing import wait_until

UID_LABEL = "io.kubernetes.pod.uid"
NS_LABEL = "io.kubernetes.pod.namespace"
PORT = 8080
# PID 1 is a shell that ends at once on SIGTERM. httpd without -f puts itself in the background once it
# listens, so /tmp/ready (the readiness probe's file) appears only when the server answers.
WEB_SCRIPT = ("trap 'exit 0' TERM; mkdir -p /www; echo \"$POD_NAME $VERSION\" > /www/index.html; "
              f"httpd -p {PORT} -h /www; touch /tmp/ready; sleep 1000000 & wait")


def web_container(version: str = "v1", image: str = "busybox") -> dict[str, Any]:
    return {
        "name": "web", "image": image, "command": ["sh", "-c", WEB_SCRIPT],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "VERSION", "value": version}],
        "ports": [{"name": "http", "containerPort": PORT}],
        "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1, "failureThreshold": 1},
        # A pod being deleted leaves Endpoints (it is terminating) and then kubeproxy's rules; the preStop
        # sleep keeps httpd serving for those 2 s, so no new connection is DNATed to a pod that already stopped.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "2"]}}},
    }


def web_pod_spec(version: str = "v1", image: str = "busybox") -> dict[str, Any]:
    return {"terminationGracePeriodSeconds": 10, "containers": [web_container(version, image)]}


def web_pod(name: str, labels: dict[str, str], version: str = "v1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": web_pod_spec(version)}


def client_pod(name: str = "client") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"role": "client"}},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [
                {"name": "main", "image": "busybox",
                 "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait"]}]}}


def service(name: str, selector: dict[str, str], *, type_: str = "ClusterIP", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": type_, "selector": selector,
                     "ports": [{"name": "http", "port": 80, "targetPort": PORT, "protocol": "TCP"}], **spec}}


def deployment(name: str, replicas: int, *, max_surge: int = 1, max_unavailable: int = 1, version: str = "v1",
               **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable}},
                     "template": {"metadata": {"labels": labels}, "spec": web_pod_spec(version)}, **spec}}


def replicaset(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": web_pod_spec()}}}


# ---- pods ----------------------------------------------------------------------------------------------------


def is_ready(pod: dict[str, Any]) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def is_live(pod: dict[str, Any]) -> bool:
    """Not being deleted and not finished: what a controller counts as one of its replicas."""
    return (not pod["metadata"].get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))


def pod_ip(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("podIP") or "")


def controller_of(pod: dict[str, Any]) -> dict[str, Any] | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def pods(nc: Any, ns: str, selector: str = "") -> list[dict[str, Any]]:
    params = {"labelSelector": selector} if selector else {}
    r = nc.api.http.get(f"/api/v1/namespaces/{ns}/pods", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def live_ready(nc: Any, ns: str, selector: str, n: int) -> list[dict[str, Any]] | None:
    """The live pods of ``selector`` when there are exactly ``n``, all ready, and no terminating ones left."""
    items = pods(nc, ns, selector)
    if len(items) == n and all(is_live(p) and is_ready(p) and pod_ip(p) for p in items):
        return items
    return None


def wait_live_ready(nc: Any, ns: str, selector: str, n: int, timeout: float = 90) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        return live_ready(nc, ns, selector, n)

    try:
        return wait_until(check, timeout=timeout, interval=0.2,  # type: ignore[no-any-return]
                          what=f"exactly {n} ready pods {selector} in {ns} (no terminating ones)")
    except TimeoutError as exc:
        now = [(p["metadata"]["name"], is_live(p), is_ready(p), (p.get("status") or {}).get("phase"))
               for p in pods(nc, ns, selector)]
        raise AssertionError(f"{exc}; pods (name, live, ready, phase): {now}") from None


def merge_patch(nc: Any, path: str, patch: dict[str, Any]) -> dict[str, Any]:
    r = nc.api.http.patch(path, content=json.dumps(patch), headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, f"PATCH {path}: {r.status_code} {r.text}"
    return r.json()  # type: ignore[no-any-return]


# ---- namespaces ----------------------------------------------------------------------------------------------


def create_namespace(nc: Any, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    nc.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def delete_namespace(nc: Any, ns: str, timeout: float = 120) -> None:
    """Delete the namespace and wait until it is gone (its controllers, pods and services with it)."""
    nc.api.delete(f"/api/v1/namespaces/{ns}")
    wait_until(lambda: nc.api.get_or_none(f"/api/v1/namespaces/{ns}") is None, timeout=timeout, interval=0.5,
               what=f"namespace {ns} to be removed")


@pytest.fixture()
def wl_ns(node_cluster: Any) -> Iterator[str]:
    """A namespace of this test's own, deleted (and waited for) afterwards. Deleting the namespace, not its
    pods one by one: a ReplicaSet would replace those."""
    ns = create_namespace(node_cluster, "wl")
    yield ns
    delete_namespace(node_cluster, ns)


# ---- the cluster's programs ----------------------------------------------------------------------------------


def program(nc: Any, word: str) -> dict[str, Any]:
    """supervisord's info on the cluster program whose name contains ``word`` (controller / proxy)."""
    infos = Supervisor(nc.layout.supervisor_socket).processes()
    found = [p for p in infos if word in p["name"]]
    assert found, f"no program with {word!r} under the cluster's supervisord: {[p['name'] for p in infos]}"
    return dict(found[0])


def require_running(nc: Any, *words: str) -> None:
    for word in words:
        info = program(nc, word)
        assert info["statename"] == "RUNNING", info


def wait_restarted(nc: Any, word: str, old_pid: int, timeout: float = 60) -> int:
    """Until supervisord runs the program again with a new pid (after it died); returns that pid."""
    def back() -> int:
        info = program(nc, word)
        pid = int(info["pid"])
        return pid if info["statename"] == "RUNNING" and pid not in (0, old_pid) else 0

    return int(wait_until(back, timeout=timeout, interval=0.1, what=f"supervisord to restart the {word} program"))


# ---- the real parts: iptables and containerd -----------------------------------------------------------------


def nat_rules(nc: Any) -> list[str]:
    """The NAT table's lines that belong to this cluster (they name a chain with its prefix)."""
    out = nc.run("iptables-save", "-t", "nat").stdout
    return [line for line in out.splitlines() if nc.ident.chain_prefix in line]


def dnat_targets(rules: list[str]) -> set[str]:
    """``ip:port`` of every DNAT among ``rules``."""
    out = set()
    for line in rules:
        if "--to-destination" in line:
            out.add(line.split("--to-destination", 1)[1].split()[0])
    return out


def programmed(nc: Any, cluster_ip: str, backends: set[str]) -> list[str] | None:
    """The cluster's rules when they match the ClusterIP and DNAT to every ``ip:PORT`` of ``backends``."""
    rules = nat_rules(nc)
    if not any(f"-d {cluster_ip}/32" in line for line in rules):
        return None
    return rules if {f"{ip}:{PORT}" for ip in backends} <= dnat_targets(rules) else None


def wait_rules(nc: Any, what: str, check: Callable[[list[str]], bool], timeout: float = 30) -> list[str]:
    def ok() -> list[str] | None:
        rules = nat_rules(nc)
        return rules if check(rules) else None

    try:
        return wait_until(ok, timeout=timeout, interval=0.1, what=what)  # type: ignore[no-any-return]
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; the cluster's NAT rules now:\n" + "\n".join(nat_rules(nc))) from None


def ns_sandboxes(nc: Any, ns: str) -> dict[str, str]:
    """Pod sandboxes of namespace ``ns`` with a running task in the cluster's containerd: id → pod uid."""
    ids = nc.ctr("containers", "ls", "-q", f'labels."{NS_LABEL}"=={ns},labels."io.cri-containerd.kind"==sandbox')
    tasks = nc.tasks()
    out = {}
    for cid in ids.split():
        if cid in tasks:
            labels = json.loads(nc.ctr("containers", "info", cid)).get("Labels") or {}
            out[cid] = str(labels.get(UID_LABEL))
    return out


def ns_containers(nc: Any, ns: str) -> set[str]:
    """Every container (sandboxes included) of namespace ``ns`` in the cluster's containerd."""
    return set(nc.ctr("containers", "ls", "-q", f'labels."{NS_LABEL}"=={ns}').split())


def assert_runtime_matches(nc: Any, ns: str, api_pods: list[dict[str, Any]]) -> None:
    """containerd runs exactly one sandbox for each of ``api_pods`` in ``ns``, and none for other pods."""
    def same() -> bool:
        return sorted(ns_sandboxes(nc, ns).values()) == sorted(p["metadata"]["uid"] for p in api_pods)

    try:
        wait_until(same, timeout=30, interval=0.5, what=f"containerd's sandboxes in {ns} to match the API's pods")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: containerd {sorted(ns_sandboxes(nc, ns).values())} vs API "
                             f"{sorted(p['metadata']['uid'] for p in api_pods)}") from None


# ---- Endpoints -----------------------------------------------------------------------------------------------


def endpoint_ips(nc: Any, ns: str, name: str) -> tuple[set[str], set[str]]:
    """(ready addresses, notReadyAddresses) of the Service's Endpoints."""
    ep = nc.api.get_or_none(f"/api/v1/namespaces/{ns}/endpoints/{name}") or {}
    ready: set[str] = set()
    not_ready: set[str] = set()
    for subset in ep.get("subsets") or []:
        ready |= {a["ip"] for a in subset.get("addresses") or []}
        not_ready |= {a["ip"] for a in subset.get("notReadyAddresses") or []}
    return ready, not_ready


def wait_endpoints(nc: Any, ns: str, name: str, ready: set[str], not_ready: set[str] | None = None,
                   timeout: float = 30) -> None:
    def ok() -> bool:
        r, nr = endpoint_ips(nc, ns, name)
        return r == ready and (not_ready is None or nr == not_ready)

    try:
        wait_until(ok, timeout=timeout, interval=0.1, what=f"Endpoints {ns}/{name} ready={sorted(ready)}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; now {endpoint_ips(nc, ns, name)}") from None


def cluster_ip(nc: Any, ns: str, name: str) -> str:
    svc = nc.api.get(f"/api/v1/namespaces/{ns}/services/{name}")
    ip = svc["spec"].get("clusterIP")
    assert ip and ip != "None", svc["spec"]
    return str(ip)


# ---- requests ------------------------------------------------------------------------------------------------


def get_once(host: str, port: int = 80, timeout: float = 2.0) -> str:
    """One GET / on a new TCP connection, no retry: the body (``"<pod> <version>"``), or an exception."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        r = conn.getresponse()
        body = r.read().decode(errors="replace").strip()
        if r.status != 200:
            raise OSError(f"HTTP {r.status}: {body[:100]}")
        return body
    finally:
        conn.close()


@dataclass
class Tally:
    """Answers by pod name, answers by version, and the failures (time, error) of a batch of requests."""

    by_pod: collections.Counter[str] = field(default_factory=collections.Counter)
    by_version: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[tuple[float, str]] = field(default_factory=list)
    answers: list[tuple[float, str]] = field(default_factory=list)

    def add(self, t: float, body: str | None, error: str = "") -> None:
        if body is None:
            self.failures.append((t, error))
            return
        name, _, version = body.partition(" ")
        self.by_pod[name] += 1
        self.by_version[version] += 1
        self.answers.append((t, body))

    @property
    def total(self) -> int:
        return len(self.answers) + len(self.failures)


def requests_from_host(host: str, port: int, n: int, timeout: float = 2.0) -> Tally:
    """``n`` requests in a row, a new connection each, no retries."""
    tally = Tally()
    for _ in range(n):
        t = time.monotonic()
        try:
            tally.add(t, get_once(host, port, timeout))
        except Exception as exc:
            tally.add(t, None, repr(exc))
    return tally


def requests_from_pod(nc: Any, ns: str, pod: str, url: str, n: int, per_request: int = 2) -> Tally:
    """``n`` requests from inside ``pod`` with busybox wget (a new connection each, no retries), each under
    ``timeout`` (busybox wget -T crashes). Prints one line per request: the body, or FAIL."""
    script = (f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); "
              f"timeout {per_request} wget -q -O - {url} 2>/dev/null || echo FAIL; done")
    out = nc.minictl("exec", "-n", ns, pod, "--timeout", str(n * per_request + 30), "--", "sh", "-c", script,
                     timeout=n * per_request + 60).stdout
    tally = Tally()
    for line in out.splitlines():
        line = line.strip()
        if line:
            tally.add(0.0, None if line == "FAIL" else line, "wget failed")
    assert tally.total == n, f"{tally.total} result lines for {n} requests:\n{out[-2000:]}"
    return tally


class Load:
    """A bounded load loop in a thread: GET / on ``host:port`` at ``rate`` per second, a new connection per
    request, no retries, at most ``max_requests`` and ``max_seconds``. ``stop()`` ends it and returns the tally."""

    def __init__(self, host: str, port: int = 80, *, rate: float = 25, max_requests: int = 6000,
                 max_seconds: float = 240, timeout: float = 2.0) -> None:
        self.host, self.port, self.rate, self.timeout = host, port, rate, timeout
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.tally = Tally()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"load {host}:{port}")
        self.started = self.ended = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        deadline = self.started + self.max_seconds
        for i in range(self.max_requests):
            due = self.started + i / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())) or time.monotonic() >= deadline:
                break
            t = time.monotonic()
            try:
                self.tally.add(t, get_once(self.host, self.port, self.timeout))
            except Exception as exc:
                self.tally.add(t, None, repr(exc))
        self.ended = time.monotonic()

    def stop(self) -> Tally:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)
        assert not self._thread.is_alive(), "the load loop did not end"
        return self.tally

    def rate_achieved(self) -> float:
        return self.tally.total / max(1e-6, (self.ended or time.monotonic()) - self.started)

    def report(self) -> str:
        t = self.tally
        return (f"{t.total} requests in {(self.ended or time.monotonic()) - self.started:.1f}s "
                f"({self.rate_achieved():.1f}/s), {len(t.failures)} failed {t.failures[:5]}, by pod {dict(t.by_pod)}")


# ---- watches -------------------------------------------------------------------------------------------------


class Watch:
    """A watch on a collection (``path`` with ``params``) from a list's resourceVersion, read in a thread.

    ``initial`` is the list's items; ``events`` holds (monotonic time, type, object) as they arrive.
    ``replay(fn)`` applies the events in order to the initial state (name → object) and returns
    ``fn(state)`` before any event and after each one: what a sampler would have seen."""

    def __init__(self, nc: Any, path: str, params: dict[str, str] | None = None, timeout_s: int = 280) -> None:
        self.path, self.params = path, dict(params or {})
        listing = nc.api.get(path + ("?" + "&".join(f"{k}={v}" for k, v in self.params.items())
                                     if self.params else ""))
        self.initial = {o["metadata"]["name"]: o for o in listing["items"]}
        self.rv = listing["metadata"]["resourceVersion"]
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.errors: list[str] = []
        self._client = httpx.Client(base_url=nc.ident.api_url, timeout=httpx.Timeout(10, read=None))
        self._timeout_s = timeout_s
        self._closing = False
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"watch {path}")
        self._thread.start()
        assert self._open.wait(10), f"the watch on {path} did not open: {self.errors}"

    def _run(self) -> None:
        params = {**self.params, "watch": "true", "resourceVersion": self.rv, "timeoutSeconds": str(self._timeout_s),
                  "allowWatchBookmarks": "false"}
        try:
            with self._client.stream("GET", self.path, params=params) as r:
                if r.status_code != 200:
                    self.errors.append(f"watch {self.path}: HTTP {r.status_code}")
                    self._open.set()
                    return
                self._open.set()
                for line in r.iter_lines():
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    if ev.get("type") == "ERROR":
                        self.errors.append(json.dumps(ev.get("object"))[:300])
                        continue
                    self.events.append((time.monotonic(), str(ev.get("type")), ev.get("object") or {}))
        except Exception as exc:
            if not self._closing:
                self.errors.append(repr(exc))
        finally:
            self._open.set()

    def close(self) -> None:
        self._closing = True
        self._client.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def of_type(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        return [obj for t, typ, obj in list(self.events) if typ == kind and t >= since]

    def replay(self, fn: Callable[[dict[str, dict[str, Any]]], Any]) -> list[tuple[float, Any]]:
        state = dict(self.initial)
        out = [(0.0, fn(state))]
        for t, typ, obj in list(self.events):
            name = obj["metadata"]["name"]
            if typ == "DELETED":
                state.pop(name, None)
            elif typ in ("ADDED", "MODIFIED"):
                state[name] = obj
            out.append((t, fn(state)))
        return out


def pod_counts(state: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(live pods, live and ready pods) of a replayed pod watch."""
    live = [p for p in state.values() if is_live(p)]
    return len(live), sum(1 for p in live if is_ready(p))
