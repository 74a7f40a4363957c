"""The function builder against a real registry (Debian's docker-registry) holding the real python:3.11 base.

The base comes from the shared image cache (built there once if missing: minutes, not a skip). The
requirements test runs pip against PyPI for one small pure-Python package (humanize).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from minik8s.images.base import seed
from minik8s.images.registry import Registry
from minik8s.testing import RegistryProcess, free_port, wait_until
from serverless.builder import CODE_REPO, Builder
from serverless.code import CodeError

ADD = b"def run(a, b):\n    return a + b\n"
HUMANIZE_MAIN = b"import humanize\n\ndef run(n):\n    return humanize.intcomma(n)\n"
REQUIREMENTS = b"humanize==4.9.0\n"

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def registry_url() -> Iterator[str]:
    with RegistryProcess() as proc:
        seed(proc.url, images=["python:3.11"], progress=None)
        yield proc.url


@pytest.fixture(scope="module")
def pip_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pip-cache")


@pytest.fixture()
def builder(registry_url: str, pip_cache: Path) -> Iterator[Builder]:
    with Builder(registry_url, cache_dir=pip_cache) as b:
        yield b


def zipped(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def image_parts(reg: Registry, repo: str, digest: str) -> tuple[dict, dict, list[list[str]]]:  # type: ignore[type-arg]
    body, _, _ = reg.get_manifest(repo, digest)
    manifest = json.loads(body)
    config = json.loads(reg.get_blob(repo, manifest["config"]["digest"]))
    names = []
    for layer in manifest["layers"][1:]:                    # past the base layer
        with tarfile.open(fileobj=io.BytesIO(reg.get_blob(repo, layer["digest"])), mode="r:gz") as tar:
            names.append(tar.getnames())
    return manifest, config, names


def test_same_code_gives_the_same_image_and_pushes_nothing_twice(builder: Builder, registry_url: str) -> None:
    info = builder.store_code(ADD, filename="add.py")
    assert info.digest == "sha256:" + hashlib.sha256(builder.registry.get_blob(CODE_REPO, info.digest)).hexdigest()
    assert (info.files, info.requirements) == (1, False)
    assert builder.store_code(ADD, filename="other-name.py").digest == info.digest

    first = builder.build("default", "add", info.digest)
    second = builder.build("default", "add", info.digest)
    # A docker.io name: the cluster's containerd resolves docker.io through the cluster registry.
    assert first.image == f"docker.io/minik8s-functions/default/add@{first.manifest_digest}"
    assert first.tag.startswith("c-") and len(first.tag) == 22
    assert first.pushed_bytes > 0
    assert (second.manifest_digest, second.tag, second.pushed_bytes) == (first.manifest_digest, first.tag, 0)
    assert first.deps_layer is None
    print(f"build+push of a one-file function: first {first.seconds * 1000:.1f} ms, "
          f"again {second.seconds * 1000:.1f} ms")

    # A fresh builder (a restarted gateway) gives the same digest too.
    with Builder(registry_url, cache_dir=builder.cache_dir) as other:
        assert other.build("default", "add", info.digest).manifest_digest == first.manifest_digest

    manifest, config, names = image_parts(builder.registry, "minik8s-functions/default/add", first.manifest_digest)
    assert len(manifest["layers"]) == 2                     # base + one layer
    runtime = config["config"]
    assert runtime["Cmd"] == ["python3", "-m", "imagedata"]
    assert runtime["WorkingDir"] == "/opt/minik8s/function"
    assert "PYTHONPATH=/opt/minik8s/runtime:/opt/minik8s/deps:/opt/minik8s/function" in runtime["Env"]
    assert "PYTHONUNBUFFERED=1" in runtime["Env"]
    assert any(e.startswith("PATH=") for e in runtime["Env"])   # the base's Env is kept
    assert runtime["ExposedPorts"] == {"8080/tcp": {}}
    assert "opt/minik8s/function/main.py" in names[0]
    for name in ("__init__.py", "__main__.py", "app.py", "gunicorn_conf.py"):
        assert f"opt/minik8s/runtime/imagedata/{name}" in names[0]


def test_different_code_gives_a_different_tag(builder: Builder) -> None:
    one = builder.build("default", "calc", builder.store_code(ADD, filename="add.py").digest)
    two = builder.build("default", "calc", builder.store_code(ADD + b"# v2\n", filename="add.py").digest)
    assert one.tag != two.tag and one.manifest_digest != two.manifest_digest
    assert set(builder.registry.tags("minik8s-functions/default/calc")) == {one.tag, two.tag}


def test_bad_code_is_rejected_and_unknown_digests_too(builder: Builder) -> None:
    with pytest.raises(CodeError) as err:
        builder.store_code(b"def run(:\n", filename="bad.py")
    assert (err.value.code, str(err.value)) == (400, "main.py line 1: invalid syntax")
    with pytest.raises(CodeError) as err:
        builder.store_code(ADD, filename="add.py", max_bytes=8)
    assert err.value.code == 413
    with pytest.raises(CodeError, match=r"unknown code digest sha256:0{64}"):
        builder.build("default", "nothing", "sha256:" + "0" * 64)
    with pytest.raises(CodeError, match="bad code digest"):
        builder.build("default", "nothing", "latest")
    with pytest.raises(ValueError, match="bad function name"):
        builder.build("default", "Bad/Name", "sha256:" + "0" * 64)


def test_requirements_make_one_shared_deps_layer_that_runs(builder: Builder, tmp_path: Path) -> None:
    code_a = zipped({"main.py": HUMANIZE_MAIN, "requirements.txt": REQUIREMENTS})
    code_b = zipped({"main.py": HUMANIZE_MAIN + b"# another function\n", "requirements.txt": REQUIREMENTS})
    info = builder.store_code(code_a, filename="app.zip")
    assert info.requirements
    a = builder.build("default", "hum-a", info.digest)
    assert a.deps_layer is not None
    key = hashlib.sha256(REQUIREMENTS.decode().encode() + b"cp311").hexdigest()
    cached = builder.cache_dir / f"{key}.tar.gz"
    assert cached.is_file()
    assert "sha256:" + hashlib.sha256(cached.read_bytes()).hexdigest() == a.deps_layer

    b = builder.build("default", "hum-b", builder.store_code(code_b, filename="app.zip").digest)
    assert b.deps_layer == a.deps_layer
    assert b.manifest_digest != a.manifest_digest
    # A new builder reads the cached layer from disk: the same digest again, no pip run.
    with Builder(builder.registry.url, cache_dir=builder.cache_dir) as fresh:
        assert fresh.build("default", "hum-b", builder.store_code(code_b, filename="app.zip").digest) \
            .deps_layer == a.deps_layer

    manifest, config, names = image_parts(builder.registry, "minik8s-functions/default/hum-a", a.manifest_digest)
    assert len(manifest["layers"]) == 3                      # base, deps, app
    assert manifest["layers"][1]["digest"] == a.deps_layer
    assert b.pushed_bytes < manifest["layers"][1]["size"]    # hum-b mounted the deps layer from hum-a
    assert "opt/minik8s/deps/humanize/__init__.py" in names[0]

    # The image's own files run: unpack deps + app layers and start the runtime as the image would.
    root = tmp_path / "root"
    repo = "minik8s-functions/default/hum-a"
    for layer in manifest["layers"][1:]:
        with tarfile.open(fileobj=io.BytesIO(builder.registry.get_blob(repo, layer["digest"])), mode="r:gz") as tar:
            tar.extractall(root, filter="data")
    env_paths = [str(root) + p for p in
                 next(e for e in config["config"]["Env"] if e.startswith("PYTHONPATH=")).split("=", 1)[1].split(":")]
    port = free_port()
    env = {**os.environ, "PYTHONPATH": ":".join(env_paths), "PORT": str(port), "MINIK8S_WORKERS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "imagedata"], cwd=root / "opt/minik8s/function", env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.poll() is None and httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
                   timeout=30, what="the function's /healthz")
        resp = httpx.post(url, json={"n": 1234567}, timeout=10)
        assert resp.status_code == 200
        assert resp.json() == "1,234,567"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_pip_failure_is_a_code_error(builder: Builder) -> None:
    code = zipped({"main.py": ADD, "requirements.txt": b"this is not a requirement !!\n"})
    info = builder.store_code(code, filename="app.zip")
    with pytest.raises(CodeError) as err:
        builder.build("default", "broken-deps", info.digest)
    assert err.value.code == 400
    assert str(err.value).startswith("pip install failed: ")
    assert "\n" not in str(err.value)


def test_comment_only_requirements_make_no_deps_layer(builder: Builder) -> None:
    code = zipped({"main.py": ADD, "requirements.txt": b"# nothing yet\n\n"})
    assert builder.build("default", "no-deps", builder.store_code(code, filename="app.zip").digest).deps_layer is None


def test_delete_images_removes_every_manifest(builder: Builder) -> None:
    repo = "minik8s-functions/default/doomed"
    one = builder.build("default", "doomed", builder.store_code(ADD, filename="add.py").digest)
    two = builder.build("default", "doomed", builder.store_code(ADD + b"# 2\n", filename="add.py").digest)
    assert builder.delete_images("default", "doomed") == 2
    assert builder.registry.manifest_digest(repo, one.tag) is None
    assert builder.registry.manifest_digest(repo, two.manifest_digest) is None
    assert builder.delete_images("default", "doomed") == 0
    assert builder.delete_images("default", "never-built") == 0
    # The base stays for everyone else.
    assert builder.registry.manifest_digest("library/python", "3.11")
    # Building again after a delete pushes the manifest again.
    again = builder.build("default", "doomed", builder.store_code(ADD, filename="add.py").digest)
    assert again.manifest_digest == one.manifest_digest
    assert builder.registry.manifest_digest(repo, one.tag) == one.manifest_digest
