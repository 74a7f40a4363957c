"""The real kubectl (1.32, chosen by the installed dispatcher from the server's /version) works
against minik8s's apiserver: tables, watch, create / apply / delete / scale, ``get all``,
``api-resources``, and the exact error lines kubectl prints for the apiserver's Status answers.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client


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
kube, namespace, kubectl = h.kube, h.namespace, h.kubectl  # fixtures
Kubectl = h.Kubectl

pytestmark = pytest.mark.timeout(180)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def columns(line: str) -> list[str]:
    """The cells of one line of kubectl's table output (cells are separated by 2+ spaces)."""
    return re.split(r"\s{2,}", line.strip())


def table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """(header cells, rows by first cell) of kubectl's table output."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines, "empty output"
    return columns(lines[0]), {columns(ln)[0]: columns(ln) for ln in lines[1:]}


def write(tmp_path: Path, name: str, doc: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def pod_manifest(name: str, image: str | None = "busybox:1.36") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "command": ["sleep", "3600"]}
    if image is not None:
        container["image"] = image
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [container]}}


def make_pod(kube: client.ApiClient, namespace: str, name: str) -> client.V1Pod:
    return client.CoreV1Api(kube).create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox:1.36")])))


def stored(apiserver: Any, path: str) -> dict[str, Any]:
    return h.get_json(apiserver.url, path)


# --- get -------------------------------------------------------------------------------------------

def test_get_pods_prints_the_server_table(kubectl: Kubectl, kube: client.ApiClient, namespace: str) -> None:
    empty = kubectl.run("get", "pods", "-n", namespace)
    assert empty.stdout == ""
    assert empty.stderr.strip() == f"No resources found in {namespace} namespace."

    make_pod(kube, namespace, "alpha")
    out = kubectl.run("get", "pods", "-n", namespace).stdout
    lines = out.splitlines()
    assert re.fullmatch(r"NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE", lines[0]), lines[0]
    header, rows = table(out)
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert list(rows) == ["alpha"]
    name, ready, status, restarts, age = rows["alpha"]
    assert (name, ready, status, restarts) == ("alpha", "0/1", "Pending", "0")
    assert re.fullmatch(r"\d+s|\d+m(\d+s)?", age), age

    wide_header, wide_rows = table(kubectl.run("get", "pods", "-n", namespace, "-o", "wide").stdout)
    assert wide_header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE",
                           "READINESS GATES"]
    assert wide_rows["alpha"][5:] == ["<none>", "<none>", "<none>", "<none>"]

    # --show-labels and -o name need the rows' object metadata.
    labelled = table(kubectl.run("get", "po", "-n", namespace, "--show-labels").stdout)
    assert labelled[0][-1] == "LABELS" and labelled[1]["alpha"][-1] == "app=alpha"
    assert kubectl.run("get", "pods", "-n", namespace, "-o", "name").stdout.split() == ["pod/alpha"]
    as_json = json.loads(kubectl.run("get", "pod", "alpha", "-n", namespace, "-o", "json").stdout)
    assert as_json["kind"] == "Pod" and as_json["metadata"]["name"] == "alpha"


def test_get_pods_watch_prints_a_change(kubectl: Kubectl, kube: client.ApiClient, namespace: str) -> None:
    make_pod(kube, namespace, "first")
    watcher = kubectl.popen("get", "pods", "-n", namespace, "-w")
    try:
        header = watcher.wait_for(lambda ln: ln.startswith("NAME"), timeout=30, what="the table header")
        assert columns(header) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        watcher.wait_for(lambda ln: ln.startswith("first "), timeout=30, what="the row of the existing pod")

        make_pod(kube, namespace, "second")
        row = watcher.wait_for(lambda ln: ln.startswith("second "), timeout=30, what="the row of the new pod")
        assert columns(row)[:4] == ["second", "0/1", "Pending", "0"]

        client.CoreV1Api(kube).delete_namespaced_pod("first", namespace)
        # kubectl prints the deleted object's last row (watch events do not repeat the header).
        row = watcher.wait_for(lambda ln: ln.startswith("first "), timeout=30, what="the row of the deleted pod")
        assert columns(row)[0] == "first"
        assert watcher.proc.poll() is None, "kubectl get -w ended: the server closed the watch"
        assert not any(ln.startswith("NAME") for ln in watcher.lines[1:]), watcher.lines
    finally:
        watcher.stop()


def test_get_svc_and_nodes(kubectl: Kubectl, kube: client.ApiClient, namespace: str, tmp_path: Path) -> None:
    core = client.CoreV1Api(kube)
    svc_file = write(tmp_path, "svc.yaml", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    assert kubectl.run("create", "-f", str(svc_file), "-n", namespace).stdout.strip() == "service/web created"
    ip = core.read_namespaced_service("web", namespace).spec.cluster_ip
    header, rows = table(kubectl.run("get", "svc", "-n", namespace).stdout)
    assert header == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert rows["web"][:5] == ["web", "ClusterIP", ip, "<none>", "80/TCP"]

    node_name = h.unique("e2e-node")
    core.create_node(client.V1Node(
        metadata=client.V1ObjectMeta(name=node_name, labels={"node-role.kubernetes.io/worker": ""}),
        status=client.V1NodeStatus(
            conditions=[client.V1NodeCondition(type="Ready", status="True")],
            node_info=client.V1NodeSystemInfo(
                kubelet_version="v1.32.0-minik8s", architecture="amd64", boot_id="b", container_runtime_version="containerd://1.6",
                kernel_version="6.1", kube_proxy_version="", machine_id="m", operating_system="linux",
                os_image="Debian", system_uuid="s"))))
    try:
        header, rows = table(kubectl.run("get", "nodes").stdout)
        assert header == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
        assert rows[node_name][:3] == [node_name, "Ready", "worker"]
        assert rows[node_name][4] == "v1.32.0-minik8s"
        assert kubectl.run("get", "no", node_name, "-o", "name").stdout.strip() == f"node/{node_name}"
    finally:
        core.delete_node(node_name)


# --- create, apply, delete -----------------------------------------------------------------------

def test_create_then_already_exists_then_delete(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    path = write(tmp_path, "pod.yaml", pod_manifest("x"))
    assert kubectl.run("create", "-f", str(path), "-n", namespace).stdout.strip() == "pod/x created"

    again = kubectl.fails("create", "-f", str(path), "-n", namespace)
    assert again.stderr.strip() == \
        f'Error from server (AlreadyExists): error when creating "{path}": pods "x" already exists'

    deleted = kubectl.run("delete", "pod", "x", "-n", namespace)
    assert deleted.stdout.strip() == 'pod "x" deleted'

    missing = kubectl.fails("get", "pod", "x", "-n", namespace)
    assert missing.stderr.strip() == 'Error from server (NotFound): pods "x" not found'
    assert missing.stdout == ""


def test_create_invalid_pod_prints_the_field(kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
    path = write(tmp_path, "noimage.yaml", pod_manifest("x", image=None))
    result = kubectl.fails("create", "-f", str(path), "-n", namespace)
    lines = result.stderr.strip().splitlines()
    assert any(ln.startswith('The Pod "x" is invalid:') for ln in lines), result.stderr
    assert "spec.containers[0].image: Required value" in result.stderr
    assert lines == ['The Pod "x" is invalid: spec.containers[0].image: Required value'], result.stderr
    kubectl.fails("get", "pod", "x", "-n", namespace)


def last_applied(manifest: dict[str, Any], namespace: str) -> dict[str, Any]:
    """What kubectl records as the last applied configuration of ``manifest`` applied with ``-n``.

    kubectl serialises the file's object with the namespace filled in and its own annotation
    taken out, which leaves ``annotations: {}``.
    """
    return {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace, "annotations": {}}}


def test_apply_twice_changes_exactly_what_the_file_changed(kubectl: Kubectl, apiserver: Any, namespace: str,
                                                          tmp_path: Path) -> None:
    # A Deployment: unlike a Pod's, its template's env may change after creation.
    first = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "frontend"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}],
                     "ports": [{"containerPort": 8080}]},
                    {"name": "side", "image": "busybox:1.35", "command": ["sleep", "3600"],
                     "env": [{"name": "S", "value": "s"}]},
                ]},
            },
        },
    }
    second = copy.deepcopy(first)
    del second["metadata"]["labels"]["tier"]
    app = second["spec"]["template"]["spec"]["containers"][0]
    app["image"] = "busybox:1.37"
    app["env"] = [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    path = tmp_path / "web.yaml"
    url_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"

    path.write_text(yaml.safe_dump(first, sort_keys=False))
    assert kubectl.run("apply", "-f", str(path), "-n", namespace).stdout.strip() == "deployment.apps/web created"
    before = stored(apiserver, url_path)
    assert json.loads(before["metadata"]["annotations"][LAST_APPLIED]) == last_applied(first, namespace)
    assert before["metadata"]["labels"] == {"app": "web", "tier": "frontend"}

    path.write_text(yaml.safe_dump(second, sort_keys=False))
    assert kubectl.run("apply", "-f", str(path), "-n", namespace).stdout.strip() == "deployment.apps/web configured"
    after = stored(apiserver, url_path)

    containers = after["spec"]["template"]["spec"]["containers"]
    assert after["metadata"]["labels"] == {"app": "web"}
    assert [(c["name"], c["image"]) for c in containers] == [("app", "busybox:1.37"), ("side", "busybox:1.35")]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    assert containers[1]["env"] == [{"name": "S", "value": "s"}]
    assert json.loads(after["metadata"]["annotations"][LAST_APPLIED]) == last_applied(second, namespace)
    assert list(after["metadata"]["annotations"]) == [LAST_APPLIED]
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])

    # Nothing else changed: the first stored object plus exactly the file's changes is the second.
    expected = copy.deepcopy(before)
    expected["metadata"]["labels"] = {"app": "web"}
    expected["metadata"]["annotations"][LAST_APPLIED] = after["metadata"]["annotations"][LAST_APPLIED]
    expected["metadata"]["resourceVersion"] = after["metadata"]["resourceVersion"]
    expected["metadata"]["generation"] = before["metadata"]["generation"] + 1
    expected_app = expected["spec"]["template"]["spec"]["containers"][0]
    expected_app["image"] = "busybox:1.37"
    expected_app["env"] = [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    assert after == expected

    # The same file again sends no change at all.
    assert kubectl.run("apply", "-f", str(path), "-n", namespace).stdout.strip() == "deployment.apps/web unchanged"
    assert stored(apiserver, url_path) == after


def test_create_dry_run_yaml_piped_to_apply(kubectl: Kubectl, apiserver: Any, namespace: str) -> None:
    manifest = kubectl.run("create", "deployment", "piped", "--image=busybox", "--dry-run=client", "-o", "yaml",
                           "-n", namespace).stdout
    doc = yaml.safe_load(manifest)
    # A real manifest, with the fields kubectl writes that minik8s does not act on.
    assert doc["kind"] == "Deployment" and doc["metadata"]["creationTimestamp"] is None and "status" in doc
    assert kubectl.run("apply", "-f", "-", "-n", namespace, input=manifest).stdout.strip() == \
        "deployment.apps/piped created"
    dep = stored(apiserver, f"/apis/apps/v1/namespaces/{namespace}/deployments/piped")
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "piped"}}
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"
    assert dep["spec"]["replicas"] == 1
    assert dep["metadata"]["creationTimestamp"]  # the server's, not the manifest's null
    assert LAST_APPLIED in dep["metadata"]["annotations"]


def test_apply_rejects_an_unknown_field(kubectl: Kubectl, apiserver: Any, namespace: str, tmp_path: Path) -> None:
    doc = pod_manifest("bogus")
    doc["spec"]["bogusField"] = "x"
    path = write(tmp_path, "bogus.yaml", doc)
    result = kubectl.fails("apply", "-f", str(path), "-n", namespace)
    assert result.stderr.startswith("Error from server (BadRequest): "), result.stderr
    assert "strict decoding error" in result.stderr
    assert 'unknown field "spec.bogusField"' in result.stderr
    gone = kubectl.fails("get", "pod", "bogus", "-n", namespace)
    assert gone.stderr.strip() == 'Error from server (NotFound): pods "bogus" not found'

    # On an existing object the apply is a PATCH, validated as strictly.
    good = pod_manifest("bogus")
    write(tmp_path, "bogus.yaml", good)
    assert kubectl.run("apply", "-f", str(path), "-n", namespace).stdout.strip() == "pod/bogus created"
    before = stored(apiserver, f"/api/v1/namespaces/{namespace}/pods/bogus")
    write(tmp_path, "bogus.yaml", doc)
    result = kubectl.fails("apply", "-f", str(path), "-n", namespace)
    assert result.stderr.startswith("Error from server (BadRequest): "), result.stderr
    assert 'unknown field "spec.bogusField"' in result.stderr
    assert stored(apiserver, f"/api/v1/namespaces/{namespace}/pods/bogus") == before


# --- scale, get all, api-resources ---------------------------------------------------------------

def deployment_manifest(name: str, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}}}}


def test_scale_and_get_all(kubectl: Kubectl, kube: client.ApiClient, apiserver: Any, namespace: str,
                           tmp_path: Path) -> None:
    path = write(tmp_path, "web.yaml", deployment_manifest("web"))
    assert kubectl.run("create", "-f", str(path), "-n", namespace).stdout.strip() == "deployment.apps/web created"
    assert kubectl.run("scale", "deployment", "web", "--replicas=3", "-n", namespace).stdout.strip() == \
        "deployment.apps/web scaled"
    dep = stored(apiserver, f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    assert dep["spec"]["replicas"] == 3
    assert client.AppsV1Api(kube).read_namespaced_deployment_scale("web", namespace).spec.replicas == 3

    header, rows = table(kubectl.run("get", "deploy", "-n", namespace).stdout)
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows["web"][:4] == ["web", "0/3", "0", "0"]

    make_pod(kube, namespace, "loner")
    client.CoreV1Api(kube).create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="websvc"),
        spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80)])))
    out = kubectl.run("get", "all", "-n", namespace).stdout
    names = {columns(ln)[0] for ln in out.splitlines() if ln.strip() and not ln.startswith("NAME")}
    assert {"pod/loner", "service/websvc", "deployment.apps/web"} <= names, out
    assert kubectl.run("get", "all", "-n", namespace, "-o", "name").stdout.split().count("deployment.apps/web") == 1


def test_api_resources(kubectl: Kubectl) -> None:
    out = kubectl.run("api-resources").stdout
    header, _ = table(out)
    assert header == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    rows: dict[str, list[str]] = {}
    for ln in out.splitlines()[1:]:
        if ln.strip():
            # metrics.k8s.io lists pods and nodes a second time (PodMetrics, NodeMetrics), as with metrics-server.
            rows.setdefault(columns(ln)[0], columns(ln))
    metrics = [ln for ln in out.splitlines() if "metrics.k8s.io/v1beta1" in ln]
    assert {columns(ln)[-1] for ln in metrics} == {"PodMetrics", "NodeMetrics"}, metrics
    assert rows["pods"] == ["pods", "po", "v1", "true", "Pod"]
    assert rows["deployments"] == ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    assert rows["services"] == ["services", "svc", "v1", "true", "Service"]
    assert rows["nodes"] == ["nodes", "no", "v1", "false", "Node"]
    assert rows["namespaces"] == ["namespaces", "ns", "v1", "false", "Namespace"]
    # Subresources are not kinds of their own.
    assert "pods/status" not in rows and "deployments/scale" not in rows
    # The dispatcher picked the kubectl matching the server: these tests speak to kubectl 1.32.
    versions = json.loads(kubectl.run("version", "-o", "json").stdout)
    assert versions["serverVersion"]["minor"] == "32"
    assert versions["clientVersion"]["gitVersion"].startswith("v1.32.")


def test_typed_create_commands(kubectl: Kubectl, apiserver: Any, namespace: str) -> None:
    """``kubectl create deployment|namespace|service|ingress`` use client-go's typed clientset, which
    since kubectl 1.31 sends its bodies as ``application/vnd.kubernetes.protobuf`` (with no fallback to
    JSON on 415), unlike ``create -f`` / ``apply`` (JSON). The apiserver decodes them and answers JSON."""
    def create(*args: str) -> str:
        return kubectl.run("create", "-n", namespace, *args).stdout.strip()

    def get(path: str) -> dict[str, Any]:
        return stored(apiserver, ("/api/" if path.startswith("v1/") else "/apis/") + path)

    assert create("deployment", "typed", "--image=busybox:1.36") == "deployment.apps/typed created"
    dep = get(f"apps/v1/namespaces/{namespace}/deployments/typed")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.36"
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "typed"}}
    assert dep["spec"]["replicas"] == 1
    assert dep["metadata"]["labels"] == {"app": "typed"}

    assert create("deployment", "web", "--image=nginx:1.25", "--replicas=3", "--port=8080",
                  "--", "sleep", "3600") == "deployment.apps/web created"
    dep = get(f"apps/v1/namespaces/{namespace}/deployments/web")
    assert dep["spec"]["replicas"] == 3
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert (container["name"], container["image"], container["command"]) == ("nginx", "nginx:1.25", ["sleep", "3600"])
    assert [(p["containerPort"], p["protocol"]) for p in container["ports"]] == [(8080, "TCP")]
    assert dep["spec"]["template"]["metadata"]["labels"] == {"app": "web"}

    # A pointer's zero survives the protobuf round trip (and is not defaulted to 1).
    assert create("deployment", "idle", "--image=nginx:1.25", "--replicas=0") == "deployment.apps/idle created"
    assert get(f"apps/v1/namespaces/{namespace}/deployments/idle")["spec"]["replicas"] == 0

    assert create("service", "clusterip", "web", "--tcp=80:8080") == "service/web created"
    svc = get(f"v1/namespaces/{namespace}/services/web")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {"app": "web"}
    assert [(p["name"], p["port"], p["targetPort"], p["protocol"]) for p in svc["spec"]["ports"]] \
        == [("80-8080", 80, 8080, "TCP")]
    assert svc["spec"]["clusterIP"] not in ("", "None", None)

    assert create("service", "nodeport", "web-np", "--tcp=81:8081") == "service/web-np created"
    svc = get(f"v1/namespaces/{namespace}/services/web-np")
    assert svc["spec"]["type"] == "NodePort"
    [port] = svc["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (81, 8081)
    assert 30000 <= port["nodePort"] <= 32767

    assert create("ingress", "web", "--rule=web.example.com/api*=web:80", "--rule=other.example.com/=web:http") \
        == "ingress.networking.k8s.io/web created"
    ing = get(f"networking.k8s.io/v1/namespaces/{namespace}/ingresses/web")
    assert ing["spec"]["rules"] == [
        {"host": "web.example.com", "http": {"paths": [
            {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}},
        {"host": "other.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}},
    ]

    # The JSON answers read back fine through kubectl.
    names = kubectl.run("get", "deployments,services,ingresses", "-n", namespace, "-o", "name").stdout.split()
    assert set(names) == {"deployment.apps/typed", "deployment.apps/web", "deployment.apps/idle", "service/web",
                          "service/web-np", "ingress.networking.k8s.io/web"}

    # kubectl drain deletes pods through the typed client: DeleteOptions as protobuf (here gracePeriodSeconds=0).
    delete_options = b'k8s\x00\n\x13\n\x02v1\x12\rDeleteOptions\x12\x02\x08\x00\x1a\x00"\x00'
    status, body = h.http(f"{apiserver.url}/apis/apps/v1/namespaces/{namespace}/deployments/idle", "DELETE",
                          delete_options, content_type="application/vnd.kubernetes.protobuf")
    assert status == 200, body

    other = h.unique("e2e-ns")
    try:
        assert kubectl.run("create", "namespace", other).stdout.strip() == f"namespace/{other} created"
        assert get(f"v1/namespaces/{other}")["metadata"]["name"] == other
    finally:
        kubectl.run("delete", "namespace", other, "--wait=false", check=False)
