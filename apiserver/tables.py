"""Server-side printing: ``meta.k8s.io/v1`` Tables with the columns kubectl shows for each kind.

kubectl asks for a Table (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``) and prints it
as-is, so the columns and the computed cells (READY ``1/1``, STATUS ``Terminating``, AGE ``5m``)
are decided here. Priority-1 columns are printed only with ``-o wide``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minik8s.api.registry import ResourceType
from minik8s.timeutil import age, human_duration, now, parse_rfc3339

Column = tuple[str, str, int, str]  # name, type, priority, description
Row = list[Any]


def _d(obj: Any, *path: str, default: Any = None) -> Any:
    """Follow ``path`` through nested dicts; ``default`` on any missing or non-dict step."""
    cur = obj
    for p in path:
        if not isinstance(cur, dict):
            return default
        cur = cur.get(p)
    return default if cur is None else cur


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _meta_age(obj: dict[str, Any]) -> str:
    return age(_d(obj, "metadata", "creationTimestamp"))


def _selector_text(sel: Any) -> str:
    if not isinstance(sel, dict) or not sel:
        return "<none>"
    labels = sel.get("matchLabels") if "matchLabels" in sel or "matchExpressions" in sel else sel
    parts = [f"{k}={v}" for k, v in sorted((labels or {}).items())] if isinstance(labels, dict) else []
    for e in _list(sel.get("matchExpressions")) if ("matchExpressions" in sel) else []:
        if not isinstance(e, dict):
            continue
        op, key, vals = e.get("operator"), e.get("key"), ",".join(str(v) for v in _list(e.get("values")))
        parts.append({"In": f"{key} in ({vals})", "NotIn": f"{key} notin ({vals})", "Exists": f"{key}",
                      "DoesNotExist": f"!{key}"}.get(str(op), f"{key}"))
    return ",".join(parts) or "<none>"


def _containers(spec: Any) -> tuple[str, str]:
    cs = [c for c in _list(_d(spec, "containers")) if isinstance(c, dict)]
    return ",".join(str(c.get("name", "")) for c in cs), ",".join(str(c.get("image", "")) for c in cs)


# --- pods -------------------------------------------------------------------------------------------

def pod_status_text(pod: dict[str, Any]) -> tuple[str, int, int, int, str]:
    """(STATUS, ready, total, restarts, last restart age) computed the way kubectl's printer does."""
    spec, status = _d(pod, "spec", default={}), _d(pod, "status", default={})
    total = len(_list(_d(spec, "containers")))
    reason = str(_d(status, "reason") or _d(status, "phase") or "Pending")
    restarts, ready, last_restart = 0, 0, ""
    init_done = True
    init_statuses = [c for c in _list(_d(status, "initContainerStatuses")) if isinstance(c, dict)]
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount") or 0) if isinstance(cs.get("restartCount"), int) else 0
        term, wait = _d(cs, "state", "terminated"), _d(cs, "state", "waiting")
        if isinstance(term, dict) and term.get("exitCode") == 0:
            continue
        init_done = False
        if isinstance(term, dict):
            reason = "Init:" + str(term.get("reason") or f"ExitCode:{term.get('exitCode')}")
        elif isinstance(wait, dict) and wait.get("reason") and wait.get("reason") != "PodInitializing":
            reason = "Init:" + str(wait.get("reason"))
        else:
            reason = f"Init:{i}/{len(_list(_d(spec, 'initContainers')))}"
        break
    if init_done:
        has_running = False
        for cs in reversed([c for c in _list(_d(status, "containerStatuses")) if isinstance(c, dict)]):
            rc = cs.get("restartCount")
            restarts += rc if isinstance(rc, int) else 0
            finished = _d(cs, "lastState", "terminated", "finishedAt")
            if isinstance(finished, str) and finished > last_restart:
                last_restart = finished
            wait, term = _d(cs, "state", "waiting"), _d(cs, "state", "terminated")
            if isinstance(wait, dict) and wait.get("reason"):
                reason = str(wait["reason"])
            elif isinstance(term, dict) and term.get("reason"):
                reason = str(term["reason"])
            elif isinstance(term, dict):
                sig = term.get("signal")
                reason = f"Signal:{sig}" if sig else f"ExitCode:{term.get('exitCode')}"
            elif cs.get("ready") and isinstance(_d(cs, "state", "running"), dict):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            ready_cond = any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
                             for c in _list(_d(status, "conditions")))
            reason = "Running" if ready_cond else "NotReady"
    if _d(pod, "metadata", "deletionTimestamp"):
        reason = "Unknown" if _d(status, "reason") == "NodeLost" else "Terminating"
    return reason, ready, total, restarts, (age(last_restart) if last_restart else "")


def _pod_row(pod: dict[str, Any]) -> Row:
    reason, ready, total, restarts, last = pod_status_text(pod)
    restarts_text = f"{restarts} ({last} ago)" if restarts and last else str(restarts)
    gates = _list(_d(pod, "spec", "readinessGates"))
    return [_d(pod, "metadata", "name", default=""), f"{ready}/{total}", reason, restarts_text, _meta_age(pod),
            _d(pod, "status", "podIP", default="<none>"), _d(pod, "spec", "nodeName", default="<none>"),
            _d(pod, "status", "nominatedNodeName", default="<none>"), f"0/{len(gates)}" if gates else "<none>"]


POD_COLUMNS: list[Column] = [
    ("Name", "string", 0, "name"), ("Ready", "string", 0, "ready containers"), ("Status", "string", 0, "status"),
    ("Restarts", "string", 0, "restarts"), ("Age", "string", 0, "age"), ("IP", "string", 1, "pod IP"),
    ("Node", "string", 1, "node"), ("Nominated Node", "string", 1, "nominated node"),
    ("Readiness Gates", "string", 1, "readiness gates")]


# --- services, endpoints -------------------------------------------------------------------------

def _service_row(svc: dict[str, Any]) -> Row:
    spec = _d(svc, "spec", default={})
    stype = str(_d(spec, "type") or "ClusterIP")
    ports = []
    for p in _list(_d(spec, "ports")):
        if not isinstance(p, dict):
            continue
        proto = p.get("protocol") or "TCP"
        node_port = f":{p.get('nodePort')}" if p.get("nodePort") else ""
        ports.append(f"{p.get('port')}{node_port}/{proto}")
    ext = ",".join(str(x) for x in _list(_d(spec, "externalIPs"))) or (
        "<pending>" if stype == "LoadBalancer" else "<none>")
    return [_d(svc, "metadata", "name", default=""), stype, _d(spec, "clusterIP", default="<none>") or "<none>", ext,
            ",".join(ports) or "<none>", _meta_age(svc), _selector_text(_d(spec, "selector"))]


def _endpoints_row(ep: dict[str, Any]) -> Row:
    pairs: list[str] = []
    for subset in _list(_d(ep, "subsets")):
        ports = [p for p in _list(_d(subset, "ports")) if isinstance(p, dict)] or [{}]
        for a in _list(_d(subset, "addresses")):
            for p in ports:
                ip = _d(a, "ip", default="")
                pairs.append(f"{ip}:{p['port']}" if "port" in p else str(ip))
    text = ",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "")
    return [_d(ep, "metadata", "name", default=""), text or "<none>", _meta_age(ep)]


# --- nodes, namespaces, events ---------------------------------------------------------------------

def _node_row(node: dict[str, Any]) -> Row:
    conds = {c.get("type"): c.get("status") for c in _list(_d(node, "status", "conditions")) if isinstance(c, dict)}
    status = {"True": "Ready", "False": "NotReady"}.get(str(conds.get("Ready")), "Unknown")
    if _d(node, "spec", "unschedulable"):
        status += ",SchedulingDisabled"
    labels = _d(node, "metadata", "labels", default={})
    role_mark = "node-role.kubernetes.io/"
    roles = sorted(k.split("/", 1)[1] for k in labels if isinstance(k, str) and k.startswith(role_mark))
    addrs = {a.get("type"): a.get("address") for a in _list(_d(node, "status", "addresses")) if isinstance(a, dict)}
    info = _d(node, "status", "nodeInfo", default={})
    return [_d(node, "metadata", "name", default=""), status, ",".join(roles) or "<none>", _meta_age(node),
            _d(info, "kubeletVersion", default=""), addrs.get("InternalIP") or "<none>",
            addrs.get("ExternalIP") or "<none>", _d(info, "osImage", default="<unknown>"),
            _d(info, "kernelVersion", default="<unknown>"), _d(info, "containerRuntimeVersion", default="<unknown>")]


def _namespace_row(ns: dict[str, Any]) -> Row:
    phase = "Terminating" if _d(ns, "metadata", "deletionTimestamp") else _d(ns, "status", "phase", default="Active")
    return [_d(ns, "metadata", "name", default=""), phase, _meta_age(ns)]


def _event_row(ev: dict[str, Any]) -> Row:
    inv = _d(ev, "involvedObject", default={})
    last = _d(ev, "lastTimestamp") or _d(ev, "eventTime") or _d(ev, "metadata", "creationTimestamp")
    obj = f"{str(_d(inv, 'kind', default='')).lower()}/{_d(inv, 'name', default='')}"
    source = _d(ev, "source", "component") or _d(ev, "reportingComponent") or ""
    return [age(last), _d(ev, "type", default=""), _d(ev, "reason", default=""), obj, _d(ev, "message", default=""),
            _d(inv, "fieldPath", default=""), source, age(_d(ev, "firstTimestamp") or last),
            _d(ev, "count", default=1), _d(ev, "metadata", "name", default="")]


# --- workloads ------------------------------------------------------------------------------------

def _deployment_row(d: dict[str, Any]) -> Row:
    spec, st = _d(d, "spec", default={}), _d(d, "status", default={})
    names, images = _containers(_d(spec, "template", "spec"))
    ready = f"{_d(st, 'readyReplicas', default=0)}/{_d(spec, 'replicas', default=0)}"
    return [_d(d, "metadata", "name", default=""), ready,
            _d(st, "updatedReplicas", default=0), _d(st, "availableReplicas", default=0), _meta_age(d), names, images,
            _selector_text(_d(spec, "selector"))]


def _replicaset_row(rs: dict[str, Any]) -> Row:
    spec, st = _d(rs, "spec", default={}), _d(rs, "status", default={})
    names, images = _containers(_d(spec, "template", "spec"))
    return [_d(rs, "metadata", "name", default=""), _d(spec, "replicas", default=0), _d(st, "replicas", default=0),
            _d(st, "readyReplicas", default=0), _meta_age(rs), names, images, _selector_text(_d(spec, "selector"))]


def _hpa_row(h: dict[str, Any]) -> Row:
    spec, st = _d(h, "spec", default={}), _d(h, "status", default={})
    ref = _d(spec, "scaleTargetRef", default={})
    targets = []
    current = {(_d(m, "resource", "name")): m for m in _list(_d(st, "currentMetrics")) if isinstance(m, dict)}
    for m in _list(_d(spec, "metrics")):
        name = _d(m, "resource", "name", default="")
        target = _d(m, "resource", "target", default={})
        cur = current.get(name)
        if _d(target, "type") == "Utilization":
            now = _d(cur, "resource", "current", "averageUtilization")
            shown = "<unknown>" if now is None else f"{now}%"
            targets.append(f"{name}: {shown}/{_d(target, 'averageUtilization')}%")
        else:
            now = _d(cur, "resource", "current", "averageValue")
            targets.append(f"{name}: {'<unknown>' if now is None else now}/{_d(target, 'averageValue')}")
    return [_d(h, "metadata", "name", default=""), f"{_d(ref, 'kind', default='')}/{_d(ref, 'name', default='')}",
            ", ".join(targets) or "<none>", _d(spec, "minReplicas", default=1), _d(spec, "maxReplicas", default=0),
            _d(st, "currentReplicas", default=0), _meta_age(h)]


def _ingress_row(ing: dict[str, Any]) -> Row:
    spec = _d(ing, "spec", default={})
    hosts = [str(r.get("host")) for r in _list(_d(spec, "rules")) if isinstance(r, dict) and r.get("host")]
    lbs = [str(_d(i, "ip") or _d(i, "hostname") or "") for i in _list(_d(ing, "status", "loadBalancer", "ingress"))]
    ports = "80, 443" if _list(_d(spec, "tls")) else "80"
    return [_d(ing, "metadata", "name", default=""), _d(spec, "ingressClassName", default="<none>"),
            ",".join(hosts) or "*", ",".join(x for x in lbs if x), ports, _meta_age(ing)]


def _condition(obj: Any, ctype: str) -> str:
    for c in _list(_d(obj, "status", "conditions")):
        if isinstance(c, dict) and c.get("type") == ctype:
            return str(c.get("status", "Unknown"))
    return "Unknown"


def _short_digest(digest: Any) -> str:
    """``sha256:1a2b…`` → ``1a2b3c4d5e6f`` (as ``docker images`` shortens ids)."""
    if not isinstance(digest, str) or not digest:
        return "<none>"
    return digest.split(":", 1)[-1][:12]


def _function_row(f: dict[str, Any]) -> Row:
    st = _d(f, "status", default={})
    spec = _d(f, "spec", default={})
    # READY is ready instances over the autoscaler's wish (its Deployment's count before the first decision).
    wanted = _d(st, "desiredScale", default=_d(st, "replicas", default=0))
    ready = f"{_d(st, 'readyReplicas', default=0)}/{wanted}"
    scale = f"{_d(spec, 'minScale', default=0)}-{_d(spec, 'maxScale', default='?')}"
    return [_d(f, "metadata", "name", default=""), ready, scale, _short_digest(_d(spec, "codeDigest")),
            _d(st, "url", default="<none>"), _meta_age(f), _condition(f, "Built"), _d(st, "image", default="<none>"),
            _d(spec, "runtime", default="")]


def _millis(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return "<none>"
    return f"{v:.0f}ms" if v >= 10 else f"{v:.1f}ms"


def _activation_row(a: dict[str, Any]) -> Row:
    spec = _d(a, "spec", default={})
    code = _d(spec, "statusCode")
    return [_d(a, "metadata", "name", default=""), _d(spec, "function", default=""),
            _d(spec, "status", default="<none>"), code if isinstance(code, int) and not isinstance(code, bool) else 0,
            _millis(_d(spec, "durationMs")), _millis(_d(spec, "initMs")), _meta_age(a),
            _d(spec, "start", default="<none>"), _d(spec, "pod", default="<none>"),
            "true" if _d(spec, "async") is True else "false"]


def _workflow_row(w: dict[str, Any]) -> Row:
    states = _d(w, "spec", "states", default={})
    return [_d(w, "metadata", "name", default=""), _d(w, "spec", "startAt", default=""),
            len(states) if isinstance(states, dict | list) else 0, _meta_age(w)]


def _duration(start: Any, end: Any) -> str:
    """DURATION of an execution: start to completion, or to now while it runs."""
    t0 = parse_rfc3339(start)
    if t0 is None:
        return "<none>"
    t1 = parse_rfc3339(end) or now()
    return human_duration((t1 - t0).total_seconds())


def _execution_row(x: dict[str, Any]) -> Row:
    st = _d(x, "status", default={})
    current = _d(st, "current")
    if isinstance(current, list):
        current = ",".join(str(c if not isinstance(c, dict) else c.get("state", "")) for c in current)
    return [_d(x, "metadata", "name", default=""), _d(x, "spec", "workflow", default=""),
            _d(st, "phase", default="Pending"), str(current) if current else "<none>",
            age(_d(st, "startTime")) if _d(st, "startTime") else "<none>",
            _duration(_d(st, "startTime"), _d(st, "completionTime"))]


def _trigger_row(t: dict[str, Any]) -> Row:
    st = _d(t, "status", default={})
    last = _d(st, "lastFireTime")
    count = _d(st, "fireCount", default=0)
    return [_d(t, "metadata", "name", default=""), _d(t, "spec", "schedule", default="<none>"),
            count if isinstance(count, int) and not isinstance(count, bool) else 0,
            age(last) if last else "<never>", _meta_age(t)]


def _rule_row(r: dict[str, Any]) -> Row:
    spec = _d(r, "spec", default={})
    fn, wf = _d(spec, "function"), _d(spec, "workflow")
    target = f"function/{fn}" if fn else (f"workflow/{wf}" if wf else "<none>")
    return [_d(r, "metadata", "name", default=""), _d(spec, "trigger", default=""), target,
            "false" if _d(spec, "enabled") is False else "true", _meta_age(r)]


_NAME: Column = ("Name", "string", 0, "name")
_AGE: Column = ("Age", "string", 0, "age")
_WORKLOAD_WIDE: list[Column] = [("Containers", "string", 1, "containers"), ("Images", "string", 1, "images"),
                                ("Selector", "string", 1, "selector")]

PRINTERS: dict[str, tuple[list[Column], Callable[[dict[str, Any]], Row]]] = {
    "Pod": (POD_COLUMNS, _pod_row),
    "Service": ([_NAME, ("Type", "string", 0, ""), ("Cluster-IP", "string", 0, ""), ("External-IP", "string", 0, ""),
                 ("Port(s)", "string", 0, ""), _AGE, ("Selector", "string", 1, "")], _service_row),
    "Endpoints": ([_NAME, ("Endpoints", "string", 0, ""), _AGE], _endpoints_row),
    "Node": ([_NAME, ("Status", "string", 0, ""), ("Roles", "string", 0, ""), _AGE, ("Version", "string", 0, ""),
              ("Internal-IP", "string", 1, ""), ("External-IP", "string", 1, ""), ("OS-Image", "string", 1, ""),
              ("Kernel-Version", "string", 1, ""), ("Container-Runtime", "string", 1, "")], _node_row),
    "Namespace": ([_NAME, ("Status", "string", 0, ""), _AGE], _namespace_row),
    "Event": ([("Last Seen", "string", 0, ""), ("Type", "string", 0, ""), ("Reason", "string", 0, ""),
               ("Object", "string", 0, ""), ("Message", "string", 0, ""), ("Subobject", "string", 1, ""),
               ("Source", "string", 1, ""), ("First Seen", "string", 1, ""), ("Count", "integer", 1, ""),
               ("Name", "string", 1, "")], _event_row),
    "Deployment": ([_NAME, ("Ready", "string", 0, ""), ("Up-to-date", "integer", 0, ""),
                    ("Available", "integer", 0, ""), _AGE, *_WORKLOAD_WIDE], _deployment_row),
    "ReplicaSet": ([_NAME, ("Desired", "integer", 0, ""), ("Current", "integer", 0, ""), ("Ready", "integer", 0, ""),
                    _AGE, *_WORKLOAD_WIDE], _replicaset_row),
    "HorizontalPodAutoscaler": ([_NAME, ("Reference", "string", 0, ""), ("Targets", "string", 0, ""),
                                 ("MinPods", "string", 0, ""), ("MaxPods", "integer", 0, ""),
                                 ("Replicas", "integer", 0, ""), _AGE], _hpa_row),
    "Ingress": ([_NAME, ("Class", "string", 0, ""), ("Hosts", "string", 0, ""), ("Address", "string", 0, ""),
                 ("Ports", "string", 0, ""), _AGE], _ingress_row),
    "Function": ([_NAME, ("Ready", "string", 0, "ready instances / desired scale"),
                  ("Scale", "string", 0, "minScale-maxScale"), ("Code", "string", 0, "short code digest"),
                  ("URL", "string", 0, ""), _AGE, ("Built", "string", 1, ""), ("Image", "string", 1, ""),
                  ("Runtime", "string", 1, "")], _function_row),
    "Activation": ([_NAME, ("Function", "string", 0, ""), ("Status", "string", 0, ""),
                    ("Code", "integer", 0, "HTTP status code"), ("Duration", "string", 0, ""),
                    ("Init", "string", 0, "time held for a cold start"), _AGE, ("Start", "string", 1, ""),
                    ("Pod", "string", 1, ""), ("Async", "string", 1, "")], _activation_row),
    "Workflow": ([_NAME, ("Start", "string", 0, "startAt"), ("States", "integer", 0, ""), _AGE], _workflow_row),
    "WorkflowExecution": ([_NAME, ("Workflow", "string", 0, ""), ("Phase", "string", 0, ""),
                           ("Current", "string", 0, "the state(s) in progress"),
                           ("Started", "string", 0, "time since it started"), ("Duration", "string", 0, "")],
                          _execution_row),
    "Trigger": ([_NAME, ("Schedule", "string", 0, ""), ("Fired", "integer", 0, "firings so far"),
                 ("Last", "string", 0, "time since the last firing"), _AGE], _trigger_row),
    "Rule": ([_NAME, ("Trigger", "string", 0, ""), ("Target", "string", 0, "function/NAME or workflow/NAME"),
              ("Enabled", "string", 0, ""), _AGE], _rule_row),
}


def _default_row(obj: dict[str, Any]) -> Row:
    return [_d(obj, "metadata", "name", default=""), _meta_age(obj)]


def columns_of(rt: ResourceType) -> list[Column]:
    return PRINTERS.get(rt.kind, ([_NAME, _AGE], _default_row))[0]


def row_of(rt: ResourceType, obj: dict[str, Any], include_object: str = "Metadata") -> dict[str, Any]:
    """One Table row; the row's object is PartialObjectMetadata unless ``include_object`` says otherwise."""
    printer = PRINTERS.get(rt.kind, ([_NAME, _AGE], _default_row))[1]
    try:
        cells = printer(obj)
    except Exception:  # noqa: BLE001 - an object of odd shape must still print its name
        cells = [_d(obj, "metadata", "name", default="")] + [""] * (len(columns_of(rt)) - 1)
    row: dict[str, Any] = {"cells": cells}
    if include_object == "Object":
        row["object"] = obj
    elif include_object != "None":
        row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                         "metadata": obj.get("metadata", {})}
    return row


def table(rt: ResourceType, objects: list[dict[str, Any]], resource_version: str, *,
          include_object: str = "Metadata", with_columns: bool = True) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``objects``."""
    out: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                           "metadata": {"resourceVersion": resource_version}}
    if with_columns:
        out["columnDefinitions"] = [
            {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": desc, "priority": p}
            for (n, t, p, desc) in columns_of(rt)]
    else:
        out["columnDefinitions"] = []
    out["rows"] = [row_of(rt, o, include_object) for o in objects]
    return out
