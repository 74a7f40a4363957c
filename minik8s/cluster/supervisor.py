"""A small client for the cluster's supervisord: its XML-RPC API over the unix socket, with timeouts."""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from pathlib import Path
from typing import Any, cast

RUNNING_STATES = frozenset({"RUNNING", "STARTING", "BACKOFF", "STOPPING"})
STOPPED_STATES = frozenset({"STOPPED", "EXITED", "FATAL", "UNKNOWN"})


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self._path, self._timeout)


class Supervisor:
    """supervisord's API (``supervisor.*`` methods) on ``socket_path``; every call bounded by ``timeout``."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self._proxy = xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                                transport=_UnixTransport(str(socket_path), timeout))

    @property
    def rpc(self) -> Any:
        return self._proxy.supervisor

    def answering(self) -> bool:
        """True when supervisord answers and is RUNNING (not shutting down)."""
        try:
            return bool(self.rpc.getState()["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error, http.client.HTTPException):
            return False

    def pid(self) -> int:
        return int(self.rpc.getPID())

    def processes(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.rpc.getAllProcessInfo())

    def process(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.rpc.getProcessInfo(name))

    def start(self, name: str) -> None:
        try:
            self.rpc.startProcess(name, False)
        except xmlrpc.client.Fault as exc:
            if "ALREADY_STARTED" not in exc.faultString:
                raise

    def stop(self, name: str) -> None:
        try:
            self.rpc.stopProcess(name, True)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString and "BAD_NAME" not in exc.faultString:
                raise

    def update(self) -> tuple[list[str], list[str], list[str]]:
        """Re-read the config file and apply it (``supervisorctl update``): added, changed, removed groups."""
        added, changed, removed = self.rpc.reloadConfig()[0]
        for name in removed:
            self.rpc.stopProcessGroup(name, True)
            self.rpc.removeProcessGroup(name)
        for name in changed:
            self.rpc.stopProcessGroup(name, True)
            self.rpc.removeProcessGroup(name)
            self.rpc.addProcessGroup(name)
        for name in added:
            self.rpc.addProcessGroup(name)
        return list(added), list(changed), list(removed)

    def shutdown(self) -> None:
        self.rpc.shutdown()
