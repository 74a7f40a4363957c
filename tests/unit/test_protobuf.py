"""apiserver.protobuf: Kubernetes protobuf request bodies decode to the dicts the JSON path would give.

The vectors in ``data/protobuf/`` are real bodies sent by kubectl 1.32's typed commands (``create
namespace|deployment|service|ingress``, and the DeleteOptions of ``drain``), captured through a
loopback proxy; each ``.json`` beside them is what ``kubectl … --dry-run=client -o json`` printed for
the same command (without ``creationTimestamp: null``). Other bodies are built here by hand.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import kubernetes.client as k8s_client
import pytest

from apiserver import protobuf
from apiserver.protobuf import KINDS, MAGIC, Table, decode
from minik8s.api import apply_defaults, validate
from minik8s.api.registry import by_kind
from minik8s.api.schema import unknown_fields
from minik8s.errors import BadRequest

DATA = Path(__file__).parent / "data" / "protobuf"
VECTORS = sorted(p.stem for p in DATA.glob("*.pb"))


# --- a tiny encoder for hand-built bodies --------------------------------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def i(num: int, n: int) -> bytes:
    return varint(num << 3) + varint(n)


def s(num: int, data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return varint(num << 3 | 2) + varint(len(raw)) + raw


def m(num: int, *parts: bytes) -> bytes:
    return s(num, b"".join(parts))


def kv(num: int, key: str, value: str) -> bytes:
    return m(num, s(1, key), s(2, value))


def envelope(api_version: str, kind: str, *raw: bytes, extra: bytes = b"") -> bytes:
    return MAGIC + m(1, s(1, api_version), s(2, kind)) + m(2, *raw) + extra


def ios_int(num: int, n: int) -> bytes:
    return m(num, i(1, 0), i(2, n), s(3, ""))


def ios_str(num: int, text: str) -> bytes:
    return m(num, i(1, 1), i(2, 0), s(3, text))


# --- captured kubectl bodies ---------------------------------------------------------------------------

def test_vectors_are_there():
    assert {"namespace", "deployment", "deployment-replicas-port-command", "service-clusterip", "service-nodeport",
            "ingress", "deleteoptions"} <= set(VECTORS)


@pytest.mark.parametrize("name", VECTORS)
def test_kubectl_bodies_decode_to_kubectls_own_json(name: str):
    body = (DATA / f"{name}.pb").read_bytes()
    assert decode(body) == json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize("name", [n for n in VECTORS if not n.startswith("deleteoptions")])
def test_kubectl_bodies_pass_strict_schema_and_validation_after_defaults(name: str):
    obj = decode((DATA / f"{name}.pb").read_bytes())
    rt = by_kind(obj["apiVersion"], obj["kind"])
    assert rt is not None
    assert unknown_fields(obj, rt) == []
    apply_defaults(obj, rt)
    assert validate(obj, rt) == []


def test_deployment_with_replicas_port_and_command():
    obj = decode((DATA / "deployment-replicas-port-command.pb").read_bytes())
    assert obj["spec"]["replicas"] == 3
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container == {"name": "nginx", "image": "nginx", "command": ["sleep", "3600"],
                         "ports": [{"containerPort": 8080}], "resources": {}}
    assert obj["spec"]["strategy"] == {} and obj["status"] == {}


def test_a_pointer_zero_is_kept():
    assert decode((DATA / "deployment-zero-replicas.pb").read_bytes())["spec"]["replicas"] == 0
    assert decode((DATA / "deleteoptions-grace-0.pb").read_bytes())["gracePeriodSeconds"] == 0


# --- hand-built bodies ------------------------------------------------------------------------------

def _deployment_body() -> bytes:
    meta = m(1, s(1, "web"), s(2, ""), s(3, "ns1"), s(5, ""), i(7, 0),
             m(8, i(1, 1_700_000_000), i(2, 5)),  # creationTimestamp
             m(9),  # a zero deletionTimestamp: Go's null
             kv(11, "app", "web"), kv(11, "tier", "front"), kv(12, "note", ""),
             m(13, s(1, "ReplicaSet"), s(3, "rs"), s(4, "u1"), s(5, "apps/v1"), i(6, 1), i(7, 0)),
             s(14, "f1"), s(14, "f2"),
             m(17, s(1, "kubectl")))  # managedFields: skipped
    container = (
        s(1, "app"), s(2, "nginx:1.25"), s(3, "sh"), s(3, "-c"), s(4, ""), s(5, "/srv"),
        m(6, s(1, "http"), i(3, 8080), s(4, "TCP")),
        m(7, s(1, "A"), s(2, "1")),
        m(7, s(1, "B"), m(3, m(3, m(1, s(1, "cm")), s(2, "key")))),  # valueFrom.configMapKeyRef, name inlined
        m(7, s(1, "C"), m(3, m(1, s(2, "metadata.name")))),
        m(19, s(1, "P_"), m(2, m(1, s(1, "cm2")), i(2, 1))),
        m(8, m(1, s(1, "cpu"), m(2, s(1, "500m"))), m(2, s(1, "memory"), m(2, s(1, "64Mi")))),
        m(9, s(1, "data"), i(2, 1), s(3, "/data")),
        m(10, m(1, m(2, s(1, "/healthz"), ios_str(2, "http"))), i(2, 3), i(4, 10)),  # livenessProbe.httpGet
        m(11, m(1, m(3, ios_int(1, 8080)))),  # readinessProbe.tcpSocket
        m(12, m(2, m(1, s(1, "sleep"), s(1, "1")))),  # lifecycle.preStop.exec
        s(13, "/dev/termination-log"), s(20, "File"), s(14, "IfNotPresent"),
        m(15, m(1, s(2, "ALL")), i(5, 1), i(4, 1000)),
        i(16, 0), i(18, 1),
        i(99, 7), varint(98 << 3 | 5) + b"\0\0\0\0", varint(97 << 3 | 1) + b"\0" * 8,  # unknown fields
    )
    pod_spec = m(2,
                 m(1, s(1, "data"), m(2, m(2, s(1, "")))),  # volume: emptyDir {}, inlined
                 m(1, s(1, "conf"), m(2, m(19, m(1, s(1, "cm")), i(3, 0o644)))),
                 m(2, *container),
                 s(3, "Always"), i(4, 0), s(6, "ClusterFirst"), kv(7, "disk", "ssd"),
                 m(14, i(2, -1 & 0xFFFFFFFFFFFFFFFF), s(4, varint(1) + varint(2)), i(4, 3)),  # packed + unpacked
                 m(18, m(1, s(1, "ignored"))),  # affinity: not decoded
                 s(19, "default-scheduler"),
                 m(22, s(1, "k"), s(2, "Exists"), s(4, "NoExecute"), i(5, 30)))
    spec = m(2,
             i(1, 0),
             m(2, kv(1, "app", "web"), m(2, s(1, "tier"), s(2, "In"), s(3, "front"), s(3, "back"))),
             m(3, m(1, kv(11, "app", "web"), kv(11, "tier", "front")), pod_spec),
             m(4, s(1, "RollingUpdate"), m(2, ios_int(1, 0), ios_str(2, "25%"))),
             i(5, 0), i(6, 10), i(7, 0), i(9, 600))
    return envelope("apps/v1", "Deployment", meta, spec, m(3))


def test_hand_built_deployment_decodes_every_kind_of_field():
    obj = decode(_deployment_body())
    assert obj == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "ns1", "creationTimestamp": "2023-11-14T22:13:20Z",
            "labels": {"app": "web", "tier": "front"}, "annotations": {"note": ""},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "u1", "apiVersion": "apps/v1",
                                 "controller": True, "blockOwnerDeletion": False}],
            "finalizers": ["f1", "f2"],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"},
                         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {
                    "volumes": [{"name": "data", "emptyDir": {}},
                                {"name": "conf", "configMap": {"name": "cm", "defaultMode": 0o644}}],
                    "containers": [{
                        "name": "app", "image": "nginx:1.25", "command": ["sh", "-c"], "args": [""],
                        "workingDir": "/srv",
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "env": [{"name": "A", "value": "1"},
                                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "key"}}},
                                {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "envFrom": [{"prefix": "P_", "configMapRef": {"name": "cm2", "optional": True}}],
                        "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                        "volumeMounts": [{"name": "data", "readOnly": True, "mountPath": "/data"}],
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                          "initialDelaySeconds": 3, "periodSeconds": 10},
                        "readinessProbe": {"tcpSocket": {"port": 8080}},
                        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
                        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent",
                        "securityContext": {"capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                                            "runAsUser": 1000},
                        "tty": True,
                    }],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 0, "dnsPolicy": "ClusterFirst",
                    "nodeSelector": {"disk": "ssd"},
                    "securityContext": {"runAsUser": -1, "supplementalGroups": [1, 2, 3]},
                    "schedulerName": "default-scheduler",
                    "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute",
                                     "tolerationSeconds": 30}],
                },
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
        },
        "status": {},
    }


def test_hand_built_service_and_ingress():
    svc = decode(envelope("v1", "Service", m(1, s(1, "s")), m(2,
                          m(1, s(1, "http"), s(2, "TCP"), i(3, 80), ios_str(4, "web"), i(5, 30080)),
                          m(1, s(2, "UDP"), i(3, 53), ios_int(4, 0)),  # a zero targetPort is left to defaults
                          kv(2, "app", "x"), s(4, "NodePort"), s(18, "10.0.0.1"), i(20, 0),
                          m(14, m(1, i(1, 0))))))
    assert svc["spec"] == {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web",
                                      "nodePort": 30080},
                                     {"protocol": "UDP", "port": 53}],
                           "selector": {"app": "x"}, "type": "NodePort", "clusterIPs": ["10.0.0.1"],
                           "allocateLoadBalancerNodePorts": False,
                           "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}
    backend = m(2, m(4, s(1, "svc"), m(2, s(1, ""), i(2, 8080))))
    ing = decode(envelope("networking.k8s.io/v1", "Ingress", m(1, s(1, "i")),
                          m(2, m(3, s(1, "a.example"), m(2, m(1, m(1, s(1, "/api"), s(3, "Prefix"), backend)))))))
    assert ing["spec"] == {"rules": [{"host": "a.example", "http": {"paths": [
        {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"number": 8080}}}}]}}]}


def test_namespace_and_pod():
    assert decode(envelope("v1", "Namespace", m(1, s(1, "n")), m(2, s(1, "kubernetes")), m(3))) == {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "spec": {"finalizers": ["kubernetes"]},
        "status": {}}
    pod = decode(envelope("v1", "Pod", m(1, s(1, "p")), m(2, m(2, s(1, "c"), s(2, "busybox")), i(37, 0))))
    assert pod["spec"] == {"containers": [{"name": "c", "image": "busybox"}], "hostUsers": False}


def test_envelope_without_raw_and_repeated_message_fields_merge():
    assert decode(MAGIC + m(1, s(1, "v1"), s(2, "Namespace"))) == {"apiVersion": "v1", "kind": "Namespace"}
    # A singular message field seen twice merges, as protobuf readers do.
    obj = decode(envelope("v1", "Namespace", m(1, s(1, "a")), m(1, kv(11, "k", "v"))))
    assert obj["metadata"] == {"name": "a", "labels": {"k": "v"}}


def test_time_precision_and_quantity_defaults():
    obj = decode(envelope("v1", "Namespace", m(1, m(8, i(1, 0), i(2, 999)), m(9, i(1, 86400)))))
    assert obj["metadata"] == {"creationTimestamp": "1970-01-01T00:00:00Z", "deletionTimestamp": "1970-01-02T00:00:00Z"}
    pod = decode(envelope("v1", "Pod", m(2, m(2, s(1, "c"), m(8, m(1, s(1, "cpu"), m(2)))))))
    assert pod["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "0"}}


# --- errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    (b"", "does not start with"),
    (b'{"kind":"Namespace"}', "does not start with"),
    (MAGIC, "does not name its apiVersion and kind"),
    (MAGIC + m(1, s(2, "Namespace")), "does not name its apiVersion and kind"),
    (envelope("v1", "ConfigMap", m(1, s(1, "x"))),
     "protobuf bodies are supported for Namespace, Pod, Deployment, Service and Ingress; send JSON for ConfigMap (v1)"),
    (envelope("apps/v1beta1", "Deployment"), "send JSON for Deployment (apps/v1beta1)"),
    (envelope("v1", "Namespace", extra=s(3, "gzip")), 'contentEncoding "gzip" are not supported'),
    (MAGIC + b"\x0a\x05\x0a\x02v1", "truncated"),
    (MAGIC + b"\x0a", "truncated (inside a varint)"),
    (MAGIC + b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
    (MAGIC + b"\x00\x00", "invalid field number 0"),
    (MAGIC + b"\x0b", "wire type 3"),
    (MAGIC + b"\x0f", "wire type 7"),
    (envelope("v1", "Namespace", i(1, 5)), 'field "metadata" with wire type 0'),
    (envelope("v1", "Namespace", m(1, s(1, b"\xff\xfe"))), "not valid UTF-8"),
    (envelope("v1", "Namespace", m(1, i(1, 3))), 'field "name" with wire type 0'),
    (envelope("apps/v1", "Deployment", m(2, i(1, 1) + s(7, "x"))), 'field "paused" with wire type 2'),
    (envelope("apps/v1", "Deployment", m(2, m(4, m(2, m(1, i(1, 2)))))), "IntOrString of unknown type 2"),
    (envelope("v1", "Namespace", m(1, m(8, i(1, 1 << 62)))), "out-of-range time"),
    (envelope("v1", "Namespace", m(1, m(8, i(1, -(1 << 40))))), "out-of-range time"),
])
def test_malformed_bodies_are_bad_requests(body: bytes, message: str):
    with pytest.raises(BadRequest) as err:
        decode(body)
    assert message in str(err.value)


def test_non_bytes_is_a_bad_request():
    with pytest.raises(BadRequest):
        decode("k8s\x00")  # type: ignore[arg-type]


# --- totality --------------------------------------------------------------------------------------------

def _mutants(rng: random.Random, seeds: list[bytes], count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            pos = rng.randrange(len(body) + 1)
            if op == 0 and pos < len(body):
                body[pos] = rng.randrange(256)
            elif op == 1 and pos < len(body):
                body[pos] ^= 1 << rng.randrange(8)
            elif op == 2:
                body[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
            elif op == 3:
                del body[pos:pos + rng.randint(1, 8)]
            else:
                body = body[:pos]
        out.append(bytes(body))
    return out


def test_any_bytes_give_a_dict_or_bad_request():
    rng = random.Random(20240611)
    seeds = [(DATA / f"{n}.pb").read_bytes() for n in VECTORS] + [_deployment_body()]
    bodies = _mutants(rng, seeds, 6000)
    bodies += [MAGIC + bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))) for _ in range(3000)]
    bodies += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 16))) for _ in range(500)]
    decoded = 0
    for body in bodies:
        try:
            result = decode(body)
        except BadRequest:
            continue
        assert isinstance(result, dict) and isinstance(result["kind"], str)
        json.dumps(result)  # JSON-shaped: nothing but dicts, lists, str, int and bool
        decoded += 1
    assert decoded > 100  # the mutations kept many bodies decodable, so the tables were exercised


# --- the tables ------------------------------------------------------------------------------------------

_UPSTREAM = {("v1", "Namespace"): "V1Namespace", ("v1", "Pod"): "V1Pod", ("v1", "Service"): "V1Service",
             ("apps/v1", "Deployment"): "V1Deployment", ("networking.k8s.io/v1", "Ingress"): "V1Ingress"}
_CODES = {protobuf.STR, protobuf.INT, protobuf.BOOL, protobuf.TIME, protobuf.QTY, protobuf.IOS, protobuf.STRMAP,
          protobuf.QTYMAP}


def _check_table(table: Table, class_name: str, path: str, seen: list[str]) -> None:
    cls = getattr(k8s_client, class_name)
    fields = {cls.attribute_map[a]: t for a, t in cls.openapi_types.items()}
    for number, (name, kind) in table.items():
        where = f"{path}.{name or '(inline)'}#{number}"
        if not name:  # a Go embedded struct: its fields belong to this class
            assert isinstance(kind, dict), where
            _check_table(kind, class_name, path, seen)
            continue
        assert name in fields, f"{where}: not a field of {class_name}"
        seen.append(where)
        item = kind[0] if isinstance(kind, list) else kind
        upstream = fields[name]
        if isinstance(kind, list):
            assert upstream.startswith("List["), where
            upstream = upstream[5:-1]
        if isinstance(item, dict):
            _check_table(item, upstream, f"{path}.{name}", seen)
        else:
            assert item.rstrip("?") in _CODES, where


def test_every_table_field_is_a_kubernetes_field_of_a_known_kind():
    assert set(_UPSTREAM) == set(KINDS)
    seen: list[str] = []
    for key, table in KINDS.items():
        _check_table(table, _UPSTREAM[key], key[1], seen)
    _check_table(protobuf.DELETE_OPTIONS, "V1DeleteOptions", "DeleteOptions", seen)
    assert len(seen) > 250


def test_no_two_fields_of_a_message_share_a_json_name():
    def names(table: Table) -> list[str]:
        out: list[str] = []
        for name, kind in table.values():
            out += names(kind) if not name else [name]
        return out

    def walk(table: Table, path: str) -> None:
        found = names(table)
        assert len(found) == len(set(found)), path
        for name, kind in table.values():
            item: Any = kind[0] if isinstance(kind, list) else kind
            if isinstance(item, dict):
                walk(item, f"{path}.{name}")

    for key, table in KINDS.items():
        walk(table, key[1])
