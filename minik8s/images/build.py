"""Build images on a base without a daemon, and push them.

::

    base = pull_image(reg, "library/python", "3.11")              # manifest + config only
    layer = layer_from_entries([Entry.file("app/handler.py", code)])
    image = build_image(base, [layer], ContainerConfig(cmd=["python3", "/app/handler.py"]))
    push_image(reg, "fn/hello", "v1", image, base_repo="library/python")

``push_image`` mounts the base's blobs from ``base_repo`` (cross-repository mount: one request each,
no bytes), uploads only what the registry lacks, then puts the manifest. Blob requests run
concurrently on the client's connection pool.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from minik8s.images.layers import Layer
from minik8s.images.media import DOCKER_MANIFEST, INDEXES, OCI_MANIFEST
from minik8s.images.oci import CREATED, ContainerConfig, Image, ImageError, machine_arch, make_config
from minik8s.images.registry import Registry, RegistryError


def build_image(base: Image | None, layers: Sequence[Layer], config: ContainerConfig | None = None, *,
                created_by: str = "minik8s", annotations: dict[str, str] | None = None) -> Image:
    """A new image: ``base``'s layers (if any) followed by ``layers``, with ``config`` overlaid on the base's."""
    base_cfg: dict[str, Any] = base.config if base is not None else {}
    base_layers = list(base.layers) if base is not None else []
    base_diff_ids = list((base_cfg.get("rootfs") or {}).get("diff_ids") or [])
    if len(base_diff_ids) != len(base_layers):
        raise ImageError("base image's config and manifest disagree on its layers")
    runtime = (config or ContainerConfig()).merged_onto(base_cfg.get("config") or {})
    history = list(base_cfg.get("history") or [])
    history += [{"created": CREATED, "created_by": created_by} for _ in layers]
    cfg = make_config(base_diff_ids + [layer.diff_id for layer in layers], runtime, history,
                      architecture=base_cfg.get("architecture") or machine_arch())
    if base_cfg.get("variant"):
        cfg["variant"] = base_cfg["variant"]
    return Image.assemble(cfg, base_layers + list(layers), base_layers=len(base_layers), annotations=annotations)


@dataclass
class PushResult:
    digest: str
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _push_one(registry: Registry, repo: str, digest: str, source: Layer | bytes, size: int,
              mount_from: str | None, check: bool) -> str:
    has_local = not isinstance(source, Layer) or source.data is not None or source.path is not None
    if mount_from and mount_from != repo:
        return registry.mount_blob(repo, digest, mount_from, source if has_local else None, size=size)
    if (check or not has_local) and registry.blob_exists(repo, digest):
        return "skipped"
    if not has_local:
        raise RegistryError(f"blob {digest[:19]} is neither in {repo} nor available locally; "
                            "push its base image or give base_repo")
    registry.push_blob(repo, digest, source, size=size, check=False)
    return "uploaded"


def push_image(registry: Registry, repo: str, tag: str, image: Image, *, base_repo: str | None = None,
               workers: int = 4, check_below: int = 0) -> PushResult:
    """Push ``image`` as ``repo:tag``; returns the manifest digest and what happened to each blob.

    With ``base_repo`` the image's base layers (``image.base_layers``, or any layer without local
    content) are mounted from there; every other blob is HEAD-checked and uploaded when missing.
    ``check_below=N`` uploads blobs smaller than N bytes without the HEAD (for blobs known to be new,
    such as a function's code layer and config: an upload is two requests, a check one more).
    """
    jobs: list[tuple[str, Layer | bytes, int, str | None]] = []
    for i, layer in enumerate(image.layers):
        shared = i < image.base_layers or (layer.data is None and layer.path is None)
        jobs.append((layer.digest, layer, layer.size, base_repo if shared else None))
    jobs.append((image.config_digest, image.config_bytes, len(image.config_bytes), None))
    unique = list({job[0]: job for job in reversed(jobs)}.values())[::-1]   # one job per digest
    result = PushResult(digest="")

    def run(job: tuple[str, Layer | bytes, int, str | None]) -> tuple[str, str]:
        return job[0], _push_one(registry, repo, job[0], job[1], job[2], job[3], job[2] >= check_below)

    if workers > 1 and len(unique) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(unique))) as pool:
            outcomes = list(pool.map(run, unique))
    else:
        outcomes = [run(j) for j in unique]
    for digest, outcome in outcomes:
        {"mounted": result.mounted, "uploaded": result.uploaded, "skipped": result.skipped}[outcome].append(digest)
    result.digest = registry.push_manifest(repo, tag, image.manifest_bytes, image.media_type)
    return result


def pull_image(registry: Registry, repo: str, ref: str, *, architecture: str | None = None) -> Image:
    """The manifest and config of ``repo:ref`` (an index is resolved to this machine's platform).

    Layers carry descriptors only (no bytes): good as a base for :func:`build_image` and
    :func:`push_image` with ``base_repo=repo``.
    """
    body, media_type, _ = registry.get_manifest(repo, ref)
    if media_type in INDEXES:
        arch = architecture or machine_arch()
        index = json.loads(body)
        matches = [m for m in index.get("manifests") or []
                   if (m.get("platform") or {}).get("architecture") == arch
                   and (m.get("platform") or {}).get("os", "linux") == "linux"]
        if not matches:
            raise ImageError(f"{repo}:{ref} has no image for linux/{arch}")
        body, media_type, _ = registry.get_manifest(repo, matches[0]["digest"])
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise ImageError(f"{repo}:{ref} is a {media_type or 'manifest of unknown type'}, not an image manifest")
    manifest = json.loads(body)
    config_bytes = registry.get_blob(repo, manifest["config"]["digest"])
    diff_ids = (json.loads(config_bytes).get("rootfs") or {}).get("diff_ids") or []
    layers = [Layer(digest=d["digest"], size=int(d["size"]), media_type=d["mediaType"],
                    diff_id=diff_ids[i] if i < len(diff_ids) else "")
              for i, d in enumerate(manifest.get("layers") or [])]
    image = Image(body, config_bytes, layers, media_type=media_type, base_layers=len(layers))
    image.check()
    return image


def push_all(registry: Registry, repo: str, tags: Iterable[str], image: Image, **kwargs: Any) -> list[PushResult]:
    """Push one image under several tags (blobs once, then one manifest PUT per further tag)."""
    results: list[PushResult] = []
    for i, tag in enumerate(tags):
        if i == 0:
            results.append(push_image(registry, repo, tag, image, **kwargs))
        else:
            digest = registry.push_manifest(repo, tag, image.manifest_bytes, image.media_type)
            results.append(PushResult(digest=digest))
    return results
