"""The cluster's own images: built into a cache, seeded into a real registry, and run (by chroot) to prove they work.

pause and busybox are built into a temporary cache (under a second). python:3.11 uses the machine's real
cache (``$MINIK8S_IMAGE_CACHE``, default /var/cache/minik8s/images), like ``make up``: a fresh machine
debootstraps it once here (about 2 minutes on a good mirror), later runs find it built.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minik8s.images import base
from minik8s.images.build import pull_image
from minik8s.images.media import OCI_MANIFEST
from minik8s.images.oci import Image
from minik8s.images.registry import Registry
from minik8s.testing import RegistryProcess


@pytest.fixture(scope="module")
def registry_proc() -> Iterator[RegistryProcess]:
    with RegistryProcess() as proc:
        yield proc


def extract(image: Image, dest: Path) -> dict[str, tarfile.TarInfo]:
    """Unpack the image's layers into ``dest`` (as the runtime would); returns the members by name."""
    members: dict[str, tarfile.TarInfo] = {}
    for layer in image.layers:
        with layer.open() as f, tarfile.open(fileobj=f, mode="r|gz") as tar:
            for member in tar:
                members[member.name] = member
                tar.extract(member, dest, filter="fully_trusted")
    return members


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def chroot(root: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"})


def test_pause_and_busybox_build_seed_and_run(registry_proc: RegistryProcess, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    messages: list[str] = []
    t0 = time.monotonic()
    base.seed(registry_proc.url, images=["pause", "busybox"], cache=cache, progress=messages.append)
    first = time.monotonic() - t0
    assert any(m.startswith("busybox:latest: pushed") for m in messages), messages

    with Registry(registry_proc.url) as reg:
        pause = pull_image(reg, "library/pause", "3.9")
        busybox = pull_image(reg, "library/busybox", "latest")
        assert pause.media_type == busybox.media_type == OCI_MANIFEST
        assert pause.config["config"]["Entrypoint"] == ["/catatonit", "-P"]
        assert busybox.config["config"]["Cmd"] == ["sh"]
        cached_pause = base.cached_image("pause", cache=cache)
        cached_busybox = base.cached_image("busybox", cache=cache)
        assert cached_pause is not None and cached_busybox is not None
        assert (pause.digest, busybox.digest) == (cached_pause.digest, cached_busybox.digest)

    # seeding again is HEAD checks only: nothing built, nothing pushed
    messages.clear()
    t0 = time.monotonic()
    base.seed(registry_proc.url, images=["pause", "busybox"], cache=cache, progress=messages.append)
    again = time.monotonic() - t0
    assert messages == [] and again < 2.0, (messages, again, first)

    root = tmp_path / "busybox-root"
    members = extract(cached_busybox, root)
    assert members["tmp"].mode == 0o1777 and (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
    assert members["usr/bin/wget"].issym()
    assert "root:x:0:0" in (root / "etc" / "passwd").read_text()
    out = chroot(root, "/bin/sh", "-c", "echo hello > /tmp/x && cat /tmp/x && id -un && ls /usr/bin | wc -l")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[:2] == ["hello", "root"] and int(lines[2]) > 50

    pause_root = tmp_path / "pause-root"
    extract(cached_pause, pause_root)
    version = chroot(pause_root, "/catatonit", "--version")
    assert version.returncode == 0 and "catatonit" in (version.stdout + version.stderr)


def test_a_rebuild_gives_the_same_digests(tmp_path: Path) -> None:
    one = base.ensure_image("busybox", cache=tmp_path / "a", progress=None)
    two = base.ensure_image("busybox", cache=tmp_path / "b", progress=None)
    assert one.digest == two.digest and one.layers[0].digest == two.layers[0].digest


@pytest.mark.timeout(1200)
def test_python_base_image(registry_proc: RegistryProcess, tmp_path: Path) -> None:
    t0 = time.monotonic()
    base.seed(registry_proc.url, images=["python:3.11"], progress=print)
    took = time.monotonic() - t0
    image = base.cached_image("python")
    assert image is not None
    size_mb = image.size / 1e6
    print(f"python:3.11 {size_mb:.1f} MB compressed, rootfs {image.info.get('rootfs_bytes', 0) / 1e6:.0f} MB, "
          f"seed took {took:.1f}s")
    assert size_mb < 80, f"python:3.11 is {size_mb:.1f} MB compressed: trim it"

    with Registry(registry_proc.url) as reg:
        remote = pull_image(reg, "library/python", "3.11")
        assert remote.digest == image.digest
        assert remote.config["config"]["Cmd"] == ["python3"]
        assert "LANG=C.UTF-8" in remote.config["config"]["Env"]

    root = tmp_path / "python-root"
    members = extract(image, root)
    for must in ("usr/bin/python3", "usr/bin/gunicorn", "usr/lib/python3/dist-packages/flask/__init__.py"):
        assert must in members, must
    for trimmed in ("usr/share/doc/python3", "usr/share/man/man1", "var/lib/apt/lists/lock"):
        assert trimmed not in members, trimmed
    assert not any(name.startswith(("dev/", "proc/")) for name in members)
    out = chroot(root, "python3", "-c", "import sys, flask, gunicorn; print(sys.version_info[:2], flask.__version__)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("(3, 11)")
    assert chroot(root, "gunicorn", "--version").returncode == 0
    # the byte code is hash-based, so imports use it whatever the files' mtimes
    pyc = next(p for p in (root / "usr/lib/python3/dist-packages/flask/__pycache__").iterdir())
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags & 0b1, f"{pyc.name} is not a hash-based .pyc"


def test_python_cache_entry_layout() -> None:
    """The cache entry is an OCI image layout with read-only blobs (after the test above built it)."""
    image = base.ensure_image("python", progress=print)
    layer_path = image.layers[0].path
    assert layer_path is not None
    entry = layer_path.parents[2]
    assert entry.parent == base.cache_root().absolute() and entry.name.startswith("python_3.11-")
    assert json.loads((entry / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert layer_path.stat().st_mode & 0o222 == 0
    with open(layer_path, "rb") as f:
        head = f.read(10)
    assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\0\0\0\0"
