"""The cluster's own images, built once into a shared cache and seeded into each cluster's registry.

=================  ==========================================================================
``pause:3.9``      Debian's static catatonit at ``/catatonit``; entrypoint ``/catatonit -P``
``busybox:latest`` busybox-static at ``/bin/busybox`` + a symlink per applet; ``/tmp`` 1777;
                   ``/etc/passwd`` and ``/etc/group`` with root and nobody; cmd ``sh``
``python:3.11``    ``debootstrap --variant=minbase bookworm`` + python3, Flask, gunicorn, from
                   the machine's Debian mirror; trimmed (apt lists and caches, docs, man pages,
                   locales, logs) and its byte code recompiled as hash-based ``.pyc`` (the
                   layer's fixed mtimes would make Debian's timestamp-based ones stale)
=================  ==========================================================================

Cache (``$MINIK8S_IMAGE_CACHE``, default ``/var/cache/minik8s/images``; outside every cluster)::

    <cache>/
      pause_3.9-<key>/          an OCI image layout: oci-layout, index.json, blobs/sha256/…, info.json
      busybox_latest-<key>/
      python_3.11-<key>/
      .locks/<name>.lock        flock: one build of an image at a time, across clusters
      .tmp-<name>-XXXX/         a build in progress (renamed into place when complete)
      .debs/                    debootstrap's package cache (speeds up a rebuild)

``<key>`` = sha256 of the recipe (what the build does, ``RECIPES``) + the versions of the Debian
packages it takes (installed ones for pause and busybox, the apt candidates for python), so an
image is rebuilt exactly when its input changes. Finished entries are read-only (files 0444).

    python -m minik8s.images seed --registry http://127.0.0.1:PORT [pause busybox python]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minik8s.images.build import build_image, push_image
from minik8s.images.layers import Entry, layer_from_dir, layer_from_entries
from minik8s.images.oci import ContainerConfig, Image, ImageError, canonical_json, read_layout, write_layout
from minik8s.images.registry import Registry, RegistryError

DEFAULT_CACHE = "/var/cache/minik8s/images"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

Progress = Callable[[str], None]


class BaseImageError(Exception):
    """A base image cannot be built or seeded (one line)."""


def cache_root(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    return Path(env.get("MINIK8S_IMAGE_CACHE") or DEFAULT_CACHE)


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


# ------------------------------------------------------------------------------------------ package info

def installed_version(package: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                             timeout=30, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "missing"


def _apt_fingerprint() -> str:
    """Changes whenever apt's idea of candidate versions can change (package lists, dpkg status, prefs)."""
    paths = [*Path("/var/lib/apt/lists").glob("*"), Path("/var/lib/dpkg/status"), Path("/etc/apt/preferences"),
             *Path("/etc/apt/preferences.d").glob("*")]
    stats = []
    for path in sorted(paths):
        with contextlib.suppress(OSError):
            st = path.stat()
            stats.append([str(path), st.st_size, st.st_mtime_ns])
    return hashlib.sha256(canonical_json(stats)).hexdigest()


def candidate_versions(packages: Iterable[str], *, memo: Path | None = None) -> dict[str, str]:
    """The versions apt would install (``unknown`` where apt cannot say).

    ``apt-cache policy`` takes seconds on machines without apt's binary cache, so the answer is kept in
    ``memo`` (a JSON file) until the package lists change.
    """
    names = list(packages)
    fingerprint = _apt_fingerprint()
    if memo is not None:
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(memo.read_text())
            if saved.get("fingerprint") == fingerprint and set(names) <= set(saved["versions"]):
                return {n: saved["versions"][n] for n in names}
    versions = dict.fromkeys(names, "unknown")
    try:
        out = subprocess.run(["apt-cache", "policy", *names], capture_output=True, text=True, timeout=120,
                             check=False, env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return versions
    for block in re.split(r"^(?=\S)", out, flags=re.MULTILINE):
        m = re.match(r"^(\S+):\s*\n(?:.*\n)*?\s*Candidate:\s*(\S+)", block)
        if m and m.group(1) in versions and m.group(2) != "(none)":
            versions[m.group(1)] = m.group(2)
    if memo is not None and "unknown" not in versions.values():
        with contextlib.suppress(OSError):
            tmp = memo.with_name(memo.name + f".{os.getpid()}")
            tmp.write_text(json.dumps({"fingerprint": fingerprint, "versions": versions}))
            os.replace(tmp, memo)
    return versions


def package_file(package: str, suffix: str) -> Path:
    """The file of an installed Debian package whose path ends with ``suffix`` (``bin/busybox``)."""
    out = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, timeout=30, check=False)
    for line in out.stdout.splitlines():
        if line.endswith("/" + suffix) and Path(line).is_file():
            return Path(line)
    raise BaseImageError(f"package {package} is not installed (no */{suffix}); install it with apt-get install "
                         f"{package}")


def debian_mirror() -> str:
    """The Debian mirror the machine's apt uses (``$MINIK8S_DEBIAN_MIRROR`` overrides)."""
    if os.environ.get("MINIK8S_DEBIAN_MIRROR"):
        return os.environ["MINIK8S_DEBIAN_MIRROR"].rstrip("/")
    candidates: list[str] = []
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(.+)$", stanza, re.MULTILINE)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
                if uris and suites and SUITE in suites.group(1).split():
                    candidates.extend(uris.group(1).split())
        else:
            for line in text.splitlines():
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 3 and parts[0] == "deb":
                    rest = [p for p in parts[1:] if not p.startswith("[")]
                    if len(rest) >= 2 and rest[1] == SUITE:
                        candidates.append(rest[0])
    for uri in candidates:
        if "security" not in uri and "debian" in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


# ------------------------------------------------------------------------------------------------ recipes

@dataclass(frozen=True)
class Recipe:
    name: str
    tag: str
    recipe: dict[str, Any]                        # everything that decides the output (hashed into the key)
    versions: Callable[[], dict[str, str]]        # the package versions the build takes
    build: Callable[[Path, dict[str, Any], Progress | None], Image]

    @property
    def repo(self) -> str:
        return f"library/{self.name}"

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


def _pause_versions() -> dict[str, str]:
    return {"catatonit": installed_version("catatonit")}


def _build_pause(_work: Path, recipe: dict[str, Any], _progress: Progress | None) -> Image:
    binary = package_file("catatonit", "bin/catatonit")
    layer = layer_from_entries([Entry("catatonit", "file", 0o755, source=binary)])
    return build_image(None, [layer], ContainerConfig(entrypoint=recipe["entrypoint"], env=[PATH_ENV]),
                       created_by="minik8s: catatonit from Debian")


def _busybox_versions() -> dict[str, str]:
    return {"busybox-static": installed_version("busybox-static")}


def busybox_entries(binary: Path, applets: Iterable[str]) -> list[Entry]:
    entries = [Entry.dir(d) for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "home", "var", "dev",
                                      "proc", "sys")]
    entries += [Entry.dir("root", 0o700), Entry.dir("tmp", 0o1777), Entry.dir("var/tmp", 0o1777)]
    entries.append(Entry("bin/busybox", "file", 0o755, source=binary))
    for applet in sorted(set(applets)):
        path = applet.strip().lstrip("/")
        if path and path != "bin/busybox":
            entries.append(Entry.symlink(path, "/bin/busybox"))
    entries.append(Entry.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                                            b"nobody:x:65534:65534:nobody:/home:/bin/false\n"))
    entries.append(Entry.file("etc/group", b"root:x:0:\nnobody:x:65534:\n"))
    return entries


def _build_busybox(_work: Path, recipe: dict[str, Any], _progress: Progress | None) -> Image:
    binary = package_file("busybox-static", "bin/busybox")
    out = subprocess.run([str(binary), "--list-full"], capture_output=True, text=True, timeout=30, check=True)
    layer = layer_from_entries(busybox_entries(binary, out.stdout.split()))
    return build_image(None, [layer], ContainerConfig(cmd=recipe["cmd"], env=[PATH_ENV]),
                       created_by="minik8s: busybox-static from Debian")


PYTHON_PACKAGES = ("python3", "python3-flask", "gunicorn", "python-is-python3")
# Removed after debootstrap (globs relative to the root). __pycache__ folders go too, and come back as
# hash-based byte code (see the module docstring).
PYTHON_TRIM = ("var/lib/apt/lists/*", "var/cache/apt/*", "var/cache/debconf/*-old", "var/log/*",
               "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/lintian/*",
               "usr/share/locale/*", "usr/lib/locale/*", "usr/share/bash-completion/*", "tmp/*", "var/tmp/*",
               "root/.cache", "etc/hostname", "etc/resolv.conf", "etc/machine-id", "var/lib/dpkg/*-old")
PYTHON_KEEP = ("usr/share/locale/locale.alias", "usr/lib/locale/C.utf8")
PYTHON_EXCLUDE = ("dev/*", "proc/*", "sys/*", "run/*")


def _python_versions() -> dict[str, str]:
    return candidate_versions(PYTHON_PACKAGES, memo=cache_root() / ".apt-candidates.json")


def _stream(cmd: list[str], progress: Progress | None, prefix: str, timeout: float) -> None:
    """Run ``cmd``, passing its output lines to ``progress``; raise with the last lines on failure."""
    tail: list[str] = []
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail[-9:], line.rstrip()]
        if line.startswith(("I: Retrieving", "I: Extracting", "I: Unpacking", "I: Configuring", "I: Valid",
                            "I: Resolving", "I: Checking", "I: Installing", "I: Base", "W:", "E:")):
            _say(progress, f"{prefix}{line.rstrip()}")
        if time.monotonic() > deadline:
            proc.kill()
            break
    code = proc.wait()
    if code != 0:
        raise BaseImageError(f"{cmd[0]} failed (exit {code}): " + " | ".join(tail[-3:]))


def _du(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def trim_rootfs(root: Path, patterns: Iterable[str] = PYTHON_TRIM, keep: Iterable[str] = PYTHON_KEEP) -> None:
    """Remove the globs in ``patterns`` (but not ``keep``) and every ``__pycache__`` under ``root``."""
    kept = {root / k for k in keep}
    for pattern in patterns:
        for path in root.glob(pattern):
            if path in kept:
                continue
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                _safe_rmtree(path)
    for cache in list(root.rglob("__pycache__")):
        if cache.is_dir() and not cache.is_symlink():
            shutil.rmtree(cache)
    (root / "etc" / "resolv.conf").write_text("")
    (root / "etc" / "hostname").write_text("")


def _build_python(work: Path, recipe: dict[str, Any], progress: Progress | None) -> Image:
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.path.exists(debootstrap):
        raise BaseImageError("debootstrap is not installed; install it with apt-get install debootstrap")
    if os.geteuid() != 0:
        raise BaseImageError("building python:3.11 needs root (debootstrap and chroot)")
    rootfs = work / "rootfs"
    debs = work.parent / ".debs"
    debs.mkdir(exist_ok=True)
    mirror = debian_mirror()
    _say(progress, f"python:3.11: debootstrap {recipe['variant']} {recipe['suite']} from {mirror} "
                   "(a few minutes, once per machine)")
    t0 = time.monotonic()
    try:
        _stream([debootstrap, f"--variant={recipe['variant']}", "--include=" + ",".join(recipe["packages"]),
                 f"--cache-dir={debs}", recipe["suite"], str(rootfs), mirror], progress, "python:3.11: ", 1800)
    finally:
        _unmount_under(rootfs)
    raw = _du(rootfs)
    trim_rootfs(rootfs, recipe["trim"], recipe["keep"])
    _say(progress, "python:3.11: compiling byte code (hash-based .pyc)")
    subprocess.run(["chroot", str(rootfs), "/usr/bin/python3", "-m", "compileall", "-q", "-q",
                    "--invalidation-mode", "checked-hash", *recipe["compile"]],
                   capture_output=True, timeout=600, check=False)
    trimmed = _du(rootfs)
    _say(progress, f"python:3.11: rootfs {raw / 1e6:.0f} MB after debootstrap, {trimmed / 1e6:.0f} MB trimmed; "
                   "writing the layer")
    blob = work / "layer.tar.gz"
    layer = layer_from_dir(rootfs, exclude=recipe["exclude"], keep_owner=True, out=blob)
    versions = _installed_in(rootfs, recipe["packages"])
    image = build_image(None, [layer], ContainerConfig(cmd=["python3"], env=recipe["env"]),
                        created_by=f"minik8s: debootstrap {recipe['variant']} {recipe['suite']} + "
                                   + " ".join(f"{p}={v}" for p, v in versions.items()))
    image.info.update({"rootfs_bytes": trimmed, "debootstrap_bytes": raw, "installed": versions,
                       "mirror": mirror, "build_seconds": round(time.monotonic() - t0, 1)})
    return image


def _installed_in(rootfs: Path, packages: Iterable[str]) -> dict[str, str]:
    out = subprocess.run(["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W", "-f=${Package} ${Version}\\n",
                          *packages], capture_output=True, text=True, timeout=30, check=False)
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("pause", "3.9", {"v": 1, "entrypoint": ["/catatonit", "-P"]}, _pause_versions, _build_pause),
    Recipe("busybox", "latest", {"v": 1, "cmd": ["sh"]}, _busybox_versions, _build_busybox),
    Recipe("python", "3.11", {"v": 1, "variant": "minbase", "suite": SUITE, "packages": list(PYTHON_PACKAGES),
                              "trim": list(PYTHON_TRIM), "keep": list(PYTHON_KEEP), "exclude": list(PYTHON_EXCLUDE),
                              "compile": ["/usr/lib/python3.11", "/usr/lib/python3/dist-packages"],
                              "env": [PATH_ENV, "LANG=C.UTF-8", "PYTHONUNBUFFERED=1"]},
           _python_versions, _build_python),
)}


def recipe_for(name: str) -> Recipe:
    short = name.split(":", 1)[0].removeprefix("library/")
    if short not in RECIPES:
        raise BaseImageError(f"unknown base image {name!r} (known: {', '.join(r.ref for r in RECIPES.values())})")
    return RECIPES[short]


def cache_key(recipe: Recipe, versions: dict[str, str]) -> str:
    from minik8s.images.oci import machine_arch

    material = canonical_json({"name": recipe.name, "tag": recipe.tag, "recipe": recipe.recipe,
                               "versions": versions, "arch": machine_arch()})
    return hashlib.sha256(material).hexdigest()[:16]


# -------------------------------------------------------------------------------------------------- cache

def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].encode().decode("unicode_escape")
                if point.startswith(prefix) or point + "/" == prefix:
                    found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def _unmount_under(path: Path) -> None:
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def _safe_rmtree(path: Path) -> None:
    """rm -rf that first unmounts anything below ``path`` and refuses if a mount is left."""
    if not path.exists():
        return
    _unmount_under(path)
    if _mounts_under(path):
        raise BaseImageError(f"refusing to remove {path}: something is still mounted below it")
    for dirpath, dirnames, _files in os.walk(path):   # read-only entries of an old cache
        for d in dirnames:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(dirpath, d), 0o755)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o755)
    shutil.rmtree(path)


@contextlib.contextmanager
def _lock(cache: Path, name: str, progress: Progress | None) -> Iterator[None]:
    locks = cache / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, f"{name}: another build of it is running; waiting")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _make_read_only(root: Path) -> None:
    for dirpath, dirnames, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o444)
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o555)


def cached_image(name: str, *, cache: Path | None = None) -> Image | None:
    """The cached image for ``name`` with today's recipe and package versions, or None."""
    recipe = recipe_for(name)
    cache = cache or cache_root()
    entry = cache / f"{recipe.name}_{recipe.tag}-{cache_key(recipe, recipe.versions())}"
    return _load(entry, recipe)


def _load(entry: Path, recipe: Recipe) -> Image | None:
    if not (entry / "index.json").is_file():
        return None
    try:
        images = read_layout(entry)
    except (ImageError, OSError, ValueError, KeyError):
        return None
    image = images.get(recipe.tag)
    if image is not None:
        with contextlib.suppress(OSError, ValueError):
            image.info.update(json.loads((entry / "info.json").read_text()))
    return image


def ensure_image(name: str, *, cache: Path | None = None, progress: Progress | None = print) -> Image:
    """The base image ``name`` from the cache, building it first when missing (safe to call concurrently)."""
    recipe = recipe_for(name)
    cache = (cache or cache_root()).absolute()
    versions = recipe.versions()
    entry = cache / f"{recipe.name}_{recipe.tag}-{cache_key(recipe, versions)}"
    image = _load(entry, recipe)
    if image is not None:
        return image
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BaseImageError(f"cannot create the image cache {cache} ({exc.strerror}); "
                             "set MINIK8S_IMAGE_CACHE to a writable folder") from exc
    with _lock(cache, recipe.name, progress):
        image = _load(entry, recipe)           # built by someone else while we waited
        if image is not None:
            return image
        for stale in cache.glob(f".tmp-{recipe.name}-*"):
            _safe_rmtree(stale)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{recipe.name}-", dir=cache))
        try:
            t0 = time.monotonic()
            _say(progress, f"{recipe.ref}: building into {entry}")
            built = recipe.build(work, recipe.recipe, progress)
            layout = work / "layout"
            info = {"name": recipe.ref, "repo": recipe.repo, "versions": versions, "recipe": recipe.recipe,
                    "digest": built.digest, "size": built.size, **built.info}
            write_layout(layout, {recipe.tag: built}, info=info)
            for layer in built.layers:
                layer.discard()
            _make_read_only(layout)
            os.replace(layout, entry)
            os.chmod(entry, 0o555)
            _say(progress, f"{recipe.ref}: built in {time.monotonic() - t0:.1f}s, "
                           f"{built.size / 1e6:.1f} MB compressed, digest {built.digest}")
        finally:
            _safe_rmtree(work)
    image = _load(entry, recipe)
    if image is None:
        raise BaseImageError(f"{recipe.ref}: the cache entry {entry} is unreadable after the build")
    return image


# --------------------------------------------------------------------------------------------------- seed

def _present(registry: Registry, repo: str, tag: str, image: Image) -> bool:
    if registry.manifest_digest(repo, tag) != image.digest:
        return False
    blobs = [layer.digest for layer in image.layers] + [image.config_digest]
    return all(registry.blob_exists(repo, d) for d in blobs)


def seed(registry_url: str, *, images: Iterable[str] | None = None, cache: Path | None = None,
         progress: Progress | None = print) -> None:
    """Make sure each base image is in the cache (building it if needed) and in the registry at
    ``library/<name>:<tag>``. When both already hold it this costs a few HEAD requests per image."""
    names = list(images) if images is not None else list(RECIPES)
    with Registry(registry_url) as registry:
        try:
            registry.ping()
        except RegistryError as exc:
            raise BaseImageError(str(exc)) from exc
        for name in names:
            recipe = recipe_for(name)
            image = ensure_image(recipe.name, cache=cache, progress=progress)
            if _present(registry, recipe.repo, recipe.tag, image):
                continue
            t0 = time.monotonic()
            result = push_image(registry, recipe.repo, recipe.tag, image)
            _say(progress, f"{recipe.ref}: pushed to {registry_url}/{recipe.repo} in {time.monotonic() - t0:.2f}s "
                           f"({len(result.uploaded)} blobs uploaded, {len(result.skipped)} present)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minik8s.images",
                                     description="Build the cluster's base images and seed a registry.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_seed = sub.add_parser("seed", help="build if needed, then push to the registry")
    p_seed.add_argument("--registry", required=True, help="http://127.0.0.1:PORT")
    p_seed.add_argument("images", nargs="*", help=f"default: {' '.join(RECIPES)}")
    p_build = sub.add_parser("build", help="build into the cache only")
    p_build.add_argument("images", nargs="*")
    p_ls = sub.add_parser("ls", help="show the cache entries for today's recipes")
    p_ls.add_argument("images", nargs="*")
    args = parser.parse_args(argv)
    names = args.images or list(RECIPES)

    def progress(text: str) -> None:
        print(text, flush=True)

    try:
        if args.command == "seed":
            seed(args.registry, images=names, progress=progress)
        elif args.command == "build":
            for name in names:
                ensure_image(name, progress=progress)
        else:
            for name in names:
                image = cached_image(name)
                state = f"{image.digest} {image.size / 1e6:.1f} MB" if image else "not built"
                print(f"{recipe_for(name).ref:16} {state}")
    except (BaseImageError, RegistryError, ImageError, subprocess.SubprocessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
