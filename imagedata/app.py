"""The WSGI app of a function instance: import ``main.py`` once, then call its entry point per request.

::

    POST /  body ──json──▶ {"a": 1}      ──▶ run(a=1)                 (kwargs style)
                                         ──▶ handler(event, context)  (parameters exactly event, context)
            ◀── 200 result as JSON | 400 bad body or arguments | 500 exception | 504 past MINIK8S_TIMEOUT
                headers: X-Minik8s-Duration-Ms, X-Minik8s-Logs (base64 of the call's stdout + stderr)

A call runs in the worker's main thread (gunicorn sync workers), under ``SIGALRM`` set to the timeout:
the handler raises :class:`CallTimeout` wherever the function is, so the call really stops and the
worker takes the next request. ``app`` is built on first access (gunicorn's import in each worker), so
importing this module loads no user code; tests use :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import inspect
import io
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from flask import Flask, Response, request

from imagedata import LOG_LIMIT, Settings

MODULE = "main"
ACTIVATION_HEADER = "X-Minik8s-Activation-Id"


class CallTimeout(BaseException):
    """Raised by SIGALRM inside a call past its deadline.

    A ``BaseException`` so that a function's own ``except Exception`` does not swallow it (and when a
    bare ``except`` does, the call still answers 504: the alarm is remembered).
    """


class CallLog:
    """One call's captured output: at most ``limit`` bytes of UTF-8 kept, the rest counted."""

    def __init__(self, limit: int = LOG_LIMIT) -> None:
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0
        self.dropped = 0

    def write(self, text: str) -> None:
        size = len(text.encode("utf-8", "replace"))
        room = self.limit - self._size
        if size <= room:
            self._parts.append(text)
            self._size += size
            return
        if room > 0:
            self._parts.append(text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore"))
            self._size = self.limit
        self.dropped += size - max(room, 0)

    def text(self) -> str:
        """The output, ending with a note of how much was dropped; never more than ``limit`` bytes."""
        data = "".join(self._parts).encode("utf-8", "replace")
        if not self.dropped:
            return data.decode("utf-8", "ignore")
        note = f"\n[imagedata: {self.dropped} more bytes of output dropped]\n".encode()
        return data[:max(self.limit - len(note), 0)].decode("utf-8", "ignore") + note.decode()


class CallStream(io.TextIOBase):
    """A text stream that writes to the running call's :class:`CallLog`, or to ``real`` between calls.

    Installed as ``sys.stdout``/``sys.stderr`` while ``main.py`` is imported and during each call, so
    output is caught both from ``print`` and from streams the module kept at import time (a
    ``logging.StreamHandler()``, ``out = sys.stdout``). Writes to the file descriptors themselves
    (``os.write(1, …)``, child processes) are not caught: they go to the container's log.
    """

    def __init__(self, real: TextIO) -> None:
        super().__init__()
        self.real = real
        self.capture: CallLog | None = None

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.capture is not None:
            self.capture.write(text)
            return len(text)
        return self.real.write(text)

    def flush(self) -> None:
        if self.capture is None:
            self.real.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def fileno(self) -> int:
        return self.real.fileno()


def _json(body: Any, status: int) -> tuple[int, str]:
    return status, json.dumps(body)


def _traceback(exc: BaseException) -> str:
    # Leave out the runtime's own frame: the first one is ours, the rest are the function's.
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    return "".join(traceback.format_exception(type(exc), exc, tb))


class Runtime:
    """The user's module and entry point, loaded once, and the call protocol around them."""

    def __init__(self, function_dir: str | os.PathLike[str], settings: Settings) -> None:
        self.dir = Path(function_dir).resolve()
        self.settings = settings
        self.fn: Callable[..., Any] | None = None
        self.signature: inspect.Signature | None = None
        self.event_style = False
        self.error: dict[str, str] | None = None     # why the function cannot be called
        self.stdout = CallStream(sys.stdout)
        self.stderr = CallStream(sys.stderr)
        self._load()

    # ----------------------------------------------------------------------------------------- loading

    def _load(self) -> None:
        path = self.dir / "main.py"
        if not path.is_file():
            self.error = {"error": f"no main.py in {self.dir}", "type": "FileNotFoundError", "traceback": ""}
            return
        if str(self.dir) not in sys.path:
            sys.path.insert(0, str(self.dir))     # the function's own modules and packages next to main.py
        spec = importlib.util.spec_from_file_location(MODULE, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[MODULE] = module
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.stdout, self.stderr
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any import failure is the function's, reported
            sys.modules.pop(MODULE, None)
            self.error = {"error": f"cannot import main.py: {exc}", "type": type(exc).__name__,
                          "traceback": _traceback(exc)}
            print(f"imagedata: {self.error['error']}\n{self.error['traceback']}", file=saved[1], flush=True)
            return
        finally:
            sys.stdout, sys.stderr = saved
        fn = getattr(module, self.settings.entry_point, None)
        if not callable(fn):
            self.error = {"error": f"main.py has no function {self.settings.entry_point!r}",
                          "type": "AttributeError", "traceback": ""}
            return
        self.fn = fn
        try:
            self.signature = inspect.signature(fn)
        except (TypeError, ValueError):
            self.signature = None                 # a builtin without a signature: arguments are not checked
        if self.signature is not None:
            params = list(self.signature.parameters.values())
            self.event_style = ([p.name for p in params] == ["event", "context"] and all(
                p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params))

    # ------------------------------------------------------------------------------------------ calling

    def call(self, raw: bytes, activation_id: str, log: CallLog) -> tuple[int, str]:
        """``(status, JSON body)`` of one call with request body ``raw``; output goes to ``log``."""
        if self.fn is None:
            assert self.error is not None
            return _json(self.error, 500)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:                 # also UnicodeDecodeError
            return _json({"error": f"invalid JSON: {exc}"}, 400)
        if not isinstance(body, dict):
            return _json({"error": f"the body must be a JSON object, not {_json_type(body)}"}, 400)
        deadline = time.time() + self.settings.timeout
        context = {"function": self.settings.function, "activation_id": activation_id, "deadline": deadline}
        args: tuple[Any, ...] = (body, context) if self.event_style else ()
        kwargs: dict[str, Any] = {} if self.event_style else body
        if self.signature is not None:
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                return _json({"error": f"bad arguments: {exc}"}, 400)
        return self._run(args, kwargs, log)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], log: CallLog) -> tuple[int, str]:
        fired = False

        def on_alarm(_signum: int, _frame: FrameType | None) -> None:
            nonlocal fired
            fired = True
            raise CallTimeout

        # signal handlers can only be set from the main thread: a threaded server runs without the limit.
        alarm = threading.current_thread() is threading.main_thread()
        timeout = self.settings.timeout
        saved = sys.stdout, sys.stderr
        self.stdout.capture = self.stderr.capture = log
        sys.stdout, sys.stderr = self.stdout, self.stderr
        previous_handler: Any = None
        previous_timer = (0.0, 0.0)
        started = time.monotonic()
        try:
            try:
                if alarm:
                    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
                    previous_timer = signal.setitimer(signal.ITIMER_REAL, timeout)
                assert self.fn is not None
                result = self.fn(*args, **kwargs)
                if inspect.iscoroutine(result):
                    result = asyncio.run(result)
            finally:
                if alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, previous_handler if previous_handler is not None
                                  else signal.SIG_DFL)
                    if previous_timer[0] > 0:     # someone else's alarm (a test runner's): give back what is left
                        left = previous_timer[0] - (time.monotonic() - started)
                        signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), previous_timer[1])
                self.stdout.capture = self.stderr.capture = None
                sys.stdout, sys.stderr = saved
        except CallTimeout:
            return _json({"error": f"timed out after {timeout:g}s"}, 504)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the function's failure is the answer
            if fired:
                return _json({"error": f"timed out after {timeout:g}s"}, 504)
            return _json({"error": str(exc), "type": type(exc).__name__, "traceback": _traceback(exc)}, 500)
        if fired:                                 # the function swallowed the alarm; it still ran too long
            return _json({"error": f"timed out after {timeout:g}s"}, 504)
        try:
            return 200, json.dumps(result)
        except (TypeError, ValueError) as exc:
            return _json({"error": f"the return value is not JSON: {exc}", "type": type(exc).__name__,
                          "traceback": ""}, 500)


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def create_app(function_dir: str | os.PathLike[str] | None = None, *, settings: Settings | None = None) -> Flask:
    """The Flask app for the function in ``function_dir`` (default: the working directory).

    Imports ``main.py`` now; a failure is not raised but answered (``/healthz`` gives 200 with ``ok: false``
    and the error, ``POST /`` a 500 with the import error). ``settings`` default to
    :meth:`Settings.from_env` (raises ``SettingsError``).
    """
    runtime = Runtime(function_dir if function_dir is not None else os.getcwd(), settings or Settings.from_env())
    app = Flask("imagedata")
    app.extensions["imagedata"] = runtime

    @app.get("/healthz")
    def healthz() -> Response:
        # Ready even when the import failed: calls must reach this instance and get the import error as a
        # 500, rather than wait for an instance that would never become ready (docs/serverless.md).
        if runtime.error is not None:
            return Response(json.dumps({"ok": False, "error": runtime.error["error"]}), 200,
                            mimetype="application/json")
        return Response('{"ok": true}', 200, mimetype="application/json")

    @app.post("/")
    def invoke() -> Response:
        started = time.perf_counter()
        log = CallLog()
        status, body = runtime.call(request.get_data(), request.headers.get(ACTIVATION_HEADER, ""), log)
        resp = Response(body, status, mimetype="application/json")
        resp.headers["X-Minik8s-Duration-Ms"] = f"{(time.perf_counter() - started) * 1000:.3f}"
        resp.headers["X-Minik8s-Logs"] = base64.b64encode(log.text().encode("utf-8")).decode("ascii")
        return resp

    return app


def __getattr__(name: str) -> Any:
    # gunicorn loads `imagedata.app:app` in each worker; building it here (not at import) keeps a plain
    # `import imagedata.app` free of user code.
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
