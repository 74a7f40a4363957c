"""Import an image archive built elsewhere into the cluster registry.

Two archive kinds (plain or gzip'd tar), told apart by their contents:

- ``docker save``: ``manifest.json`` (``[{"Config", "RepoTags", "Layers"}]``), the config JSON and one
  tar per layer. Each image becomes an OCI manifest; a gzip'd layer is pushed as
  ``…layer.v1.tar+gzip``, an uncompressed one as is (``application/vnd.oci.image.layer.v1.tar``, so
  its digest stays the config's diff_id and no time goes into compressing).
- OCI image layout: ``oci-layout``, ``index.json`` and ``blobs/sha256/…``. Blobs and manifests are
  pushed byte for byte (digests unchanged); an image index is pushed with its child manifests.

Tags come from ``RepoTags`` / the ``org.opencontainers.image.ref.name`` or ``io.containerd.image.name``
annotations, or from ``name`` (which overrides them). Names are stored as the cluster registry stores
them (``myapp:1`` → ``library/myapp:1``). Every problem is an :class:`ArchiveError` with one line.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from minik8s.images.layers import CHUNK
from minik8s.images.media import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEXES,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from minik8s.images.oci import REF_NAME, canonical_json
from minik8s.images.reference import ImageRef, ReferenceError
from minik8s.images.registry import Registry

CONTAINERD_NAME = "io.containerd.image.name"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


class ArchiveError(Exception):
    """The archive cannot be imported (one line)."""


@dataclass
class Imported:
    name: str                    # library/myapp:1.0
    digest: str
    uploaded: int = 0
    present: int = 0
    tags: list[str] = field(default_factory=list)


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


class _Archive:
    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise ArchiveError(f"{path}: no such file")
        try:
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
            self.members = {_norm(m.name): m for m in self.tar.getmembers() if m.isfile() or m.issym() or m.islnk()}
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArchiveError(f"{path}: not a tar archive (expected docker save or OCI layout output)") from exc

    def close(self) -> None:
        self.tar.close()

    def member(self, name: str) -> tarfile.TarInfo:
        name = _norm(name)
        info = self.members.get(name)
        if info is None:
            raise ArchiveError(f"{self.path}: {name} is missing from the archive")
        while info.issym() or info.islnk():
            target = info.linkname if info.islnk() else posixpath.join(posixpath.dirname(name), info.linkname)
            name = _norm(posixpath.normpath(target))
            nxt = self.members.get(name)
            if nxt is None or nxt is info:
                raise ArchiveError(f"{self.path}: link {info.name} points at a missing member")
            info = nxt
        return info

    def has(self, name: str) -> bool:
        return _norm(name) in self.members

    def opener(self, name: str) -> Callable[[], BinaryIO]:
        info = self.member(name)

        def open_member() -> BinaryIO:
            f = self.tar.extractfile(info)
            if f is None:
                raise ArchiveError(f"{self.path}: {name} is not a regular file")
            return cast(BinaryIO, f)
        return open_member

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        info = self.member(name)
        if info.size > limit:
            raise ArchiveError(f"{self.path}: {name} is too large for a JSON document")
        with self.opener(name)() as f:
            return f.read()

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError as exc:
            raise ArchiveError(f"{self.path}: {name} is not valid JSON") from exc

    def digest_and_kind(self, name: str) -> tuple[str, int, str]:
        """sha256, size and layer media type (by magic number) of a member."""
        h = hashlib.sha256()
        size = 0
        head = b""
        with self.opener(name)() as f:
            while chunk := f.read(CHUNK):
                if not head:
                    head = chunk[:4]
                h.update(chunk)
                size += len(chunk)
        if head.startswith(b"\x1f\x8b"):
            kind = OCI_LAYER_GZIP
        elif head.startswith(b"\x28\xb5\x2f\xfd"):
            kind = OCI_LAYER_ZSTD
        else:
            kind = OCI_LAYER
        return "sha256:" + h.hexdigest(), size, kind


def _ref(name: str) -> ImageRef:
    try:
        ref = ImageRef.parse(name)
    except ReferenceError as exc:
        raise ArchiveError(str(exc)) from exc
    if ref.digest:
        raise ArchiveError(f"{name}: give a tag, not a digest")
    return ref


def _push_blob(registry: Registry, repo: str, digest: str, opener: Callable[[], BinaryIO] | bytes, size: int,
               counts: Imported) -> None:
    if registry.push_blob(repo, digest, opener, size=size):
        counts.uploaded += 1
    else:
        counts.present += 1


def _import_docker_save(archive: _Archive, registry: Registry, name: str | None) -> list[Imported]:
    entries = archive.json("manifest.json")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ArchiveError(f"{archive.path}: manifest.json is not a docker save manifest (a list of images)")
    if name and len(entries) > 1:
        raise ArchiveError(f"{archive.path}: holds {len(entries)} images; --name works with one")
    results = []
    for entry in entries:
        if not entry.get("Config") or not isinstance(entry.get("Layers"), list):
            raise ArchiveError(f"{archive.path}: manifest.json entry without Config or Layers")
        tags = [name] if name else list(entry.get("RepoTags") or [])
        if not tags:
            raise ArchiveError(f"{archive.path}: image {entry['Config']} has no RepoTags; give --name REPO:TAG")
        refs = [_ref(t) for t in tags]
        config_bytes = archive.read(entry["Config"])
        try:
            config = json.loads(config_bytes)
        except ValueError as exc:
            raise ArchiveError(f"{archive.path}: {entry['Config']} is not valid JSON") from exc
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(entry["Layers"]):
            raise ArchiveError(f"{archive.path}: config lists {len(diff_ids)} layers, manifest.json "
                               f"{len(entry['Layers'])}")
        layers = []
        for layer_name in entry["Layers"]:
            digest, size, kind = archive.digest_and_kind(layer_name)
            layers.append((layer_name, digest, size, kind))
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        manifest = canonical_json({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": kind, "digest": digest, "size": size} for _, digest, size, kind in layers]})
        for ref_index, ref in enumerate(refs):
            result = Imported(name=str(ref), digest="")
            if ref_index == 0 or ref.repo != refs[0].repo:
                for layer_name, digest, size, _kind in layers:
                    _push_blob(registry, ref.repo, digest, archive.opener(layer_name), size, result)
                _push_blob(registry, ref.repo, config_digest, config_bytes, len(config_bytes), result)
            result.digest = registry.push_manifest(ref.repo, ref.tag, manifest, OCI_MANIFEST)
            results.append(result)
    return results


def _layout_names(desc: dict[str, Any]) -> list[str]:
    ann = desc.get("annotations") or {}
    full = ann.get(CONTAINERD_NAME)
    if full:
        return [str(full)]
    ref_name = ann.get(REF_NAME)
    if ref_name:
        # a full name (docker's OCI export) or only a tag (skopeo, buildah): a tag alone names no repository
        text = str(ref_name)
        if "/" in text or ":" in text:
            return [text]
    return []


def _push_layout_manifest(archive: _Archive, registry: Registry, repo: str, desc: dict[str, Any],
                          counts: Imported, ref: str) -> None:
    digest = desc["digest"]
    blob = f"blobs/{digest.replace(':', '/')}"
    body = archive.read(blob)
    if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        raise ArchiveError(f"{archive.path}: {blob} does not match its digest")
    doc = json.loads(body)
    media_type = doc.get("mediaType") or desc.get("mediaType") or OCI_MANIFEST
    if media_type in INDEXES:
        for child in doc.get("manifests") or []:
            if archive.has(f"blobs/{child['digest'].replace(':', '/')}"):
                _push_layout_manifest(archive, registry, repo, child, counts, child["digest"])
    elif media_type in (OCI_MANIFEST, DOCKER_MANIFEST):
        for d in [doc["config"], *(doc.get("layers") or [])]:
            name = f"blobs/{d['digest'].replace(':', '/')}"
            _push_blob(registry, repo, d["digest"], archive.opener(name), archive.member(name).size, counts)
    else:
        raise ArchiveError(f"{archive.path}: {digest} has unsupported media type {media_type}")
    counts.digest = registry.push_manifest(repo, ref, body, media_type)


def _import_oci_layout(archive: _Archive, registry: Registry, name: str | None) -> list[Imported]:
    index = archive.json("index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not manifests:
        raise ArchiveError(f"{archive.path}: index.json lists no manifests")
    if name and len(manifests) > 1:
        raise ArchiveError(f"{archive.path}: holds {len(manifests)} images; --name works with one")
    results = []
    for desc in manifests:
        if desc.get("mediaType") not in (OCI_MANIFEST, DOCKER_MANIFEST, *INDEXES, DOCKER_LIST, None):
            continue
        names = [name] if name else _layout_names(desc)
        if not names:
            raise ArchiveError(f"{archive.path}: manifest {desc.get('digest', '?')[:19]} names no image; "
                               "give --name REPO:TAG")
        for text in names:
            ref = _ref(text)
            result = Imported(name=str(ref), digest="")
            _push_layout_manifest(archive, registry, ref.repo, desc, result, ref.tag)
            results.append(result)
    return results


def import_archive(registry: Registry, path: str | Path, *, name: str | None = None) -> list[Imported]:
    """Push the image(s) of a ``docker save`` or OCI layout tarball; one :class:`Imported` per tag."""
    archive = _Archive(Path(path))
    try:
        if archive.has("manifest.json"):
            return _import_docker_save(archive, registry, name)
        if archive.has("index.json"):
            return _import_oci_layout(archive, registry, name)
        raise ArchiveError(f"{path}: neither manifest.json (docker save) nor index.json (OCI layout) in the archive")
    except (tarfile.TarError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise ArchiveError(f"{path}: malformed archive ({type(exc).__name__}: {exc})") from exc
    finally:
        archive.close()
