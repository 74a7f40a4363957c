"""Reproducible image layers: a sorted tar with fixed metadata, gzip'd with a fixed header.

The same input always gives the same bytes, so the same digests::

    layer = layer_from_entries([Entry.dir("app"), Entry.file("app/main.py", b"print(1)\\n", mode=0o644)])
    layer = layer_from_dir(Path("rootfs"), exclude=("dev/*", "proc/*"))
    layer.digest     # sha256 of the gzip'd bytes: the blob digest in the manifest
    layer.diff_id    # sha256 of the tar: what the image config's rootfs.diff_ids lists

Rules of the tar: entries sorted by path components (parents first), uid/gid 0 (unless the tree's
owners are kept on purpose), empty uname/gname, mtime ``MTIME`` on every entry, PAX format. Rules of
the gzip stream: header mtime 0, no file name. Small layers stay in memory; larger ones spill to a
temporary file (or go straight to ``out=``).
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from minik8s.images.media import OCI_LAYER_GZIP

MTIME = 0                      # every entry's modification time
SPILL_BYTES = 32 * 1024 * 1024  # above this a layer's compressed bytes go to a temporary file
CHUNK = 1024 * 1024

EntryKind = Literal["file", "dir", "symlink", "hardlink"]


class LayerError(Exception):
    """A layer cannot be built from this input (one line)."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One tar entry. ``path`` is relative (no leading ``/``); ``target`` is a link's target.

    A file's content is ``data`` or, for big files, ``source`` (read when the tar is written).
    """

    path: str
    kind: EntryKind = "file"
    mode: int = 0o644
    data: bytes = b""
    source: Path | None = None
    target: str = ""
    uid: int = 0
    gid: int = 0

    @staticmethod
    def file(path: str, data: bytes, mode: int = 0o644) -> Entry:
        return Entry(path, "file", mode, data=data)

    @staticmethod
    def dir(path: str, mode: int = 0o755) -> Entry:
        return Entry(path, "dir", mode)

    @staticmethod
    def symlink(path: str, target: str) -> Entry:
        return Entry(path, "symlink", 0o777, target=target)

    @staticmethod
    def hardlink(path: str, target: str) -> Entry:
        return Entry(path, "hardlink", 0o644, target=target)


@dataclass
class Layer:
    """A built (or referenced) layer blob and its descriptor fields.

    The bytes are in ``data``, or in the file ``path``; a layer that only lives in a registry has neither.
    """

    digest: str
    size: int
    diff_id: str
    media_type: str = OCI_LAYER_GZIP
    data: bytes | None = None
    path: Path | None = None
    uncompressed_size: int = 0
    _tmp: bool = field(default=False, repr=False)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    def open(self) -> BinaryIO:
        if self.data is not None:
            return io.BytesIO(self.data)
        if self.path is not None:
            return open(self.path, "rb")
        raise LayerError(f"layer {self.digest} has no local content")

    def read(self) -> bytes:
        with self.open() as f:
            return f.read()

    def discard(self) -> None:
        """Remove a temporary spill file (never a file the caller named)."""
        if self._tmp and self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def _norm(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise LayerError(f"bad path in layer: {path!r}")
    return "/".join(parts)


def _sort_key(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


class _HashWriter:
    """A write-only file object that hashes and counts what passes through it to ``sink``."""

    def __init__(self, sink: BinaryIO | _HashWriter) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        pass


class _Spill:
    """Bytes in memory until ``limit``, then a temporary file (or a named file from the start)."""

    def __init__(self, limit: int, out: Path | None) -> None:
        self.limit = limit
        self.path: Path | None = None
        self.tmp = False
        self.buf: BinaryIO = io.BytesIO()
        if out is not None:
            self.path = out
            self.buf = open(out, "wb")  # noqa: SIM115 - closed by finish()

    def write(self, data: bytes) -> int:
        self.buf.write(data)
        if self.path is None and self.buf.tell() > self.limit:
            fd, name = tempfile.mkstemp(prefix="mk8s-layer-", suffix=".tar.gz")
            f = os.fdopen(fd, "wb")
            f.write(self.buf.getvalue())  # type: ignore[attr-defined]
            self.buf, self.path, self.tmp = f, Path(name), True
        return len(data)

    def flush(self) -> None:
        pass

    def finish(self) -> bytes | None:
        if self.path is None:
            return self.buf.getvalue()  # type: ignore[attr-defined, no-any-return]
        self.buf.close()
        return None


def _tarinfo(entry: Entry, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mtime = MTIME
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mode = entry.mode & 0o7777
    if entry.kind == "file":
        info.type, info.size = tarfile.REGTYPE, size
    elif entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
    elif entry.kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, _norm(entry.target)
    else:
        raise LayerError(f"unknown entry kind {entry.kind!r} for {entry.path}")
    return info


def write_tar(entries: Iterable[Entry], fileobj: BinaryIO | _HashWriter) -> None:
    """Write ``entries`` as a reproducible tar (sorted, fixed metadata) to ``fileobj``."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = _norm(entry.path)
        if path in by_path:
            raise LayerError(f"duplicate path in layer: {path}")
        by_path[path] = entry if entry.path == path else Entry(path, entry.kind, entry.mode, entry.data,
                                                                entry.source, entry.target, entry.uid, entry.gid)
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in sorted(by_path, key=_sort_key):
            entry = by_path[path]
            if entry.kind == "file" and entry.source is not None:
                size = entry.source.stat().st_size
                with open(entry.source, "rb") as f:
                    tar.addfile(_tarinfo(entry, size), f)
            elif entry.kind == "file":
                tar.addfile(_tarinfo(entry, len(entry.data)), io.BytesIO(entry.data))
            else:
                tar.addfile(_tarinfo(entry, 0))


def layer_from_entries(entries: Iterable[Entry], *, compresslevel: int = 6, out: Path | None = None,
                       spill_bytes: int = SPILL_BYTES) -> Layer:
    """Build a gzip'd tar layer. With ``out`` the blob is written there; otherwise it stays in memory
    (spilling to a temporary file above ``spill_bytes``; call ``Layer.discard()`` when done)."""
    spill = _Spill(spill_bytes, out)
    compressed = _HashWriter(spill)  # type: ignore[arg-type]
    try:
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0,  # type: ignore[arg-type]
                           compresslevel=compresslevel) as gz:
            plain = _HashWriter(gz)  # type: ignore[arg-type]
            write_tar(entries, plain)
    except BaseException:
        spill.finish()
        if spill.tmp and spill.path is not None:
            spill.path.unlink(missing_ok=True)
        raise
    data = spill.finish()
    return Layer(digest="sha256:" + compressed.hash.hexdigest(), size=compressed.size,
                 diff_id="sha256:" + plain.hash.hexdigest(), data=data, path=spill.path,
                 uncompressed_size=plain.size, _tmp=spill.tmp)


def _excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def entries_from_dir(root: Path, *, prefix: str = "", exclude: tuple[str, ...] = (),
                     keep_owner: bool = False) -> Iterator[Entry]:
    """Entries for every file, directory and link under ``root`` (not ``root`` itself).

    ``prefix`` is prepended to each path in the layer; ``exclude`` holds fnmatch patterns on the
    relative path (``dev/*``); a second name of a hard-linked file becomes a hardlink entry; device
    nodes, fifos and sockets are left out. uid/gid are 0 unless ``keep_owner``.
    """
    root = Path(root)
    if not root.is_dir():
        raise LayerError(f"not a directory: {root}")
    seen: dict[tuple[int, int], str] = {}
    found: list[tuple[str, os.stat_result, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            full = base / name
            rel = full.relative_to(root).as_posix()
            if _excluded(rel, exclude):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            found.append((rel, full.lstat(), full))
    found.sort(key=lambda item: _sort_key(item[0]))
    pre = _norm(prefix) + "/" if prefix.strip("/") else ""
    for rel, st, full in found:
        path = pre + rel
        uid, gid = (st.st_uid, st.st_gid) if keep_owner else (0, 0)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            yield Entry(path, "dir", mode, uid=uid, gid=gid)
        elif stat.S_ISLNK(st.st_mode):
            yield Entry(path, "symlink", 0o777, target=os.readlink(full), uid=uid, gid=gid)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                yield Entry(path, "hardlink", mode, target=seen[key], uid=uid, gid=gid)
                continue
            seen[key] = path
            yield Entry(path, "file", mode, source=full, uid=uid, gid=gid)


def layer_from_dir(root: Path, *, prefix: str = "", exclude: tuple[str, ...] = (), keep_owner: bool = False,
                   compresslevel: int = 6, out: Path | None = None) -> Layer:
    """A layer holding the tree under ``root`` (see :func:`entries_from_dir`)."""
    return layer_from_entries(entries_from_dir(root, prefix=prefix, exclude=exclude, keep_owner=keep_owner),
                              compresslevel=compresslevel, out=out)


def copy_layer_to(layer: Layer, dest: Path) -> None:
    """Write a layer's bytes to ``dest``."""
    with layer.open() as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)
