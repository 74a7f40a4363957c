"""ReplicaSets, Deployments and garbage collection on the real node (minik8s-controller-manager), with traffic
through kubeproxy's rules.

Pods are busybox httpd answering ``"<pod name> <version>"`` (traffic.py), ready while ``/tmp/ready`` exists,
with a preStop sleep of 2 s so Endpoints and the NAT rules drop a pod before it stops serving. Counts come from
watches opened at a list's resourceVersion (every pod creation is an ADDED event; replaying the events gives
what a sampler saw at every change); the runtime is checked with ``ctr`` (one running sandbox per API pod).
Load loops are bounded in count and time, use a new connection per request and never retry.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from minik8s.testing import wait_until


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
wl_ns = tr.wl_ns  # fixture

pytestmark = [pytest.mark.timeout(300)]

REVISION = "deployment.kubernetes.io/revision"


def rs_path(ns: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/replicasets" + (f"/{name}" if name else "")


def deploy_path(ns: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments" + (f"/{name}" if name else "")


def pod_watch(nc: Any, ns: str, selector: str) -> Any:
    return tr.Watch(nc, f"/api/v1/namespaces/{ns}/pods", {"labelSelector": selector})


def stays(predicate: Any, seconds: float, what: str) -> None:
    """``predicate`` holds on every poll for ``seconds`` (a bounded poll, not a sleep)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} no longer holds"
        time.sleep(0.2)


def owned_by(pod: dict[str, Any], owner: dict[str, Any]) -> bool:
    ref = tr.controller_of(pod)
    return bool(ref) and ref["uid"] == owner["metadata"]["uid"] and ref["kind"] == owner["kind"]


# ---- ReplicaSet ----------------------------------------------------------------------------------------------


def make_rs(nc: Any, ns: str, name: str, replicas: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    tr.require_running(nc, "controller")
    rs = nc.api.create(rs_path(ns), tr.replicaset(name, replicas))
    live = tr.wait_live_ready(nc, ns, f"app={name}", replicas)
    assert all(owned_by(p, rs) for p in live), [p["metadata"].get("ownerReferences") for p in live]
    assert all(r.get("blockOwnerDeletion") for p in live for r in p["metadata"]["ownerReferences"])
    return rs, live


def wait_rs_status(nc: Any, ns: str, name: str, replicas: int, timeout: float = 30) -> dict[str, Any]:
    def ok() -> dict[str, Any] | None:
        rs = nc.api.get(rs_path(ns, name))
        st = rs.get("status") or {}
        good = (st.get("observedGeneration", 0) >= rs["metadata"]["generation"]
                and (st.get("replicas"), st.get("readyReplicas"), st.get("availableReplicas")) == (replicas,) * 3)
        return rs if good else None

    return wait_until(ok, timeout=timeout, interval=0.2, what=f"ReplicaSet {name} status {replicas}/{replicas}")  # type: ignore[no-any-return]


def test_replicaset_replaces_a_deleted_pod_exactly_once(node_cluster: Any, wl_ns: str) -> None:
    nc, ns = node_cluster, wl_ns
    rs, live = make_rs(nc, ns, "rs", 3)
    wait_rs_status(nc, ns, "rs", 3)
    tr.assert_runtime_matches(nc, ns, live)
    victim = live[0]["metadata"]["name"]
    with pod_watch(nc, ns, "app=rs") as watch:
        nc.delete_pod(ns, victim)
        now = tr.wait_live_ready(nc, ns, "app=rs", 3)
        assert victim not in {p["metadata"]["name"] for p in now}
        stays(lambda: len(watch.of_type("ADDED")) <= 1, 5, "at most one pod created")
        created = watch.of_type("ADDED")
    assert watch.errors == [], watch.errors
    assert len(created) == 1, [p["metadata"]["name"] for p in created]
    assert owned_by(created[0], rs) and created[0]["metadata"]["name"] in {p["metadata"]["name"] for p in now}
    wait_rs_status(nc, ns, "rs", 3)
    tr.assert_runtime_matches(nc, ns, now)


def test_replicaset_scales_3_to_5_to_1_without_overshoot(node_cluster: Any, wl_ns: str) -> None:
    nc, ns = node_cluster, wl_ns
    _rs, first = make_rs(nc, ns, "rs", 3)
    originals = {p["metadata"]["name"] for p in first}
    with pod_watch(nc, ns, "app=rs") as watch:
        nc.minictl("scale", "-n", ns, "rs/rs", "--replicas=5")
        five = tr.wait_live_ready(nc, ns, "app=rs", 5)
        wait_rs_status(nc, ns, "rs", 5)
        tr.assert_runtime_matches(nc, ns, five)
        t_down = time.monotonic()
        nc.minictl("scale", "-n", ns, "rs/rs", "--replicas=1")
        one = tr.wait_live_ready(nc, ns, "app=rs", 1, timeout=60)
        wait_rs_status(nc, ns, "rs", 1)
        stays(lambda: len(watch.of_type("ADDED")) == 2, 3, "no more pods created")
    assert watch.errors == [], watch.errors
    samples = watch.replay(tr.pod_counts)
    print(f"\nlive pods seen: {[s[1][0] for s in samples]}")
    assert max(live for _, (live, _) in samples) == 5, samples
    assert len(watch.of_type("ADDED")) == 2
    assert watch.of_type("ADDED", since=t_down) == [], "a pod was created while scaling down"
    after = [live for t, (live, _) in samples if t >= t_down]
    assert min(after) == 1, after  # never below the new size
    assert all(b <= a for a, b in itertools.pairwise(after)), after  # only down
    # Scale-down deletes the newest pods first: the survivor is one of the three originals.
    assert one[0]["metadata"]["name"] in originals, (one[0]["metadata"]["name"], originals)
    tr.assert_runtime_matches(nc, ns, one)


def test_relabeling_a_pod_orphans_it_and_a_replacement_appears(node_cluster: Any, wl_ns: str) -> None:
    nc, ns = node_cluster, wl_ns
    rs, live = make_rs(nc, ns, "rs", 3)
    name = live[0]["metadata"]["name"]
    with pod_watch(nc, ns, "") as watch:
        tr.merge_patch(nc, f"/api/v1/namespaces/{ns}/pods/{name}", {"metadata": {"labels": {"app": "elsewhere"}}})
        released = nc.wait_pod(ns, name, lambda p: tr.controller_of(p) is None, timeout=30,
                               what=f"{name} released by its ReplicaSet")
        now = tr.wait_live_ready(nc, ns, "app=rs", 3)
        stays(lambda: len(watch.of_type("ADDED")) <= 1, 3, "one pod created")
    assert watch.errors == [], watch.errors
    assert len(watch.of_type("ADDED")) == 1
    assert name not in {p["metadata"]["name"] for p in now} and all(owned_by(p, rs) for p in now)
    # The orphan is not deleted: it keeps running, with its new label and no owner.
    assert nc.is_running(nc.api.pod(ns, name)) and released["metadata"]["labels"]["app"] == "elsewhere"
    assert not released["metadata"].get("ownerReferences"), released["metadata"].get("ownerReferences")
    tr.assert_runtime_matches(nc, ns, [*now, released])


# ---- Deployment ----------------------------------------------------------------------------------------------


def make_deployment(nc: Any, ns: str, name: str, replicas: int, **kw: Any) -> tuple[dict[str, Any], str]:
    """A Deployment and its Service (same name) with every replica ready and programmed; returns (it, ClusterIP)."""
    tr.require_running(nc, "controller", "proxy")
    dep = nc.api.create(deploy_path(ns), tr.deployment(name, replicas, **kw))
    nc.api.create(f"/api/v1/namespaces/{ns}/services", tr.service(name, {"app": name}))
    wait_rolled_out(nc, ns, name, replicas)
    live = tr.wait_live_ready(nc, ns, f"app={name}", replicas)
    cip = tr.cluster_ip(nc, ns, name)
    ips = {tr.pod_ip(p) for p in live}
    tr.wait_endpoints(nc, ns, name, ips)
    tr.wait_rules(nc, f"rules for {name}", lambda _r: tr.programmed(nc, cip, ips) is not None)
    return dep, cip


def wait_rolled_out(nc: Any, ns: str, name: str, replicas: int, timeout: float = 120) -> dict[str, Any]:
    """Until the Deployment's status says every replica is updated and available, and no old one is left."""
    last: dict[str, Any] = {}

    def ok() -> dict[str, Any] | None:
        dep = nc.api.get(deploy_path(ns, name))
        last["status"] = st = dep.get("status") or {}
        done = (st.get("observedGeneration", 0) >= dep["metadata"]["generation"]
                and st.get("updatedReplicas") == st.get("replicas") == st.get("availableReplicas") == replicas
                and st.get("readyReplicas") == replicas)
        return dep if done else None

    try:
        return wait_until(ok, timeout=timeout, interval=0.2, what=f"deployment {name} rolled out")  # type: ignore[no-any-return]
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status {last.get('status')}") from None


def replicasets_of(nc: Any, ns: str, dep: dict[str, Any]) -> list[dict[str, Any]]:
    return [rs for rs in nc.api.get(rs_path(ns))["items"] if owned_by(rs, dep)]


def set_version(nc: Any, ns: str, name: str, version: str, image: str = "busybox") -> None:
    tr.merge_patch(nc, deploy_path(ns, name),
                   {"spec": {"template": {"spec": {"containers": [tr.web_container(version, image)]}}}})


def bounds(watch: Any) -> tuple[int, int]:
    """(most live pods, fewest live ready pods) at any moment of the watch."""
    samples = [counts for _, counts in watch.replay(tr.pod_counts)]
    return max(s[0] for s in samples), min(s[1] for s in samples)


def test_rolling_update_under_load_drops_nothing_and_undo_goes_back(node_cluster: Any, wl_ns: str) -> None:
    nc, ns = node_cluster, wl_ns
    dep, cip = make_deployment(nc, ns, "web", 3, max_surge=1, max_unavailable=1)
    [rs1] = replicasets_of(nc, ns, dep)
    assert rs1["metadata"]["annotations"][REVISION] == "1"
    hash1 = rs1["metadata"]["labels"]["pod-template-hash"]

    with pod_watch(nc, ns, "app=web") as watch, tr.Load(cip, 80, rate=25) as load:
        wait_until(lambda: load.tally.total >= 25, timeout=10, interval=0.1, what="load running")
        set_version(nc, ns, "web", "v2")
        wait_rolled_out(nc, ns, "web", 3)
        now = tr.wait_live_ready(nc, ns, "app=web", 3, timeout=60)
        t_done = time.monotonic()
        n = load.tally.total
        wait_until(lambda: load.tally.total >= n + 50, timeout=10, interval=0.1, what="50 requests after")
    print(f"\nrolling update: {load.report()}; by version {dict(load.tally.by_version)}")
    assert watch.errors == [], watch.errors
    assert load.tally.failures == [], load.report()
    assert load.rate_achieved() >= 20, load.report()
    most, fewest_ready = bounds(watch)
    print(f"rolling update: at most {most} live pods, at least {fewest_ready} ready (3 + surge 1, 3 - unavailable 1)")
    assert most <= 4 and fewest_ready >= 2, (most, fewest_ready)
    assert {"v1", "v2"} <= set(load.tally.by_version), load.tally.by_version
    assert {b.split()[1] for t, b in load.tally.answers if t > t_done + 1} == {"v2"}
    # Two ReplicaSets, one per template hash: the new one has the pods, the old one is scaled to 0 and kept.
    rss = {rs["metadata"]["name"]: rs for rs in replicasets_of(nc, ns, dep)}
    assert len(rss) == 2 and rss[rs1["metadata"]["name"]]["spec"]["replicas"] == 0, rss
    [rs2] = [rs for name, rs in rss.items() if name != rs1["metadata"]["name"]]
    assert rs2["metadata"]["annotations"][REVISION] == "2" and rs2["spec"]["replicas"] == 3
    assert all(p["metadata"]["labels"]["pod-template-hash"] == rs2["metadata"]["labels"]["pod-template-hash"]
               and owned_by(p, rs2) for p in now)
    tr.assert_runtime_matches(nc, ns, now)
    status = nc.minictl("rollout", "status", "-n", ns, "deployment/web", timeout=60)
    assert "successfully rolled out" in status.stdout, status.stdout

    with tr.Load(cip, 80, rate=25) as load:
        out = nc.minictl("rollout", "undo", "-n", ns, "deployment/web").stdout
        assert "rolled back" in out, out
        dep = wait_rolled_out(nc, ns, "web", 3)
        back = tr.wait_live_ready(nc, ns, "app=web", 3, timeout=60)
        t_done = time.monotonic()
        n = load.tally.total
        wait_until(lambda: load.tally.total >= n + 50, timeout=10, interval=0.1, what="50 requests after undo")
    print(f"\nrollout undo: {load.report()}")
    assert load.tally.failures == [], load.report()
    assert {b.split()[1] for t, b in load.tally.answers if t > t_done + 1} == {"v1"}
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VERSION"] == "v1"
    # Undo reuses the first ReplicaSet (same template hash), now revision 3.
    rs1_now = nc.api.get(rs_path(ns, rs1["metadata"]["name"]))
    assert rs1_now["metadata"]["uid"] == rs1["metadata"]["uid"] and rs1_now["spec"]["replicas"] == 3
    assert rs1_now["metadata"]["annotations"][REVISION] == "3"
    assert all(p["metadata"]["labels"]["pod-template-hash"] == hash1 for p in back)
    assert len(replicasets_of(nc, ns, dep)) == 2
    history = nc.minictl("rollout", "history", "-n", ns, "deployment/web").stdout
    revisions = {line.split()[0] for line in history.splitlines() if line.strip()[:1].isdigit()}
    assert revisions == {"2", "3"}, history
    tr.assert_runtime_matches(nc, ns, back)


def test_unpullable_image_stalls_the_rollout_while_old_pods_serve(node_cluster: Any, wl_ns: str) -> None:
    nc, ns = node_cluster, wl_ns
    _dep, cip = make_deployment(nc, ns, "stuck", 3, max_surge=1, max_unavailable=1, progressDeadlineSeconds=8)
    old = {p["metadata"]["name"] for p in tr.pods(nc, ns, "app=stuck")}
    image = f"busybox:no-such-tag-{uuid.uuid4().hex[:6]}"

    def stalled() -> dict[str, Any] | None:
        d = nc.api.get(deploy_path(ns, "stuck"))
        for c in (d.get("status") or {}).get("conditions") or []:
            if c["type"] == "Progressing" and c["status"] == "False":
                return dict(c)
        return None

    with pod_watch(nc, ns, "app=stuck") as watch, tr.Load(cip, 80, rate=25) as load:
        set_version(nc, ns, "stuck", "v2", image=image)
        cond = wait_until(stalled, timeout=90, interval=0.2, what="Progressing=False")
        n = load.tally.total
        wait_until(lambda: load.tally.total >= n + 50, timeout=10, interval=0.1, what="50 requests after the stall")
    print(f"\nstalled rollout: {cond}; {load.report()}")
    assert cond["reason"] == "ProgressDeadlineExceeded", cond
    assert watch.errors == [], watch.errors
    assert load.tally.failures == [], load.report()
    assert set(load.tally.by_version) == {"v1"} and set(load.tally.by_pod) <= old, load.tally.by_pod
    most, fewest_ready = bounds(watch)
    assert most <= 4 and fewest_ready >= 2, (most, fewest_ready)
    # The new pods wait on the image; the old ones (at least 3 - maxUnavailable) still run and serve.
    new = [p for p in tr.pods(nc, ns, "app=stuck") if p["metadata"]["name"] not in old]
    assert new, "no pod of the new template was created"
    reasons = {((s.get("state") or {}).get("waiting") or {}).get("reason")
               for p in new for s in (p.get("status") or {}).get("containerStatuses") or []}
    assert reasons & {"ErrImagePull", "ImagePullBackOff"}, reasons
    serving = [p for p in tr.pods(nc, ns, "app=stuck") if p["metadata"]["name"] in old and tr.is_ready(p)]
    assert len(serving) >= 2, serving
    d = nc.api.get(deploy_path(ns, "stuck"))
    assert (d["status"].get("availableReplicas") or 0) >= 2, d["status"]


# ---- garbage collection --------------------------------------------------------------------------------------


def test_foreground_deletion_removes_replicasets_and_pods_first(node_cluster: Any, wl_ns: str) -> None:
    nc, ns = node_cluster, wl_ns
    dep, _cip = make_deployment(nc, ns, "fg", 2)
    pods = tr.pods(nc, ns, "app=fg")
    [rs] = replicasets_of(nc, ns, dep)
    with (pod_watch(nc, ns, "app=fg") as pw, tr.Watch(nc, rs_path(ns)) as rw,
          tr.Watch(nc, deploy_path(ns)) as dw):
        r = nc.api.http.request("DELETE", deploy_path(ns, "fg"),
                                json={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"})
        assert r.status_code in (200, 202), r.text
        # The Deployment stays, marked, until its dependents are gone (the pods take >= 2 s: preStop).
        marked = nc.api.get(deploy_path(ns, "fg"))
        assert marked["metadata"].get("deletionTimestamp"), marked["metadata"]
        assert "foregroundDeletion" in (marked["metadata"].get("finalizers") or []), marked["metadata"]
        wait_until(lambda: nc.api.get_or_none(deploy_path(ns, "fg")) is None, timeout=90, interval=0.2,
                   what="the Deployment to go")
        wait_until(lambda: dw.of_type("DELETED"), timeout=10, interval=0.1, what="its DELETED event")
    assert not pw.errors and not rw.errors and not dw.errors, (pw.errors, rw.errors, dw.errors)
    assert tr.pods(nc, ns) == [] and nc.api.get(rs_path(ns))["items"] == []
    deleted_pods = {p["metadata"]["uid"]: t for t, typ, p in pw.events if typ == "DELETED"}
    assert set(deleted_pods) == {p["metadata"]["uid"] for p in pods}, deleted_pods
    [t_rs] = [t for t, typ, o in rw.events if typ == "DELETED" and o["metadata"]["uid"] == rs["metadata"]["uid"]]
    [t_dep] = [t for t, typ, _o in dw.events if typ == "DELETED"]
    assert max(deleted_pods.values()) <= t_rs <= t_dep, "foreground: pods, then the ReplicaSet, then the Deployment"
    assert tr.ns_sandboxes(nc, ns) == {}
    wait_until(lambda: not tr.ns_containers(nc, ns), timeout=30, interval=0.5, what="the pods' containers removed")


def test_deleting_a_namespace_empties_and_removes_it(node_cluster: Any) -> None:
    nc = node_cluster
    ns = tr.create_namespace(nc, "gone")
    try:
        _dep, cip = make_deployment(nc, ns, "web", 2)
        nc.api.create_pod(ns, tr.client_pod())
        nc.wait_running(ns, "client")
        assert tr.ns_sandboxes(nc, ns)
    except BaseException:
        tr.delete_namespace(nc, ns)
        raise
    assert nc.api.delete(f"/api/v1/namespaces/{ns}") == 200
    phase = (nc.api.get_or_none(f"/api/v1/namespaces/{ns}") or {}).get("status", {}).get("phase")
    assert phase in ("Terminating", None), phase
    wait_until(lambda: nc.api.get_or_none(f"/api/v1/namespaces/{ns}") is None, timeout=120, interval=0.5,
               what=f"namespace {ns} removed")
    for path in (f"/api/v1/namespaces/{ns}/pods", f"/api/v1/namespaces/{ns}/services",
                 f"/api/v1/namespaces/{ns}/endpoints", rs_path(ns), deploy_path(ns)):
        assert nc.api.get(path)["items"] == [], path
    assert tr.ns_sandboxes(nc, ns) == {}
    wait_until(lambda: not tr.ns_containers(nc, ns), timeout=30, interval=0.5, what="containers removed")
    tr.wait_rules(nc, f"no rule for {cip}", lambda rules: not any(f"-d {cip}/32" in r for r in rules))


# ---- the controller-manager killed ---------------------------------------------------------------------------


def test_kill_9_of_the_controller_manager_under_load(node_cluster: Any, wl_ns: str) -> None:
    """The controller-manager is frozen (SIGSTOP) so that it is certainly down while the Deployment is scaled,
    then killed with SIGKILL; supervisord starts a new one, which must reconcile the change."""
    nc, ns = node_cluster, wl_ns
    dep, cip = make_deployment(nc, ns, "cm", 3)
    pid = int(tr.program(nc, "controller")["pid"])
    with tr.Load(cip, 80, rate=25) as load:
        wait_until(lambda: load.tally.total >= 25, timeout=10, interval=0.1, what="load running")
        os.kill(pid, signal.SIGSTOP)
        try:
            nc.minictl("scale", "-n", ns, "deployment/cm", "--replicas=5")
            # Nothing acts on it while the controller-manager is down.
            stays(lambda: len(tr.pods(nc, ns, "app=cm")) == 3, 3, "3 pods while the controller-manager is down")
        finally:
            os.kill(pid, signal.SIGKILL)
        tr.wait_restarted(nc, "controller", pid)
        wait_rolled_out(nc, ns, "cm", 5, timeout=60)
        live = tr.wait_live_ready(nc, ns, "app=cm", 5, timeout=60)
        ips = {tr.pod_ip(p) for p in live}
        tr.wait_endpoints(nc, ns, "cm", ips)
        tr.wait_rules(nc, "rules for 5 pods", lambda _r: tr.programmed(nc, cip, ips) is not None)
        n = load.tally.total
        wait_until(lambda: load.tally.total >= n + 150, timeout=15, interval=0.1, what="150 more requests")
    print(f"\ncontroller-manager kill: {load.report()}")
    assert load.tally.failures == [], load.report()
    assert load.rate_achieved() >= 20, load.report()
    [rs] = replicasets_of(nc, ns, dep)
    assert rs["spec"]["replicas"] == 5
    tr.assert_runtime_matches(nc, ns, live)
    assert len(set(load.tally.by_pod)) == 5, load.tally.by_pod
