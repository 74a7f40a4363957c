"""``minictl function``: serverless functions (docs/serverless.md is the contract).

::

    minictl function create NAME (--file F.py | --zip A.zip|DIR | -f FUNCTION.yaml) [--entry-point run]
                                 [--min-scale N] [--max-scale N] [--target-concurrency N] [--idle-timeout S]
                                 [--timeout S] [--env K=V …] [--wait/--no-wait] [-n NS]
    minictl function update NAME [same flags; only those given change]
    minictl function delete NAME
    minictl function get [NAME]                     NAME READY SCALE CODE URL AGE
    minictl function describe NAME                  spec, status, conditions, Deployment, recent activations
    minictl function invoke NAME [-d JSON] [--async]
    minictl function activations NAME [--limit 20]  newest first
    minictl function logs ACTIVATION                the call's captured output, then its result or error

``create``/``update`` upload the code first (``POST …/functions/NAME/code``, answered with its
``codeDigest``), then write the Function with ``spec.codeDigest``, then (``--wait``) watch it until
the gateway has built that code, and print the URL and a curl line. A manifest given with ``-f``
is a Function (as ``examples/functions/add.yaml``); its code is the file or folder named by the
annotation ``minik8s.io/code-file`` (relative to the manifest), unless ``--file``/``--zip`` is given.

Progress goes to stderr, results to stdout. Server errors are ``minik8s.errors`` (printed as one
line by minictl's main); failures found here print one ``error:`` line and exit 1.
"""

from __future__ import annotations

import ast
import io
import json
import math
import shlex
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import click
import httpx

from minictl.printers import age, aligned, one_line, resource_label
from minik8s.api import registry
from minik8s.api.registry import MINIK8S_GROUP, ResourceType
from minik8s.client.config import ClientConfig
from minik8s.client.rest import ApiClient, object_namespace
from minik8s.errors import ApiError, BadRequest, ConnectionFailed, Gone, NotFound
from minik8s.yamlio import load_documents

CODE_FILE_ANNOTATION = "minik8s.io/code-file"
FUNCTION_LABEL = "minik8s.io/function"
DEFAULT_BUILD_TIMEOUT = 120.0
LARGE_UPLOAD = 1024 * 1024  # above this, a dropped upload is likely the server's size limit
COLD_START_NOTICE_AFTER = 0.5  # seconds without an answer before saying that an instance is starting
# A zip made here gets this date for every entry, so the same folder always gives the same bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
SKIPPED_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".DS_Store"})


def _rt(plural: str, kind: str) -> ResourceType:
    found = registry.by_plural(MINIK8S_GROUP, "v1", plural)
    return found if found is not None else ResourceType(MINIK8S_GROUP, "v1", kind, plural, True)


FUNCTIONS = _rt("functions", "Function")
ACTIVATIONS = _rt("activations", "Activation")
DEPLOYMENTS = registry.lookup("deployments")


class SessionLike(Protocol):
    """What these commands use of ``minictl.main.Session``."""

    transport: httpx.BaseTransport | None
    namespace_flag: str | None
    request_timeout: float

    @property
    def config(self) -> ClientConfig: ...

    @property
    def namespace(self) -> str: ...

    @property
    def client(self) -> ApiClient: ...


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
                                 help="The namespace of the function.")


def _die(message: str) -> NoReturn:
    click.echo(f"error: {one_line(message)}", err=True)
    raise click.exceptions.Exit(1)


def _progress(message: str) -> None:
    click.echo(message, err=True)


# ---------------------------------------------------------------------------------------------- code

@dataclass(frozen=True)
class Code:
    """What gets uploaded: ``filename`` tells the server a ``.py`` from a ``.zip``."""

    filename: str
    data: bytes
    label: str  # how the user named it

    @property
    def is_zip(self) -> bool:
        return self.filename.endswith(".zip")


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def zip_folder(folder: Path) -> bytes:
    """A reproducible zip of ``folder``'s tree: names sorted, fixed dates and modes, caches left out.

    Raises ``click.UsageError`` for a symlink (the server refuses them; say so before uploading).
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
            rel = path.relative_to(folder)
            if any(part in SKIPPED_NAMES for part in rel.parts) or path.suffix == ".pyc":
                continue
            if path.is_symlink():
                raise click.UsageError(f"{path} is a symlink; function code may not contain links")
            if path.is_dir():
                continue
            info = zipfile.ZipInfo(rel.as_posix(), date_time=ZIP_EPOCH)
            info.external_attr = (0o100755 if path.stat().st_mode & 0o111 else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def read_code(file: str | None, zip_: str | None) -> Code | None:
    """The code named by ``--file`` (a ``.py``) or ``--zip`` (a ``.zip`` or a folder, zipped here)."""
    if file and zip_:
        raise click.UsageError("give either --file or --zip, not both")
    if file:
        path = Path(file)
        if path.is_dir():
            raise click.UsageError(f"--file takes a .py file; {file} is a folder (use --zip {file})")
        if path.suffix == ".zip":
            raise click.UsageError(f"--file takes a .py file; for an archive use --zip {file}")
        return Code("main.py" if path.suffix != ".py" else path.name, _read(path), path.name)
    if zip_:
        path = Path(zip_)
        if path.is_dir():
            return Code(f"{path.resolve().name or 'code'}.zip", zip_folder(path), f"{path.name or zip_}/")
        return Code(path.name if path.suffix == ".zip" else f"{path.name}.zip", _read(path), path.name)
    return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise click.UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def main_source(code: Code) -> bytes | None:
    """The bytes of ``main.py`` in ``code`` (None when there is none or the zip is unreadable)."""
    if not code.is_zip:
        return code.data
    try:
        with zipfile.ZipFile(io.BytesIO(code.data)) as zf:
            return zf.read("main.py")
    except (zipfile.BadZipFile, KeyError, OSError):
        return None


def example_body(source: bytes | None, entry_point: str) -> str:
    """A JSON body for the curl hint: the entry point's required parameters with sample numbers.

    ``def run(x, y)`` gives ``{"x": 3, "y": 5}``; ``(event, context)`` handlers and anything that
    cannot be read give ``{}``.
    """
    if source is None:
        return "{}"
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return "{}"
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            names = [a.arg for a in positional[:len(positional) - len(args.defaults)]]
            names += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
            if names == ["event", "context"]:
                return "{}"
            return json.dumps({name: 3 + 2 * i for i, name in enumerate(names)})
    return "{}"


def curl_line(url: str, body: str) -> str:
    return f"curl -X POST -H 'Content-Type: application/json' -d {shlex.quote(body)} {url}"


def upload(client: ApiClient, namespace: str, name: str, code: Code, entry_point: str | None) -> str:
    """POST the code to ``functions/NAME/code``; return its ``codeDigest``."""
    _progress(f"uploading {code.label} ({human_size(len(code.data))})…")
    params = {"filename": code.filename}
    if entry_point:
        params["entryPoint"] = entry_point
    try:
        answer = client.request("POST", FUNCTIONS.path(namespace, name, "code"), params=params,
                                headers={"Content-Type": "application/octet-stream"}, content=code.data)
    except ConnectionFailed as exc:
        if len(code.data) <= LARGE_UPLOAD:
            raise
        # A server that refuses a body early may close the connection before answering 413.
        _die(f"uploading {code.label} ({human_size(len(code.data))}) failed: {exc}; is the code too large? "
             "the gateway takes 8 MiB unless its --max-code-bytes says otherwise")
    digest = answer.get("codeDigest") if isinstance(answer, dict) else None
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        _die(f"the apiserver answered the upload without a codeDigest: {str(answer)[:200]}")
    return digest


# ---------------------------------------------------------------------------------------------- spec

@dataclass
class SpecFlags:
    """The spec fields given on the command line (None: not given)."""

    entry_point: str | None = None
    min_scale: int | None = None
    max_scale: int | None = None
    target_concurrency: int | None = None
    idle_timeout: float | None = None
    timeout: float | None = None
    env: tuple[str, ...] = ()

    def apply(self, spec: dict[str, Any]) -> None:
        """Set the given fields on ``spec``. ``--env K=V`` sets K, ``--env K-`` removes it."""
        for key, value in (("entryPoint", self.entry_point), ("minScale", self.min_scale),
                           ("maxScale", self.max_scale), ("targetConcurrency", self.target_concurrency),
                           ("idleTimeout", _number(self.idle_timeout)), ("timeout", _number(self.timeout))):
            if value is not None:
                spec[key] = value
        if self.env:
            env = [dict(e) for e in spec.get("env") or []]
            for item in self.env:
                name, value, remove = parse_env(item)
                env = [e for e in env if e.get("name") != name]
                if not remove:
                    env.append({"name": name, "value": value})
            spec["env"] = env


def _number(value: float | None) -> float | int | None:
    return int(value) if value is not None and float(value).is_integer() else value


def parse_env(item: str) -> tuple[str, str, bool]:
    """``K=V`` → (K, V, False); ``K-`` → (K, "", True); anything else is a usage error."""
    if "=" not in item:
        if item.endswith("-") and len(item) > 1:
            return item[:-1], "", True
        raise click.UsageError(f"--env takes NAME=VALUE (or NAME- to remove it), not {item!r}")
    name, value = item.split("=", 1)
    if not name:
        raise click.UsageError(f"--env {item!r}: the name may not be empty")
    return name, value, False


def _load_manifest(path: str) -> tuple[dict[str, Any], Path]:
    docs = load_documents([path])
    functions = [obj for _, obj in docs if obj.get("kind") == "Function"]
    if len(docs) != 1 or len(functions) != 1:
        raise click.UsageError(f"{path} must hold exactly one Function (apiVersion {FUNCTIONS.api_version})")
    obj = functions[0]
    if obj.get("apiVersion") != FUNCTIONS.api_version:
        raise click.UsageError(f'{path}: a Function has apiVersion {FUNCTIONS.api_version}, not '
                               f'"{obj.get("apiVersion")}"')
    return obj, Path(path).resolve().parent


def _manifest_code(manifest: dict[str, Any], folder: Path) -> Code | None:
    ref = ((manifest.get("metadata") or {}).get("annotations") or {}).get(CODE_FILE_ANNOTATION)
    if not ref:
        return None
    path = folder / str(ref)
    if path.is_dir() or path.suffix == ".zip":
        return read_code(None, str(path))
    return read_code(str(path), None)


@dataclass
class Request:
    """What ``create``/``update`` were asked: the function, its code, the spec changes."""

    name: str
    namespace: str
    code: Code | None
    manifest: dict[str, Any] | None
    flags: SpecFlags


def _request(session: SessionLike, name: str | None, filename: str | None, file: str | None, zip_: str | None,
             flags: SpecFlags) -> Request:
    manifest = None
    code = read_code(file, zip_)
    namespace = session.namespace
    if filename:
        manifest, folder = _load_manifest(filename)
        meta = manifest.get("metadata") or {}
        own = meta.get("name")
        if name and own and own != name:
            raise click.UsageError(f"NAME {name!r} and the manifest's metadata.name {own!r} differ")
        name = name or own
        try:  # a manifest's namespace that differs from -n is an error (kubectl's words)
            object_namespace(FUNCTIONS, manifest, session.namespace_flag)
        except BadRequest as exc:
            raise click.UsageError(exc.message) from None
        namespace = str(meta.get("namespace") or namespace)
        if code is None:
            code = _manifest_code(manifest, folder)
    if not name:
        raise click.UsageError("missing the function's NAME")
    return Request(name, namespace, code, manifest, flags)


def _merge_manifest(obj: dict[str, Any], manifest: dict[str, Any] | None) -> None:
    """The manifest's labels, annotations and spec fields over ``obj``'s (fields it leaves out stay)."""
    if not manifest:
        return
    meta, mine = obj.setdefault("metadata", {}), manifest.get("metadata") or {}
    for key in ("labels", "annotations"):
        if mine.get(key):
            meta[key] = {**(meta.get(key) or {}), **mine[key]}
    obj["spec"] = {**(obj.get("spec") or {}), **(manifest.get("spec") or {})}


# ---------------------------------------------------------------------------------------------- waiting

def _condition(fn: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (fn.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def build_state(fn: dict[str, Any], generation: int | None) -> tuple[str, str]:
    """("built" | "failed" | "building", message) for the code in ``fn.spec``, seen at ``generation``."""
    spec, status = fn.get("spec") or {}, fn.get("status") or {}
    observed = status.get("observedGeneration")
    current = observed is None or generation is None or observed >= generation
    built = _condition(fn, "Built")
    if (current and status.get("codeDigest") == spec.get("codeDigest") and status.get("image")
            and built.get("status") == "True"):
        return "built", str(status.get("image"))
    if current and built.get("status") == "False" and built.get("reason") == "BuildFailed":
        return "failed", str(built.get("message") or "the build failed (minictl function describe)")
    return "building", ""


def wait_built(session: SessionLike, namespace: str, name: str, generation: int | None,
               timeout: float) -> dict[str, Any]:
    """Watch the Function until its code is built (returns it); one error line and exit 1 otherwise."""
    client = session.client
    _progress("building…")
    deadline = time.monotonic() + timeout
    while True:
        fn = client.get(FUNCTIONS, name, namespace)
        state, message = build_state(fn, generation)
        if state == "built":
            return fn
        if state == "failed":
            _die(f"function {namespace}/{name}: build failed: {message}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _die(f"timed out after {timeout:.0f}s waiting for function {namespace}/{name} to be built "
                 f"(see: minictl function describe {name}; is the gateway running? make status)")
        started = time.monotonic()
        try:
            # Short watches: a missed event is corrected by the GET above within seconds.
            for _etype, obj in client.watch(FUNCTIONS, namespace,
                                            resource_version=(fn.get("metadata") or {}).get("resourceVersion"),
                                            field_selector=f"metadata.name={name}",
                                            timeout_seconds=max(1, min(5, math.ceil(remaining)))):
                if (obj.get("metadata") or {}).get("name") == name and build_state(obj, generation)[0] != "building":
                    break
        except Gone:
            pass
        if time.monotonic() - started < 0.2:
            time.sleep(0.2)  # a server that ends watches at once: do not spin on GETs


def _print_ready(fn: dict[str, Any], code: Code | None) -> None:
    status, spec = fn.get("status") or {}, fn.get("spec") or {}
    url = status.get("url")
    if not url:
        _progress(f"built {status.get('image', '')}; no URL yet (minictl function describe "
                  f"{fn['metadata']['name']})")
        return
    body = example_body(main_source(code) if code else None, str(spec.get("entryPoint") or "run"))
    click.echo(f"URL: {url}")
    click.echo(curl_line(str(url), body))


# ---------------------------------------------------------------------------------------------- commands

@click.group("function")
def function() -> None:
    """Serverless functions: upload code, call it over HTTP, see its activations."""


def _spec_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--file", "file", default=None, metavar="F.py", help="The code: one Python file (main.py)."),
        click.option("--zip", "zip_", default=None, metavar="A.zip|DIR",
                     help="The code: a zip with main.py at its root (and requirements.txt), or a folder."),
        click.option("-f", "--filename", default=None, metavar="FUNCTION.yaml",
                     help=f"A Function manifest; its code is the file or folder in the annotation "
                          f"{CODE_FILE_ANNOTATION} (relative to the manifest) unless --file/--zip is given."),
        click.option("--entry-point", default=None, help="The function in main.py to call (default run)."),
        click.option("--min-scale", type=click.IntRange(min=0), default=None, help="Instances kept (default 0)."),
        click.option("--max-scale", type=click.IntRange(min=1), default=None, help="Most instances (default 10)."),
        click.option("--target-concurrency", type=click.IntRange(min=1), default=None,
                     help="In-flight calls per instance the autoscaler aims at (default 2)."),
        click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Seconds without calls before scaling to zero (default 60)."),
        click.option("--timeout", type=click.FloatRange(min=0, max=900, min_open=True), default=None,
                     help="Seconds one call may run (default 60)."),
        click.option("--env", multiple=True, metavar="K=V", help="An environment variable (K- removes it)."),
        click.option("--wait/--no-wait", default=True, show_default=True,
                     help="Wait until the code is built, then print the URL and a curl line."),
        click.option("--wait-timeout", type=float, default=DEFAULT_BUILD_TIMEOUT, show_default=True,
                     help="Seconds to wait for the build."),
        _namespace_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


@function.command("create")
@click.argument("name", required=False)
@_spec_options
def create(name: str | None, file: str | None, zip_: str | None, filename: str | None, entry_point: str | None,
           min_scale: int | None, max_scale: int | None, target_concurrency: int | None,
           idle_timeout: float | None, timeout: float | None, env: tuple[str, ...], wait: bool,
           wait_timeout: float) -> None:
    """Upload code and create the function NAME, then wait for its build.

    \b
      minictl function create add --file add.py
      minictl function create hello --zip hello-deps/     a folder (zipped here) or a .zip;
                                                          its requirements.txt is installed
      minictl function create -f add.yaml                 NAME from metadata.name, code from the
                                                          annotation minik8s.io/code-file
    """
    session = _session()
    flags = SpecFlags(entry_point, min_scale, max_scale, target_concurrency, idle_timeout, timeout, env)
    req = _request(session, name, filename, file, zip_, flags)
    client = session.client
    try:
        client.get(FUNCTIONS, req.name, req.namespace)
        _die(f'{FUNCTIONS.qualified} "{req.name}" already exists in namespace {req.namespace}; change it with: '
             f"minictl function update {req.name} …")
    except NotFound:
        pass
    obj: dict[str, Any] = {"apiVersion": FUNCTIONS.api_version, "kind": FUNCTIONS.kind,
                           "metadata": {"name": req.name, "namespace": req.namespace}, "spec": {}}
    _merge_manifest(obj, req.manifest)
    flags.apply(obj["spec"])
    if req.code is not None:
        obj["spec"]["codeDigest"] = upload(client, req.namespace, req.name, req.code, obj["spec"].get("entryPoint"))
    elif not obj["spec"].get("codeDigest"):
        raise click.UsageError(f"no code: give --file F.py, --zip A.zip|DIR, or -f with the annotation "
                               f"{CODE_FILE_ANNOTATION}")
    created = client.create(obj, namespace=req.namespace)
    click.echo(f"{resource_label(FUNCTIONS)}/{req.name} created")
    if wait:
        fn = wait_built(session, req.namespace, req.name, (created.get("metadata") or {}).get("generation"),
                        wait_timeout)
        _print_ready(fn, req.code)


@function.command("update")
@click.argument("name", required=False)
@_spec_options
def update(name: str | None, file: str | None, zip_: str | None, filename: str | None, entry_point: str | None,
           min_scale: int | None, max_scale: int | None, target_concurrency: int | None,
           idle_timeout: float | None, timeout: float | None, env: tuple[str, ...], wait: bool,
           wait_timeout: float) -> None:
    """Change the function NAME: new code and/or settings (only what is given changes)."""
    session = _session()
    flags = SpecFlags(entry_point, min_scale, max_scale, target_concurrency, idle_timeout, timeout, env)
    req = _request(session, name, filename, file, zip_, flags)
    client = session.client
    live = client.get(FUNCTIONS, req.name, req.namespace)  # NotFound before uploading anything
    digest = None
    if req.code is not None:
        entry = flags.entry_point or ((req.manifest or {}).get("spec") or {}).get("entryPoint") or \
            (live.get("spec") or {}).get("entryPoint")
        digest = upload(client, req.namespace, req.name, req.code, entry)

    def mutate(obj: dict[str, Any]) -> None:
        _merge_manifest(obj, req.manifest)
        spec = obj.setdefault("spec", {})
        flags.apply(spec)
        if digest:
            spec["codeDigest"] = digest

    result = client.update_with_retry(FUNCTIONS, req.name, req.namespace, mutate)
    before = (live.get("metadata") or {}).get("resourceVersion")
    changed = (result.get("metadata") or {}).get("resourceVersion") != before
    click.echo(f"{resource_label(FUNCTIONS)}/{req.name} {'configured' if changed else 'unchanged'}")
    if wait:
        fn = wait_built(session, req.namespace, req.name, (result.get("metadata") or {}).get("generation"),
                        wait_timeout)
        _print_ready(fn, req.code)


@function.command("delete")
@click.argument("name")
@_namespace_option
def delete(name: str) -> None:
    """Delete the function NAME (its Deployment, Service and image go with it)."""
    session = _session()
    session.client.delete(FUNCTIONS, name, session.namespace)
    click.echo(f'{resource_label(FUNCTIONS)} "{name}" deleted')


def _short_digest(digest: Any) -> str:
    text = str(digest or "")
    return text.removeprefix("sha256:")[:12] if text else "<none>"


def _code_cell(fn: dict[str, Any]) -> str:
    state, _ = build_state(fn, (fn.get("metadata") or {}).get("generation"))
    cell = _short_digest((fn.get("spec") or {}).get("codeDigest"))
    if state == "failed":
        return f"{cell} (build failed)"
    if state == "building" and (fn.get("spec") or {}).get("codeDigest"):
        return f"{cell} (building)"
    return cell


def _scale_cell(fn: dict[str, Any]) -> str:
    status = fn.get("status") or {}
    return f"{status.get('readyReplicas') or 0}/{status.get('replicas') or 0}"


@function.command("get")
@click.argument("name", required=False)
@_namespace_option
def get(name: str | None) -> None:
    """List functions (or one): NAME READY SCALE CODE URL AGE."""
    session = _session()
    if name:
        items = [session.client.get(FUNCTIONS, name, session.namespace)]
    else:
        items, _ = session.client.list(FUNCTIONS, session.namespace)
    if not items:
        click.echo(f"No resources found in {session.namespace} namespace.", err=True)
        return
    rows = [["NAME", "READY", "SCALE", "CODE", "URL", "AGE"]]
    for fn in sorted(items, key=lambda o: str((o.get("metadata") or {}).get("name", ""))):
        meta = fn.get("metadata") or {}
        rows.append([str(meta.get("name", "")), str(_condition(fn, "Ready").get("status") or "Unknown"),
                     _scale_cell(fn), _code_cell(fn), str((fn.get("status") or {}).get("url") or "<none>"),
                     age(meta.get("creationTimestamp"))])
    click.echo("\n".join(aligned(rows)))


def _ms(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f}s"
    return f"{value:.1f}ms"


def _start(value: Any) -> str:
    text = str(value or "")
    if "." in text:  # microseconds are more than a table needs: keep milliseconds
        head, _, tail = text.partition(".")
        zone = tail.lstrip("0123456789")
        text = f"{head}.{tail[:3]}{zone}"
    return text or "<unknown>"


def _list_activations(client: ApiClient, namespace: str, name: str, limit: int) -> list[dict[str, Any]]:
    items, _ = client.list(ACTIVATIONS, namespace, label_selector=f"{FUNCTION_LABEL}={name}")
    items.sort(key=lambda a: (str((a.get("spec") or {}).get("start") or ""),
                              str((a.get("metadata") or {}).get("creationTimestamp") or "")), reverse=True)
    return items[:limit] if limit > 0 else items


def _activation_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["ID", "STATUS", "CODE", "DURATION", "INIT", "START"]]
    for act in items:
        spec = act.get("spec") or {}
        init = spec.get("initMs")
        rows.append([str((act.get("metadata") or {}).get("name", "")), str(spec.get("status") or "<unknown>")
                     + (" (async)" if spec.get("async") else ""), str(spec.get("statusCode") or "-"),
                     _ms(spec.get("durationMs")), _ms(init) if init else "-", _start(spec.get("start"))])
    return rows


@function.command("activations")
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="Show at most this many (0: all).")
@_namespace_option
def activations(name: str, limit: int) -> None:
    """The calls of the function NAME, newest first."""
    session = _session()
    items = _list_activations(session.client, session.namespace, name, limit)
    if not items:
        click.echo(f"No activations found for function {session.namespace}/{name}.", err=True)
        return
    click.echo("\n".join(aligned(_activation_rows(items))))


@function.command("logs")
@click.argument("activation")
@_namespace_option
def logs(activation: str) -> None:
    """What one call printed (stdout and stderr), then its result or error."""
    session = _session()
    act = session.client.get(ACTIVATIONS, activation, session.namespace)
    spec = act.get("spec") or {}
    text = str(spec.get("logs") or "")
    if text:
        click.echo(text, nl=not text.endswith("\n"))
    result = str(spec.get("result") or "")
    status = str(spec.get("status") or "unknown")
    head = f"=> {status} {spec.get('statusCode') or ''} in {_ms(spec.get('durationMs'))}".replace("  ", " ")
    if status == "success":
        click.echo(f"{head}: {result}" + (" …(truncated)" if spec.get("truncated") else ""))
        return
    message, trace = _error_of(result)
    if trace:
        click.echo(trace.rstrip("\n"))
    click.echo(f"{head}: {message}")


def _error_of(body: str) -> tuple[str, str]:
    """(one line, traceback) of a function's error body (``{"error", "type", "traceback"}`` or text)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return one_line(body) or "(no body)", ""
    if not isinstance(doc, dict) or "error" not in doc:
        return one_line(body), ""
    kind = f"{doc['type']}: " if doc.get("type") else ""
    return one_line(f"{kind}{doc['error']}"), str(doc.get("traceback") or "")


@function.command("describe")
@click.argument("name")
@_namespace_option
def describe(name: str) -> None:
    """Show the function NAME: spec, status, conditions, its Deployment and recent calls."""
    session = _session()
    client = session.client
    fn = client.get(FUNCTIONS, name, session.namespace)
    meta, spec, status = fn.get("metadata") or {}, fn.get("spec") or {}, fn.get("status") or {}
    env = ", ".join(f"{e.get('name')}={e.get('value', '')}" for e in spec.get("env") or []) or "<none>"
    try:
        deploy = client.get(DEPLOYMENTS, name, session.namespace)
        dstat = deploy.get("status") or {}
        replicas = (f"{(deploy.get('spec') or {}).get('replicas', 0)} desired, {dstat.get('readyReplicas') or 0} "
                    f"ready, {dstat.get('updatedReplicas') or 0} up to date")
    except NotFound:
        replicas = "<none> (no Deployment yet)"
    pairs = [
        ("Name:", str(meta.get("name", ""))),
        ("Namespace:", str(meta.get("namespace", session.namespace))),
        ("Created:", f"{meta.get('creationTimestamp', '<unknown>')} ({age(meta.get('creationTimestamp'))} ago)"),
        ("Runtime:", str(spec.get("runtime") or "python")),
        ("Entry point:", str(spec.get("entryPoint") or "run")),
        ("Code:", str(spec.get("codeDigest") or "<none>")),
        ("Built code:", str(status.get("codeDigest") or "<none>")),
        ("Image:", str(status.get("image") or "<none>")),
        ("URL:", str(status.get("url") or "<none>")),
        ("Scale:", f"min {spec.get('minScale', 0)}, max {spec.get('maxScale', 10)}, target concurrency "
                   f"{spec.get('targetConcurrency', 2)}, idle timeout {spec.get('idleTimeout', 60)}s"),
        ("Timeout:", f"{spec.get('timeout', 60)}s"),
        ("Env:", env),
        ("Deployment:", replicas),
        ("Desired scale:", str(status.get("desiredScale", "<none>"))),
        ("Last active:", str(status.get("lastActiveTime") or "<never>")),
    ]
    width = max(len(k) for k, _ in pairs) + 2
    lines = [k.ljust(width) + v for k, v in pairs]
    conds = (status.get("conditions") or [])
    lines.append("Conditions:")
    if conds:
        table = [["Type", "Status", "Reason", "Age", "Message"]]
        table += [[str(c.get("type", "")), str(c.get("status", "")), str(c.get("reason") or ""),
                   age(c.get("lastTransitionTime")) if c.get("lastTransitionTime") else "",
                   one_line(str(c.get("message") or ""))] for c in conds]
        lines += ["  " + line for line in aligned(table)]
    else:
        lines.append("  <none>")
    lines.append("Recent activations:")
    try:
        recent = _list_activations(client, session.namespace, name, 5)
    except ApiError:
        recent = []
    lines += ["  " + line for line in aligned(_activation_rows(recent))] if recent else ["  <none>"]
    click.echo("\n".join(lines))


@function.command("invoke")
@click.argument("name")
@click.option("-d", "--data", default="{}", show_default=True, metavar="JSON",
              help="The JSON object to send (@FILE reads it from a file).")
@click.option("--async", "async_", is_flag=True, help="Do not wait for the result: print the activation id.")
@click.option("--timeout", type=float, default=None,
              help="Seconds to wait for the answer (default: the function's timeout plus a cold start).")
@_namespace_option
def invoke(name: str, data: str, async_: bool, timeout: float | None) -> None:
    """Call the function NAME through the gateway and print what it returns."""
    session = _session()
    if data.startswith("@"):
        data = _read(Path(data[1:])).decode("utf-8", errors="replace")
    try:
        json.loads(data or "{}")
    except ValueError as exc:
        raise click.UsageError(f"-d is not valid JSON: {exc}") from None
    fn = session.client.get(FUNCTIONS, name, session.namespace)
    status = fn.get("status") or {}
    url = status.get("url")
    if not url:
        _die(f"function {session.namespace}/{name} has no URL yet: it is not built "
             f"(minictl function describe {name})")
    limit = timeout if timeout is not None else float((fn.get("spec") or {}).get("timeout") or 60) + 70
    notice = None
    if not async_ and not status.get("readyReplicas"):
        notice = threading.Timer(COLD_START_NOTICE_AFTER, _progress, ("waiting for a cold start…",))
        notice.daemon = True
        notice.start()
    try:
        with httpx.Client(timeout=httpx.Timeout(session.request_timeout, read=limit),
                          transport=session.transport, headers={"User-Agent": "minictl"}) as http:
            response = http.post(str(url), params={"async": "true"} if async_ else None,
                                 content=(data or "{}").encode(), headers={"Content-Type": "application/json"})
    except httpx.TimeoutException:
        _die(f"no answer from {url} within {limit:.0f}s")
    except httpx.HTTPError as exc:
        _die(f"cannot reach the function gateway at {url}: {one_line(str(exc)) or type(exc).__name__} "
             "(is it running? make status)")
    finally:
        if notice is not None:
            notice.cancel()
    activation = response.headers.get("X-Minik8s-Activation-Id", "")
    if response.is_success:
        if async_:
            try:
                click.echo(str(response.json().get("activationId") or response.text))
            except (ValueError, AttributeError):
                click.echo(response.text)
            return
        click.echo(response.text, nl=not response.text.endswith("\n"))
        return
    message, _trace = _error_of(response.text)
    hint = f" (activation {activation}: minictl function logs {activation})" if activation else ""
    _die(f"{name} answered {response.status_code}: {message}{hint}")


__all__ = ["build_state", "example_body", "function", "human_size", "zip_folder"]
