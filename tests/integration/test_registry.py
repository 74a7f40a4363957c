"""The image tools against a real registry: Debian's docker-registry (distribution v2.8) on a free loopback port."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from minik8s.images.build import build_image, pull_image, push_image
from minik8s.images.layers import Entry, layer_from_entries, write_tar
from minik8s.images.media import OCI_LAYER, OCI_MANIFEST
from minik8s.images.oci import ContainerConfig, Image
from minik8s.images.registry import Registry, RegistryError
from minik8s.testing import RegistryProcess

REPO_ROOT = Path(__file__).resolve().parents[2]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def registry_proc() -> Iterator[RegistryProcess]:
    with RegistryProcess() as proc:
        yield proc


@pytest.fixture()
def reg(registry_proc: RegistryProcess) -> Iterator[Registry]:
    with Registry(registry_proc.url) as client:
        yield client


def two_images(tag: str) -> tuple[Image, Image]:
    base_layer = layer_from_entries([Entry.dir("usr"), Entry.dir("usr/bin"),
                                     Entry.file("usr/bin/python3", os.urandom(200_000), 0o755),
                                     Entry.file("etc/os-release", f"ID={tag}\n".encode())])
    base = build_image(None, [base_layer], ContainerConfig(cmd=["python3"], env=["PATH=/usr/bin"]))
    fn_layer = layer_from_entries([Entry.file("app/handler.py", f"def main():\n    return {tag!r}\n".encode())])
    fn = build_image(base, [fn_layer], ContainerConfig(entrypoint=["python3", "/app/handler.py"]))
    return base, fn


def test_the_test_registry_is_ours(registry_proc: RegistryProcess) -> None:
    assert registry_proc.port != 5000 and registry_proc.url.startswith("http://127.0.0.1:")
    assert "delete:\n    enabled: true" in Path(registry_proc.config_path).read_text()


def test_push_skip_mount_and_delete(reg: Registry) -> None:
    base, fn = two_images("a")
    first = push_image(reg, "library/pybase-a", "1", base)
    assert first.digest == base.digest and len(first.uploaded) == 2
    again = push_image(reg, "library/pybase-a", "1", base)
    assert not again.uploaded and len(again.skipped) == 2

    pushed = push_image(reg, "fn/hello-a", "v1", fn, base_repo="library/pybase-a")
    assert pushed.digest == fn.digest
    assert pushed.mounted == [base.layers[0].digest]
    assert sorted(pushed.uploaded) == sorted([fn.layers[1].digest, fn.config_digest])
    assert reg.blob_exists("fn/hello-a", base.layers[0].digest)

    assert reg.tags("fn/hello-a") == ["v1"]
    assert {"library/pybase-a", "fn/hello-a"} <= set(reg.catalog())
    assert reg.delete_manifest("fn/hello-a", "v1") == fn.digest
    with pytest.raises(RegistryError) as info:
        reg.get_manifest("fn/hello-a", "v1")
    assert info.value.status == 404 and info.value.code == "MANIFEST_UNKNOWN"


def test_mount_from_a_repository_without_the_blob_uploads_instead(reg: Registry) -> None:
    data = os.urandom(1000)
    assert reg.mount_blob("fn/mount-b", sha(data), "library/never-pushed", data) == "uploaded"
    assert reg.get_blob("fn/mount-b", sha(data)) == data
    assert reg.mount_blob("fn/mount-c", sha(data), "fn/mount-b") == "mounted"
    with pytest.raises(RegistryError, match="does not have the blob"):
        reg.mount_blob("fn/mount-d", sha(os.urandom(10)), "fn/mount-b")


def test_an_oci_manifest_needs_the_accept_header(registry_proc: RegistryProcess, reg: Registry) -> None:
    base, _ = two_images("c")
    push_image(reg, "library/accept-c", "1", base)
    bare = httpx.get(f"{registry_proc.url}/v2/library/accept-c/manifests/1")
    assert bare.status_code == 404          # distribution 2.8 without an Accept for OCI
    body, media_type, digest = reg.get_manifest("library/accept-c", "1")
    assert (body, media_type, digest) == (base.manifest_bytes, OCI_MANIFEST, base.digest)
    assert reg.manifest_digest("library/accept-c", "1") == base.digest
    assert reg.manifest_digest("library/accept-c", "nosuch") is None


def test_a_pushed_image_comes_back_byte_identical(reg: Registry, tmp_path: Path) -> None:
    _, fn = two_images("d")
    push_image(reg, "fn/roundtrip-d", "v1", fn)
    body, _, digest = reg.get_manifest("fn/roundtrip-d", "v1")
    assert body == fn.manifest_bytes and digest == fn.digest
    manifest = json.loads(body)
    assert reg.get_blob("fn/roundtrip-d", manifest["config"]["digest"]) == fn.config_bytes
    for desc, layer in zip(manifest["layers"], fn.layers, strict=True):
        assert reg.get_blob("fn/roundtrip-d", desc["digest"]) == layer.read()
        reg.download_blob("fn/roundtrip-d", desc["digest"], tmp_path / "blob")
        assert (tmp_path / "blob").read_bytes() == layer.read()
    pulled = pull_image(reg, "fn/roundtrip-d", "v1")
    assert pulled.digest == fn.digest and pulled.config == fn.config


def test_building_on_a_base_from_the_registry(reg: Registry) -> None:
    base, _ = two_images("e")
    push_image(reg, "library/pybase-e", "1", base)
    remote = pull_image(reg, "library/pybase-e", "1")
    image = build_image(remote, [layer_from_entries([Entry.file("app/x.py", b"print(1)\n")])],
                        ContainerConfig(cmd=["python3", "/app/x.py"]))
    result = push_image(reg, "fn/on-remote-e", "v1", image, base_repo="library/pybase-e")
    assert result.mounted == [base.layers[0].digest] and len(result.uploaded) == 2
    assert pull_image(reg, "fn/on-remote-e", "v1").config["rootfs"]["diff_ids"][0] == base.layers[0].diff_id


def docker_save(path: Path, repo_tag: str) -> tuple[bytes, dict]:
    buf = io.BytesIO()
    write_tar([Entry.file("bin/hello", b"#!/bin/sh\necho hello\n", 0o755)], buf)
    layer = buf.getvalue()
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/hello"]},
              "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}
    config_bytes = json.dumps(config).encode()
    config_name = sha(config_bytes)[7:] + ".json"
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": ["l1/layer.tar"]}]
    with tarfile.open(path, "w") as tar:
        for name, data in ((config_name, config_bytes), ("l1/layer.tar", layer),
                           ("manifest.json", json.dumps(manifest).encode()), ("repositories", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return layer, config


def minictl(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minictl.main", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=str(REPO_ROOT), check=False)


def test_minictl_image_push_ls_rm(registry_proc: RegistryProcess, reg: Registry, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "cluster.env").write_text(f"MINIK8S_CLUSTER_ID=abcdef\nMINIK8S_REGISTRY_PORT={registry_proc.port}\n")
    env = {**os.environ, "MINIK8S_HOME": str(home)}
    env.pop("MINIK8S_REGISTRY", None)
    archive = tmp_path / "hello.tar"
    layer, config = docker_save(archive, "hello-app:1.0")

    result = minictl(["image", "push", str(archive)], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pushed hello-app:1.0 sha256:")
    body, media_type, _ = reg.get_manifest("library/hello-app", "1.0")
    manifest = json.loads(body)
    assert media_type == OCI_MANIFEST
    assert manifest["layers"] == [{"mediaType": OCI_LAYER, "digest": sha(layer), "size": len(layer)}]
    assert json.loads(reg.get_blob("library/hello-app", manifest["config"]["digest"])) == config

    again = minictl(["image", "push", str(archive), "--name", "team/hello:2"], env)
    assert again.returncode == 0 and "already there" in again.stdout
    listing = minictl(["image", "ls"], env)
    assert listing.returncode == 0
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert rows[0] == ["REPOSITORY", "TAG", "DIGEST"]
    assert ["hello-app", "1.0"] in [r[:2] for r in rows] and ["team/hello", "2"] in [r[:2] for r in rows]

    removed = minictl(["image", "rm", "hello-app:1.0"], env)
    assert removed.returncode == 0 and reg.tags("library/hello-app") == []

    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"\x00" * 10)
    failed = minictl(["image", "push", str(bad)], env)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: ")
