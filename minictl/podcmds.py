"""``minictl logs`` and ``minictl exec``: the two commands that talk to a pod's containers (through the
apiserver's ``pods/{name}/log`` and ``pods/{name}/exec`` proxy to the kubelet).

::

    minictl logs POD [-c CONTAINER] [-f] [--tail N] [-p] [--timestamps] [-n NS]   text as it comes, to stdout
    minictl exec POD [-c CONTAINER] [-n NS] [--timeout S] -- CMD ARGS...          stdout, stderr; exit = the command's

``POD`` may be written ``pod/NAME``. Failures are raised as ``minik8s.errors`` (``ApiError`` from a Status
answer, ``ConnectionFailed``) or ``click.UsageError``; ``minictl``'s main turns each into one stderr line.
The commands need only ``ctx.obj`` to have :class:`SessionLike`'s attributes (``minictl.main.Session``).
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import click
import httpx

from minik8s.api import registry
from minik8s.client.config import ClientConfig
from minik8s.errors import ApiError, ConnectionFailed

_PODS = registry.lookup("pods")


class SessionLike(Protocol):
    """What these commands use of ``minictl.main.Session``."""

    transport: httpx.BaseTransport | None
    namespace_flag: str | None
    request_timeout: float

    @property
    def config(self) -> ClientConfig: ...

    @property
    def namespace(self) -> str: ...


def _session() -> SessionLike:
    obj = click.get_current_context().find_root().obj
    if obj is None:
        raise click.UsageError("minictl was started without a session")
    session: SessionLike = obj
    return session


def _set_namespace(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.find_root().obj.namespace_flag = value


_namespace_option = click.option("-n", "--namespace", expose_value=False, callback=_set_namespace,
                                 help="The namespace of the pod.")


def pod_name(arg: str) -> str:
    """``NAME`` or ``pod/NAME`` (``pods/``, ``po/`` too) → NAME; ``UsageError`` for another kind."""
    if "/" not in arg:
        return arg
    kind, name = arg.split("/", 1)
    if kind.lower() not in ("pod", "pods", "po") or not name:
        raise click.UsageError(f"only pods have logs and run commands, not {arg!r}")
    return name


def _http(session: SessionLike, read_timeout: float | None) -> httpx.Client:
    server = session.config.server.rstrip("/")
    timeout = httpx.Timeout(session.request_timeout, read=read_timeout)
    return httpx.Client(base_url=server, timeout=timeout, transport=session.transport,
                        headers={"User-Agent": "minictl"})


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = response.text.strip()
    raise ApiError.from_status(body, response.status_code)


def _unreachable(server: str, exc: Exception) -> ConnectionFailed:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return ConnectionFailed(f"cannot reach the minik8s apiserver at {server}: {reason}")


@click.command("logs")
@click.argument("pod")
@click.option("-c", "--container", default=None, help="The container (needed when the pod has several).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until Ctrl-C.")
@click.option("--tail", type=int, default=-1, show_default=True, help="Only the last N lines (-1: all).")
@click.option("-p", "--previous", is_flag=True, help="The previous instance of the container (after a restart).")
@click.option("--timestamps", is_flag=True, help="Prefix each line with its RFC 3339 timestamp.")
@_namespace_option
def logs(pod: str, container: str | None, follow: bool, tail: int, previous: bool, timestamps: bool) -> None:
    """Print the logs of a container in a pod."""
    session = _session()
    name = pod_name(pod)
    params: dict[str, str] = {}
    if container:
        params["container"] = container
    if follow:
        params["follow"] = "true"
    if tail >= 0:
        params["tailLines"] = str(tail)
    if previous:
        params["previous"] = "true"
    if timestamps:
        params["timestamps"] = "true"
    out = sys.stdout.buffer
    with _http(session, None if follow else session.request_timeout) as http:
        try:
            with http.stream("GET", _PODS.path(session.namespace, name, "log"), params=params) as response:
                if not response.is_success:
                    response.read()
                    _raise_for(response)
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    out.flush()
        except httpx.HTTPError as exc:
            raise _unreachable(session.config.server, exc) from exc


@click.command("exec")
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-c", "--container", default=None, help="The container (needed when the pod has several).")
@click.option("--timeout", type=float, default=None, help="Seconds the command may run (default: the kubelet's).")
@_namespace_option
def exec_(pod: str, command: tuple[str, ...], container: str | None, timeout: float | None) -> None:
    """Run a command in a container: minictl exec POD [-c C] -- CMD ARGS...

    Prints the command's stdout and stderr and exits with its exit code.
    """
    session = _session()
    name = pod_name(pod)
    body: dict[str, Any] = {"command": list(command)}
    if container:
        body["container"] = container
    if timeout is not None:
        body["timeout"] = timeout
    read = (600.0 if timeout is None else timeout) + session.request_timeout  # the apiserver's limit, then ours
    with _http(session, read) as http:
        try:
            response = http.post(_PODS.path(session.namespace, name, "exec"), json=body)
        except httpx.HTTPError as exc:
            raise _unreachable(session.config.server, exc) from exc
    _raise_for(response)
    try:
        result = response.json()
    except ValueError:
        raise ConnectionFailed(f"the apiserver answered exec with something that is not JSON: "
                               f"{response.text[:200]!r}") from None
    stdout, stderr = str(result.get("stdout") or ""), str(result.get("stderr") or "")
    if stdout:
        sys.stdout.write(stdout)
        sys.stdout.flush()
    if stderr:
        sys.stderr.write(stderr)
        sys.stderr.flush()
    code = result.get("exitCode", 0)
    raise click.exceptions.Exit(code if isinstance(code, int) and not isinstance(code, bool) else 1)
