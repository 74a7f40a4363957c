"""Workflows on the real cluster: functions built by the gateway's builder and run in containerd pods, Workflow
objects validated by the apiserver, executions driven by the gateway's workflow driver through its own call
path (activator, activation records), and a ``kill -9`` of the gateway in the middle of a Wait.

Functions are created once per module with ``minictl function create … --file`` (builds take seconds each);
workflows go in with ``minictl apply -f``. Traffic goes only to the apiserver and the gateway on 127.0.0.1.
Every wait is a poll with a deadline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from minik8s.testing import wait_until

pytestmark = [pytest.mark.timeout(300)]

EXECUTIONS = "/apis/minik8s.io/v1/namespaces/{ns}/workflowexecutions"
ACTIVATIONS = "/apis/minik8s.io/v1/namespaces/{ns}/activations"


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

INC = "def run(n=0, **rest):\n    return {**rest, 'n': n + 1}\n"
DOUBLE = "def run(n=0, **rest):\n    return {**rest, 'n': n * 2}\n"
NAP = """\
import time


def run(ms=1500, tag=""):
    time.sleep(ms / 1000)
    return {"tag": tag, "slept": ms}
"""
# State across calls: a counter file in the pod's /tmp (one pod: minScale 1, maxScale 1).
FLAKY = """\
import os


def run(key="k", failures=2, **rest):
    path = "/tmp/flaky-" + key
    n = int(open(path).read()) if os.path.exists(path) else 0
    n += 1
    with open(path, "w") as f:
        f.write(str(n))
    if n <= failures:
        raise RuntimeError(f"attempt {n} of {key} fails")
    return {"key": key, "attempts": n}
"""


class Env:
    """The module's namespace, its functions, and the way to the gateway."""

    def __init__(self, nc: Any, ns: str, tmp: Path) -> None:
        self.nc, self.ns, self.tmp = nc, ns, tmp
        self.gateway = nc.ident.gateway_url

    def apply(self, name: str, spec: dict[str, Any], *, check: bool = True) -> Any:
        path = self.tmp / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump({"apiVersion": "minik8s.io/v1", "kind": "Workflow",
                                        "metadata": {"name": name, "namespace": self.ns}, "spec": spec}))
        return self.nc.minictl("apply", "-f", str(path), check=check)

    def invoke(self, name: str, data: Any, *, params: dict[str, str] | None = None,
               timeout: float = 120) -> httpx.Response:
        return httpx.post(f"{self.gateway}/workflow/{self.ns}/{name}", json=data, params=params, timeout=timeout)

    def execution(self, name: str) -> dict[str, Any]:
        return self.nc.api.get(f"{EXECUTIONS.format(ns=self.ns)}/{name}")  # type: ignore[no-any-return]

    def minictl(self, *args: str, check: bool = True, timeout: float = 120) -> Any:
        return self.nc.minictl(*args, "-n", self.ns, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def wf(node_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    nc = node_cluster
    ns = tr.create_namespace(nc, "wf")
    tmp = tmp_path_factory.mktemp("workflows")
    env = Env(nc, ns, tmp)
    for name, code, extra in (("inc", INC, ()), ("double", DOUBLE, ()),
                              ("nap-a", NAP, ("--min-scale", "1")), ("nap-b", NAP, ("--min-scale", "1")),
                              ("flaky", FLAKY, ("--min-scale", "1", "--max-scale", "1"))):
        path = tmp / f"{name}.py"
        path.write_text(code)
        nc.minictl("function", "create", name, "-n", ns, "--file", str(path), *extra, "--no-wait", timeout=60)
    for name in ("inc", "double", "nap-a", "nap-b", "flaky"):
        # Built = an image and a URL (the condition may lag: the function controller's concern, not this test's).
        wait_until(lambda n=name: ((nc.api.get_or_none(f"/apis/minik8s.io/v1/namespaces/{ns}/functions/{n}") or {})
                                   .get("status") or {}).get("image"), timeout=180, interval=0.3,
                   what=f"function {name} built")
    yield env
    tr.delete_namespace(nc, ns, timeout=180)


def states_of(execution: dict[str, Any]) -> list[str]:
    return [e["state"] for e in execution["status"]["trace"]]


def seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


CALC = {"startAt": "Inc", "states": {
    "Inc": {"type": "Task", "function": "inc", "next": "Double"},
    "Double": {"type": "Task", "function": "double", "next": "Check"},
    "Check": {"type": "Choice", "choices": [{"variable": "$.n", "numericGreaterThan": 10, "next": "Big"}],
              "default": "Small"},
    "Big": {"type": "Pass", "result": "big", "resultPath": "$.size", "end": True},
    "Small": {"type": "Pass", "result": "small", "resultPath": "$.size", "end": True}}}


def test_a_chain_into_a_choice_gives_each_input_its_branch(wf: Env) -> None:
    wf.apply("calc", CALC)
    out = wf.minictl("workflow", "invoke", "calc", "-d", '{"n": 5}').stdout
    assert json.loads(out) == {"n": 12, "size": "big"}
    r = wf.invoke("calc", {"n": 1})
    assert r.status_code == 200, r.text
    assert r.json() == {"n": 4, "size": "small"}
    small = wf.execution(r.headers["x-minik8s-execution-id"])
    assert small["status"]["phase"] == "Succeeded"
    assert states_of(small) == ["Inc", "Double", "Check", "Small"]
    inputs = [e.get("input") for e in small["status"]["trace"]]
    assert inputs[:3] == [{"n": 1}, {"n": 2}, {"n": 4}], "the chain did not pass outputs along"
    assert small["spec"]["definition"] == CALC and small["metadata"]["labels"]["minik8s.io/workflow"] == "calc"
    listed = wf.minictl("workflow", "executions", "calc").stdout
    assert listed.count("Succeeded") == 2, listed
    names = [line.split()[0] for line in listed.splitlines()[1:]]
    big_name = next(n for n in names if n != small["metadata"]["name"])
    assert states_of(wf.execution(big_name)) == ["Inc", "Double", "Check", "Big"]
    described = wf.minictl("workflow", "describe", big_name).stdout
    assert "Big" in described and "Small" not in described and "Succeeded" in described, described
    # Each Task call went through the gateway's call path: its activation record exists.
    ids = [e["activationId"] for e in small["status"]["trace"] if e["type"] == "Task"]
    assert len(ids) == 2 and all(ids)

    def recorded() -> bool:
        return all(wf.nc.api.get_or_none(f"{ACTIVATIONS.format(ns=wf.ns)}/{i}") is not None for i in ids)

    wait_until(recorded, timeout=30, interval=0.2, what="the activation records of the execution's Tasks")


def test_a_parallel_of_two_sleeping_functions_runs_them_at_once(wf: Env) -> None:
    wf.apply("fan", {"startAt": "Fan", "states": {"Fan": {"type": "Parallel", "end": True, "branches": [
        {"startAt": "A", "states": {"A": {"type": "Task", "function": "nap-a", "end": True,
                                          "parameters": {"ms": 1500, "tag": "a"}}}},
        {"startAt": "B", "states": {"B": {"type": "Task", "function": "nap-b", "end": True,
                                          "parameters": {"ms": 1500, "tag": "b"}}}}]}}})
    for fn in ("nap-a", "nap-b"):  # warm: this test times the workflow, not a cold start
        r = httpx.post(f"{wf.gateway}/function/{wf.ns}/{fn}", json={"ms": 0}, timeout=120)
        assert r.status_code == 200, r.text
    t0 = time.monotonic()
    r = wf.invoke("fan", {})
    took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert r.json() == [{"tag": "a", "slept": 1500}, {"tag": "b", "slept": 1500}]
    assert took < 2.7, f"two 1.5 s branches took {took:.2f}s"
    execution = wf.execution(r.headers["x-minik8s-execution-id"])
    branches = {(e["state"], e["branch"]) for e in execution["status"]["trace"]}
    assert branches == {("Fan", ""), ("A", "Fan[0]"), ("B", "Fan[1]")}


RETRIED = {"startAt": "Try", "states": {
    "Try": {"type": "Task", "function": "flaky", "end": True,
            "retry": [{"errorEquals": ["States.TaskFailed"], "intervalSeconds": 0.5, "maxAttempts": 3,
                       "backoffRate": 1.5}],
            "catch": [{"errorEquals": ["RuntimeError"], "next": "Recover", "resultPath": "$.err"}]},
    "Recover": {"type": "Pass", "end": True}}}


def test_a_task_that_fails_twice_succeeds_under_retry_and_one_that_always_fails_is_caught(wf: Env) -> None:
    wf.apply("retried", RETRIED)
    key = uuid.uuid4().hex[:8]
    r = wf.invoke("retried", {"key": f"twice-{key}", "failures": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {"key": f"twice-{key}", "attempts": 3}
    trace = wf.execution(r.headers["x-minik8s-execution-id"])["status"]["trace"]
    assert [(e["status"], e["attempt"]) for e in trace] == [("Retrying", 1), ("Retrying", 2), ("Succeeded", 3)]
    assert trace[0]["error"] == "RuntimeError" and "attempt 1" in trace[0]["cause"]
    r = wf.invoke("retried", {"key": f"always-{key}", "failures": 99})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["err"]["error"] == "RuntimeError" and "attempt 4" in out["err"]["cause"], out
    trace = wf.execution(r.headers["x-minik8s-execution-id"])["status"]["trace"]
    assert [e["status"] for e in trace] == ["Retrying", "Retrying", "Retrying", "Caught", "Succeeded"]


def test_a_fail_state_ends_the_execution_with_its_error(wf: Env) -> None:
    wf.apply("guard", {"startAt": "Check", "states": {
        "Check": {"type": "Choice", "choices": [{"variable": "$.n", "numericGreaterThan": 100, "next": "TooBig"}],
                  "default": "Fine"},
        "TooBig": {"type": "Fail", "error": "TooBig", "cause": "n is over 100"},
        "Fine": {"type": "Succeed"}}})
    r = wf.invoke("guard", {"n": 500})
    assert r.status_code == 500, r.text
    body = r.json()
    assert (body["error"], body["cause"]) == ("TooBig", "n is over 100")
    execution = wf.execution(body["execution"])
    assert execution["status"]["phase"] == "Failed" and execution["status"]["error"] == "TooBig"
    res = wf.minictl("workflow", "invoke", "guard", "-d", '{"n": 101}', check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "TooBig" in res.stderr.strip().splitlines()[-1], res.stderr
    assert wf.invoke("guard", {"n": 1}).json() == {"n": 1}
    missing = wf.invoke("no-such-workflow", {})
    assert missing.status_code == 404 and "not found" in missing.json()["error"]


def test_a_kill_9_of_the_gateway_during_a_wait_resumes_the_execution_where_it_was(wf: Env) -> None:
    nc = wf.nc
    wf.apply("nap", {"startAt": "Inc", "states": {
        "Inc": {"type": "Task", "function": "inc", "next": "Nap"},
        "Nap": {"type": "Wait", "seconds": 8, "next": "Double"},
        "Double": {"type": "Task", "function": "double", "end": True}}})
    r = wf.invoke("nap", {"n": 1}, params={"async": "true"})
    assert r.status_code == 202, r.text
    name = r.json()["executionId"]

    def waiting() -> dict[str, Any] | None:
        status = wf.execution(name).get("status") or {}
        return status if status.get("waitUntil") else None

    before = wait_until(waiting, timeout=60, interval=0.1, what="the execution to reach its Wait")
    wait_until_t = seconds(before["waitUntil"])
    pid = int(tr.program(nc, "gateway")["pid"])
    os.kill(pid, signal.SIGKILL)
    tr.wait_restarted(nc, "gateway", pid)
    restarted = time.time()

    def finished() -> dict[str, Any] | None:
        execution = wf.execution(name)
        return execution if (execution.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    execution = wait_until(finished, timeout=90, interval=0.2, what="the execution to finish after the restart")
    status = execution["status"]
    assert status["phase"] == "Succeeded", status
    assert status["output"] == {"n": 4}
    assert states_of(execution) == ["Inc", "Nap", "Double"], "a state ran again or was skipped"
    assert all(e["status"] == "Succeeded" for e in status["trace"])
    nap = status["trace"][1]
    assert nap["startTime"] == before["trace"][1]["startTime"], "the Wait was started again"
    ended = seconds(nap["endTime"])
    # Until its recorded waitUntil, not 8 s more from the restart.
    assert ended >= wait_until_t - 0.05
    assert ended <= max(wait_until_t + 1.5, restarted + 5), (nap, before["waitUntil"], restarted)


def test_invalid_workflows_are_refused_with_the_state_named(wf: Env) -> None:
    cases = {
        "dangling": ({"startAt": "Start", "states": {"Start": {"type": "Pass", "next": "Nowhere"}}},
                     ["Start", "Nowhere"]),
        "orphan": ({"startAt": "Start", "states": {"Start": {"type": "Pass", "end": True},
                                                   "Orphan": {"type": "Pass", "end": True}}}, ["Orphan"]),
        "spin": ({"startAt": "Ping", "states": {"Ping": {"type": "Pass", "next": "Pong"},
                                                "Pong": {"type": "Pass", "next": "Ping"}}}, ["Ping", "Pong"]),
        "taskless": ({"startAt": "Work", "states": {"Work": {"type": "Task", "end": True}}}, ["Work", "function"]),
    }
    for name, (spec, words) in cases.items():
        res = wf.apply(name, spec, check=False)
        assert res.returncode != 0, f"{name} was accepted: {res.stdout}"
        assert "Traceback" not in res.stderr
        for word in words:
            assert word in res.stderr, (name, res.stderr)
        assert wf.nc.api.get_or_none(f"/apis/minik8s.io/v1/namespaces/{wf.ns}/workflows/{name}") is None
