"""``minictl apply``: create, or bring a live object in line with a manifest by a conditional PUT.

The PUT body is computed by :func:`merge_for_apply`, a three-way merge of

* ``desired``  — the manifest (what the user wants now),
* ``live``     — the object as the server has it (with defaults, allocated fields, controller edits),
* ``last``     — the manifest applied the time before, kept in the
  ``kubectl.kubernetes.io/last-applied-configuration`` annotation (as kubectl does).

A field the manifest sets wins. A field only the live object has is kept (the server or a
controller owns it: ``clusterIP``, ``nodePort``, defaults such as ``protocol: TCP``) — unless the
previous manifest had it, in which case the user removed it and it goes. Lists of objects are
merged element by element, matched by their usual key (``name``, ``containerPort``, ``port``,
``mountPath``), else by position when the lengths agree. ``status`` always stays as it is live.
When the merge gives back the live object unchanged, nothing is written ("unchanged").
"""

from __future__ import annotations

import copy
import json
from enum import Enum
from typing import Any

from minik8s.api.registry import ResourceType
from minik8s.client.rest import ApiClient, object_namespace
from minik8s.errors import AlreadyExists, Conflict, NotFound

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_LIST_KEYS = ("name", "containerPort", "port", "mountPath", "ip", "devicePath")
APPLY_RETRIES = 5


class Outcome(Enum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"


def with_last_applied(desired: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``desired`` carrying its own JSON in the last-applied annotation."""
    out = copy.deepcopy(desired)
    clean = copy.deepcopy(desired)
    (clean.get("metadata") or {}).get("annotations", {}).pop(LAST_APPLIED, None)
    if not (clean.get("metadata") or {}).get("annotations", True):
        del clean["metadata"]["annotations"]
    out.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED] = json.dumps(
        clean, sort_keys=True, separators=(",", ":"))
    return out


def merge_for_apply(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The object to PUT (see the module docstring); ``desired`` should carry its last-applied annotation."""
    last_text = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        last = json.loads(last_text) if last_text else None
    except ValueError:
        last = None
    body = {k: v for k, v in desired.items() if k != "status"}
    merged = _merge_maps(body, {k: v for k, v in live.items() if k != "status"},
                         last if isinstance(last, dict) else None)
    if "status" in live:
        merged["status"] = copy.deepcopy(live["status"])
    merged.setdefault("metadata", {})["resourceVersion"] = (live.get("metadata") or {}).get("resourceVersion")
    return merged


def _merge_maps(desired: dict[str, Any], live: dict[str, Any], last: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in live.items():
        if key not in desired and not (last is not None and key in last):
            out[key] = copy.deepcopy(value)
    for key, value in desired.items():
        out[key] = _merge_values(value, live.get(key), last.get(key) if isinstance(last, dict) else None)
    return out


def _merge_values(desired: Any, live: Any, last: Any) -> Any:
    if isinstance(desired, dict) and isinstance(live, dict):
        return _merge_maps(desired, live, last if isinstance(last, dict) else None)
    if isinstance(desired, list) and isinstance(live, list) and all(isinstance(d, dict) for d in desired):
        return _merge_lists(desired, live, last if isinstance(last, list) else None)
    return copy.deepcopy(desired)


def _merge_lists(desired: list[Any], live: list[Any], last: list[Any] | None) -> list[Any]:
    key = next((k for k in _LIST_KEYS if desired and all(k in d for d in desired)
                and len({json.dumps(d[k]) for d in desired}) == len(desired)), None)
    if key is not None:
        live_by = {json.dumps(x.get(key)): x for x in live if isinstance(x, dict)}
        last_by = {json.dumps(x.get(key)): x for x in last or [] if isinstance(x, dict)}
        return [_merge_values(d, live_by.get(json.dumps(d[key])), last_by.get(json.dumps(d[key]))) for d in desired]
    if len(desired) == len(live):
        lasts = last if last is not None and len(last) == len(desired) else [None] * len(desired)
        return [_merge_values(d, lv, la) for d, lv, la in zip(desired, live, lasts, strict=True)]
    return copy.deepcopy(desired)


def apply_object(client: ApiClient, rt: ResourceType, obj: dict[str, Any],
                 namespace: str | None) -> tuple[Outcome, dict[str, Any]]:
    """Create ``obj`` or update the live one in place; retries on Conflict. Raises ApiErrors."""
    desired = with_last_applied(obj)
    ns = object_namespace(rt, desired, namespace)
    if ns is not None:
        desired["metadata"]["namespace"] = ns
    name = desired["metadata"].get("name", "")
    for attempt in range(APPLY_RETRIES + 1):
        try:
            return Outcome.CREATED, client.create(desired, namespace=ns)
        except AlreadyExists:
            pass
        try:
            live = client.get(rt, name, ns)
        except NotFound:
            continue  # deleted between our POST and GET: create again
        merged = merge_for_apply(desired, live)
        if merged == live:
            return Outcome.UNCHANGED, live
        try:
            return Outcome.CONFIGURED, client.replace(merged)
        except Conflict:
            if attempt == APPLY_RETRIES:
                raise
        except NotFound:
            continue
    raise Conflict(f'{rt.qualified} "{name}" kept changing while being applied; try again')
