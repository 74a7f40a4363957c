"""The API's rules, checked over raw HTTP against a real apiserver on a real etcd.

Each test works in a namespace of its own on the session apiserver, except those that need an
apiserver with special flags (event TTL, compaction), which start one on an etcd of their own.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from minik8s.testing import ApiserverProcess, wait_until

pytestmark = pytest.mark.timeout(120)

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}


# --- helpers -----------------------------------------------------------------------------------------

@pytest.fixture()
def api(apiserver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=apiserver.url, timeout=15) as client:
        yield client


@pytest.fixture()
def ns(api: httpx.Client) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    r = api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert r.status_code == 201, r.text
    return name


def pod(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def endpoints(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, **meta}, "subsets": []}


def pods_path(ns: str, name: str = "", sub: str = "") -> str:
    p = f"/api/v1/namespaces/{ns}/pods"
    return p + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def deploy_path(ns: str, name: str = "", sub: str = "") -> str:
    p = f"/apis/apps/v1/namespaces/{ns}/deployments"
    return p + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def ok(r: httpx.Response, code: int = 200) -> dict[str, Any]:
    assert r.status_code == code, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:500]}"
    return r.json()


def status_of(r: httpx.Response, code: int, reason: str | None = None) -> dict[str, Any]:
    assert r.status_code == code, f"{r.request.method} {r.request.url.path}: expected {code}, " \
                                  f"got {r.status_code} {r.text[:500]}"
    doc = r.json()
    assert doc["kind"] == "Status" and doc["apiVersion"] == "v1" and doc["status"] == "Failure", doc
    assert doc["code"] == code, doc
    if reason is not None:
        assert doc["reason"] == reason, doc
    return doc


def names(doc: dict[str, Any]) -> set[str]:
    assert isinstance(doc["items"], list)
    return {o["metadata"]["name"] for o in doc["items"]}


def read_events(r: httpx.Response, count: int) -> list[tuple[str, dict[str, Any]]]:
    """Read ``count`` non-bookmark events from an open watch response (bounded by its timeouts)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for line in r.iter_lines():
        if not line.strip():
            continue
        ev = json.loads(line)
        if ev["type"] == "BOOKMARK":
            continue
        out.append((ev["type"], ev["object"]))
        if len(out) >= count or ev["type"] == "ERROR":
            break
    return out


def watch_params(rv: str, **extra: str) -> dict[str, str]:
    return {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "15", **extra}


WATCH_TIMEOUT = httpx.Timeout(connect=5, read=20, write=5, pool=5)


# --- server-owned metadata ---------------------------------------------------------------------------

def test_server_sets_uid_creation_timestamp_and_resource_version(api, ns):
    body = pod("meta")
    body["metadata"].update({"uid": "client-made", "creationTimestamp": "2001-01-01T00:00:00Z",
                             "resourceVersion": "12345", "generation": 99})
    created = ok(api.post(pods_path(ns), json=body), 201)
    meta = created["metadata"]
    assert meta["uid"] != "client-made" and uuid.UUID(meta["uid"])
    stamp = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=1)
    assert re.fullmatch(r"[1-9][0-9]*", meta["resourceVersion"]) and meta["resourceVersion"] != "12345"
    assert meta["generation"] == 1
    assert created["kind"] == "Pod" and created["apiVersion"] == "v1" and meta["namespace"] == ns

    got = ok(api.get(pods_path(ns, "meta")))
    assert got["metadata"]["uid"] == meta["uid"]
    assert got["metadata"]["resourceVersion"] == meta["resourceVersion"]

    # The client cannot change them later either.
    got["metadata"]["uid"] = meta["uid"]
    got["metadata"]["creationTimestamp"] = "2001-01-01T00:00:00Z"
    got["metadata"]["labels"] = {"touched": "yes"}
    updated = ok(api.put(pods_path(ns, "meta"), json=got))
    assert updated["metadata"]["creationTimestamp"] == meta["creationTimestamp"]
    assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])


def test_put_keeps_status_and_status_subresource_changes_only_status(api, ns):
    ok(api.post(deploy_path(ns), json=deployment("st")), 201)
    cur = ok(api.get(deploy_path(ns, "st")))

    # The main resource: spec changes, status sent along is ignored.
    cur["spec"]["replicas"] = 3
    cur["status"] = {"replicas": 42, "readyReplicas": 42}
    after_put = ok(api.put(deploy_path(ns, "st"), json=cur))
    assert after_put["spec"]["replicas"] == 3
    assert after_put["status"].get("replicas") != 42

    # /status: status changes, spec sent along is ignored.
    after_put["spec"]["replicas"] = 7
    after_put["status"] = {"replicas": 5, "readyReplicas": 2, "observedGeneration": 2}
    after_status = ok(api.put(deploy_path(ns, "st", "status"), json=after_put))
    assert after_status["status"]["replicas"] == 5 and after_status["status"]["readyReplicas"] == 2
    assert after_status["spec"]["replicas"] == 3

    # PATCH on /status likewise.
    patched = ok(api.patch(deploy_path(ns, "st", "status"),
                           content=json.dumps({"spec": {"replicas": 9}, "status": {"readyReplicas": 5}}),
                           headers=MERGE))
    assert patched["status"]["readyReplicas"] == 5 and patched["spec"]["replicas"] == 3
    # PATCH on the main resource cannot touch status.
    patched = ok(api.patch(deploy_path(ns, "st"), content=json.dumps({"status": {"readyReplicas": 0}}),
                           headers=MERGE))
    assert patched["status"]["readyReplicas"] == 5
    final = ok(api.get(deploy_path(ns, "st")))
    assert final["spec"]["replicas"] == 3 and final["status"]["readyReplicas"] == 5


def test_generation_counts_spec_changes_only(api, ns):
    created = ok(api.post(deploy_path(ns), json=deployment("gen")), 201)
    assert created["metadata"]["generation"] == 1

    def patch(path: str, doc: dict[str, Any]) -> dict[str, Any]:
        return ok(api.patch(path, content=json.dumps(doc), headers=MERGE))

    assert patch(deploy_path(ns, "gen"), {"metadata": {"labels": {"a": "b"}}})["metadata"]["generation"] == 1
    assert patch(deploy_path(ns, "gen"), {"metadata": {"annotations": {"x": "y"}}})["metadata"]["generation"] == 1
    assert patch(deploy_path(ns, "gen", "status"), {"status": {"replicas": 1}})["metadata"]["generation"] == 1
    assert patch(deploy_path(ns, "gen"), {"spec": {"replicas": 2}})["metadata"]["generation"] == 2
    # The same spec again is no change at all.
    assert patch(deploy_path(ns, "gen"), {"spec": {"replicas": 2}})["metadata"]["generation"] == 2
    assert patch(deploy_path(ns, "gen"), {"spec": {"paused": True}})["metadata"]["generation"] == 3
    # A client cannot set generation itself.
    cur = ok(api.get(deploy_path(ns, "gen")))
    cur["metadata"]["generation"] = 100
    assert ok(api.put(deploy_path(ns, "gen"), json=cur))["metadata"]["generation"] == 3


# --- namespaces ----------------------------------------------------------------------------------------

def test_default_and_kube_system_namespaces_exist(api):
    for name in ("default", "kube-system"):
        doc = ok(api.get(f"/api/v1/namespaces/{name}"))
        assert doc["metadata"]["name"] == name and doc["status"]["phase"] == "Active"
    listed = names(ok(api.get("/api/v1/namespaces")))
    assert {"default", "kube-system"} <= listed
    status_of(api.delete("/api/v1/namespaces/default"), 403, "Forbidden")


def test_create_in_a_missing_namespace_is_404(api):
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    doc = status_of(api.post(pods_path(missing), json=pod("p")), 404, "NotFound")
    assert missing in doc["message"]
    status_of(api.post(deploy_path(missing), json=deployment("d")), 404, "NotFound")


def test_terminating_namespace_refuses_creates_and_goes_once_empty(api, ns):
    # A finalizer holds one object back, so the namespace stays Terminating until it is removed.
    ok(api.post(f"/api/v1/namespaces/{ns}/endpoints", json=endpoints("held", finalizers=["example.com/hold"])),
       201)
    ok(api.post(pods_path(ns), json=pod("plain")), 201)
    deleted = ok(api.delete(f"/api/v1/namespaces/{ns}"))
    assert deleted["metadata"].get("deletionTimestamp")
    got = ok(api.get(f"/api/v1/namespaces/{ns}"))
    assert got["status"]["phase"] == "Terminating"

    doc = status_of(api.post(pods_path(ns), json=pod("late")), 403, "Forbidden")
    assert "being terminated" in doc["message"]

    # The reaper deletes what it can; the held object waits for its finalizer.
    wait_until(lambda: api.get(pods_path(ns, "plain")).status_code == 404, timeout=30,
               what="the namespace's pod to be deleted")
    wait_until(lambda: ok(api.get(f"/api/v1/namespaces/{ns}/endpoints/held"))["metadata"].get(
        "deletionTimestamp"), timeout=30, what="the held object to be marked for deletion")
    assert api.get(f"/api/v1/namespaces/{ns}").status_code == 200
    ok(api.patch(f"/api/v1/namespaces/{ns}/endpoints/held", content=json.dumps({"metadata": {"finalizers": None}}),
                 headers=MERGE))
    wait_until(lambda: api.get(f"/api/v1/namespaces/{ns}").status_code == 404, timeout=30,
               what="the empty namespace to be removed")


# --- selectors -----------------------------------------------------------------------------------------

def test_label_selectors_with_set_based_expressions(api, ns):
    specs = {"a": {"env": "prod", "tier": "web"}, "b": {"env": "staging", "tier": "db"},
             "c": {"env": "dev", "tier": "web", "legacy": "true"}, "d": {"tier": "cache"}, "e": {}}
    for name, labels in specs.items():
        ok(api.post(pods_path(ns), json=pod(name, labels)), 201)

    def select(sel: str) -> set[str]:
        return names(ok(api.get(pods_path(ns), params={"labelSelector": sel})))

    assert select("env=prod") == {"a"}
    assert select("env==prod") == {"a"}
    assert select("env!=prod") == {"b", "c", "d", "e"}
    assert select("env in (prod,staging)") == {"a", "b"}
    assert select("env notin (prod,staging)") == {"c", "d", "e"}
    assert select("env") == {"a", "b", "c"}
    assert select("!env") == {"d", "e"}
    assert select("tier in (web, cache),!legacy") == {"a", "d"}
    assert select("env in (prod,dev),tier=web,legacy") == {"c"}
    assert select("") == set(specs)
    status_of(api.get(pods_path(ns), params={"labelSelector": "env in prod"}), 400, "BadRequest")
    status_of(api.get(pods_path(ns), params={"labelSelector": "bad key=x"}), 400, "BadRequest")


def test_field_selectors(api, ns, apiserver):
    ok(api.post(pods_path(ns), json=pod("on-node", nodeName="node-a")), 201)
    ok(api.post(pods_path(ns), json=pod("bound")), 201)
    ok(api.post(pods_path(ns, "bound", "binding"),
                json={"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"},
                      "target": {"apiVersion": "v1", "kind": "Node", "name": "node-b"}}), 201)
    ok(api.post(pods_path(ns), json=pod("pending")), 201)
    ok(api.patch(pods_path(ns, "on-node", "status"), content=json.dumps({"status": {"phase": "Running"}}),
                 headers=MERGE))
    ok(api.patch(pods_path(ns, "bound", "status"), content=json.dumps({"status": {"phase": "Failed"}}),
                 headers=MERGE))

    def select(sel: str, path: str | None = None) -> set[str]:
        return names(ok(api.get(path or pods_path(ns), params={"fieldSelector": sel})))

    assert select("metadata.name=bound") == {"bound"}
    assert select("metadata.name!=bound") == {"on-node", "pending"}
    assert select("spec.nodeName=node-a") == {"on-node"}
    assert select("spec.nodeName=node-b") == {"bound"}
    assert select("spec.nodeName=") == {"pending"}
    assert select("status.phase=Running") == {"on-node"}
    assert select("status.phase!=Running,spec.nodeName!=") == {"bound"}
    # Across namespaces.
    assert select(f"metadata.namespace={ns}", "/api/v1/pods") == {"on-node", "bound", "pending"}
    assert select(f"metadata.namespace={ns},metadata.name=pending", "/api/v1/pods") == {"pending"}
    assert "default" in select("metadata.name=default", "/api/v1/namespaces")
    status_of(api.get(pods_path(ns), params={"fieldSelector": "spec.bogus=x"}), 400, "BadRequest")


def test_watch_with_label_selector_sees_objects_enter_and_leave(api, ns, apiserver):
    rv = ok(api.get(pods_path(ns)))["metadata"]["resourceVersion"]
    ok(api.post(pods_path(ns), json=pod("w", {"app": "other"})), 201)
    with httpx.Client(base_url=apiserver.url, timeout=WATCH_TIMEOUT) as watcher, \
            watcher.stream("GET", pods_path(ns), params=watch_params(rv, labelSelector="app=match")) as r:
        assert r.status_code == 200

        def label(value: str) -> None:
            ok(api.patch(pods_path(ns, "w"), content=json.dumps({"metadata": {"labels": {"app": value}}}),
                         headers=MERGE))

        label("match")              # enters the view: ADDED
        ok(api.patch(pods_path(ns, "w"), content=json.dumps({"metadata": {"annotations": {"n": "1"}}}),
                     headers=MERGE))  # stays in view: MODIFIED
        label("gone")               # leaves the view: DELETED
        label("other")              # out of view all along: nothing
        label("match")              # ADDED again
        ok(api.delete(pods_path(ns, "w")))  # DELETED
        events = read_events(r, 5)
    assert [t for t, _ in events] == ["ADDED", "MODIFIED", "DELETED", "ADDED", "DELETED"], \
        [(t, o.get("metadata", {}).get("labels")) for t, o in events]
    assert all(o["metadata"]["name"] == "w" for _, o in events)
    rvs = [int(o["metadata"]["resourceVersion"]) for _, o in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)
    # The DELETED for leaving the view carries the object as it is now (no longer matching).
    assert events[2][1]["metadata"]["labels"]["app"] == "gone"


def test_watch_without_resource_version_starts_with_added_for_existing(api, ns, apiserver):
    ok(api.post(pods_path(ns), json=pod("x1")), 201)
    ok(api.post(pods_path(ns), json=pod("x2")), 201)
    with httpx.Client(base_url=apiserver.url, timeout=WATCH_TIMEOUT) as watcher, \
            watcher.stream("GET", pods_path(ns), params={"watch": "1", "timeoutSeconds": "10"}) as r:
        assert r.status_code == 200
        events = read_events(r, 2)
    assert sorted((t, o["metadata"]["name"]) for t, o in events) == [("ADDED", "x1"), ("ADDED", "x2")]


# --- deletion ------------------------------------------------------------------------------------------

def test_finalizers_hold_an_object_until_removed(api, ns):
    ep = f"/api/v1/namespaces/{ns}/endpoints"
    ok(api.post(ep, json=endpoints("fin", finalizers=["example.com/a", "example.com/b"])), 201)
    gone = ok(api.delete(f"{ep}/fin"))
    stamp = gone["metadata"].get("deletionTimestamp")
    assert stamp
    held = ok(api.get(f"{ep}/fin"))
    assert held["metadata"]["deletionTimestamp"] == stamp
    # Deleting again changes nothing; new finalizers are refused while deleting.
    assert ok(api.delete(f"{ep}/fin"))["metadata"]["deletionTimestamp"] == stamp
    status_of(api.patch(f"{ep}/fin", content=json.dumps(
        {"metadata": {"finalizers": ["example.com/a", "example.com/b", "example.com/c"]}}), headers=MERGE), 403)

    ok(api.patch(f"{ep}/fin", content=json.dumps([{"op": "remove", "path": "/metadata/finalizers/0"}]),
                 headers=JSON_PATCH))
    assert ok(api.get(f"{ep}/fin"))["metadata"]["finalizers"] == ["example.com/b"]
    ok(api.patch(f"{ep}/fin", content=json.dumps({"metadata": {"finalizers": []}}), headers=MERGE))
    status_of(api.get(f"{ep}/fin"), 404, "NotFound")


def test_delete_preconditions_on_uid_and_resource_version(api, ns):
    created = ok(api.post(pods_path(ns), json=pod("pre")), 201)
    uid, rv = created["metadata"]["uid"], created["metadata"]["resourceVersion"]

    def delete(pre: dict[str, str]) -> httpx.Response:
        return api.request("DELETE", pods_path(ns, "pre"), content=json.dumps(
            {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": pre}))

    status_of(delete({"uid": str(uuid.uuid4())}), 409, "Conflict")
    status_of(delete({"resourceVersion": str(int(rv) - 1)}), 409, "Conflict")
    ok(api.get(pods_path(ns, "pre")))
    gone = ok(delete({"uid": uid, "resourceVersion": rv}))
    assert gone["kind"] == "Pod" and gone["metadata"]["name"] == "pre"
    status_of(api.get(pods_path(ns, "pre")), 404, "NotFound")


def test_dry_run_stores_nothing(api, ns):
    before = ok(api.get(pods_path(ns)))["metadata"]["resourceVersion"]
    dry = ok(api.post(pods_path(ns), params={"dryRun": "All"}, json=pod("dry")), 201)
    assert dry["metadata"]["name"] == "dry" and dry["metadata"].get("uid")
    status_of(api.get(pods_path(ns, "dry")), 404)

    real = ok(api.post(pods_path(ns), json=pod("real")), 201)
    real["metadata"]["labels"] = {"changed": "yes"}
    dry_put = ok(api.put(pods_path(ns, "real"), params={"dryRun": "All"}, json=real))
    assert dry_put["metadata"]["labels"] == {"changed": "yes"}
    dry_patch = ok(api.patch(pods_path(ns, "real"), params={"dryRun": "All"},
                             content=json.dumps({"metadata": {"labels": {"p": "q"}}}), headers=MERGE))
    assert dry_patch["metadata"]["labels"].get("p") == "q"
    ok(api.delete(pods_path(ns, "real"), params={"dryRun": "All"}))
    stored = ok(api.get(pods_path(ns, "real")))
    assert stored["metadata"]["resourceVersion"] == real["metadata"]["resourceVersion"]
    assert stored["metadata"]["labels"] == {}
    assert int(before) < int(real["metadata"]["resourceVersion"])
    # Dry-run Services allocate nothing either.
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dry-svc"},
           "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    ok(api.post(f"/api/v1/namespaces/{ns}/services", params={"dryRun": "All"}, json=svc), 201)
    status_of(api.get(f"/api/v1/namespaces/{ns}/services/dry-svc"), 404)


# --- services ------------------------------------------------------------------------------------------

def test_cluster_ip_and_node_port_allocation_is_unique_and_released(api, ns, apiserver):
    base = f"/api/v1/namespaces/{ns}/services"

    def create(i: int) -> dict[str, Any]:
        with httpx.Client(base_url=apiserver.url, timeout=30) as c:
            body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"},
                    "spec": {"type": "NodePort", "selector": {"app": f"s{i}"},
                             "ports": [{"port": 80, "targetPort": 8080}]}}
            return ok(c.post(base, json=body), 201)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        created = list(pool.map(create, range(20), timeout=60))
    ips = [s["spec"]["clusterIP"] for s in created]
    ports = [s["spec"]["ports"][0]["nodePort"] for s in created]
    assert len(set(ips)) == 20, ips
    assert len(set(ports)) == 20, ports
    net = ipaddress.ip_network("10.96.0.0/16")
    assert all(ipaddress.ip_address(ip) in net for ip in ips)
    assert all(30000 <= p <= 32767 for p in ports)
    assert all(s["spec"]["clusterIPs"] == [s["spec"]["clusterIP"]] for s in created)

    # Values in use cannot be taken by another Service.
    taken = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dup"},
             "spec": {"type": "NodePort", "clusterIP": ips[0], "ports": [{"port": 80}]}}
    status_of(api.post(base, json=taken), 422, "Invalid")
    taken["spec"] = {"type": "NodePort", "ports": [{"port": 80, "nodePort": ports[0]}]}
    status_of(api.post(base, json=taken), 422, "Invalid")

    # Deleting releases them; they can be requested again.
    for i in range(5):
        ok(api.delete(f"{base}/s{i}"))
    for i in range(5):
        again = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"again{i}"},
                 "spec": {"type": "NodePort", "clusterIP": ips[i],
                          "ports": [{"port": 80, "nodePort": ports[i]}]}}
        doc = ok(api.post(base, json=again), 201)
        assert doc["spec"]["clusterIP"] == ips[i] and doc["spec"]["ports"][0]["nodePort"] == ports[i]

    # Changing the type to ClusterIP gives the NodePort back.
    patched = ok(api.patch(f"{base}/again0", content=json.dumps({"spec": {"type": "ClusterIP"}}), headers=MERGE))
    assert "nodePort" not in patched["spec"]["ports"][0]
    reuse = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reuse"},
             "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": ports[0]}]}}
    ok(api.post(base, json=reuse), 201)


# --- events --------------------------------------------------------------------------------------------

def event(name: str, ns: str, message: str = "pulled image") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
            "involvedObject": {"kind": "Pod", "namespace": ns, "name": "p", "uid": "u-1"},
            "reason": "Pulled", "message": message, "type": "Normal", "count": 1,
            "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:00:00Z",
            "source": {"component": "kubelet", "host": "node-a"}}


def test_events_are_deduplicated(api, ns):
    base = f"/api/v1/namespaces/{ns}/events"
    first = api.post(base, json=event("e1", ns))
    assert first.status_code == 201, first.text
    second = api.post(base, json={**event("e2", ns), "lastTimestamp": "2024-01-01T00:05:00Z"})
    assert second.status_code in (200, 201), second.text
    third = api.post(base, json={**event("e3", ns), "lastTimestamp": "2024-01-01T00:06:00Z"})
    assert third.status_code in (200, 201), third.text
    different = api.post(base, json=event("e4", ns, message="another message"))
    assert different.status_code == 201

    items = ok(api.get(base))["items"]
    assert len(items) == 2, [(e["metadata"]["name"], e.get("count")) for e in items]
    merged = next(e for e in items if e["message"] == "pulled image")
    assert merged["count"] == 3
    assert merged["lastTimestamp"] == "2024-01-01T00:06:00Z"
    assert merged["firstTimestamp"] == "2024-01-01T00:00:00Z"


def test_events_expire_after_the_event_ttl(fresh_etcd):
    with ApiserverProcess(fresh_etcd.endpoint, extra_args=["--event-ttl", "2", "--compaction-interval", "0"]) as s, \
            httpx.Client(base_url=s.url, timeout=10) as c:
        ok(c.post("/api/v1/namespaces/default/events", json=event("short", "default")), 201)
        ok(c.get("/api/v1/namespaces/default/events/short"))
        wait_until(lambda: c.get("/api/v1/namespaces/default/events/short").status_code == 404, timeout=30,
                   interval=0.2, what="the event to expire")
        assert ok(c.get("/api/v1/namespaces/default/events"))["items"] == []


# --- request bodies ------------------------------------------------------------------------------------

def test_body_size_limit_gives_413(api, ns):
    big = pod("big")
    big["metadata"]["annotations"] = {"blob": "x" * (4 * 1024 * 1024)}
    status_of(api.post(pods_path(ns), json=big), 413)

    def chunks() -> Iterator[bytes]:   # no Content-Length: the limit holds for streamed bodies too
        yield b'{"metadata":{"name":"big2","annotations":{"blob":"'
        for _ in range(64):
            yield b"x" * 65536
        yield b'"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}'
    status_of(api.post(pods_path(ns), content=chunks()), 413)
    status_of(api.get(pods_path(ns, "big")), 404)


def test_malformed_json_gives_400_with_a_clear_message(api, ns):
    doc = status_of(api.post(pods_path(ns), content=b'{"metadata": {"name": "x"', headers={
        "Content-Type": "application/json"}), 400, "BadRequest")
    assert "JSON" in doc["message"]
    doc = status_of(api.post(pods_path(ns), content=b"[1, 2]"), 400, "BadRequest")
    assert "object" in doc["message"]
    ok(api.post(pods_path(ns), json=pod("target")), 201)
    status_of(api.patch(pods_path(ns, "target"), content=b"{not json", headers=MERGE), 400, "BadRequest")
    status_of(api.put(pods_path(ns, "target"), content=b"", headers={"Content-Type": "application/json"}), 400)


def test_unknown_field_with_strict_validation_is_refused(api, ns):
    body = deployment("strict")
    body["spec"]["bogusField"] = 1
    doc = status_of(api.post(deploy_path(ns), params={"fieldValidation": "Strict"}, json=body), 400, "BadRequest")
    assert 'strict decoding error: unknown field "spec.bogusField"' in doc["message"]
    status_of(api.get(deploy_path(ns, "strict")), 404)

    # Without Strict the field is dropped and a warning says so.
    r = api.post(deploy_path(ns), params={"fieldValidation": "Warn"}, json=body)
    created = ok(r, 201)
    assert "bogusField" not in created["spec"]
    assert "spec.bogusField" in r.headers.get("warning", "")
    doc = status_of(api.patch(deploy_path(ns, "strict"), params={"fieldValidation": "Strict"},
                              content=json.dumps({"spec": {"bogusField": 2}}), headers=MERGE), 400, "BadRequest")
    assert 'unknown field "spec.bogusField"' in doc["message"]


def test_invalid_object_gives_422_with_causes(api, ns):
    bad = pod("Bad_Name")
    doc = status_of(api.post(pods_path(ns), json=bad), 422, "Invalid")
    assert doc["details"]["causes"] and any(c["field"] == "metadata.name" for c in doc["details"]["causes"])


def test_stale_resource_version_is_409(api, ns):
    created = ok(api.post(pods_path(ns), json=pod("opt")), 201)
    ok(api.patch(pods_path(ns, "opt"), content=json.dumps({"metadata": {"labels": {"v": "2"}}}), headers=MERGE))
    created["metadata"]["labels"] = {"v": "stale"}
    status_of(api.put(pods_path(ns, "opt"), json=created), 409, "Conflict")


# --- compaction ----------------------------------------------------------------------------------------

def test_watch_from_a_compacted_revision_gets_410_and_a_recent_one_resumes(fresh_etcd):
    # The watch cache serves any revision still in its in-memory window, compacted in etcd or not
    # (as Kubernetes' does); a window of 5 events makes the first revision fall out of it, so its
    # watch is served from etcd's history, which compaction removes.
    args = ["--compaction-interval", "1", "--watch-cache-window", "5"]
    with ApiserverProcess(fresh_etcd.endpoint, extra_args=args) as s, \
            httpx.Client(base_url=s.url, timeout=WATCH_TIMEOUT) as c:
        path = "/api/v1/namespaces/default/endpoints"
        first = ok(c.post(path, json=endpoints("c0")), 201)
        first_rv = first["metadata"]["resourceVersion"]
        for i in range(1, 10):
            ok(c.post(path, json=endpoints(f"c{i}")), 201)

        def first_revision_is_gone() -> bool:
            # Keep history moving so that each compaction has something to drop.
            ok(c.patch(f"{path}/c1", content=json.dumps({"metadata": {"annotations": {
                "t": uuid.uuid4().hex}}}), headers=MERGE))
            with c.stream("GET", path, params={"watch": "true", "resourceVersion": first_rv,
                                               "timeoutSeconds": "2"}) as r:
                if r.status_code == 410:
                    return True
                if r.status_code != 200:
                    return False
                events = read_events(r, 100)
            return any(t == "ERROR" and o.get("code") == 410 for t, o in events)

        wait_until(first_revision_is_gone, timeout=30, interval=0.5,
                   what="a watch from the first revision to get 410 after compaction")

        recent = ok(c.get(path))["metadata"]["resourceVersion"]
        with c.stream("GET", path, params=watch_params(recent)) as r:
            assert r.status_code == 200
            ok(c.post(path, json=endpoints("after")), 201)
            events = read_events(r, 1)
        assert [(t, o["metadata"]["name"]) for t, o in events] == [("ADDED", "after")]


# --- health --------------------------------------------------------------------------------------------

def test_health_readiness_and_metrics(api):
    for path in ("/healthz", "/readyz"):
        r = api.get(path)
        assert r.status_code == 200 and r.text.strip() == "ok"
    api.get("/api/v1/namespaces/default")
    r = api.get("/metrics")
    assert r.status_code == 200
    assert "apiserver_request_total" in r.text
    assert re.search(r'apiserver_request_total\{[^}]*code="200"[^}]*\} [0-9.]+', r.text)


def test_refused_or_dry_run_service_updates_keep_their_allocations(api, ns):
    base = f"/api/v1/namespaces/{ns}/services"
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "keep"},
           "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    created = ok(api.post(base, json=svc), 201)
    port = created["spec"]["ports"][0]["nodePort"]
    to_cluster_ip = {"spec": {"type": "ClusterIP"}}

    # A dry run shows the NodePort gone but must not really give it back.
    dry = ok(api.patch(f"{base}/keep", params={"dryRun": "All"}, content=json.dumps(to_cluster_ip), headers=MERGE))
    assert "nodePort" not in dry["spec"]["ports"][0]
    # An update refused by validation must not give it back either.
    status_of(api.patch(f"{base}/keep", content=json.dumps(
        {"spec": {"type": "ClusterIP", "sessionAffinity": "Bogus"}}), headers=MERGE), 422, "Invalid")
    assert ok(api.get(f"{base}/keep"))["spec"]["ports"][0]["nodePort"] == port

    thief = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "thief"},
             "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}}
    status_of(api.post(base, json=thief), 422, "Invalid")
    # A refused update that asked for a new NodePort gives it back at once.
    in_use = {p.get("nodePort") for s in ok(api.get("/api/v1/services"))["items"] for p in s["spec"]["ports"]}
    free_port_candidate = max(set(range(30000, 32768)) - in_use)
    status_of(api.patch(f"{base}/keep", content=json.dumps(
        {"spec": {"sessionAffinity": "Bogus", "ports": [{"port": 80, "nodePort": port},
                                                        {"port": 81, "nodePort": free_port_candidate}]}}),
        headers=STRATEGIC), 422, "Invalid")
    other = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other"},
             "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": free_port_candidate}]}}
    ok(api.post(base, json=other), 201)
