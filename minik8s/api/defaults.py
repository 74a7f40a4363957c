"""Server-side defaults, applied by the apiserver on every write before validation.

:func:`apply_defaults` fills only fields that are absent (or ``null``), so it is idempotent and
never overrides what a client sent. It never raises: a part with the wrong shape is left alone
for :func:`minik8s.api.validation.validate` to report.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from minik8s.api.registry import ResourceType

# Function defaults (docs/serverless.md, "Objects"): Knative-like scaling, zero after a minute idle.
FUNCTION_RUNTIME = "python"
FUNCTION_ENTRY_POINT = "run"
FUNCTION_MIN_SCALE = 0
FUNCTION_MAX_SCALE = 10
FUNCTION_TARGET_CONCURRENCY = 2
FUNCTION_IDLE_TIMEOUT_SECONDS = 60
FUNCTION_TIMEOUT_SECONDS = 60

_PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    if d.get(key) is None:
        d[key] = value


def _dict(parent: Any, key: str, *, create: bool = False) -> dict[str, Any] | None:
    """``parent[key]`` if it is a dict; with ``create``, an absent or null one is made."""
    if not isinstance(parent, dict):
        return None
    value = parent.get(key)
    if value is None and create:
        value = parent[key] = {}
    return value if isinstance(value, dict) else None


def _dicts(parent: Any, key: str) -> list[dict[str, Any]]:
    """The dict items of the list ``parent[key]`` (others are skipped)."""
    if not isinstance(parent, dict):
        return []
    value = parent.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _pull_policy(image: Any) -> str:
    if not isinstance(image, str):
        return "IfNotPresent"
    name = image.split("@", 1)[0]
    if "@" in image:
        return "IfNotPresent"
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _probe(container: dict[str, Any], key: str) -> None:
    probe = _dict(container, key)
    if probe is None:
        return
    for k, v in _PROBE_DEFAULTS.items():
        # These are plain ints in Kubernetes, where 0 cannot be told from absent: 0 is defaulted too.
        cur = probe.get(k)
        if cur is None or (cur == 0 and type(cur) is int):
            probe[k] = v
    http = _dict(probe, "httpGet")
    if http is not None:
        _set(http, "path", "/")
        _set(http, "scheme", "HTTP")


def _container(c: dict[str, Any]) -> None:
    _set(c, "imagePullPolicy", _pull_policy(c.get("image")))
    _set(c, "terminationMessagePath", "/dev/termination-log")
    _set(c, "terminationMessagePolicy", "File")
    for port in _dicts(c, "ports"):
        _set(port, "protocol", "TCP")
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c, key)
    pre_stop = _dict(_dict(c, "lifecycle"), "preStop")
    http = _dict(pre_stop, "httpGet")
    if http is not None:
        _set(http, "path", "/")
        _set(http, "scheme", "HTTP")


def pod_spec_defaults(spec: Any) -> None:
    """Defaults of a pod spec, shared by pods and pod templates."""
    if not isinstance(spec, dict):
        return
    _set(spec, "restartPolicy", "Always")
    _set(spec, "terminationGracePeriodSeconds", 30)
    _set(spec, "dnsPolicy", "ClusterFirst")
    _set(spec, "schedulerName", "default-scheduler")
    for key in ("containers", "initContainers"):
        for c in _dicts(spec, key):
            _container(c)
    for v in _dicts(spec, "volumes"):
        host_path = _dict(v, "hostPath")
        if host_path is not None:
            _set(host_path, "type", "")


def _pod(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    pod_spec_defaults(spec)
    # As in Kubernetes, a container that states only limits requests exactly its limits, so the
    # scheduler counts what the container may use.
    for key in ("containers", "initContainers"):
        for c in _dicts(spec, key):
            res = _dict(c, "resources")
            limits = _dict(res, "limits")
            if res is None or not limits:
                continue
            requests = _dict(res, "requests", create=True)
            if requests is not None:
                for name, qty in limits.items():
                    _set(requests, name, qty)
    status = _dict(obj, "status", create=True)
    if status is not None:
        _set(status, "phase", "Pending")


def _template(obj: dict[str, Any]) -> None:
    pod_spec_defaults(_dict(_dict(_dict(obj, "spec"), "template"), "spec"))


def _replicaset(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    if spec is not None:
        _set(spec, "replicas", 1)
    _template(obj)


def _deployment(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    if spec is not None:
        _set(spec, "replicas", 1)
        _set(spec, "revisionHistoryLimit", 10)
        _set(spec, "progressDeadlineSeconds", 600)
        strategy = _dict(spec, "strategy", create=True)
        if strategy is not None:
            _set(strategy, "type", "RollingUpdate")
            if strategy.get("type") == "RollingUpdate":
                rolling = _dict(strategy, "rollingUpdate", create=True)
                if rolling is not None:
                    _set(rolling, "maxUnavailable", "25%")
                    _set(rolling, "maxSurge", "25%")
    _template(obj)


def _service(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    if spec is None:
        return
    _set(spec, "type", "ClusterIP")
    _set(spec, "sessionAffinity", "None")
    _set(spec, "internalTrafficPolicy", "Cluster")
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        _set(spec, "externalTrafficPolicy", "Cluster")
    for port in _dicts(spec, "ports"):
        _set(port, "protocol", "TCP")
        if port.get("targetPort") is None and port.get("port") is not None:
            port["targetPort"] = port["port"]


def _endpoints(obj: dict[str, Any]) -> None:
    for subset in _dicts(obj, "subsets"):
        for port in _dicts(subset, "ports"):
            _set(port, "protocol", "TCP")


# autoscaling/v2 defaults: cpu at 80 % of the requests when no metric is given; a given ``behavior`` is
# completed rule by rule (scaleDown's window stays unset: the controller's downscale-stabilization flag).
HPA_DEFAULT_CPU_UTILIZATION = 80
HPA_SCALE_UP: dict[str, Any] = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                             {"type": "Percent", "value": 100, "periodSeconds": 15}]}
HPA_SCALE_DOWN: dict[str, Any] = {"selectPolicy": "Max",
                                  "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def _hpa(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    if spec is None:
        return
    _set(spec, "minReplicas", 1)
    if spec.get("metrics") is None or spec.get("metrics") == []:
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": HPA_DEFAULT_CPU_UTILIZATION}}}]
    behavior = _dict(spec, "behavior")
    if behavior is None:
        return
    for key, default in (("scaleUp", HPA_SCALE_UP), ("scaleDown", HPA_SCALE_DOWN)):
        rules = _dict(behavior, key, create=True)
        if rules is None:
            continue
        for field, value in default.items():
            _set(rules, field, copy.deepcopy(value))


def _function(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec", create=True)
    if spec is None:
        return
    _set(spec, "runtime", FUNCTION_RUNTIME)
    _set(spec, "entryPoint", FUNCTION_ENTRY_POINT)
    _set(spec, "minScale", FUNCTION_MIN_SCALE)
    min_scale = spec.get("minScale")
    # A minScale above the default maximum raises the default instead of making the object invalid.
    fits = isinstance(min_scale, int) and not isinstance(min_scale, bool) and min_scale > FUNCTION_MAX_SCALE
    _set(spec, "maxScale", min_scale if fits else FUNCTION_MAX_SCALE)
    _set(spec, "targetConcurrency", FUNCTION_TARGET_CONCURRENCY)
    _set(spec, "idleTimeout", FUNCTION_IDLE_TIMEOUT_SECONDS)
    _set(spec, "timeout", FUNCTION_TIMEOUT_SECONDS)


def _rule(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    if spec is not None:
        _set(spec, "enabled", True)


def _namespace(obj: dict[str, Any]) -> None:
    status = _dict(obj, "status", create=True)
    if status is not None:
        _set(status, "phase", "Active")


_BY_KIND: dict[str, Callable[[dict[str, Any]], None]] = {
    "Pod": _pod,
    "ReplicaSet": _replicaset,
    "Deployment": _deployment,
    "Service": _service,
    "Endpoints": _endpoints,
    "HorizontalPodAutoscaler": _hpa,
    "Function": _function,
    "Rule": _rule,
    "Namespace": _namespace,
}


def apply_defaults(obj: dict[str, Any], rt: ResourceType) -> None:
    """Fill the server-side defaults of ``obj`` (of kind ``rt``) in place.

    Idempotent; only absent or ``null`` fields are filled; never raises on bad shapes.
    """
    fn = _BY_KIND.get(rt.kind)
    if fn is None or not isinstance(obj, dict):
        return
    try:
        fn(obj)
    except (TypeError, ValueError, AttributeError, RecursionError):
        # Defaults are best effort on malformed objects; validation reports what is wrong.
        pass
