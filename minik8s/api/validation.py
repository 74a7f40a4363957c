"""Validation of API objects: field errors with Kubernetes' paths, messages and reasons.

:func:`validate` is what every write goes through in the apiserver (after
:func:`minik8s.api.defaults.apply_defaults`). It is *total*: any JSON value anywhere gives
``Cause``s, never an exception. It is *stable*: it depends only on its arguments, so an object that
passed once passes again. The messages follow Kubernetes' ``field.Error`` wording::

    Required value                          FieldValueRequired
    Invalid value: "Bad_Name": <detail>     FieldValueInvalid
    Unsupported value: "X": supported values: "A", "B"   FieldValueNotSupported
    Duplicate value: "c1"                   FieldValueDuplicate
    Forbidden: <detail>                     FieldValueForbidden
    Not found: "v1"                         FieldValueNotFound
    Too long: must have at most N bytes     FieldValueTooLong
    Invalid value: 3.5: must be an integer  FieldValueTypeInvalid  (wrong JSON type)
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

from minik8s import workflow
from minik8s.api import names
from minik8s.api.quantity import FORMAT_ERROR, parse_quantity
from minik8s.api.registry import ResourceType
from minik8s.errors import Cause

REQUIRED, INVALID, NOT_SUPPORTED = "FieldValueRequired", "FieldValueInvalid", "FieldValueNotSupported"
DUPLICATE, FORBIDDEN, NOT_FOUND = "FieldValueDuplicate", "FieldValueForbidden", "FieldValueNotFound"
TOO_LONG, TYPE_INVALID = "FieldValueTooLong", "FieldValueTypeInvalid"

TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")
SELECTOR_MISMATCH = "`selector` does not match template `labels`"

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_PROTOCOLS = ("SCTP", "TCP", "UDP")
_VOLUME_SOURCES = (
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi", "downwardAPI",
    "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs",
    "hostPath", "image", "iscsi", "nfs", "persistentVolumeClaim", "photonPersistentDisk", "portworxVolume",
    "projected", "quobyte", "rbd", "scaleIO", "secret", "storageos", "vsphereVolume")
_HOST_PATH_TYPES = ("", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate",
                    "Socket")
_STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- error collection --------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    """A value as Kubernetes prints it in ``Invalid value: ...`` (strings quoted)."""
    try:
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return "null"
        if isinstance(value, int):
            text = str(value) if abs(value) < 10**30 else f"{str(value)[:20]}..."
            return text
        if isinstance(value, (str, float)):
            text = json.dumps(value, ensure_ascii=False)
        else:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return text if len(text) <= 256 else text[:253] + "..."
    except (ValueError, TypeError, RecursionError):
        return "<complex value>"


class _Errors:
    __slots__ = ("causes",)

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def required(self, path: str, detail: str = "") -> None:
        self.causes.append(Cause(path, f"Required value: {detail}" if detail else "Required value", REQUIRED))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.causes.append(Cause(path, f"Invalid value: {_fmt(value)}: {detail}", INVALID))

    def not_supported(self, path: str, value: Any, supported: Iterable[str]) -> None:
        choices = ", ".join(json.dumps(s) for s in sorted(supported))
        self.causes.append(Cause(path, f"Unsupported value: {_fmt(value)}: supported values: {choices}",
                                 NOT_SUPPORTED))

    def duplicate(self, path: str, value: Any) -> None:
        self.causes.append(Cause(path, f"Duplicate value: {_fmt(value)}", DUPLICATE))

    def forbidden(self, path: str, detail: str) -> None:
        self.causes.append(Cause(path, f"Forbidden: {detail}", FORBIDDEN))

    def not_found(self, path: str, value: Any) -> None:
        self.causes.append(Cause(path, f"Not found: {_fmt(value)}", NOT_FOUND))

    def too_long(self, path: str, limit: int) -> None:
        self.causes.append(Cause(path, f"Too long: must have at most {limit} bytes", TOO_LONG))

    def wrong_type(self, path: str, value: Any, expected: str) -> None:
        self.causes.append(Cause(path, f"Invalid value: {_fmt(value)}: must be {expected}", TYPE_INVALID))

    # Typed reads: each returns the value when it has the right JSON type, None when it is absent
    # or null (Go's zero value), and records a type error otherwise.

    def as_obj(self, value: Any, path: str) -> dict[str, Any] | None:
        if value is None or isinstance(value, dict):
            return value
        self.wrong_type(path, value, "an object")
        return None

    def as_list(self, value: Any, path: str) -> list[Any] | None:
        if value is None or isinstance(value, list):
            return value
        self.wrong_type(path, value, "a list")
        return None

    def as_str(self, value: Any, path: str) -> str | None:
        if value is None or isinstance(value, str):
            return value
        self.wrong_type(path, value, "a string")
        return None

    def as_bool(self, value: Any, path: str) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        self.wrong_type(path, value, "a boolean")
        return None

    def as_int(self, value: Any, path: str, bits: int = 32) -> int | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.wrong_type(path, value, "an integer")
            return None
        lo, hi = _INT32 if bits == 32 else _INT64
        if not lo <= value <= hi:
            self.wrong_type(path, value, f"a {bits}-bit integer")
            return None
        return value

    def as_number(self, value: Any, path: str) -> float | int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.wrong_type(path, value, "a finite number")
            return None
        return value

    def objs(self, value: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
        """(item path, item) for each object in the list ``value``; other items are reported."""
        items = self.as_list(value, path)
        out = []
        for i, item in enumerate(items or ()):
            p = f"{path}[{i}]"
            d = self.as_obj(item, p)
            if d is not None:
                out.append((p, d))
        return out

    def strs(self, value: Any, path: str) -> list[str]:
        items = self.as_list(value, path)
        out = []
        for i, item in enumerate(items or ()):
            s = self.as_str(item, f"{path}[{i}]")
            if s is not None:
                out.append(s)
        return out

    def str_map(self, value: Any, path: str) -> dict[str, str]:
        d = self.as_obj(value, path)
        out = {}
        for k, v in (d or {}).items():
            s = self.as_str(v, f"{path}[{k}]")
            if s is not None:
                out[k] = s
        return out

    # Common checks.

    def non_negative(self, value: Any, path: str, bits: int = 32) -> int | None:
        n = self.as_int(value, path, bits)
        if n is not None and n < 0:
            self.invalid(path, n, "must be greater than or equal to 0")
        return n

    def enum(self, value: Any, path: str, supported: Iterable[str]) -> str | None:
        s = self.as_str(value, path)
        if s is not None and s not in supported:
            self.not_supported(path, s, supported)
            return None
        return s

    def check(self, value: Any, path: str, problems: list[str]) -> bool:
        for p in problems:
            self.invalid(path, value, p)
        return not problems

    def port_number(self, value: Any, path: str, *, required: bool = True) -> int | None:
        n = self.as_int(value, path)
        if n is None:
            if required and value is None:
                self.required(path)
            return None
        if not 1 <= n <= 65535:
            self.invalid(path, n, "must be between 1 and 65535, inclusive")
        return n

    def int_or_port_name(self, value: Any, path: str) -> None:
        """A port given as a number or an IANA service name (``targetPort``, probe ports)."""
        if value is None:
            self.required(path)
        elif isinstance(value, str):
            self.check(value, path, names.iana_svc_name(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            self.port_number(value, path)
        else:
            self.wrong_type(path, value, "an integer or a string")


# --- metadata ----------------------------------------------------------------------------------------


def _labels(e: _Errors, value: Any, path: str) -> dict[str, str]:
    labels = e.str_map(value, path)
    for k, v in labels.items():
        e.check(k, path, names.qualified_name(k))
        e.check(v, path, names.label_value(v))
    return labels


def _annotations(e: _Errors, value: Any, path: str) -> None:
    annotations = e.str_map(value, path)
    size = 0
    for k, v in annotations.items():
        e.check(k, path, names.qualified_name(k.lower()))
        size += len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
    if size > TOTAL_ANNOTATION_SIZE_LIMIT:
        e.too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT)


def _owner_references(e: _Errors, value: Any, path: str) -> None:
    controllers = 0
    for p, ref in e.objs(value, path):
        # Kubernetes names these errors without the index; kubectl users know the wording.
        for field, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            s = e.as_str(ref.get(field), f"{p}.{field}")
            if not s:
                e.invalid(f"{path}.{field}", s or "", f"{what} must not be empty")
        if e.as_bool(ref.get("controller"), f"{p}.controller"):
            controllers += 1
        e.as_bool(ref.get("blockOwnerDeletion"), f"{p}.blockOwnerDeletion")
    if controllers > 1:
        e.invalid(path, controllers, "Only one reference can have Controller set to true")


def _metadata(e: _Errors, value: Any, name_check: Callable[[Any], list[str]]) -> dict[str, Any]:
    meta = e.as_obj(value, "metadata") or {}
    name = e.as_str(meta.get("name"), "metadata.name")
    if not name:
        if meta.get("name") in (None, ""):
            e.required("metadata.name", "name or generateName is required")
    else:
        e.check(name, "metadata.name", name_check(name))
    for key in ("generateName", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
        e.as_str(meta.get(key), f"metadata.{key}")
    e.non_negative(meta.get("generation"), "metadata.generation", 64)
    e.non_negative(meta.get("deletionGracePeriodSeconds"), "metadata.deletionGracePeriodSeconds", 64)
    _labels(e, meta.get("labels"), "metadata.labels")
    _annotations(e, meta.get("annotations"), "metadata.annotations")
    _owner_references(e, meta.get("ownerReferences"), "metadata.ownerReferences")
    for i, f in enumerate(e.strs(meta.get("finalizers"), "metadata.finalizers")):
        e.check(f, f"metadata.finalizers[{i}]", names.qualified_name(f))
    return meta


# --- shared pieces -----------------------------------------------------------------------------------


def _quantity(e: _Errors, value: Any, path: str) -> Fraction | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        e.wrong_type(path, value, "a quantity (string or number)")
        return None
    try:
        q = parse_quantity(value)
    except ValueError:
        e.invalid(path, value, FORMAT_ERROR)
        return None
    if q < 0:
        e.invalid(path, value, "must be greater than or equal to 0")
    return q


def _resources(e: _Errors, value: Any, path: str) -> None:
    res = e.as_obj(value, path)
    if res is None:
        return
    parsed: dict[str, dict[str, Fraction]] = {}
    for section in ("limits", "requests"):
        quantities = e.as_obj(res.get(section), f"{path}.{section}") or {}
        parsed[section] = {}
        for name, raw in quantities.items():
            p = f"{path}.{section}[{name}]"
            if not e.check(name, p, names.qualified_name(name)):
                continue
            if "/" not in name and name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
                e.invalid(p, name, "must be a standard resource for containers")
                continue
            q = _quantity(e, raw, p)
            if q is not None:
                parsed[section][name] = q
    for name, req in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and req > limit:
            e.invalid(f"{path}.requests[{name}]", res["requests"][name],
                      f"must be less than or equal to {name} limit of {res['limits'][name]}")


def _env(e: _Errors, value: Any, path: str) -> None:
    for p, var in e.objs(value, path):
        name = e.as_str(var.get("name"), f"{p}.name")
        if not name:
            e.required(f"{p}.name")
        else:
            e.check(name, f"{p}.name", names.env_var_name(name))
        val = e.as_str(var.get("value"), f"{p}.value")
        source = e.as_obj(var.get("valueFrom"), f"{p}.valueFrom")
        if source is None:
            continue
        if val:
            e.invalid(f"{p}.valueFrom", "", "may not be specified when `value` is not empty")
        kinds = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")
                 if source.get(k) is not None]
        if not kinds:
            e.invalid(f"{p}.valueFrom", "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                      "`configMapKeyRef` or `secretKeyRef`")
        elif len(kinds) > 1:
            e.invalid(f"{p}.valueFrom", "", "may not have more than one field specified at a time")
        for kind, required in (("fieldRef", "fieldPath"), ("resourceFieldRef", "resource"),
                               ("configMapKeyRef", "key"), ("secretKeyRef", "key")):
            ref = e.as_obj(source.get(kind), f"{p}.valueFrom.{kind}")
            if ref is not None and not e.as_str(ref.get(required), f"{p}.valueFrom.{kind}.{required}"):
                e.required(f"{p}.valueFrom.{kind}.{required}")


def _handler(e: _Errors, h: dict[str, Any], path: str, kinds: tuple[str, ...], what: str) -> None:
    present = [k for k in kinds if h.get(k) is not None]
    if not present:
        e.required(path, f"must specify a {what}")
    for extra in present[1:]:
        e.forbidden(f"{path}.{extra}", f"may not specify more than 1 {what}")
    exec_ = e.as_obj(h.get("exec"), f"{path}.exec")
    if exec_ is not None and not e.strs(exec_.get("command"), f"{path}.exec.command"):
        e.required(f"{path}.exec.command")
    http = e.as_obj(h.get("httpGet"), f"{path}.httpGet")
    if http is not None:
        e.int_or_port_name(http.get("port"), f"{path}.httpGet.port")
        e.as_str(http.get("path"), f"{path}.httpGet.path")
        e.as_str(http.get("host"), f"{path}.httpGet.host")
        e.enum(http.get("scheme"), f"{path}.httpGet.scheme", ("HTTP", "HTTPS"))
        for hp, header in e.objs(http.get("httpHeaders"), f"{path}.httpGet.httpHeaders"):
            if not e.as_str(header.get("name"), f"{hp}.name"):
                e.required(f"{hp}.name")
            e.as_str(header.get("value"), f"{hp}.value")
    tcp = e.as_obj(h.get("tcpSocket"), f"{path}.tcpSocket")
    if tcp is not None:
        e.int_or_port_name(tcp.get("port"), f"{path}.tcpSocket.port")
        e.as_str(tcp.get("host"), f"{path}.tcpSocket.host")
    grpc = e.as_obj(h.get("grpc"), f"{path}.grpc")
    if grpc is not None:
        e.port_number(grpc.get("port"), f"{path}.grpc.port")
    sleep = e.as_obj(h.get("sleep"), f"{path}.sleep")
    if sleep is not None:
        e.non_negative(sleep.get("seconds"), f"{path}.sleep.seconds", 64)


def _probe(e: _Errors, value: Any, path: str, *, success_must_be_one: bool) -> None:
    probe = e.as_obj(value, path)
    if probe is None:
        return
    _handler(e, probe, path, ("exec", "httpGet", "tcpSocket", "grpc"), "handler type")
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        e.non_negative(probe.get(key), f"{path}.{key}")
    grace = e.as_int(probe.get("terminationGracePeriodSeconds"), f"{path}.terminationGracePeriodSeconds", 64)
    if grace is not None and grace <= 0:
        e.invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than 0")
    success = probe.get("successThreshold")
    if success_must_be_one and isinstance(success, int) and not isinstance(success, bool) and success > 1:
        e.invalid(f"{path}.successThreshold", success, "must be 1")


def _container_ports(e: _Errors, value: Any, path: str) -> None:
    seen: set[str] = set()
    for p, port in e.objs(value, path):
        e.port_number(port.get("containerPort"), f"{p}.containerPort")
        host_port = e.as_int(port.get("hostPort"), f"{p}.hostPort")
        if host_port:
            e.port_number(host_port, f"{p}.hostPort")
        e.enum(port.get("protocol"), f"{p}.protocol", _PROTOCOLS)
        name = e.as_str(port.get("name"), f"{p}.name")
        if name:
            if e.check(name, f"{p}.name", names.iana_svc_name(name)) and name in seen:
                e.duplicate(f"{p}.name", name)
            seen.add(name)
        ip = e.as_str(port.get("hostIP"), f"{p}.hostIP")
        if ip:
            _ip(e, ip, f"{p}.hostIP")


def _container(e: _Errors, c: dict[str, Any], path: str, volumes: set[str], *, init: bool) -> None:
    image = e.as_str(c.get("image"), f"{path}.image")
    if not image:
        if image is not None or c.get("image") is None:
            e.required(f"{path}.image")
    elif image != image.strip():
        e.invalid(f"{path}.image", image, "must not have leading or trailing whitespace")
    e.enum(c.get("imagePullPolicy"), f"{path}.imagePullPolicy", ("Always", "IfNotPresent", "Never"))
    e.strs(c.get("command"), f"{path}.command")
    e.strs(c.get("args"), f"{path}.args")
    e.as_str(c.get("workingDir"), f"{path}.workingDir")
    e.as_str(c.get("terminationMessagePath"), f"{path}.terminationMessagePath")
    e.enum(c.get("terminationMessagePolicy"), f"{path}.terminationMessagePolicy", ("FallbackToLogsOnError", "File"))
    _env(e, c.get("env"), f"{path}.env")
    _container_ports(e, c.get("ports"), f"{path}.ports")
    _resources(e, c.get("resources"), f"{path}.resources")
    mount_paths: set[str] = set()
    for p, mount in e.objs(c.get("volumeMounts"), f"{path}.volumeMounts"):
        name = e.as_str(mount.get("name"), f"{p}.name")
        if not name:
            e.required(f"{p}.name")
        elif name not in volumes:
            e.not_found(f"{p}.name", name)
        mount_path = e.as_str(mount.get("mountPath"), f"{p}.mountPath")
        if not mount_path:
            e.required(f"{p}.mountPath")
        elif mount_path in mount_paths:
            e.invalid(f"{p}.mountPath", mount_path, "must be unique")
        else:
            mount_paths.add(mount_path)
        e.as_bool(mount.get("readOnly"), f"{p}.readOnly")
        e.as_str(mount.get("subPath"), f"{p}.subPath")
    restart = e.as_str(c.get("restartPolicy"), f"{path}.restartPolicy")
    sidecar = init and restart == "Always"
    if restart is not None:
        if not init:
            e.forbidden(f"{path}.restartPolicy", "may not be set for non-init containers")
        elif restart != "Always":
            e.not_supported(f"{path}.restartPolicy", restart, ["Always"])
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        if init and not sidecar and c.get(key) is not None:
            e.forbidden(f"{path}.{key}", "may not be set for init containers without restartPolicy=Always")
            continue
        _probe(e, c.get(key), f"{path}.{key}", success_must_be_one=key != "readinessProbe")
    lifecycle = e.as_obj(c.get("lifecycle"), f"{path}.lifecycle")
    if lifecycle is not None:
        for hook in ("preStop", "postStart"):
            handler = e.as_obj(lifecycle.get(hook), f"{path}.lifecycle.{hook}")
            if handler is not None:
                _handler(e, handler, f"{path}.lifecycle.{hook}", ("exec", "httpGet", "tcpSocket", "sleep"),
                         "handler type")


def _volumes(e: _Errors, value: Any, path: str) -> set[str]:
    seen: set[str] = set()
    for p, vol in e.objs(value, path):
        name = e.as_str(vol.get("name"), f"{p}.name")
        if not name:
            e.required(f"{p}.name")
        elif e.check(name, f"{p}.name", names.dns1123_label(name)):
            if name in seen:
                e.duplicate(f"{p}.name", name)
            seen.add(name)
        sources = [k for k in _VOLUME_SOURCES if vol.get(k) is not None]
        if not sources:
            e.required(p, "must specify a volume type")
        for extra in sources[1:]:
            e.forbidden(f"{p}.{extra}", "may not specify more than 1 volume type")
        host_path = e.as_obj(vol.get("hostPath"), f"{p}.hostPath")
        if host_path is not None:
            if not e.as_str(host_path.get("path"), f"{p}.hostPath.path"):
                e.required(f"{p}.hostPath.path")
            e.enum(host_path.get("type"), f"{p}.hostPath.type", _HOST_PATH_TYPES)
        empty_dir = e.as_obj(vol.get("emptyDir"), f"{p}.emptyDir")
        if empty_dir is not None:
            e.enum(empty_dir.get("medium"), f"{p}.emptyDir.medium", ("", "HugePages", "Memory"))
            _quantity(e, empty_dir.get("sizeLimit"), f"{p}.emptyDir.sizeLimit")
    return seen


def _ip(e: _Errors, value: str, path: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        e.invalid(path, value, "must be a valid IP address, (e.g. 10.9.8.7)")
        return False
    return True


def _pod_spec(e: _Errors, value: Any, path: str, *, template: bool = False) -> None:
    spec = e.as_obj(value, path)
    if spec is None:
        e.required(f"{path}.containers")
        return
    volumes = _volumes(e, spec.get("volumes"), f"{path}.volumes")
    containers = e.objs(spec.get("containers"), f"{path}.containers")
    if spec.get("containers") in (None, []):
        e.required(f"{path}.containers")
    names_seen: set[str] = set()
    init_containers = e.objs(spec.get("initContainers"), f"{path}.initContainers")
    for group, init in ((init_containers, True), (containers, False)):
        for p, c in group:
            name = e.as_str(c.get("name"), f"{p}.name")
            if not name:
                e.required(f"{p}.name")
            elif e.check(name, f"{p}.name", names.dns1123_label(name)):
                if name in names_seen:
                    e.duplicate(f"{p}.name", name)
                names_seen.add(name)
            _container(e, c, p, volumes, init=init)
    restart = e.enum(spec.get("restartPolicy"), f"{path}.restartPolicy", ("Always", "Never", "OnFailure"))
    if template and restart is not None and restart != "Always":
        e.not_supported(f"{path}.restartPolicy", restart, ["Always"])
    e.non_negative(spec.get("terminationGracePeriodSeconds"), f"{path}.terminationGracePeriodSeconds", 64)
    deadline = e.as_int(spec.get("activeDeadlineSeconds"), f"{path}.activeDeadlineSeconds", 64)
    if deadline is not None and not 1 <= deadline <= _INT32[1]:
        e.invalid(f"{path}.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive")
    node_name = e.as_str(spec.get("nodeName"), f"{path}.nodeName")
    if node_name:
        e.check(node_name, f"{path}.nodeName", names.dns1123_subdomain(node_name))
    _labels(e, spec.get("nodeSelector"), f"{path}.nodeSelector")
    e.as_bool(spec.get("hostNetwork"), f"{path}.hostNetwork")
    e.enum(spec.get("dnsPolicy"), f"{path}.dnsPolicy", ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"))
    e.as_str(spec.get("schedulerName"), f"{path}.schedulerName")
    for key in ("hostname", "subdomain"):
        v = e.as_str(spec.get(key), f"{path}.{key}")
        if v:
            e.check(v, f"{path}.{key}", names.dns1123_label(v))
    for p, tol in e.objs(spec.get("tolerations"), f"{path}.tolerations"):
        tkey = e.as_str(tol.get("key"), f"{p}.key")
        if tkey:
            e.check(tkey, f"{p}.key", names.qualified_name(tkey))
        op = e.enum(tol.get("operator"), f"{p}.operator", ("Equal", "Exists"))
        value_ = e.as_str(tol.get("value"), f"{p}.value")
        if op == "Exists" and value_:
            e.invalid(f"{p}.operator", op, "value must be empty when `operator` is 'Exists'")
        e.enum(tol.get("effect"), f"{p}.effect", ("", "NoExecute", "NoSchedule", "PreferNoSchedule"))
        e.as_int(tol.get("tolerationSeconds"), f"{p}.tolerationSeconds", 64)


def _conditions(e: _Errors, value: Any, path: str) -> None:
    for p, cond in e.objs(value, path):
        for key in ("type", "status", "reason", "message", "lastTransitionTime", "lastProbeTime",
                    "lastHeartbeatTime", "lastUpdateTime"):
            e.as_str(cond.get(key), f"{p}.{key}")


def _container_statuses(e: _Errors, value: Any, path: str) -> None:
    for p, cs in e.objs(value, path):
        for key in ("name", "image", "imageID", "containerID"):
            e.as_str(cs.get(key), f"{p}.{key}")
        e.as_bool(cs.get("ready"), f"{p}.ready")
        e.as_bool(cs.get("started"), f"{p}.started")
        e.non_negative(cs.get("restartCount"), f"{p}.restartCount")
        for key in ("state", "lastState"):
            e.as_obj(cs.get(key), f"{p}.{key}")


def _selector(e: _Errors, value: Any, path: str) -> dict[str, Any] | None:
    """A ``LabelSelector`` object; returns it when well-formed."""
    sel = e.as_obj(value, path)
    if sel is None:
        return None
    before = len(e.causes)
    _labels(e, sel.get("matchLabels"), f"{path}.matchLabels")
    for p, expr in e.objs(sel.get("matchExpressions"), f"{path}.matchExpressions"):
        key = e.as_str(expr.get("key"), f"{p}.key")
        if not key:
            e.required(f"{p}.key")
        else:
            e.check(key, f"{p}.key", names.qualified_name(key))
        op = e.as_str(expr.get("operator"), f"{p}.operator")
        values = e.strs(expr.get("values"), f"{p}.values")
        if op in ("In", "NotIn"):
            if not values:
                e.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                e.forbidden(f"{p}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        elif op is not None or expr.get("operator") is None:
            e.invalid(f"{p}.operator", op or "", "not a valid selector operator")
        for v in values:
            e.check(v, f"{p}.values", names.label_value(v))
    return sel if len(e.causes) == before else None


def _selector_matches(sel: dict[str, Any], labels: dict[str, str]) -> bool:
    from minik8s.api.selectors import selector_from_dict  # the selector is already known to be well-formed

    try:
        return selector_from_dict(sel).matches(labels)
    except Exception:  # noqa: BLE001 - a BadRequest here means _selector missed something; treat it as a mismatch
        return False


# --- kinds -------------------------------------------------------------------------------------------


def _validate_pod(e: _Errors, obj: dict[str, Any]) -> None:
    _pod_spec(e, obj.get("spec"), "spec")
    status = e.as_obj(obj.get("status"), "status")
    if status is None:
        return
    e.enum(status.get("phase"), "status.phase", ("Failed", "Pending", "Running", "Succeeded", "Unknown"))
    for key in ("hostIP", "podIP"):
        ip = e.as_str(status.get(key), f"status.{key}")
        if ip:
            _ip(e, ip, f"status.{key}")
    for key in ("podIPs", "hostIPs"):
        for p, item in e.objs(status.get(key), f"status.{key}"):
            ip = e.as_str(item.get("ip"), f"{p}.ip")
            if ip:
                _ip(e, ip, f"{p}.ip")
    for key in ("startTime", "reason", "message", "qosClass"):
        e.as_str(status.get(key), f"status.{key}")
    _conditions(e, status.get("conditions"), "status.conditions")
    _container_statuses(e, status.get("containerStatuses"), "status.containerStatuses")
    _container_statuses(e, status.get("initContainerStatuses"), "status.initContainerStatuses")


def _pod_template_owner(e: _Errors, obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The parts ReplicaSet and Deployment share: replicas, selector, template."""
    spec = e.as_obj(obj.get("spec"), "spec")
    if spec is None:
        e.required("spec.selector")
        e.required("spec.template")
        return None
    e.non_negative(spec.get("replicas"), "spec.replicas")
    e.non_negative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    raw_sel = spec.get("selector")
    sel = _selector(e, raw_sel, "spec.selector")
    if raw_sel is None:
        e.required("spec.selector")
    elif sel is not None and not sel.get("matchLabels") and not sel.get("matchExpressions"):
        e.invalid("spec.selector", sel, f"empty selector is invalid for {kind.lower()}")
        sel = None
    template = e.as_obj(spec.get("template"), "spec.template")
    if template is None:
        if spec.get("template") is None:
            e.required("spec.template")
        return spec
    tmeta = e.as_obj(template.get("metadata"), "spec.template.metadata") or {}
    before = len(e.causes)
    labels = _labels(e, tmeta.get("labels"), "spec.template.metadata.labels")
    _annotations(e, tmeta.get("annotations"), "spec.template.metadata.annotations")
    if sel is not None and len(e.causes) == before and not _selector_matches(sel, labels):
        e.invalid("spec.template.metadata.labels", labels, SELECTOR_MISMATCH)
    _pod_spec(e, template.get("spec"), "spec.template.spec", template=True)
    return spec


def _validate_replicaset(e: _Errors, obj: dict[str, Any]) -> None:
    _pod_template_owner(e, obj, "ReplicaSet")


def _int_or_percent(e: _Errors, value: Any, path: str) -> Fraction | None:
    """``maxSurge``/``maxUnavailable``: returns the value as a fraction of 100% or an absolute count."""
    if value is None:
        return None
    if isinstance(value, str):
        if not e.check(value, path, names.percent(value)):
            return None
        return Fraction(int(value[:-1]), 100)
    n = e.non_negative(value, path) if not isinstance(value, bool) else None
    if isinstance(value, bool):
        e.wrong_type(path, value, "an integer or a percentage string")
    return Fraction(n) if n is not None and n >= 0 else None


def _validate_deployment(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _pod_template_owner(e, obj, "Deployment")
    if spec is None:
        return
    limit = e.non_negative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    del limit
    e.as_bool(spec.get("paused"), "spec.paused")
    deadline = e.as_int(spec.get("progressDeadlineSeconds"), "spec.progressDeadlineSeconds")
    if deadline is not None:
        min_ready = spec.get("minReadySeconds")
        if deadline < 0:
            e.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than or equal to 0")
        elif isinstance(min_ready, int) and not isinstance(min_ready, bool) and deadline <= min_ready:
            e.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")
    strategy = e.as_obj(spec.get("strategy"), "spec.strategy")
    if strategy is None:
        return
    stype = e.enum(strategy.get("type"), "spec.strategy.type", ("Recreate", "RollingUpdate"))
    rolling = e.as_obj(strategy.get("rollingUpdate"), "spec.strategy.rollingUpdate")
    if rolling is None:
        return
    if stype == "Recreate":
        e.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
        return
    path = "spec.strategy.rollingUpdate"
    surge = _int_or_percent(e, rolling.get("maxSurge"), f"{path}.maxSurge")
    unavailable = _int_or_percent(e, rolling.get("maxUnavailable"), f"{path}.maxUnavailable")
    raw_unavailable = rolling.get("maxUnavailable")
    if isinstance(raw_unavailable, str) and unavailable is not None and unavailable > 1:
        e.invalid(f"{path}.maxUnavailable", raw_unavailable, "must not be greater than 100%")
    if surge == 0 and unavailable == 0:
        e.invalid(f"{path}.maxUnavailable", raw_unavailable, "may not be 0 when `maxSurge` is 0")


def _validate_service(e: _Errors, obj: dict[str, Any]) -> None:
    spec = e.as_obj(obj.get("spec"), "spec")
    if spec is None:
        e.required("spec.ports")
        return
    stype = e.enum(spec.get("type"), "spec.type", ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"))
    cluster_ip = e.as_str(spec.get("clusterIP"), "spec.clusterIP")
    if cluster_ip and cluster_ip != "None":
        _ip(e, cluster_ip, "spec.clusterIP")
    if cluster_ip == "None" and stype in ("NodePort", "LoadBalancer"):
        e.invalid("spec.clusterIP", cluster_ip, f"may not be set to 'None' for {stype} services")
    for i, ip in enumerate(e.strs(spec.get("clusterIPs"), "spec.clusterIPs")):
        if ip != "None":
            _ip(e, ip, f"spec.clusterIPs[{i}]")
        if i == 0 and cluster_ip and ip != cluster_ip:
            e.invalid("spec.clusterIPs[0]", ip, "must match `clusterIP` when both are specified")
    _labels(e, spec.get("selector"), "spec.selector")
    e.enum(spec.get("sessionAffinity"), "spec.sessionAffinity", ("ClientIP", "None"))
    e.enum(spec.get("externalTrafficPolicy"), "spec.externalTrafficPolicy", ("Cluster", "Local"))
    e.enum(spec.get("internalTrafficPolicy"), "spec.internalTrafficPolicy", ("Cluster", "Local"))
    external_name = e.as_str(spec.get("externalName"), "spec.externalName")
    if stype == "ExternalName":
        if not external_name:
            e.required("spec.externalName")
        else:
            e.check(external_name, "spec.externalName", names.dns1123_subdomain(external_name.rstrip(".")))
    ports = e.objs(spec.get("ports"), "spec.ports")
    if not ports and stype != "ExternalName" and cluster_ip != "None" and isinstance(spec.get("ports"), (list,
                                                                                                         type(None))):
        e.required("spec.ports")
    port_names: set[str] = set()
    seen_ports: set[tuple[Any, Any]] = set()
    seen_node_ports: set[tuple[Any, Any]] = set()
    for p, port in ports:
        name = e.as_str(port.get("name"), f"{p}.name")
        if not name:
            if len(ports) > 1:
                e.required(f"{p}.name")
        elif e.check(name, f"{p}.name", names.dns1123_label(name)):
            if name in port_names:
                e.duplicate(f"{p}.name", name)
            port_names.add(name)
        number = e.port_number(port.get("port"), f"{p}.port")
        protocol = e.enum(port.get("protocol"), f"{p}.protocol", _PROTOCOLS)
        if number is not None:
            key = (number, protocol or "TCP")
            if key in seen_ports:
                e.duplicate(p, {"port": number, "protocol": protocol or "TCP"})
            seen_ports.add(key)
        if port.get("targetPort") is not None:
            e.int_or_port_name(port.get("targetPort"), f"{p}.targetPort")
        node_port = e.as_int(port.get("nodePort"), f"{p}.nodePort")
        if node_port:
            if stype not in ("NodePort", "LoadBalancer"):
                e.forbidden(f"{p}.nodePort", f"may not be used when `type` is '{stype or 'ClusterIP'}'")
            else:
                e.port_number(node_port, f"{p}.nodePort")
                key = (node_port, protocol or "TCP")
                if key in seen_node_ports:
                    e.duplicate(f"{p}.nodePort", node_port)
                seen_node_ports.add(key)
        e.as_str(port.get("appProtocol"), f"{p}.appProtocol")


def _validate_endpoints(e: _Errors, obj: dict[str, Any]) -> None:
    for p, subset in e.objs(obj.get("subsets"), "subsets"):
        for key in ("addresses", "notReadyAddresses"):
            for ap, addr in e.objs(subset.get(key), f"{p}.{key}"):
                ip = e.as_str(addr.get("ip"), f"{ap}.ip")
                if not ip:
                    e.required(f"{ap}.ip")
                else:
                    _ip(e, ip, f"{ap}.ip")
                for k in ("hostname", "nodeName"):
                    v = e.as_str(addr.get(k), f"{ap}.{k}")
                    if v:
                        check = names.dns1123_label if k == "hostname" else names.dns1123_subdomain
                        e.check(v, f"{ap}.{k}", check(v))
                e.as_obj(addr.get("targetRef"), f"{ap}.targetRef")
        ports = e.objs(subset.get("ports"), f"{p}.ports")
        seen: set[str] = set()
        for pp, port in ports:
            name = e.as_str(port.get("name"), f"{pp}.name")
            if name:
                if e.check(name, f"{pp}.name", names.dns1123_label(name)) and name in seen:
                    e.duplicate(f"{pp}.name", name)
                seen.add(name)
            elif len(ports) > 1:
                e.required(f"{pp}.name")
            e.port_number(port.get("port"), f"{pp}.port")
            e.enum(port.get("protocol"), f"{pp}.protocol", _PROTOCOLS)


def _validate_event(e: _Errors, obj: dict[str, Any]) -> None:
    involved = e.as_obj(obj.get("involvedObject"), "involvedObject")
    if not involved:
        if obj.get("involvedObject") is None or involved == {}:
            e.required("involvedObject")
    else:
        for key in ("apiVersion", "kind", "name", "namespace", "uid", "resourceVersion", "fieldPath"):
            e.as_str(involved.get(key), f"involvedObject.{key}")
    for key in ("reason", "message", "type", "firstTimestamp", "lastTimestamp", "eventTime", "reportingComponent",
                "reportingInstance", "action"):
        e.as_str(obj.get(key), key)
    e.non_negative(obj.get("count"), "count")
    source = e.as_obj(obj.get("source"), "source")
    if source is not None:
        e.as_str(source.get("component"), "source.component")
        e.as_str(source.get("host"), "source.host")


def _validate_namespace(e: _Errors, obj: dict[str, Any]) -> None:
    spec = e.as_obj(obj.get("spec"), "spec")
    if spec is not None:
        for i, f in enumerate(e.strs(spec.get("finalizers"), "spec.finalizers")):
            e.check(f, f"spec.finalizers[{i}]", names.qualified_name(f))
    status = e.as_obj(obj.get("status"), "status")
    if status is not None:
        e.enum(status.get("phase"), "status.phase", ("Active", "Terminating"))
        _conditions(e, status.get("conditions"), "status.conditions")


def _cidr(e: _Errors, value: str, path: str) -> None:
    try:
        ipaddress.IPv4Network(value, strict=False)
        if "/" not in value:
            raise ValueError(value)
    except ValueError:
        e.invalid(path, value, "must be a valid CIDR value, (e.g. 10.9.8.0/24)")


def _validate_node(e: _Errors, obj: dict[str, Any]) -> None:
    spec = e.as_obj(obj.get("spec"), "spec")
    if spec is not None:
        cidr = e.as_str(spec.get("podCIDR"), "spec.podCIDR")
        if cidr:
            _cidr(e, cidr, "spec.podCIDR")
        for i, c in enumerate(e.strs(spec.get("podCIDRs"), "spec.podCIDRs")):
            _cidr(e, c, f"spec.podCIDRs[{i}]")
        e.as_bool(spec.get("unschedulable"), "spec.unschedulable")
        seen: set[tuple[str, str]] = set()
        for p, taint in e.objs(spec.get("taints"), "spec.taints"):
            key = e.as_str(taint.get("key"), f"{p}.key")
            if not key:
                e.required(f"{p}.key")
            else:
                e.check(key, f"{p}.key", names.qualified_name(key))
            value = e.as_str(taint.get("value"), f"{p}.value")
            if value:
                e.check(value, f"{p}.value", names.label_value(value))
            effect = e.as_str(taint.get("effect"), f"{p}.effect")
            if not effect:
                e.required(f"{p}.effect")
            elif effect not in ("NoExecute", "NoSchedule", "PreferNoSchedule"):
                e.not_supported(f"{p}.effect", effect, ("NoExecute", "NoSchedule", "PreferNoSchedule"))
            if key and effect:
                if (key, effect) in seen:
                    e.duplicate(p, {"key": key, "effect": effect})
                seen.add((key, effect))
    status = e.as_obj(obj.get("status"), "status")
    if status is None:
        return
    for section in ("capacity", "allocatable"):
        for name, q in (e.as_obj(status.get(section), f"status.{section}") or {}).items():
            _quantity(e, q, f"status.{section}[{name}]")
    _conditions(e, status.get("conditions"), "status.conditions")
    for p, addr in e.objs(status.get("addresses"), "status.addresses"):
        e.as_str(addr.get("type"), f"{p}.type")
        e.as_str(addr.get("address"), f"{p}.address")
    info = e.as_obj(status.get("nodeInfo"), "status.nodeInfo")
    for k, v in (info or {}).items():
        e.as_str(v, f"status.nodeInfo.{k}")


def _hpa_rules(e: _Errors, value: Any, path: str) -> None:
    rules = e.as_obj(value, path)
    if rules is None:
        return
    window = e.as_int(rules.get("stabilizationWindowSeconds"), f"{path}.stabilizationWindowSeconds")
    if window is not None and not 0 <= window <= 3600:
        e.invalid(f"{path}.stabilizationWindowSeconds", window, "must be between 0 and 3600, inclusive")
    e.enum(rules.get("selectPolicy"), f"{path}.selectPolicy", ("Disabled", "Max", "Min"))
    for p, policy in e.objs(rules.get("policies"), f"{path}.policies"):
        if policy.get("type") is None:
            e.required(f"{p}.type")
        e.enum(policy.get("type"), f"{p}.type", ("Percent", "Pods"))
        v = e.as_int(policy.get("value"), f"{p}.value")
        if v is None or v <= 0:
            e.invalid(f"{p}.value", policy.get("value") if v is None else v, "must be greater than zero")
        period = e.as_int(policy.get("periodSeconds"), f"{p}.periodSeconds")
        if period is None or not 1 <= period <= 1800:
            e.invalid(f"{p}.periodSeconds", period if period is not None else 0,
                      "must be between 1 and 1800, inclusive")


_METRIC_SOURCES = {"Resource": "resource", "Pods": "pods", "Object": "object", "External": "external",
                   "ContainerResource": "containerResource"}


def _metric_target(e: _Errors, value: Any, path: str) -> None:
    target = e.as_obj(value, path)
    if target is None:
        e.required(path)
        return
    ttype = target.get("type")
    if ttype is None:
        e.required(f"{path}.type")
    ttype = e.enum(ttype, f"{path}.type", ("AverageValue", "Utilization", "Value"))
    util = e.as_int(target.get("averageUtilization"), f"{path}.averageUtilization")
    if util is not None and util <= 0:
        e.invalid(f"{path}.averageUtilization", util, "must be greater than 0")
    for key in ("averageValue", "value"):
        q = _quantity(e, target.get(key), f"{path}.{key}")
        if q is not None and q == 0:
            e.invalid(f"{path}.{key}", target.get(key), "must be positive")
    wanted = {"Utilization": "averageUtilization", "AverageValue": "averageValue", "Value": "value"}.get(ttype or "")
    if wanted and target.get(wanted) is None:
        e.required(f"{path}.{wanted}", f"must set {wanted} when `type` is '{ttype}'")


def _validate_hpa(e: _Errors, obj: dict[str, Any]) -> None:
    spec = e.as_obj(obj.get("spec"), "spec")
    if spec is None:
        e.required("spec.scaleTargetRef")
        e.required("spec.maxReplicas")
        return
    ref = e.as_obj(spec.get("scaleTargetRef"), "spec.scaleTargetRef") or {}
    for key in ("kind", "name"):
        v = e.as_str(ref.get(key), f"spec.scaleTargetRef.{key}")
        if not v:
            e.required(f"spec.scaleTargetRef.{key}")
        elif key == "name":
            e.check(v, "spec.scaleTargetRef.name", names.dns1123_subdomain(v))
    e.as_str(ref.get("apiVersion"), "spec.scaleTargetRef.apiVersion")
    min_r = e.as_int(spec.get("minReplicas"), "spec.minReplicas")
    if min_r is not None and min_r < 1:
        e.invalid("spec.minReplicas", min_r, "must be greater than or equal to 1")
    max_r = e.as_int(spec.get("maxReplicas"), "spec.maxReplicas")
    if spec.get("maxReplicas") is None:
        e.required("spec.maxReplicas")
    elif max_r is not None:
        if max_r < 1:
            e.invalid("spec.maxReplicas", max_r, "must be greater than 0")
        elif min_r is not None and max_r < min_r:
            e.invalid("spec.maxReplicas", max_r, "must be greater than or equal to `minReplicas`")
    for p, metric in e.objs(spec.get("metrics"), "spec.metrics"):
        mtype = metric.get("type")
        if mtype is None:
            e.required(f"{p}.type")
            continue
        mtype = e.enum(mtype, f"{p}.type", _METRIC_SOURCES)
        if mtype is None:
            continue
        field = _METRIC_SOURCES[mtype]
        for other in _METRIC_SOURCES.values():
            if other != field and metric.get(other) is not None:
                e.forbidden(f"{p}.{other}", "must populate the given metric source only")
        source = e.as_obj(metric.get(field), f"{p}.{field}")
        if source is None:
            if metric.get(field) is None:
                e.required(f"{p}.{field}", "must populate information for the given metric source")
            continue
        if mtype in ("Resource", "ContainerResource"):
            name = e.as_str(source.get("name"), f"{p}.{field}.name")
            if not name:
                e.required(f"{p}.{field}.name")
            if mtype == "ContainerResource" and not e.as_str(source.get("container"), f"{p}.{field}.container"):
                e.required(f"{p}.{field}.container")
        _metric_target(e, source.get("target"), f"{p}.{field}.target")
    behavior = e.as_obj(spec.get("behavior"), "spec.behavior")
    if behavior is not None:
        _hpa_rules(e, behavior.get("scaleUp"), "spec.behavior.scaleUp")
        _hpa_rules(e, behavior.get("scaleDown"), "spec.behavior.scaleDown")


def _ingress_backend(e: _Errors, value: Any, path: str) -> None:
    backend = e.as_obj(value, path)
    if backend is None:
        e.required(path)
        return
    service = e.as_obj(backend.get("service"), f"{path}.service")
    resource = e.as_obj(backend.get("resource"), f"{path}.resource")
    if service is not None and resource is not None:
        e.invalid(path, "", "cannot set both resource and service backends")
        return
    if resource is not None:
        if not e.as_str(resource.get("kind"), f"{path}.resource.kind"):
            e.required(f"{path}.resource.kind")
        if not e.as_str(resource.get("name"), f"{path}.resource.name"):
            e.required(f"{path}.resource.name")
        return
    if service is None:
        e.invalid(path, "", "resource or service backend is required")
        return
    name = e.as_str(service.get("name"), f"{path}.service.name")
    if not name:
        e.required(f"{path}.service.name")
    else:
        e.check(name, f"{path}.service.name", names.dns1035_label(name))
    port = e.as_obj(service.get("port"), f"{path}.service.port") or {}
    port_name = e.as_str(port.get("name"), f"{path}.service.port.name")
    number = e.as_int(port.get("number"), f"{path}.service.port.number")
    if port_name and number:
        e.invalid(path, "", "cannot set both port name & port number")
    elif port_name:
        e.check(port_name, f"{path}.service.port.name", names.iana_svc_name(port_name))
    elif number:
        e.port_number(number, f"{path}.service.port.number")
    elif port.get("number") is None:
        e.required(f"{path}.service.port", "port name or number is required")


def _validate_ingress(e: _Errors, obj: dict[str, Any]) -> None:
    spec = e.as_obj(obj.get("spec"), "spec")
    if spec is None:
        e.invalid("spec", {}, "either `defaultBackend` or `rules` must be specified")
        return
    class_name = e.as_str(spec.get("ingressClassName"), "spec.ingressClassName")
    if class_name:
        e.check(class_name, "spec.ingressClassName", names.dns1123_subdomain(class_name))
    if spec.get("defaultBackend") is not None:
        _ingress_backend(e, spec.get("defaultBackend"), "spec.defaultBackend")
    rules = e.objs(spec.get("rules"), "spec.rules")
    if not rules and spec.get("defaultBackend") is None and isinstance(spec.get("rules"), (list, type(None))):
        e.invalid("spec", spec, "either `defaultBackend` or `rules` must be specified")
    for p, rule in rules:
        host = e.as_str(rule.get("host"), f"{p}.host")
        if host:
            bare = host[2:] if host.startswith("*.") else host
            try:
                ipaddress.ip_address(bare)
                e.invalid(f"{p}.host", host, "must be a DNS name, not an IP address")
            except ValueError:
                e.check(host, f"{p}.host", names.dns1123_subdomain(bare))
        http = e.as_obj(rule.get("http"), f"{p}.http")
        if http is None:
            continue
        paths = e.objs(http.get("paths"), f"{p}.http.paths")
        if not paths and isinstance(http.get("paths"), (list, type(None))):
            e.required(f"{p}.http.paths")
        for pp, item in paths:
            path = e.as_str(item.get("path"), f"{pp}.path")
            ptype = item.get("pathType")
            if ptype is None:
                e.required(f"{pp}.pathType", "pathType must be specified")
            ptype = e.enum(ptype, f"{pp}.pathType", ("Exact", "ImplementationSpecific", "Prefix"))
            absolute = ptype in ("Exact", "Prefix") or (ptype == "ImplementationSpecific" and path)
            if absolute and (not path or not path.startswith("/")):
                e.invalid(f"{pp}.path", path or "", "must be an absolute path")
            _ingress_backend(e, item.get("backend"), f"{pp}.backend")


# Bounds of a Function (docs/serverless.md, "Objects").
FUNCTION_RUNTIMES = ("python",)
FUNCTION_MAX_SCALE_LIMIT = 1000
FUNCTION_MAX_TIMEOUT_SECONDS = 900
# An Activation's texts are cut by the gateway to these sizes (characters).
ACTIVATION_RESULT_CHARS = 4096
ACTIVATION_LOGS_CHARS = 16384
ACTIVATION_STATUSES = ("bad-request", "error", "success", "timeout", "unavailable")


def _positive_number(e: _Errors, value: Any, path: str, *, maximum: float | None = None) -> None:
    n = e.as_number(value, path)
    if n is None:
        return
    if n <= 0:
        e.invalid(path, n, "must be greater than 0")
    elif maximum is not None and n > maximum:
        e.invalid(path, n, f"must be less than or equal to {maximum:g}")


def _validate_function(e: _Errors, obj: dict[str, Any]) -> None:
    spec = e.as_obj(obj.get("spec"), "spec")
    if spec is None:
        if obj.get("spec") is None:
            e.required("spec")
        return
    # An absent runtime means python (the default); only a named other runtime is refused.
    e.enum(spec.get("runtime"), "spec.runtime", FUNCTION_RUNTIMES)
    digest = e.as_str(spec.get("codeDigest"), "spec.codeDigest")
    if digest and not _DIGEST_RE.fullmatch(digest):
        e.invalid("spec.codeDigest", digest, "must be a digest of the form 'sha256:<64 lower-case hex digits>'")
    entry = e.as_str(spec.get("entryPoint"), "spec.entryPoint")
    if entry is not None and not _IDENT_RE.fullmatch(entry):
        e.invalid("spec.entryPoint", entry, "must be a Python identifier")
    _env(e, spec.get("env"), "spec.env")
    _resources(e, spec.get("resources"), "spec.resources")
    min_scale = e.non_negative(spec.get("minScale"), "spec.minScale")
    max_scale = e.as_int(spec.get("maxScale"), "spec.maxScale")
    limit = FUNCTION_MAX_SCALE_LIMIT
    if min_scale is not None and min_scale > limit:
        e.invalid("spec.minScale", min_scale, f"must be less than or equal to {limit}")
    if max_scale is not None:
        if max_scale < 1:
            e.invalid("spec.maxScale", max_scale, "must be greater than or equal to 1")
        elif max_scale > limit:
            e.invalid("spec.maxScale", max_scale, f"must be less than or equal to {limit}")
        elif min_scale is not None and 0 <= min_scale <= limit and max_scale < min_scale:
            e.invalid("spec.maxScale", max_scale, "must be greater than or equal to `minScale`")
    target = e.as_int(spec.get("targetConcurrency"), "spec.targetConcurrency")
    if target is not None and target < 1:
        e.invalid("spec.targetConcurrency", target, "must be greater than or equal to 1")
    _positive_number(e, spec.get("idleTimeout"), "spec.idleTimeout")
    _positive_number(e, spec.get("timeout"), "spec.timeout", maximum=FUNCTION_MAX_TIMEOUT_SECONDS)
    status = e.as_obj(obj.get("status"), "status")
    if status is not None:
        for key in ("image", "url", "lastActiveTime"):
            e.as_str(status.get(key), f"status.{key}")
        sdigest = e.as_str(status.get("codeDigest"), "status.codeDigest")
        if sdigest and not _DIGEST_RE.fullmatch(sdigest):
            e.invalid("status.codeDigest", sdigest, "must be a digest of the form 'sha256:<64 lower-case hex digits>'")
        for key in ("replicas", "readyReplicas", "desiredScale"):
            e.non_negative(status.get(key), f"status.{key}")
        e.non_negative(status.get("observedGeneration"), "status.observedGeneration", 64)
        _conditions(e, status.get("conditions"), "status.conditions")


def _validate_activation(e: _Errors, obj: dict[str, Any]) -> None:
    spec = e.as_obj(obj.get("spec"), "spec")
    if spec is None:
        if obj.get("spec") is None:
            e.required("spec.function")
        return
    function = e.as_str(spec.get("function"), "spec.function")
    if not function:
        if spec.get("function") in (None, ""):
            e.required("spec.function")
    else:
        e.check(function, "spec.function", names.dns1035_label(function))
    e.as_str(spec.get("start"), "spec.start")
    for key in ("durationMs", "initMs"):
        n = e.as_number(spec.get(key), f"spec.{key}")
        if n is not None and n < 0:
            e.invalid(f"spec.{key}", n, "must be greater than or equal to 0")
    e.enum(spec.get("status"), "spec.status", ACTIVATION_STATUSES)
    code = e.as_int(spec.get("statusCode"), "spec.statusCode")
    if code is not None and not 0 <= code <= 999:
        e.invalid("spec.statusCode", code, "must be between 0 and 999, inclusive")
    for key, most in (("result", ACTIVATION_RESULT_CHARS), ("logs", ACTIVATION_LOGS_CHARS)):
        text = e.as_str(spec.get(key), f"spec.{key}")
        if text is not None and len(text) > most:
            e.causes.append(Cause(f"spec.{key}", f"Too long: must have at most {most} characters", TOO_LONG))
    pod = e.as_str(spec.get("pod"), "spec.pod")
    if pod:
        e.check(pod, "spec.pod", names.dns1123_subdomain(pod))
    for key in ("truncated", "async"):
        e.as_bool(spec.get(key), f"spec.{key}")


def _workflow_causes(e: _Errors, spec: Any, prefix: str) -> None:
    """The workflow language's problems (minik8s.workflow.validate) as causes."""
    for field, message in workflow.validate(spec, prefix):
        reason = REQUIRED if message.startswith("Required value") else (
            NOT_SUPPORTED if message.startswith("Unsupported value") else INVALID)
        e.causes.append(Cause(field, message, reason))


def _validate_workflow(e: _Errors, obj: dict[str, Any]) -> None:
    _workflow_causes(e, obj.get("spec"), "spec")
    status = e.as_obj(obj.get("status"), "status")
    if status is not None:
        e.non_negative(status.get("observedGeneration"), "status.observedGeneration", 64)
        _conditions(e, status.get("conditions"), "status.conditions")


EXECUTION_PHASES = ("Failed", "Pending", "Running", "Succeeded")
TRACE_STATUSES = ("Caught", "Failed", "Retrying", "Running", "Succeeded")


def _name_ref(e: _Errors, value: Any, path: str, check: Callable[[Any], list[str]], *, required: bool) -> str | None:
    """A reference to another object by name (``spec.workflow``, ``spec.trigger``)."""
    name = e.as_str(value, path)
    if not name:
        if required and value in (None, ""):
            e.required(path)
        return None
    e.check(name, path, check(name))
    return name


def _validate_workflow_execution(e: _Errors, obj: dict[str, Any]) -> None:
    spec = e.as_obj(obj.get("spec"), "spec")
    if spec is None:
        if obj.get("spec") is None:
            e.required("spec.workflow")
        return
    _name_ref(e, spec.get("workflow"), "spec.workflow", names.dns1123_subdomain, required=True)
    if spec.get("definition") is None:
        e.required("spec.definition", "a copy of the Workflow's spec")
    else:
        _workflow_causes(e, spec.get("definition"), "spec.definition")
    status = e.as_obj(obj.get("status"), "status")
    if status is None:
        return
    e.enum(status.get("phase"), "status.phase", EXECUTION_PHASES)
    for key in ("startTime", "completionTime", "error", "cause", "waitUntil"):
        e.as_str(status.get(key), f"status.{key}")
    e.as_list(status.get("current"), "status.current")
    e.non_negative(status.get("observedGeneration"), "status.observedGeneration", 64)
    for path, entry in e.objs(status.get("trace"), "status.trace"):
        for key in ("state", "branch", "type", "startTime", "endTime", "error", "cause", "activationId"):
            e.as_str(entry.get(key), f"{path}.{key}")
        e.enum(entry.get("status"), f"{path}.status", TRACE_STATUSES)
        e.non_negative(entry.get("attempt"), f"{path}.attempt")


def _validate_trigger(e: _Errors, obj: dict[str, Any]) -> None:
    spec = e.as_obj(obj.get("spec"), "spec")
    schedule = e.as_str(spec.get("schedule"), "spec.schedule") if spec is not None else None
    if schedule is not None:
        try:
            workflow.parse_schedule(schedule)
        except workflow.ScheduleError as exc:
            detail = str(exc)  # the value is quoted by the cause already: do not repeat it
            e.invalid("spec.schedule", schedule, detail.removeprefix(f"{schedule!r}: "))
    status = e.as_obj(obj.get("status"), "status")
    if status is not None:
        for key in ("lastFireTime", "nextFireTime"):
            e.as_str(status.get(key), f"status.{key}")
        e.non_negative(status.get("fireCount"), "status.fireCount", 64)


def _validate_rule(e: _Errors, obj: dict[str, Any]) -> None:
    spec = e.as_obj(obj.get("spec"), "spec")
    if spec is None:
        if obj.get("spec") is None:
            e.required("spec.trigger")
        return
    _name_ref(e, spec.get("trigger"), "spec.trigger", names.dns1123_subdomain, required=True)
    fn = _name_ref(e, spec.get("function"), "spec.function", names.dns1035_label, required=False)
    wf = _name_ref(e, spec.get("workflow"), "spec.workflow", names.dns1123_subdomain, required=False)
    has_fn, has_wf = spec.get("function") not in (None, ""), spec.get("workflow") not in (None, "")
    if not has_fn and not has_wf:
        e.required("spec.function", "exactly one of `function` or `workflow` is required")
    elif has_fn and has_wf and fn and wf:
        e.forbidden("spec.workflow", "may not be set together with `function`: a rule has exactly one target")
    e.as_bool(spec.get("enabled"), "spec.enabled")


_BY_KIND: dict[str, tuple[Callable[[_Errors, dict[str, Any]], None], Callable[[Any], list[str]]]] = {
    "Namespace": (_validate_namespace, names.dns1123_label),
    "Node": (_validate_node, names.dns1123_subdomain),
    "Pod": (_validate_pod, names.dns1123_subdomain),
    "Service": (_validate_service, names.dns1035_label),
    "Endpoints": (_validate_endpoints, names.dns1123_subdomain),
    "Event": (_validate_event, names.dns1123_subdomain),
    "ReplicaSet": (_validate_replicaset, names.dns1123_subdomain),
    "Deployment": (_validate_deployment, names.dns1123_subdomain),
    "HorizontalPodAutoscaler": (_validate_hpa, names.dns1123_subdomain),
    "Ingress": (_validate_ingress, names.dns1123_subdomain),
    # A Function's name is also its Service's name, so it follows the Service rule (DNS-1035).
    "Function": (_validate_function, names.dns1035_label),
    "Activation": (_validate_activation, names.dns1123_subdomain),
    "Workflow": (_validate_workflow, names.dns1123_subdomain),
    "WorkflowExecution": (_validate_workflow_execution, names.dns1123_subdomain),
    "Trigger": (_validate_trigger, names.dns1123_subdomain),
    "Rule": (_validate_rule, names.dns1123_subdomain),
}


# --- updates -----------------------------------------------------------------------------------------


def _get(obj: Any, *keys: str) -> Any:
    for k in keys:
        obj = obj.get(k) if isinstance(obj, dict) else None
    return obj


def _pod_spec_comparable(spec: Any, node_name: Any) -> Any:
    """The pod spec with the fields an update may change blanked out."""
    if not isinstance(spec, dict):
        return spec
    out = {k: v for k, v in spec.items() if k not in ("activeDeadlineSeconds", "tolerations")}
    for key in ("containers", "initContainers"):
        if isinstance(out.get(key), list):
            out[key] = [{k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c
                        for c in out[key]]
    if node_name is not None:
        out["nodeName"] = node_name
    return out


def _validate_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any], kind: str) -> None:
    if kind in ("Deployment", "ReplicaSet"):
        new_sel, old_sel = _get(obj, "spec", "selector"), _get(old, "spec", "selector")
        if old_sel is not None and new_sel != old_sel:
            e.invalid("spec.selector", new_sel, "field is immutable")
    elif kind == "Service":
        old_ip, new_ip = _get(old, "spec", "clusterIP"), _get(obj, "spec", "clusterIP")
        # An update that leaves clusterIP empty keeps the allocated one (the apiserver copies it over).
        if isinstance(old_ip, str) and old_ip and new_ip and new_ip != old_ip:
            e.invalid("spec.clusterIP", new_ip, "field is immutable")
        old_ips, new_ips = _get(old, "spec", "clusterIPs"), _get(obj, "spec", "clusterIPs")
        if isinstance(old_ips, list) and old_ips and new_ips and new_ips != old_ips:
            e.invalid("spec.clusterIPs", new_ips, "field is immutable")
    elif kind == "WorkflowExecution":
        # An execution runs the definition it started with; only the driver's status moves.
        if old.get("spec") is not None and obj.get("spec") != old.get("spec"):
            e.invalid("spec", obj.get("spec"), "field is immutable")
    elif kind == "Pod":
        old_spec, new_spec = old.get("spec"), obj.get("spec")
        old_node, new_node = _get(old_spec, "nodeName"), _get(new_spec, "nodeName")
        # Binding sets nodeName once; from then on it is as fixed as the rest.
        bound = new_node if not old_node else None
        if _pod_spec_comparable(old_spec, bound) != _pod_spec_comparable(new_spec, None):
            e.forbidden("spec", POD_UPDATE_FORBIDDEN)


def validate(obj: dict[str, Any], rt: ResourceType, *, old: dict[str, Any] | None = None) -> list[Cause]:
    """The field errors of ``obj`` as an object of kind ``rt``; empty when it is valid.

    ``old`` is the stored object on an update: immutable fields are then checked too. Never
    raises, whatever JSON ``obj`` holds; depends only on its arguments.
    """
    e = _Errors()
    if not isinstance(obj, dict):
        e.wrong_type("", obj, "an object")
        return e.causes
    entry = _BY_KIND.get(rt.kind)
    try:
        for key in ("apiVersion", "kind"):
            e.as_str(obj.get(key), key)
        _metadata(e, obj.get("metadata"), entry[1] if entry else names.dns1123_subdomain)
        if entry is not None:
            entry[0](e, obj)
        if isinstance(old, dict):
            _validate_update(e, obj, old, rt.kind)
    except RecursionError:
        e.causes.append(Cause("", "Invalid value: object is nested too deeply", TYPE_INVALID))
    except Exception as exc:  # noqa: BLE001 - a bug here must not become a 500 on the write path; the tests hunt for these
        e.causes.append(Cause("", f"internal error validating the object: {type(exc).__name__}: {exc}",
                              "InternalError"))
    return e.causes
