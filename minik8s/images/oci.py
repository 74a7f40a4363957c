"""OCI image configs, manifests and image layout folders.

An :class:`Image` is a manifest, its config and its layers, all as exact bytes (digests are over the
bytes, so JSON is written once, canonically: sorted keys, no spaces). ``write_layout`` and
``read_layout`` store images as an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``),
the form of the base-image cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minik8s.images.layers import CHUNK, Layer, sha256_digest
from minik8s.images.media import DOCKER_MANIFEST, INDEXES, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST

CREATED = "1970-01-01T00:00:00Z"   # fixed, so a rebuild gives the same config digest
REF_NAME = "org.opencontainers.image.ref.name"
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
           "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386",
           "i386": "386"}


class ImageError(Exception):
    """An image, manifest or layout that cannot be used (one line)."""


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def machine_arch() -> str:
    """This machine's architecture in OCI (GOARCH) words: ``amd64``, ``arm64``, …"""
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine)


@dataclass
class ContainerConfig:
    """The runtime part of an image config. ``None`` means "inherit from the base"."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None
    exposed_ports: list[str] | None = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None

    def merged_onto(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """The config JSON's ``config`` object: ``base`` overlaid with what this one sets.

        Env is merged by variable name; setting an entrypoint without a cmd clears the base's cmd
        (as a Dockerfile's ENTRYPOINT does).
        """
        out = dict(base)
        if self.env is not None:
            env = {e.split("=", 1)[0]: e for e in out.get("Env") or []}
            env.update({e.split("=", 1)[0]: e for e in self.env})
            out["Env"] = list(env.values())
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
            if self.cmd is None:
                out.pop("Cmd", None)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.working_dir is not None:
            out["WorkingDir"] = self.working_dir
        if self.user is not None:
            out["User"] = self.user
        if self.exposed_ports is not None:
            out["ExposedPorts"] = {(p if "/" in p else f"{p}/tcp"): {} for p in self.exposed_ports}
        if self.labels is not None:
            out["Labels"] = {**(out.get("Labels") or {}), **self.labels}
        if self.stop_signal is not None:
            out["StopSignal"] = self.stop_signal
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}


def make_config(diff_ids: list[str], runtime: Mapping[str, Any], history: list[dict[str, Any]], *,
                architecture: str | None = None) -> dict[str, Any]:
    """An OCI image config (``application/vnd.oci.image.config.v1+json``)."""
    return {"created": CREATED, "architecture": architecture or machine_arch(), "os": "linux",
            "config": dict(runtime), "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
            "history": list(history)}


def make_manifest(config_bytes: bytes, layers: list[Layer], *,
                  annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An OCI image manifest for a config blob and layers."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config_bytes), "size": len(config_bytes)},
        "layers": [layer.descriptor() for layer in layers]}
    if annotations:
        manifest["annotations"] = dict(annotations)
    return manifest


@dataclass
class Image:
    """A manifest with its config and layers (``layers[i]`` matches ``manifest["layers"][i]``)."""

    manifest_bytes: bytes
    config_bytes: bytes
    layers: list[Layer]
    media_type: str = OCI_MANIFEST
    base_layers: int = 0          # how many leading layers come from a base image (shared blobs)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_bytes)  # type: ignore[no-any-return]

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_bytes)  # type: ignore[no-any-return]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config_bytes)

    @property
    def config_media_type(self) -> str:
        return str(self.manifest["config"].get("mediaType") or OCI_CONFIG)

    @property
    def size(self) -> int:
        """Compressed size: manifest + config + layers."""
        return len(self.manifest_bytes) + len(self.config_bytes) + sum(layer.size for layer in self.layers)

    @staticmethod
    def assemble(config: dict[str, Any], layers: list[Layer], *, base_layers: int = 0,
                 annotations: Mapping[str, str] | None = None) -> Image:
        config_bytes = canonical_json(config)
        manifest = make_manifest(config_bytes, layers, annotations=annotations)
        return Image(canonical_json(manifest), config_bytes, list(layers), base_layers=base_layers)

    def check(self) -> None:
        """Raise ``ImageError`` unless manifest, config and layers agree."""
        manifest = self.manifest
        if manifest.get("mediaType", self.media_type) not in (OCI_MANIFEST, DOCKER_MANIFEST):
            raise ImageError(f"not an image manifest: {manifest.get('mediaType')}")
        if manifest["config"]["digest"] != self.config_digest:
            raise ImageError("manifest's config digest does not match the config")
        described = [d["digest"] for d in manifest.get("layers") or []]
        if described != [layer.digest for layer in self.layers]:
            raise ImageError("manifest's layers do not match the image's layers")
        diff_ids = (self.config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(self.layers):
            raise ImageError(f"config lists {len(diff_ids)} diff_ids for {len(self.layers)} layers")


# ------------------------------------------------------------------------------------------ image layout

def _blob_path(root: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"bad digest: {digest!r}")
    return root / "blobs" / "sha256" / hexpart


def _put_blob(root: Path, digest: str, data: bytes | None = None, layer: Layer | None = None) -> None:
    dest = _blob_path(root, digest)
    if dest.exists():
        return
    tmp = dest.with_name(dest.name + ".part")
    if data is not None:
        tmp.write_bytes(data)
    elif layer is not None and layer.path is not None:
        try:
            os.link(layer.path, tmp)     # same filesystem: no copy
        except OSError:
            shutil.copyfile(layer.path, tmp)
    elif layer is not None:
        tmp.write_bytes(layer.read())
    os.replace(tmp, dest)


def write_layout(root: Path, images: Mapping[str, Image], *, info: Mapping[str, Any] | None = None) -> None:
    """Write ``{tag: image}`` as an OCI image layout under ``root`` (created if missing)."""
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    entries = []
    for tag, image in images.items():
        for layer in image.layers:
            _put_blob(root, layer.digest, layer=layer)
        _put_blob(root, image.config_digest, data=image.config_bytes)
        _put_blob(root, image.digest, data=image.manifest_bytes)
        entries.append({"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest_bytes),
                        "annotations": {REF_NAME: tag}})
    (root / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                      "manifests": entries}))
    if info is not None:
        (root / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def verify_blob(path: Path, digest: str) -> bool:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest() == digest


def image_from_layout(root: Path, descriptor: Mapping[str, Any]) -> Image:
    """The image a layout's manifest descriptor names; layers point at the layout's blob files."""
    manifest_bytes = _blob_path(root, descriptor["digest"]).read_bytes()
    if sha256_digest(manifest_bytes) != descriptor["digest"]:
        raise ImageError(f"manifest blob {descriptor['digest']} is corrupt in {root}")
    manifest = json.loads(manifest_bytes)
    config_bytes = _blob_path(root, manifest["config"]["digest"]).read_bytes()
    diff_ids = (json.loads(config_bytes).get("rootfs") or {}).get("diff_ids") or []
    layers = []
    for i, d in enumerate(manifest.get("layers") or []):
        path = _blob_path(root, d["digest"])
        if not path.is_file():
            raise ImageError(f"layer blob {d['digest']} is missing from {root}")
        layers.append(Layer(digest=d["digest"], size=int(d["size"]), media_type=d["mediaType"], path=path,
                            diff_id=diff_ids[i] if i < len(diff_ids) else ""))
    media_type = manifest.get("mediaType") or descriptor.get("mediaType") or OCI_MANIFEST
    return Image(manifest_bytes, config_bytes, layers, media_type=media_type)


def read_layout(root: Path) -> dict[str, Image]:
    """``{tag: image}`` for every image manifest in the layout's ``index.json`` (tag from the ref name)."""
    try:
        index = json.loads((root / "index.json").read_bytes())
    except (OSError, ValueError) as exc:
        raise ImageError(f"no readable index.json in {root}: {exc}") from exc
    out: dict[str, Image] = {}
    for i, desc in enumerate(index.get("manifests") or []):
        if desc.get("mediaType") in INDEXES:
            continue
        tag = (desc.get("annotations") or {}).get(REF_NAME) or f"image{i}"
        out[tag] = image_from_layout(root, desc)
    return out
