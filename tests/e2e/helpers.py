"""Shared pieces of the client-compatibility end-to-end tests: the official ``kubernetes`` Python
client and the real ``kubectl``, both pointed at the session apiserver.

Each test gets a namespace of its own (created here, deleted afterwards), so tests can share one
apiserver. kubectl runs with a kubeconfig and a discovery cache inside the test's ``tmp_path`` and
``HOME`` pointed there too, so ``~/.kube`` is never read or written.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

KUBECTL = "/usr/bin/kubectl"


def unique(prefix: str = "e2e") -> str:
    """A DNS-1123 name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- the Python client -------------------------------------------------------------------------

def api_client(url: str) -> client.ApiClient:
    cfg = client.Configuration(host=url)
    cfg.retries = 0
    return client.ApiClient(cfg)


@pytest.fixture()
def kube(apiserver: Any) -> Iterator[client.ApiClient]:
    """An ``ApiClient`` for the session apiserver (plain HTTP, no auth)."""
    api = api_client(apiserver.url)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture()
def namespace(kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted (best effort) at the end."""
    core = client.CoreV1Api(kube)
    name = unique("e2e-ns")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except client.ApiException:
            pass


# --- raw HTTP (to see the stored object exactly, without model (de)serialisation) ---------------

def http(url: str, method: str = "GET", body: Any = None, *, content_type: str = "application/json",
         timeout: float = 10) -> tuple[int, Any]:
    """(status, parsed JSON body) of one request; error statuses are returned, not raised."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def get_json(base: str, path: str) -> dict[str, Any]:
    status, body = http(base + path)
    assert status == 200, f"GET {path} answered {status}: {body}"
    assert isinstance(body, dict)
    return body


# --- kubectl ---------------------------------------------------------------------------------------

class Kubectl:
    """The real kubectl against one apiserver, with a private kubeconfig and discovery cache."""

    def __init__(self, server: str, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = home / "kubeconfig"
        self.cache_dir = home / "kube-cache"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "minik8s", "cluster": {"server": server}}],
            "users": [{"name": "minik8s", "user": {}}],
            "contexts": [{"name": "minik8s", "context": {"cluster": "minik8s", "user": "minik8s"}}],
            "current-context": "minik8s"}))
        self.env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(self.kubeconfig)}
        self.env.pop("KUBERNETES_SERVICE_HOST", None)

    def argv(self, *args: str) -> list[str]:
        return [KUBECTL, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir),
                "--request-timeout", "20s", *args]

    def run(self, *args: str, input: str | None = None, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(*args), env=self.env, input=input, capture_output=True, text=True,
                                timeout=timeout, check=False,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, (f"kubectl {' '.join(args)} exited {result.returncode}:\n"
                                            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def fails(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, input=input, timeout=timeout, check=False)
        assert result.returncode != 0, (f"kubectl {' '.join(args)} should have failed:\n"
                                        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def popen(self, *args: str) -> LineReader:
        proc = subprocess.Popen(self.argv(*args), env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        return LineReader(proc)


class LineReader:
    """A running process whose output lines arrive on a queue, read with deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Any, *, timeout: float, what: str) -> str:
        """The first new line that satisfies ``predicate``; fails at the deadline or at end of output."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; output so far:\n"
                                     + "\n".join(self.lines))
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the process ended (rc={self.proc.poll()}) before {what}; output:\n"
                                     + "\n".join(self.lines))
            self.lines.append(line)
            if predicate(line):
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._thread.join(timeout=10)


@pytest.fixture()
def kubectl(apiserver: Any, tmp_path: Path) -> Kubectl:
    return Kubectl(apiserver.url, tmp_path / "kubectl-home")
