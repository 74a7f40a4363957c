"""Applying the bodies of ``PATCH`` requests: strategic merge, JSON merge (RFC 7386) and JSON patch (RFC 6902).

``apply_patch(original, body, content_type, kind=...)`` is the one entry point. It never mutates
``original`` and is total: whatever bytes arrive, it either returns a new ``dict`` or raises an
:class:`~minik8s.errors.ApiError` (``BadRequest`` for a malformed or ill-fitting patch,
``UnsupportedMediaType`` for a patch type it does not speak).

Strategic merge patch follows the semantics of Kubernetes' ``strategicpatch`` package as the
apiserver runs it (parallel lists merged, unmatched nulls ignored):

* maps merge recursively; ``null`` deletes a key;
* lists whose field Kubernetes tags ``patchStrategy: merge`` merge element by element on their
  ``patchMergeKey`` (lists of primitives, e.g. ``finalizers``, merge as ordered sets); every other
  list is replaced by the patch's list;
* directives: ``$patch: replace|delete`` on a map, ``{"$patch": "delete", <key>: v}`` and
  ``{"$patch": "replace"}`` as list elements, ``$retainKeys``, ``$setElementOrder/<field>`` and
  ``$deleteFromPrimitiveList/<field>``;
* merged lists are ordered like the apiserver orders them: patch items in ``$setElementOrder``
  (else patch) order, server-only items interleaved by their order in the stored object.

Deliberate differences from the Go implementation, all on inputs kubectl does not produce:
``{"$patch": "delete"}`` as a map field's value removes the field (Go leaves ``{}``); nulls and
directives inside newly added values are dropped/applied rather than stored verbatim; a
``$setElementOrder`` list that disagrees with the patch list's order is not rejected.

Which lists merge, and on which key, depends on the field's path and the object's ``kind``
(Service ``spec.ports`` merge on ``port``, container ``ports`` on ``containerPort``); see
``_merge_keys``. Kinds without a table entry (e.g. ``Function``) merge only ``metadata`` lists.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import jsonpatch

from minik8s.errors import ApiError, BadRequest, UnsupportedMediaType

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH_YAML = "application/apply-patch+yaml"

_UNKNOWN_FORMAT = ("the body of the request was in an unknown format - accepted media types include: "
                   f"{JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}")


def apply_patch(original: dict, body: bytes, content_type: str, *, kind: str) -> dict:
    """Return a new object: ``original`` with the patch ``body`` of media type ``content_type`` applied.

    ``content_type`` may carry parameters (``; charset=utf-8``); ``kind`` selects the strategic
    merge keys. ``original`` is never modified and the result shares no mutable state with it.
    Raises ``UnsupportedMediaType`` for server-side apply and unknown types, ``BadRequest`` for a
    body that is not JSON, a patch of the wrong shape, a failing JSON-patch operation, or a result
    that is not a JSON object. No other exception escapes (an internal bug surfaces as a 500
    ``ApiError``).
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == APPLY_PATCH_YAML or media.startswith("application/apply-patch"):
        raise UnsupportedMediaType(
            f"server-side apply ({media}) is not supported by minik8s; use client-side apply "
            f"(`kubectl apply` without --server-side) or one of: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}")
    if media not in (STRATEGIC_MERGE_PATCH, MERGE_PATCH, JSON_PATCH):
        raise UnsupportedMediaType(_UNKNOWN_FORMAT)
    patch = _parse_json(body)
    try:
        if media == JSON_PATCH:
            result = _apply_json_patch(original, patch)
        elif media == MERGE_PATCH:
            result = _apply_merge_patch(original, patch)
        else:
            result = _StrategicMerge(kind).apply(original, patch)
    except ApiError:
        raise
    except RecursionError:
        raise BadRequest("the patch is nested too deeply to be applied") from None
    except Exception as exc:  # totality: a bug here must still answer with a Status, not crash the handler
        raise ApiError(f"internal error while applying a {media} patch: {exc!r}") from exc
    if not isinstance(result, dict):
        raise BadRequest(f"the patched object must be a JSON object, but the {media} patch produced "
                         f"{_json_type(result)}")
    return result


# ---------------------------------------------------------------------------------------------
# Parsing


def _parse_json(body: bytes | bytearray | str) -> Any:
    if not isinstance(body, (bytes, bytearray, str)):
        raise BadRequest(f"the patch body must be bytes, not {type(body).__name__}")
    if not body.strip():
        raise BadRequest("the patch body is empty; expected a JSON document")
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the patch is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
                         f"(char {exc.pos})") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the patch is not valid JSON: invalid {exc.encoding} byte at position {exc.start}") from None
    except RecursionError:
        raise BadRequest("the patch is not valid JSON: it is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise BadRequest(f"the patch is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity, JSON (and the Go apiserver) do not.
    raise BadRequest(f"the patch is not valid JSON: {name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf, which could not be written back as JSON
        raise BadRequest(f"the patch is not valid JSON: number {text[:40]} is out of range")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _jkey(value: Any) -> Hashable:
    """A hashable identity with JSON equality: ``true`` is not ``1`` (as in Python), ``1`` is ``1.0``.

    Hashing keeps merging linear in the list sizes, so a large patch cannot stall the server."""
    if value is None or isinstance(value, (bool, str)):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", value)
    return ("json", json.dumps(value, sort_keys=True))


def _positions(keys: Iterable[Hashable]) -> dict[Hashable, int]:
    """Each key's first index in ``keys``."""
    found: dict[Hashable, int] = {}
    for i, key in enumerate(keys):
        found.setdefault(key, i)
    return found


# ---------------------------------------------------------------------------------------------
# JSON patch (RFC 6902)

_OPS_WITH_VALUE = {"add", "replace", "test"}
_OPS_WITH_FROM = {"move", "copy"}
_OPS = _OPS_WITH_VALUE | _OPS_WITH_FROM | {"remove"}


def _apply_json_patch(original: dict, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise BadRequest(f"a {JSON_PATCH} patch must be a JSON array of operations, not {_json_type(ops)}")
    doc: Any = copy.deepcopy(original)
    for i, op in enumerate(ops):
        _check_json_patch_op(i, op)
        described = f"JSON patch operation {i} ({op['op']} {op['path']})"
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise BadRequest(f"{described} failed: test failed: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the library reports bad paths with several exception types
            raise BadRequest(f"{described} failed: {exc or type(exc).__name__}") from None
    return doc


def _check_json_patch_op(i: int, op: Any) -> None:
    # Checked here rather than left to jsonpatch so that the message names the operation.
    if not isinstance(op, dict):
        raise BadRequest(f"JSON patch operation {i} must be an object, not {_json_type(op)}")
    name = op.get("op")
    if not isinstance(name, str) or name not in _OPS:
        raise BadRequest(f"JSON patch operation {i} has an invalid \"op\" {name!r}; expected one of "
                         f"{', '.join(sorted(_OPS))}")
    if not isinstance(op.get("path"), str):
        raise BadRequest(f"JSON patch operation {i} ({name}) needs a string \"path\"")
    if name in _OPS_WITH_FROM and not isinstance(op.get("from"), str):
        raise BadRequest(f"JSON patch operation {i} ({name} {op['path']}) needs a string \"from\"")
    if name in _OPS_WITH_VALUE and "value" not in op:
        raise BadRequest(f"JSON patch operation {i} ({name} {op['path']}) needs a \"value\"")


# ---------------------------------------------------------------------------------------------
# JSON merge patch (RFC 7386)


def _apply_merge_patch(original: dict, patch: Any) -> dict:
    if not isinstance(patch, dict):
        raise BadRequest(f"a {MERGE_PATCH} patch must be a JSON object, not {_json_type(patch)}")
    return _merge_patch_value(copy.deepcopy(original), patch)


def _merge_patch_value(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch: ``target`` is owned (mutated), ``patch`` values are inserted as they are."""
    if not isinstance(patch, dict):
        return patch
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch_value(result.get(key), value)
    return result


# ---------------------------------------------------------------------------------------------
# Strategic merge patch

Path = tuple[str, ...]

# A merge key of "" marks a list of primitives merged as an ordered set.
_PRIMITIVES = ""

# Lists with patchStrategy=merge in ObjectMeta (found at "metadata" of every object and template).
_OBJECT_META: dict[Path, str] = {
    ("finalizers",): _PRIMITIVES,
    ("ownerReferences",): "uid",
}

# Lists with patchStrategy=merge in a PodSpec, relative to the PodSpec.
_POD_SPEC: dict[Path, str] = {
    ("containers",): "name",
    ("initContainers",): "name",
    ("ephemeralContainers",): "name",
    ("volumes",): "name",
    ("imagePullSecrets",): "name",
    ("hostAliases",): "ip",
    ("topologySpreadConstraints",): "topologyKey",
    ("resourceClaims",): "name",
    ("schedulingGates",): "name",
}
for _containers in ("containers", "initContainers", "ephemeralContainers"):
    _POD_SPEC.update({
        (_containers, "ports"): "containerPort",
        (_containers, "env"): "name",
        (_containers, "volumeMounts"): "mountPath",
        (_containers, "volumeDevices"): "devicePath",
    })

# Where each kind keeps a pod template: the path holding its "metadata" and "spec" (() for a Pod).
_POD_TEMPLATE_ROOTS: dict[str, Path] = {
    "Pod": (),
    "PodTemplate": ("template",),
    "ReplicaSet": ("spec", "template"),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

# Other merge lists, by kind, as absolute paths.
_KIND_LISTS: dict[str, dict[Path, str]] = {
    "Pod": {("status", "conditions"): "type", ("status", "podIPs"): "ip", ("status", "hostIPs"): "ip"},
    "Node": {("status", "conditions"): "type", ("status", "addresses"): "type", ("spec", "podCIDRs"): _PRIMITIVES},
    "Service": {("spec", "ports"): "port"},
    # DeploymentStatus and ReplicaSetStatus tag their conditions patchMergeKey=type in k8s.io/api too.
    "Deployment": {("status", "conditions"): "type"},
    "ReplicaSet": {("status", "conditions"): "type"},
}


def _merge_keys(kind: str) -> dict[Path, str]:
    """The merge lists of ``kind``: absolute field path (list indices omitted) → merge key."""
    table = {("metadata", *p): key for p, key in _OBJECT_META.items()}
    root = _POD_TEMPLATE_ROOTS.get(kind)
    if root is not None:
        table.update({(*root, "metadata", *p): key for p, key in _OBJECT_META.items()})
        table.update({(*root, "spec", *p): key for p, key in _POD_SPEC.items()})
    table.update(_KIND_LISTS.get(kind, {}))
    return table


_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder"
_DELETE_FROM = "$deleteFromPrimitiveList"
_MISSING: Any = object()


def _where(path: Path) -> str:
    return ".".join(path) or "the object"


def _directive_field(key: str, prefix: str) -> str | None:
    """For ``$setElementOrder/x`` return ``x``; None if ``key`` is not a ``prefix`` directive."""
    if not key.startswith(prefix):
        return None
    head, sep, field = key.partition("/")
    if head != prefix or not sep or not field:
        raise BadRequest(f"invalid directive {key!r}: expected {prefix}/<field>")
    return field


class _StrategicMerge:
    """One strategic merge for one ``kind``. Methods take an owned ``original`` (mutated and
    returned) and a read-only ``patch`` whose values are copied (cleaned) before insertion."""

    def __init__(self, kind: str) -> None:
        self.keys = _merge_keys(kind)

    def apply(self, original: dict, patch: Any) -> dict:
        if not isinstance(patch, dict):
            raise BadRequest(f"a {STRATEGIC_MERGE_PATCH} patch must be a JSON object, not {_json_type(patch)}")
        merged = self.merge_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch, ())
        return {} if merged is None else merged

    # -- maps

    def merge_map(self, original: dict, patch: dict, path: Path) -> dict | None:
        """Merge ``patch`` into ``original``; None means the map is deleted (``$patch: delete``)."""
        if _DIRECTIVE in patch:
            directive = patch[_DIRECTIVE]
            if directive == "replace":
                return self.merge_map({}, {k: v for k, v in patch.items() if k != _DIRECTIVE}, path)
            if directive == "delete":
                return None
            raise BadRequest(f"{_where(path)}: unknown {_DIRECTIVE} directive {directive!r} in a map "
                             "(expected \"replace\" or \"delete\")")
        if _RETAIN_KEYS in patch:
            self._retain_keys(original, patch, path)
        ordered = self._deletions_and_orders(original, patch, path)
        for key, value in patch.items():
            if key in ordered or key in (_RETAIN_KEYS, _DIRECTIVE) or key.startswith((_SET_ORDER, _DELETE_FROM)):
                continue
            sub = (*path, key)
            if value is None:
                original.pop(key, None)
            elif isinstance(value, dict):
                current = original.get(key)
                merged = self.merge_map(current if isinstance(current, dict) else {}, value, sub)
                if merged is None:
                    original.pop(key, None)
                else:
                    original[key] = merged
            elif isinstance(value, list):
                current = original.get(key)
                if sub in self.keys:
                    original[key] = self.merge_list(current if isinstance(current, list) else [], value, sub, None)
                else:
                    original[key] = self.clean_list(value, sub)
            else:
                original[key] = value
        return original

    def _retain_keys(self, original: dict, patch: dict, path: Path) -> None:
        retain = patch[_RETAIN_KEYS]
        if not isinstance(retain, list) or not all(isinstance(k, str) for k in retain):
            raise BadRequest(f"{_where(path)}: {_RETAIN_KEYS} must be a list of field names")
        for key, value in patch.items():
            if value is not None and not key.startswith("$") and key not in retain:
                raise BadRequest(f"{_where(path)}: field {key!r} is set by the patch but missing from {_RETAIN_KEYS}")
        for key in [k for k in original if k not in retain]:
            del original[key]

    def _deletions_and_orders(self, original: dict, patch: dict, path: Path) -> set[str]:
        """Apply ``$deleteFromPrimitiveList/x`` then ``$setElementOrder/x`` (with its list ``x``).

        Returns the fields already merged here, which the main loop must skip."""
        for key, value in patch.items():
            field = _directive_field(key, _DELETE_FROM)
            if field is None:
                continue
            if not isinstance(value, list):
                raise BadRequest(f"{_where(path)}: {key} must be a list, not {_json_type(value)}")
            current = original.get(field)
            if isinstance(current, list):  # nothing to delete from a list that is not there
                doomed = {_jkey(v) for v in value}
                original[field] = [item for item in current if _jkey(item) not in doomed]
        ordered: set[str] = set()
        for key, value in patch.items():
            field = _directive_field(key, _SET_ORDER)
            if field is None:
                continue
            if not isinstance(value, list):
                raise BadRequest(f"{_where(path)}: {key} must be a list, not {_json_type(value)}")
            sub = (*path, field)
            patch_list = patch.get(field, [])
            # A null, a scalar or a non-merge list under the directive is handled by the main loop.
            if sub not in self.keys or not isinstance(patch_list, list):
                continue
            current = original.get(field, _MISSING)
            if current is _MISSING and field not in patch:
                continue
            original[field] = self.merge_list(current if isinstance(current, list) else [], patch_list, sub, value)
            ordered.add(field)
        return ordered

    # -- lists

    def merge_list(self, original: list, patch: list, path: Path, order: list | None) -> list:
        """Merge a ``patchStrategy: merge`` list; ``order`` is its ``$setElementOrder`` list, if any."""
        key = self.keys[path]
        if key == _PRIMITIVES:
            for item in (*original, *patch):
                if isinstance(item, (dict, list)):
                    raise BadRequest(f"{_where(path)}: expected a list of primitive values, found {_json_type(item)}")
            merged: list[Any] = []
            seen: set[Hashable] = set()
            for item in (*original, *patch):
                if (item_key := _jkey(item)) not in seen:
                    seen.add(item_key)
                    merged.append(item)
            patch_order = [_jkey(p) for p in (patch if order is None else [*order, *patch])]
            return _normalize_order(merged, patch_order, [_jkey(o) for o in original], _jkey)

        for item in (*original, *patch):
            if not isinstance(item, dict):
                raise BadRequest(f"{_where(path)}: expected a list of objects merged on {key!r}, "
                                 f"found {_json_type(item)}")
        doomed: set[Hashable] = set()
        plain: list[dict] = []
        replace = False
        for item in patch:
            if _DIRECTIVE not in item:
                if key not in item:
                    raise BadRequest(f"{_where(path)}: element {_short(item)} does not contain the merge key {key!r}")
                plain.append(item)
                continue
            directive = item[_DIRECTIVE]
            if directive == "delete":
                if key not in item:
                    raise BadRequest(f"{_where(path)}: an element with \"$patch\": \"delete\" must contain the "
                                     f"merge key {key!r}")
                doomed.add(_jkey(item[key]))
            elif directive == "replace":
                replace = True
            else:
                raise BadRequest(f"{_where(path)}: unsupported {_DIRECTIVE} directive {directive!r} in a list "
                                 "(expected \"delete\" or \"replace\")")
        if replace:
            # {"$patch": "replace"} in a list: the remaining patch elements are the whole list.
            return [m for m in (self.merge_map({}, item, path) for item in plain) if m is not None]

        def ident(item: dict) -> Hashable | None:
            return _jkey(item[key]) if key in item else None

        base = [b for b in original if ident(b) not in doomed]
        merged_maps: list[dict] = list(base)
        where = _positions(ident(m) for m in merged_maps)
        for item in plain:
            at = where.get(ident(item), -1)
            merged_map = self.merge_map(merged_maps[at] if at >= 0 else {}, item, path)
            if merged_map is None:  # cannot happen: plain items carry no $patch
                continue
            if at >= 0:
                merged_maps[at] = merged_map
            else:
                where.setdefault(ident(item), len(merged_maps))
                merged_maps.append(merged_map)

        patch_keys = [ident(item) for item in plain]
        if order is not None:
            order_keys = []
            for entry in order:
                if not isinstance(entry, dict) or key not in entry:
                    raise BadRequest(f"{_where(path)}: every {_SET_ORDER} element must be an object with the "
                                     f"merge key {key!r}, found {_short(entry)}")
                order_keys.append(ident(entry))
            patch_keys = [*order_keys, *patch_keys]
        return _normalize_order(merged_maps, patch_keys, [ident(b) for b in base], ident)

    def clean_list(self, items: list, path: Path) -> list:
        """A replacing list as stored: directives applied and nulls dropped inside its objects."""
        out: list[Any] = []
        for item in items:
            if isinstance(item, dict):
                cleaned = self.merge_map({}, item, path)
                if cleaned is not None:
                    out.append(cleaned)
            elif isinstance(item, list):
                out.append(self.clean_list(item, path))
            else:
                out.append(item)
        return out


def _normalize_order(merged: list, patch_order: list[Hashable | None], server_order: list[Hashable | None],
                     ident: Callable[[Any], Hashable | None]) -> list:
    """Order ``merged`` like the apiserver: items named by the patch in ``patch_order``, the others
    ("server-only") in ``server_order``, and each server-only item placed before the first patch
    item that follows it in ``server_order`` (so new patch items come before server-only ones).

    The orders are lists of identities (``ident`` of an item); a None identity matches nothing."""
    patch_pos = _positions(patch_order)
    server_pos = _positions(server_order)

    def position(positions: dict[Hashable, int], item: Any) -> int:
        value = ident(item)
        return -1 if value is None else positions.get(value, -1)

    patch_items = [m for m in merged if position(patch_pos, m) >= 0]
    server_only = [m for m in merged if position(patch_pos, m) < 0]
    patch_items.sort(key=lambda m: position(patch_pos, m))
    server_only.sort(key=lambda m: p if (p := position(server_pos, m)) >= 0 else len(server_order))
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patch_items):
        if j >= len(patch_items):
            out.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            out.append(patch_items[j])
            j += 1
        else:
            left, right = position(server_pos, server_only[i]), position(server_pos, patch_items[j])
            if 0 <= left < right:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patch_items[j])
                j += 1
    return out


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
