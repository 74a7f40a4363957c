"""validate(): valid objects pass, and each rule rejects with Kubernetes' path, message and reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from minik8s.api import apply_defaults, validate
from minik8s.api.names import DNS1035_LABEL_ERROR, DNS1123_LABEL_ERROR, DNS1123_SUBDOMAIN_ERROR
from minik8s.api.registry import RESOURCES, ResourceType
from minik8s.api.samples import sample
from minik8s.api.validation import POD_UPDATE_FORBIDDEN, SELECTOR_MISMATCH
from minik8s.errors import Cause

RT = {r.kind: r for r in RESOURCES}


def _causes(kind: str, change: Callable[[dict[str, Any]], Any], *, defaults: bool = False) -> list[Cause]:
    obj = sample(kind)
    change(obj)
    if defaults:
        apply_defaults(obj, RT[kind])
    return validate(obj, RT[kind])


@pytest.mark.parametrize("rt", RESOURCES, ids=lambda r: r.kind)
def test_samples_pass_before_and_after_defaults(rt: ResourceType):
    obj = sample(rt.kind)
    assert validate(obj, rt) == []
    apply_defaults(obj, rt)
    assert validate(obj, rt) == []
    assert validate(obj, rt, old=obj) == []


def test_kubectl_create_deployment_manifest_is_accepted():
    manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"creationTimestamp": None, "labels": {"app": "x"}, "name": "x"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}}, "strategy": {},
                 "template": {"metadata": {"creationTimestamp": None, "labels": {"app": "x"}},
                              "spec": {"containers": [{"image": "busybox", "name": "busybox", "resources": {}}]}}},
        "status": {},
    }
    assert validate(manifest, RT["Deployment"]) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets a dotted path (``spec.containers.0.image``) to ``value``."""
    def change(obj: dict[str, Any]) -> None:
        keys = path.split(".")
        cur: Any = obj
        for k in keys[:-1]:
            cur = cur[int(k)] if isinstance(cur, list) else cur.setdefault(k, {})
        last = keys[-1]
        if value is _DELETE:
            del cur[last]
        elif isinstance(cur, list):
            cur[int(last)] = value
        else:
            cur[last] = value
    return change


_DELETE = object()

CASES: list[tuple[str, Callable[[dict[str, Any]], Any], Cause]] = [
    # metadata
    ("Pod", _set("metadata.name", "Bad_Name"),
     Cause("metadata.name", f'Invalid value: "Bad_Name": {DNS1123_SUBDOMAIN_ERROR}', "FieldValueInvalid")),
    ("Pod", _set("metadata.name", _DELETE),
     Cause("metadata.name", "Required value: name or generateName is required", "FieldValueRequired")),
    ("Namespace", _set("metadata.name", "a.b"),
     Cause("metadata.name", f'Invalid value: "a.b": {DNS1123_LABEL_ERROR}', "FieldValueInvalid")),
    ("Service", _set("metadata.name", "1web"),
     Cause("metadata.name", f'Invalid value: "1web": {DNS1035_LABEL_ERROR}', "FieldValueInvalid")),
    ("Pod", _set("metadata.labels", {"app": "a b"}),
     Cause("metadata.labels", 'Invalid value: "a b": a valid label must be an empty string or consist of '
           "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character "
           "(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
           "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')", "FieldValueInvalid")),
    ("Pod", _set("metadata.annotations", {"a": "x" * (256 * 1024)}),
     Cause("metadata.annotations", "Too long: must have at most 262144 bytes", "FieldValueTooLong")),
    ("Pod", _set("metadata.ownerReferences", [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs"}]),
     Cause("metadata.ownerReferences.uid", 'Invalid value: "": uid must not be empty', "FieldValueInvalid")),
    # pod spec
    ("Pod", _set("spec.containers.0.image", _DELETE),
     Cause("spec.containers[0].image", "Required value", "FieldValueRequired")),
    ("Pod", _set("spec.containers", []), Cause("spec.containers", "Required value", "FieldValueRequired")),
    ("Pod", lambda o: o["spec"]["containers"].append({"name": "web", "image": "x"}),
     Cause("spec.containers[1].name", 'Duplicate value: "web"', "FieldValueDuplicate")),
    ("Pod", _set("spec.containers.0.name", "Web"),
     Cause("spec.containers[0].name", f'Invalid value: "Web": {DNS1123_LABEL_ERROR}', "FieldValueInvalid")),
    ("Pod", _set("spec.restartPolicy", "X"),
     Cause("spec.restartPolicy", 'Unsupported value: "X": supported values: "Always", "Never", "OnFailure"',
           "FieldValueNotSupported")),
    ("Pod", _set("spec.containers.0.ports.0.containerPort", 70000),
     Cause("spec.containers[0].ports[0].containerPort",
           "Invalid value: 70000: must be between 1 and 65535, inclusive", "FieldValueInvalid")),
    ("Pod", _set("spec.containers.0.ports.0.protocol", "ICMP"),
     Cause("spec.containers[0].ports[0].protocol",
           'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"', "FieldValueNotSupported")),
    ("Pod", _set("spec.containers.0.resources", {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}),
     Cause("spec.containers[0].resources.requests[cpu]",
           'Invalid value: "2": must be less than or equal to cpu limit of 1', "FieldValueInvalid")),
    ("Pod", _set("spec.containers.0.resources", {"limits": {"memory": "lots"}}),
     Cause("spec.containers[0].resources.limits[memory]",
           "Invalid value: \"lots\": quantities must match the regular expression "
           "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'", "FieldValueInvalid")),
    ("Pod", _set("spec.containers.0.readinessProbe", {"periodSeconds": 3}),
     Cause("spec.containers[0].readinessProbe", "Required value: must specify a handler type",
           "FieldValueRequired")),
    ("Pod", _set("spec.containers.0.livenessProbe", {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}),
     Cause("spec.containers[0].livenessProbe.tcpSocket", "Forbidden: may not specify more than 1 handler type",
           "FieldValueForbidden")),
    ("Pod", _set("spec.containers.0.readinessProbe.periodSeconds", -1),
     Cause("spec.containers[0].readinessProbe.periodSeconds",
           "Invalid value: -1: must be greater than or equal to 0", "FieldValueInvalid")),
    ("Pod", _set("spec.containers.0.env.0.name", "1A"),
     Cause("spec.containers[0].env[0].name",
           "Invalid value: \"1A\": a valid environment variable name must consist of alphabetic characters, "
           "digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  "
           "or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')", "FieldValueInvalid")),
    ("Pod", _set("spec.containers.0.volumeMounts.0.name", "nope"),
     Cause("spec.containers[0].volumeMounts[0].name", 'Not found: "nope"', "FieldValueNotFound")),
    ("Pod", lambda o: o["spec"]["volumes"].append({"name": "cache", "hostPath": {"path": "/tmp"}}),
     Cause("spec.volumes[1].name", 'Duplicate value: "cache"', "FieldValueDuplicate")),
    ("Pod", _set("spec.volumes.0", {"name": "cache"}),
     Cause("spec.volumes[0]", "Required value: must specify a volume type", "FieldValueRequired")),
    ("Pod", _set("spec.volumes.0.hostPath", {"path": "/tmp"}),
     Cause("spec.volumes[0].hostPath", "Forbidden: may not specify more than 1 volume type",
           "FieldValueForbidden")),
    ("Pod", _set("spec.terminationGracePeriodSeconds", -5),
     Cause("spec.terminationGracePeriodSeconds", "Invalid value: -5: must be greater than or equal to 0",
           "FieldValueInvalid")),
    ("Pod", _set("spec.containers", {"name": "x"}),
     Cause("spec.containers", 'Invalid value: {"name":"x"}: must be a list', "FieldValueTypeInvalid")),
    ("Pod", _set("spec.containers.0.ports.0.containerPort", "80"),
     Cause("spec.containers[0].ports[0].containerPort", 'Invalid value: "80": must be an integer',
           "FieldValueTypeInvalid")),
    # service
    ("Service", _set("spec.ports", []), Cause("spec.ports", "Required value", "FieldValueRequired")),
    ("Service", _set("spec.ports.0.port", 0),
     Cause("spec.ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive", "FieldValueInvalid")),
    ("Service", lambda o: o["spec"]["ports"].append({"name": "80-8080", "port": 81}),
     Cause("spec.ports[1].name", 'Duplicate value: "80-8080"', "FieldValueDuplicate")),
    ("Service", lambda o: o["spec"]["ports"].append({"port": 81}),
     Cause("spec.ports[1].name", "Required value", "FieldValueRequired")),
    ("Service", _set("spec.ports.0.nodePort", 30080),
     Cause("spec.ports[0].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'", "FieldValueForbidden")),
    ("Service", _set("spec.ports.0.targetPort", "Http"),
     Cause("spec.ports[0].targetPort",
           'Invalid value: "Http": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)',
           "FieldValueInvalid")),
    ("Service", _set("spec.type", "Magic"),
     Cause("spec.type", 'Unsupported value: "Magic": supported values: "ClusterIP", "ExternalName", '
           '"LoadBalancer", "NodePort"', "FieldValueNotSupported")),
    ("Service", _set("spec.clusterIP", "10.0.0.300"),
     Cause("spec.clusterIP", 'Invalid value: "10.0.0.300": must be a valid IP address, (e.g. 10.9.8.7)',
           "FieldValueInvalid")),
    # endpoints
    ("Endpoints", _set("subsets.0.addresses.0.ip", "nope"),
     Cause("subsets[0].addresses[0].ip", 'Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7)',
           "FieldValueInvalid")),
    ("Endpoints", _set("subsets.0.ports.0.port", -1),
     Cause("subsets[0].ports[0].port", "Invalid value: -1: must be between 1 and 65535, inclusive",
           "FieldValueInvalid")),
    # replicaset / deployment
    ("Deployment", _set("spec.selector", _DELETE), Cause("spec.selector", "Required value", "FieldValueRequired")),
    ("Deployment", _set("spec.selector", {}),
     Cause("spec.selector", "Invalid value: {}: empty selector is invalid for deployment", "FieldValueInvalid")),
    ("Deployment", _set("spec.template.metadata.labels", {"app": "y"}),
     Cause("spec.template.metadata.labels", f'Invalid value: {{"app":"y"}}: {SELECTOR_MISMATCH}',
           "FieldValueInvalid")),
    ("ReplicaSet", _set("spec.replicas", -1),
     Cause("spec.replicas", "Invalid value: -1: must be greater than or equal to 0", "FieldValueInvalid")),
    ("ReplicaSet", _set("spec.template.spec.containers.0.image", ""),
     Cause("spec.template.spec.containers[0].image", "Required value", "FieldValueRequired")),
    ("ReplicaSet", _set("spec.template.spec.restartPolicy", "Never"),
     Cause("spec.template.spec.restartPolicy", 'Unsupported value: "Never": supported values: "Always"',
           "FieldValueNotSupported")),
    ("Deployment", _set("spec.strategy", {"type": "Sideways"}),
     Cause("spec.strategy.type", 'Unsupported value: "Sideways": supported values: "Recreate", "RollingUpdate"',
           "FieldValueNotSupported")),
    ("Deployment", _set("spec.strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0,
                                                                                       "maxUnavailable": "0%"}}),
     Cause("spec.strategy.rollingUpdate.maxUnavailable", 'Invalid value: "0%": may not be 0 when `maxSurge` is 0',
           "FieldValueInvalid")),
    ("Deployment", _set("spec.strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x"}}),
     Cause("spec.strategy.rollingUpdate.maxSurge",
           "Invalid value: \"x\": a valid percent string must be a numeric string followed by an ending '%' "
           "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')", "FieldValueInvalid")),
    ("Deployment", _set("spec.selector", {"matchExpressions": [{"key": "app", "operator": "Near"}]}),
     Cause("spec.selector.matchExpressions[0].operator", 'Invalid value: "Near": not a valid selector operator',
           "FieldValueInvalid")),
    # hpa
    ("HorizontalPodAutoscaler", _set("spec.scaleTargetRef.name", ""),
     Cause("spec.scaleTargetRef.name", "Required value", "FieldValueRequired")),
    ("HorizontalPodAutoscaler", _set("spec.minReplicas", 0),
     Cause("spec.minReplicas", "Invalid value: 0: must be greater than or equal to 1", "FieldValueInvalid")),
    ("HorizontalPodAutoscaler", _set("spec.maxReplicas", 0),
     Cause("spec.maxReplicas", "Invalid value: 0: must be greater than 0", "FieldValueInvalid")),
    ("HorizontalPodAutoscaler", lambda o: o["spec"].update(minReplicas=4, maxReplicas=2),
     Cause("spec.maxReplicas", "Invalid value: 2: must be greater than or equal to `minReplicas`",
           "FieldValueInvalid")),
    ("HorizontalPodAutoscaler", _set("spec.metrics.0.resource.target.type", "Most"),
     Cause("spec.metrics[0].resource.target.type",
           'Unsupported value: "Most": supported values: "AverageValue", "Utilization", "Value"',
           "FieldValueNotSupported")),
    ("HorizontalPodAutoscaler", _set("spec.metrics.0.resource.target", {"type": "AverageValue"}),
     Cause("spec.metrics[0].resource.target.averageValue",
           "Required value: must set averageValue when `type` is 'AverageValue'", "FieldValueRequired")),
    # ingress
    ("Ingress", _set("spec.rules.0.http.paths.0.path", "bar"),
     Cause("spec.rules[0].http.paths[0].path", 'Invalid value: "bar": must be an absolute path',
           "FieldValueInvalid")),
    ("Ingress", _set("spec.rules.0.http.paths.0.pathType", _DELETE),
     Cause("spec.rules[0].http.paths[0].pathType", "Required value: pathType must be specified",
           "FieldValueRequired")),
    ("Ingress", _set("spec.rules.0.http.paths.0.pathType", "Fuzzy"),
     Cause("spec.rules[0].http.paths[0].pathType",
           'Unsupported value: "Fuzzy": supported values: "Exact", "ImplementationSpecific", "Prefix"',
           "FieldValueNotSupported")),
    ("Ingress", _set("spec.rules.0.http.paths.0.backend.service.name", ""),
     Cause("spec.rules[0].http.paths[0].backend.service.name", "Required value", "FieldValueRequired")),
    ("Ingress", _set("spec.rules.0.http.paths.0.backend.service.port", {}),
     Cause("spec.rules[0].http.paths[0].backend.service.port", "Required value: port name or number is required",
           "FieldValueRequired")),
    # function / workflow
    ("Function", _set("spec.runtime", "go"),
     Cause("spec.runtime", 'Unsupported value: "go": supported values: "python"', "FieldValueNotSupported")),
    ("Function", lambda o: o["spec"].update(minScale=3, maxScale=2),
     Cause("spec.maxScale", "Invalid value: 2: must be greater than or equal to `minScale`", "FieldValueInvalid")),
    ("Function", _set("spec.minScale", -1),
     Cause("spec.minScale", "Invalid value: -1: must be greater than or equal to 0", "FieldValueInvalid")),
    ("Function", _set("spec.targetConcurrency", 0),
     Cause("spec.targetConcurrency", "Invalid value: 0: must be greater than or equal to 1", "FieldValueInvalid")),
    ("Function", _set("spec.idleTimeout", -1),
     Cause("spec.idleTimeout", "Invalid value: -1: must be greater than 0", "FieldValueInvalid")),
    ("Workflow", _set("spec.startAt", "nowhere"),
     Cause("spec.startAt", 'Invalid value: "nowhere": must name a state in `spec.states`', "FieldValueInvalid")),
    # namespace, node, event
    ("Node", _set("spec.podCIDR", "10.0.0.0/40"),
     Cause("spec.podCIDR", 'Invalid value: "10.0.0.0/40": must be a valid CIDR value, (e.g. 10.9.8.0/24)',
           "FieldValueInvalid")),
    ("Node", _set("spec.taints.0.effect", "Sometimes"),
     Cause("spec.taints[0].effect",
           'Unsupported value: "Sometimes": supported values: "NoExecute", "NoSchedule", "PreferNoSchedule"',
           "FieldValueNotSupported")),
    ("Event", _set("involvedObject", _DELETE), Cause("involvedObject", "Required value", "FieldValueRequired")),
    ("Namespace", _set("status.phase", "Gone"),
     Cause("status.phase", 'Unsupported value: "Gone": supported values: "Active", "Terminating"',
           "FieldValueNotSupported")),
]


@pytest.mark.parametrize(("kind", "change", "expected"), CASES,
                         ids=[f"{k}:{c.field}:{c.reason}" for k, _, c in CASES])
def test_rule_rejects_with_kubernetes_wording(kind: str, change: Callable[[dict[str, Any]], Any], expected: Cause):
    causes = _causes(kind, change)
    assert expected in causes, causes
    # The defaulted object is rejected the same way (the apiserver defaults first).
    assert expected in _causes(kind, change, defaults=True)


def test_cause_serializes_like_kubernetes():
    [cause] = _causes("Pod", _set("spec.containers.0.image", _DELETE))
    # As a real apiserver: the field is not repeated in the message (kubectl prints "field: message").
    assert cause.to_dict() == {"reason": "FieldValueRequired", "message": "Required value",
                               "field": "spec.containers[0].image"}


def test_huge_and_boolean_numbers_are_type_errors():
    causes = _causes("Deployment", _set("spec.replicas", 2**40))
    assert causes == [Cause("spec.replicas", "Invalid value: 1099511627776: must be a 32-bit integer",
                            "FieldValueTypeInvalid")]
    causes = _causes("Deployment", _set("spec.replicas", True))
    assert causes == [Cause("spec.replicas", "Invalid value: true: must be an integer", "FieldValueTypeInvalid")]


def test_generate_name_alone_is_not_enough_at_validate_time():
    def change(o: dict[str, Any]) -> None:
        del o["metadata"]["name"]
        o["metadata"]["generateName"] = "web-"
    assert [c.field for c in _causes("Pod", change)] == ["metadata.name"]


def test_sidecar_init_containers_may_have_probes_but_plain_ones_may_not():
    probe = {"exec": {"command": ["true"]}}

    def plain(o: dict[str, Any]) -> None:
        o["spec"]["initContainers"] = [{"name": "init", "image": "busybox", "livenessProbe": probe}]

    def sidecar(o: dict[str, Any]) -> None:
        o["spec"]["initContainers"] = [{"name": "init", "image": "busybox", "livenessProbe": probe,
                                        "restartPolicy": "Always"}]

    assert [c.field for c in _causes("Pod", plain)] == ["spec.initContainers[0].livenessProbe"]
    assert _causes("Pod", sidecar) == []


def test_headless_service_without_ports_and_nodeport_service_pass():
    assert _causes("Service", lambda o: o["spec"].update(clusterIP="None", ports=[])) == []
    assert _causes("Service", lambda o: o["spec"].update(type="NodePort", ports=[
        {"port": 80, "nodePort": 30080, "targetPort": "http", "name": "http"}])) == []


# --- updates -----------------------------------------------------------------------------------------


def _defaulted(kind: str) -> dict[str, Any]:
    obj = sample(kind)
    apply_defaults(obj, RT[kind])
    obj["metadata"].update(uid="u-1", resourceVersion="5", namespace="default")
    return obj


@pytest.mark.parametrize("rt", RESOURCES, ids=lambda r: r.kind)
def test_status_only_updates_pass(rt: ResourceType):
    old = _defaulted(rt.kind)
    new = _defaulted(rt.kind)
    new["status"] = {"observedGeneration": 3} if rt.kind not in ("Namespace", "Pod") else {"phase": "Running"
                                                                                           if rt.kind == "Pod"
                                                                                           else "Active"}
    assert validate(new, rt, old=old) == []


def test_deployment_selector_is_immutable():
    old = _defaulted("Deployment")
    new = _defaulted("Deployment")
    new["spec"]["selector"] = {"matchLabels": {"app": "x", "tier": "web"}}
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
    assert validate(new, RT["Deployment"], old=old) == [
        Cause("spec.selector", 'Invalid value: {"matchLabels":{"app":"x","tier":"web"}}: field is immutable',
              "FieldValueInvalid")]
    new = _defaulted("Deployment")
    new["spec"]["replicas"] = 7
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.36"
    assert validate(new, RT["Deployment"], old=old) == []


def test_service_cluster_ip_is_immutable_once_set():
    old = _defaulted("Service")
    old["spec"]["clusterIP"] = "10.96.0.10"
    new = _defaulted("Service")
    new["spec"]["clusterIP"] = "10.96.0.11"
    assert validate(new, RT["Service"], old=old) == [
        Cause("spec.clusterIP", 'Invalid value: "10.96.0.11": field is immutable', "FieldValueInvalid")]
    new["spec"]["clusterIP"] = ""
    assert validate(new, RT["Service"], old=old) == []
    unset = _defaulted("Service")
    assert validate(old, RT["Service"], old=unset) == []


def test_pod_updates_may_change_only_images_deadline_and_binding():
    old = _defaulted("Pod")
    new = _defaulted("Pod")
    new["spec"]["containers"][0]["image"] = "nginx:1.27"
    new["spec"]["activeDeadlineSeconds"] = 60
    new["spec"]["nodeName"] = "node-1"
    new["metadata"]["labels"]["extra"] = "yes"
    assert validate(new, RT["Pod"], old=old) == []
    moved = _defaulted("Pod")
    moved["spec"]["nodeName"] = "node-2"
    assert validate(moved, RT["Pod"], old=new) == [Cause("spec", f"Forbidden: {POD_UPDATE_FORBIDDEN}",
                                                         "FieldValueForbidden")]
    changed = _defaulted("Pod")
    changed["spec"]["restartPolicy"] = "Never"
    assert [c.field for c in validate(changed, RT["Pod"], old=old)] == ["spec"]
