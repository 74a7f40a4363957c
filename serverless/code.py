"""Checking a function's upload and turning it into the reproducible code blob.

::

    bytes of add.py ─┐                    CodeTree                      code blob (tar.gz)
                     ├─ check_code() ──▶ {"main.py": b"…",   ── code_blob() ──▶ sorted names, mtime 0,
    bytes of app.zip ┘   (CodeError)      "pkg/x.py": b"…"}                     uid/gid 0, 0644/0755
                                                            ◀── read_blob() ──   code_digest(): sha256:…

A single ``.py`` file becomes ``main.py``. A zip is checked entry by entry before anything is kept:
sizes (declared and actually read), entry count, absolute paths, ``..`` components, symlinks and
device files, ``main.py`` at the root, every ``.py`` compiles, and ``main.py`` defines the entry point
at top level. The blob's paths are relative to the code root (``main.py``, ``pkg/x.py``); the same
files give the same bytes whatever the zip's order, timestamps or owners.
"""

from __future__ import annotations

import ast
import hashlib
import io
import keyword
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass

from minik8s.images.layers import Entry, layer_from_entries

MAX_BYTES = 8 * 1024 * 1024
MAX_UNPACKED = 64 * 1024 * 1024
MAX_ENTRIES = 2000
REQUIREMENTS = "requirements.txt"
_CHUNK = 64 * 1024
# Zip junk that macOS's archiver adds: resource forks (`__MACOSX/._main.py` is not Python).
_IGNORED_DIRS = ("__MACOSX",)
_DRIVE = re.compile(r"^[A-Za-z]:")


class CodeError(Exception):
    """The upload is not acceptable; the message is one line. ``code`` is 400, or 413 when too large."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CodeTree:
    """A checked function: ``files`` maps a relative POSIX path to its content; ``executable`` names
    the files with an executable bit (0755 in the blob; every other file is 0644)."""

    files: dict[str, bytes]
    executable: frozenset[str] = frozenset()

    @property
    def has_requirements(self) -> bool:
        return REQUIREMENTS in self.files

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())


# ------------------------------------------------------------------------------------------------ check

def _safe_path(name: str) -> str:
    """The normalized relative path of an archive member, or CodeError for one that escapes the root."""
    if "\x00" in name:
        raise CodeError(400, f"archive entry {name!r} has a NUL character in its name")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise CodeError(400, f"archive entry {name!r} has an absolute path")
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]
    if ".." in parts:
        raise CodeError(400, f"archive entry {name!r} has a '..' component (it would land outside the code)")
    return "/".join(parts)


def _check_python(tree: dict[str, bytes], entry_point: str) -> None:
    for path in sorted(tree):
        if not path.endswith(".py"):
            continue
        try:
            compile(tree[path], path, "exec", dont_inherit=True)
        except SyntaxError as exc:
            where = f" line {exc.lineno}" if exc.lineno else ""
            raise CodeError(400, f"{path}{where}: {exc.msg}") from None
        except ValueError as exc:                     # e.g. NUL bytes in the source
            raise CodeError(400, f"{path}: {exc}") from None
    module = ast.parse(tree["main.py"], "main.py")
    defined = {node.name for node in module.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    if entry_point not in defined:
        raise CodeError(400, f"main.py has no top-level function {entry_point!r} (def {entry_point}(...))")


def _read_zip(data: bytes, *, max_unpacked: int, max_entries: int) -> CodeTree:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise CodeError(400, f"not a valid zip archive: {exc}") from None
    infos = archive.infolist()
    if len(infos) > max_entries:
        raise CodeError(413, f"the zip has {len(infos)} entries, more than the limit of {max_entries}")
    declared = sum(info.file_size for info in infos)
    if declared > max_unpacked:
        raise CodeError(413, f"the zip unpacks to {declared} bytes, more than the limit of {max_unpacked}")
    files: dict[str, bytes] = {}
    executable: set[str] = set()
    budget = max_unpacked
    for info in infos:
        path = _safe_path(info.filename)
        if not path or path.split("/")[0] in _IGNORED_DIRS:
            continue
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise CodeError(400, f"archive entry {info.filename!r} is a symlink")
        if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise CodeError(400, f"archive entry {info.filename!r} is a device or special file")
        if info.flag_bits & 0x1:
            raise CodeError(400, f"archive entry {info.filename!r} is encrypted")
        if info.is_dir() or stat.S_ISDIR(mode):
            continue                          # folders come back from the files' paths; empty ones are dropped
        if path in files:
            raise CodeError(400, f"archive entry {path!r} appears twice")
        # Read in chunks against what is left of the budget: a forged header cannot make us inflate
        # more than max_unpacked in all.
        out = bytearray()
        try:
            with archive.open(info) as member:
                while chunk := member.read(_CHUNK):
                    out += chunk
                    if len(out) > budget:
                        raise CodeError(413, f"the zip unpacks to more than the limit of {max_unpacked} bytes")
        except CodeError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError, OSError) as exc:
            raise CodeError(400, f"archive entry {info.filename!r} cannot be read: {exc}") from None
        budget -= len(out)
        files[path] = bytes(out)
        if mode & 0o111:
            executable.add(path)
    for path in files:
        parents = path.split("/")[:-1]
        for i in range(1, len(parents) + 1):
            if "/".join(parents[:i]) in files:
                raise CodeError(400, f"archive entry {'/'.join(parents[:i])!r} is both a file and a folder")
    if "main.py" not in files:
        nested = sorted(p for p in files if p.endswith("/main.py"))
        hint = f" (found {nested[0]}: zip the folder's contents, not the folder)" if nested else ""
        raise CodeError(400, f"the zip has no main.py at its root{hint}")
    return CodeTree(files, frozenset(executable))


def _is_zip(data: bytes) -> bool:
    return data.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def check_code(data: bytes, *, filename: str = "main.py", entry_point: str = "run", max_bytes: int = MAX_BYTES,
               max_unpacked: int = MAX_UNPACKED, max_entries: int = MAX_ENTRIES) -> CodeTree:
    """Check an upload (a ``.py`` file's bytes or a zip) and return its tree, or raise :class:`CodeError`.

    A zip is recognized by its signature (or ``filename`` ending in ``.zip``); anything else is one
    Python file that becomes ``main.py``.
    """
    if not entry_point.isidentifier() or keyword.iskeyword(entry_point):
        raise CodeError(400, f"entry point {entry_point!r} is not a Python identifier")
    if len(data) > max_bytes:
        raise CodeError(413, f"the code is {len(data)} bytes, more than the limit of {max_bytes}")
    if not data:
        raise CodeError(400, "the upload is empty")
    # The zip signature decides (Python source cannot start with it), so a zip sent under the default
    # name is still read as a zip; a name ending in .zip that is not one is an error, not Python.
    if filename.lower().endswith(".zip") or _is_zip(data):
        tree = _read_zip(data, max_unpacked=max_unpacked, max_entries=max_entries)
    else:
        tree = CodeTree({"main.py": data})
    _check_python(tree.files, entry_point)
    return tree


# ------------------------------------------------------------------------------------------------- blob

def tree_entries(tree: CodeTree, prefix: str = "") -> list[Entry]:
    """Layer entries for the tree under ``prefix`` (``opt/minik8s/function``), its folders included."""
    base = prefix.strip("/")
    dirs: set[str] = set()
    entries: list[Entry] = []
    for path, data in tree.files.items():
        full = f"{base}/{path}" if base else path
        parts = full.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        entries.append(Entry.file(full, data, mode=0o755 if path in tree.executable else 0o644))
    if base:
        dirs.add(base)
    return [Entry.dir(d) for d in dirs] + entries


def code_blob(tree: CodeTree) -> bytes:
    """The reproducible gzip'd tar of ``tree``: names sorted, mtime 0, uid/gid 0, folders included."""
    layer = layer_from_entries(tree_entries(tree), spill_bytes=1 << 62)
    assert layer.data is not None
    return layer.data


def code_digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def read_blob(blob: bytes) -> CodeTree:
    """The tree stored in a code blob; CodeError(400) for a blob that is not one."""
    files: dict[str, bytes] = {}
    executable: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise CodeError(400, f"code blob entry {member.name!r} is not a regular file")
                path = _safe_path(member.name)
                f = tar.extractfile(member)
                assert f is not None
                files[path] = f.read()
                if member.mode & 0o111:
                    executable.add(path)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise CodeError(400, f"not a code blob: {exc}") from None
    if "main.py" not in files:
        raise CodeError(400, "not a code blob: no main.py")
    return CodeTree(files, frozenset(executable))
