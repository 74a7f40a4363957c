"""Triggers and rules on the real cluster (docs/workflows.md, Triggers and Rules): a scheduled Trigger calls its
Rule's function again and again through the gateway (activation records with ``spec.trigger``) until the rule is
disabled; ``POST /trigger/NS/NAME`` on the gateway (and ``minictl trigger fire``) starts a rule's workflow with
the payload.

Objects go in with ``minictl apply -f`` and ``minictl function create --file``; the checks read the apiserver
(activations are proxied to the gateway's store) and the gateway. Every wait polls with a deadline.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from minik8s.testing import wait_until


def _traffic() -> Any:
    name = "minik8s_e2e_traffic"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("traffic.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


tr = _traffic()
pytestmark = [pytest.mark.timeout(300)]

GROUP = "/apis/minik8s.io/v1/namespaces/{ns}"
FN_LABEL = "minik8s.io/function"
TRIGGER_LABEL = "minik8s.io/trigger"
PERIOD = 2.0
ECHO = "def run(**event):\n    return {'got': event}\n"
DOUBLE = "def run(x):\n    return {'x': x * 2}\n"


@pytest.fixture()
def trg_ns(node_cluster: Any) -> Iterator[str]:
    ns = tr.create_namespace(node_cluster, "trg")
    yield ns
    tr.delete_namespace(node_cluster, ns, timeout=180)


def create_function(nc: Any, tmp: Path, ns: str, name: str, code: str) -> None:
    path = tmp / f"{name}.py"
    path.write_text(code)
    nc.minictl("function", "create", name, "-n", ns, "--file", str(path), timeout=180)


def apply(nc: Any, tmp: Path, *objects: dict[str, Any]) -> None:
    path = tmp / "objects.yaml"
    path.write_text(yaml.safe_dump_all(list(objects)))
    nc.minictl("apply", "-f", str(path))


def obj(kind: str, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "minik8s.io/v1", "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}


def triggered(nc: Any, ns: str, function: str, trigger: str) -> list[dict[str, Any]]:
    """Activation records of ``function`` made by ``trigger``, read through the apiserver."""
    got = nc.api.get(f"{GROUP.format(ns=ns)}/activations?labelSelector={FN_LABEL}%3D{function}")
    return [a for a in got["items"] if a["spec"].get("trigger") == trigger]


def trigger_status(nc: Any, ns: str, name: str) -> dict[str, Any]:
    return dict(nc.api.get(f"{GROUP.format(ns=ns)}/triggers/{name}").get("status") or {})


def fire_count(nc: Any, ns: str, name: str) -> int:
    return int(trigger_status(nc, ns, name).get("fireCount") or 0)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def test_a_schedule_calls_its_function_until_the_rule_is_disabled(node_cluster: Any, trg_ns: str,
                                                                  tmp_path: Path) -> None:
    nc, ns = node_cluster, trg_ns
    create_function(nc, tmp_path, ns, "echo", ECHO)
    # One call first: the firings below then find a warm instance (a cold start is not what is tested here).
    warm = nc.minictl("function", "invoke", "echo", "-n", ns, "-d", '{"warm": 1}', timeout=120)
    assert json.loads(warm.stdout) == {"got": {"warm": 1}}

    rule = obj("Rule", ns, "every-echo", {"trigger": "tick", "function": "echo"})
    apply(nc, tmp_path, obj("Trigger", ns, "tick", {"schedule": f"@every {PERIOD:g}s"}), rule)
    def three() -> list[dict[str, Any]] | None:
        found = triggered(nc, ns, "echo", "tick")
        return found if len(found) >= 3 else None

    records = wait_until(three, timeout=12, interval=0.25, what="3 activations of echo made by trigger tick")
    for record in records:
        spec = record["spec"]
        assert spec["async"] is True and spec["status"] == "success", spec
        got = json.loads(spec["result"])["got"]
        assert got["trigger"] == "tick" and parse_time(got["time"]), got
    status = trigger_status(nc, ns, "tick")
    assert status["fireCount"] >= 3 and parse_time(status["lastFireTime"]) < parse_time(status["nextFireTime"])

    # Disable the rule: once a tick has passed since (the gateway's rule cache has it), no more calls while
    # the schedule keeps ticking for more than three periods.
    rule["spec"]["enabled"] = False
    apply(nc, tmp_path, rule)
    disabled_at = fire_count(nc, ns, "tick")
    wait_until(lambda: fire_count(nc, ns, "tick") >= disabled_at + 1, timeout=4 * PERIOD, interval=0.1,
               what="one tick of trigger tick after disabling its rule")
    settled = datetime.now(UTC)
    ticks = fire_count(nc, ns, "tick")
    wait_until(lambda: fire_count(nc, ns, "tick") >= ticks + 4, timeout=8 * PERIOD, interval=0.25,
               what="four more ticks of trigger tick")
    late = [r["spec"]["start"] for r in triggered(nc, ns, "echo", "tick") if parse_time(r["spec"]["start"]) > settled]
    assert late == [], f"calls after the rule was disabled (settled at {settled.isoformat()}): {late}"


def test_post_trigger_starts_the_rules_workflow_with_the_payload(node_cluster: Any, trg_ns: str,
                                                                 tmp_path: Path) -> None:
    nc, ns = node_cluster, trg_ns
    create_function(nc, tmp_path, ns, "double", DOUBLE)
    apply(nc, tmp_path,
          obj("Workflow", ns, "doubler", {"startAt": "Double",
                                          "states": {"Double": {"type": "Task", "function": "double", "end": True}}}),
          obj("Trigger", ns, "hook", {}),
          obj("Rule", ns, "hook-doubler", {"trigger": "hook", "workflow": "doubler"}))

    def fire() -> httpx.Response | None:
        r = httpx.post(f"{nc.ident.gateway_url}/trigger/{ns}/hook", json={"x": 21}, timeout=30)
        # The gateway's caches may not hold the objects applied a moment ago yet: 404 until they do.
        return r if r.status_code == 202 and r.json()["firings"] else None

    r = wait_until(fire, timeout=15, interval=0.2, what="POST /trigger to start the workflow")
    [firing] = r.json()["firings"]
    assert firing["rule"] == "hook-doubler" and firing["workflow"] == "doubler", firing
    execution_id = firing["executionId"]
    path = f"{GROUP.format(ns=ns)}/workflowexecutions/{execution_id}"

    def finished() -> dict[str, Any] | None:
        wfx = nc.api.get_or_none(path)
        return wfx if wfx and (wfx.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    wfx = wait_until(finished, timeout=120, interval=0.5, what=f"execution {execution_id} to finish")
    assert wfx["status"]["phase"] == "Succeeded", wfx["status"]
    assert wfx["spec"]["input"] == {"x": 21}
    assert wfx["status"]["output"] == {"x": 42}
    assert wfx["metadata"]["labels"][TRIGGER_LABEL] == "hook"
    status = trigger_status(nc, ns, "hook")
    assert status["fireCount"] >= 1 and "lastFireTime" in status and "nextFireTime" not in status

    # minictl fires the same trigger and names what it started.
    res = nc.minictl("trigger", "fire", "hook", "-n", ns, "-d", '{"x": 1}')
    assert res.stdout.startswith("rule hook-doubler → workflow doubler: execution doubler-"), res.stdout
    unknown = nc.minictl("trigger", "fire", "nope", "-n", ns, check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == f'error: triggers.minik8s.io "nope" not found in namespace {ns}'
