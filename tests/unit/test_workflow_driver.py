"""The workflow driver with a recording fake API client, a fake invoker (functions as Python coroutines) and
a fake wall clock: every state path, retries and catches, Parallel concurrency, and resuming an execution
from a recorded status as a restarted gateway does (nothing recorded Succeeded runs again; a Wait sleeps
only until its recorded waitUntil). Also the gateway's /workflow route in front of a fake runner."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from minik8s.errors import NotFound
from serverless.gateway import Gateway
from serverless.workflows import EXECUTIONS, WORKFLOWS, StateError, WorkflowDriver, clip, parse_stamp, stamp

pytestmark = pytest.mark.timeout(20)

Obj = dict[str, Any]
NS = "default"
T0 = 1_800_000_000.0


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


class FakeClient:
    """Workflows and executions in a dict; records every status write (a copy of what was stored)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.writes: list[Obj] = []
        self.uid = 0

    def add(self, plural: str, obj: Obj) -> Obj:
        self.uid += 1
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", NS)
        meta.setdefault("uid", f"uid-{self.uid}")
        meta.setdefault("resourceVersion", str(self.uid))
        self.objects[(plural, meta["namespace"], meta["name"])] = obj
        return obj

    async def create(self, obj: Obj, *, namespace: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> Obj:
        stored = copy.deepcopy(obj)
        stored.pop("status", None)  # the status subresource: not written by a create
        return copy.deepcopy(self.add("workflowexecutions", stored))

    async def get(self, rt: Any, name: str, namespace: str | None = None) -> Obj:
        obj = self.objects.get((rt.plural, namespace or NS, name))
        if obj is None:
            raise NotFound(f'{rt.plural} "{name}" not found', kind=rt.plural, name=name)
        return copy.deepcopy(obj)

    async def patch(self, rt: Any, name: str, patch: Any, *, namespace: str | None = None, patch_type: Any = "merge",
                    subresource: str = "") -> Obj:
        assert rt is EXECUTIONS and subresource == "status" and set(patch) == {"status"}
        obj = self.objects.get((rt.plural, namespace or NS, name))
        if obj is None:
            raise NotFound(f'{rt.plural} "{name}" not found', kind=rt.plural, name=name)
        obj["status"] = _merge(obj.get("status") or {}, patch["status"])
        self.writes.append(copy.deepcopy(obj["status"]))
        await asyncio.sleep(0)
        return copy.deepcopy(obj)

    async def list(self, rt: Any, namespace: str | None = None, **_: Any) -> tuple[list[Obj], str]:
        return [], "1"

    def watch(self, *_: Any, **__: Any) -> Any:  # pragma: no cover - the informer is not run here
        raise AssertionError("not used")

    def execution(self, name: str) -> Obj:
        return self.objects[("workflowexecutions", NS, name)]

    def last_written(self) -> Obj:
        return self.writes[-1] if self.writes else {}


Fn = Callable[[Any], Awaitable[tuple[int, Any]]]


class FakeInvoker:
    """Functions as coroutines: ``fn(body) -> (status, value)``. Records (function, body, the status stored
    at call time) so tests see that the Task's Running entry was written before the call."""

    def __init__(self, client: FakeClient, functions: dict[str, Fn]) -> None:
        self.client = client
        self.functions = functions
        self.calls: list[tuple[str, Any, Obj]] = []
        self.n = 0

    async def invoke(self, ns: str, name: str, body: bytes) -> tuple[int, bytes, str]:
        data = json.loads(body)
        self.calls.append((name, data, copy.deepcopy(self.client.last_written())))
        fn = self.functions.get(name)
        if fn is None:
            return 404, json.dumps({"error": f"function {ns}/{name} not found"}).encode(), ""
        self.n += 1
        status, value = await fn(data)
        return status, json.dumps(value).encode(), f"act{self.n:029d}"

    def called(self, name: str) -> int:
        return sum(1 for n, _, _ in self.calls if n == name)


class FakeClock:
    """Wall time that only moves when the driver sleeps (instantly); the sleeps are recorded."""

    def __init__(self, t: float = T0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def ok(fn: Callable[[Any], Any]) -> Fn:
    async def call(body: Any) -> tuple[int, Any]:
        return 200, fn(body)
    return call


def failing(kind: str = "RuntimeError", message: str = "boom") -> Fn:
    async def call(body: Any) -> tuple[int, Any]:
        return 500, {"error": message, "type": kind, "traceback": "Traceback …"}
    return call


def sleeping(seconds: float, value: Any) -> Fn:
    async def call(body: Any) -> tuple[int, Any]:
        await asyncio.sleep(seconds)
        return 200, value
    return call


def make(functions: dict[str, Fn], *, clock: FakeClock | None = None,
         workers: int = 8) -> tuple[WorkflowDriver, FakeClient, FakeInvoker, FakeClock]:
    client = FakeClient()
    invoker = FakeInvoker(client, functions)
    clock = clock or FakeClock()
    driver = WorkflowDriver(client, invoker, workers=workers, clock=clock, sync_timeout=10)
    return driver, client, invoker, clock


def workflow(client: FakeClient, spec: Obj, name: str = "wf") -> Obj:
    return client.add("workflows", {"apiVersion": WORKFLOWS.api_version, "kind": "Workflow",
                                    "metadata": {"name": name}, "spec": spec})


async def run(driver: WorkflowDriver, data: Any, name: str = "wf") -> Obj:
    execution, final = await driver.call(NS, name, data)
    assert final is not None, f"execution {execution} did not finish"
    return final


def trace(final: Obj) -> list[tuple[str, str, str]]:
    return [(e["state"], e["branch"], e["status"]) for e in final["status"]["trace"]]


def inc(body: Any) -> Any:
    return {**body, "n": body["n"] + 1}


def double(body: Any) -> Any:
    return {**body, "n": body["n"] * 2}


CHAIN: Obj = {"startAt": "Inc", "states": {
    "Inc": {"type": "Task", "function": "inc", "next": "Double"},
    "Double": {"type": "Task", "function": "double", "next": "Done"},
    "Done": {"type": "Succeed"}}}


# --- paths through the states ----------------------------------------------------------------------

async def test_a_chain_passes_outputs_along_and_records_each_step_before_the_next() -> None:
    driver, client, invoker, _ = make({"inc": ok(inc), "double": ok(double)})
    workflow(client, CHAIN)
    final = await run(driver, {"n": 1})
    status = final["status"]
    assert status["phase"] == "Succeeded" and status["output"] == {"n": 4}
    assert trace(final) == [("Inc", "", "Succeeded"), ("Double", "", "Succeeded"), ("Done", "", "Succeeded")]
    assert [e["input"] for e in status["trace"]] == [{"n": 1}, {"n": 2}, {"n": 4}]
    assert all(e["activationId"] for e in status["trace"][:2])
    # At each call, the stored status already said that Task was Running (and the one before Succeeded).
    for name, _, stored in invoker.calls:
        last = stored["trace"][-1]
        assert (last["state"], last["status"]) == ({"inc": "Inc", "double": "Double"}[name], "Running")
        assert all(e["status"] == "Succeeded" for e in stored["trace"][:-1])
    # What was stored last is what the caller got; nothing is left in progress.
    assert client.last_written()["phase"] == "Succeeded" and client.last_written()["current"] == []
    assert "waitUntil" not in client.last_written()
    execution = client.execution(final["metadata"]["name"])
    assert execution["spec"]["definition"] == CHAIN and execution["spec"]["input"] == {"n": 1}
    assert execution["metadata"]["labels"]["minik8s.io/workflow"] == "wf"
    owner = execution["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Workflow", "wf", client.objects[
        ("workflows", NS, "wf")]["metadata"]["uid"])


CHOICE: Obj = {"startAt": "Check", "states": {
    "Check": {"type": "Choice", "choices": [{"variable": "$.n", "numericGreaterThan": 10, "next": "Big"}],
              "default": "Small"},
    "Big": {"type": "Pass", "result": "big", "resultPath": "$.size", "end": True},
    "Small": {"type": "Pass", "result": "small", "resultPath": "$.size", "end": True}}}


async def test_a_choice_goes_either_way_and_the_trace_shows_the_branch() -> None:
    driver, client, _, _ = make({})
    workflow(client, CHOICE)
    big = await run(driver, {"n": 50})
    small = await run(driver, {"n": 5})
    assert big["status"]["output"] == {"n": 50, "size": "big"}
    assert small["status"]["output"] == {"n": 5, "size": "small"}
    assert [s for s, _, _ in trace(big)] == ["Check", "Big"]
    assert [s for s, _, _ in trace(small)] == ["Check", "Small"]


async def test_a_choice_without_a_match_or_default_fails() -> None:
    driver, client, _, _ = make({})
    spec = copy.deepcopy(CHOICE)
    del spec["states"]["Check"]["default"]
    workflow(client, spec)
    final = await run(driver, {"n": 1})
    assert final["status"]["phase"] == "Failed" and final["status"]["error"] == "States.NoChoiceMatched"


async def test_parallel_branches_run_at_once_and_join_in_order() -> None:
    driver, client, invoker, _ = make({"slow-a": sleeping(0.4, {"a": 1}), "slow-b": sleeping(0.4, {"b": 2})})
    workflow(client, {"startAt": "Fan", "states": {"Fan": {"type": "Parallel", "resultPath": "$.both", "end": True,
                                                            "branches": [
        {"startAt": "A", "states": {"A": {"type": "Task", "function": "slow-a", "end": True}}},
        {"startAt": "B", "states": {"B": {"type": "Task", "function": "slow-b", "end": True}}}]}}})
    t0 = time.monotonic()
    final = await run(driver, {"x": 0})
    took = time.monotonic() - t0
    assert took < 0.7, f"two 0.4 s branches took {took:.2f}s: not concurrent"
    assert final["status"]["output"] == {"x": 0, "both": [{"a": 1}, {"b": 2}]}
    assert sorted(trace(final)) == [("A", "Fan[0]", "Succeeded"), ("B", "Fan[1]", "Succeeded"),
                                    ("Fan", "", "Succeeded")]
    assert invoker.called("slow-a") == invoker.called("slow-b") == 1


async def test_a_failed_branch_fails_the_parallel_into_its_catch() -> None:
    driver, client, _, _ = make({"slow": sleeping(5, 1), "bad": failing("KeyError", "no key")})
    workflow(client, {"startAt": "Fan", "states": {
        "Fan": {"type": "Parallel", "next": "Done", "catch": [{"errorEquals": ["States.ALL"], "next": "Oops"}],
                "branches": [{"startAt": "S", "states": {"S": {"type": "Task", "function": "slow", "end": True}}},
                             {"startAt": "X", "states": {"X": {"type": "Task", "function": "bad", "end": True}}}]},
        "Done": {"type": "Succeed"},
        "Oops": {"type": "Pass", "end": True}}})
    t0 = time.monotonic()
    final = await run(driver, {})
    assert time.monotonic() - t0 < 2, "the slow sibling was not cancelled"
    assert final["status"]["output"] == {"error": "KeyError", "cause": "no key"}
    statuses = {(s, b): st for s, b, st in trace(final)}
    assert statuses == {("S", "Fan[0]"): "Failed", ("X", "Fan[1]"): "Failed", ("Fan", ""): "Caught",
                        ("Oops", ""): "Succeeded"}


# --- errors, retries, catches ----------------------------------------------------------------------

def flaky(failures: int) -> Fn:
    count = {"n": 0}

    async def call(body: Any) -> tuple[int, Any]:
        count["n"] += 1
        if count["n"] <= failures:
            return 500, {"error": f"attempt {count['n']} fails", "type": "RuntimeError"}
        return 200, {"attempts": count["n"]}
    return call


RETRYING: Obj = {"startAt": "Try", "states": {
    "Try": {"type": "Task", "function": "flaky", "end": True,
            "retry": [{"errorEquals": ["States.TaskFailed"], "intervalSeconds": 1, "maxAttempts": 3,
                       "backoffRate": 2.0}],
            "catch": [{"errorEquals": ["RuntimeError"], "next": "Recover", "resultPath": "$.err"}]},
    "Recover": {"type": "Pass", "end": True}}}


async def test_a_task_that_fails_twice_then_succeeds_completes_under_retry_with_back_off() -> None:
    driver, client, invoker, clock = make({"flaky": flaky(2)})
    workflow(client, RETRYING)
    final = await run(driver, {"k": 1})
    assert final["status"]["phase"] == "Succeeded" and final["status"]["output"] == {"attempts": 3}
    entries = final["status"]["trace"]
    assert [(e["status"], e["attempt"]) for e in entries] == [("Retrying", 1), ("Retrying", 2), ("Succeeded", 3)]
    assert (entries[0]["error"], entries[0]["cause"]) == ("RuntimeError", "attempt 1 fails")
    assert len({e["activationId"] for e in entries}) == 3
    assert clock.sleeps == [1.0, 2.0]
    assert invoker.called("flaky") == 3


async def test_a_task_that_always_fails_goes_to_its_catch_with_the_error_at_its_result_path() -> None:
    driver, client, invoker, clock = make({"flaky": flaky(99)})
    workflow(client, RETRYING)
    final = await run(driver, {"k": 1})
    status = final["status"]
    assert status["phase"] == "Succeeded"
    assert status["output"] == {"k": 1, "err": {"error": "RuntimeError", "cause": "attempt 4 fails"}}
    assert [e["status"] for e in status["trace"]] == ["Retrying", "Retrying", "Retrying", "Caught", "Succeeded"]
    assert invoker.called("flaky") == 4 and clock.sleeps == [1.0, 2.0, 4.0]


async def test_errors_of_the_call_path_map_to_their_names() -> None:
    async def gateway_timeout(body: Any) -> tuple[int, Any]:
        return 504, {"error": "function default/t timed out after 2s"}

    async def unavailable(body: Any) -> tuple[int, Any]:
        return 503, {"error": "function default/u is not built yet"}

    driver, client, _, _ = make({"t": gateway_timeout, "u": unavailable, "z": failing("ZeroDivisionError")})
    for fn, error in (("t", "States.Timeout"), ("u", "States.Unavailable"), ("z", "ZeroDivisionError"),
                      ("missing", "States.TaskFailed")):
        workflow(client, {"startAt": "T", "states": {"T": {"type": "Task", "function": fn, "end": True}}}, name=fn)
        final = await run(driver, {}, name=fn)
        assert (final["status"]["phase"], final["status"]["error"]) == ("Failed", error), fn
        assert final["status"]["trace"][0]["status"] == "Failed"


async def test_a_task_past_its_timeout_seconds_is_states_timeout() -> None:
    driver, client, _, _ = make({"slow": sleeping(5, 1)})
    workflow(client, {"startAt": "T", "states": {
        "T": {"type": "Task", "function": "slow", "timeoutSeconds": 0.2, "end": True,
              "catch": [{"errorEquals": ["States.Timeout"], "next": "Late", "resultPath": "$.late"}]},
        "Late": {"type": "Pass", "end": True}}})
    final = await run(driver, {})
    assert final["status"]["output"]["late"]["error"] == "States.Timeout"


async def test_a_fail_state_ends_the_execution_with_its_error() -> None:
    driver, client, _, _ = make({})
    workflow(client, {"startAt": "No", "states": {"No": {"type": "Fail", "error": "TooBig", "cause": "n > 100"}}})
    final = await run(driver, {"n": 101})
    status = final["status"]
    assert (status["phase"], status["error"], status["cause"]) == ("Failed", "TooBig", "n > 100")
    assert "output" not in status and status["completionTime"]
    assert status["trace"][0]["status"] == "Failed"


async def test_the_execution_timeout_fails_it_and_ends_what_runs() -> None:
    driver, client, _, _ = make({"slow": sleeping(5, 1)})
    workflow(client, {"startAt": "T", "timeoutSeconds": 0.3,
                      "states": {"T": {"type": "Task", "function": "slow", "end": True}}})
    final = await run(driver, {})
    assert (final["status"]["phase"], final["status"]["error"]) == ("Failed", "States.Timeout")
    assert final["status"]["trace"][0]["status"] == "Failed"


async def test_a_bad_path_fails_the_execution_with_states_runtime() -> None:
    driver, client, _, _ = make({})
    workflow(client, {"startAt": "P", "states": {"P": {"type": "Pass", "inputPath": "$.missing", "end": True}}})
    final = await run(driver, {})
    assert final["status"]["error"] == "States.Runtime" and "missing" in final["status"]["cause"]


async def test_an_async_start_returns_the_name_at_once_and_an_unknown_workflow_is_not_found() -> None:
    driver, client, _, _ = make({"inc": ok(inc), "double": ok(double)})
    workflow(client, CHAIN)
    name = await driver.start(NS, "wf", {"n": 2}, labels={"minik8s.io/trigger": "tick"})
    assert name.startswith("wf-") and len(name) == len("wf-") + 8
    assert client.execution(name)["metadata"]["labels"] == {"minik8s.io/trigger": "tick", "minik8s.io/workflow": "wf"}
    await asyncio.gather(*driver._tasks.values())
    assert client.execution(name)["status"]["output"] == {"n": 6}
    with pytest.raises(NotFound):
        await driver.start(NS, "nope", {})


# --- resuming after a restart ----------------------------------------------------------------------

def recorded(client: FakeClient, spec: Obj, status: Obj, data: Any, name: str = "wf-0000abcd") -> str:
    """An execution as a killed gateway left it."""
    client.add("workflowexecutions", {"apiVersion": EXECUTIONS.api_version, "kind": EXECUTIONS.kind,
                                      "metadata": {"name": name, "labels": {"minik8s.io/workflow": "wf"}},
                                      "spec": {"workflow": "wf", "input": data, "definition": spec},
                                      "status": status})
    return f"{NS}/{name}"


async def resume(driver: WorkflowDriver, client: FakeClient, key: str) -> Obj:
    """What a restarted driver does: its informer lists the execution, sync(key) drives it."""
    driver.executions.indexer.put(copy.deepcopy(client.execution(key.split("/")[1])))
    await driver.sync(key)
    assert key in driver._tasks
    await driver._tasks[key]
    return client.execution(key.split("/")[1])


def entry(state: str, status: str, **extra: Any) -> Obj:
    return {"state": state, "branch": "", "type": "Task", "status": status, "attempt": 1,
            "startTime": stamp(T0 - 5), **extra}


async def test_a_restarted_driver_resumes_at_the_running_task_and_reruns_nothing_that_succeeded() -> None:
    driver, client, invoker, _ = make({"inc": ok(inc), "double": ok(double)})
    key = recorded(client, CHAIN, {
        "phase": "Running", "startTime": stamp(T0 - 5),
        "trace": [entry("Inc", "Succeeded", input={"n": 1}, output={"n": 2}, endTime=stamp(T0 - 4)),
                  entry("Double", "Running", input={"n": 2})],
        "current": [{"branch": "", "state": "Double", "input": {"n": 2}, "traceIndex": 1}]}, {"n": 1})
    final = await resume(driver, client, key)
    assert invoker.called("inc") == 0 and invoker.called("double") == 1
    assert final["status"]["output"] == {"n": 4}
    # The interrupted Task's entry is reused: every state appears once.
    assert trace(final) == [("Inc", "", "Succeeded"), ("Double", "", "Succeeded"), ("Done", "", "Succeeded")]


async def test_a_cursor_moved_past_a_succeeded_state_starts_the_next_one() -> None:
    driver, client, invoker, _ = make({"inc": ok(inc), "double": ok(double)})
    key = recorded(client, CHAIN, {
        "phase": "Running", "startTime": stamp(T0 - 5),
        "trace": [entry("Inc", "Succeeded", input={"n": 1}, output={"n": 2})],
        "current": [{"branch": "", "state": "Double", "input": {"n": 2}}]}, {"n": 1})
    final = await resume(driver, client, key)
    assert invoker.called("inc") == 0 and final["status"]["output"] == {"n": 4}
    assert [s for s, _, _ in trace(final)] == ["Inc", "Double", "Done"]


WAITING: Obj = {"startAt": "Inc", "states": {
    "Inc": {"type": "Task", "function": "inc", "next": "Nap"},
    "Nap": {"type": "Wait", "seconds": 60, "next": "Double"},
    "Double": {"type": "Task", "function": "double", "end": True}}}


async def test_a_wait_records_wait_until_and_resumes_only_until_then() -> None:
    driver, client, invoker, clock = make({"inc": ok(inc), "double": ok(double)})
    until = stamp(T0 + 7.5)  # the killed gateway had 7.5 s of its 60 s left
    key = recorded(client, WAITING, {
        "phase": "Running", "startTime": stamp(T0 - 52.5),
        "trace": [entry("Inc", "Succeeded", output={"n": 2}),
                  {**entry("Nap", "Running", input={"n": 2}), "type": "Wait"}],
        "current": [{"branch": "", "state": "Nap", "input": {"n": 2}, "traceIndex": 1, "waitUntil": until}],
        "waitUntil": until}, {"n": 1})
    final = await resume(driver, client, key)
    assert clock.sleeps == [7.5]
    assert invoker.called("inc") == 0 and final["status"]["output"] == {"n": 4}
    assert [(s, st) for s, _, st in trace(final)] == [("Inc", "Succeeded"), ("Nap", "Succeeded"),
                                                      ("Double", "Succeeded")]
    assert "waitUntil" not in final["status"]


async def test_a_fresh_wait_writes_wait_until_before_sleeping() -> None:
    driver, client, _, clock = make({"inc": ok(inc), "double": ok(double)})
    workflow(client, WAITING)
    seen: list[Obj] = []
    sleep = clock.sleep

    async def sleeping_clock(seconds: float) -> None:
        seen.append(copy.deepcopy(client.last_written()))
        await sleep(seconds)

    clock.sleep = sleeping_clock  # type: ignore[method-assign]
    final = await run(driver, {"n": 1})
    assert clock.sleeps == [60.0] and final["status"]["output"] == {"n": 4}
    stored = seen[0]
    assert parse_stamp(stored["waitUntil"]) == pytest.approx(T0 + 60)
    assert (stored["trace"][-1]["state"], stored["trace"][-1]["status"]) == ("Nap", "Running")
    assert stored["current"][0]["waitUntil"] == stored["waitUntil"]


async def test_a_retry_back_off_in_progress_resumes_with_the_next_attempt() -> None:
    driver, client, invoker, clock = make({"flaky": flaky(0)})
    retry_at = stamp(T0 + 3)
    key = recorded(client, RETRYING, {
        "phase": "Running", "startTime": stamp(T0 - 2),
        "trace": [entry("Try", "Retrying", error="RuntimeError", cause="x")],
        "current": [{"branch": "", "state": "Try", "input": {}, "attempt": 2, "retryAt": retry_at,
                     "retries": [1]}]}, {})
    final = await resume(driver, client, key)
    assert clock.sleeps == [3.0] and invoker.called("flaky") == 1
    assert [(e["status"], e["attempt"]) for e in final["status"]["trace"]] == [("Retrying", 1), ("Succeeded", 2)]


async def test_a_parallel_resumes_only_the_branch_that_had_not_finished() -> None:
    driver, client, invoker, _ = make({"a": ok(lambda b: "A"), "b": ok(lambda b: "B")})
    spec = {"startAt": "Fan", "states": {"Fan": {"type": "Parallel", "end": True, "branches": [
        {"startAt": "A", "states": {"A": {"type": "Task", "function": "a", "end": True}}},
        {"startAt": "B", "states": {"B": {"type": "Task", "function": "b", "end": True}}}]}}}
    key = recorded(client, spec, {
        "phase": "Running", "startTime": stamp(T0 - 1),
        "trace": [{**entry("Fan", "Running"), "type": "Parallel"},
                  {**entry("A", "Succeeded", output="A"), "branch": "Fan[0]"},
                  {**entry("B", "Running"), "branch": "Fan[1]"}],
        "current": [{"branch": "", "state": "Fan", "input": {}, "traceIndex": 0, "branchOutputs": ["A", None],
                     "branchesDone": [True, False]},
                    {"branch": "Fan[1]", "state": "B", "input": {}, "traceIndex": 2}]}, {})
    final = await resume(driver, client, key)
    assert invoker.called("a") == 0 and invoker.called("b") == 1
    assert final["status"]["output"] == ["A", "B"]
    assert [(s, b, st) for s, b, st in trace(final)] == [("Fan", "", "Succeeded"), ("A", "Fan[0]", "Succeeded"),
                                                         ("B", "Fan[1]", "Succeeded")]


async def test_a_finished_execution_is_never_driven_again_even_from_a_stale_cache() -> None:
    driver, client, invoker, _ = make({"inc": ok(inc), "double": ok(double)})
    workflow(client, CHAIN)
    name, final = await driver.call(NS, "wf", {"n": 1})
    assert final is not None
    stale = copy.deepcopy(client.execution(name))
    stale["status"] = {"phase": "Running", "trace": [], "current": []}
    driver.executions.indexer.put(stale)
    await driver.sync(f"{NS}/{name}")
    assert f"{NS}/{name}" not in driver._tasks and invoker.called("inc") == 1


async def test_a_deleted_execution_stops_being_driven() -> None:
    started = asyncio.Event()

    async def hang(body: Any) -> tuple[int, Any]:
        started.set()
        await asyncio.sleep(30)
        return 200, {}

    driver, client, _, _ = make({"hang": hang})
    workflow(client, {"startAt": "H", "states": {"H": {"type": "Task", "function": "hang", "end": True}}})
    name = await driver.start(NS, "wf", {})
    await asyncio.wait_for(started.wait(), 5)
    key = f"{NS}/{name}"
    del client.objects[("workflowexecutions", NS, name)]
    await driver.sync(key)  # the informer's cache no longer has it
    await asyncio.sleep(0)
    assert key not in driver._tasks


async def test_workers_bound_how_many_executions_run_at_once() -> None:
    running, most = 0, 0

    async def busy(body: Any) -> tuple[int, Any]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        return 200, body

    driver, client, _, _ = make({"busy": busy}, workers=2)
    workflow(client, {"startAt": "B", "states": {"B": {"type": "Task", "function": "busy", "end": True}}})
    finals = await asyncio.gather(*(run(driver, {"i": i}) for i in range(6)))
    assert [f["status"]["output"] for f in finals] == [{"i": i} for i in range(6)]
    assert most == 2


def test_trace_values_are_clipped_to_4_kib() -> None:
    assert clip({"a": 1}) == ({"a": 1}, False)
    value, cut = clip("x" * 10_000)
    assert cut and isinstance(value, str) and len(value.encode()) <= 4096 + 3


def test_state_errors_name_their_error_object() -> None:
    assert StateError("TooBig", "n > 100").as_object() == {"error": "TooBig", "cause": "n > 100"}


# --- the gateway's route ---------------------------------------------------------------------------

class FakeRunner:
    def __init__(self, final: Obj | None) -> None:
        self.final = final
        self.started: list[tuple[str, str, Any]] = []

    async def start(self, namespace: str, workflow: str, input: Any, *, labels: dict[str, str] | None = None) -> str:
        if workflow == "nope":
            raise NotFound('workflows.minik8s.io "nope" not found', kind="workflows", name="nope")
        self.started.append((namespace, workflow, input))
        return f"{workflow}-12345678"

    async def call(self, namespace: str, workflow: str, input: Any) -> tuple[str, Obj | None]:
        name = await self.start(namespace, workflow, input)
        return name, self.final


async def post(gateway: Gateway, path: str, body: bytes = b"{}") -> httpx.Response:
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        return await http.post(path, content=body)


def gateway_with(runner: FakeRunner | None) -> Gateway:
    gw = Gateway(functions={}, activator=None, autoscaler=None, recorder=None, http=None)  # type: ignore[arg-type]
    gw.workflows = runner
    return gw


async def test_the_workflow_route_answers_output_error_async_and_not_found() -> None:
    done = gateway_with(FakeRunner({"status": {"phase": "Succeeded", "output": {"n": 4}}}))
    r = await post(done, "/workflow/default/wf", b'{"n": 1}')
    assert (r.status_code, r.json(), r.headers["x-minik8s-execution-id"]) == (200, {"n": 4}, "wf-12345678")
    failed = gateway_with(FakeRunner({"status": {"phase": "Failed", "error": "TooBig", "cause": "n > 100"}}))
    r = await post(failed, "/workflow/default/wf")
    assert r.status_code == 500
    assert r.json() == {"error": "TooBig", "cause": "n > 100", "execution": "wf-12345678"}
    r = await post(done, "/workflow/default/wf?async=true")
    assert (r.status_code, r.json()) == (202, {"executionId": "wf-12345678"})
    r = await post(done, "/workflow/default/nope")
    assert (r.status_code, r.json()) == (404, {"error": "workflow default/nope not found"})
    r = await post(done, "/workflow/default/wf", b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    late = gateway_with(FakeRunner(None))
    r = await post(late, "/workflow/default/wf")
    assert r.status_code == 504 and r.json()["execution"] == "wf-12345678"
    r = await post(gateway_with(None), "/workflow/default/wf")
    assert r.status_code == 503
