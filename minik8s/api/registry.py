"""Which kinds the cluster serves, and how each is named on the wire.

One ``ResourceType`` per kind. The apiserver builds its routes and discovery documents from this
table; the client builds URLs from it; ``minictl`` resolves what a user typed (``po``, ``pods``,
``Pod``, ``deployment.apps``) with :func:`lookup`.
"""

from __future__ import annotations

from dataclasses import dataclass

from minik8s.errors import NotFound

MINIK8S_GROUP = "minik8s.io"


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # e.g. "status", "scale", "binding", "log", "code"
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    # False: not stored in etcd; the apiserver proxies it to the process that keeps it (activations:
    # the serverless gateway). Watch caches, the namespace reaper and the GC leave such kinds alone.
    in_etcd: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def qualified(self) -> str:
        """``pods`` for core kinds, ``deployments.apps`` otherwise (kubectl's error wording)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def base_path(self, namespace: str | None = None) -> str:
        """The collection URL; ``namespace`` None on a namespaced kind means all namespaces."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"

    def path(self, namespace: str | None, name: str, subresource: str = "") -> str:
        p = f"{self.base_path(namespace)}/{name}"
        return f"{p}/{subresource}" if subresource else p

    def key_prefix(self, namespace: str | None = None) -> str:
        """etcd key prefix: ``/registry/{plural}/`` (+ ``{namespace}/``)."""
        base = f"/registry/{self.plural}/"
        return f"{base}{namespace}/" if self.namespaced and namespace else base

    def key(self, namespace: str | None, name: str) -> str:
        return f"{self.key_prefix(namespace if self.namespaced else None)}{name}"


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "Namespace", "namespaces", False, ("ns",), (), ("status",)),
    ResourceType("", "v1", "Node", "nodes", False, ("no",), (), ("status",)),
    ResourceType("", "v1", "Pod", "pods", True, ("po",), ("all",), ("status", "binding", "log")),
    ResourceType("", "v1", "Service", "services", True, ("svc",), ("all",), ("status",)),
    ResourceType("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    ResourceType("", "v1", "Event", "events", True, ("ev",)),
    ResourceType("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ("all",), ("status", "scale")),
    ResourceType("apps", "v1", "Deployment", "deployments", True, ("deploy",), ("all",), ("status", "scale")),
    ResourceType("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, ("hpa",),
                 ("all",), ("status",)),
    ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), (), ("status",)),
    # functions/code: POST the code (a .py or .zip); the apiserver proxies it to the serverless gateway.
    ResourceType(MINIK8S_GROUP, "v1", "Function", "functions", True, ("fn", "func"), ("all",), ("status", "code")),
    # One record per function call, kept by the serverless gateway (not in etcd): the apiserver proxies
    # get/list/delete to it (docs/serverless.md, Activation). No status: it is a finished fact.
    ResourceType(MINIK8S_GROUP, "v1", "Activation", "activations", True, ("act",),
                 verbs=("delete", "get", "list"), in_etcd=False),
    ResourceType(MINIK8S_GROUP, "v1", "Workflow", "workflows", True, ("wf",), (), ("status",)),
    # One run of a Workflow (docs/workflows.md, Executions); the gateway's driver writes its status.
    ResourceType(MINIK8S_GROUP, "v1", "WorkflowExecution", "workflowexecutions", True, ("wfx",), (), ("status",)),
    # Schedules and event sources (docs/workflows.md, Triggers and Rules); the gateway fires them.
    ResourceType(MINIK8S_GROUP, "v1", "Trigger", "triggers", True, (), (), ("status",)),
    ResourceType(MINIK8S_GROUP, "v1", "Rule", "rules", True),
)

# The kinds the apiserver keeps in etcd (every kind but the proxied ones).
STORED: tuple[ResourceType, ...] = tuple(r for r in RESOURCES if r.in_etcd)

_BY_GVR = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def by_plural(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_GVR.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    return _BY_KIND.get((api_version, kind))


def groups() -> dict[str, list[str]]:
    """Group name → its versions, in the order served (core group under "")."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def lookup(name: str) -> ResourceType:
    """Resolve what a user typed: plural, singular, kind, short name, or ``plural.group``.

    Raises ``NotFound`` with kubectl's wording when nothing matches.
    """
    wanted = name.strip()
    low = wanted.lower()
    group_hint = ""
    if "." in low:
        low, group_hint = low.split(".", 1)
    for r in RESOURCES:
        if group_hint and r.group != group_hint and not r.group.startswith(group_hint):
            continue
        if low in (r.plural, r.singular) or low in r.short_names:
            return r
    raise NotFound(f'the server doesn\'t have a resource type "{wanted}"')
