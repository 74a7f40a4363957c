"""``minictl rollout status|history|undo|pause|resume`` and ``minictl scale``: kubectl's rollout verbs.

::

    minictl rollout status  deployment/NAME [--timeout S] [-w/--watch]  until updated == replicas == available
    minictl rollout history deployment/NAME [--revision N]              REVISION  CHANGE-CAUSE
    minictl rollout undo    deployment/NAME [--to-revision N]           copy that revision's template back
    minictl rollout pause|resume deployment/NAME
    minictl scale deployment/NAME|rs/NAME --replicas=N                  PATCH …/scale

Rollback is client side, as in kubectl: the ReplicaSet of the wanted revision is found by its
``deployment.kubernetes.io/revision`` annotation and its pod template (minus ``pod-template-hash``)
and annotations are written into the Deployment; the controller then rolls to it with a new revision.
Failures are raised (``ApiError``, ``ConnectionFailed``, ``click.UsageError``/``ClickException``) and
printed as one line by ``minictl``'s main.
"""

from __future__ import annotations

import time
from typing import Any

import click

from minictl.printers import aligned, to_yaml
from minik8s.api import registry
from minik8s.api.registry import ResourceType
from minik8s.client.rest import ApiClient
from minik8s.errors import ApiError, NotFound

DEPLOYMENTS = registry.lookup("deployments")
REPLICASETS = registry.lookup("replicasets")
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
# Annotations kubectl keeps from the Deployment (never copies from the ReplicaSet) on rollback.
ROLLBACK_SKIP = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION,
                           "deployment.kubernetes.io/revision-history", "deployment.kubernetes.io/desired-replicas",
                           "deployment.kubernetes.io/max-replicas", "deprecated.deployment.rollback.to"})


class RolloutError(click.UsageError):
    """A rollout problem kubectl reports as ``error: …``; minictl prints it as one line and exits 1."""


def _session() -> Any:
    obj = click.get_current_context().find_root().obj
    if obj is None:
        raise click.UsageError("minictl was started without a session")
    return obj


def _set_namespace(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.find_root().obj.namespace_flag = value


_namespace_option = click.option("-n", "--namespace", expose_value=False, callback=_set_namespace,
                                 help="The namespace of the object.")


def parse_target(args: tuple[str, ...], allowed: tuple[str, ...] = ("deployments",)) -> tuple[ResourceType, str]:
    """``deployment/NAME`` or ``deployment NAME`` → (type, name); UsageError for other kinds."""
    if len(args) == 1 and "/" in args[0]:
        kind, name = args[0].split("/", 1)
    elif len(args) == 2:
        kind, name = args
    else:
        raise click.UsageError("required resource not specified (use TYPE/NAME, e.g. deployment/web)")
    try:
        rt = registry.lookup(kind)
    except NotFound as exc:
        raise click.UsageError(exc.message) from exc
    if rt.plural not in allowed or not name:
        raise click.UsageError(f'no {"rollout" if allowed == ("deployments",) else "scale"} support for '
                               f'kind "{rt.kind}"' if rt.plural not in allowed else "resource name may not be empty")
    return rt, name


def _label(rt: ResourceType, name: str) -> str:
    return f"{rt.kind.lower()}.{rt.group}/{name}" if rt.group else f"{rt.kind.lower()}/{name}"


def _revision(obj: dict[str, Any]) -> int | None:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, ""))
    except ValueError:
        return None


def owned_replicasets(client: ApiClient, d: dict[str, Any]) -> list[dict[str, Any]]:
    """The ReplicaSets the Deployment controls (controllerRef uid), in the Deployment's namespace."""
    meta = d.get("metadata") or {}
    items, _ = client.list(REPLICASETS, meta.get("namespace"))
    uid = meta.get("uid")
    return [rs for rs in items if any(r.get("controller") and r.get("uid") == uid
                                      for r in (rs.get("metadata") or {}).get("ownerReferences") or [])]


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    out = dict(template)
    meta = dict(out.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != HASH_LABEL}
    meta["labels"] = labels
    out["metadata"] = meta
    return out


def find_revision(d: dict[str, Any], rss: list[dict[str, Any]], to_revision: int) -> dict[str, Any]:
    """kubectl's deploymentRevision: ``to_revision`` 0 → the second newest revision."""
    name = (d.get("metadata") or {}).get("name")
    latest: tuple[int, dict[str, Any] | None] = (-1, None)
    previous: tuple[int, dict[str, Any] | None] = (-1, None)
    for rs in rss:
        v = _revision(rs)
        if v is None:
            continue
        if to_revision > 0:
            if v == to_revision:
                return rs
        elif v > latest[0]:
            previous, latest = latest, (v, rs)
        elif v > previous[0]:
            previous = (v, rs)
    if to_revision > 0:
        raise RolloutError(f"unable to find specified revision {to_revision} in history")
    if previous[1] is None:
        raise RolloutError(f'no rollout history found for deployment "{name}"')
    return previous[1]


def status_message(d: dict[str, Any]) -> tuple[str, bool]:
    """kubectl's DeploymentStatusViewer: (message, done); RolloutError past the progress deadline."""
    name = (d.get("metadata") or {}).get("name")
    spec, status = d.get("spec") or {}, d.get("status") or {}
    if int((d.get("metadata") or {}).get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return "Waiting for deployment spec update to be observed...", False
    for c in status.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            raise RolloutError(f'deployment "{name}" exceeded its progress deadline')
    want = int(spec.get("replicas", 1))
    updated, replicas = int(status.get("updatedReplicas") or 0), int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < want:
        return (f'Waiting for deployment "{name}" rollout to finish: {updated} out of {want} new replicas have '
                "been updated..."), False
    if replicas > updated:
        return (f'Waiting for deployment "{name}" rollout to finish: {replicas - updated} old replicas are pending '
                "termination..."), False
    if available < updated:
        return (f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} updated replicas are '
                "available..."), False
    return f'deployment "{name}" successfully rolled out', True


@click.group("rollout")
def rollout() -> None:
    """Manage the rollout of a deployment."""


@rollout.command("status")
@click.argument("args", nargs=-1, required=True)
@click.option("-w", "--watch/--no-watch", default=True, show_default=True, help="Watch until the rollout ends.")
@click.option("--timeout", type=float, default=0, help="Seconds to wait (0: forever).")
@_namespace_option
def status_cmd(args: tuple[str, ...], watch: bool, timeout: float) -> None:
    """Show the status of the rollout (and wait for it to finish)."""
    session = _session()
    rt, name = parse_target(args)
    client: ApiClient = session.client
    ns = session.namespace
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last = ""
    d = client.get(rt, name, ns)
    while True:
        message, done = status_message(d)
        if message != last:
            click.echo(message)
            last = message
        if done or not watch:
            return
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise RolloutError("timed out waiting for the condition")
        d = _next_version(client, rt, name, ns, d, remaining)


def _next_version(client: ApiClient, rt: ResourceType, name: str, ns: str, d: dict[str, Any],
                  remaining: float | None) -> dict[str, Any]:
    """The Deployment after its next change (a watch from its resourceVersion), or as is at the deadline."""
    rv = str((d.get("metadata") or {}).get("resourceVersion") or "")
    wait = 60 if remaining is None else max(1, min(60, int(remaining + 0.999)))
    try:
        for etype, obj in client.watch(rt, ns, resource_version=rv or None, field_selector=f"metadata.name={name}",
                                       timeout_seconds=wait):
            if etype == "DELETED":
                raise RolloutError(f'deployment "{name}" was deleted')
            if etype in ("ADDED", "MODIFIED"):
                return obj
    except ApiError:
        pass  # too old a resourceVersion or a broken stream: read the object again
    return client.get(rt, name, ns)


@rollout.command("history")
@click.argument("args", nargs=-1, required=True)
@click.option("--revision", type=int, default=0, help="Show the pod template of this revision.")
@_namespace_option
def history_cmd(args: tuple[str, ...], revision: int) -> None:
    """Show the revisions of a deployment."""
    session = _session()
    rt, name = parse_target(args)
    client: ApiClient = session.client
    d = client.get(rt, name, session.namespace)
    by_rev: dict[int, dict[str, Any]] = {}
    for rs in owned_replicasets(client, d):
        v = _revision(rs)
        if v is not None:
            by_rev[v] = rs
    if revision > 0:
        if revision not in by_rev:
            raise RolloutError(f"unable to find the specified revision {revision}")
        click.echo(f"{_label(rt, name)} with revision #{revision}")
        click.echo("Pod Template:")
        template = (by_rev[revision].get("spec") or {}).get("template") or {}
        click.echo("  " + to_yaml(template).rstrip("\n").replace("\n", "\n  "))
        return
    click.echo(_label(rt, name))
    rows = [["REVISION", "CHANGE-CAUSE"]]
    for v in sorted(by_rev):
        cause = ((by_rev[v].get("metadata") or {}).get("annotations") or {}).get(CHANGE_CAUSE) or "<none>"
        rows.append([str(v), cause])
    for line in aligned(rows):
        click.echo(line)


@rollout.command("undo")
@click.argument("args", nargs=-1, required=True)
@click.option("--to-revision", type=int, default=0, help="The revision to roll back to (0: the previous one).")
@_namespace_option
def undo_cmd(args: tuple[str, ...], to_revision: int) -> None:
    """Roll back to a previous revision."""
    session = _session()
    rt, name = parse_target(args)
    client: ApiClient = session.client
    d = client.get(rt, name, session.namespace)
    if (d.get("spec") or {}).get("paused"):
        raise RolloutError(f"you cannot rollback a paused deployment; resume it first with "
                           f"'minictl rollout resume deployment/{name}' and try again")
    rs = find_revision(d, owned_replicasets(client, d), to_revision)
    template = _strip_hash((rs.get("spec") or {}).get("template") or {})
    current = _strip_hash((d.get("spec") or {}).get("template") or {})
    if template == current:
        click.echo(f"{_label(rt, name)} skipped rollback (current template already matches revision "
                   f"{_revision(rs)})")
        return
    annotations = {k: v for k, v in ((d.get("metadata") or {}).get("annotations") or {}).items()
                   if k in ROLLBACK_SKIP}
    annotations.update({k: v for k, v in ((rs.get("metadata") or {}).get("annotations") or {}).items()
                        if k not in ROLLBACK_SKIP})
    patch = [{"op": "replace", "path": "/spec/template", "value": template},
             {"op": "replace", "path": "/metadata/annotations", "value": annotations}]
    client.patch(rt, name, patch, namespace=session.namespace, patch_type="json")
    click.echo(f"{_label(rt, name)} rolled back")


def _set_paused(args: tuple[str, ...], paused: bool) -> None:
    session = _session()
    rt, name = parse_target(args)
    client: ApiClient = session.client
    d = client.get(rt, name, session.namespace)
    if bool((d.get("spec") or {}).get("paused")) == paused:
        raise RolloutError(f'{_label(rt, name)} is {"already" if paused else "not"} paused')
    client.patch(rt, name, {"spec": {"paused": paused}}, namespace=session.namespace)
    click.echo(f"{_label(rt, name)} {'paused' if paused else 'resumed'}")


@rollout.command("pause")
@click.argument("args", nargs=-1, required=True)
@_namespace_option
def pause_cmd(args: tuple[str, ...]) -> None:
    """Pause a deployment: template changes are not rolled out until it is resumed."""
    _set_paused(args, True)


@rollout.command("resume")
@click.argument("args", nargs=-1, required=True)
@_namespace_option
def resume_cmd(args: tuple[str, ...]) -> None:
    """Resume a paused deployment."""
    _set_paused(args, False)


@click.command("scale")
@click.argument("args", nargs=-1, required=True)
@click.option("--replicas", type=click.IntRange(min=0), required=True, help="The new number of replicas.")
@_namespace_option
def scale(args: tuple[str, ...], replicas: int) -> None:
    """Set a new size for a deployment or replica set (PATCH …/scale)."""
    session = _session()
    rt, name = parse_target(args, ("deployments", "replicasets"))
    client: ApiClient = session.client
    client.patch(rt, name, {"spec": {"replicas": replicas}}, namespace=session.namespace, subresource="scale")
    click.echo(f"{_label(rt, name)} scaled")
