"""Bad input never breaks the apiserver and never reaches etcd.

A deterministic fuzzer mutates valid objects of every served kind (drop a field, wrong JSON type,
unknown field, invalid names, huge strings, deep nesting, negative or absurd numbers, broken JSON)
and sends them through every write verb: POST, PUT, the three PATCH types, and PUT / PATCH on
``/status``. Afterwards:

- no answer was a 5xx, and the process still runs and answers ``/readyz``;
- enough cases were accepted that the fuzzer really exercised the storage path;
- every object under ``/registry/`` in etcd (read directly, not through the API) passes
  ``minik8s.api.validate``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from minik8s.api import registry, validate
from minik8s.testing import ApiserverProcess

pytestmark = pytest.mark.timeout(300)

SEED = 20240611
CASES = 2400
TIME_BUDGET = 150.0     # seconds for the fuzz loop (a bound, not an expectation)
NS = "fuzz"
DEEP = "__DEEP_NESTING__"
TEXT_PATCH = {"merge": "application/merge-patch+json", "strategic": "application/strategic-merge-patch+json",
              "json": "application/json-patch+json"}
VERBS = ("POST", "PUT", "PATCH-merge", "PATCH-strategic", "PATCH-json", "PUT-status", "PATCH-status")
TEMPLATE_LABELS = {"app": "fuzz"}


def pod_template() -> dict[str, Any]:
    return {"metadata": {"labels": dict(TEMPLATE_LABELS)},
            "spec": {"containers": [{"name": "main", "image": "busybox:latest", "command": ["sleep", "3600"],
                                     "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                     "env": [{"name": "MODE", "value": "fuzz"}],
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                                   "limits": {"cpu": "1", "memory": "128Mi"}},
                                     "readinessProbe": {"httpGet": {"path": "/", "port": 8080},
                                                        "periodSeconds": 5}}],
                     "restartPolicy": "Always"}}


def valid_object(kind: str, name: str) -> dict[str, Any]:
    """A valid object of ``kind`` (with a status, used by the /status cases)."""
    meta: dict[str, Any] = {"name": name, "labels": {"fuzz": "yes", "tier": "a"}, "annotations": {"note": "x"}}
    if kind == "Namespace":
        return {"metadata": meta, "spec": {}, "status": {"phase": "Active"}}
    if kind == "Node":
        return {"metadata": meta, "spec": {"podCIDR": "10.244.7.0/24", "unschedulable": False},
                "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                           "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                           "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
                           "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}
    if kind == "Pod":
        t = pod_template()
        return {"metadata": meta, "spec": t["spec"],
                "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}}
    if kind == "Service":
        return {"metadata": meta, "spec": {"selector": {"app": "fuzz"}, "type": "ClusterIP",
                                            "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                                       "protocol": "TCP"}]},
                "status": {"loadBalancer": {}}}
    if kind == "Endpoints":
        return {"metadata": meta, "subsets": [{"addresses": [{"ip": "10.244.0.5"}],
                                               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]}
    if kind == "Event":
        return {"metadata": meta, "involvedObject": {"kind": "Pod", "namespace": NS, "name": "p"},
                "reason": "Fuzzed", "message": f"event {name}", "type": "Normal", "count": 1,
                "source": {"component": "fuzzer"}}
    if kind in ("ReplicaSet", "Deployment"):
        spec = {"replicas": 2, "selector": {"matchLabels": dict(TEMPLATE_LABELS)}, "template": pod_template()}
        return {"metadata": meta, "spec": spec, "status": {"replicas": 0, "observedGeneration": 1}}
    if kind == "HorizontalPodAutoscaler":
        return {"metadata": meta,
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                         "minReplicas": 1, "maxReplicas": 5,
                         "metrics": [{"type": "Resource", "resource": {
                             "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
                "status": {"currentReplicas": 1, "desiredReplicas": 1}}
    if kind == "Ingress":
        return {"metadata": meta,
                "spec": {"rules": [{"host": "fuzz.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
                "status": {"loadBalancer": {}}}
    if kind == "Function":
        return {"metadata": meta,
                "spec": {"runtime": "python", "codeDigest": "sha256:" + "ab" * 32, "entryPoint": "main",
                         "minScale": 0, "maxScale": 3, "targetConcurrency": 2, "idleTimeout": 60,
                         "timeout": 30},
                "status": {"replicas": 0, "readyReplicas": 0}}
    if kind == "Activation":
        return {"metadata": {**meta, "labels": {**meta["labels"], "minik8s.io/function": "f"}},
                "spec": {"function": "f", "start": "2026-01-02T03:04:05.123456Z", "durationMs": 1.5, "initMs": 0.0,
                         "status": "success", "statusCode": 200, "result": "1", "truncated": False, "logs": "",
                         "async": False}}
    if kind == "Workflow":
        return {"metadata": meta,
                "spec": {"startAt": "first", "states": {"first": {"type": "Task", "function": "f", "end": True}}},
                "status": {"observedGeneration": 1}}
    if kind == "WorkflowExecution":
        definition = {"startAt": "first", "states": {
            "first": {"type": "Task", "function": "f", "next": "pick",
                      "retry": [{"errorEquals": ["States.ALL"], "maxAttempts": 2}]},
            "pick": {"type": "Choice", "choices": [{"variable": "$.n", "numericGreaterThan": 1, "next": "done"}],
                     "default": "done"},
            "done": {"type": "Succeed"}}}
        return {"metadata": {**meta, "labels": {**meta["labels"], "minik8s.io/workflow": "w"}},
                "spec": {"workflow": "w", "input": {"n": 2}, "definition": definition},
                "status": {"phase": "Running", "startTime": "2026-01-02T03:04:05Z", "current": ["first"],
                           "trace": [{"state": "first", "branch": "", "type": "Task", "status": "Running",
                                      "attempt": 1, "startTime": "2026-01-02T03:04:05Z", "input": {"n": 2}}]}}
    if kind == "Trigger":
        return {"metadata": meta, "spec": {"schedule": "*/5 * * * * *"},
                "status": {"fireCount": 3, "lastFireTime": "2026-01-02T03:04:05Z",
                           "nextFireTime": "2026-01-02T03:04:10Z"}}
    if kind == "Rule":
        return {"metadata": meta, "spec": {"trigger": "t", "workflow": "w", "enabled": True}}
    raise AssertionError(kind)


# --- mutations ---------------------------------------------------------------------------------------

Path = tuple[Any, ...]


def paths_of(doc: Any, prefix: Path = ()) -> list[Path]:
    out: list[Path] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(prefix + (k,))
            out += paths_of(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append(prefix + (i,))
            out += paths_of(v, prefix + (i,))
    return out


def get_at(doc: Any, path: Path) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 2 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, 7, -2**31, 2**31, 2**63, -2**63, 2**70, 10**30])
    if choice == 3:
        return rng.choice([0.5, -3.25, 1e300, -1e-300, 3.0])
    if choice == 4:
        return rng.choice(["", "x", "Always", "10.96.0.1", "-bad-", "ünïcødé", "a" * 300, "1Gi", "100m", "\u0000"])
    if choice == 5:
        return rng.choice(["True", "Pod", "TCP", "None", "   "])
    if choice == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(["a", "name", "x-y", "", "$patch", "spec"]): random_json(rng, depth + 1)
            for _ in range(rng.randrange(3))}


def wrong_type_for(rng: random.Random, value: Any) -> Any:
    for _ in range(20):
        v = random_json(rng)
        if type(v) is not type(value):
            return v
    return None


BAD_NAMES = ["", "UPPER", "under_score", "-lead", "trail-", "a" * 254, "dots..dots", "sp ace", "slash/x",
             "ünï", "a.b", "%2e%2e", "..", "x" * 64, "0", "name\n"]
BAD_LABEL_KEYS = ["", "-x", "a/b/c", "x" * 64, "bad key", "example.com/", "/x", "UPPER/ok"]
BAD_LABEL_VALUES = ["-x", "x" * 64, "sp ace", "a/b", "ü", "x_"]
HUGE = [10_000, 300_000, 1_100_000, 2_500_000]


def mutate(rng: random.Random, doc: dict[str, Any], *, status_only: bool) -> tuple[str, list[tuple[Path, Any]]]:
    """Pick a mutation of ``doc``; return its name and the changes (path, new value or ``DROP``)."""
    paths = paths_of(doc)
    if status_only:
        paths = [p for p in paths if p and p[0] == "status"] or [("status",)]
    op = rng.choices(
        ["benign", "unknown", "drop", "wrong_type", "bad_name", "bad_label", "huge", "deep", "number",
         "null", "empty"],
        weights=[26, 10, 10, 16, 5, 5, 3, 4, 8, 6, 7])[0]
    if op == "benign":
        choices: list[tuple[Path, Any]] = [
            (("metadata", "labels", f"k{rng.randrange(5)}"), f"v{rng.randrange(100)}"),
            (("metadata", "annotations", "fuzz.example.com/n"), str(rng.random())),
        ]
        if status_only:
            choices = [(p, get_at(doc, p)) for p in paths if not isinstance(get_at(doc, p), dict | list)] or \
                      [(("status",), {})]
        return op, [rng.choice(choices)]
    if op == "unknown":
        holders = [p for p in [(), *paths] if isinstance(get_at(doc, p), dict)]
        where = rng.choice(holders)
        return op, [(where + (rng.choice(["bogusField", "extra", "specc", "x-unknown"]),), random_json(rng))]
    if op == "bad_name":
        return op, [(("metadata", "name"), rng.choice(BAD_NAMES))]
    if op == "bad_label":
        if rng.random() < 0.5:
            return op, [(("metadata", "labels", rng.choice(BAD_LABEL_KEYS)), "v")]
        return op, [(("metadata", "labels", "ok"), rng.choice(BAD_LABEL_VALUES))]
    if op == "huge":
        target = rng.choice([p for p in paths if isinstance(get_at(doc, p), str)]
                            or [("metadata", "annotations", "huge")])
        return op, [(target, "h" * rng.choice(HUGE))]
    if op == "deep":
        return op, [(rng.choice(paths) if paths else ("spec",), DEEP + str(rng.choice([20, 100, 400, 900, 5000])))]
    if op == "number":
        numeric = [p for p in paths if isinstance(get_at(doc, p), int | float) and not isinstance(get_at(doc, p), bool)]
        target = rng.choice(numeric or paths or [("spec",)])
        return op, [(target, rng.choice([-1, -2**31 - 1, 2**64, -0.5, 1.5, 1e308, 0, 65536, 99999999999]))]
    if not paths:
        return "noop", []
    target = rng.choice(paths)
    if op == "drop":
        return op, [(target, DROP)]
    if op == "wrong_type":
        return op, [(target, wrong_type_for(rng, get_at(doc, target)))]
    if op == "null":
        return op, [(target, None)]
    return op, [(target, rng.choice(["", [], {}, 0]))]


DROP = object()


def apply_changes(doc: dict[str, Any], changes: list[tuple[Path, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for path, value in changes:
        cur: Any = doc
        ok = True
        for p in path[:-1]:
            if isinstance(cur, dict):
                if p not in cur or not isinstance(cur[p], dict | list):
                    cur[p] = {}
                cur = cur[p]
            elif isinstance(cur, list) and isinstance(p, int) and p < len(cur):
                cur = cur[p]
            else:
                ok = False
                break
        if not ok:
            continue
        last = path[-1]
        if value is DROP:
            if isinstance(cur, dict):
                cur.pop(last, None)
            elif isinstance(cur, list) and isinstance(last, int) and last < len(cur):
                cur.pop(last)
        elif isinstance(cur, dict) or (isinstance(cur, list) and isinstance(last, int) and last < len(cur)):
            cur[last] = value
    return doc


def merge_patch_of(changes: list[tuple[Path, Any]]) -> dict[str, Any]:
    """A merge patch with each change; list indices become whole-list replacement keys' parents."""
    patch: dict[str, Any] = {}
    for path, value in changes:
        keys = [p for p in path if isinstance(p, str)]
        if not keys:
            continue
        cur = patch
        for k in keys[:-1]:
            cur = cur.setdefault(k, {}) if isinstance(cur.get(k, {}), dict) else cur
        cur[keys[-1]] = None if value is DROP else value
    return patch


def json_patch_of(rng: random.Random, doc: dict[str, Any], changes: list[tuple[Path, Any]]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for path, value in changes:
        pointer = "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path)
        if value is DROP:
            ops.append({"op": "remove", "path": pointer})
        else:
            exists = True
            try:
                get_at(doc, path)
            except (KeyError, IndexError, TypeError):
                exists = False
            ops.append({"op": "replace" if exists else "add", "path": pointer, "value": value})
    if rng.random() < 0.1:
        ops.append(rng.choice([{"op": "test", "path": "/kind", "value": "Nope"}, {"op": "bogus", "path": "/a"},
                               {"op": "move", "from": "/nowhere", "path": "/x"}, {"op": "remove", "path": "/"},
                               {"op": "copy", "from": "/metadata", "path": "/spec"}]))
    return ops


def encode(body: Any, rng: random.Random) -> bytes:
    """JSON text of ``body``; deep-nesting markers become nested text the encoder could not produce."""
    text = json.dumps(body, allow_nan=True)
    while f'"{DEEP}' in text:
        start = text.index(f'"{DEEP}')
        end = text.index('"', start + 1)
        depth = int(text[start + 1 + len(DEEP):end])
        nested = ('{"a":' * depth + "1" + "}" * depth) if rng.random() < 0.5 else ("[" * depth + "]" * depth)
        text = text[:start] + nested + text[end + 1:]
    return text.encode()


RAW_BODIES = [b"", b"{", b"nul", b"[]", b"\"text\"", b"42", b"{\"metadata\":", b"\xff\xfe\x00",
              b"{\"a\":1,\"a\":2}", b"{}", b"{\"kind\":\"Pod\",\"apiVersion\":\"v2\"}", b"[{\"op\":\"add\"}]",
              b"{\"metadata\":{\"name\":null}}", b"{\"metadata\":[]}", b"NaN", b"{\"spec\":NaN}",
              b"{\"metadata\":{\"name\":\"x\",\"labels\":{\"a\":Infinity}}}"]


class Fuzzer:
    def __init__(self, url: str, rng: random.Random) -> None:
        self.url = url
        self.rng = rng
        self.client = httpx.Client(base_url=url, timeout=30)
        self.targets: dict[str, list[str]] = {}
        self.serial = 0
        self.codes: Counter[int] = Counter()
        self.by_verb: Counter[tuple[str, int]] = Counter()
        self.server_errors: list[str] = []

    def path(self, rt: registry.ResourceType, name: str = "", sub: str = "") -> str:
        ns = NS if rt.namespaced else None
        return rt.path(ns, name, sub) if name else rt.base_path(ns)

    def setup(self) -> None:
        r = self.client.post("/api/v1/namespaces", json={"metadata": {"name": NS}})
        assert r.status_code == 201, r.text
        for rt in registry.STORED:
            names = []
            for i in range(3):
                name = f"base-{rt.singular}-{i}"
                r = self.client.post(self.path(rt), json={"apiVersion": rt.api_version, "kind": rt.kind,
                                                          **valid_object(rt.kind, name)})
                assert r.status_code == 201, f"valid {rt.kind} refused: {r.status_code} {r.text}"
                names.append(name)
            self.targets[rt.plural] = names

    def send(self, method: str, path: str, body: bytes, ctype: str, what: str) -> int:
        r = self.client.request(method, path, content=body, headers={"Content-Type": ctype})
        self.codes[r.status_code] += 1
        if r.status_code >= 500:
            self.server_errors.append(f"{what}: {r.status_code} {r.text[:300]}")
        else:
            # Every answer is JSON; every refusal is a Status.
            doc = r.json()
            if r.status_code >= 400:
                assert doc.get("kind") == "Status" and doc.get("code") == r.status_code, (what, r.text[:300])
        return r.status_code

    def case(self) -> None:
        rng = self.rng
        rt = rng.choice(registry.STORED)
        verb = rng.choice(VERBS)
        if verb.endswith("-status") and "status" not in rt.subresources:
            verb = verb.split("-")[0] if verb.startswith("PUT") else "PATCH-merge"
        if rt.kind == "Namespace" and verb != "POST" and rng.random() < 0.5:
            verb = "POST"        # keep most namespace cases away from the shared ones
        if rng.random() < 0.04:  # broken or non-object bodies
            body = rng.choice(RAW_BODIES)
            name = rng.choice(self.targets[rt.plural])
            method, path, ctype = {
                "POST": ("POST", self.path(rt), "application/json"),
                "PUT": ("PUT", self.path(rt, name), "application/json"),
                "PUT-status": ("PUT", self.path(rt, name, "status"), "application/json"),
            }.get(verb, ("PATCH", self.path(rt, name, "status" if verb == "PATCH-status" else ""),
                         TEXT_PATCH.get(verb.split("-")[-1], "application/merge-patch+json")))
            self.by_verb[(verb, self.send(method, path, body, ctype, f"{verb} {rt.kind} raw {body[:20]!r}"))] += 1
            return
        if verb == "POST":
            self.serial += 1
            base = {"apiVersion": rt.api_version, "kind": rt.kind,
                    **valid_object(rt.kind, f"fz-{rt.singular}-{self.serial}")}
            op, changes = mutate(rng, base, status_only=False)
            body = encode(apply_changes(base, changes), rng)
            code = self.send("POST", self.path(rt), body, "application/json", f"POST {rt.kind} {op} {changes!r:.200}")
        else:
            name = rng.choice(self.targets[rt.plural])
            sub = "status" if verb.endswith("-status") else ""
            cur = self.client.get(self.path(rt, name))
            assert cur.status_code == 200, f"target {rt.kind}/{name} vanished: {cur.text[:200]}"
            doc = cur.json()
            if rng.random() < 0.8:
                doc["metadata"].pop("resourceVersion", None)
            op, changes = mutate(rng, doc, status_only=bool(sub))
            what = f"{verb} {rt.kind}/{name} {op} {changes!r:.200}"
            if verb.startswith("PUT"):
                code = self.send("PUT", self.path(rt, name, sub), encode(apply_changes(doc, changes), rng),
                                 "application/json", what)
            elif verb == "PATCH-json":
                code = self.send("PATCH", self.path(rt, name, sub), encode(json_patch_of(rng, doc, changes), rng),
                                 TEXT_PATCH["json"], what)
            else:
                kind = "strategic" if verb == "PATCH-strategic" else "merge"
                code = self.send("PATCH", self.path(rt, name, sub), encode(merge_patch_of(changes), rng),
                                 TEXT_PATCH[kind], what)
        self.by_verb[(verb, code)] += 1


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_registry(endpoint: str) -> list[tuple[str, dict[str, Any] | bytes]]:
    import aetcd

    host, port = endpoint.rsplit(":", 1)
    out: list[tuple[str, dict[str, Any] | bytes]] = []
    async with aetcd.Client(host, int(port), timeout=30,
                            options={"grpc.max_receive_message_length": 512 * 1024 * 1024}) as client:
        resp = await client.get_prefix(b"/registry/")
        for kv in resp:
            key = kv.key.decode()
            if key.startswith("/registry/ranges/"):
                continue
            try:
                # Strict JSON only: NaN / Infinity are not JSON, other clients could not read them.
                obj = json.loads(kv.value, parse_constant=_refuse_constant)
            except ValueError:
                out.append((key, bytes(kv.value)))
                continue
            if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
                obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
            out.append((key, obj))
    return out


def test_fuzzed_writes_never_break_the_apiserver_or_reach_etcd_invalid(fresh_etcd):
    server = ApiserverProcess(fresh_etcd.endpoint, extra_args=["--compaction-interval", "0"])
    server.start()
    try:
        fuzzer = Fuzzer(server.url, random.Random(SEED))
        fuzzer.setup()
        started = time.monotonic()
        done = 0
        for _ in range(CASES):
            if time.monotonic() - started > TIME_BUDGET:
                break
            fuzzer.case()
            done += 1
        fuzzer.client.close()
        print(f"fuzz: {done} cases in {time.monotonic() - started:.1f}s; answers {sorted(fuzzer.codes.items())}")
        print("fuzz: by verb", sorted(fuzzer.by_verb.items()))

        assert fuzzer.server_errors == [], \
            f"{len(fuzzer.server_errors)} answers were 5xx, e.g.:\n" + "\n".join(fuzzer.server_errors[:8])
        assert server.proc is not None and server.proc.poll() is None, "the apiserver died"
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        assert done >= 2000, f"only {done} cases ran within {TIME_BUDGET}s"
        accepted = sum(n for code, n in fuzzer.codes.items() if 200 <= code < 300)
        assert accepted >= 0.2 * done, f"only {accepted} of {done} cases were accepted: {dict(fuzzer.codes)}"
        for verb in VERBS:
            assert any(v == verb and 200 <= c < 300 for (v, c) in fuzzer.by_verb), f"no {verb} was ever accepted"

        stored = asyncio.run(read_registry(fresh_etcd.endpoint))
        assert len(stored) >= 3 * len(registry.STORED)
        bad: list[str] = []
        for key, obj in stored:
            plural = key.split("/")[2]
            rt = next((r for r in registry.STORED if r.plural == plural), None)
            if rt is None:
                bad.append(f"{key}: not a served resource")
                continue
            if not isinstance(obj, dict):
                bad.append(f"{key}: not a JSON object: {obj[:80]!r}")
                continue
            causes = validate(obj, rt)
            if causes:
                bad.append(f"{key}: {[getattr(c, 'describe', lambda c=c: str(c))() for c in causes][:3]}")
        assert bad == [], f"{len(bad)} invalid objects in etcd:\n" + "\n".join(bad[:10])
    finally:
        server.stop()
