"""apply_defaults(), unknown_fields(), unused_fields() and the TypedDict model."""

from __future__ import annotations

import copy
import time
import typing
from typing import Any

import pytest

from minik8s.api import apply_defaults, unknown_fields, unused_fields, validate
from minik8s.api.registry import RESOURCES, ResourceType
from minik8s.api.samples import sample
from minik8s.api.types import KINDS

RT = {r.kind: r for r in RESOURCES}


@pytest.mark.parametrize("rt", RESOURCES, ids=lambda r: r.kind)
def test_defaults_are_idempotent(rt: ResourceType):
    obj = sample(rt.kind)
    apply_defaults(obj, rt)
    again = copy.deepcopy(obj)
    apply_defaults(again, rt)
    assert again == obj


def test_pod_defaults():
    pod: dict[str, Any] = {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "busybox", "ports": [{"containerPort": 80}],
         "livenessProbe": {"httpGet": {"port": 80}, "periodSeconds": 0},
         "resources": {"limits": {"cpu": "1"}}},
        {"name": "b", "image": "registry:5000/app:1.2"},
        {"name": "c", "image": "app:latest", "imagePullPolicy": "Never"},
    ]}}
    apply_defaults(pod, RT["Pod"])
    spec = pod["spec"]
    assert (spec["restartPolicy"], spec["terminationGracePeriodSeconds"], spec["dnsPolicy"],
            spec["schedulerName"]) == ("Always", 30, "ClusterFirst", "default-scheduler")
    a, b, c = spec["containers"]
    assert (a["imagePullPolicy"], b["imagePullPolicy"], c["imagePullPolicy"]) == ("Always", "IfNotPresent", "Never")
    assert a["ports"][0]["protocol"] == "TCP"
    assert a["terminationMessagePath"] == "/dev/termination-log" and a["terminationMessagePolicy"] == "File"
    assert a["livenessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "periodSeconds": 10,
                                  "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3}
    assert a["resources"]["requests"] == {"cpu": "1"}
    assert pod["status"] == {"phase": "Pending"}


def test_controller_and_service_defaults():
    dep = sample("Deployment")
    del dep["spec"]["replicas"]
    apply_defaults(dep, RT["Deployment"])
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert "status" not in spec["template"]
    recreate = sample("Deployment")
    recreate["spec"]["strategy"] = {"type": "Recreate"}
    apply_defaults(recreate, RT["Deployment"])
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}

    svc: dict[str, Any] = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    apply_defaults(svc, RT["Service"])
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["sessionAffinity"] == "None"
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert "clusterIP" not in svc["spec"]

    hpa: dict[str, Any] = {"spec": {"maxReplicas": 3}}
    apply_defaults(hpa, RT["HorizontalPodAutoscaler"])
    assert hpa["spec"]["minReplicas"] == 1
    fn: dict[str, Any] = {"metadata": {"name": "f"}, "spec": {}}
    apply_defaults(fn, RT["Function"])
    assert fn["spec"] == {"runtime": "python", "entryPoint": "run", "minScale": 0, "maxScale": 10,
                          "targetConcurrency": 2, "idleTimeout": 60, "timeout": 60}
    assert validate(fn, RT["Function"]) == []
    ns: dict[str, Any] = {"metadata": {"name": "n"}}
    apply_defaults(ns, RT["Namespace"])
    assert ns["status"] == {"phase": "Active"}


def test_defaults_never_raise_on_bad_shapes():
    for rt in RESOURCES:
        bads: tuple[Any, ...] = ({"spec": []}, {"spec": {"containers": "x", "ports": 5, "template": []}},
                                 {"status": "x"},
                                 {"spec": {"strategy": "x", "template": {"spec": {"containers": [1, None]}}}},
                                 [])
        for bad in bads:
            apply_defaults(bad, rt)


def test_unknown_fields_use_kubernetes_paths():
    pod = sample("Pod")
    pod["spec"]["bogusField"] = 1
    pod["spec"]["containers"][0]["bogus"] = {"x": 1}
    pod["spec"]["containers"][0]["ports"][0]["nope"] = 1
    pod["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    pod["spec"]["affinity"] = {"nodeAffinity": {}}
    pod["metadata"]["labels"]["any/key"] = "v"
    assert sorted(unknown_fields(pod, RT["Pod"])) == ["spec.bogusField", "spec.containers[0].bogus",
                                                      "spec.containers[0].ports[0].nope"]
    dep = sample("Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    assert unknown_fields(dep, RT["Deployment"]) == ["spec.template.spec.containers[0].imagee"]
    fn = sample("Function")
    fn["spec"]["memory"] = 5
    fn["metadata"]["managedFields"] = []
    fn["spec"]["env"][0]["valueFrom"] = {"secretKeyRef": {"name": "s", "key": "k"}}
    fn["spec"]["states"] = {}
    assert sorted(unknown_fields(fn, RT["Function"])) == ["spec.memory", "spec.states"]
    wf = sample("Workflow")
    wf["spec"]["states"]["check"]["anything"] = {"goes": [1, 2]}
    assert unknown_fields(wf, RT["Workflow"]) == []
    for rt in RESOURCES:
        assert unknown_fields(sample(rt.kind), rt) == []


def test_unused_fields_are_upstream_fields_minik8s_ignores():
    pod = sample("Pod")
    pod["spec"]["affinity"] = {"nodeAffinity": {}}
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1}
    pod["spec"]["bogus"] = 1
    pod["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    pod["status"]["nominatedNodeName"] = "x"
    assert sorted(unused_fields(pod, RT["Pod"])) == ["spec.affinity", "spec.containers[0].securityContext"]
    fn = sample("Function")
    fn["metadata"]["selfLink"] = "/x"
    assert unused_fields(fn, RT["Function"]) == ["metadata.selfLink"]
    for rt in RESOURCES:
        obj = sample(rt.kind)
        apply_defaults(obj, rt)
        assert unused_fields(obj, rt) == [], rt.kind


def test_typed_model_is_consistent():
    for kind, td in KINDS.items():
        assert kind in RT
        assert typing.is_typeddict(td)
        assert {"apiVersion", "kind", "metadata"} <= set(typing.get_type_hints(td))


def test_schema_walks_are_fast():
    pod = sample("Pod")
    apply_defaults(pod, RT["Pod"])
    unknown_fields(pod, RT["Pod"])
    unused_fields(pod, RT["Pod"])
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        unknown_fields(pod, RT["Pod"])
        unused_fields(pod, RT["Pod"])
    per_call = (time.perf_counter() - start) / n
    assert per_call < 500e-6, f"{per_call * 1e6:.1f} µs per pod"
