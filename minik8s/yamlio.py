"""Reading manifests: files, folders and stdin, YAML or JSON, many documents per file.

:func:`load_documents` returns ``(source, object)`` pairs in a stable order; ``source`` names
where each object came from (``examples/pod.yaml``, ``examples/all.yaml#2``,
``list.yaml#1 items[0]``, ``<stdin>#3``) so that every later error can point at it.
Anything wrong with the input raises :class:`ManifestError` whose one-line message names the file
(and the line, for syntax errors).

YAML is read as Kubernetes reads it: dates and times stay strings (``2024-01-01`` is not turned
into a ``date``, which JSON could not carry).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any

import yaml

EXTENSIONS = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message starts with the file (and line) at fault."""


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver (Kubernetes keeps such scalars as strings)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_documents(paths: list[str], *, recursive: bool = False,
                   stdin: IO[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Every object in ``paths`` (files, folders, or ``-`` for stdin), in order.

    Folders contribute their ``.yaml``/``.yml``/``.json`` files sorted by name (sub-folders only
    with ``recursive``). Empty documents are skipped; ``kind: List`` (or any ``…List``) is replaced by
    its ``items``. Raises ``ManifestError`` for missing paths, syntax errors, and documents that are
    not mappings or lack ``apiVersion``/``kind``.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for path in paths:
        if path == "-":
            text = (stdin or sys.stdin).read()
            out.extend(parse_documents(text, "<stdin>"))
            continue
        for file in _expand(path, recursive):
            try:
                text = Path(file).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ManifestError(f"{file}: cannot read: {exc}") from exc
            out.extend(parse_documents(text, file))
    return out


def _expand(path: str, recursive: bool) -> list[str]:
    p = Path(path)
    if not p.exists():
        raise ManifestError(f'the path "{path}" does not exist')
    if p.is_file():
        return [path]
    files: list[str] = []
    if recursive:
        for root, dirs, names in os.walk(path):
            dirs.sort()
            files.extend(os.path.join(root, n) for n in sorted(names) if n.endswith(EXTENSIONS))
    else:
        files = [str(p / n) for n in sorted(os.listdir(path)) if n.endswith(EXTENSIONS) and (p / n).is_file()]
    return files


def parse_documents(text: str, source: str) -> list[tuple[str, dict[str, Any]]]:
    """Objects in one file's ``text`` (YAML or JSON); ``source`` labels them and their errors."""
    docs = _parse(text, source)
    non_empty = [(i, d) for i, d in enumerate(docs, 1) if d is not None]
    single = len(non_empty) == 1
    out: list[tuple[str, dict[str, Any]]] = []
    for index, doc in non_empty:
        label = source if single else f"{source}#{index}"
        out.extend(_objects(doc, label))
    return out


def _parse(text: str, source: str) -> list[Any]:
    if source.endswith(".json"):
        try:
            data = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{source}: line {exc.lineno}: {exc.msg}") from exc
        return [data]
    try:
        return list(yaml.load_all(text, Loader=_Loader))  # _Loader is a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}:" if mark is not None else ""
        what = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        raise ManifestError(f"{source}:{where} {what}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: {' '.join(str(exc).split())}") from exc


def _objects(doc: Any, label: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(doc, dict):
        raise ManifestError(f"{label}: expected a mapping (an object with apiVersion and kind), "
                            f"got {type(doc).__name__}")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        out: list[tuple[str, dict[str, Any]]] = []
        for i, item in enumerate(doc["items"]):
            out.extend(_objects(item, f"{label} items[{i}]"))
        return out
    missing = [f for f in ("apiVersion", "kind") if not doc.get(f)]
    if missing:
        raise ManifestError(f"{label}: {' and '.join(missing)} not set")
    if not isinstance(doc.get("metadata", {}), dict):
        raise ManifestError(f"{label}: metadata must be a mapping")
    return [(label, doc)]
