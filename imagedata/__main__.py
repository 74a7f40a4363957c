"""``python3 -m imagedata``: check the environment, then become gunicorn serving ``imagedata.app:app``.

gunicorn replaces this process (``exec``), so it is PID 1's direct program in the container and gets
the kubelet's SIGTERM itself. Never Flask's development server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from imagedata import Settings, SettingsError


def main() -> None:
    try:
        Settings.from_env()
    except SettingsError as exc:
        print(f"imagedata: {exc}", file=sys.stderr)
        sys.exit(2)
    here = Path(__file__).resolve().parent
    # gunicorn imports imagedata (its config and the app) by name: make sure the folder that holds
    # this package is on its path even when we were started from elsewhere (tests, a shell).
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(here.parent) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(here.parent), *paths])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "--config", str(here / "gunicorn_conf.py"),
                               "imagedata.app:app"])


if __name__ == "__main__":
    main()
