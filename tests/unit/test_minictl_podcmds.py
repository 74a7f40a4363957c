"""``minictl logs`` and ``minictl exec`` against a fake apiserver (httpx.MockTransport): requests, output, exits."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from click.testing import CliRunner, Result

from minictl.main import Session, cli

pytestmark = pytest.mark.timeout(30)


def status(code: int, reason: str, message: str) -> httpx.Response:
    return httpx.Response(code, json={"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                                      "message": message, "code": code})


class FakeApi:
    """Answers pods/{name}/log and pods/{name}/exec; records requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Callable[[httpx.Request], httpx.Response] = lambda r: httpx.Response(200, text="hello\nworld\n")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture()
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture()
def run(api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Callable[..., Result]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MINIK8S_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINIK8S_SERVER", raising=False)
    monkeypatch.delenv("MINIK8S_DEBUG", raising=False)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["-s", "http://fake", *args], obj=Session(transport=httpx.MockTransport(api)))
    return invoke


def test_logs_prints_the_text_and_sends_no_options_by_default(run, api) -> None:  # type: ignore[no-untyped-def]
    result = run("logs", "web")
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello\nworld\n"
    req = api.requests[-1]
    assert req.method == "GET" and req.url.path == "/api/v1/namespaces/default/pods/web/log"
    assert dict(req.url.params) == {}


def test_logs_passes_every_option(run, api) -> None:  # type: ignore[no-untyped-def]
    result = run("logs", "pod/web", "-c", "side", "-f", "--tail", "5", "-p", "--timestamps", "-n", "team")
    assert result.exit_code == 0, result.output
    req = api.requests[-1]
    assert req.url.path == "/api/v1/namespaces/team/pods/web/log"
    assert dict(req.url.params) == {"container": "side", "follow": "true", "tailLines": "5", "previous": "true",
                                    "timestamps": "true"}


def test_logs_error_is_one_line_with_kubernetes_words(run, api) -> None:  # type: ignore[no-untyped-def]
    api.answer = lambda r: status(400, "BadRequest", "a container name must be specified for pod web, "
                                                     "choose one of: [a b]")
    result = run("logs", "web")
    assert result.exit_code == 1
    assert result.stderr == ("Error from server (BadRequest): a container name must be specified for pod web, "
                             "choose one of: [a b]\n")


def test_logs_of_another_kind_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    result = run("logs", "svc/web")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: only pods have logs")


def test_logs_unreachable_server_is_one_line(run, api) -> None:  # type: ignore[no-untyped-def]
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")
    api.answer = refuse
    result = run("logs", "web")
    assert result.exit_code == 1
    assert result.stderr == "error: cannot reach the minik8s apiserver at http://fake: connection refused\n"


def test_exec_prints_both_streams_and_exits_with_the_command_code(run, api) -> None:  # type: ignore[no-untyped-def]
    api.answer = lambda r: httpx.Response(200, json={"stdout": "out\n", "stderr": "err\n", "exitCode": 3})
    result = run("exec", "web", "-c", "main", "-n", "team", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.exit_code == 3
    assert result.stdout == "out\n" and result.stderr == "err\n"
    req = api.requests[-1]
    assert req.method == "POST" and req.url.path == "/api/v1/namespaces/team/pods/web/exec"
    assert json.loads(req.content) == {"command": ["sh", "-c", "echo out; echo err >&2; exit 3"], "container": "main"}


def test_exec_options_after_the_pod_and_a_timeout(run, api) -> None:  # type: ignore[no-untyped-def]
    api.answer = lambda r: httpx.Response(200, json={"stdout": "", "stderr": "", "exitCode": 0})
    result = run("exec", "--timeout", "5", "web", "--", "ls", "-l")
    assert result.exit_code == 0, result.output
    assert json.loads(api.requests[-1].content) == {"command": ["ls", "-l"], "timeout": 5.0}


def test_exec_needs_a_command(run) -> None:  # type: ignore[no-untyped-def]
    result = run("exec", "web")
    assert result.exit_code != 0
    assert "Missing argument" in result.stderr


def test_exec_error_is_one_line(run, api) -> None:  # type: ignore[no-untyped-def]
    api.answer = lambda r: status(400, "BadRequest", 'pod "web" is not scheduled yet')
    result = run("exec", "web", "--", "true")
    assert result.exit_code == 1
    assert result.stderr == 'Error from server (BadRequest): pod "web" is not scheduled yet\n'
