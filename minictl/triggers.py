"""``minictl trigger``: fire a Trigger by hand (docs/workflows.md, Triggers and Rules).

::

    minictl trigger fire NAME [-d JSON|@FILE] [-o json] [--gateway URL] [-n NS]
        POST {gateway}/trigger/NS/NAME with the payload → one line per rule started:
        rule RULE → function FN: activation ID        rule RULE → workflow WF: execution ID

The Trigger and Rule objects themselves go through ``minictl apply -f`` / ``get`` / ``delete``.
The gateway is found from ``--gateway`` (or ``MINIK8S_GATEWAY_URL``), else from the cluster's
``cluster.env`` in the minik8s home (``MINIK8S_GATEWAY_PORT``, written by ``make up``).
A rule whose target could not be started prints an ``error:`` line and the command exits 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx

from minictl.printers import one_line
from minik8s.client.config import minik8s_home
from minik8s.cluster.layout import read_env_file

GATEWAY_ENV = "MINIK8S_GATEWAY_URL"


def _die(message: str) -> NoReturn:
    click.echo(f"error: {one_line(message)}", err=True)
    raise click.exceptions.Exit(1)


def _session() -> Any:
    obj = click.get_current_context().find_root().obj
    if obj is None:
        raise click.UsageError("minictl was started without a session")
    return obj


def _set_namespace(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.find_root().obj.namespace_flag = value


def gateway_url(flag: str | None = None) -> str:
    """The serverless gateway's base URL: ``flag`` (``--gateway`` / ``MINIK8S_GATEWAY_URL``), else the
    port in ``cluster.env`` of the minik8s home. ``click.UsageError`` when neither says."""
    if flag:
        return flag.rstrip("/")
    env_file = minik8s_home() / "cluster.env"
    port = read_env_file(env_file).get("MINIK8S_GATEWAY_PORT")
    if not port:
        raise click.UsageError(f"no gateway URL: give --gateway URL or set {GATEWAY_ENV} "
                               f"({env_file} names no MINIK8S_GATEWAY_PORT; is the cluster up? make up)")
    return f"http://127.0.0.1:{port}"


def describe_firing(firing: dict[str, Any]) -> str:
    target = f"function {firing['function']}" if "function" in firing else f"workflow {firing.get('workflow')}"
    if firing.get("error"):
        return f"rule {firing.get('rule')} → {target}: {firing['error']}"
    started = f"activation {firing['activationId']}" if "activationId" in firing \
        else f"execution {firing.get('executionId')}"
    return f"rule {firing.get('rule')} → {target}: {started}"


@click.group("trigger")
def trigger() -> None:
    """Triggers: fire one by hand (the objects: minictl apply/get/delete)."""


@trigger.command("fire")
@click.argument("name")
@click.option("-d", "--data", default="{}", show_default=True, metavar="JSON",
              help="The payload, any JSON (@FILE reads it from a file).")
@click.option("-o", "--output", type=click.Choice(["json"]), default=None, help="Print the gateway's answer as JSON.")
@click.option("--gateway", envvar=GATEWAY_ENV, default=None,
              help="The gateway URL [default: from cluster.env in the minik8s home].")
@click.option("-n", "--namespace", expose_value=False, callback=_set_namespace, help="The namespace of the trigger.")
def fire(name: str, data: str, output: str | None, gateway: str | None) -> None:
    """Fire the trigger NAME: start every enabled rule bound to it with the payload."""
    session = _session()
    if data.startswith("@"):
        try:
            data = Path(data[1:]).read_text()
        except OSError as exc:
            raise click.UsageError(f"cannot read {data[1:]}: {exc.strerror or exc}") from None
    try:
        json.loads(data or "{}")
    except ValueError as exc:
        raise click.UsageError(f"-d is not valid JSON: {exc}") from None
    ns = session.namespace
    url = f"{gateway_url(gateway)}/trigger/{ns}/{name}"
    try:
        with httpx.Client(timeout=session.request_timeout, transport=session.transport,
                          headers={"User-Agent": "minictl"}) as http:
            response = http.post(url, content=(data or "{}").encode(), headers={"Content-Type": "application/json"})
    except httpx.HTTPError as exc:
        _die(f"cannot reach the gateway at {url}: {one_line(str(exc)) or type(exc).__name__} "
             "(is it running? make status)")
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.text}
    if response.status_code == 404:
        _die(f'triggers.minik8s.io "{name}" not found in namespace {ns}')
    if not response.is_success:
        _die(f"the gateway answered {response.status_code}: {answer.get('error') or response.text}")
    firings = list(answer.get("firings") or [])
    if output == "json":
        click.echo(json.dumps(answer, indent=2))
    elif not firings:
        click.echo(f"trigger {name} fired: no enabled rule")
    else:
        for firing in firings:
            if not firing.get("error"):
                click.echo(describe_firing(firing))
    failed = [f for f in firings if f.get("error")]
    for firing in failed:
        click.echo(f"error: {one_line(describe_firing(firing))}", err=True)
    if failed:
        raise click.exceptions.Exit(1)


__all__ = ["describe_firing", "gateway_url", "trigger"]
