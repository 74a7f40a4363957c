"""Where the apiserver is, for ``minictl`` and for every daemon that talks to it.

Resolution order (first hit wins)::

    explicit server argument (``minictl -s URL``)
    MINIK8S_SERVER                        (env var, a URL)
    $MINIK8S_HOME/config                  (YAML: ``server: http://127.0.0.1:PORT``, optional ``namespace``)
    $MINIK8S_HOME/kubeconfig              (the current context's cluster ``server``)

``MINIK8S_HOME`` defaults to ``~/.minik8s`` (``make up`` writes both files there). When nothing is
found, :func:`load_config` raises :class:`ConfigError` with a message that says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_NAMESPACE = "default"


class ConfigError(Exception):
    """No usable apiserver address, or a config file that cannot be read. The message is one line."""


@dataclass(frozen=True)
class ClientConfig:
    """Where to send requests. ``source`` says where ``server`` came from (for error messages)."""

    server: str
    namespace: str = DEFAULT_NAMESPACE
    source: str = ""


def minik8s_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("MINIK8S_HOME") or Path.home() / ".minik8s").expanduser()


def load_config(*, server: str | None = None, namespace: str | None = None,
                env: Mapping[str, str] | None = None) -> ClientConfig:
    """Resolve the apiserver URL and default namespace (see the module docstring for the order).

    ``namespace`` (when given) overrides the one from the config file. Raises ``ConfigError``.
    """
    env = os.environ if env is None else env
    home = minik8s_home(env)
    file_ns: str | None = None
    found: tuple[str, str] | None = None
    if server:
        found = (server, "--server")
    elif env.get("MINIK8S_SERVER"):
        found = (env["MINIK8S_SERVER"], "MINIK8S_SERVER")
    config_path = home / "config"
    if config_path.is_file():
        data = _read_yaml(config_path)
        file_ns = _str_or_none(data.get("namespace"), config_path, "namespace")
        if found is None and data.get("server"):
            found = (str(data["server"]), str(config_path))
    if found is None:
        kube_path = home / "kubeconfig"
        if kube_path.is_file():
            url = _server_from_kubeconfig(_read_yaml(kube_path), kube_path)
            found = (url, str(kube_path))
    if found is None:
        raise ConfigError(f"no minik8s apiserver configured: run `make up` (it writes {config_path}) "
                          "or set MINIK8S_SERVER=http://HOST:PORT")
    url, source = found
    if not url.startswith(("http://", "https://")):
        # Accept the HOST:PORT habit of etcd-style flags; plain HTTP is what the dev cluster serves.
        url = "http://" + url
    return ClientConfig(server=url.rstrip("/"), namespace=namespace or file_ns or DEFAULT_NAMESPACE, source=source)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping")
    return data


def _str_or_none(value: Any, path: Path, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {field} must be a string")
    return value


def _server_from_kubeconfig(data: dict[str, Any], path: Path) -> str:
    contexts = {c.get("name"): c.get("context") or {} for c in data.get("contexts") or [] if isinstance(c, dict)}
    clusters = {c.get("name"): c.get("cluster") or {} for c in data.get("clusters") or [] if isinstance(c, dict)}
    current = data.get("current-context")
    if current and current in contexts:
        cluster = clusters.get(contexts[current].get("cluster"), {})
    elif len(clusters) == 1:
        cluster = next(iter(clusters.values()))
    else:
        raise ConfigError(f"{path}: no current-context to pick a cluster from")
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"{path}: the current context's cluster has no server")
    return str(server)
