"""Test helpers for controllers (sample-controller style): a recording fake client and a way to feed
informers by hand. Used by unit tests only, never by the daemon.

::

    client = RecordingClient(); factory = InformerFactory()
    c = ReplicaSetController(client, factory)
    await feed(factory.informer("replicasets"), "ADDED", rs)
    await c.sync("default/web")
    client.verbs() → [("create", "pods", "default/web-"), ...]
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator
from typing import Any

from minik8s.api.registry import ResourceType
from minik8s.client.informer import Informer, object_key
from minik8s.errors import NotFound

Obj = dict[str, Any]
_names = itertools.count(1)


async def feed(informer: Informer, etype: str, obj: Obj) -> None:
    """Apply one watch event to ``informer`` as its watch would (cache + handlers)."""
    await informer._apply(etype, obj)  # the informer's own event path, no server


class RecordingClient:
    """Records every write as ``(verb, plural, key, body-or-options)``; ``objects`` answers ``get``."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, str, str, Any]] = []
        self.objects: dict[tuple[str, str], Obj] = {}

    def verbs(self) -> list[tuple[str, str, str]]:
        return [a[:3] for a in self.actions]

    async def list(self, rt: ResourceType, namespace: str | None = None, *, label_selector: str | None = None,
                   field_selector: str | None = None) -> tuple[list[Obj], str]:
        return [], "1"

    async def watch(self, rt: ResourceType, namespace: str | None = None, *, resource_version: str | None = None,
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None, table: bool = False) -> AsyncIterator[tuple[str, Obj]]:
        await asyncio.Event().wait()
        yield "BOOKMARK", {}

    async def create(self, obj: Obj, *, namespace: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        key = f"{namespace or meta.get('namespace')}/{meta.get('name') or meta.get('generateName')}"
        self.actions.append(("create", obj["kind"], key, obj))
        if not meta.get("name"):
            meta["name"] = f"{meta['generateName']}{next(_names)}"
        return obj

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        key = f"{namespace}/{name}" if namespace else name
        self.actions.append(("get", rt.plural, key, None))
        if (rt.plural, key) in self.objects:
            return copy.deepcopy(self.objects[(rt.plural, key)])
        raise NotFound(f'{rt.plural} "{name}" not found')

    async def replace(self, obj: Obj) -> Obj:
        self.actions.append(("update", obj["kind"], object_key(obj), copy.deepcopy(obj)))
        return obj

    async def replace_status(self, obj: Obj) -> Obj:
        self.actions.append(("update-status", obj["kind"], object_key(obj), copy.deepcopy(obj)))
        return obj

    async def patch(self, rt: ResourceType, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> Obj:
        self.actions.append(("patch", rt.plural, f"{namespace}/{name}", patch))
        return {}

    async def delete(self, rt: ResourceType, name: str, namespace: str | None = None, *,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, str] | None = None) -> Obj:
        key = f"{namespace}/{name}" if namespace else name
        self.actions.append(("delete", rt.plural, key, propagation_policy))
        return {}
