"""Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``) → JSON-shaped dicts.

client-go's typed clients, and so kubectl's typed commands (``kubectl create namespace|deployment|
service|ingress``), send their bodies in Kubernetes' protobuf encoding and never fall back to JSON.
:func:`decode` turns such a body into exactly the dict the JSON path would have produced, so the rest
of the apiserver (defaults, validation, storage) never knows the difference. Answers stay JSON.

The wire format::

    "k8s\\x00"  +  runtime.Unknown{ 1: typeMeta{1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding,
                                   4: contentType }

where ``raw`` is the object's own protobuf message (proto2, as generated from the Go types).

Why a hand-written decoder driven by field tables (and not generated protobuf classes): it needs no
code generation and no runtime dependency, it is total by construction (every read is bounds-checked
and any malformation is a ``BadRequest``), and the tables below are the whole schema — one line per
message, naming each field's number, JSON name and kind — small enough to read and extend. Fields
not in a table are skipped, as protobuf readers do.

How the Go types' JSON shape is mirrored:

* gogo-protobuf always writes a Go struct's non-pointer fields, zero or not, and a pointer field only
  when it is set. A zero scalar is therefore dropped (Go's ``omitempty``) unless the table marks the
  field as a pointer (a ``?`` after the kind: ``replicas: 0`` is meant), and a zero ``Time`` is
  dropped (Go writes ``null``).
* A message that is present is a dict, even when empty (``strategy: {}``, ``resources: {}``), as in
  Go's JSON, which never omits a struct.
* Embedded Go structs (``json:",inline"``: ``Volume.volumeSource``, ``Probe.handler``,
  ``IngressRule.ingressRuleValue``, ``...KeySelector.localObjectReference``) are merged into their
  parent: their table entry has an empty JSON name.
* ``Time`` → RFC 3339 (seconds), ``Quantity`` → its string, ``IntOrString`` → int or str, map
  entries (key 1, value 2) → dict.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from minik8s.errors import BadRequest

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# A table maps field number → (JSON name, kind). A kind is one of the codes below, another table (a
# nested message; an empty JSON name merges it into the parent), or a one-item list (repeated).
# A "?" after a scalar code marks a Go pointer: its zero value is kept.
STR, INT, BOOL, BYTES = "str", "int", "bool", "bytes"
TIME, QTY, IOS = "time", "qty", "ios"  # meta/v1 Time, resource.Quantity, intstr.IntOrString
STRMAP, QTYMAP = "strmap", "qtymap"  # map<string, string>, map<string, Quantity>
Table = dict[int, tuple[str, Any]]

_VARINT_KINDS = (INT, BOOL)

# --- apimachinery ------------------------------------------------------------------------------------

TYPE_META: Table = {1: ("apiVersion", STR), 2: ("kind", STR)}
UNKNOWN: Table = {1: ("typeMeta", TYPE_META), 2: ("raw", BYTES), 3: ("contentEncoding", STR),
                  4: ("contentType", STR)}
OWNER_REFERENCE: Table = {5: ("apiVersion", STR), 1: ("kind", STR), 3: ("name", STR), 4: ("uid", STR),
                          6: ("controller", BOOL + "?"), 7: ("blockOwnerDeletion", BOOL + "?")}
OBJECT_META: Table = {
    1: ("name", STR), 2: ("generateName", STR), 3: ("namespace", STR), 4: ("selfLink", STR), 5: ("uid", STR),
    6: ("resourceVersion", STR), 7: ("generation", INT), 8: ("creationTimestamp", TIME),
    9: ("deletionTimestamp", TIME), 10: ("deletionGracePeriodSeconds", INT + "?"), 11: ("labels", STRMAP),
    12: ("annotations", STRMAP), 13: ("ownerReferences", [OWNER_REFERENCE]), 14: ("finalizers", [STR]),
}  # 17 managedFields: skipped (the server owns it)
LABEL_SELECTOR_REQUIREMENT: Table = {1: ("key", STR), 2: ("operator", STR), 3: ("values", [STR])}
LABEL_SELECTOR: Table = {1: ("matchLabels", STRMAP), 2: ("matchExpressions", [LABEL_SELECTOR_REQUIREMENT])}
CONDITION: Table = {1: ("type", STR), 2: ("status", STR), 3: ("observedGeneration", INT),
                    4: ("lastTransitionTime", TIME), 5: ("reason", STR), 6: ("message", STR)}
PRECONDITIONS: Table = {1: ("uid", STR + "?"), 2: ("resourceVersion", STR + "?")}
DELETE_OPTIONS: Table = {1: ("gracePeriodSeconds", INT + "?"), 2: ("preconditions", PRECONDITIONS),
                         3: ("orphanDependents", BOOL + "?"), 4: ("propagationPolicy", STR + "?"),
                         5: ("dryRun", [STR])}

# --- core/v1: pods ------------------------------------------------------------------------------------

LOCAL_OBJECT_REFERENCE: Table = {1: ("name", STR)}
OBJECT_FIELD_SELECTOR: Table = {1: ("apiVersion", STR), 2: ("fieldPath", STR)}
RESOURCE_FIELD_SELECTOR: Table = {1: ("containerName", STR), 2: ("resource", STR), 3: ("divisor", QTY)}
KEY_SELECTOR: Table = {1: ("", LOCAL_OBJECT_REFERENCE), 2: ("key", STR), 3: ("optional", BOOL + "?")}
ENV_VAR_SOURCE: Table = {1: ("fieldRef", OBJECT_FIELD_SELECTOR), 2: ("resourceFieldRef", RESOURCE_FIELD_SELECTOR),
                         3: ("configMapKeyRef", KEY_SELECTOR), 4: ("secretKeyRef", KEY_SELECTOR)}
ENV_VAR: Table = {1: ("name", STR), 2: ("value", STR), 3: ("valueFrom", ENV_VAR_SOURCE)}
ENV_SOURCE: Table = {1: ("", LOCAL_OBJECT_REFERENCE), 2: ("optional", BOOL + "?")}
ENV_FROM_SOURCE: Table = {1: ("prefix", STR), 2: ("configMapRef", ENV_SOURCE), 3: ("secretRef", ENV_SOURCE)}
CONTAINER_PORT: Table = {1: ("name", STR), 2: ("hostPort", INT), 3: ("containerPort", INT + "?"),
                         4: ("protocol", STR), 5: ("hostIP", STR)}
RESOURCE_CLAIM: Table = {1: ("name", STR), 2: ("request", STR)}
RESOURCE_REQUIREMENTS: Table = {1: ("limits", QTYMAP), 2: ("requests", QTYMAP), 3: ("claims", [RESOURCE_CLAIM])}
VOLUME_MOUNT: Table = {1: ("name", STR), 2: ("readOnly", BOOL), 7: ("recursiveReadOnly", STR + "?"),
                       3: ("mountPath", STR), 4: ("subPath", STR), 5: ("mountPropagation", STR + "?"),
                       6: ("subPathExpr", STR)}
EXEC_ACTION: Table = {1: ("command", [STR])}
HTTP_HEADER: Table = {1: ("name", STR), 2: ("value", STR)}
HTTP_GET_ACTION: Table = {1: ("path", STR), 2: ("port", IOS + "?"), 3: ("host", STR), 4: ("scheme", STR),
                          5: ("httpHeaders", [HTTP_HEADER])}
TCP_SOCKET_ACTION: Table = {1: ("port", IOS + "?"), 2: ("host", STR)}
GRPC_ACTION: Table = {1: ("port", INT + "?"), 2: ("service", STR + "?")}
SLEEP_ACTION: Table = {1: ("seconds", INT + "?")}
PROBE_HANDLER: Table = {1: ("exec", EXEC_ACTION), 2: ("httpGet", HTTP_GET_ACTION), 3: ("tcpSocket", TCP_SOCKET_ACTION),
                        4: ("grpc", GRPC_ACTION)}
PROBE: Table = {1: ("", PROBE_HANDLER), 2: ("initialDelaySeconds", INT), 3: ("timeoutSeconds", INT),
                4: ("periodSeconds", INT), 5: ("successThreshold", INT), 6: ("failureThreshold", INT),
                7: ("terminationGracePeriodSeconds", INT + "?")}
LIFECYCLE_HANDLER: Table = {1: ("exec", EXEC_ACTION), 2: ("httpGet", HTTP_GET_ACTION),
                            3: ("tcpSocket", TCP_SOCKET_ACTION), 4: ("sleep", SLEEP_ACTION)}
LIFECYCLE: Table = {1: ("postStart", LIFECYCLE_HANDLER), 2: ("preStop", LIFECYCLE_HANDLER)}
CAPABILITIES: Table = {1: ("add", [STR]), 2: ("drop", [STR])}
SE_LINUX_OPTIONS: Table = {1: ("user", STR), 2: ("role", STR), 3: ("type", STR), 4: ("level", STR)}
SECCOMP_PROFILE: Table = {1: ("type", STR), 2: ("localhostProfile", STR + "?")}
SECURITY_CONTEXT: Table = {
    1: ("capabilities", CAPABILITIES), 2: ("privileged", BOOL + "?"), 3: ("seLinuxOptions", SE_LINUX_OPTIONS),
    4: ("runAsUser", INT + "?"), 8: ("runAsGroup", INT + "?"), 5: ("runAsNonRoot", BOOL + "?"),
    6: ("readOnlyRootFilesystem", BOOL + "?"), 7: ("allowPrivilegeEscalation", BOOL + "?"),
    9: ("procMount", STR + "?"), 11: ("seccompProfile", SECCOMP_PROFILE),
}
CONTAINER_RESIZE_POLICY: Table = {1: ("resourceName", STR), 2: ("restartPolicy", STR)}
CONTAINER: Table = {
    1: ("name", STR), 2: ("image", STR), 3: ("command", [STR]), 4: ("args", [STR]), 5: ("workingDir", STR),
    6: ("ports", [CONTAINER_PORT]), 19: ("envFrom", [ENV_FROM_SOURCE]), 7: ("env", [ENV_VAR]),
    8: ("resources", RESOURCE_REQUIREMENTS), 23: ("resizePolicy", [CONTAINER_RESIZE_POLICY]),
    24: ("restartPolicy", STR + "?"), 9: ("volumeMounts", [VOLUME_MOUNT]), 10: ("livenessProbe", PROBE),
    11: ("readinessProbe", PROBE), 22: ("startupProbe", PROBE), 12: ("lifecycle", LIFECYCLE),
    13: ("terminationMessagePath", STR), 20: ("terminationMessagePolicy", STR), 14: ("imagePullPolicy", STR),
    15: ("securityContext", SECURITY_CONTEXT), 16: ("stdin", BOOL), 17: ("stdinOnce", BOOL), 18: ("tty", BOOL),
}
KEY_TO_PATH: Table = {1: ("key", STR), 2: ("path", STR), 3: ("mode", INT + "?")}
HOST_PATH_VOLUME_SOURCE: Table = {1: ("path", STR), 2: ("type", STR + "?")}
EMPTY_DIR_VOLUME_SOURCE: Table = {1: ("medium", STR), 2: ("sizeLimit", QTY)}
SECRET_VOLUME_SOURCE: Table = {1: ("secretName", STR), 2: ("items", [KEY_TO_PATH]), 3: ("defaultMode", INT + "?"),
                               4: ("optional", BOOL + "?")}
PVC_VOLUME_SOURCE: Table = {1: ("claimName", STR), 2: ("readOnly", BOOL)}
DOWNWARD_API_VOLUME_FILE: Table = {1: ("path", STR), 2: ("fieldRef", OBJECT_FIELD_SELECTOR),
                                   3: ("resourceFieldRef", RESOURCE_FIELD_SELECTOR), 4: ("mode", INT + "?")}
DOWNWARD_API_VOLUME_SOURCE: Table = {1: ("items", [DOWNWARD_API_VOLUME_FILE]), 2: ("defaultMode", INT + "?")}
CONFIG_MAP_VOLUME_SOURCE: Table = {1: ("", LOCAL_OBJECT_REFERENCE), 2: ("items", [KEY_TO_PATH]),
                                   3: ("defaultMode", INT + "?"), 4: ("optional", BOOL + "?")}
VOLUME_SOURCE: Table = {1: ("hostPath", HOST_PATH_VOLUME_SOURCE), 2: ("emptyDir", EMPTY_DIR_VOLUME_SOURCE),
                        6: ("secret", SECRET_VOLUME_SOURCE), 10: ("persistentVolumeClaim", PVC_VOLUME_SOURCE),
                        16: ("downwardAPI", DOWNWARD_API_VOLUME_SOURCE), 19: ("configMap", CONFIG_MAP_VOLUME_SOURCE)}
VOLUME: Table = {1: ("name", STR), 2: ("", VOLUME_SOURCE)}
SYSCTL: Table = {1: ("name", STR), 2: ("value", STR)}
POD_SECURITY_CONTEXT: Table = {
    1: ("seLinuxOptions", SE_LINUX_OPTIONS), 2: ("runAsUser", INT + "?"), 6: ("runAsGroup", INT + "?"),
    3: ("runAsNonRoot", BOOL + "?"), 4: ("supplementalGroups", [INT]), 12: ("supplementalGroupsPolicy", STR + "?"),
    5: ("fsGroup", INT + "?"), 7: ("sysctls", [SYSCTL]), 9: ("fsGroupChangePolicy", STR + "?"),
    10: ("seccompProfile", SECCOMP_PROFILE),
}
TOLERATION: Table = {1: ("key", STR), 2: ("operator", STR), 3: ("value", STR), 4: ("effect", STR),
                     5: ("tolerationSeconds", INT + "?")}
HOST_ALIAS: Table = {1: ("ip", STR), 2: ("hostnames", [STR])}
POD_DNS_CONFIG_OPTION: Table = {1: ("name", STR), 2: ("value", STR + "?")}
POD_DNS_CONFIG: Table = {1: ("nameservers", [STR]), 2: ("searches", [STR]), 3: ("options", [POD_DNS_CONFIG_OPTION])}
POD_READINESS_GATE: Table = {1: ("conditionType", STR)}
POD_SCHEDULING_GATE: Table = {1: ("name", STR)}
POD_OS: Table = {1: ("name", STR)}
POD_SPEC: Table = {
    1: ("volumes", [VOLUME]), 20: ("initContainers", [CONTAINER]), 2: ("containers", [CONTAINER]),
    3: ("restartPolicy", STR), 4: ("terminationGracePeriodSeconds", INT + "?"),
    5: ("activeDeadlineSeconds", INT + "?"), 6: ("dnsPolicy", STR), 7: ("nodeSelector", STRMAP),
    8: ("serviceAccountName", STR), 9: ("serviceAccount", STR), 21: ("automountServiceAccountToken", BOOL + "?"),
    10: ("nodeName", STR), 11: ("hostNetwork", BOOL), 12: ("hostPID", BOOL), 13: ("hostIPC", BOOL),
    27: ("shareProcessNamespace", BOOL + "?"), 14: ("securityContext", POD_SECURITY_CONTEXT),
    15: ("imagePullSecrets", [LOCAL_OBJECT_REFERENCE]), 16: ("hostname", STR), 17: ("subdomain", STR),
    19: ("schedulerName", STR), 22: ("tolerations", [TOLERATION]), 23: ("hostAliases", [HOST_ALIAS]),
    24: ("priorityClassName", STR), 25: ("priority", INT + "?"), 26: ("dnsConfig", POD_DNS_CONFIG),
    28: ("readinessGates", [POD_READINESS_GATE]), 29: ("runtimeClassName", STR + "?"),
    30: ("enableServiceLinks", BOOL + "?"), 31: ("preemptionPolicy", STR + "?"), 32: ("overhead", QTYMAP),
    35: ("setHostnameAsFQDN", BOOL + "?"), 36: ("os", POD_OS), 37: ("hostUsers", BOOL + "?"),
    38: ("schedulingGates", [POD_SCHEDULING_GATE]), 40: ("resources", RESOURCE_REQUIREMENTS),
}  # skipped: 18 affinity, 33 topologySpreadConstraints, 34 ephemeralContainers, 39 resourceClaims
POD_TEMPLATE_SPEC: Table = {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)}
POD_STATUS: Table = {1: ("phase", STR), 3: ("message", STR), 4: ("reason", STR), 11: ("nominatedNodeName", STR),
                     5: ("hostIP", STR), 6: ("podIP", STR), 7: ("startTime", TIME), 9: ("qosClass", STR)}
POD: Table = {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC), 3: ("status", POD_STATUS)}

# --- core/v1: namespaces, services ------------------------------------------------------------------

NAMESPACE_CONDITION: Table = {1: ("type", STR), 2: ("status", STR), 4: ("lastTransitionTime", TIME),
                              5: ("reason", STR), 6: ("message", STR)}
NAMESPACE: Table = {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", [STR])}),
                    3: ("status", {1: ("phase", STR), 2: ("conditions", [NAMESPACE_CONDITION])})}
SERVICE_PORT: Table = {1: ("name", STR), 2: ("protocol", STR), 6: ("appProtocol", STR + "?"), 3: ("port", INT + "?"),
                       4: ("targetPort", IOS), 5: ("nodePort", INT)}
SESSION_AFFINITY_CONFIG: Table = {1: ("clientIP", {1: ("timeoutSeconds", INT + "?")})}
SERVICE_SPEC: Table = {
    1: ("ports", [SERVICE_PORT]), 2: ("selector", STRMAP), 3: ("clusterIP", STR), 18: ("clusterIPs", [STR]),
    4: ("type", STR), 5: ("externalIPs", [STR]), 7: ("sessionAffinity", STR), 8: ("loadBalancerIP", STR),
    9: ("loadBalancerSourceRanges", [STR]), 10: ("externalName", STR), 11: ("externalTrafficPolicy", STR),
    12: ("healthCheckNodePort", INT), 13: ("publishNotReadyAddresses", BOOL),
    14: ("sessionAffinityConfig", SESSION_AFFINITY_CONFIG), 19: ("ipFamilies", [STR]),
    17: ("ipFamilyPolicy", STR + "?"), 20: ("allocateLoadBalancerNodePorts", BOOL + "?"),
    21: ("loadBalancerClass", STR + "?"), 22: ("internalTrafficPolicy", STR + "?"),
    23: ("trafficDistribution", STR + "?"),
}
PORT_STATUS: Table = {1: ("port", INT + "?"), 2: ("protocol", STR), 3: ("error", STR + "?")}
LOAD_BALANCER_INGRESS: Table = {1: ("ip", STR), 2: ("hostname", STR), 3: ("ipMode", STR + "?"),
                                4: ("ports", [PORT_STATUS])}
LOAD_BALANCER_STATUS: Table = {1: ("ingress", [LOAD_BALANCER_INGRESS])}
SERVICE: Table = {1: ("metadata", OBJECT_META), 2: ("spec", SERVICE_SPEC),
                  3: ("status", {1: ("loadBalancer", LOAD_BALANCER_STATUS), 2: ("conditions", [CONDITION])})}

# --- apps/v1 -----------------------------------------------------------------------------------------

ROLLING_UPDATE_DEPLOYMENT: Table = {1: ("maxUnavailable", IOS + "?"), 2: ("maxSurge", IOS + "?")}
DEPLOYMENT_STRATEGY: Table = {1: ("type", STR), 2: ("rollingUpdate", ROLLING_UPDATE_DEPLOYMENT)}
DEPLOYMENT_SPEC: Table = {
    1: ("replicas", INT + "?"), 2: ("selector", LABEL_SELECTOR), 3: ("template", POD_TEMPLATE_SPEC),
    4: ("strategy", DEPLOYMENT_STRATEGY), 5: ("minReadySeconds", INT), 6: ("revisionHistoryLimit", INT + "?"),
    7: ("paused", BOOL), 9: ("progressDeadlineSeconds", INT + "?"),
}
DEPLOYMENT_CONDITION: Table = {1: ("type", STR), 2: ("status", STR), 6: ("lastUpdateTime", TIME),
                               7: ("lastTransitionTime", TIME), 4: ("reason", STR), 5: ("message", STR)}
DEPLOYMENT_STATUS: Table = {
    1: ("observedGeneration", INT), 2: ("replicas", INT), 3: ("updatedReplicas", INT), 7: ("readyReplicas", INT),
    4: ("availableReplicas", INT), 5: ("unavailableReplicas", INT), 6: ("conditions", [DEPLOYMENT_CONDITION]),
    8: ("collisionCount", INT + "?"),
}
DEPLOYMENT: Table = {1: ("metadata", OBJECT_META), 2: ("spec", DEPLOYMENT_SPEC), 3: ("status", DEPLOYMENT_STATUS)}

# --- networking.k8s.io/v1 ----------------------------------------------------------------------------

SERVICE_BACKEND_PORT: Table = {1: ("name", STR), 2: ("number", INT)}
INGRESS_SERVICE_BACKEND: Table = {1: ("name", STR), 2: ("port", SERVICE_BACKEND_PORT)}
TYPED_LOCAL_OBJECT_REFERENCE: Table = {1: ("apiGroup", STR + "?"), 2: ("kind", STR), 3: ("name", STR)}
INGRESS_BACKEND: Table = {4: ("service", INGRESS_SERVICE_BACKEND), 3: ("resource", TYPED_LOCAL_OBJECT_REFERENCE)}
HTTP_INGRESS_PATH: Table = {1: ("path", STR), 3: ("pathType", STR + "?"), 2: ("backend", INGRESS_BACKEND)}
INGRESS_RULE: Table = {1: ("host", STR), 2: ("", {1: ("http", {1: ("paths", [HTTP_INGRESS_PATH])})})}
INGRESS_TLS: Table = {1: ("hosts", [STR]), 2: ("secretName", STR)}
INGRESS_SPEC: Table = {4: ("ingressClassName", STR + "?"), 1: ("defaultBackend", INGRESS_BACKEND),
                       2: ("tls", [INGRESS_TLS]), 3: ("rules", [INGRESS_RULE])}
INGRESS_PORT_STATUS: Table = {1: ("port", INT + "?"), 2: ("protocol", STR), 3: ("error", STR + "?")}
INGRESS_LOAD_BALANCER_INGRESS: Table = {1: ("ip", STR), 2: ("hostname", STR), 4: ("ports", [INGRESS_PORT_STATUS])}
INGRESS: Table = {1: ("metadata", OBJECT_META), 2: ("spec", INGRESS_SPEC),
                  3: ("status", {1: ("loadBalancer", {1: ("ingress", [INGRESS_LOAD_BALANCER_INGRESS])})})}

# (apiVersion, kind) → table of the kinds this apiserver accepts as protobuf.
KINDS: dict[tuple[str, str], Table] = {
    ("v1", "Namespace"): NAMESPACE,
    ("v1", "Pod"): POD,
    ("v1", "Service"): SERVICE,
    ("apps/v1", "Deployment"): DEPLOYMENT,
    ("networking.k8s.io/v1", "Ingress"): INGRESS,
}
_SUPPORTED = "Namespace, Pod, Deployment, Service and Ingress"

_MAX_FIELD = (1 << 29) - 1
_U64 = 1 << 64


# --- the wire ----------------------------------------------------------------------------------------

def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value as an unsigned 64-bit int, next position)."""
    result = shift = 0
    while True:
        if pos >= end:
            raise BadRequest("the protobuf body is truncated (inside a varint)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result % _U64, pos
        shift += 7
        if shift >= 70:
            raise BadRequest("the protobuf body has a varint longer than 10 bytes")


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or start, end) of each field of one message in ``buf[pos:end]``.

    A varint's value comes third (end = -1); for fixed64, fixed32 and length-delimited fields the
    bytes are ``buf[start:end]``.
    """
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0 or number > _MAX_FIELD:
            raise BadRequest(f"the protobuf body has an invalid field number {number}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, -1
            continue
        if wire == 1:
            size = 8
        elif wire == 5:
            size = 4
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
        else:
            raise BadRequest(f"the protobuf body uses wire type {wire} (field {number}), which is not supported")
        if size > end - pos:
            raise BadRequest(f"the protobuf body is truncated (field {number} needs {size} bytes)")
        yield number, wire, pos, pos + size
        pos += size


def _signed(value: int) -> int:
    return value - _U64 if value >= 1 << 63 else value


def _text(buf: bytes, start: int, end: int, what: str) -> str:
    try:
        return buf[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"the protobuf body has a {what} that is not valid UTF-8") from None


def _want(wire: int, expected: int, name: str) -> None:
    if wire != expected:
        raise BadRequest(f'the protobuf body encodes field "{name}" with wire type {wire}, expected {expected}')


def _time(buf: bytes, start: int, end: int, name: str) -> str | None:
    seconds = nanos = 0
    for number, wire, a, _b in _fields(buf, start, end):
        if number in (1, 2):
            _want(wire, 0, name)
            if number == 1:
                seconds = _signed(a)
            else:
                nanos = _signed(a)
    if seconds == 0 and nanos == 0:
        return None  # Go's zero Time, written as null
    try:
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    except OverflowError:
        raise BadRequest(f'the protobuf body has an out-of-range time in "{name}"') from None
    if not 1 <= when.year <= 9999:
        raise BadRequest(f'the protobuf body has an out-of-range time in "{name}"')
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _quantity(buf: bytes, start: int, end: int, name: str) -> str:
    text = ""
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1:
            _want(wire, 2, name)
            text = _text(buf, a, b, f'quantity in "{name}"')
    return text or "0"


def _int_or_string(buf: bytes, start: int, end: int, name: str) -> int | str:
    kind = int_val = 0
    str_val = ""
    for number, wire, a, b in _fields(buf, start, end):
        if number in (1, 2):
            _want(wire, 0, name)
            if number == 1:
                kind = _signed(a)
            else:
                int_val = _signed(a)
        elif number == 3:
            _want(wire, 2, name)
            str_val = _text(buf, a, b, f'string in "{name}"')
    if kind == 0:
        return int_val
    if kind == 1:
        return str_val
    raise BadRequest(f'the protobuf body has an IntOrString of unknown type {kind} in "{name}"')


def _map_entry(buf: bytes, start: int, end: int, kind: str, name: str) -> tuple[str, str]:
    key, value = "", "0" if kind == QTYMAP else ""
    for number, wire, a, b in _fields(buf, start, end):
        if number in (1, 2):
            _want(wire, 2, name)
            if number == 1:
                key = _text(buf, a, b, f'key in "{name}"')
            elif kind == QTYMAP:
                value = _quantity(buf, a, b, name)
            else:
                value = _text(buf, a, b, f'value in "{name}"')
    return key, value


def _scalar(buf: bytes, wire: int, a: int, b: int, kind: str, name: str) -> Any:
    """One scalar (or scalar-like message) value; None for a zero Time."""
    if kind in (INT, BOOL):
        _want(wire, 0, name)
        return _signed(a) if kind == INT else a != 0
    _want(wire, 2, name)
    if kind == STR:
        return _text(buf, a, b, f'string in "{name}"')
    if kind == BYTES:
        return buf[a:b]
    if kind == TIME:
        return _time(buf, a, b, name)
    if kind == QTY:
        return _quantity(buf, a, b, name)
    if kind == IOS:
        return _int_or_string(buf, a, b, name)
    raise AssertionError(f"unknown field kind {kind!r}")  # a table mistake, caught by the unit tests


def _message(buf: bytes, start: int, end: int, table: Table, out: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    for number, wire, a, b in _fields(buf, start, end):
        spec = table.get(number)
        if spec is None:
            continue  # a field we do not decode: skipped, as protobuf readers do
        name, kind = spec
        if isinstance(kind, list):
            item = kind[0]
            items = out.setdefault(name, [])
            if isinstance(item, dict):
                _want(wire, 2, name)
                items.append(_message(buf, a, b, item))
            elif item in _VARINT_KINDS and wire == 2:  # packed
                pos = a
                while pos < b:
                    packed, pos = _varint(buf, pos, b)
                    items.append(_signed(packed) if item == INT else packed != 0)
            else:
                items.append(_scalar(buf, wire, a, b, item, name))
        elif isinstance(kind, dict):
            _want(wire, 2, name or "(inline)")
            if not name:
                _message(buf, a, b, kind, out)  # a Go embedded struct: its fields are the parent's
            else:
                previous = out.get(name)
                out[name] = _message(buf, a, b, kind, previous if isinstance(previous, dict) else None)
        elif kind in (STRMAP, QTYMAP):
            _want(wire, 2, name)
            key, value = _map_entry(buf, a, b, kind, name)
            out.setdefault(name, {})[key] = value
        else:
            pointer = kind.endswith("?")
            value = _scalar(buf, wire, a, b, kind.rstrip("?"), name)
            if value is None or (not pointer and (value == "" or value is False or value == 0)):
                out.pop(name, None)
            else:
                out[name] = value
    return out


# --- the envelope ------------------------------------------------------------------------------------

def decode(body: bytes) -> dict[str, Any]:
    """The JSON-shaped object of one ``application/vnd.kubernetes.protobuf`` request body.

    Raises ``BadRequest`` for anything that is not a well-formed Kubernetes protobuf envelope around
    one of the kinds in :data:`KINDS` (or ``DeleteOptions``), and nothing else for any input.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise BadRequest("the protobuf body must be bytes")
    buf = bytes(body)
    if not buf.startswith(MAGIC):
        raise BadRequest('the request body is not Kubernetes protobuf (it does not start with "k8s\\x00")')
    try:
        envelope = _message(buf, len(MAGIC), len(buf), UNKNOWN)
        type_meta = envelope.get("typeMeta", {})
        api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
        if not kind or not api_version:
            raise BadRequest("the protobuf body does not name its apiVersion and kind")
        if envelope.get("contentEncoding"):
            raise BadRequest(f'protobuf bodies with contentEncoding "{envelope["contentEncoding"]}" are not supported')
        table = DELETE_OPTIONS if kind == "DeleteOptions" else KINDS.get((api_version, kind))
        if table is None:
            raise BadRequest(f"protobuf bodies are supported for {_SUPPORTED}; send JSON for {kind} ({api_version})")
        raw = envelope.get("raw", b"")
        obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
        obj.update(_message(raw, 0, len(raw), table))
        return obj
    except BadRequest:
        raise
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError, MemoryError) as e:
        # Not reachable by design (every read above is checked); a last guard so no body can cause a 500.
        raise BadRequest(f"the protobuf body could not be decoded: {e}") from None
