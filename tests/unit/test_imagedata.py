"""The function runtime (imagedata): the app with a real main.py, and real gunicorn via ``python -m imagedata``."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagedata import LOG_LIMIT, Settings, SettingsError
from imagedata.app import create_app
from minik8s.testing import free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]

MakeClient = Callable[..., Any]


@pytest.fixture()
def make_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeClient:
    """Write main.py (and other files) into a fresh folder and return a test client of its app."""
    # The runtime puts the function folder on sys.path and registers module `main`: undo both.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "main", raising=False)

    def make(source: str, *, files: dict[str, str] | None = None, **settings: Any) -> Any:
        fn_dir = tmp_path / f"fn{len(list(tmp_path.iterdir()))}"
        fn_dir.mkdir()
        (fn_dir / "main.py").write_text(textwrap.dedent(source))
        for name, text in (files or {}).items():
            (fn_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (fn_dir / name).write_text(textwrap.dedent(text))
        app = create_app(fn_dir, settings=Settings(**{"function": "ns/fn", **settings}))
        return app.test_client()

    return make


def logs(resp: Any) -> str:
    return base64.b64decode(resp.headers["X-Minik8s-Logs"]).decode()


def test_kwargs_call_returns_json_with_duration_and_logs(make_client: MakeClient) -> None:
    client = make_client("""
        import logging, sys
        handler = logging.StreamHandler()             # bound to sys.stderr at import
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger = logging.getLogger("fn")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        out = sys.stdout                                                                # a stream kept at import
        print("importing")
        def helper():
            print("from a helper")
        def run(a, b=5):
            print("adding", a, b)
            print("to stderr", file=sys.stderr)
            logger.info("logged")
            out.write("kept stream\\n")
            helper()
            return a + b
        """)
    resp = client.post("/", data=json.dumps({"a": 3}))
    assert resp.status_code == 200
    assert resp.get_json() == 8
    assert resp.mimetype == "application/json"
    assert float(resp.headers["X-Minik8s-Duration-Ms"]) >= 0
    assert logs(resp) == "adding 3 5\nto stderr\nINFO logged\nkept stream\nfrom a helper\n"
    second = client.post("/", data=b'{"a": 1, "b": 1}')
    assert second.get_json() == 2
    assert logs(second).startswith("adding 1 1\n")       # per call: nothing of the first call
    assert client.get("/healthz").get_json() == {"ok": True}


def test_empty_body_is_an_empty_object(make_client: MakeClient) -> None:
    client = make_client("def run(name='world'):\n    return {'hello': name}\n")
    assert client.post("/").get_json() == {"hello": "world"}
    assert client.post("/", data=b"  \n").get_json() == {"hello": "world"}


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "invalid JSON"),
    (b"\xff\xfe", "invalid JSON"),
    (b"[1, 2]", "the body must be a JSON object, not an array"),
    (b'"text"', "the body must be a JSON object, not a string"),
    (b"null", "the body must be a JSON object, not null"),
])
def test_bad_body_is_400(make_client: MakeClient, body: bytes, message: str) -> None:
    client = make_client("def run(**kw):\n    return kw\n")
    resp = client.post("/", data=body)
    assert resp.status_code == 400
    assert resp.get_json()["error"].startswith(message)
    assert "X-Minik8s-Duration-Ms" in resp.headers


def test_arguments_not_fitting_are_400_but_a_typeerror_inside_is_500(make_client: MakeClient) -> None:
    client = make_client("""
        def run(a, b):
            return len(a) + b          # TypeError inside the function when a is a number
        """)
    missing = client.post("/", data=b'{"a": "x"}')
    assert missing.status_code == 400
    assert missing.get_json() == {"error": "bad arguments: missing a required argument: 'b'"}
    extra = client.post("/", data=b'{"a": "x", "b": 1, "c": 2}')
    assert extra.status_code == 400
    assert extra.get_json()["error"].startswith("bad arguments: ")
    inside = client.post("/", data=b'{"a": 1, "b": 2}')
    assert inside.status_code == 500
    assert inside.get_json()["type"] == "TypeError"


def test_exception_is_500_with_type_and_traceback(make_client: MakeClient) -> None:
    client = make_client("""
        def run(x):
            print("about to fail")
            return x / 0
        """)
    resp = client.post("/", data=b'{"x": 1}')
    assert resp.status_code == 500
    body = resp.get_json()
    assert body["error"] == "division by zero"
    assert body["type"] == "ZeroDivisionError"
    assert 'main.py", line 4, in run' in body["traceback"]
    assert "imagedata" not in body["traceback"]          # the runtime's own frame is left out
    assert logs(resp) == "about to fail\n"


def test_event_context_style_gets_body_and_context(make_client: MakeClient) -> None:
    client = make_client("""
        def handler(event, context):
            return {"event": event, "context": context}
        """, entry_point="handler", timeout=30)
    before = time.time()
    resp = client.post("/", data=b'{"k": [1, 2]}', headers={"X-Minik8s-Activation-Id": "a" * 32})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["event"] == {"k": [1, 2]}
    assert body["context"]["activation_id"] == "a" * 32
    assert body["context"]["function"] == "ns/fn"
    assert before + 29 <= body["context"]["deadline"] <= time.time() + 31


def test_event_named_parameters_in_another_shape_are_kwargs(make_client: MakeClient) -> None:
    client = make_client("def run(event, context=None, extra=1):\n    return [event, context, extra]\n")
    assert client.post("/", data=b'{"event": 5}').get_json() == [5, None, 1]


def test_async_entry_point(make_client: MakeClient) -> None:
    client = make_client("""
        import asyncio
        async def run(n):
            await asyncio.sleep(0)
            return n * 2
        """)
    assert client.post("/", data=b'{"n": 21}').get_json() == 42


@pytest.mark.parametrize("body", [
    "while True:\n        pass",                                   # busy CPU
    "import time\n    time.sleep(30)",                             # blocked in C
    "try:\n        time.sleep(30)\n    except Exception:\n        return 'swallowed'",
    "try:\n        time.sleep(30)\n    except BaseException:\n        return 'swallowed'",
])
def test_timeout_is_504_and_the_worker_stays_usable(make_client: MakeClient, body: str) -> None:
    client = make_client(f"import time\ndef run(slow=True):\n    if not slow:\n        return 'fast'\n    {body}\n",
                         timeout=0.3)
    started = time.monotonic()
    resp = client.post("/", data=b"{}")
    assert time.monotonic() - started < 5
    assert resp.status_code == 504
    assert resp.get_json() == {"error": "timed out after 0.3s"}
    # The call's alarm is gone; a test runner's own alarm (pytest-timeout) was given back, not cancelled.
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0 or signal.getitimer(signal.ITIMER_REAL)[0] > 1
    again = client.post("/", data=b'{"slow": false}')
    assert again.status_code == 200
    assert again.get_json() == "fast"


def test_import_failure_is_ready_on_healthz_and_500_on_call(make_client: MakeClient) -> None:
    client = make_client("import humanize_not_installed_here\ndef run():\n    return 1\n")
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["ok"] is False
    assert "No module named 'humanize_not_installed_here'" in health.get_json()["error"]
    call = client.post("/", data=b"{}")
    assert call.status_code == 500
    assert "No module named 'humanize_not_installed_here'" in call.get_json()["error"]
    assert call.get_json()["type"] == "ModuleNotFoundError"


def test_missing_entry_point_is_500(make_client: MakeClient) -> None:
    client = make_client("def other():\n    return 1\n", entry_point="run")
    assert client.get("/healthz").get_json()["ok"] is False
    assert client.post("/").get_json()["error"] == "main.py has no function 'run'"


def test_function_modules_next_to_main_import(make_client: MakeClient) -> None:
    client = make_client("from pkg.util import double\ndef run(n):\n    return double(n)\n",
                         files={"pkg/__init__.py": "", "pkg/util.py": "def double(n):\n    return 2 * n\n"})
    assert client.post("/", data=b'{"n": 4}').get_json() == 8


def test_logs_are_capped(make_client: MakeClient) -> None:
    client = make_client("def run():\n    for i in range(5000):\n        print('x' * 40)\n    return 'ok'\n")
    resp = client.post("/")
    assert resp.status_code == 200
    text = base64.b64decode(resp.headers["X-Minik8s-Logs"])
    assert len(text) <= LOG_LIMIT
    assert text.rstrip().endswith(b"bytes of output dropped]")


def test_return_value_that_is_not_json_is_500(make_client: MakeClient) -> None:
    client = make_client("def run():\n    return {1, 2}\n")
    resp = client.post("/")
    assert resp.status_code == 500
    assert resp.get_json()["error"].startswith("the return value is not JSON")


def test_sys_exit_in_the_function_is_500_not_a_dead_worker(make_client: MakeClient) -> None:
    client = make_client("import sys\ndef run():\n    sys.exit(3)\n")
    resp = client.post("/")
    assert resp.status_code == 500
    assert resp.get_json()["type"] == "SystemExit"


@pytest.mark.parametrize(("env", "message"), [
    ({"MINIK8S_TIMEOUT": "soon"}, "MINIK8S_TIMEOUT must be a number"),
    ({"MINIK8S_TIMEOUT": "0"}, "MINIK8S_TIMEOUT must be a number"),
    ({"MINIK8S_WORKERS": "2.5"}, "MINIK8S_WORKERS must be an integer"),
    ({"PORT": "70000"}, "PORT must be an integer"),
    ({"MINIK8S_ENTRY_POINT": "not-a-name"}, "MINIK8S_ENTRY_POINT must be a Python identifier"),
])
def test_bad_settings_are_one_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_settings_defaults() -> None:
    assert Settings.from_env({}) == Settings(entry_point="run", timeout=60.0, workers=2, function="", port=8080)


# ------------------------------------------------------------------------------------------ real gunicorn

@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    fn_dir = tmp_path / "function"
    fn_dir.mkdir()
    (fn_dir / "main.py").write_text(textwrap.dedent("""
        import time
        def run(a=0, b=0, sleep=0):
            print("called", a, b)
            time.sleep(sleep)
            return a + b
        """))
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "PORT": str(port), "MINIK8S_TIMEOUT": "1", "MINIK8S_WORKERS": "1",
           "MINIK8S_FUNCTION": "default/add", "PYTHONPATH": str(REPO_ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "imagedata"], cwd=fn_dir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"imagedata exited with {proc.returncode}: {log.read_text()}")
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        wait_until(healthy, timeout=30, what="gunicorn /healthz")
        yield url, proc, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_gunicorn_serves_calls_and_survives_a_timeout(served: tuple[str, subprocess.Popen[bytes], Path]) -> None:
    url, proc, log = served
    with httpx.Client(base_url=url, timeout=20) as http:
        ok = http.post("/", json={"a": 3, "b": 5})
        assert ok.status_code == 200, ok.text
        assert ok.json() == 8
        assert base64.b64decode(ok.headers["x-minik8s-logs"]) == b"called 3 5\n"
        started = time.monotonic()
        slow = http.post("/", json={"sleep": 10})
        assert slow.status_code == 504
        assert slow.json() == {"error": "timed out after 1s"}
        assert time.monotonic() - started < 5
        # One worker: the same process answers next, so it lived through the alarm.
        after = http.post("/", json={"a": 1, "b": 1})
        assert after.status_code == 200
        assert after.json() == 2
    assert proc.poll() is None
    # `python -m imagedata` became gunicorn itself (exec): the process we started is its arbiter.
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"gunicorn" in b" ".join(cmdline)
    assert "WORKER TIMEOUT" not in log.read_text()


def test_python_m_imagedata_rejects_bad_settings(tmp_path: Path) -> None:
    env = {**os.environ, "MINIK8S_WORKERS": "many", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-m", "imagedata"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=30, check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == "imagedata: MINIK8S_WORKERS must be an integer from 1 to 64, not 'many'"
