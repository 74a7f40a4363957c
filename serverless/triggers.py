"""Triggers and rules: schedules and ``POST /trigger/NS/NAME`` fire the enabled rules' targets.

::

    informers: triggers, rules (indexed by NS/spec.trigger)        (wired in serverless/main.py)
      trigger seen / its spec.schedule changed ─▶ (re)start its timer     trigger deleted ─▶ cancel it
    one timer (asyncio task) per scheduled trigger:
      next = schedule.next_after(now) ─▶ sleep until next ─▶ fire(payload {"trigger", "time"})
        ─▶ next = next_after(next), or next_after(now) when that is already past (no catch-up burst)
    POST /trigger/NS/NAME (serverless/gateway.py) ─▶ fire(payload = the request's JSON body)
    fire(NS, NAME, payload):
      every Rule of NS with spec.trigger == NAME, read from the cache NOW (a rule disabled since the
      last tick is skipped), spec.enabled != false:
        spec.function ─▶ gateway.call_async(…, trigger=NAME)   an async call: activation record with
                                                                spec.trigger = NAME → activationId
        spec.workflow ─▶ workflows.start(NS, WF, payload, labels={minik8s.io/trigger: NAME}) → executionId
      ─▶ ONE merge patch of triggers/NAME/status {lastFireTime, fireCount, nextFireTime}
      ─▶ [{"rule", "function"|"workflow", "activationId"|"executionId" | "error"}]

**Restart**: a gateway that starts (or restarts) schedules every trigger from *now*: firings
missed while it was down are not replayed, and ``status.fireCount`` goes on from what the trigger
recorded. A rule's target that fails (unknown function, workflow driver error) is reported in its
firing entry and logged; the other rules still fire.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter

from minik8s.api import registry
from minik8s.client.informer import Indexer, object_key
from minik8s.errors import ApiError, NotFound, ServiceUnavailable
from minik8s.workflow import parse_schedule
from serverless.activator import Clock, SystemClock

log = logging.getLogger("minik8s.serverless.triggers")

TRIGGER_LABEL = "minik8s.io/trigger"
RULES_BY_TRIGGER = "trigger"


class FunctionCaller(Protocol):
    """The gateway's async call path (``?async=true``): starts the call, answers its activation id.
    Raises ``NotFound`` for an unknown function."""

    async def call_async(self, ns: str, name: str, body: bytes, *, trigger: str | None = None) -> str: ...


class WorkflowStarter(Protocol):
    """``serverless/workflows.py``'s driver: creates a WorkflowExecution, answers its name (may be a
    coroutine function)."""

    def start(self, namespace: str, workflow: str, input: Any, *, labels: dict[str, str] | None = None) -> Any: ...


class StatusWriter(Protocol):
    async def patch(self, rt: Any, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> dict[str, Any]: ...


def timestamp(t: datetime) -> str:
    """RFC 3339 in UTC with microseconds (schedules may fire several times a second)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rule_trigger_key(rule: dict[str, Any]) -> list[str]:
    """The index of rules by ``NS/spec.trigger``."""
    ns = (rule.get("metadata") or {}).get("namespace") or ""
    trigger = (rule.get("spec") or {}).get("trigger")
    return [f"{ns}/{trigger}"] if isinstance(trigger, str) and trigger else []


def rule_enabled(rule: dict[str, Any]) -> bool:
    return (rule.get("spec") or {}).get("enabled", True) is not False


def schedule_of(trigger: dict[str, Any]) -> str:
    value = (trigger.get("spec") or {}).get("schedule")
    return value.strip() if isinstance(value, str) else ""


@dataclass(eq=False)
class _Timer:
    text: str  # the spec.schedule it runs
    task: asyncio.Task[None] | None = None
    next_fire: datetime | None = None


@dataclass
class _State:
    fire_count: int = 0  # firings this gateway wrote (or found in status at first sight)
    timer: _Timer | None = None


class TriggerScheduler:
    """Fires triggers (see the module docstring).

    ``triggers`` and ``rules`` are the informers' caches (read only; a ``"trigger"`` index is added
    to ``rules``). Call :meth:`trigger_changed` / :meth:`trigger_deleted` from the triggers
    informer, :meth:`start` once both caches are synced (timers begin then, so a first firing never
    misses rules not listed yet), and :meth:`stop` at the end.
    """

    def __init__(self, client: StatusWriter, *, triggers: Indexer, rules: Indexer, functions: FunctionCaller,
                 workflows: WorkflowStarter | None = None, clock: Clock | None = None,
                 metrics_registry: CollectorRegistry | None = None) -> None:
        self.client = client
        self.triggers = triggers
        self.rules = rules
        self.functions = functions
        self.workflows = workflows
        self.clock: Clock = clock or SystemClock()
        self.rules.add_index(RULES_BY_TRIGGER, rule_trigger_key)
        self._rt = registry.lookup("triggers")
        self._states: dict[str, _State] = {}
        self._started = False
        self.firings = Counter("gateway_trigger_firings_total", "Trigger firings", ["namespace", "trigger", "source"],
                               registry=metrics_registry)
        self.failures = Counter("gateway_rule_failures_total", "Rules whose target could not be started",
                                ["namespace", "rule"], registry=metrics_registry)

    # --- informer side ----------------------------------------------------------------------------

    def trigger_changed(self, trigger: dict[str, Any]) -> None:
        """A trigger was added or updated: (re)start its timer when its schedule changed."""
        key = object_key(trigger)
        state = self._states.get(key)
        if state is None:
            count = (trigger.get("status") or {}).get("fireCount")
            state = self._states[key] = _State(fire_count=count if isinstance(count, int) and count > 0 else 0)
        text = schedule_of(trigger)
        if state.timer is not None and state.timer.text == text:
            return  # a status write (ours) or another field: the timer goes on
        self._cancel(state)
        if text:
            state.timer = _Timer(text)
            if self._started:
                self._run_timer(key, state.timer)

    def trigger_deleted(self, trigger: dict[str, Any]) -> None:
        state = self._states.pop(object_key(trigger), None)
        if state is not None:
            self._cancel(state)

    def start(self) -> None:
        """Start the timer of every scheduled trigger seen so far (from now)."""
        self._started = True
        for key, state in self._states.items():
            if state.timer is not None and state.timer.task is None:
                self._run_timer(key, state.timer)

    async def stop(self) -> None:
        self._started = False
        tasks = [s.timer.task for s in self._states.values() if s.timer is not None and s.timer.task is not None]
        for state in self._states.values():
            self._cancel(state, keep=True)
        await asyncio.gather(*tasks, return_exceptions=True)

    def next_fire_time(self, ns: str, name: str) -> datetime | None:
        state = self._states.get(f"{ns}/{name}")
        return state.timer.next_fire if state is not None and state.timer is not None else None

    def _cancel(self, state: _State, *, keep: bool = False) -> None:
        timer = state.timer
        if timer is not None and timer.task is not None:
            timer.task.cancel()
            timer.task = None
        if not keep:
            state.timer = None

    def _run_timer(self, key: str, timer: _Timer) -> None:
        timer.task = asyncio.ensure_future(self._timer(key, timer))

    # --- the timer of one trigger -----------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.time(), UTC)

    async def _timer(self, key: str, timer: _Timer) -> None:
        try:
            await self._tick_forever(key, timer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the apiserver validates; an odd object must not stop us
            log.warning("trigger %s: schedule %r stopped (%s); it fires only by POST until its spec changes",
                        key, timer.text, exc)

    async def _tick_forever(self, key: str, timer: _Timer) -> None:
        ns, _, name = key.partition("/")
        schedule = parse_schedule(timer.text)  # ScheduleError: see _timer
        # From now: firings missed while no gateway ran are not replayed (docs/workflows.md).
        nxt = schedule.next_after(self._now())
        timer.next_fire = nxt
        await self._write_status(ns, name, {"nextFireTime": timestamp(nxt)})
        while True:
            delay = (nxt - self._now()).total_seconds()
            if delay > 0:
                await self.clock.sleep(delay)
                continue  # a clock that woke early sleeps the rest
            after = schedule.next_after(nxt)
            now = self._now()
            if after <= now:  # we fell behind (a long pause): skip to the next time still ahead
                after = schedule.next_after(now)
            timer.next_fire = after
            try:
                await self.fire(ns, name, {"trigger": name, "time": timestamp(nxt)}, source="schedule")
            except NotFound:
                return  # deleted under us; trigger_deleted cancels the rest
            except Exception:
                log.exception("trigger %s: firing failed", key)
            nxt = after

    # --- firing ----------------------------------------------------------------------------------

    async def fire(self, ns: str, name: str, payload: Any, *, source: str = "http") -> list[dict[str, Any]]:
        """Fire trigger NS/NAME with ``payload``: start each enabled rule's target, write the trigger's
        status once. Answers one entry per rule started (or failed). Raises ``NotFound`` for an unknown
        trigger, ``ServiceUnavailable`` before the caches are synced."""
        if not self._started:
            raise ServiceUnavailable("the trigger scheduler is starting; send the request again")
        key = f"{ns}/{name}"
        trigger = self.triggers.get(key)
        if trigger is None:
            raise NotFound(f"trigger {key} not found", kind="triggers", name=name, group="minik8s.io")
        fired_at = self._now()
        rules = [r for r in self.rules.by_index(RULES_BY_TRIGGER, key) if rule_enabled(r)]
        firings = list(await asyncio.gather(*(self._start_rule(ns, name, r, payload) for r in rules)))
        self.firings.labels(ns, name, source).inc()
        state = self._states.setdefault(key, _State())
        recorded = (trigger.get("status") or {}).get("fireCount")
        if isinstance(recorded, int) and recorded > state.fire_count:
            state.fire_count = recorded
        state.fire_count += 1
        status: dict[str, Any] = {"lastFireTime": timestamp(fired_at), "fireCount": state.fire_count}
        if state.timer is not None and state.timer.next_fire is not None:
            status["nextFireTime"] = timestamp(state.timer.next_fire)
        await self._write_status(ns, name, status)
        log.info("trigger %s fired (%s): %d rule(s)", key, source, len(firings))
        return firings

    async def _start_rule(self, ns: str, trigger: str, rule: dict[str, Any], payload: Any) -> dict[str, Any]:
        rule_name = str((rule.get("metadata") or {}).get("name") or "")
        spec = rule.get("spec") or {}
        entry: dict[str, Any] = {"rule": rule_name}
        try:
            if spec.get("function"):
                entry["function"] = spec["function"]
                body = orjson.dumps(payload)
                entry["activationId"] = await self.functions.call_async(ns, str(spec["function"]), body,
                                                                        trigger=trigger)
            elif spec.get("workflow"):
                entry["workflow"] = spec["workflow"]
                if self.workflows is None:
                    raise ServiceUnavailable("this gateway runs no workflow driver")
                started = self.workflows.start(ns, str(spec["workflow"]), payload, labels={TRIGGER_LABEL: trigger})
                if inspect.isawaitable(started):
                    started = await started
                entry["executionId"] = str(started)
            else:
                raise ValueError("the rule names neither a function nor a workflow")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one rule's failure is its firing entry; the others go on
            self.failures.labels(ns, rule_name).inc()
            message = str(exc) if isinstance(exc, ApiError | ValueError) else f"{type(exc).__name__}: {exc}"
            log.warning("rule %s/%s of trigger %s: %s", ns, rule_name, trigger, message)
            entry["error"] = message
        return entry

    async def _write_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        try:
            await self.client.patch(self._rt, name, {"status": status}, namespace=ns, patch_type="merge",
                                    subresource="status")
        except NotFound:
            log.debug("trigger %s/%s is gone; status not written", ns, name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - status is informative; the firing happened
            log.warning("trigger %s/%s: writing status failed: %s", ns, name, exc)
