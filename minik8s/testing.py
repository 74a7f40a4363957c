"""Helpers that start real processes for tests and benchmarks (never used by daemons).

``EtcdProcess`` runs the Debian ``etcd`` binary on free loopback ports with its own data folder;
``ApiserverProcess`` runs ``minik8s-apiserver`` against one; ``RegistryProcess`` runs Debian's
``docker-registry``. Each stops what it starts, and every wait has a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, *, timeout: float, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; raise ``TimeoutError`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - remembered for the timeout message
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}" +
                               (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


class _Process:
    """One child process with a log file: started by ``_spawn``, stopped with SIGTERM then SIGKILL.

    Subclasses set ``name`` and ``log_path`` and implement ``start``; used as a context manager.
    """

    name = "process"
    log_path = ""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], *, ready_url: str, env: dict[str, str] | None = None,
               cwd: str | None = None) -> None:
        """Start ``argv`` in its own session, logging to ``log_path``; wait until ``ready_url`` answers 200."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=env, cwd=cwd)
        wait_until(lambda: self._alive() and _http_ok(ready_url), timeout=30, what=f"{self.name} at {ready_url}")

    def start(self) -> _Process:
        raise NotImplementedError

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class EtcdProcess(_Process):
    """A real etcd on loopback with a private data dir. Use as a context manager."""

    name = "etcd"

    def __init__(self, data_dir: str | None = None, *, client_port: int | None = None,
                 peer_port: int | None = None) -> None:
        super().__init__()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="mk8s-etcd-")
        self.log_path = os.path.join(self.data_dir, "etcd.log")
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self) -> EtcdProcess:
        etcd = shutil.which("etcd") or "/usr/bin/etcd"
        self._spawn(
            [etcd, "--name", "test", "--data-dir", os.path.join(self.data_dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
             "--initial-cluster", f"test=http://127.0.0.1:{self.peer_port}",
             "--log-level", "error", "--logger", "zap"], ready_url=f"{self.url}/health")
        return self

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class ApiserverProcess(_Process):
    """``minik8s-apiserver`` on a free loopback port against ``etcd_endpoint``."""

    name = "apiserver"

    def __init__(self, etcd_endpoint: str, *, port: int | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, log_path: str | None = None) -> None:
        super().__init__()
        self.etcd_endpoint = etcd_endpoint
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.env = env or {}
        self.log_path = log_path or os.path.join(tempfile.gettempdir(), f"mk8s-apiserver-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiserverProcess:
        self._spawn([sys.executable, "-m", "apiserver.main", "--etcd-endpoints", self.etcd_endpoint,
                     "--bind-address", "127.0.0.1", "--port", str(self.port), *self.extra_args],
                    ready_url=f"{self.url}/readyz", env={**os.environ, **self.env},
                    cwd=str(Path(__file__).resolve().parent.parent))
        return self


class RegistryProcess(_Process):
    """Debian's ``docker-registry`` (distribution v2) on a free loopback port with its own storage.

    Deletes are enabled; never port 5000. Use as a context manager; ``.url`` is ``http://127.0.0.1:PORT``.
    """

    name = "docker-registry"

    def __init__(self, data_dir: str | None = None, *, port: int | None = None) -> None:
        super().__init__()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="mk8s-registry-")
        self.port = port or free_port()
        if self.port == 5000:
            raise ValueError("the test registry never uses port 5000")
        self.log_path = os.path.join(self.data_dir, "registry.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> str:
        return os.path.join(self.data_dir, "config.yml")

    def start(self) -> RegistryProcess:
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        storage = os.path.join(self.data_dir, "data")
        os.makedirs(storage, exist_ok=True)
        with open(self.config_path, "w") as f:
            f.write("version: 0.1\n"
                    "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
                    "  cache:\n    blobdescriptor: inmemory\n"
                    f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self._spawn([binary, "serve", self.config_path], ready_url=f"{self.url}/v2/")
        return self

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
