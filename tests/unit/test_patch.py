"""Unit tests for minik8s.patch: strategic merge, JSON merge and JSON patch, and totality."""

from __future__ import annotations

import copy
import json
import random
import time
from typing import Any

import pytest

from minik8s.errors import ApiError, BadRequest, UnsupportedMediaType
from minik8s.patch import apply_patch

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def smp(original: dict, patch: Any, kind: str = "Pod") -> dict:
    """Apply a strategic merge patch and check that ``original`` was left alone."""
    before = copy.deepcopy(original)
    result = apply_patch(original, json.dumps(patch).encode(), SMP, kind=kind)
    assert original == before
    return result


def merge(original: dict, patch: Any) -> dict:
    return apply_patch(original, json.dumps(patch).encode(), MERGE, kind="Pod")


def jsonpatch(original: dict, ops: Any) -> dict:
    return apply_patch(original, json.dumps(ops).encode(), JSONP, kind="Pod")


def names(items: list[dict], key: str = "name") -> list[Any]:
    return [item[key] for item in items]


def pod(*containers: dict, **spec: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": list(containers), **spec}}


def deployment(*containers: dict) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": list(containers)}}}}


# ---------------------------------------------------------------------------------------------
# What kubectl and the Python client send


def _live_pod_for_second_apply() -> dict:
    first = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"labels": {"app": "web", "tier": "front"}, "name": "web", "namespace": "default"},
             "spec": {"containers": [
                 {"env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}], "image": "nginx:1", "name": "a"},
                 {"image": "nginx:1", "name": "b"}]}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "1b4e28ba", "resourceVersion": "7",
                     "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {"app": "web", "tier": "front"},
                     "annotations": {LAST_APPLIED: json.dumps(first, separators=(",", ":")) + "\n",
                                     "owner": "team-a"}},
        "spec": {"containers": [
            {"name": "a", "image": "nginx:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
             "ports": [{"containerPort": 80, "protocol": "TCP"}], "imagePullPolicy": "IfNotPresent",
             "terminationMessagePath": "/dev/termination-log"},
            {"name": "b", "image": "nginx:1", "args": ["--verbose"], "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always", "nodeName": "node-1", "tolerations": [{"key": "k", "operator": "Exists"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_kubectl_second_apply_removes_label_env_var_and_changes_one_image() -> None:
    live = _live_pod_for_second_apply()
    new_last = ('{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{},"labels":{"app":"web"},'
                '"name":"web","namespace":"default"},"spec":{"containers":[{"env":[{"name":"X","value":"1"}],'
                '"image":"nginx:1","name":"a"},{"image":"nginx:2","name":"b"}]}}\n')
    # Byte for byte what kubectl 1.32 sends: Go marshals map keys sorted, so "$..." keys come first.
    body = ('{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":'
            + json.dumps(new_last) + '},"labels":{"tier":null}},'
            '"spec":{"$setElementOrder/containers":[{"name":"a"},{"name":"b"}],'
            '"containers":[{"$setElementOrder/env":[{"name":"X"}],"env":[{"$patch":"delete","name":"Y"}],"name":"a"},'
            '{"image":"nginx:2","name":"b"}]}}').encode()
    before = copy.deepcopy(live)

    result = apply_patch(live, body, SMP, kind="Pod")

    assert live == before
    expected = copy.deepcopy(before)
    expected["metadata"]["labels"] = {"app": "web"}
    expected["metadata"]["annotations"][LAST_APPLIED] = new_last
    expected["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    expected["spec"]["containers"][1]["image"] = "nginx:2"
    assert result == expected
    # Order of containers and of the surviving env vars is kept.
    assert names(result["spec"]["containers"]) == ["a", "b"]


def test_kubectl_second_apply_on_a_deployment_template() -> None:
    live = deployment({"name": "a", "image": "nginx:1", "env": [{"name": "X", "value": "1"}, {"name": "Y"}]},
                      {"name": "b", "image": "nginx:1", "ports": [{"containerPort": 80}]})
    body = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [{"$setElementOrder/env": [{"name": "X"}], "env": [{"$patch": "delete", "name": "Y"}],
                        "name": "a"}, {"image": "nginx:2", "name": "b"}]}}}}
    result = smp(live, body, kind="Deployment")
    a, b = result["spec"]["template"]["spec"]["containers"]
    assert a == {"name": "a", "image": "nginx:1", "env": [{"name": "X", "value": "1"}]}
    assert b == {"name": "b", "image": "nginx:2", "ports": [{"containerPort": 80}]}
    assert result["spec"]["selector"] == {"matchLabels": {"app": "d"}}


def test_python_client_style_patches() -> None:
    d = deployment({"name": "a", "image": "nginx"})
    d["metadata"]["labels"] = {"x": "1"}
    assert smp(d, {"spec": {"replicas": 3}}, kind="Deployment")["spec"]["replicas"] == 3
    patched = smp(d, {"metadata": {"labels": {"a": "b"}}}, kind="Deployment")
    assert patched["metadata"]["labels"] == {"x": "1", "a": "b"}
    assert patched["spec"] == d["spec"]


def test_result_shares_nothing_with_original() -> None:
    live = _live_pod_for_second_apply()
    result = smp(live, {"metadata": {"labels": {"new": "1"}}})
    result["spec"]["containers"][0]["env"].append({"name": "Z"})
    result["metadata"]["annotations"]["owner"] = "someone-else"
    assert len(live["spec"]["containers"][0]["env"]) == 2
    assert live["metadata"]["annotations"]["owner"] == "team-a"


# ---------------------------------------------------------------------------------------------
# Strategic merge: maps and nulls


def test_null_deletes_and_unmatched_null_is_ignored() -> None:
    p = pod({"name": "a", "image": "x"}, nodeName="n1")
    result = smp(p, {"spec": {"nodeName": None, "hostname": None}})
    assert "nodeName" not in result["spec"]
    assert "hostname" not in result["spec"]


def test_nulls_inside_new_subtrees_are_dropped() -> None:
    result = smp(pod(), {"metadata": {"annotations": {"a": "1", "b": None}}, "spec": {"securityContext": {"x": None}}})
    assert result["metadata"]["annotations"] == {"a": "1"}
    assert result["spec"]["securityContext"] == {}


def test_recursive_map_merge() -> None:
    p = pod({"name": "a", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}})
    result = smp(p, {"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "2"}}}]}})
    assert result["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"}}


def test_type_change_replaces_value() -> None:
    result = smp({"metadata": {"name": "x"}, "data": {"a": 1}}, {"data": ["a"]}, kind="ConfigMap")
    assert result["data"] == ["a"]
    result = smp({"metadata": {"name": "x"}, "data": "s"}, {"data": {"a": None, "b": 1}}, kind="ConfigMap")
    assert result["data"] == {"b": 1}


def test_patch_replace_on_a_map() -> None:
    p = pod({"name": "a", "image": "x"}, nodeSelector={"disk": "ssd", "zone": "a"})
    result = smp(p, {"spec": {"nodeSelector": {"$patch": "replace", "gpu": "yes"}}})
    assert result["spec"]["nodeSelector"] == {"gpu": "yes"}


def test_patch_delete_on_a_map() -> None:
    p = pod({"name": "a", "image": "x"}, securityContext={"runAsUser": 1})
    result = smp(p, {"spec": {"securityContext": {"$patch": "delete"}}})
    assert "securityContext" not in result["spec"]
    assert result["spec"]["containers"] == [{"name": "a", "image": "x"}]


def test_patch_replace_at_the_root() -> None:
    result = smp(pod({"name": "a"}), {"$patch": "replace", "kind": "Pod", "metadata": {"name": "q"}})
    assert result == {"kind": "Pod", "metadata": {"name": "q"}}


def test_unknown_map_directive_is_rejected() -> None:
    with pytest.raises(BadRequest, match=r"\$patch"):
        smp(pod(), {"spec": {"$patch": "merge"}})


def test_retain_keys_clears_other_fields() -> None:
    d = deployment({"name": "a"})
    d["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}
    result = smp(d, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}, kind="Deployment")
    assert result["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_on_a_volume_switches_its_source() -> None:
    p = pod({"name": "a"}, volumes=[{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}])
    patch = {"spec": {"volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "v"}]}}
    result = smp(p, patch)
    assert result["spec"]["volumes"] == [{"name": "v", "configMap": {"name": "cm"}}, {"name": "w", "emptyDir": {}}]


def test_retain_keys_must_list_the_patched_fields() -> None:
    with pytest.raises(BadRequest, match="retainKeys"):
        smp(deployment(), {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}, kind="Deployment")
    with pytest.raises(BadRequest, match="retainKeys"):
        smp(deployment(), {"spec": {"strategy": {"$retainKeys": "type"}}}, kind="Deployment")


# ---------------------------------------------------------------------------------------------
# Strategic merge: lists merged by key


def test_containers_merge_by_name_leaving_others_untouched() -> None:
    p = pod({"name": "a", "image": "x", "args": ["1"]}, {"name": "b", "image": "y"})
    result = smp(p, {"spec": {"containers": [{"name": "b", "image": "z"}]}})
    assert result["spec"]["containers"] == [{"name": "a", "image": "x", "args": ["1"]}, {"name": "b", "image": "z"}]


def test_new_list_item_goes_first_without_set_element_order_like_the_apiserver() -> None:
    # The apiserver puts patch items before server-only items it cannot place relative to them.
    p = pod({"name": "a"}, {"name": "b"})
    assert names(smp(p, {"spec": {"containers": [{"name": "c"}]}})["spec"]["containers"]) == ["c", "a", "b"]
    ordered = {"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                        "containers": [{"name": "c"}]}}
    assert names(smp(p, ordered)["spec"]["containers"]) == ["a", "b", "c"]


def test_set_element_order_alone_reorders() -> None:
    p = pod({"name": "a"}, {"name": "b"}, {"name": "c"})
    patch = {"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}
    assert names(smp(p, patch)["spec"]["containers"]) == ["c", "a", "b"]


def test_set_element_order_keeps_server_only_items_in_place() -> None:
    p = pod({"name": "a"}, {"name": "s"}, {"name": "b"})
    patch = {"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                      "containers": [{"name": "b", "image": "2"}]}}
    assert names(smp(p, patch)["spec"]["containers"]) == ["a", "s", "b"]
    # A server-only item goes before the first patch item that follows it on the server.
    swapped = {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}
    assert names(smp(p, swapped)["spec"]["containers"]) == ["s", "b", "a"]


def test_set_element_order_needs_merge_keys() -> None:
    with pytest.raises(BadRequest, match="merge key"):
        smp(pod({"name": "a"}), {"spec": {"$setElementOrder/containers": ["a"]}})
    with pytest.raises(BadRequest, match="setElementOrder"):
        smp(pod({"name": "a"}), {"spec": {"$setElementOrder": []}})


def test_patch_delete_list_element_by_merge_key() -> None:
    p = pod({"name": "a"}, {"name": "b"}, {"name": "c"})
    result = smp(p, {"spec": {"containers": [{"$patch": "delete", "name": "b"}]}})
    assert names(result["spec"]["containers"]) == ["a", "c"]


def test_patch_delete_element_without_merge_key_is_rejected() -> None:
    with pytest.raises(BadRequest, match="merge key 'name'"):
        smp(pod({"name": "a"}), {"spec": {"containers": [{"$patch": "delete", "image": "x"}]}})


def test_list_element_without_merge_key_is_rejected() -> None:
    with pytest.raises(BadRequest, match="merge key 'name'"):
        smp(pod({"name": "a"}), {"spec": {"containers": [{"image": "x"}]}})


def test_patch_replace_on_a_list() -> None:
    p = pod({"name": "a", "image": "x"}, {"name": "b"})
    result = smp(p, {"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "z"}]}})
    assert result["spec"]["containers"] == [{"name": "c", "image": "z"}]


def test_unknown_list_directive_is_rejected() -> None:
    with pytest.raises(BadRequest, match="merge"):
        smp(pod({"name": "a"}), {"spec": {"containers": [{"$patch": "merge", "name": "a"}]}})


@pytest.mark.parametrize(("field", "key", "first", "second"), [
    ("env", "name", {"name": "A", "value": "1"}, {"name": "B", "value": "2"}),
    ("ports", "containerPort", {"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}),
    ("volumeMounts", "mountPath", {"mountPath": "/a", "name": "v"}, {"mountPath": "/b", "name": "w"}),
    ("volumeDevices", "devicePath", {"devicePath": "/dev/a", "name": "v"}, {"devicePath": "/dev/b", "name": "w"}),
])
@pytest.mark.parametrize("containers", ["containers", "initContainers", "ephemeralContainers"])
def test_container_lists_merge_by_their_key(containers: str, field: str, key: str, first: dict, second: dict) -> None:
    p = {"metadata": {"name": "p"}, "spec": {containers: [{"name": "c", field: [first, second]}]}}
    change = {key: first[key], "extra": "yes"}
    result = smp(p, {"spec": {containers: [{"name": "c", field: [change]}]}})
    merged = result["spec"][containers][0][field]
    assert merged == [{**first, "extra": "yes"}, second]


@pytest.mark.parametrize(("field", "key", "first", "second"), [
    ("volumes", "name", {"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}),
    ("imagePullSecrets", "name", {"name": "s1"}, {"name": "s2"}),
    ("hostAliases", "ip", {"ip": "10.0.0.1", "hostnames": ["a"]}, {"ip": "10.0.0.2", "hostnames": ["b"]}),
    ("topologySpreadConstraints", "topologyKey", {"topologyKey": "zone", "maxSkew": 1},
     {"topologyKey": "host", "maxSkew": 1}),
])
@pytest.mark.parametrize(("kind", "spec_path"), [
    ("Pod", ("spec",)), ("Deployment", ("spec", "template", "spec")), ("ReplicaSet", ("spec", "template", "spec")),
])
def test_pod_spec_lists_merge_by_their_key(kind: str, spec_path: tuple[str, ...], field: str, key: str,
                                           first: dict, second: dict) -> None:
    def nest(value: dict) -> dict:
        for part in reversed(spec_path):
            value = {part: value}
        return value

    obj = {"metadata": {"name": "x"}, **nest({field: [first, second]})}
    result = smp(obj, nest({field: [{key: second[key], "extra": 1}]}), kind=kind)
    spec = result
    for part in spec_path:
        spec = spec[part]
    assert spec[field] == [first, {**second, "extra": 1}]


def test_service_ports_merge_by_port_and_only_for_services() -> None:
    svc = {"metadata": {"name": "s"},
           "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}}
    result = smp(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, kind="Service")
    assert result["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443, "targetPort": 8443}]
    # Another kind's spec.ports has no merge strategy: the list is replaced.
    other = smp(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, kind="Function")
    assert other["spec"]["ports"] == [{"port": 80, "targetPort": 9090}]


def test_pod_spec_lists_are_not_merged_for_kinds_without_a_pod_template() -> None:
    fn = {"metadata": {"name": "f"}, "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}}
    result = smp(fn, {"spec": {"containers": [{"name": "b", "image": "y"}]}}, kind="Function")
    assert result["spec"]["containers"] == [{"name": "b", "image": "y"}]


def test_owner_references_merge_by_uid() -> None:
    obj = {"metadata": {"name": "p", "ownerReferences": [{"uid": "1", "name": "rs1"}, {"uid": "2", "name": "rs2"}]}}
    result = smp(obj, {"metadata": {"ownerReferences": [{"uid": "2", "controller": True}]}}, kind="Function")
    assert result["metadata"]["ownerReferences"] == [{"uid": "1", "name": "rs1"},
                                                    {"uid": "2", "name": "rs2", "controller": True}]
    d = deployment()
    d["spec"]["template"]["metadata"]["ownerReferences"] = [{"uid": "1"}]
    patched = smp(d, {"spec": {"template": {"metadata": {"ownerReferences": [{"uid": "2"}]}}}}, kind="Deployment")
    assert names(patched["spec"]["template"]["metadata"]["ownerReferences"], "uid") == ["2", "1"]


def test_finalizers_merge_as_a_set() -> None:
    obj = {"metadata": {"name": "p", "finalizers": ["a", "b"]}}
    result = smp(obj, {"metadata": {"finalizers": ["b", "c"]}})
    assert sorted(result["metadata"]["finalizers"]) == ["a", "b", "c"]
    ordered = smp(obj, {"metadata": {"$setElementOrder/finalizers": ["a", "b", "c"], "finalizers": ["c"]}})
    assert ordered["metadata"]["finalizers"] == ["a", "b", "c"]


def test_delete_from_primitive_list() -> None:
    obj = {"metadata": {"name": "p", "finalizers": ["a", "b", "c"]}}
    result = smp(obj, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}})
    assert result["metadata"]["finalizers"] == ["a", "c"]
    both = smp(obj, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"],
                                  "$setElementOrder/finalizers": ["b", "c", "d"], "finalizers": ["d"]}})
    assert both["metadata"]["finalizers"] == ["b", "c", "d"]
    # Deleting from a list that does not exist does not create it.
    assert "finalizers" not in smp({"metadata": {}}, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})[
        "metadata"]


def test_merge_keys_compare_as_json_values() -> None:
    obj = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "name": "int"}, {"port": True, "name": "bool"}]}}
    result = smp(obj, {"spec": {"ports": [{"port": 80.0, "protocol": "TCP"}]}}, kind="Service")
    assert result["spec"]["ports"] == [{"port": 80, "name": "int", "protocol": "TCP"}, {"port": True, "name": "bool"}]


def test_large_merge_lists_are_merged_in_linear_time() -> None:
    n = 20_000
    p = pod({"name": "a", "env": [{"name": f"V{i}", "value": "x"} for i in range(n)]})
    patch = {"spec": {"containers": [{"name": "a",
                                      "$setElementOrder/env": [{"name": f"V{i}"} for i in reversed(range(n))],
                                      "env": [{"name": f"V{i}", "value": "y"} for i in range(0, n, 2)]}]}}
    start = time.monotonic()
    env = smp(p, patch)["spec"]["containers"][0]["env"]
    assert time.monotonic() - start < 5
    assert [e["name"] for e in env[:3]] == [f"V{n - 1}", f"V{n - 2}", f"V{n - 3}"]
    assert env[-1] == {"name": "V0", "value": "y"}


def test_primitive_merge_list_rejects_objects() -> None:
    with pytest.raises(BadRequest, match="primitive"):
        smp({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": [{"name": "b"}]}})


@pytest.mark.parametrize("field", ["tolerations", "args", "command"])
def test_lists_without_merge_strategy_are_replaced(field: str) -> None:
    values = {"tolerations": ([{"key": "a"}, {"key": "b"}], [{"key": "c", "x": None}]),
              "args": (["-a", "-b"], ["-c"]), "command": (["sh"], ["bash", "-c"])}[field]
    old, new = values
    if field == "tolerations":
        p = pod({"name": "c"}, tolerations=old)
        assert smp(p, {"spec": {"tolerations": new}})["spec"]["tolerations"] == [{"key": "c"}]
    else:
        p = pod({"name": "c", field: old})
        assert smp(p, {"spec": {"containers": [{"name": "c", field: new}]}})["spec"]["containers"][0][field] == new


def test_status_conditions_merge_by_type_for_pods_and_nodes() -> None:
    conds = [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]
    for kind in ("Pod", "Node"):
        obj = {"metadata": {"name": "x"}, "status": {"conditions": conds}}
        result = smp(obj, {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}, kind=kind)
        assert result["status"]["conditions"] == [{"type": "Ready", "status": "True"},
                                                  {"type": "PodScheduled", "status": "True"}]
    node = {"metadata": {"name": "n"}, "status": {"addresses": [{"type": "InternalIP", "address": "1.1.1.1"}]}}
    result = smp(node, {"status": {"addresses": [{"type": "Hostname", "address": "n"}]}}, kind="Node")
    assert names(result["status"]["addresses"], "type") == ["Hostname", "InternalIP"]
    # Kinds without a merge strategy for conditions replace them.
    fn = {"metadata": {"name": "f"}, "status": {"conditions": conds}}
    replaced = smp(fn, {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}, kind="Function")
    assert replaced["status"]["conditions"] == [{"type": "Ready", "status": "True"}]


def test_merge_list_of_wrong_element_type_is_rejected() -> None:
    with pytest.raises(BadRequest, match="objects merged on 'name'"):
        smp(pod({"name": "a"}), {"spec": {"containers": ["a"]}})


def test_strategic_merge_patch_must_be_an_object() -> None:
    with pytest.raises(BadRequest, match="must be a JSON object"):
        smp(pod(), [{"op": "add"}])


def test_delete_root() -> None:
    assert smp(pod(), {"$patch": "delete"}) == {}


# ---------------------------------------------------------------------------------------------
# JSON merge patch


def test_merge_patch_rfc7386() -> None:
    p = pod({"name": "a", "image": "x"}, {"name": "b"}, nodeName="n")
    result = merge(p, {"metadata": {"labels": {"a": "b", "c": None}}, "spec": {"nodeName": None,
                                                                               "containers": [{"name": "z"}]}})
    assert result["metadata"]["labels"] == {"a": "b"}
    assert "nodeName" not in result["spec"]
    assert result["spec"]["containers"] == [{"name": "z"}]  # arrays are replaced, never merged
    assert merge({"a": {"b": 1}}, {"a": {"c": {"d": None, "e": 1}}}) == {"a": {"b": 1, "c": {"e": 1}}}
    assert merge({"a": [1, 2]}, {"a": [None, 3]}) == {"a": [None, 3]}


def test_merge_patch_scale() -> None:
    d = deployment({"name": "a"})
    assert merge(d, {"spec": {"replicas": 3}})["spec"]["replicas"] == 3


def test_merge_patch_must_be_an_object() -> None:
    with pytest.raises(BadRequest, match="must be a JSON object"):
        merge(pod(), ["x"])


# ---------------------------------------------------------------------------------------------
# JSON patch


def test_json_patch_operations() -> None:
    p = pod({"name": "a", "image": "x"})
    ops = [
        {"op": "test", "path": "/spec/containers/0/image", "value": "x"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "y"},
        {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}},
        {"op": "add", "path": "/spec/containers/-", "value": {"name": "b"}},
        {"op": "copy", "from": "/metadata/labels", "path": "/metadata/annotations"},
        {"op": "move", "from": "/metadata/namespace", "path": "/metadata/ns"},
        {"op": "remove", "path": "/apiVersion"},
    ]
    before = copy.deepcopy(p)
    result = jsonpatch(p, ops)
    assert p == before
    assert result["spec"]["containers"] == [{"name": "a", "image": "y"}, {"name": "b"}]
    assert result["metadata"] == {"name": "p", "labels": {"a": "b"}, "annotations": {"a": "b"}, "ns": "default"}
    assert "apiVersion" not in result


def test_json_patch_failing_test_says_so() -> None:
    with pytest.raises(BadRequest, match=r"operation 0 \(test /spec/nodeName\) failed"):
        jsonpatch(pod(nodeName="a"), [{"op": "test", "path": "/spec/nodeName", "value": "b"}])
    with pytest.raises(BadRequest, match="test"):
        jsonpatch({"a": 1}, [{"op": "test", "path": "/a", "value": True}])


@pytest.mark.parametrize("ops", [
    [{"op": "remove", "path": "/spec/missing"}],
    [{"op": "replace", "path": "/nothing/here", "value": 1}],
    [{"op": "add", "path": "/a/b/c", "value": 1}],
    [{"op": "add", "path": "no-slash", "value": 1}],
    [{"op": "move", "from": "/spec/missing", "path": "/x"}],
    [{"op": "remove", "path": "/spec/containers/7"}],
])
def test_json_patch_missing_path_is_a_bad_request(ops: list) -> None:
    with pytest.raises(BadRequest, match="JSON patch operation 0"):
        jsonpatch(pod({"name": "a"}), ops)


@pytest.mark.parametrize(("ops", "message"), [
    ({"op": "add"}, "JSON array"),
    ([["add"]], "must be an object"),
    ([{"op": "frob", "path": "/a"}], "invalid \"op\""),
    ([{"op": "add", "value": 1}], "\"path\""),
    ([{"op": "add", "path": "/a"}], "\"value\""),
    ([{"op": "copy", "path": "/a"}], "\"from\""),
])
def test_json_patch_malformed_operations(ops: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        jsonpatch(pod(), ops)


def test_json_patch_replacing_the_root_with_a_non_object_is_rejected() -> None:
    with pytest.raises(BadRequest, match="must be a JSON object"):
        jsonpatch(pod(), [{"op": "replace", "path": "", "value": [1, 2]}])
    assert jsonpatch(pod(), [{"op": "replace", "path": "", "value": {"a": 1}}]) == {"a": 1}


# ---------------------------------------------------------------------------------------------
# Media types and malformed bodies


def test_server_side_apply_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType, match="server-side apply") as info:
        apply_patch(pod(), b"apiVersion: v1\n", "application/apply-patch+yaml", kind="Pod")
    assert info.value.code == 415


@pytest.mark.parametrize("content_type", ["", "application/json", "text/plain", "application/yaml"])
def test_unknown_media_type(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        apply_patch(pod(), b"{}", content_type, kind="Pod")
    assert info.value.message == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json")


def test_media_type_parameters_and_case_are_ignored() -> None:
    result = apply_patch(pod(), b'{"spec":{"nodeName":"n"}}', "Application/Merge-Patch+JSON; charset=utf-8", kind="Pod")
    assert result["spec"]["nodeName"] == "n"


@pytest.mark.parametrize(("body", "message"), [
    (b'{"spec": {', "line 1 column 11"),
    (b'{"a": 1,}', "not valid JSON"),
    (b"", "empty"),
    (b"   ", "empty"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": 1e999}', "out of range"),
    (b'{"a": "\xff"}', "not valid JSON"),
    (b"\xff\xfe\x00", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b"1" * 10_000, "not valid JSON"),
])
@pytest.mark.parametrize("content_type", [SMP, MERGE, JSONP])
def test_malformed_json_is_a_bad_request(body: bytes, message: str, content_type: str) -> None:
    with pytest.raises(BadRequest, match=message):
        apply_patch(pod(), body, content_type, kind="Pod")


def test_deeply_nested_patch_is_a_bad_request_not_a_crash() -> None:
    depth = 950
    body = ('{"a":' * depth + "1" + "}" * depth).encode()
    for content_type in (SMP, MERGE):
        try:
            apply_patch({}, body, content_type, kind="Pod")
        except BadRequest:
            pass


# ---------------------------------------------------------------------------------------------
# Totality

_KEYS = ["spec", "metadata", "containers", "name", "env", "ports", "containerPort", "port", "finalizers",
         "labels", "conditions", "type", "status", "template", "volumes", "mountPath", "volumeMounts", "uid",
         "ownerReferences", "a", "", "$patch", "$retainKeys", "$setElementOrder/containers", "$setElementOrder/env",
         "$setElementOrder/finalizers", "$deleteFromPrimitiveList/finalizers", "$setElementOrder",
         "$deleteFromPrimitiveList/containers", "op", "path", "value", "from"]
_SCALARS: list[Any] = [None, True, False, 0, 1, -1, 2.5, "", "a", "b", "delete", "replace", "merge", "name",
                       "/spec", "/spec/containers/0", "/metadata/labels/a", "/-", "add", "remove", "test", "move",
                       "copy"]


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 5 or roll < 0.35:
        return rng.choice(_SCALARS)
    if roll < 0.7:
        return {rng.choice(_KEYS): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def _random_object(rng: random.Random) -> dict:
    base = rng.choice([_live_pod_for_second_apply(), deployment({"name": "a", "env": [{"name": "X"}]}),
                       {"metadata": {"name": "x", "finalizers": ["a", "b"]}, "spec": {"ports": [{"port": 80}]}}])
    if rng.random() < 0.3:
        extra = _random_json(rng)
        base["spec"] = extra if isinstance(extra, dict) else base.get("spec", {})
    return base


def _check_total(original: dict, body: bytes, content_type: str, kind: str) -> None:
    before = copy.deepcopy(original)
    try:
        result = apply_patch(original, body, content_type, kind=kind)
    except ApiError as exc:
        assert exc.code != 500, f"internal error for {body!r}: {exc.message}"
    else:
        assert isinstance(result, dict)
        json.dumps(result, allow_nan=False)  # still a JSON document
    assert original == before


def test_random_bytes_never_raise_anything_but_api_errors() -> None:
    rng = random.Random(1234)
    alphabet = b'{}[]":,0123456789.eE+-truefalsnl \\/$patch\xff\x00\n'
    for _ in range(2000):
        size = rng.randint(0, 40)
        if rng.random() < 0.5:
            body = bytes(rng.choice(alphabet) for _ in range(size))
        else:
            body = bytes(rng.randrange(256) for _ in range(size))
        for content_type in (SMP, MERGE, JSONP):
            _check_total(pod({"name": "a"}), body, content_type, "Pod")


def test_random_json_patches_never_raise_anything_but_api_errors() -> None:
    rng = random.Random(42)
    kinds = ["Pod", "Deployment", "Service", "Node", "Function", "ReplicaSet"]
    for _ in range(3000):
        patch = _random_json(rng)
        if rng.random() < 0.5:
            patch = {"spec": patch, "metadata": _random_json(rng)}
        body = json.dumps(patch).encode()
        for content_type in (SMP, MERGE, JSONP):
            _check_total(_random_object(rng), body, content_type, rng.choice(kinds))


def test_random_json_patch_operations_never_raise_anything_but_api_errors() -> None:
    rng = random.Random(7)
    paths = ["", "/", "/spec", "/spec/containers", "/spec/containers/0", "/spec/containers/-", "/spec/containers/9",
             "/metadata/labels/x", "/metadata/~1", "/a/b", "/spec/containers/0/env/0/name", "/status", "x"]
    for _ in range(3000):
        ops = []
        for _ in range(rng.randint(1, 4)):
            op: dict[str, Any] = {"op": rng.choice(["add", "remove", "replace", "move", "copy", "test", "bad"])}
            if rng.random() < 0.95:
                op["path"] = rng.choice(paths)
            if rng.random() < 0.7:
                op["from"] = rng.choice(paths)
            if rng.random() < 0.8:
                op["value"] = _random_json(rng)
            ops.append(op)
        _check_total(_random_object(rng), json.dumps(ops).encode(), JSONP, "Pod")
