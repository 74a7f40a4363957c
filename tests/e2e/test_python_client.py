"""The official ``kubernetes`` Python client (37.x) works against minik8s's apiserver.

Everything goes through ``kubernetes.client`` with ``Configuration(host=apiserver.url)``: typed
create / read / list / patch / replace / delete, the 409 of a stale replace, ``Watch().stream``,
the Deployment ``/scale`` subresource, Service ClusterIP allocation, namespaces and discovery.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from minik8s.testing import wait_until


def _helpers() -> Any:
    # helpers.py is loaded under a name of its own, so another tests folder's "helpers" cannot shadow it.
    name = "minik8s_e2e_helpers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("helpers.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


h = _helpers()
kube, namespace = h.kube, h.namespace  # fixtures

pytestmark = pytest.mark.timeout(120)

SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/16")  # the apiserver's default --service-cluster-ip-range


def pod(name: str, labels: dict[str, str] | None = None, image: str = "busybox:1.36") -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image=image,
                                                              command=["sleep", "3600"])]))


def test_pod_create_read_list_patch_replace_delete(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    created = core.create_namespaced_pod(namespace, pod("web-1", {"app": "web", "tier": "front"}))
    assert isinstance(created, client.V1Pod)
    assert created.metadata.name == "web-1" and created.metadata.namespace == namespace
    assert created.metadata.uid and isinstance(created.metadata.resource_version, str)
    assert created.metadata.creation_timestamp is not None
    assert created.spec.containers[0].image == "busybox:1.36"
    core.create_namespaced_pod(namespace, pod("web-2", {"app": "web"}))
    core.create_namespaced_pod(namespace, pod("db-1", {"app": "db"}))

    # A second create of the same name is 409 AlreadyExists.
    with pytest.raises(client.ApiException) as exc:
        core.create_namespaced_pod(namespace, pod("web-1"))
    assert exc.value.status == 409
    assert json.loads(exc.value.body)["reason"] == "AlreadyExists"

    read = core.read_namespaced_pod("web-1", namespace)
    assert read.metadata.uid == created.metadata.uid
    assert read.metadata.labels == {"app": "web", "tier": "front"}

    listed = core.list_namespaced_pod(namespace, label_selector="app=web")
    assert isinstance(listed, client.V1PodList)
    assert sorted(p.metadata.name for p in listed.items) == ["web-1", "web-2"]
    assert isinstance(listed.metadata.resource_version, str) and listed.metadata.resource_version
    assert sorted(p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector="app in (db)").items) \
        == ["db-1"]
    assert core.list_namespaced_pod(namespace, label_selector="app=nothing").items == []
    assert len(core.list_namespaced_pod(namespace).items) == 3

    # A dict body is sent as a strategic merge patch: labels merge, containers merge by name.
    patched = core.patch_namespaced_pod("web-1", namespace, {
        "metadata": {"labels": {"tier": "back", "extra": "yes"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}})
    assert patched.metadata.labels == {"app": "web", "tier": "back", "extra": "yes"}
    assert [(c.name, c.image, c.command) for c in patched.spec.containers] == \
        [("main", "busybox:1.37", ["sleep", "3600"])]
    assert int(patched.metadata.resource_version) > int(read.metadata.resource_version)
    # null deletes a key.
    patched = core.patch_namespaced_pod("web-1", namespace, {"metadata": {"labels": {"extra": None}}})
    assert patched.metadata.labels == {"app": "web", "tier": "back"}

    # Replacing with the resourceVersion read before the patches is a 409 Conflict; nothing changes.
    stale = read
    stale.metadata.labels = {"app": "stale"}
    with pytest.raises(client.ApiException) as exc:
        core.replace_namespaced_pod("web-1", namespace, stale)
    assert exc.value.status == 409
    assert json.loads(exc.value.body)["reason"] == "Conflict"
    assert core.read_namespaced_pod("web-1", namespace).metadata.labels == {"app": "web", "tier": "back"}

    # Replacing with the current resourceVersion works.
    current = core.read_namespaced_pod("web-1", namespace)
    current.metadata.labels = {"app": "web", "tier": "replaced"}
    replaced = core.replace_namespaced_pod("web-1", namespace, current)
    assert replaced.metadata.labels == {"app": "web", "tier": "replaced"}
    assert int(replaced.metadata.resource_version) > int(current.metadata.resource_version)

    # Delete answers the Pod itself (an unscheduled pod goes at once).
    gone = core.delete_namespaced_pod("web-1", namespace)
    assert isinstance(gone, client.V1Pod)
    assert gone.metadata.name == "web-1"
    assert gone.metadata.uid == created.metadata.uid
    with pytest.raises(client.ApiException) as exc:
        core.read_namespaced_pod("web-1", namespace)
    assert exc.value.status == 404
    assert json.loads(exc.value.body)["reason"] == "NotFound"
    assert sorted(p.metadata.name for p in core.list_namespaced_pod(namespace).items) == ["db-1", "web-2"]


def test_watch_stream_sees_added_modified_deleted(kube: client.ApiClient, namespace: str, apiserver: Any) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, pod("marker"))

    # The watcher has a client of its own, as another process would.
    watcher_api = h.api_client(apiserver.url)
    w = watch.Watch()
    seen: list[tuple[str, str, dict[str, str]]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for event in w.stream(client.CoreV1Api(watcher_api).list_namespaced_pod, namespace, timeout_seconds=30):
                obj = event["object"]
                assert isinstance(obj, client.V1Pod), f"event object is {type(obj)}"
                seen.append((event["type"], obj.metadata.name, dict(obj.metadata.labels or {})))
                if event["type"] == "DELETED" and obj.metadata.name == "target":
                    w.stop()
        except BaseException as e:  # reported by the test thread
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        # Without a resourceVersion, the stream first replays what exists: the marker shows the watch is open.
        wait_until(lambda: ("ADDED", "marker", {}) in seen or errors, timeout=15, what="ADDED of the marker pod")
        assert not errors, errors

        core.create_namespaced_pod(namespace, pod("target", {"step": "1"}))
        core.patch_namespaced_pod("target", namespace, {"metadata": {"labels": {"step": "2"}}})
        core.delete_namespaced_pod("target", namespace)

        thread.join(timeout=20)
        assert not thread.is_alive(), f"the watch never saw the DELETED of target; saw {seen}"
        assert not errors, errors
    finally:
        w.stop()
        thread.join(timeout=35)
        watcher_api.close()

    assert [e for e in seen if e[1] == "target"] == [
        ("ADDED", "target", {"step": "1"}),
        ("MODIFIED", "target", {"step": "2"}),
        ("DELETED", "target", {"step": "2"}),
    ]
    assert [e for e in seen if e[1] == "marker"] == [("ADDED", "marker", {})]


def test_watch_resumes_from_resource_version(kube: client.ApiClient, namespace: str) -> None:
    """A watch from a list's resourceVersion gets only later changes (no replay)."""
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, pod("before"))
    rv = core.list_namespaced_pod(namespace).metadata.resource_version
    core.create_namespaced_pod(namespace, pod("after"))
    w = watch.Watch()
    events = []
    for event in w.stream(core.list_namespaced_pod, namespace, resource_version=rv, timeout_seconds=10):
        events.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "after":
            w.stop()
    assert events == [("ADDED", "after")]


def test_deployment_scale_subresource(kube: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(kube)
    labels = {"app": "scaled"}
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="scaled"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox:1.36")]))))
    created = apps.create_namespaced_deployment(namespace, dep)
    assert isinstance(created, client.V1Deployment) and created.spec.replicas == 1

    scale = apps.read_namespaced_deployment_scale("scaled", namespace)
    assert isinstance(scale, client.V1Scale)
    assert scale.spec.replicas == 1 and scale.metadata.name == "scaled"

    scale = apps.patch_namespaced_deployment_scale("scaled", namespace, {"spec": {"replicas": 3}})
    assert isinstance(scale, client.V1Scale)
    assert scale.spec.replicas == 3

    assert apps.read_namespaced_deployment_scale("scaled", namespace).spec.replicas == 3
    stored = apps.read_namespaced_deployment("scaled", namespace)
    assert stored.spec.replicas == 3
    assert stored.metadata.generation == created.metadata.generation + 1
    # Only replicas changed.
    assert stored.spec.template.spec.containers[0].image == "busybox:1.36"
    assert stored.spec.selector.match_labels == labels


def test_service_gets_cluster_ip(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    svc = core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector={"app": "web"},
                                  ports=[client.V1ServicePort(port=80, target_port=8080)])))
    assert isinstance(svc, client.V1Service)
    assert svc.spec.cluster_ip, "no clusterIP was allocated"
    assert ipaddress.ip_address(svc.spec.cluster_ip) in SERVICE_RANGE
    assert svc.spec.cluster_ips == [svc.spec.cluster_ip]
    assert svc.spec.type == "ClusterIP"
    assert svc.spec.ports[0].protocol == "TCP"
    assert core.read_namespaced_service("web", namespace).spec.cluster_ip == svc.spec.cluster_ip

    other = core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="other"),
        spec=client.V1ServiceSpec(selector={"app": "other"}, ports=[client.V1ServicePort(port=80)])))
    assert ipaddress.ip_address(other.spec.cluster_ip) in SERVICE_RANGE
    assert other.spec.cluster_ip != svc.spec.cluster_ip
    gone = core.delete_namespaced_service("web", namespace)
    assert gone.metadata.name == "web"


def test_namespaces_and_discovery(kube: client.ApiClient, namespace: str) -> None:
    names = [n.metadata.name for n in client.CoreV1Api(kube).list_namespace().items]
    assert "default" in names and "kube-system" in names and namespace in names

    code = client.VersionApi(kube).get_code()
    assert (code.major, code.minor) == ("1", "32")
    assert code.git_version.startswith("v1.32")

    core_resources = {r.name: r for r in client.CoreV1Api(kube).get_api_resources().resources}
    assert core_resources["pods"].kind == "Pod" and core_resources["pods"].namespaced is True
    assert "po" in core_resources["pods"].short_names
    assert "svc" in core_resources["services"].short_names
    assert core_resources["nodes"].namespaced is False
    assert "pods/status" in core_resources
    assert {"get", "list", "watch", "create", "delete", "patch", "update"} <= set(core_resources["pods"].verbs)

    app_resources = {r.name: r for r in client.AppsV1Api(kube).get_api_resources().resources}
    assert app_resources["deployments"].kind == "Deployment"
    assert "deploy" in app_resources["deployments"].short_names
    assert "deployments/scale" in app_resources

    groups = {g.name for g in client.ApisApi(kube).get_api_versions().groups}
    assert "apps" in groups
