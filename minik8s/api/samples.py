"""Small valid objects of every served kind, shaped like what kubectl and minictl send.

For tests and examples: :func:`sample` returns a fresh copy each call, so callers may mutate it.
The shapes include what real manifests carry (``creationTimestamp: null``, ``status: {}``,
``resources: {}``, ``strategy: {}`` from ``kubectl create ... --dry-run=client -o yaml``).
"""

from __future__ import annotations

import copy
from typing import Any

_DIGEST = "sha256:" + "ab" * 32

_SAMPLES: dict[str, dict[str, Any]] = {
    "Namespace": {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"creationTimestamp": None, "name": "team-a"}, "spec": {}, "status": {}},
    "Node": {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
        "spec": {"podCIDR": "10.244.1.0/24", "unschedulable": False,
                 "taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "3800m", "memory": "7Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": "2024-01-01T00:00:00Z"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "node-1"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-minik8s", "architecture": "amd64", "operatingSystem": "linux"},
        },
    },
    # kubectl run web --image=nginx --port=80 --dry-run=client -o yaml
    "Pod": {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"creationTimestamp": None, "labels": {"run": "web"}, "name": "web"},
        "spec": {
            "containers": [{
                "image": "nginx", "name": "web", "ports": [{"containerPort": 80}], "resources": {},
                "env": [{"name": "MODE", "value": "prod"},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 80}},
                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            }],
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
        },
        "status": {},
    },
    # kubectl create service clusterip web --tcp=80:8080 --dry-run=client -o yaml
    "Service": {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"creationTimestamp": None, "labels": {"app": "web"}, "name": "web"},
        "spec": {"ports": [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": "web"}, "type": "ClusterIP"},
        "status": {"loadBalancer": {}},
    },
    "Endpoints": {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.244.1.5", "nodeName": "node-1",
                                    "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}],
                     "notReadyAddresses": [{"ip": "10.244.1.6"}],
                     "ports": [{"name": "80-8080", "port": 8080, "protocol": "TCP"}]}],
    },
    "Event": {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.17a1b2c3d4e5f6a7", "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": "default", "uid": "u-1"},
        "reason": "Scheduled", "message": "Successfully assigned default/web to node-1", "type": "Normal",
        "count": 1, "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:00:00Z",
        "source": {"component": "default-scheduler"}, "reportingComponent": "default-scheduler",
    },
    "ReplicaSet": {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-5d4f8b", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d4f8b"}},
                 "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "5d4f8b"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}},
    },
    # kubectl create deployment x --image=busybox --dry-run=client -o yaml
    "Deployment": {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"creationTimestamp": None, "labels": {"app": "x"}, "name": "x"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}}, "strategy": {},
                 "template": {"metadata": {"creationTimestamp": None, "labels": {"app": "x"}},
                              "spec": {"containers": [{"image": "busybox", "name": "busybox", "resources": {}}]}}},
        "status": {},
    },
    # kubectl autoscale deployment x --cpu-percent=50 --min=1 --max=5 --dry-run=client -o yaml
    "HorizontalPodAutoscaler": {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"creationTimestamp": None, "name": "x"},
        "spec": {"maxReplicas": 5, "minReplicas": 1,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": 50}}}],
                 "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}},
        "status": {"currentMetrics": None, "desiredReplicas": 0},
    },
    # kubectl create ingress web --rule="foo.com/bar*=web:80" --dry-run=client -o yaml
    "Ingress": {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"creationTimestamp": None, "name": "web"},
        "spec": {"rules": [{"host": "foo.com", "http": {"paths": [
            {"backend": {"service": {"name": "web", "port": {"number": 80}}}, "path": "/bar", "pathType": "Prefix"},
        ]}}]},
        "status": {"loadBalancer": {}},
    },
    "Function": {
        "apiVersion": "minik8s.io/v1", "kind": "Function", "metadata": {"name": "hello"},
        "spec": {"runtime": "python", "codeDigest": _DIGEST, "entryPoint": "run",
                 "env": [{"name": "GREETING", "value": "hi"}],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                 "minScale": 0, "maxScale": 5, "targetConcurrency": 2, "idleTimeout": 30, "timeout": 10},
    },
    "Activation": {
        "apiVersion": "minik8s.io/v1", "kind": "Activation",
        "metadata": {"name": "0123456789abcdef0123456789abcdef", "labels": {"minik8s.io/function": "hello"}},
        "spec": {"function": "hello", "start": "2026-01-02T03:04:05.123456Z", "durationMs": 12.5, "initMs": 0.0,
                 "status": "success", "statusCode": 200, "result": "8", "truncated": False, "logs": "",
                 "pod": "hello-7d9c5b-abcde", "async": False},
    },
    "Workflow": {
        "apiVersion": "minik8s.io/v1", "kind": "Workflow", "metadata": {"name": "order"},
        "spec": {"startAt": "check",
                 "states": {"check": {"type": "Task", "function": "check-order", "next": "ship"},
                            "ship": {"type": "Task", "function": "ship-order", "end": True}}},
    },
    "WorkflowExecution": {
        "apiVersion": "minik8s.io/v1", "kind": "WorkflowExecution",
        "metadata": {"name": "order-0a1b2c3d", "labels": {"minik8s.io/workflow": "order"}},
        "spec": {"workflow": "order", "input": {"id": 7},
                 "definition": {"startAt": "check",
                                "states": {"check": {"type": "Task", "function": "check-order", "end": True}}}},
        "status": {"phase": "Running", "startTime": "2026-01-02T03:04:05Z", "current": ["check"],
                   "trace": [{"state": "check", "branch": "", "type": "Task", "status": "Running", "attempt": 1,
                              "startTime": "2026-01-02T03:04:05Z", "input": {"id": 7}}]},
    },
    "Trigger": {
        "apiVersion": "minik8s.io/v1", "kind": "Trigger", "metadata": {"name": "tick"},
        "spec": {"schedule": "@every 2s"},
    },
    "Rule": {
        "apiVersion": "minik8s.io/v1", "kind": "Rule", "metadata": {"name": "tick-hello"},
        "spec": {"trigger": "tick", "function": "hello", "enabled": True},
    },
}


def sample(kind: str) -> dict[str, Any]:
    """A fresh valid object of ``kind`` (a deep copy; ``KeyError`` for an unknown kind)."""
    return copy.deepcopy(_SAMPLES[kind])


def kinds() -> list[str]:
    return list(_SAMPLES)
