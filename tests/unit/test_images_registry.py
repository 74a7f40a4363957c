"""The registry client, image push with cross-repository mounts, and archive import, against an in-memory
fake of the Registry HTTP API v2 (httpx.MockTransport). The real registry is in tests/integration/."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import uuid
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from minictl.images import read_cluster_env, registry_url
from minictl.main import cli
from minik8s.images.build import build_image, pull_image, push_image
from minik8s.images.importer import ArchiveError, import_archive
from minik8s.images.layers import Entry, layer_from_entries, write_tar
from minik8s.images.media import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from minik8s.images.oci import ContainerConfig, write_layout
from minik8s.images.registry import Registry, RegistryError


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def err(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": message, "detail": None}]})


class FakeRegistry:
    """Enough of distribution v2: per-repository blob links, uploads, mounts, manifests by tag and digest."""

    def __init__(self) -> None:
        self.blobs: dict[str, dict[str, bytes]] = {}
        self.manifests: dict[str, dict[str, tuple[bytes, str]]] = {}
        self.uploads: dict[str, str] = {}
        self.requests: list[httpx.Request] = []

    def calls(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method, q = request.url.path, request.method, request.url.params
        if path == "/v2/":
            return httpx.Response(200, json={})
        if path == "/v2/_catalog":
            repos = sorted(set(self.blobs) | set(self.manifests))
            n = int(q.get("n", 1000))
            last = q.get("last")
            rest = [r for r in repos if last is None or r > last]
            page = rest[:n]
            headers = {"Link": f'</v2/_catalog?last={page[-1]}&n={n}>; rel="next"'} if len(rest) > n else {}
            return httpx.Response(200, json={"repositories": page}, headers=headers)
        m = re.fullmatch(r"/v2/(.+)/(blobs/uploads/?|blobs|manifests|tags)(?:/(.*))?", path)
        assert m, path
        repo, kind, rest_ = m.group(1), m.group(2).rstrip("/"), m.group(3) or ""
        repo_blobs = self.blobs.setdefault(repo, {})
        if kind == "blobs/uploads" and method == "POST":
            if q.get("mount"):
                source = self.blobs.get(q["from"], {})
                if q["mount"] in source:
                    repo_blobs[q["mount"]] = source[q["mount"]]
                    return httpx.Response(201, headers={"Docker-Content-Digest": q["mount"]})
            uid = str(uuid.uuid4())
            self.uploads[uid] = repo
            return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=abc"})
        if kind == "blobs/uploads" and method == "DELETE":
            self.uploads.pop(rest_)
            return httpx.Response(204)
        if kind == "blobs/uploads" and method == "PUT":
            assert self.uploads.pop(rest_) == repo and q.get("_state") == "abc"
            body = request.read()
            if sha(body) != q["digest"]:
                return err(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
            repo_blobs[q["digest"]] = body
            return httpx.Response(201, headers={"Docker-Content-Digest": q["digest"]})
        if kind == "blobs" and method in ("HEAD", "GET"):
            if rest_ not in repo_blobs:
                return err(404, "BLOB_UNKNOWN", "blob unknown to registry")
            return httpx.Response(200, content=repo_blobs[rest_] if method == "GET" else b"",
                                  headers={"Content-Length": str(len(repo_blobs[rest_]))})
        if kind == "manifests" and method == "PUT":
            body = request.read()
            doc = json.loads(body)
            for d in [doc.get("config"), *(doc.get("layers") or [])]:
                if d and d["digest"] not in repo_blobs:
                    return err(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry")
            store = self.manifests.setdefault(repo, {})
            store[rest_] = store[sha(body)] = (body, request.headers["content-type"])
            return httpx.Response(201, headers={"Docker-Content-Digest": sha(body)})
        if kind == "manifests" and method in ("GET", "HEAD"):
            found = self.manifests.get(repo, {}).get(rest_)
            if found is None or found[1] not in request.headers.get("accept", ""):
                return err(404, "MANIFEST_UNKNOWN", "manifest unknown")
            return httpx.Response(200, content=found[0] if method == "GET" else b"",
                                  headers={"Content-Type": found[1], "Docker-Content-Digest": sha(found[0])})
        if kind == "manifests" and method == "DELETE":
            store = self.manifests.get(repo, {})
            if rest_ not in store:
                return err(404, "MANIFEST_UNKNOWN", "manifest unknown")
            body = store[rest_][0]
            for key in [k for k, v in store.items() if v[0] == body]:
                del store[key]
            return httpx.Response(202)
        if kind == "tags":
            tags = [t for t in self.manifests.get(repo, {}) if not t.startswith("sha256:")]
            return httpx.Response(200, json={"name": repo, "tags": tags})
        raise AssertionError(f"unexpected {method} {path}")


@pytest.fixture()
def fake() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture()
def reg(fake: FakeRegistry) -> Registry:
    return Registry("http://registry.test", transport=httpx.MockTransport(fake))


def base_and_function() -> tuple:
    base_layer = layer_from_entries([Entry.file("usr/bin/python3", b"py" * 1000, 0o755)])
    base_img = build_image(None, [base_layer], ContainerConfig(cmd=["python3"]))
    fn_layer = layer_from_entries([Entry.file("app/handler.py", b"def main():\n    return 1\n")])
    fn_img = build_image(base_img, [fn_layer], ContainerConfig(cmd=["python3", "/app/handler.py"]))
    return base_img, fn_img


def test_push_uploads_then_skips_what_the_registry_has(reg: Registry, fake: FakeRegistry) -> None:
    base_img, _ = base_and_function()
    first = push_image(reg, "library/python", "3.11", base_img)
    assert first.digest == base_img.digest and len(first.uploaded) == 2 and not first.skipped
    fake.requests.clear()
    again = push_image(reg, "library/python", "3.11", base_img)
    assert again.digest == base_img.digest and not again.uploaded and len(again.skipped) == 2
    assert sorted(fake.calls()) == sorted([f"HEAD /v2/library/python/blobs/{d}" for d in
                                           (base_img.layers[0].digest, base_img.config_digest)]
                                          + ["PUT /v2/library/python/manifests/3.11"])


def test_function_push_mounts_the_base_and_uploads_only_its_own_blobs(reg: Registry, fake: FakeRegistry) -> None:
    base_img, fn_img = base_and_function()
    push_image(reg, "library/python", "3.11", base_img)
    fake.requests.clear()
    result = push_image(reg, "fn/hello", "v1", fn_img, base_repo="library/python")
    assert result.mounted == [base_img.layers[0].digest]
    assert sorted(result.uploaded) == sorted([fn_img.layers[1].digest, fn_img.config_digest])
    mount = [r for r in fake.requests if r.url.params.get("mount")]
    assert len(mount) == 1 and mount[0].url.params["from"] == "library/python"
    assert not any(r.method == "PUT" and r.url.params.get("digest") == base_img.layers[0].digest
                   for r in fake.requests)   # no base bytes sent
    body, media_type, digest = reg.get_manifest("fn/hello", "v1")
    assert (body, media_type, digest) == (fn_img.manifest_bytes, OCI_MANIFEST, fn_img.digest)


def test_small_new_blobs_can_skip_the_existence_check(reg: Registry, fake: FakeRegistry) -> None:
    base_img, fn_img = base_and_function()
    push_image(reg, "library/python", "3.11", base_img)
    fake.requests.clear()
    result = push_image(reg, "fn/quick", "v1", fn_img, base_repo="library/python", check_below=1 << 20)
    assert len(result.uploaded) == 2 and len(result.mounted) == 1
    assert [r.method for r in fake.requests].count("HEAD") == 0
    assert len(fake.requests) == 6    # mount, 2 x (POST + PUT), manifest PUT


def test_mount_falls_back_to_upload_when_the_source_lacks_the_blob(reg: Registry, fake: FakeRegistry) -> None:
    data = b"layer bytes"
    assert reg.mount_blob("fn/a", sha(data), "library/nothing", data) == "uploaded"
    assert fake.blobs["fn/a"][sha(data)] == data
    assert reg.mount_blob("fn/b", sha(data), "fn/a") == "mounted"
    with pytest.raises(RegistryError, match="does not have the blob"):
        reg.mount_blob("fn/c", sha(b"other"), "fn/a")


def test_a_base_from_the_registry_is_built_on_and_pushed_by_mounting(reg: Registry, fake: FakeRegistry) -> None:
    base_img, _ = base_and_function()
    push_image(reg, "library/python", "3.11", base_img)
    pulled = pull_image(reg, "library/python", "3.11")
    assert pulled.digest == base_img.digest and pulled.layers[0].data is None and pulled.layers[0].path is None
    fn = build_image(pulled, [layer_from_entries([Entry.file("app/x.py", b"x")])])
    result = push_image(reg, "fn/x", "v1", fn, base_repo="library/python")
    assert result.mounted == [base_img.layers[0].digest]
    with pytest.raises(RegistryError, match="neither in fn/y nor available locally"):
        push_image(reg, "fn/y", "v1", fn)


def test_manifest_requests_accept_every_type_we_read(reg: Registry, fake: FakeRegistry) -> None:
    base_img, _ = base_and_function()
    push_image(reg, "library/python", "3.11", base_img)
    reg.get_manifest("library/python", "3.11")
    accept = fake.requests[-1].headers["accept"]
    for media_type in (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST):
        assert media_type in accept
    assert accept == MANIFEST_ACCEPT


def test_tags_catalog_and_delete(reg: Registry, fake: FakeRegistry) -> None:
    base_img, _ = base_and_function()
    for i in range(5):
        push_image(reg, f"r{i}/img", "a", base_img)
    push_image(reg, "r0/img", "b", base_img)
    assert reg.catalog(page=2) == [f"r{i}/img" for i in range(5)]   # followed the Link header
    assert reg.tags("r0/img") == ["a", "b"]
    assert reg.delete_manifest("r0/img", "a") == base_img.digest
    assert reg.tags("r0/img") == []
    with pytest.raises(RegistryError) as info:
        reg.delete_manifest("r0/img", "a")
    assert info.value.status == 404 and "\n" not in str(info.value)


def test_errors_are_one_line_with_the_registry_code(reg: Registry) -> None:
    with pytest.raises(RegistryError) as info:
        reg.push_manifest("x/y", "v1", b'{"schemaVersion":2,"config":{"digest":"sha256:00"},"layers":[]}', OCI_MANIFEST)
    assert str(info.value) == "push manifest x/y:v1: HTTP 400 MANIFEST_BLOB_UNKNOWN: blob unknown to registry"
    assert info.value.code == "MANIFEST_BLOB_UNKNOWN"
    with pytest.raises(RegistryError, match="DIGEST_INVALID"):
        reg.push_blob("x/y", sha(b"a"), b"b")
    unreachable = Registry("http://127.0.0.1:1")
    with pytest.raises(RegistryError, match="cannot reach the registry"):
        unreachable.ping()


# ------------------------------------------------------------------------------------------------ import

def plain_tar(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    write_tar(entries, buf)
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def docker_save(path: Path, layers: list[bytes], repo_tags: list[str] | None, *, gz: bool = False) -> dict:
    """A `docker save`-shaped archive: manifest.json, repositories, <id>.json, <dir>/layer.tar."""
    diff_ids = [sha(gzip.decompress(layer) if layer[:2] == b"\x1f\x8b" else layer) for layer in layers]
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_bytes = json.dumps(config).encode()
    config_name = sha(config_bytes)[7:] + ".json"
    layer_names = [f"{sha(layer)[7:19]}/layer.tar" for layer in layers]
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        add(tar, config_name, config_bytes)
        for name, layer in zip(layer_names, layers, strict=True):
            add(tar, name, layer)
        add(tar, "manifest.json", json.dumps([{"Config": config_name, "RepoTags": repo_tags,
                                                "Layers": layer_names}]).encode())
        add(tar, "repositories", b"{}")
    return config


def test_import_docker_save_pushes_an_oci_manifest(reg: Registry, fake: FakeRegistry, tmp_path: Path) -> None:
    raw = plain_tar([Entry.file("bin/hello", b"hello", 0o755)])
    zipped = layer_from_entries([Entry.file("etc/motd", b"hi\n")]).data
    assert zipped is not None
    archive = tmp_path / "app.tar"
    config = docker_save(archive, [raw, zipped], ["myapp:1.0", "example.com/team/myapp:latest"])
    done = import_archive(reg, archive)
    assert [d.name for d in done] == ["library/myapp:1.0", "team/myapp:latest"]
    body, media_type, _ = reg.get_manifest("library/myapp", "1.0")
    manifest = json.loads(body)
    assert media_type == OCI_MANIFEST
    assert [(d["mediaType"], d["digest"]) for d in manifest["layers"]] == [(OCI_LAYER, sha(raw)),
                                                                          (OCI_LAYER_GZIP, sha(zipped))]
    assert json.loads(reg.get_blob("library/myapp", manifest["config"]["digest"])) == config
    assert reg.get_blob("library/myapp", sha(raw)) == raw
    assert done[0].uploaded == 3 and done[1].uploaded == 3
    again = import_archive(reg, archive, name="other:v2")
    assert again[0].name == "library/other:v2" and again[0].digest == done[0].digest
    assert again[0].uploaded == 3


def test_import_docker_save_with_a_symlinked_layer(reg: Registry, tmp_path: Path) -> None:
    """Older `docker save` stores a layer shared by two images once and links the second name to it."""
    layer = plain_tar([Entry.file("a", b"shared")])
    config_bytes = json.dumps({"rootfs": {"type": "layers", "diff_ids": [sha(layer), sha(layer)]}}).encode()
    archive = tmp_path / "linked.tar"
    with tarfile.open(archive, "w") as tar:
        add(tar, "c.json", config_bytes)
        add(tar, "one/layer.tar", layer)
        link = tarfile.TarInfo("two/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, "../one/layer.tar"
        tar.addfile(link)
        add(tar, "manifest.json", json.dumps([{"Config": "c.json", "RepoTags": ["linked:1"],
                                                "Layers": ["one/layer.tar", "two/layer.tar"]}]).encode())
    done = import_archive(reg, archive)
    manifest = json.loads(reg.get_manifest("library/linked", "1")[0])
    assert [d["digest"] for d in manifest["layers"]] == [sha(layer), sha(layer)]
    assert done[0].uploaded == 2 and done[0].present == 1


def test_import_gzipped_docker_save(reg: Registry, tmp_path: Path) -> None:
    archive = tmp_path / "app.tar.gz"
    docker_save(archive, [plain_tar([Entry.file("a", b"1")])], ["gz:1"], gz=True)
    assert import_archive(reg, archive)[0].name == "library/gz:1"
    assert reg.tags("library/gz") == ["1"]


def test_import_oci_layout_keeps_the_digests(reg: Registry, tmp_path: Path) -> None:
    _, fn_img = base_and_function()
    layout = tmp_path / "layout"
    write_layout(layout, {"docker.io/library/fn:v3": fn_img})
    archive = tmp_path / "oci.tar"
    with tarfile.open(archive, "w") as tar:
        for p in sorted(layout.rglob("*")):
            tar.add(p, arcname=p.relative_to(layout).as_posix(), recursive=False)
    done = import_archive(reg, archive)
    assert [(d.name, d.digest) for d in done] == [("library/fn:v3", fn_img.digest)]
    assert reg.get_manifest("library/fn", "v3")[0] == fn_img.manifest_bytes
    # a layout whose ref name is only a tag needs --name
    write_layout(layout, {"v3": fn_img})
    archive2 = tmp_path / "oci2.tar"
    with tarfile.open(archive2, "w") as tar:
        tar.add(layout, arcname=".")
    with pytest.raises(ArchiveError, match="give --name"):
        import_archive(reg, archive2)
    assert import_archive(reg, archive2, name="fn:v4")[0].digest == fn_img.digest


def test_import_an_oci_index_with_its_children(reg: Registry, fake: FakeRegistry, tmp_path: Path) -> None:
    _, fn_img = base_and_function()
    layout = tmp_path / "layout"
    write_layout(layout, {"x": fn_img})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": fn_img.digest, "size": len(fn_img.manifest_bytes),
         "platform": {"architecture": "amd64", "os": "linux"}}]}
    index_bytes = json.dumps(index).encode()
    (layout / "blobs" / "sha256" / sha(index_bytes)[7:]).write_bytes(index_bytes)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": sha(index_bytes), "size": len(index_bytes),
         "annotations": {"io.containerd.image.name": "docker.io/library/multi:1"}}]}))
    archive = tmp_path / "idx.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout, arcname=".")
    done = import_archive(reg, archive)
    assert done[0].name == "library/multi:1" and done[0].digest == sha(index_bytes)
    assert reg.get_manifest("library/multi", fn_img.digest)[0] == fn_img.manifest_bytes
    assert pull_image(reg, "library/multi", "1", architecture="amd64").digest == fn_img.digest


def test_bad_archives_give_one_line(reg: Registry, tmp_path: Path) -> None:
    def fails(path: Path, match: str, **kw: str) -> None:
        with pytest.raises(ArchiveError, match=match) as info:
            import_archive(reg, path, **kw)
        assert "\n" not in str(info.value)

    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    fails(text, "not a tar archive")
    fails(tmp_path / "missing.tar", "no such file")
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as tar:
        add(tar, "hello.txt", b"hi")
    fails(empty, "neither manifest.json")
    no_tags = tmp_path / "notags.tar"
    docker_save(no_tags, [plain_tar([Entry.file("a", b"1")])], None)
    fails(no_tags, "no RepoTags; give --name")
    broken = tmp_path / "broken.tar"
    with tarfile.open(broken, "w") as tar:
        add(tar, "manifest.json", b"{not json")
    fails(broken, "manifest.json is not valid JSON")
    missing_layer = tmp_path / "missing_layer.tar"
    with tarfile.open(missing_layer, "w") as tar:
        add(tar, "c.json", json.dumps({"rootfs": {"diff_ids": ["sha256:" + "0" * 64]}}).encode())
        add(tar, "manifest.json", json.dumps([{"Config": "c.json", "RepoTags": ["x:1"],
                                                "Layers": ["abc/layer.tar"]}]).encode())
    fails(missing_layer, "abc/layer.tar is missing")
    fails(no_tags, "invalid", name="Bad:Name")


# ----------------------------------------------------------------------------------------------- minictl

def test_registry_url_resolution(tmp_path: Path) -> None:
    (tmp_path / "cluster.env").write_text("# made by make up\nMINIK8S_CLUSTER_ID=abc123\nMINIK8S_REGISTRY_PORT=15123\n")
    assert read_cluster_env(tmp_path)["MINIK8S_REGISTRY_PORT"] == "15123"
    env = {"MINIK8S_HOME": str(tmp_path)}
    assert registry_url(None, env) == "http://127.0.0.1:15123"
    assert registry_url("http://127.0.0.1:9", env) == "http://127.0.0.1:9"
    assert registry_url(None, {**env, "MINIK8S_REGISTRY": "http://127.0.0.1:8"}) == "http://127.0.0.1:8"


def test_minictl_image_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIK8S_HOME", str(tmp_path / "nohome"))
    monkeypatch.delenv("MINIK8S_REGISTRY", raising=False)
    runner = CliRunner()
    text = tmp_path / "x.tar"
    text.write_text("not a tar")
    result = runner.invoke(cli, ["image", "push", str(text), "--registry", "http://127.0.0.1:1"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: {text}: not a tar archive (expected docker save or "
                                                  "OCI layout output)"]
    result = runner.invoke(cli, ["image", "ls"])
    assert result.exit_code == 1 and result.stderr.startswith("error: no cluster registry found")
    assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(cli, ["image", "ls", "--registry", "http://127.0.0.1:1"])
    assert result.exit_code == 1 and "cannot reach the registry" in result.stderr
