"""Image building without a registry: reproducible layers, configs and manifests, layouts, names, recipes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest

from minik8s.images import base
from minik8s.images.build import build_image
from minik8s.images.layers import Entry, LayerError, layer_from_dir, layer_from_entries
from minik8s.images.media import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST
from minik8s.images.oci import ContainerConfig, Image, ImageError, machine_arch, read_layout, write_layout
from minik8s.images.reference import ImageRef, ReferenceError


def sample_entries() -> list[Entry]:
    return [
        Entry.dir("app"),
        Entry.file("app/main.py", b"print('hi')\n", mode=0o644),
        Entry.file("app/run.sh", b"#!/bin/sh\nexec python3 /app/main.py\n", mode=0o755),
        Entry.dir("tmp", 0o1777),
        Entry.symlink("bin/sh", "/bin/busybox"),
        Entry.dir("bin"),
        Entry.hardlink("app/copy.py", "app/main.py"),
        Entry.file("a-b", b"x"),
    ]


def tar_members(layer_bytes: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer_bytes)), mode="r:") as tar:
        return tar.getmembers()


def test_same_entries_give_the_same_digests_whatever_their_order() -> None:
    one = layer_from_entries(sample_entries())
    two = layer_from_entries(list(reversed(sample_entries())))
    assert (one.digest, one.diff_id, one.size) == (two.digest, two.diff_id, two.size)
    assert one.data is not None and one.data == two.data
    assert one.digest == "sha256:" + hashlib.sha256(one.data).hexdigest()
    assert one.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(one.data)).hexdigest()
    assert one.media_type == OCI_LAYER_GZIP
    assert layer_from_entries([*sample_entries(), Entry.file("z", b"")]).digest != one.digest


def test_gzip_header_has_no_time_and_no_name() -> None:
    data = layer_from_entries(sample_entries()).data
    assert data is not None
    assert data[:3] == b"\x1f\x8b\x08"
    assert data[3] & 0x08 == 0             # FNAME flag clear
    assert data[4:8] == b"\x00\x00\x00\x00"  # MTIME 0


def test_tar_entries_are_sorted_with_fixed_metadata() -> None:
    layer = layer_from_entries(sample_entries())
    assert layer.data is not None
    members = tar_members(layer.data)
    names = [m.name for m in members]
    assert names == ["a-b", "app", "app/copy.py", "app/main.py", "app/run.sh", "bin", "bin/sh", "tmp"]
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
    by_name = {m.name: m for m in members}
    assert by_name["tmp"].isdir() and by_name["tmp"].mode == 0o1777
    assert by_name["app/run.sh"].mode == 0o755
    assert by_name["bin/sh"].issym() and by_name["bin/sh"].linkname == "/bin/busybox"
    assert by_name["app/copy.py"].islnk() and by_name["app/copy.py"].linkname == "app/main.py"
    assert layer.uncompressed_size == len(gzip.decompress(layer.data))


def test_bad_entries_are_refused() -> None:
    with pytest.raises(LayerError, match="duplicate"):
        layer_from_entries([Entry.file("a", b"1"), Entry.file("./a", b"2")])
    with pytest.raises(LayerError, match="bad path"):
        layer_from_entries([Entry.file("../etc/passwd", b"")])


def make_tree(root: Path) -> None:
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(b"\x7fELF fake")
    os.chmod(root / "usr" / "bin" / "tool", 0o4755)
    os.link(root / "usr" / "bin" / "tool", root / "usr" / "bin" / "tool2")
    (root / "bin").symlink_to("usr/bin")
    (root / "dev").mkdir()
    (root / "dev" / "junk").write_text("left out")
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("x\n")


def test_a_directory_tree_gives_the_same_layer_whatever_the_mtimes(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    make_tree(one)
    make_tree(two)
    for path in two.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    a = layer_from_dir(one, exclude=("dev/*",))
    b = layer_from_dir(two, exclude=("dev/*",))
    assert (a.digest, a.diff_id) == (b.digest, b.diff_id)
    assert a.data is not None
    members = {m.name: m for m in tar_members(a.data)}
    assert "dev" in members and "dev/junk" not in members
    assert members["usr/bin/tool"].mode == 0o4755 and members["usr/bin/tool"].isfile()
    assert members["usr/bin/tool2"].islnk() and members["usr/bin/tool2"].linkname == "usr/bin/tool"
    assert members["bin"].issym()
    prefixed = layer_from_dir(one, prefix="/rootfs/", exclude=("dev/*",))
    assert prefixed.data is not None
    assert {m.name for m in tar_members(prefixed.data)} == {"rootfs/" + n for n in members}


def test_large_layers_spill_to_a_temporary_file(tmp_path: Path) -> None:
    entries = [Entry.file(f"f{i}", os.urandom(20_000)) for i in range(10)]
    small = layer_from_entries(entries)
    big = layer_from_entries(entries, spill_bytes=50_000)
    assert big.data is None and big.path is not None and big.path.exists()
    assert big.read() == small.data and big.digest == small.digest
    big.discard()
    assert big.path is None
    out = tmp_path / "blob"
    named = layer_from_entries(entries, out=out)
    assert named.path == out and out.read_bytes() == small.data
    named.discard()
    assert out.exists()  # a file the caller named is never removed


def test_config_and_manifest_shapes() -> None:
    layer = layer_from_entries(sample_entries())
    image = build_image(None, [layer], ContainerConfig(entrypoint=["/app/run.sh"], cmd=["--port", "8080"],
                                                       env=["PATH=/bin", "A=1"], working_dir="/app",
                                                       exposed_ports=["8080"]), created_by="test")
    manifest, config = image.manifest, image.config
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"] == {"mediaType": OCI_CONFIG, "digest": image.config_digest,
                                  "size": len(image.config_bytes)}
    assert manifest["layers"] == [{"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}]
    assert config["os"] == "linux" and config["architecture"] == machine_arch()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer.diff_id]}
    assert config["config"] == {"Entrypoint": ["/app/run.sh"], "Cmd": ["--port", "8080"], "Env": ["PATH=/bin", "A=1"],
                                "WorkingDir": "/app", "ExposedPorts": {"8080/tcp": {}}}
    assert [h["created_by"] for h in config["history"]] == ["test"]
    assert json.dumps(json.loads(image.manifest_bytes), sort_keys=True, separators=(",", ":")).encode() \
        == image.manifest_bytes
    image.check()
    again = build_image(None, [layer_from_entries(sample_entries())],
                        ContainerConfig(entrypoint=["/app/run.sh"], cmd=["--port", "8080"], env=["PATH=/bin", "A=1"],
                                        working_dir="/app", exposed_ports=["8080"]), created_by="test")
    assert again.digest == image.digest


def test_an_image_on_a_base_keeps_the_base_layers_and_merges_its_config() -> None:
    base_layer = layer_from_entries([Entry.file("bin/python3", b"py")])
    base_img = build_image(None, [base_layer], ContainerConfig(cmd=["python3"], env=["PATH=/usr/bin", "LANG=C"]))
    fn_layer = layer_from_entries([Entry.file("app/handler.py", b"def main(): pass\n")])
    image = build_image(base_img, [fn_layer], ContainerConfig(entrypoint=["python3", "/app/handler.py"],
                                                             env=["LANG=C.UTF-8", "FN=1"]))
    assert [layer.digest for layer in image.layers] == [base_layer.digest, fn_layer.digest]
    assert image.base_layers == 1
    cfg = image.config
    assert cfg["rootfs"]["diff_ids"] == [base_layer.diff_id, fn_layer.diff_id]
    assert cfg["config"]["Env"] == ["PATH=/usr/bin", "LANG=C.UTF-8", "FN=1"]
    assert cfg["config"]["Entrypoint"] == ["python3", "/app/handler.py"]
    assert "Cmd" not in cfg["config"]   # a new entrypoint drops the base's cmd, as a Dockerfile does
    assert len(cfg["history"]) == 2


def test_image_check_finds_disagreements() -> None:
    layer = layer_from_entries([Entry.file("a", b"1")])
    image = build_image(None, [layer])
    broken = Image(image.manifest_bytes, image.config_bytes + b" ", image.layers)
    with pytest.raises(ImageError, match="config digest"):
        broken.check()
    with pytest.raises(ImageError, match="layers"):
        Image(image.manifest_bytes, image.config_bytes, []).check()


def test_layout_round_trip(tmp_path: Path) -> None:
    layer = layer_from_entries(sample_entries())
    image = build_image(None, [layer], ContainerConfig(cmd=["sh"]))
    write_layout(tmp_path / "layout", {"1.0": image}, info={"note": "x"})
    assert json.loads((tmp_path / "layout" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1.0"
    loaded = read_layout(tmp_path / "layout")["1.0"]
    assert loaded.digest == image.digest and loaded.config_bytes == image.config_bytes
    assert loaded.layers[0].path is not None and loaded.layers[0].read() == layer.data
    assert loaded.layers[0].diff_id == layer.diff_id


@pytest.mark.parametrize(("name", "repo", "tag", "digest", "host"), [
    ("busybox", "library/busybox", "latest", "", "docker.io"),
    ("python:3.11", "library/python", "3.11", "", "docker.io"),
    ("docker.io/library/pause:3.9", "library/pause", "3.9", "", "docker.io"),
    ("index.docker.io/me/app:v1", "me/app", "v1", "", "docker.io"),
    ("ghcr.io/org/sub/app:1.2.3", "org/sub/app", "1.2.3", "", "ghcr.io"),
    ("localhost:15000/fn/hello", "fn/hello", "latest", "", "localhost:15000"),
    ("me/app@sha256:" + "a" * 64, "me/app", "", "sha256:" + "a" * 64, "docker.io"),
])
def test_image_names(name: str, repo: str, tag: str, digest: str, host: str) -> None:
    ref = ImageRef.parse(name)
    assert (ref.repo, ref.tag, ref.digest, ref.host) == (repo, tag, digest, host)
    assert ref.ref == (digest or tag)


@pytest.mark.parametrize("name", ["", "Busybox", "a:b:c", "x@sha256:12", "a//b", "app:" + "t" * 200])
def test_bad_image_names(name: str) -> None:
    with pytest.raises(ReferenceError):
        ImageRef.parse(name)


# ------------------------------------------------------------------------------------------- base recipes

def test_busybox_entries_have_applet_links_a_writable_tmp_and_users(tmp_path: Path) -> None:
    binary = tmp_path / "busybox"
    binary.write_bytes(b"fake")
    entries = {e.path: e for e in base.busybox_entries(binary, ["bin/sh", "usr/bin/wget", "bin/busybox", "sbin/init"])}
    assert entries["tmp"].kind == "dir" and entries["tmp"].mode == 0o1777
    assert entries["bin/busybox"].source == binary and entries["bin/busybox"].mode == 0o755
    for applet in ("bin/sh", "usr/bin/wget", "sbin/init"):
        assert entries[applet].kind == "symlink" and entries[applet].target == "/bin/busybox"
    assert b"root:x:0:0" in entries["etc/passwd"].data and b"nobody:x:65534" in entries["etc/passwd"].data
    assert b"nobody:x:65534:" in entries["etc/group"].data
    layer_from_entries(entries.values())  # builds


def test_cache_key_follows_recipe_and_package_versions() -> None:
    recipe = base.RECIPES["busybox"]
    one = base.cache_key(recipe, {"busybox-static": "1.35"})
    assert one == base.cache_key(recipe, {"busybox-static": "1.35"})
    assert one != base.cache_key(recipe, {"busybox-static": "1.36"})
    changed = base.Recipe(recipe.name, recipe.tag, {**recipe.recipe, "v": 99}, recipe.versions, recipe.build)
    assert one != base.cache_key(changed, {"busybox-static": "1.35"})


def test_trim_keeps_what_it_must(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for rel in ("usr/share/doc/x/copyright", "usr/share/locale/de/LC_MESSAGES/a.mo", "usr/share/locale/locale.alias",
                "usr/lib/locale/C.utf8/LC_CTYPE", "usr/lib/python3/dist-packages/flask/__pycache__/a.pyc",
                "usr/lib/python3/dist-packages/flask/app.py", "var/lib/apt/lists/deb_x", "var/log/dpkg.log",
                "etc/hostname", "etc/resolv.conf"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    base.trim_rootfs(root)
    left = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert left == {"usr/share/locale/locale.alias", "usr/lib/locale/C.utf8/LC_CTYPE",
                    "usr/lib/python3/dist-packages/flask/app.py", "etc/hostname", "etc/resolv.conf"}
    assert (root / "etc/resolv.conf").read_text() == ""


def test_concurrent_builds_of_one_image_build_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    started = threading.Event()

    def slow_build(_work: Path, _recipe: dict, _progress: object) -> Image:
        calls.append(1)
        started.set()
        threading.Event().wait(0.3)
        return build_image(None, [layer_from_entries([Entry.file("x", b"1")])])

    fake = base.Recipe("pause", "3.9", {"v": "test"}, lambda: {"p": "1"}, slow_build)
    monkeypatch.setitem(base.RECIPES, "pause", fake)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(base.ensure_image("pause", cache=tmp_path,
                                                                                progress=None).digest))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3
    entries = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and entries[0].startswith("pause_3.9-")
    assert not list(tmp_path.glob(".tmp-*"))
    blob = next((tmp_path / entries[0] / "blobs" / "sha256").iterdir())
    assert blob.stat().st_mode & 0o222 == 0   # read-only once built
    assert base.cached_image("pause", cache=tmp_path) is not None


def test_debian_mirror_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIK8S_DEBIAN_MIRROR", "http://mirror.example/debian/")
    assert base.debian_mirror() == "http://mirror.example/debian"
    monkeypatch.delenv("MINIK8S_DEBIAN_MIRROR")
    assert base.debian_mirror().startswith("http")
