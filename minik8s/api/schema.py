"""Field knowledge: which fields exist upstream, and which of them minik8s acts on.

The upstream schema comes from the official ``kubernetes`` Python client: each of its model classes
(``V1Pod``, ``V1PodSpec``, ...) lists its fields in ``attribute_map`` (Python name → JSON name) and
their types in ``openapi_types`` (``"str"``, ``"List[V1Container]"``, ``"Dict[str, str]"``,
``"object"`` for free-form, a class name for a nested object). What minik8s acts on is the
``TypedDict`` model in :mod:`minik8s.api.types`. For the ``minik8s.io`` kinds, the TypedDicts are
the whole schema, except where a TypedDict stands for an upstream type (``metadata`` is an
upstream ``ObjectMeta``, ``env`` entries are upstream ``EnvVar``s).

Both walks below read only the fields present in the object, look up each in a per-class table
built once (lazily) and cached, and never raise on odd shapes: a value of the wrong type is
simply not descended into (validation reports it).
"""

from __future__ import annotations

import typing
from typing import Any, Union

from minik8s.api import types as t
from minik8s.api.registry import MINIK8S_GROUP, ResourceType

# Schema nodes are tuples whose first item says what they are.
_SCALAR = ("scalar",)  # a leaf: string, number, bool, timestamp
_ANY = ("any",)  # free-form: anything goes below
Node = tuple[Any, ...]  # ("list", Node) | ("map", Node) | ("up", class name) | ("td", TypedDict class)

_UPSTREAM_KIND = {
    "Namespace": "V1Namespace",
    "Node": "V1Node",
    "Pod": "V1Pod",
    "Service": "V1Service",
    "Endpoints": "V1Endpoints",
    "Event": "CoreV1Event",
    "ReplicaSet": "V1ReplicaSet",
    "Deployment": "V1Deployment",
    "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
    "Ingress": "V1Ingress",
}
# minik8s.io TypedDicts that stand for an upstream type: below them the upstream schema applies.
_TD_UPSTREAM: dict[type, str] = {
    t.ObjectMeta: "V1ObjectMeta",
    t.EnvVar: "V1EnvVar",
    t.ResourceRequirements: "V1ResourceRequirements",
}
_SCALAR_NAMES = frozenset({"str", "int", "bool", "float", "datetime", "date"})

_type_cache: dict[str, Node] = {}
_up_fields_cache: dict[str, dict[str, Node]] = {}
_td_fields_cache: dict[type, dict[str, Node]] = {}
_client: Any = None


def _client_module() -> Any:
    global _client
    if _client is None:
        import kubernetes.client as client  # ~0.4 s: only on the first schema question

        _client = client
    return _client


def _parse_upstream(type_name: str) -> Node:
    node = _type_cache.get(type_name)
    if node is None:
        if type_name in _SCALAR_NAMES:
            node = _SCALAR
        elif type_name == "object":
            node = _ANY
        elif type_name.startswith("List[") and type_name.endswith("]"):
            node = ("list", _parse_upstream(type_name[5:-1].strip()))
        elif type_name.startswith("Dict[") and type_name.endswith("]"):
            node = ("map", _parse_upstream(type_name[5:-1].split(",", 1)[1].strip()))
        else:
            node = ("up", type_name)
        _type_cache[type_name] = node
    return node


def _up_fields(class_name: str) -> dict[str, Node]:
    fields = _up_fields_cache.get(class_name)
    if fields is None:
        cls = getattr(_client_module(), class_name, None)
        fields = {}
        if cls is not None:
            for attr, type_name in cls.openapi_types.items():
                fields[cls.attribute_map.get(attr, attr)] = _parse_upstream(type_name)
        _up_fields_cache[class_name] = fields
    return fields


def _parse_annotation(ann: Any) -> Node:
    if ann is Any:
        return _ANY
    if typing.is_typeddict(ann):
        return ("td", ann)
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is list and args:
        return ("list", _parse_annotation(args[0]))
    if origin is dict and len(args) == 2:
        return ("map", _parse_annotation(args[1]))
    if origin is Union or type(ann).__name__ == "UnionType":
        structured = [a for a in args if a is not type(None) and _parse_annotation(a) is not _SCALAR]
        return _parse_annotation(structured[0]) if len(structured) == 1 else _SCALAR
    return _SCALAR


def _td_fields(td: type) -> dict[str, Node]:
    fields = _td_fields_cache.get(td)
    if fields is None:
        hints = typing.get_type_hints(td)
        fields = {k: _parse_annotation(v) for k, v in hints.items()}
        _td_fields_cache[td] = fields
    return fields


def _root(rt: ResourceType) -> tuple[Node | None, Node | None]:
    """(upstream node, TypedDict node) for the top of an object of ``rt``."""
    td = t.KINDS.get(rt.kind)
    ours = ("td", td) if td is not None else None
    if rt.group == MINIK8S_GROUP:
        return None, ours
    up = _UPSTREAM_KIND.get(rt.kind)
    return (("up", up) if up else None), ours


def _fields_of(node: Node) -> dict[str, Node] | None:
    if node[0] == "up":
        return _up_fields(node[1])
    if node[0] == "td":
        up = _TD_UPSTREAM.get(node[1])
        return _up_fields(up) if up else _td_fields(node[1])
    return None


def _walk_unknown(value: Any, node: Node, path: str, out: list[str]) -> None:
    kind = node[0]
    if kind == "list":
        if isinstance(value, list):
            sub = node[1]
            if sub[0] not in ("scalar", "any"):
                for i, item in enumerate(value):
                    _walk_unknown(item, sub, f"{path}[{i}]", out)
        return
    if not isinstance(value, dict):
        return
    if kind == "map":
        sub = node[1]
        if sub[0] not in ("scalar", "any"):
            for k, v in value.items():
                _walk_unknown(v, sub, f"{path}.{k}", out)
        return
    fields = _fields_of(node)
    if fields is None:
        return
    prefix = f"{path}." if path else ""
    for k, v in value.items():
        sub = fields.get(k)
        if sub is None:
            out.append(f"{prefix}{k}")
        elif v is not None and sub[0] not in ("scalar", "any"):
            _walk_unknown(v, sub, f"{prefix}{k}", out)


def unknown_fields(obj: dict[str, Any], rt: ResourceType) -> list[str]:
    """Dotted paths (``spec.containers[0].bogus``) of the fields of ``obj`` outside the schema.

    For upstream kinds the schema is Kubernetes' own; for ``minik8s.io`` kinds it is our TypedDicts.
    The apiserver answers ``strict decoding error: unknown field "<path>"`` for each. Never raises.
    """
    up, ours = _root(rt)
    root = up or ours
    out: list[str] = []
    if root is None or not isinstance(obj, dict):
        return out
    try:
        _walk_unknown(obj, root, "", out)
    except RecursionError:
        pass  # a pathological nesting of known list/map types; validation rejects such objects
    return out


def _walk_unused(value: Any, up: Node | None, ours: Node, path: str, out: list[str]) -> None:
    kind = ours[0]
    if kind == "list":
        if isinstance(value, list) and ours[1][0] not in ("scalar", "any"):
            up_sub = up[1] if up is not None and up[0] == "list" else None
            for i, item in enumerate(value):
                _walk_unused(item, up_sub, ours[1], f"{path}[{i}]", out)
        return
    if not isinstance(value, dict):
        return
    if kind == "map":
        if ours[1][0] not in ("scalar", "any"):
            up_sub = up[1] if up is not None and up[0] == "map" else None
            for k, v in value.items():
                _walk_unused(v, up_sub, ours[1], f"{path}.{k}", out)
        return
    if kind != "td":
        return
    td = ours[1]
    if up is None and td in _TD_UPSTREAM:
        up = ("up", _TD_UPSTREAM[td])
    our_fields = _td_fields(td)
    up_fields = _up_fields(up[1]) if up is not None and up[0] == "up" else {}
    prefix = f"{path}." if path else ""
    for k, v in value.items():
        sub = our_fields.get(k)
        if sub is None:
            if k in up_fields and not (path == "metadata" and k == "managedFields"):
                out.append(f"{prefix}{k}")
        elif v is not None and sub[0] not in ("scalar", "any"):
            _walk_unused(v, up_fields.get(k), sub, f"{prefix}{k}", out)


def unused_fields(obj: dict[str, Any], rt: ResourceType) -> list[str]:
    """Paths of fields that Kubernetes defines but minik8s stores without acting on them.

    ``status`` and ``metadata.managedFields`` are left out. The apiserver names these in a
    ``Warning`` header. Never raises.
    """
    up, ours = _root(rt)
    out: list[str] = []
    if ours is None or not isinstance(obj, dict):
        return out
    rest = {k: v for k, v in obj.items() if k != "status"}
    try:
        _walk_unused(rest, up, ours, "", out)
    except RecursionError:
        pass
    return out
