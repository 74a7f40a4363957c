"""The trigger scheduler with a fake clock, fake targets and a recording status writer; and the
gateway's ``POST /trigger/NS/NAME`` route and trigger-made activation records.

Schedules are parsed by the real ``minik8s.workflow.parse_schedule`` (``@every`` and 6-field cron)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from minictl.main import Session, cli
from minik8s.client.informer import Indexer
from minik8s.errors import NotFound, ServiceUnavailable
from serverless.activator import Activator, HttpProber
from serverless.forward import Forwarder
from serverless.gateway import Gateway
from serverless.triggers import TRIGGER_LABEL, TriggerScheduler

pytestmark = pytest.mark.timeout(10)

NS = "default"
# 2023-11-14T22:13:20Z: a whole minute plus 20 s, so */5 cron seconds and @every periods are easy to read.
T0 = 1_700_000_000.0


class FakeClock:
    """Wall time stands still until :meth:`advance`; sleepers wake in deadline order."""

    def __init__(self, start: float = T0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move to now + seconds, waking each sleeper at its own deadline and letting it run."""
        target = self.now + seconds
        await settle()
        while True:
            due = sorted((d, f) for d, f in self._sleepers if d <= target and not f.done())
            if not due:
                break
            deadline, fut = due[0]
            self.now = max(self.now, deadline)
            fut.set_result(None)
            self._sleepers = [(d, f) for d, f in self._sleepers if not f.done()]
            await settle()
        self.now = target
        await settle()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def at(seconds: float) -> str:
    """The payload/status timestamp of T0 + seconds."""
    return datetime.fromtimestamp(T0 + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeFunctions:
    def __init__(self, known: set[str] | None = None) -> None:
        self.known = known if known is not None else {"hello"}
        self.calls: list[tuple[str, str, Any, str | None]] = []

    async def call_async(self, ns: str, name: str, body: bytes, *, trigger: str | None = None) -> str:
        if name not in self.known:
            raise NotFound(f"function {ns}/{name} not found")
        self.calls.append((ns, name, json.loads(body), trigger))
        return f"act{len(self.calls)}"


class FakeWorkflows:
    def __init__(self) -> None:
        self.starts: list[tuple[str, str, Any, dict[str, str] | None]] = []

    async def start(self, namespace: str, workflow: str, input: Any, *,
                    labels: dict[str, str] | None = None) -> str:
        self.starts.append((namespace, workflow, input, labels))
        return f"{workflow}-{len(self.starts):08x}"


class FakeClient:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str | None, Any, str]] = []

    async def patch(self, rt: Any, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> dict[str, Any]:
        assert (rt.plural, patch_type, subresource) == ("triggers", "merge", "status")
        self.patches.append((name, namespace, patch, subresource))
        return {}

    def statuses(self, name: str) -> list[dict[str, Any]]:
        return [p[2]["status"] for p in self.patches if p[0] == name]


def trigger(name: str, schedule: str | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"schedule": schedule} if schedule else {}
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec, "status": status or {}}


def rule(name: str, trigger_name: str, *, function: str | None = None, workflow: str | None = None,
         enabled: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"trigger": trigger_name}
    if function:
        spec["function"] = function
    if workflow:
        spec["workflow"] = workflow
    if enabled is not None:
        spec["enabled"] = enabled
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


@dataclass
class Env:
    clock: FakeClock
    triggers: Indexer
    rules: Indexer
    functions: FakeFunctions
    workflows: FakeWorkflows
    client: FakeClient
    scheduler: TriggerScheduler
    extra: list[TriggerScheduler] = field(default_factory=list)

    def add_trigger(self, obj: dict[str, Any]) -> None:
        self.triggers.put(obj)
        self.scheduler.trigger_changed(obj)

    def add_rule(self, obj: dict[str, Any]) -> None:
        self.rules.put(obj)

    def new_scheduler(self) -> TriggerScheduler:
        """Another gateway (a restart) over the same caches and targets."""
        rules = Indexer()
        for r in self.rules.list():
            rules.put(r)
        self.rules = rules
        sched = TriggerScheduler(self.client, triggers=self.triggers, rules=rules, functions=self.functions,
                                 workflows=self.workflows, clock=self.clock)
        self.extra.append(sched)
        return sched


@pytest.fixture()
async def env() -> AsyncIterator[Env]:
    clock, triggers, rules = FakeClock(), Indexer(), Indexer()
    functions, workflows, client = FakeFunctions(), FakeWorkflows(), FakeClient()
    scheduler = TriggerScheduler(client, triggers=triggers, rules=rules, functions=functions, workflows=workflows,
                                 clock=clock)
    e = Env(clock, triggers, rules, functions, workflows, client, scheduler)
    yield e
    for s in [scheduler, *e.extra]:
        await s.stop()
    # No timer may outlive its scheduler.
    leaked = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and "_timer" in repr(t.get_coro())]
    assert not leaked, leaked


# --- schedules --------------------------------------------------------------------------------


async def test_every_fires_each_period_from_start(env: Env) -> None:
    env.add_rule(rule("r", "tick", function="hello"))
    env.add_trigger(trigger("tick", "@every 2s"))
    env.scheduler.start()
    await settle()
    assert env.client.statuses("tick") == [{"nextFireTime": at(2)}]
    await env.clock.advance(1.9)
    assert env.functions.calls == []
    await env.clock.advance(5.2)  # t = 7.1: firings at 2, 4 and 6
    assert env.functions.calls == [(NS, "hello", {"trigger": "tick", "time": at(s)}, "tick") for s in (2, 4, 6)]
    assert env.client.statuses("tick")[1:] == [
        {"lastFireTime": at(s), "fireCount": n, "nextFireTime": at(s + 2)} for n, s in ((1, 2), (2, 4), (3, 6))]
    assert env.scheduler.next_fire_time(NS, "tick") == datetime.fromtimestamp(T0 + 8, UTC)


async def test_cron_with_seconds_fires_on_matching_seconds(env: Env) -> None:
    env.clock.now = T0 + 1  # :21 past the minute
    env.add_rule(rule("r", "cron", function="hello"))
    env.add_trigger(trigger("cron", "*/5 * * * * *"))
    env.scheduler.start()
    await env.clock.advance(10)  # to :31 → :25 and :30
    assert [c[2]["time"] for c in env.functions.calls] == [at(5), at(10)]


async def test_timers_start_only_once_the_scheduler_starts(env: Env) -> None:
    env.add_rule(rule("r", "tick", function="hello"))
    env.add_trigger(trigger("tick", "@every 1s"))
    await env.clock.advance(5)
    assert env.functions.calls == [] and env.client.patches == []
    env.scheduler.start()
    await env.clock.advance(1)
    assert len(env.functions.calls) == 1


async def test_a_schedule_change_reschedules_and_a_delete_cancels(env: Env) -> None:
    env.add_rule(rule("r", "t", function="hello"))
    env.add_trigger(trigger("t", "@every 10s"))
    env.scheduler.start()
    await env.clock.advance(3)
    env.add_trigger(trigger("t", "@every 1s"))  # from now: t = 3 → 4, 5
    await env.clock.advance(2)
    assert [c[2]["time"] for c in env.functions.calls] == [at(4), at(5)]
    # Our own status writes come back as updates with the same schedule: the timer goes on.
    env.add_trigger(trigger("t", "@every 1s", status={"fireCount": 2}))
    await env.clock.advance(1)
    assert len(env.functions.calls) == 3
    env.triggers.remove(f"{NS}/t")
    env.scheduler.trigger_deleted(trigger("t", "@every 1s"))
    await env.clock.advance(5)
    assert len(env.functions.calls) == 3


async def test_removing_the_schedule_stops_the_timer_but_post_still_fires(env: Env) -> None:
    env.add_rule(rule("r", "t", function="hello"))
    env.add_trigger(trigger("t", "@every 1s"))
    env.scheduler.start()
    await env.clock.advance(1)
    env.add_trigger(trigger("t"))
    await env.clock.advance(5)
    assert len(env.functions.calls) == 1
    await env.scheduler.fire(NS, "t", {"x": 1})
    assert env.functions.calls[-1] == (NS, "hello", {"x": 1}, "t")


# --- rules --------------------------------------------------------------------------------------


async def test_disabled_rules_are_skipped_from_the_next_tick(env: Env) -> None:
    env.add_rule(rule("on", "t", function="hello"))
    env.add_rule(rule("off", "t", function="hello", enabled=False))
    env.add_rule(rule("other", "another-trigger", function="hello"))
    env.add_trigger(trigger("t", "@every 1s"))
    env.scheduler.start()
    await env.clock.advance(2)
    assert len(env.functions.calls) == 2  # "on" twice; "off" and "other" never
    env.add_rule(rule("on", "t", function="hello", enabled=False))
    await env.clock.advance(3)
    assert len(env.functions.calls) == 2
    # The trigger still fires (status counts it), with nothing to start.
    assert env.client.statuses("t")[-1]["fireCount"] == 5
    env.add_rule(rule("off", "t", function="hello", enabled=True))
    await env.clock.advance(1)
    assert len(env.functions.calls) == 3


async def test_a_firing_starts_functions_and_workflows_with_the_payload(env: Env) -> None:
    env.add_rule(rule("to-fn", "t", function="hello"))
    env.add_rule(rule("to-wf", "t", workflow="order"))
    env.add_trigger(trigger("t"))
    env.scheduler.start()
    firings = await env.scheduler.fire(NS, "t", {"order": 7})
    assert firings == [{"rule": "to-fn", "function": "hello", "activationId": "act1"},
                       {"rule": "to-wf", "workflow": "order", "executionId": "order-00000001"}]
    assert env.functions.calls == [(NS, "hello", {"order": 7}, "t")]
    assert env.workflows.starts == [(NS, "order", {"order": 7}, {TRIGGER_LABEL: "t"})]
    [status] = env.client.statuses("t")
    assert status == {"lastFireTime": at(0), "fireCount": 1}  # no schedule: no nextFireTime


async def test_a_failing_target_is_reported_and_the_others_still_start(env: Env) -> None:
    env.add_rule(rule("a-missing", "t", function="nope"))
    env.add_rule(rule("b-ok", "t", function="hello"))
    env.add_trigger(trigger("t"))
    env.scheduler.start()
    firings = await env.scheduler.fire(NS, "t", {})
    assert firings[0] == {"rule": "a-missing", "function": "nope", "error": "function default/nope not found"}
    assert firings[1] == {"rule": "b-ok", "function": "hello", "activationId": "act1"}


async def test_a_workflow_rule_without_a_driver_is_an_error_entry(env: Env) -> None:
    sched = TriggerScheduler(env.client, triggers=env.triggers, rules=Indexer(), functions=env.functions,
                             clock=env.clock)
    env.extra.append(sched)
    sched.rules.put(rule("wf", "t", workflow="order"))
    env.triggers.put(trigger("t"))
    sched.start()
    [entry] = await sched.fire(NS, "t", {})
    assert entry["workflow"] == "order" and "no workflow driver" in entry["error"]


async def test_unknown_triggers_and_an_unsynced_scheduler_are_errors(env: Env) -> None:
    env.add_trigger(trigger("t"))
    with pytest.raises(ServiceUnavailable):
        await env.scheduler.fire(NS, "t", {})
    env.scheduler.start()
    with pytest.raises(NotFound):
        await env.scheduler.fire(NS, "nope", {})


# --- restart --------------------------------------------------------------------------------------


async def test_a_restart_schedules_from_now_and_keeps_counting(env: Env) -> None:
    env.add_rule(rule("r", "t", function="hello"))
    env.add_trigger(trigger("t", "@every 2s"))
    env.scheduler.start()
    await env.clock.advance(4)
    assert len(env.functions.calls) == 2
    await env.scheduler.stop()  # the gateway goes away for 60 s
    env.triggers.put(trigger("t", "@every 2s", status={"fireCount": 2, "lastFireTime": at(4)}))
    await env.clock.advance(60)
    assert len(env.functions.calls) == 2
    again = env.new_scheduler()
    for obj in env.triggers.list():
        again.trigger_changed(obj)
    again.start()
    await settle()
    assert env.client.statuses("t")[-1] == {"nextFireTime": at(66)}  # from now: nothing replayed
    await env.clock.advance(2.5)
    assert [c[2]["time"] for c in env.functions.calls] == [at(2), at(4), at(66)]
    assert env.client.statuses("t")[-1] == {"lastFireTime": at(66), "fireCount": 3, "nextFireTime": at(68)}


async def test_a_late_timer_skips_missed_firings_instead_of_bursting(env: Env) -> None:
    env.add_rule(rule("r", "t", function="hello"))
    env.add_trigger(trigger("t", "@every 1s"))
    env.scheduler.start()
    await settle()
    env.clock.now += 10.5  # the loop was blocked for 10.5 s; the timer wakes once
    await env.clock.advance(0)
    assert [c[2]["time"] for c in env.functions.calls] == [at(1)]  # one late firing, not ten
    nxt = env.scheduler.next_fire_time(NS, "t")
    assert nxt is not None and T0 + 10.5 < nxt.timestamp() <= T0 + 11.5
    await env.clock.advance(1.0)
    assert len(env.functions.calls) == 2


# --- the gateway side ----------------------------------------------------------------------------


class ListRecorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, activation: dict[str, Any]) -> None:
        self.records.append(activation)


class NoMetrics:
    def request_started(self, key: str) -> None:
        pass

    def request_finished(self, key: str) -> None:
        pass


@dataclass
class GatewayEnv:
    http: httpx.AsyncClient
    gateway: Gateway
    recorder: ListRecorder
    scheduler: TriggerScheduler
    triggers: Indexer
    rules: Indexer
    workflows: FakeWorkflows


@pytest.fixture()
async def gw() -> AsyncIterator[GatewayEnv]:
    pods = Forwarder()
    activator = Activator(prober=HttpProber(pods), queue_size=4)
    recorder = ListRecorder()
    # Not built yet: the async call ends at once in a 503 record, no instance needed.
    functions = {f"{NS}/hello": {"metadata": {"name": "hello", "namespace": NS}, "spec": {}, "status": {}}}
    gateway = Gateway(functions=functions, activator=activator, autoscaler=NoMetrics(), recorder=recorder, http=pods)
    triggers, rules, workflows = Indexer(), Indexer(), FakeWorkflows()
    scheduler = TriggerScheduler(FakeClient(), triggers=triggers, rules=rules, functions=gateway, workflows=workflows)
    gateway.triggers = scheduler
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway")
    yield GatewayEnv(client, gateway, recorder, scheduler, triggers, rules, workflows)
    await client.aclose()
    await scheduler.stop()
    await gateway.drain()
    await activator.stop()
    await pods.close()


async def test_post_trigger_fires_its_rules_and_records_the_trigger(gw: GatewayEnv) -> None:
    gw.triggers.put(trigger("hook"))
    gw.rules.put(rule("fn", "hook", function="hello"))
    gw.rules.put(rule("wf", "hook", workflow="order"))
    gw.scheduler.start()
    r = await gw.http.post(f"/trigger/{NS}/hook", json={"n": 1})
    assert r.status_code == 202, r.text
    firings = r.json()["firings"]
    assert [f["rule"] for f in firings] == ["fn", "wf"]
    activation = firings[0]["activationId"]
    assert firings[0]["function"] == "hello" and len(activation) == 32
    assert firings[1] == {"rule": "wf", "workflow": "order", "executionId": "order-00000001"}
    assert gw.workflows.starts == [(NS, "order", {"n": 1}, {TRIGGER_LABEL: "hook"})]
    await gw.gateway.drain()
    [record] = gw.recorder.records
    assert record["id"] == activation and record["trigger"] == "hook" and record["async"] is True
    assert record["function"] == "hello"


async def test_post_trigger_errors(gw: GatewayEnv) -> None:
    r = await gw.http.post(f"/trigger/{NS}/hook")
    assert r.status_code == 503  # caches not synced yet
    gw.scheduler.start()
    r = await gw.http.post(f"/trigger/{NS}/nope", json={})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    gw.triggers.put(trigger("hook"))
    r = await gw.http.post(f"/trigger/{NS}/hook", content=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = await gw.http.get(f"/trigger/{NS}/hook")
    assert r.status_code == 405
    r = await gw.http.post(f"/trigger/{NS}/hook")  # an empty body is {}; no rules: nothing started
    assert r.status_code == 202 and r.json() == {"firings": []}


async def test_plain_calls_have_no_trigger_in_their_record(gw: GatewayEnv) -> None:
    r = await gw.http.post(f"/function/{NS}/hello?async=true", json={})
    assert r.status_code == 202
    await gw.gateway.drain()
    [record] = gw.recorder.records
    assert "trigger" not in record
    with pytest.raises(NotFound):
        await gw.gateway.call_async(NS, "nope", b"{}", trigger="t")


# --- minictl trigger fire ------------------------------------------------------------------------


def run_minictl(handler: Any, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["-s", "http://api", *args], obj=Session(transport=httpx.MockTransport(handler)),
                              env=env)


def test_minictl_trigger_fire_posts_the_payload_and_prints_each_rule() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"firings": [
            {"rule": "fn", "function": "hello", "activationId": "a" * 32},
            {"rule": "wf", "workflow": "order", "executionId": "order-0000abcd"}]})

    res = run_minictl(handler, "trigger", "fire", "hook", "-n", "shop", "-d", '{"n": 1}', "--gateway", "http://gw:1/")
    assert res.exit_code == 0, res.output
    [req] = seen
    assert str(req.url) == "http://gw:1/trigger/shop/hook" and req.method == "POST"
    assert json.loads(req.content) == {"n": 1}
    assert res.stdout.splitlines() == [f"rule fn → function hello: activation {'a' * 32}",
                                       "rule wf → workflow order: execution order-0000abcd"]


def test_minictl_trigger_fire_finds_the_gateway_in_cluster_env(tmp_path: Any) -> None:
    (tmp_path / "cluster.env").write_text("MINIK8S_GATEWAY_PORT=18123\n")
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(202, json={"firings": []})

    res = run_minictl(handler, "trigger", "fire", "hook", env={"MINIK8S_HOME": str(tmp_path),
                                                              "MINIK8S_GATEWAY_URL": ""})
    assert res.exit_code == 0, res.output
    assert seen == ["http://127.0.0.1:18123/trigger/default/hook"]
    assert "no enabled rule" in res.stdout


def test_minictl_trigger_fire_errors_are_one_line() -> None:
    def missing(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "trigger default/nope not found"})

    res = run_minictl(missing, "trigger", "fire", "nope", "--gateway", "http://gw")
    assert res.exit_code == 1
    assert res.stderr.strip() == 'error: triggers.minik8s.io "nope" not found in namespace default'

    def failing(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, json={"firings": [
            {"rule": "r", "function": "gone", "error": "function x/gone not found"}]})

    res = run_minictl(failing, "trigger", "fire", "t", "--gateway", "http://gw")
    assert res.exit_code == 1
    assert res.stderr.strip() == "error: rule r → function gone: function x/gone not found"
    res = run_minictl(failing, "trigger", "fire", "t", "-d", "{bad", "--gateway", "http://gw")
    assert res.exit_code != 0 and "not valid JSON" in res.stderr
