"""The function runtime: what runs inside every function image, on the ``python:3.11`` base.

::

    python3 -m imagedata                       (the image's Cmd; working dir = the function's code)
      └─ exec gunicorn --config imagedata/gunicorn_conf.py imagedata.app:app
           └─ N sync workers, each imports main.py once, then serves
                GET  /healthz   200 {"ok": true} | 500 {"error": "No module named 'humanize'"}
                POST /          the entry point called with the JSON body (200 | 400 | 500 | 504)

This package runs on Debian bookworm's python3.11 with Flask 2.2 and gunicorn 20.1 (and on the
newer Flask/gunicorn of the development venv), and imports nothing of minik8s: it is copied into
images as plain files (``/opt/minik8s/runtime/imagedata/``).

Environment (read by :meth:`Settings.from_env`): ``MINIK8S_ENTRY_POINT`` (default ``run``),
``MINIK8S_TIMEOUT`` (seconds per call, default 60), ``MINIK8S_WORKERS`` (default 2),
``MINIK8S_FUNCTION`` (``NS/NAME``), ``PORT`` (default 8080).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PORT = 8080
DEFAULT_TIMEOUT = 60.0
DEFAULT_WORKERS = 2
DEFAULT_ENTRY_POINT = "run"
LOG_LIMIT = 16 * 1024        # bytes of a call's captured output returned in X-Minik8s-Logs (before base64)


class SettingsError(ValueError):
    """An environment variable of the runtime has a bad value (one line naming the variable)."""


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool, low: float,
            high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    kind = "an integer" if integer else "a number"
    if value is None or value != value or not low <= value <= high:   # value != value: NaN
        raise SettingsError(f"{name} must be {kind} from {low:g} to {high:g}, not {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """The runtime's configuration, from the environment."""

    entry_point: str = DEFAULT_ENTRY_POINT
    timeout: float = DEFAULT_TIMEOUT
    workers: int = DEFAULT_WORKERS
    function: str = ""
    port: int = DEFAULT_PORT

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> Settings:
        """Read the ``MINIK8S_*`` variables and ``PORT``; raise :class:`SettingsError` on a bad value."""
        env = os.environ if env is None else env
        entry_point = env.get("MINIK8S_ENTRY_POINT", "").strip() or DEFAULT_ENTRY_POINT
        if not entry_point.isidentifier():
            raise SettingsError(f"MINIK8S_ENTRY_POINT must be a Python identifier, not {entry_point!r}")
        return Settings(
            entry_point=entry_point,
            timeout=_number(env, "MINIK8S_TIMEOUT", DEFAULT_TIMEOUT, integer=False, low=0.001, high=86400),
            workers=int(_number(env, "MINIK8S_WORKERS", DEFAULT_WORKERS, integer=True, low=1, high=64)),
            function=env.get("MINIK8S_FUNCTION", ""),
            port=int(_number(env, "PORT", DEFAULT_PORT, integer=True, low=1, high=65535)))
