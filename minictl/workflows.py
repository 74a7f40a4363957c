"""``minictl workflow``: run workflows and read their executions (docs/workflows.md).

::

    minictl workflow invoke NAME [-d JSON|@FILE] [--async] [--timeout S] [--gateway URL] [-n NS]
        POST {gateway}/workflow/NS/NAME → the output JSON (stdout); --async: the execution's name
    minictl workflow executions NAME        NAME PHASE STARTED DURATION CURRENT, newest first
    minictl workflow describe EXECUTION     the execution, then one line per state of its trace:
                                            STATE BRANCH TYPE STATUS ATTEMPT DURATION ACTIVATION RESULT

The gateway is found in this order: ``--gateway`` (or ``MINIK8S_GATEWAY_URL``); the ``status.url`` of a
Function the workflow calls (the URL the gateway advertises itself, so it is right even when the
apiserver is not the one of this machine's minik8s home); ``MINIK8S_GATEWAY_PORT`` in the home's
``cluster.env`` (``minictl trigger`` does the same, minus the second step). The Workflow objects
themselves go through ``minictl apply -f`` / ``get`` / ``delete``. Results go to stdout, errors are
one ``error:`` line (exit 1).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx

from minictl.printers import aligned, one_line
from minictl.triggers import GATEWAY_ENV
from minictl.triggers import gateway_url as gateway_from_home
from minik8s.api import registry
from minik8s.client.rest import ApiClient
from minik8s.errors import ApiError, NotFound
from minik8s.timeutil import human_duration, parse_rfc3339

WORKFLOWS = registry.lookup("workflows")
EXECUTIONS = registry.lookup("workflowexecutions")
FUNCTIONS = registry.lookup("functions")
WORKFLOW_LABEL = "minik8s.io/workflow"
EXECUTION_HEADER = "X-Minik8s-Execution-Id"
RESULT_WIDTH = 60


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


_namespace_option = click.option("-n", "--namespace", expose_value=False, callback=_set_namespace,
                                 help="The namespace of the workflow.")


# --------------------------------------------------------------------------------------------- helpers

def task_functions(spec: Any) -> list[str]:
    """The functions a workflow's Task states name, Parallel branches included, in order, once each."""
    found: list[str] = []

    def walk(scope: Any) -> None:
        states = scope.get("states") if isinstance(scope, dict) else None
        for state in (states or {}).values():
            if not isinstance(state, dict):
                continue
            if state.get("type") == "Task" and isinstance(state.get("function"), str) \
                    and state["function"] not in found:
                found.append(state["function"])
            for branch in state.get("branches") or []:
                walk(branch)

    walk(spec)
    return found


def find_gateway(client: ApiClient, namespace: str, workflow: dict[str, Any], flag: str | None) -> str:
    """The gateway's base URL (the order is in the module docstring)."""
    if flag:
        return flag.rstrip("/")
    for name in task_functions(workflow.get("spec")):
        try:
            fn = client.get(FUNCTIONS, name, namespace)
        except ApiError:
            continue
        url = str((fn.get("status") or {}).get("url") or "")
        if "/function/" in url:
            return url.split("/function/", 1)[0]
    return gateway_from_home(None)


def _time(value: Any) -> float | None:
    parsed = parse_rfc3339(value) if isinstance(value, str) else None
    return parsed.timestamp() if parsed is not None else None


def duration(start: Any, end: Any = None, *, now: float | None = None) -> str:
    """``1.52s``, ``2m3s``; from ``start`` to ``end`` (or to now while it runs); ``-`` without a start."""
    t0 = _time(start)
    if t0 is None:
        return "-"
    t1 = _time(end)
    if t1 is None:
        t1 = now if now is not None else time.time()
    seconds = max(0.0, t1 - t0)
    return f"{seconds:.2f}s" if seconds < 60 else human_duration(seconds)


def current_cell(status: dict[str, Any]) -> str:
    """The states in progress (``Fan[1]/Work``), without the Parallel states that only wait for branches."""
    cursors = [c for c in status.get("current") or [] if isinstance(c, dict)]
    branches = {str(c.get("branch") or "") for c in cursors}
    names = []
    for c in cursors:
        branch, state = str(c.get("branch") or ""), str(c.get("state") or "")
        prefix = f"{branch}/{state}[" if branch else f"{state}["
        if any(b.startswith(prefix) for b in branches):
            continue  # a Parallel: its branches are listed
        names.append(f"{branch}/{state}" if branch else state)
    return ",".join(names) or "-"


def _value_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = one_line(text)
    return text if len(text) <= RESULT_WIDTH else text[:RESULT_WIDTH - 1] + "…"


def _read_data(data: str) -> Any:
    if data.startswith("@"):
        try:
            data = Path(data[1:]).read_text()
        except OSError as exc:
            raise click.UsageError(f"cannot read {data[1:]}: {exc.strerror or exc}") from None
    try:
        return json.loads(data or "{}")
    except ValueError as exc:
        raise click.UsageError(f"-d is not valid JSON: {exc}") from None


# --------------------------------------------------------------------------------------------- commands

@click.group("workflow")
def workflow() -> None:
    """Workflows: run one, list its executions, read an execution's trace (the objects: minictl apply/get)."""


@workflow.command("invoke")
@click.argument("name")
@click.option("-d", "--data", default="{}", show_default=True, metavar="JSON",
              help="The input, any JSON (@FILE reads it from a file).")
@click.option("--async", "async_", is_flag=True, help="Do not wait for the end: print the execution's name.")
@click.option("--timeout", type=float, default=330.0, show_default=True,
              help="Seconds to wait for the answer (the gateway answers 504 past its --workflow-sync-timeout).")
@click.option("--gateway", envvar=GATEWAY_ENV, default=None,
              help=f"The gateway's URL [default: from a function's status.url, else cluster.env; env {GATEWAY_ENV}].")
@_namespace_option
def invoke(name: str, data: str, async_: bool, timeout: float, gateway: str | None) -> None:
    """Run the workflow NAME with the input and print its output (JSON)."""
    session = _session()
    payload = _read_data(data)
    ns = session.namespace
    wf = session.client.get(WORKFLOWS, name, ns)
    base = find_gateway(session.client, ns, wf, gateway)
    url = f"{base}/workflow/{ns}/{name}"
    try:
        with httpx.Client(timeout=httpx.Timeout(session.request_timeout, read=timeout),
                          transport=session.transport, headers={"User-Agent": "minictl"}) as http:
            response = http.post(url, params={"async": "true"} if async_ else None,
                                 content=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    except httpx.TimeoutException:
        _die(f"no answer from {url} within {timeout:.0f}s")
    except httpx.HTTPError as exc:
        _die(f"cannot reach the gateway at {base}: {one_line(str(exc)) or type(exc).__name__} "
             f"(is it running? make status; or give --gateway URL)")
    execution = response.headers.get(EXECUTION_HEADER, "")
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code == 202 and isinstance(body, dict):
        click.echo(str(body.get("executionId") or ""))
        return
    if response.status_code == 200:
        click.echo(response.text, nl=not response.text.endswith("\n"))
        if execution:
            click.echo(f"execution {execution} succeeded", err=True)
        return
    if isinstance(body, dict) and response.status_code == 500 and "execution" in body:
        cause = f": {body['cause']}" if body.get("cause") else ""
        _die(f"execution {body['execution']} failed with {body.get('error')}{cause} "
             f"(minictl workflow describe {body['execution']})")
    message = body.get("error") if isinstance(body, dict) and body.get("error") else str(body)
    _die(f"{name} answered {response.status_code}: {message}")


@workflow.command("executions")
@click.argument("name")
@_namespace_option
def executions(name: str) -> None:
    """The executions of the workflow NAME, newest first."""
    session = _session()
    items, _ = session.client.list(EXECUTIONS, session.namespace, label_selector=f"{WORKFLOW_LABEL}={name}")
    if not items:
        click.echo(f"No executions found for workflow {session.namespace}/{name}.", err=True)
        return

    def started(obj: dict[str, Any]) -> str:
        return str((obj.get("status") or {}).get("startTime") or (obj.get("metadata") or {}).get("creationTimestamp")
                   or "")

    def newest(obj: dict[str, Any]) -> float:
        return _time(started(obj)) or 0.0

    rows = [["NAME", "PHASE", "STARTED", "DURATION", "CURRENT"]]
    for obj in sorted(items, key=newest, reverse=True):
        status = obj.get("status") or {}
        when = started(obj)
        rows.append([str((obj.get("metadata") or {}).get("name", "")), str(status.get("phase") or "Pending"),
                     when.split(".")[0].rstrip("Z") + "Z" if when else "-",
                     duration(status.get("startTime"), status.get("completionTime")), current_cell(status)])
    click.echo("\n".join(aligned(rows)))


def trace_rows(trace: list[Any], wait_until: str = "") -> list[list[str]]:
    rows = [["STATE", "BRANCH", "TYPE", "STATUS", "ATTEMPT", "DURATION", "ACTIVATION", "RESULT"]]
    for entry in trace:
        if not isinstance(entry, dict):
            continue
        if entry.get("error"):
            result = _value_text(f"{entry['error']}: {entry.get('cause') or ''}".rstrip(": "))
        elif entry.get("status") == "Running" and entry.get("type") == "Wait" and wait_until:
            result = f"waiting until {wait_until}"
        elif "output" in entry:
            result = _value_text(entry.get("output"))
        else:
            result = "-"
        rows.append([str(entry.get("state") or ""), str(entry.get("branch") or "-"), str(entry.get("type") or ""),
                     str(entry.get("status") or ""), str(entry.get("attempt") or 1),
                     duration(entry.get("startTime"), entry.get("endTime")) if entry.get("endTime")
                     else "-", str(entry.get("activationId") or "-")[:12], result])
    return rows


@workflow.command("describe")
@click.argument("execution")
@_namespace_option
def describe(execution: str) -> None:
    """Show one execution: its input, output or error, and a line per state it went through."""
    session = _session()
    try:
        obj = session.client.get(EXECUTIONS, execution, session.namespace)
    except NotFound:
        _die(f'execution "{execution}" not found in namespace {session.namespace} '
             f"(minictl workflow executions WORKFLOW lists them)")
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    pairs = [
        ("Name:", str(meta.get("name", ""))),
        ("Namespace:", str(meta.get("namespace", session.namespace))),
        ("Workflow:", str(spec.get("workflow") or "")),
        ("Phase:", phase),
        ("Started:", str(status.get("startTime") or "-")),
        ("Completed:", str(status.get("completionTime") or "-")),
        ("Duration:", duration(status.get("startTime"), status.get("completionTime"))),
        ("Input:", json.dumps(spec.get("input"), separators=(",", ":"))),
    ]
    if phase == "Succeeded":
        pairs.append(("Output:", json.dumps(status.get("output"), separators=(",", ":"))))
    elif phase == "Failed":
        pairs.append(("Error:", f"{status.get('error')}: {status.get('cause') or ''}".rstrip(": ")))
    else:
        pairs.append(("Current:", current_cell(status)))
        if status.get("waitUntil"):
            pairs.append(("Waiting until:", str(status["waitUntil"])))
    width = max(len(k) for k, _ in pairs) + 2
    lines = [k.ljust(width) + one_line(v) for k, v in pairs]
    trace = status.get("trace") or []
    lines.append("Trace:")
    rows = trace_rows(trace, str(status.get("waitUntil") or ""))
    lines += ["  " + line for line in aligned(rows)] if trace else ["  <none>"]
    click.echo("\n".join(lines))


__all__ = ["current_cell", "duration", "find_gateway", "task_functions", "trace_rows", "workflow"]
