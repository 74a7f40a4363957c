"""``minictl``: the minik8s command line, with kubectl's habits.

::

    minictl [-s URL] [-n NS] [--debug] COMMAND
      apply  -f FILE|DIR|- [-R]          create or update; prints pod/x created|configured|unchanged
      create -f FILE|DIR|- [-R]
      get    KIND[,KIND]|all [NAME…] [-n NS|-A] [-o wide|yaml|json|name|jsonpath=T] [-l SEL] [-w]
      describe KIND [NAME…]
      delete KIND NAME…|-f FILE [--grace-period N] [--wait/--no-wait]
      api-resources, version
      image push FILE.tar [--name REPO:TAG] | ls | rm NAME   (the cluster registry; minictl/images.py)
      logs POD [-c C] [-f] [--tail N] [-p];  exec POD [-c C] -- CMD ARGS…   (minictl/podcmds.py)
      rollout status|history|undo|pause|resume deployment/NAME; scale KIND/NAME --replicas=N (minictl/rollout.py)
      function create|update|delete|get|describe|invoke|activations|logs …   (serverless; minictl/functions.py)
      top pod [-n NS|-A] [-l SEL] | top node   cpu and memory in use (metrics.k8s.io; minictl/top.py)
      trigger fire NAME [-d JSON]            fire a Trigger's enabled rules (minictl/triggers.py)
      workflow invoke NAME [-d JSON] [--async] | executions NAME | describe EXECUTION   (minictl/workflows.py)

Every failure ends in exactly one line on stderr per problem (kubectl's wording) and exit code 1;
no traceback unless ``--debug`` (or ``MINIK8S_DEBUG=1``).
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any, NoReturn

import click
import httpx

from minictl import jsonpath
from minictl.apply import apply_object
from minictl.describe import describe as describe_text
from minictl.functions import function as function_group
from minictl.images import image as image_group
from minictl.podcmds import exec_ as exec_command
from minictl.podcmds import logs as logs_command
from minictl.printers import (
    TablePrinter,
    aligned,
    as_list,
    format_api_error,
    one_line,
    resource_label,
    to_json,
    to_yaml,
)
from minictl.rollout import rollout as rollout_group
from minictl.rollout import scale as scale_command
from minictl.top import top as top_group
from minictl.triggers import trigger as trigger_group
from minictl.workflows import workflow as workflow_group
from minik8s.api import registry
from minik8s.api.registry import ResourceType
from minik8s.client.config import ClientConfig, ConfigError, load_config
from minik8s.client.rest import ApiClient, object_namespace
from minik8s.errors import ApiError, BadRequest, ConnectionFailed, Gone, NotFound
from minik8s.yamlio import ManifestError, load_documents

EVENT_RT = registry.by_kind("v1", "Event")
OUTPUT_FORMATS = "json,jsonpath,name,wide,yaml"


class CliError(Exception):
    """A user mistake minictl detects itself; printed as ``error: <message>``."""


@dataclass
class Session:
    """What a command needs: flags, the resolved config, and a client made on first use.

    Tests pass ``Session(transport=httpx.MockTransport(...))`` as click's ``obj``.
    """

    transport: httpx.BaseTransport | None = None
    server_flag: str | None = None
    namespace_flag: str | None = None
    debug: bool = False
    request_timeout: float = 30.0
    failed: bool = False
    _config: ClientConfig | None = None
    _client: ApiClient | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def config(self) -> ClientConfig:
        if self._config is None:
            self._config = load_config(server=self.server_flag, namespace=self.namespace_flag)
        return self._config

    @property
    def namespace(self) -> str:
        if self.namespace_flag:
            return self.namespace_flag
        try:
            return self.config.namespace
        except ConfigError:
            return "default"

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.config.server, timeout=self.request_timeout, transport=self.transport)
            self._closers.append(self._client.close)
        return self._client

    def fail(self, line: str) -> None:
        """Report one problem (one stderr line) and remember to exit 1 at the end."""
        click.echo(one_line(line), err=True)
        self.failed = True

    def close(self) -> None:
        for closer in self._closers:
            closer()
        self._closers.clear()


def _session() -> Session:
    return click.get_current_context().ensure_object(Session)


def _set_namespace(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(Session).namespace_flag = value


namespace_option = click.option("-n", "--namespace", expose_value=False, callback=_set_namespace,
                                help="The namespace for this request.")


def _finish(session: Session) -> None:
    if session.failed:
        raise click.exceptions.Exit(1)


def error_line(exc: BaseException) -> str:
    """The one line minictl prints for ``exc`` (kubectl's wording where kubectl has one)."""
    if isinstance(exc, ApiError):
        return format_api_error(exc)
    if isinstance(exc, click.UsageError):
        return f"error: {one_line(exc.format_message())}"
    if isinstance(exc, (ConnectionFailed, ConfigError, ManifestError, CliError, jsonpath.JsonPathError)):
        return f"error: {one_line(str(exc))}"
    return f"error: internal error: {type(exc).__name__}: {one_line(str(exc))} (run with --debug for details)"


class _Cli(click.Group):
    """A group whose ``main`` turns every exception into one stderr line and an exit code."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> NoReturn:
        argv = list(sys.argv[1:] if args is None else args)
        # --debug is accepted anywhere on the line (it matters most when a subcommand fails).
        debug = "--debug" in argv or os.environ.get("MINIK8S_DEBUG", "") not in ("", "0")
        argv = [a for a in argv if a != "--debug"]
        try:
            code = super().main(argv, prog_name or "minictl", complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("", err=True)
            code = 130
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except BrokenPipeError:
            code = 0
        except Exception as exc:  # noqa: BLE001 - one readable line instead of a traceback
            if debug:
                traceback.print_exc()
            click.echo(error_line(exc), err=True)
            code = 1
        finally:
            obj = extra.get("obj")
            if isinstance(obj, Session):
                obj.close()
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-s", "--server", envvar="MINIK8S_SERVER", help="The apiserver URL (default: ~/.minik8s/config).")
@click.option("-n", "--namespace", help="The namespace for this request.")
@click.option("--request-timeout", type=float, default=30.0, show_default=True, help="Seconds per request.")
@click.option("--debug", is_flag=True, help="Show tracebacks (accepted anywhere on the line).")
@click.pass_context
def cli(ctx: click.Context, server: str | None, namespace: str | None, request_timeout: float, debug: bool) -> None:
    """minictl controls a minik8s cluster (kubectl's habits, minik8s's kinds)."""
    session = ctx.ensure_object(Session)
    session.server_flag = server or session.server_flag
    session.namespace_flag = namespace or session.namespace_flag
    session.request_timeout = request_timeout
    session.debug = debug
    ctx.call_on_close(session.close)


cli.add_command(image_group)
cli.add_command(logs_command)
cli.add_command(exec_command)
cli.add_command(rollout_group)
cli.add_command(scale_command)
cli.add_command(function_group)
cli.add_command(top_group)
cli.add_command(trigger_group)
cli.add_command(workflow_group)


# ---------------------------------------------------------------------------------------------- helpers

def resolve_kind(name: str) -> ResourceType:
    try:
        return registry.lookup(name)
    except NotFound as exc:
        raise CliError(exc.message) from exc


def parse_targets(args: tuple[str, ...]) -> list[tuple[ResourceType, list[str]]]:
    """``pods,svc a b`` / ``all`` / ``pod/a svc/b`` → [(type, names)] in order."""
    if not args:
        raise CliError('you must specify the type of resource. Use "minictl api-resources" for a complete list')
    if "/" in args[0]:
        grouped: dict[ResourceType, list[str]] = {}
        for arg in args:
            if "/" not in arg:
                raise CliError(f"there is no need to specify a resource type as a separate argument when passing "
                               f"arguments in resource/name form (e.g. 'minictl get pod/x'): {arg}")
            kind, name = arg.split("/", 1)
            grouped.setdefault(resolve_kind(kind), []).append(name)
        return list(grouped.items())
    kinds: list[ResourceType] = []
    for part in args[0].split(","):
        if not part:
            continue
        if part.lower() == "all":
            kinds.extend(r for r in registry.RESOURCES if "all" in r.categories)
        else:
            kinds.append(resolve_kind(part))
    return [(rt, list(args[1:])) for rt in dict.fromkeys(kinds)]


def _ns_for(rt: ResourceType, session: Session, all_namespaces: bool = False) -> str | None:
    if not rt.namespaced or all_namespaces:
        return None
    return session.namespace


def _load(files: tuple[str, ...], recursive: bool) -> list[tuple[str, dict[str, Any]]]:
    if not files:
        raise CliError("must specify one of -f and -k")
    return load_documents(list(files), recursive=recursive)


def _kind_of(source: str, obj: dict[str, Any]) -> ResourceType:
    rt = registry.by_kind(str(obj.get("apiVersion")), str(obj.get("kind")))
    if rt is None:
        raise CliError(f'unable to recognize "{source}": no matches for kind "{obj.get("kind")}" in version '
                       f'"{obj.get("apiVersion")}"')
    return rt


def _name_of(source: str, obj: dict[str, Any]) -> str:
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        raise CliError(f"{source}: resource name may not be empty")
    return str(name)


def _report(session: Session, exc: Exception) -> None:
    if isinstance(exc, (ApiError, CliError, ManifestError)):
        session.fail(error_line(exc))
    else:
        raise exc


# ---------------------------------------------------------------------------------------------- apply/create

@cli.command()
@click.option("-f", "--filename", "files", multiple=True, help="File, folder or - for stdin.")
@click.option("-R", "--recursive", is_flag=True, help="Walk folders given with -f recursively.")
@namespace_option
def apply(files: tuple[str, ...], recursive: bool) -> None:
    """Create resources, or update them to match the files."""
    session = _session()
    explicit_ns = session.namespace_flag or None
    for source, obj in _load(files, recursive):
        try:
            rt = _kind_of(source, obj)
            _name_of(source, obj)
            outcome, result = apply_object(session.client, rt, obj, _default_ns(rt, obj, session, explicit_ns))
            click.echo(f"{resource_label(rt)}/{result['metadata']['name']} {outcome.value}")
        except (ApiError, CliError) as exc:
            _report(session, exc)
    _finish(session)


def _default_ns(rt: ResourceType, obj: dict[str, Any], session: Session, explicit: str | None) -> str | None:
    if not rt.namespaced:
        return None
    try:
        return object_namespace(rt, obj, explicit) if explicit else ((obj.get("metadata") or {}).get("namespace")
                                                                     or session.namespace)
    except BadRequest as exc:
        raise CliError(exc.message) from exc


@cli.command()
@click.option("-f", "--filename", "files", multiple=True, help="File, folder or - for stdin.")
@click.option("-R", "--recursive", is_flag=True)
@namespace_option
def create(files: tuple[str, ...], recursive: bool) -> None:
    """Create resources from files."""
    session = _session()
    explicit_ns = session.namespace_flag or None
    for source, obj in _load(files, recursive):
        try:
            rt = _kind_of(source, obj)
            _name_of(source, obj)
            result = session.client.create(obj, namespace=_default_ns(rt, obj, session, explicit_ns))
            click.echo(f"{resource_label(rt)}/{result['metadata']['name']} created")
        except (ApiError, CliError) as exc:
            _report(session, exc)
    _finish(session)


# ---------------------------------------------------------------------------------------------- get

@cli.command()
@click.argument("args", nargs=-1)
@click.option("-o", "--output", default="", help=f"One of: {OUTPUT_FORMATS} (jsonpath=TEMPLATE).")
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-l", "--selector", default=None, help="Label selector, e.g. app=web,tier!=db.")
@click.option("--field-selector", default=None)
@click.option("--show-labels", is_flag=True)
@click.option("--no-headers", is_flag=True)
@click.option("-w", "--watch", is_flag=True, help="After the list, print changes until Ctrl-C or --timeout.")
@click.option("--timeout", type=float, default=None, help="Stop watching after this many seconds.")
@namespace_option
def get(args: tuple[str, ...], output: str, all_namespaces: bool, selector: str | None, field_selector: str | None,
        show_labels: bool, no_headers: bool, watch: bool, timeout: float | None) -> None:
    """Show resources: tables from the server, or objects as yaml, json, names or jsonpath."""
    session = _session()
    targets = parse_targets(args)
    fmt, template = _output_format(output)
    if watch and (len(targets) != 1 or len(targets[0][1]) > 1):
        raise CliError("you may only specify a single resource type (and at most one name) with --watch")
    if fmt in ("", "wide"):
        _get_tables(session, targets, wide=fmt == "wide", all_namespaces=all_namespaces, selector=selector,
                    field_selector=field_selector, show_labels=show_labels, no_headers=no_headers, watch=watch,
                    timeout=timeout)
    else:
        _get_objects(session, targets, fmt, template, all_namespaces=all_namespaces, selector=selector,
                     field_selector=field_selector, watch=watch, timeout=timeout)
    _finish(session)


def _output_format(output: str) -> tuple[str, str]:
    output = output.lstrip("=")
    if output.startswith("jsonpath="):
        return "jsonpath", output[len("jsonpath="):]
    if output in ("", "wide", "yaml", "json", "name"):
        return output, ""
    raise CliError(f'unable to match a printer suitable for the output format "{output}", allowed formats are: '
                   f"{OUTPUT_FORMATS}")


def _no_resources(session: Session, rts: list[ResourceType], all_namespaces: bool) -> None:
    if all_namespaces or not any(rt.namespaced for rt in rts):
        click.echo("No resources found", err=True)
    else:
        click.echo(f"No resources found in {session.namespace} namespace.", err=True)


def _get_tables(session: Session, targets: list[tuple[ResourceType, list[str]]], *, wide: bool,
                all_namespaces: bool, selector: str | None, field_selector: str | None, show_labels: bool,
                no_headers: bool, watch: bool, timeout: float | None) -> None:
    client = session.client
    several = len(targets) > 1
    printed = 0
    blocks: list[list[str]] = []
    printer: TablePrinter | None = None
    list_rv = ""
    for rt, names in targets:
        ns = _ns_for(rt, session, all_namespaces)
        tables: list[dict[str, Any]] = []
        if names:
            for name in names:
                try:
                    tables.append(client.get_table(rt, _ns_for(rt, session), name))
                except NotFound as exc:
                    session.fail(format_api_error(exc))
        else:
            path_ns = None if all_namespaces else ns
            tables.append(_table_with_fields(client, rt, path_ns, selector, field_selector))
        if not tables:
            continue
        rows = [r for t in tables for r in t.get("rows") or []]
        list_rv = str((tables[0].get("metadata") or {}).get("resourceVersion") or "")
        printer = TablePrinter(tables[0], wide=wide, all_namespaces=all_namespaces and rt.namespaced,
                               show_labels=show_labels, no_headers=no_headers,
                               name_prefix=f"{resource_label(rt)}/" if several else "")
        if rows:
            blocks.append(printer.lines(rows))
            printed += len(rows)
    for i, block in enumerate(blocks):
        if i:
            click.echo("")
        click.echo("\n".join(block))
    if printed == 0 and not session.failed and not watch:
        _no_resources(session, [rt for rt, _ in targets], all_namespaces)
    if watch and printer is not None:
        rt, names = targets[0]
        _watch_rows(session, rt, printer, list_rv, names[0] if names else None, all_namespaces=all_namespaces,
                    selector=selector, field_selector=field_selector, timeout=timeout, header_printed=printed > 0)


def _table_with_fields(client: ApiClient, rt: ResourceType, ns: str | None, selector: str | None,
                       field_selector: str | None) -> dict[str, Any]:
    return client.get_table(rt, ns, label_selector=selector, field_selector=field_selector,
                            all_namespaces=ns is None)


def _watch_events(session: Session, rt: ResourceType, ns: str | None, rv: str, *, name: str | None,
                  selector: str | None, field_selector: str | None, timeout: float | None,
                  table: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """Watch events until ``timeout`` (None = forever), re-listing nothing: on Gone it starts fresh."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if name:
        field_selector = ",".join(x for x in (field_selector, f"metadata.name={name}") if x)
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        try:
            for etype, obj in session.client.watch(
                    rt, ns, resource_version=rv or None, label_selector=selector, field_selector=field_selector,
                    timeout_seconds=None if remaining is None else max(1, math.ceil(remaining)), table=table):
                rv = str((_first_object_meta(obj)).get("resourceVersion") or rv)
                if etype != "BOOKMARK":
                    yield etype, obj
        except Gone:
            rv = ""
        if deadline is None:
            continue  # the server ended the stream (its own timeout): keep watching, as asked
        if time.monotonic() >= deadline:
            return


def _first_object_meta(obj: dict[str, Any]) -> dict[str, Any]:
    if obj.get("kind") == "Table":
        meta = obj.get("metadata") or {}
        if meta.get("resourceVersion"):
            return dict(meta)
        rows = obj.get("rows") or []
        return dict(((rows[0].get("object") or {}).get("metadata") or {}) if rows else {})
    return dict(obj.get("metadata") or {})


def _watch_rows(session: Session, rt: ResourceType, printer: TablePrinter, rv: str, name: str | None, *,
                all_namespaces: bool, selector: str | None, field_selector: str | None, timeout: float | None,
                header_printed: bool) -> None:
    ns = _ns_for(rt, session, all_namespaces)
    try:
        for _etype, obj in _watch_events(session, rt, ns, rv, name=name, selector=selector,
                                         field_selector=field_selector, timeout=timeout, table=True):
            rows = obj.get("rows") if obj.get("kind") == "Table" else [_fallback_row(obj, printer)]
            for row in rows or []:
                if not header_printed:
                    click.echo("\n".join(printer.lines([row])))
                    header_printed = True
                else:
                    click.echo(printer.watch_line(row))
    except KeyboardInterrupt:
        return


def _fallback_row(obj: dict[str, Any], printer: TablePrinter) -> dict[str, Any]:
    """A row for a server that sent a plain object on a Table watch: the name, other cells blank."""
    cells: list[Any] = [""] * max(1, len(printer.defs))
    cells[printer.name_col] = (obj.get("metadata") or {}).get("name", "")
    return {"cells": cells, "object": {"metadata": obj.get("metadata") or {}}}


def _get_objects(session: Session, targets: list[tuple[ResourceType, list[str]]], fmt: str, template: str, *,
                 all_namespaces: bool, selector: str | None, field_selector: str | None, watch: bool,
                 timeout: float | None) -> None:
    client = session.client
    items: list[dict[str, Any]] = []
    single = len(targets) == 1 and len(targets[0][1]) == 1
    rv = ""
    for rt, names in targets:
        if names:
            for name in names:
                try:
                    items.append(client.get(rt, name, _ns_for(rt, session)))
                except NotFound as exc:
                    session.fail(format_api_error(exc))
        else:
            found, rv = client.list(rt, _ns_for(rt, session, all_namespaces), label_selector=selector,
                                    field_selector=field_selector)
            items.extend(found)
    if not items and fmt == "name" and not session.failed:
        _no_resources(session, [rt for rt, _ in targets], all_namespaces)
    if single and items:
        _print_object(items[0], fmt, template)
        rv = str(items[0]["metadata"].get("resourceVersion") or "")
    elif fmt == "name":
        for obj in items:
            _print_object(obj, fmt, template)
    elif not (single and session.failed):
        _print_object(as_list(items), fmt, template)
    if watch:
        rt, names = targets[0]
        ns = _ns_for(rt, session, all_namespaces)
        try:
            for _etype, obj in _watch_events(session, rt, ns, rv, name=names[0] if names else None,
                                             selector=selector, field_selector=field_selector, timeout=timeout,
                                             table=False):
                if fmt == "yaml":
                    click.echo("---")
                _print_object(obj, fmt, template)
        except KeyboardInterrupt:
            return


def _print_object(obj: dict[str, Any], fmt: str, template: str) -> None:
    if fmt == "yaml":
        click.echo(to_yaml(obj), nl=False)
    elif fmt == "json":
        click.echo(to_json(obj))
    elif fmt == "name":
        rt = registry.by_kind(str(obj.get("apiVersion")), str(obj.get("kind")))
        label = resource_label(rt) if rt else str(obj.get("kind", "")).lower()
        click.echo(f"{label}/{(obj.get('metadata') or {}).get('name', '')}")
    else:
        click.echo(jsonpath.render(template, obj), nl=False)


# ---------------------------------------------------------------------------------------------- describe

@cli.command()
@click.argument("kind")
@click.argument("names", nargs=-1)
@click.option("-l", "--selector", default=None)
@namespace_option
def describe(kind: str, names: tuple[str, ...], selector: str | None) -> None:
    """Show details of resources and their events."""
    session = _session()
    rt = resolve_kind(kind)
    ns = _ns_for(rt, session)
    objects: list[dict[str, Any]] = []
    if names:
        for name in names:
            try:
                objects.append(session.client.get(rt, name, ns))
            except NotFound as exc:
                session.fail(format_api_error(exc))
    else:
        objects, _ = session.client.list(rt, ns, label_selector=selector)
        if not objects:
            _no_resources(session, [rt], False)
    for i, obj in enumerate(objects):
        if i:
            click.echo("\n")
        click.echo(describe_text(obj, _events_for(session.client, rt, obj)))
    _finish(session)


def _events_for(client: ApiClient, rt: ResourceType, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Events about ``obj`` (empty when the server has none or cannot say)."""
    if EVENT_RT is None or rt is EVENT_RT:
        return []
    meta = obj.get("metadata") or {}
    name, ns = meta.get("name", ""), meta.get("namespace")
    selector = f"involvedObject.name={name}" + (f",involvedObject.namespace={ns}" if ns else "")
    try:
        events, _ = client.list(EVENT_RT, ns, field_selector=selector)
    except BadRequest:
        try:  # a server without these field selectors: filter here instead
            events, _ = client.list(EVENT_RT, ns)
        except ApiError:
            return []
    except ApiError:
        return []

    def about(ev: dict[str, Any]) -> bool:
        inv = ev.get("involvedObject") or ev.get("regarding") or {}
        return (inv.get("name") == name and (not ns or inv.get("namespace") in (None, "", ns))
                and inv.get("kind") in (None, "", rt.kind))
    return [ev for ev in events if about(ev)]


# ---------------------------------------------------------------------------------------------- delete

@cli.command()
@click.argument("args", nargs=-1)
@click.option("-f", "--filename", "files", multiple=True)
@click.option("-R", "--recursive", is_flag=True)
@click.option("-l", "--selector", default=None)
@click.option("--all", "all_", is_flag=True, help="Delete every resource of the kind in the namespace.")
@click.option("--grace-period", type=int, default=None, help="Seconds for graceful termination (0 = at once).")
@click.option("--now", is_flag=True, help="Same as --grace-period=1.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the resources are gone.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait with --wait.")
@click.option("--ignore-not-found", is_flag=True)
@namespace_option
def delete(args: tuple[str, ...], files: tuple[str, ...], recursive: bool, selector: str | None, all_: bool,
           grace_period: int | None, now: bool, wait: bool, timeout: float, ignore_not_found: bool) -> None:
    """Delete resources by kind and names, by selector, or from files."""
    session = _session()
    if now:
        grace_period = 1
    work: list[tuple[ResourceType, str | None, str]] = []
    if files:
        if args:
            raise CliError("when -f is given, no KIND or NAME arguments are accepted")
        explicit_ns = session.namespace_flag or None
        for source, obj in _load(files, recursive):
            try:
                rt = _kind_of(source, obj)
                work.append((rt, _default_ns(rt, obj, session, explicit_ns), _name_of(source, obj)))
            except CliError as exc:
                _report(session, exc)
    else:
        targets = parse_targets(args)
        for rt, names in targets:
            ns = _ns_for(rt, session)
            if names:
                work.extend((rt, ns, n) for n in names)
            elif selector or all_:
                found, _ = session.client.list(rt, ns, label_selector=selector)
                work.extend((rt, ns, o["metadata"]["name"]) for o in found)
                if not found:
                    _no_resources(session, [rt], False)
            else:
                raise CliError("resource(s) were provided, but no name was specified")
    pending: list[tuple[ResourceType, str | None, str, str]] = []
    for rt, ns, name in work:
        try:
            answer = session.client.delete(rt, name, ns, grace_period_seconds=grace_period)
        except NotFound as exc:
            if not ignore_not_found:
                session.fail(format_api_error(exc))
            continue
        except ApiError as exc:
            session.fail(format_api_error(exc))
            continue
        click.echo(f'{resource_label(rt)} "{name}" deleted')
        uid = str((answer.get("metadata") or {}).get("uid") or "") if answer.get("kind") != "Status" else ""
        pending.append((rt, ns, name, uid))
    if wait:
        deadline = time.monotonic() + timeout
        for rt, ns, name, uid in pending:
            if not _wait_deleted(session, rt, ns, name, uid, deadline):
                session.fail(f"error: timed out waiting for the deletion of {rt.qualified}/{name}")
    _finish(session)


def _wait_deleted(session: Session, rt: ResourceType, ns: str | None, name: str, uid: str, deadline: float) -> bool:
    """True once ``name`` (with ``uid``) is gone; False at the deadline. Waits on a watch, not by polling."""
    client = session.client
    while True:
        try:
            live = client.get(rt, name, ns)
        except NotFound:
            return True
        if uid and live["metadata"].get("uid") not in (None, uid):
            return True  # a new object of the same name: ours is gone
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            # Short watches: should an event ever be missed, the GET above corrects it within seconds.
            for etype, obj in client.watch(rt, ns, resource_version=live["metadata"].get("resourceVersion"),
                                           field_selector=f"metadata.name={name}",
                                           timeout_seconds=max(1, min(5, math.ceil(remaining)))):
                if etype == "DELETED" and (obj.get("metadata") or {}).get("name") == name:
                    return True
        except Gone:
            continue


# ---------------------------------------------------------------------------------------------- discovery

@cli.command("api-resources")
@click.option("-o", "--output", default="", help="name or wide.")
@click.option("--namespaced", type=bool, default=None)
@click.option("--api-group", default=None)
def api_resources(output: str, namespaced: bool | None, api_group: str | None) -> None:
    """List the kinds the server serves (from its discovery documents)."""
    client = _session().client
    lists = [client.request("GET", "/api/v1")]
    for group in client.request("GET", "/apis").get("groups") or []:
        gv = (group.get("preferredVersion") or {}).get("groupVersion") or \
            ((group.get("versions") or [{}])[0]).get("groupVersion")
        if gv:
            lists.append(client.request("GET", f"/apis/{gv}"))
    rows = []
    for doc in lists:
        gv = str(doc.get("groupVersion") or "v1")
        group = gv.split("/")[0] if "/" in gv else ""
        if api_group is not None and group != api_group:
            continue
        for res in doc.get("resources") or []:
            if "/" in res.get("name", "") or (namespaced is not None and bool(res.get("namespaced")) != namespaced):
                continue
            rows.append((group, res, gv))
    rows.sort(key=lambda r: (r[0] != "", r[0], r[1]["name"]))
    if output == "name":
        for group, res, _ in rows:
            click.echo(f"{res['name']}.{group}" if group else res["name"])
        return
    header = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"] + (["VERBS"] if output == "wide" else [])
    table = [header]
    for _, res, gv in rows:
        line = [res["name"], ",".join(res.get("shortNames") or []), gv,
                "true" if res.get("namespaced") else "false", str(res.get("kind", ""))]
        if output == "wide":
            line.append(",".join(res.get("verbs") or []))
        table.append(line)
    click.echo("\n".join(aligned(table)))


@cli.command()
@click.option("--client", "client_only", is_flag=True, help="Only the client version.")
def version(client_only: bool) -> None:
    """Print the client and server versions."""
    try:
        mine = importlib_metadata.version("minik8s")
    except importlib_metadata.PackageNotFoundError:
        mine = "0.0.0"
    click.echo(f"Client Version: v{mine}")
    if client_only:
        return
    info = _session().client.request("GET", "/version")
    click.echo(f"Server Version: {info.get('gitVersion', '?')}")


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="minictl")


if __name__ == "__main__":
    main()
