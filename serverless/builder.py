"""The function builder: store checked code in the registry, build and push a function's image.

::

    store_code(bytes) ── check_code ── code_blob ──HEAD/PUT──▶ minik8s-functions/code  @sha256:C

    build(ns, name, C)                                             minik8s-functions/NS/NAME:c-<hash>
      base    library/python:3.11   (HEAD its tag; manifest + config kept in memory per digest; blobs mounted)
      [deps]  opt/minik8s/deps/…    pip install --target for cp311, cached as <cache>/<sha256>.tar.gz
      app     opt/minik8s/runtime/imagedata/*.py + opt/minik8s/function/…   (the one new layer)
      config  WorkingDir, Env PYTHONPATH/PYTHONUNBUFFERED, Cmd python3 -m imagedata, port 8080

Every step is reproducible (fixed tar metadata and config timestamps), so the same code on the same
base and runtime gives the same manifest digest, and a second build pushes nothing: when the tag
already names that digest, the build ends after one ``HEAD``.

Errors: :class:`~serverless.code.CodeError` for the user's code (400: bad code, unknown code digest,
``pip install`` failing; 413: too large); :class:`~minik8s.images.registry.RegistryError` when the
registry fails or lacks the base image; ``ValueError`` for a bad namespace or name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from minik8s.images.build import build_image, pull_image, push_image
from minik8s.images.layers import CHUNK, Entry, Layer, entries_from_dir, layer_from_entries
from minik8s.images.oci import ContainerConfig, Image
from minik8s.images.reference import ImageRef, ReferenceError
from minik8s.images.registry import Registry, RegistryError
from serverless.code import (
    MAX_BYTES,
    REQUIREMENTS,
    CodeError,
    CodeTree,
    check_code,
    code_blob,
    code_digest,
    read_blob,
    tree_entries,
)

CODE_REPO = "minik8s-functions/code"
REPO_PREFIX = "minik8s-functions"
DEFAULT_PIP_CACHE = "/var/cache/minik8s/pip"
DEFAULT_BASE = "library/python:3.11"
PYTHON_VERSION = "3.11"
PYTHON_TAG = "cp311"           # the base image's interpreter: deps are built for it, not for the host's
RUNTIME_DIR = "opt/minik8s/runtime"
FUNCTION_DIR = "opt/minik8s/function"
DEPS_DIR = "opt/minik8s/deps"
# Part of every tag: bump it when the image layout below changes, so old tags are not reused.
LAYOUT_VERSION = "minik8s-function-image/1"
IMAGE_CONFIG = ContainerConfig(
    entrypoint=[],                                  # clears any base entrypoint: Cmd alone starts the runtime
    cmd=["python3", "-m", "imagedata"],
    env=[f"PYTHONPATH=/{RUNTIME_DIR}:/{DEPS_DIR}:/{FUNCTION_DIR}", "PYTHONUNBUFFERED=1"],
    working_dir=f"/{FUNCTION_DIR}",
    exposed_ports=["8080/tcp"])
BASE_RECHECK = 10.0            # seconds a base tag's digest is trusted before it is asked again (HEAD)
CODE_MEMO = 64                 # code trees kept in memory after store_code/build (saves the blob GET)
# New function code makes a new app layer and config: upload them without asking first (HEAD).
NEW_BLOB_BELOW = 4 * 1024 * 1024
_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class CodeInfo:
    """What :meth:`Builder.store_code` stored: the blob's digest and size, the number of files."""

    digest: str
    size: int
    files: int
    requirements: bool


@dataclass(frozen=True)
class BuildResult:
    """A pushed function image. ``pushed_bytes`` counts the blobs uploaded (0 when nothing was new)."""

    image: str                  # docker.io/minik8s-functions/NS/NAME@sha256:… (served by the cluster registry)
    tag: str
    manifest_digest: str
    deps_layer: str | None      # digest of the requirements layer, when the code has requirements
    seconds: float
    pushed_bytes: int


def runtime_files(root: Path | None = None) -> dict[str, bytes]:
    """``{file name: content}`` of the ``imagedata`` package shipped in every image (its ``*.py``)."""
    root = root or Path(__file__).resolve().parent.parent / "imagedata"
    files = {p.name: p.read_bytes() for p in sorted(root.glob("*.py"))}
    if "app.py" not in files or "__main__.py" not in files:
        raise FileNotFoundError(f"the function runtime is missing: no imagedata/app.py and __main__.py in {root}")
    return files


def _check_name(kind: str, value: str) -> None:
    if not _NAME.match(value) or len(value) > 128:
        raise ValueError(f"bad function {kind} {value!r}: lower case letters, digits, '.', '_' and '-' only")


def _requirements_lines(text: str) -> list[str]:
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _layer_from_file(path: Path) -> Layer:
    """A layer descriptor for a cached ``.tar.gz`` (digest of the file, diff_id of its tar)."""
    compressed = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            compressed.update(chunk)
    plain = hashlib.sha256()
    size = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            plain.update(chunk)
            size += len(chunk)
    return Layer(digest="sha256:" + compressed.hexdigest(), size=path.stat().st_size,
                 diff_id="sha256:" + plain.hexdigest(), path=path, uncompressed_size=size)


class Builder:
    """Stores function code and builds function images in one registry. Thread-safe; methods block.

    ``cache_dir`` holds the requirements layers (default ``$MINIK8S_PIP_CACHE`` or
    ``/var/cache/minik8s/pip``); ``base`` is the base image's repository and tag in that registry.
    """

    def __init__(self, registry_url: str, *, cache_dir: Path | None = None, base: str = DEFAULT_BASE,
                 pip_timeout: float = 300.0) -> None:
        try:
            ref = ImageRef.parse(base)
        except ReferenceError as exc:
            raise ValueError(f"bad base image {base!r}: {exc}") from None
        self.base = base
        self.base_repo, self.base_ref = ref.repo, ref.ref
        self.registry = Registry(registry_url)
        self.host = urlsplit(self.registry.url).netloc
        self.cache_dir = Path(cache_dir or os.environ.get("MINIK8S_PIP_CACHE") or DEFAULT_PIP_CACHE)
        self.pip_timeout = pip_timeout
        self.runtime = runtime_files()
        fingerprint = hashlib.sha256(LAYOUT_VERSION.encode())
        for file_name, data in sorted(self.runtime.items()):
            fingerprint.update(f"\n{file_name}\n{len(data)}\n".encode() + data)
        self.fingerprint = fingerprint.hexdigest()
        self._lock = threading.Lock()
        self._bases: dict[str, Image] = {}                 # base manifest digest -> image (no layer bytes)
        self._base_digest: tuple[str, float] | None = None  # (digest of the base tag, when asked)
        self._codes: OrderedDict[str, CodeTree] = OrderedDict()  # code digest -> tree, most recent last
        self._deps: dict[str, Layer] = {}                  # requirements key -> cached layer
        self._deps_locks: dict[str, threading.Lock] = {}   # one pip run per requirements at a time
        self._deps_home: dict[str, str] = {}               # deps layer digest -> a repository that has it

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> Builder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- code

    def store_code(self, data: bytes, *, filename: str, entry_point: str = "run",
                   max_bytes: int = MAX_BYTES) -> CodeInfo:
        """Check an upload and store its code blob in ``minik8s-functions/code`` (HEAD, then upload).

        Raises CodeError (nothing is stored) or RegistryError.
        """
        tree = check_code(data, filename=filename, entry_point=entry_point, max_bytes=max_bytes)
        blob = code_blob(tree)
        digest = code_digest(blob)
        self.registry.push_blob(CODE_REPO, digest, blob)
        self._remember(digest, tree)
        return CodeInfo(digest=digest, size=len(blob), files=len(tree.files), requirements=tree.has_requirements)

    def _remember(self, digest: str, tree: CodeTree) -> None:
        with self._lock:
            self._codes[digest] = tree
            self._codes.move_to_end(digest)
            while len(self._codes) > CODE_MEMO:
                self._codes.popitem(last=False)

    def _code_tree(self, digest: str) -> CodeTree:
        if not _DIGEST.match(digest):
            raise CodeError(400, f"bad code digest {digest!r}: expected sha256:<64 hex digits>")
        with self._lock:
            tree = self._codes.get(digest)
        if tree is not None:
            return tree
        try:
            blob = self.registry.get_blob(CODE_REPO, digest)
        except RegistryError as exc:
            if exc.status == 404:
                raise CodeError(400, f"unknown code digest {digest}: upload the code first") from None
            raise
        if code_digest(blob) != digest:
            raise RegistryError(f"code blob {digest}: the registry's content does not match its digest")
        tree = read_blob(blob)
        self._remember(digest, tree)
        return tree

    # ------------------------------------------------------------------------------------------ build

    def build(self, namespace: str, name: str, code_digest: str) -> BuildResult:
        """Build the image of function ``namespace/name`` from a stored code blob and push it.

        Tag ``c-<20 hex of sha256(code digest, runtime fingerprint, base digest)>``; the result's
        ``image`` is pinned by manifest digest.
        """
        started = time.perf_counter()
        _check_name("namespace", namespace)
        _check_name("name", name)
        tree = self._code_tree(code_digest)
        base, base_digest = self._base()
        tag = "c-" + hashlib.sha256(f"{code_digest}\n{self.fingerprint}\n{base_digest}".encode()).hexdigest()[:20]
        layers: list[Layer] = []
        deps = self._deps_layer(tree.files[REQUIREMENTS]) if tree.has_requirements else None
        if deps is not None:
            layers.append(deps)
        layers.append(self._app_layer(tree))
        image = build_image(base, layers, IMAGE_CONFIG, created_by="minik8s function builder")
        repo = f"{REPO_PREFIX}/{namespace}/{name}"
        pushed = 0
        digest = self.registry.manifest_digest(repo, tag)
        if digest != image.digest:                 # a manifest's blobs are in its repository: done otherwise
            if deps is not None:
                pushed += self._place_deps(repo, deps)
            # Blobs below check_below are uploaded without a HEAD; the deps layer is usually in the
            # registry already (mounted above, or an earlier build), so it must stay at or above it.
            check_below = min(NEW_BLOB_BELOW, deps.size) if deps is not None else NEW_BLOB_BELOW
            result = push_image(self.registry, repo, tag, image, base_repo=self.base_repo, check_below=check_below)
            sizes = {layer.digest: layer.size for layer in image.layers}
            sizes[image.config_digest] = len(image.config_bytes)
            pushed += sum(sizes.get(d, 0) for d in result.uploaded)
            digest = result.digest
            if deps is not None:
                with self._lock:
                    self._deps_home.setdefault(deps.digest, repo)
        # A docker.io name: containerd resolves docker.io through the cluster registry (its certs.d mirror),
        # and the kubelet pulls only names the cluster registry serves.
        return BuildResult(image=f"docker.io/{repo}@{digest}", tag=tag, manifest_digest=digest,
                           deps_layer=deps.digest if deps is not None else None,
                           seconds=time.perf_counter() - started, pushed_bytes=pushed)

    def _base(self) -> tuple[Image, str]:
        """The base image (manifest and config) and its digest; the tag is asked again after BASE_RECHECK s."""
        now = time.monotonic()
        with self._lock:
            known = self._base_digest
        if known is not None and now - known[1] < BASE_RECHECK:
            digest = known[0]
        else:
            try:
                found = self.registry.manifest_digest(self.base_repo, self.base_ref)
            except RegistryError as exc:
                raise RegistryError(f"base image {self.base}: {exc}", status=exc.status, code=exc.code) from exc
            if found is None:
                raise RegistryError(f"base image {self.base} is not in the registry at {self.registry.url} "
                                    "(seed it: python -m minik8s.images seed)", status=404, code="MANIFEST_UNKNOWN")
            digest = found
        with self._lock:
            image = self._bases.get(digest) if digest else None
        if image is None:
            # A registry that sends no Docker-Content-Digest ("") is asked by tag; the digest is then ours.
            image = pull_image(self.registry, self.base_repo, digest or self.base_ref)
            digest = digest or image.digest
            with self._lock:
                self._bases[digest] = image
        if known is None or known[0] != digest or now - known[1] >= BASE_RECHECK:
            with self._lock:
                self._base_digest = (digest, now)
        return image, digest

    def _app_layer(self, tree: CodeTree) -> Layer:
        entries = {e.path: e for e in tree_entries(tree, FUNCTION_DIR)}
        runtime = f"{RUNTIME_DIR}/imagedata"
        for d in ("opt", "opt/minik8s", RUNTIME_DIR, runtime):
            entries[d] = Entry.dir(d)
        for file_name, data in self.runtime.items():
            entries[f"{runtime}/{file_name}"] = Entry.file(f"{runtime}/{file_name}", data)
        return layer_from_entries(entries.values(), spill_bytes=1 << 62)

    # ----------------------------------------------------------------------------------- requirements

    def _deps_layer(self, requirements: bytes) -> Layer | None:
        """The requirements layer (cached on disk and in memory); None when the file lists nothing."""
        try:
            text = requirements.decode("utf-8")
        except UnicodeDecodeError:
            raise CodeError(400, "requirements.txt is not UTF-8 text") from None
        if not _requirements_lines(text):
            return None
        key = hashlib.sha256((text + PYTHON_TAG).encode()).hexdigest()
        with self._lock:
            layer = self._deps.get(key)
            key_lock = self._deps_locks.setdefault(key, threading.Lock())
        if layer is not None:
            return layer
        with key_lock:
            with self._lock:
                layer = self._deps.get(key)
            if layer is not None:
                return layer
            path = self.cache_dir / f"{key}.tar.gz"
            layer = _layer_from_file(path) if path.is_file() else self._pip_install(text, path)
            with self._lock:
                self._deps[key] = layer
            return layer

    def _pip_install(self, text: str, dest: Path) -> Layer:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create the pip cache {self.cache_dir} ({exc.strerror}); "
                          "set MINIK8S_PIP_CACHE to a writable folder") from exc
        with tempfile.TemporaryDirectory(prefix="mk8s-pip-") as tmp:
            req = Path(tmp) / REQUIREMENTS
            req.write_text(text)
            target = Path(tmp) / "target"
            cmd = [sys.executable, "-m", "pip", "install", "--no-compile", "--disable-pip-version-check",
                   "--no-input", "--target", str(target), "--python-version", PYTHON_VERSION,
                   "--implementation", "cp", "--only-binary=:all:", "-r", str(req)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.pip_timeout, cwd=tmp,
                                      check=False)
            except subprocess.TimeoutExpired:
                raise CodeError(400, f"pip install timed out after {self.pip_timeout:g}s") from None
            if proc.returncode != 0:
                lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
                errors = [line for line in lines if line.startswith("ERROR")] or lines
                raise CodeError(400, "pip install failed: " + " | ".join(errors[-3:]))
            target.mkdir(exist_ok=True)
            entries = [Entry.dir("opt"), Entry.dir("opt/minik8s"), Entry.dir(DEPS_DIR),
                       *entries_from_dir(target, prefix=DEPS_DIR)]
            # Written beside its final name and renamed: a reader sees the whole file or none.
            part = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
            try:
                layer = layer_from_entries(entries, out=part)
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
        layer.path = dest
        return layer

    def _place_deps(self, repo: str, deps: Layer) -> int:
        """Mount the deps layer from a repository known to have it (no bytes); bytes uploaded if not."""
        with self._lock:
            home = self._deps_home.get(deps.digest)
        if home is None or home == repo:
            return 0
        try:
            outcome = self.registry.mount_blob(repo, deps.digest, home, deps)
        except RegistryError:
            return 0                               # push_image uploads it
        return deps.size if outcome == "uploaded" else 0

    # ----------------------------------------------------------------------------------------- delete

    def delete_images(self, namespace: str, name: str) -> int:
        """Delete every manifest of ``minik8s-functions/NS/NAME``; the number deleted (0: no repository).

        Blobs stay (base and deps blobs are shared); the registry's garbage collector reclaims the rest.
        """
        _check_name("namespace", namespace)
        _check_name("name", name)
        repo = f"{REPO_PREFIX}/{namespace}/{name}"
        digests: list[str] = []
        for tag in self.registry.tags(repo):
            digest = self.registry.manifest_digest(repo, tag)
            if digest and digest not in digests:
                digests.append(digest)
        deleted = 0
        for digest in digests:
            try:
                self.registry.delete_manifest(repo, digest)
            except RegistryError as exc:
                if exc.status != 404:              # gone already (a concurrent delete): fine
                    raise
                continue
            deleted += 1
        return deleted
