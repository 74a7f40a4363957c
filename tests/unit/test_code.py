"""Checking function uploads and the reproducible code blob (serverless/code.py)."""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile

import pytest

from serverless.code import CodeError, CodeTree, check_code, code_blob, code_digest, read_blob

MAIN = b"def run(a, b):\n    return a + b\n"


def make_zip(entries: list[tuple[str, bytes]], *, modes: dict[str, int] | None = None,
             date: tuple[int, int, int, int, int, int] = (2020, 1, 1, 0, 0, 0),
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=date)
            info.compress_type = compression
            info.create_system = 3
            info.external_attr = (modes or {}).get(name, stat.S_IFREG | 0o644) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def rejected(data: bytes, code: int = 400, **kwargs: object) -> str:
    with pytest.raises(CodeError) as err:
        check_code(data, **kwargs)  # type: ignore[arg-type]
    assert err.value.code == code, err.value
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_python_file_becomes_main_py() -> None:
    tree = check_code(MAIN, filename="add.py")
    assert tree == CodeTree({"main.py": MAIN})
    assert not tree.has_requirements


def test_a_zip_keeps_its_tree_and_executable_bits() -> None:
    data = make_zip([("main.py", MAIN), ("pkg/", b""), ("pkg/__init__.py", b""), ("pkg/x.py", b"X = 1\n"),
                     ("tool.sh", b"#!/bin/sh\n"), ("requirements.txt", b"humanize\n")],
                    modes={"pkg/": stat.S_IFDIR | 0o755, "tool.sh": stat.S_IFREG | 0o755})
    tree = check_code(data, filename="app.zip")
    assert sorted(tree.files) == ["main.py", "pkg/__init__.py", "pkg/x.py", "requirements.txt", "tool.sh"]
    assert tree.executable == frozenset({"tool.sh"})
    assert tree.has_requirements


def test_a_zip_is_recognized_without_its_name() -> None:
    assert check_code(make_zip([("main.py", MAIN)]), filename="upload").files == {"main.py": MAIN}


@pytest.mark.parametrize(("name", "message"), [
    ("../evil.py", "'..' component"),
    ("pkg/../../evil.py", "'..' component"),
    ("..\\evil.py", "'..' component"),
    ("/etc/cron.d/evil", "absolute path"),
    ("\\windows\\evil.py", "absolute path"),
    ("C:/evil.py", "absolute path"),
])
def test_entries_escaping_the_root_are_rejected(name: str, message: str) -> None:
    assert message in rejected(make_zip([("main.py", MAIN), (name, b"x = 1\n")]))


def test_symlinks_are_rejected() -> None:
    data = make_zip([("main.py", MAIN), ("link", b"/etc/passwd")], modes={"link": stat.S_IFLNK | 0o777})
    assert rejected(data) == "archive entry 'link' is a symlink"


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_device_and_special_files_are_rejected(kind: int) -> None:
    data = make_zip([("main.py", MAIN), ("dev", b"")], modes={"dev": kind | 0o644})
    assert rejected(data) == "archive entry 'dev' is a device or special file"


def test_an_upload_over_the_limit_is_413() -> None:
    assert rejected(b"#" * (8 * 1024 * 1024 + 1), 413, filename="big.py").startswith("the code is 8388609 bytes")
    assert rejected(MAIN, 413, max_bytes=10) == f"the code is {len(MAIN)} bytes, more than the limit of 10"


def test_a_100_mb_zip_bomb_is_413_before_it_is_inflated() -> None:
    bomb = make_zip([("main.py", MAIN), ("zeros.bin", bytes(100 * 1024 * 1024))])
    assert len(bomb) < 1024 * 1024                        # small on the wire
    assert "unpacks to 104857632 bytes, more than the limit of 67108864" in rejected(bomb, 413)


def test_a_forged_small_declared_size_does_not_get_through() -> None:
    bomb = bytearray(make_zip([("main.py", MAIN), ("zeros.bin", bytes(100 * 1024 * 1024))]))
    # Make the central directory claim 10 bytes for zeros.bin (uncompressed size at offset 24).
    at = bomb.index(b"PK\x01\x02", bomb.index(b"PK\x01\x02") + 4)
    bomb[at + 24:at + 28] = struct.pack("<I", 10)
    message = rejected(bytes(bomb), 400)
    assert message.startswith("archive entry 'zeros.bin' cannot be read")


def test_too_many_entries_is_413() -> None:
    data = make_zip([("main.py", MAIN)] + [(f"f{i}.txt", b"") for i in range(5)])
    assert rejected(data, 413, max_entries=5) == "the zip has 6 entries, more than the limit of 5"


def test_main_py_must_be_at_the_root() -> None:
    assert rejected(make_zip([("x.py", b"x = 1\n")])) == "the zip has no main.py at its root"
    assert "found app/main.py" in rejected(make_zip([("app/main.py", MAIN)]))


def test_syntax_errors_name_the_file_and_line() -> None:
    assert rejected(b"x = 1\ny = 2\nz = = 3\n", filename="add.py") == "main.py line 3: invalid syntax"
    data = make_zip([("main.py", MAIN), ("pkg/util.py", b"def f(:\n    pass\n")])
    assert rejected(data).startswith("pkg/util.py line 1: ")


def test_the_entry_point_must_be_a_top_level_def() -> None:
    assert rejected(MAIN, entry_point="handler") == \
        "main.py has no top-level function 'handler' (def handler(...))"
    nested = b"class A:\n    def handler(self):\n        pass\ndef outer():\n    def handler():\n        pass\n"
    assert "no top-level function 'handler'" in rejected(nested, entry_point="handler")
    assert check_code(b"async def handler(event, context):\n    return 1\n", entry_point="handler")


@pytest.mark.parametrize("entry_point", ["not-valid", "1st", "", "class"])
def test_the_entry_point_must_be_an_identifier(entry_point: str) -> None:
    assert rejected(MAIN, entry_point=entry_point) == f"entry point {entry_point!r} is not a Python identifier"


def test_bad_archives_and_empty_uploads() -> None:
    assert rejected(b"") == "the upload is empty"
    assert rejected(b"PK\x03\x04 truncated", filename="app.zip").startswith("not a valid zip archive")
    assert rejected(MAIN, filename="app.zip").startswith("not a valid zip archive")


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_entries_are_rejected() -> None:
    assert rejected(make_zip([("main.py", MAIN), ("main.py", MAIN)])) == "archive entry 'main.py' appears twice"


def test_macos_resource_forks_are_ignored() -> None:
    data = make_zip([("main.py", MAIN), ("__MACOSX/._main.py", b"\x00\x05\x16\x07binary")])
    assert check_code(data).files == {"main.py": MAIN}


def test_the_same_files_give_the_same_digest() -> None:
    files = [("main.py", MAIN), ("pkg/x.py", b"X = 1\n"), ("data/a.txt", b"a")]
    one = check_code(make_zip(files, date=(2020, 1, 1, 0, 0, 0)))
    two = check_code(make_zip(list(reversed(files)), date=(2024, 6, 30, 12, 0, 0),
                              compression=zipfile.ZIP_STORED))
    assert code_digest(code_blob(one)) == code_digest(code_blob(two))
    # A single .py upload and a zip holding only that main.py are the same code.
    assert code_blob(check_code(MAIN, filename="add.py")) == code_blob(check_code(make_zip([("main.py", MAIN)])))
    changed = check_code(make_zip([("main.py", MAIN), ("pkg/x.py", b"X = 2\n"), ("data/a.txt", b"a")]))
    assert code_digest(code_blob(changed)) != code_digest(code_blob(one))


def test_the_blob_is_a_plain_reproducible_tar_that_reads_back() -> None:
    tree = check_code(make_zip([("main.py", MAIN), ("pkg/x.py", b"X = 1\n"), ("run.sh", b"#!/bin/sh\n")],
                               modes={"run.sh": stat.S_IFREG | 0o755}))
    blob = code_blob(tree)
    assert blob[4:8] == b"\0\0\0\0"                       # gzip header mtime 0
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["main.py", "pkg", "pkg/x.py", "run.sh"]
    assert {(m.mtime, m.uid, m.gid) for m in members} == {(0, 0, 0)}
    assert {m.name: stat.S_IMODE(m.mode) for m in members} == {"main.py": 0o644, "pkg": 0o755,
                                                               "pkg/x.py": 0o644, "run.sh": 0o755}
    assert read_blob(blob) == tree
    assert code_digest(blob).startswith("sha256:") and len(code_digest(blob)) == 71


def test_read_blob_rejects_what_is_not_a_code_blob() -> None:
    with pytest.raises(CodeError, match="not a code blob"):
        read_blob(b"not gzip at all")
