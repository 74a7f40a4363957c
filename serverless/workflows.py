"""The workflow driver: runs every WorkflowExecution from its recorded status (docs/workflows.md).

::

    informer: workflowexecutions ─▶ WorkQueue of NS/NAME ─▶ sync(key), level-triggered:
        gone                   → cancel its task (if any); sync callers get "deleted"
        Succeeded / Failed     → sync callers get the object
        Pending / Running      → one asyncio task drives it (at most --workflow-workers at once;
                                 the others stay Pending until a slot frees)
    start(NS, WORKFLOW, input) → GET the Workflow, create WORKFLOW-<8 hex> (spec.definition = a copy of
                                 its spec, ownerReference, label minik8s.io/workflow) → its name
    a task (_Run) resumes from status.current, one cursor per thread ("" top level, "Fan[1]" a branch):
        each step: change the status in memory ─▶ merge-patch …/status ─▶ only then the next step
        Task      → invoker.invoke(NS, FUNCTION, body): the gateway's own call path (activator holds a
                    cold request; an activation record is written; its id goes to the trace)
                    non-2xx → States.TaskFailed (+ the function's JSON "type"), 504 / timeoutSeconds →
                    States.Timeout, 503 → States.Unavailable; retry (back-off) then catch
        Parallel  → one thread per branch (asyncio.gather); outputs joined in branch order
        Choice / Pass / Wait (records waitUntil, sleeps until it) / Succeed / Fail

Status while running (what a restarted gateway resumes from):

    phase, startTime, current: [{state, branch, input, traceIndex?, attempt?, retryAt?, waitUntil?,
    retries?, branchOutputs?, branchesDone?}], waitUntil (earliest of the Waits in progress), trace: [{state,
    branch, type, status, attempt, startTime, endTime, input, output, error, cause, activationId}]

A cursor's ``input`` is the full input of its state; the trace keeps at most 4 KiB of each value.
A state moves to ``Succeeded``/``Failed``/``Caught`` in the same write that moves its thread's cursor
to the next state, so after ``kill -9`` nothing recorded ``Succeeded`` runs again; a Task recorded
``Running`` is called again (at-least-once); a Wait sleeps until its recorded ``waitUntil``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from minik8s import workflow as language
from minik8s.api import registry
from minik8s.client.informer import Informer, ListWatcher, object_key
from minik8s.client.workqueue import ItemExponentialRateLimiter, WorkQueue, run_worker
from minik8s.errors import ApiError, ConnectionFailed, NotFound, ServiceUnavailable
from minik8s.timeutil import parse_rfc3339

log = logging.getLogger("minik8s.serverless.workflows")

Obj = dict[str, Any]

EXECUTIONS = registry.lookup("workflowexecutions")
WORKFLOWS = registry.lookup("workflows")
WORKFLOW_LABEL = "minik8s.io/workflow"
TERMINAL = ("Succeeded", "Failed")
MAX_TRACE_VALUE = 4096  # bytes of JSON kept of each input/output in the trace
DEFAULT_WORKERS = 8
DEFAULT_SYNC_TIMEOUT = 300.0
DEFAULT_RESYNC = 60.0
# Status writes that fail (apiserver restarting) are retried with this back-off, forever: the next
# step must not start before this one is recorded.
WRITE_BACKOFF = (0.1, 5.0)
# Executions this driver finished, remembered so a stale cache (our own earlier writes still arriving)
# never starts them again.
FINISHED_MEMORY = 10_000

# Error names of the language (docs/workflows.md, Errors).
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"
UNAVAILABLE = "States.Unavailable"
RUNTIME = "States.Runtime"
NO_CHOICE = "States.NoChoiceMatched"
BRANCH_FAILED = "States.BranchFailed"


class Invoker(Protocol):
    """The gateway's call path for one synchronous call: (HTTP status, body, activation id; "" when no
    call was made, e.g. an unknown function)."""

    async def invoke(self, ns: str, name: str, body: bytes) -> tuple[int, bytes, str]: ...


class ExecutionClient(ListWatcher, Protocol):
    """The API calls the driver makes (``AsyncApiClient`` has them; unit tests pass a fake)."""

    async def create(self, obj: Obj, *, namespace: str | None = None, dry_run: bool = False,
                     field_validation: str | None = None) -> Obj: ...

    async def get(self, rt: registry.ResourceType, name: str, namespace: str | None = None) -> Obj: ...

    async def patch(self, rt: registry.ResourceType, name: str, patch: Any, *, namespace: str | None = None,
                    patch_type: Any = "merge", subresource: str = "") -> Obj: ...


class Clock(Protocol):
    """Wall time (``waitUntil`` survives a restart, so it is wall time) and a way to sleep."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class StateError(Exception):
    """A state, a branch or the execution failed with ``error`` (what ``errorEquals`` matches) and
    ``cause``. ``task_failed``: the function answered non-2xx (``States.TaskFailed`` matches too)."""

    def __init__(self, error: str, cause: str, *, task_failed: bool = False, activation_id: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause
        self.task_failed = task_failed
        self.activation_id = activation_id

    def as_object(self) -> Obj:
        return {"error": self.error, "cause": self.cause}


class _Gone(Exception):
    """The execution was deleted while it ran: stop driving it."""


@dataclass
class Step:
    """How one state ended: its output, the next state (None: the thread ends), its trace entry."""

    output: Any
    next: str | None
    trace_index: int
    status: str = "Succeeded"
    error: Obj | None = None


# --- small helpers ---------------------------------------------------------------------------------

def stamp(t: float) -> str:
    """RFC 3339 with microseconds, UTC."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: Any) -> float | None:
    parsed = parse_rfc3339(text) if isinstance(text, str) else None
    return parsed.timestamp() if parsed is not None else None


def clip(value: Any) -> tuple[Any, bool]:
    """``value`` as the trace keeps it: itself when its JSON fits in 4 KiB, else the first 4 KiB of
    that JSON as a string ending in "…" (and True)."""
    try:
        text = orjson.dumps(value)
    except TypeError:
        return str(value)[:MAX_TRACE_VALUE], True
    if len(text) <= MAX_TRACE_VALUE:
        return value, False
    return text[:MAX_TRACE_VALUE].decode("utf-8", errors="ignore") + "…", True


def _scope_prefix(branch: str, state: str) -> str:
    """The branch path prefix of a Parallel's branches: ``Fan`` → ``Fan[i]``, nested ``Fan[0]/In[i]``."""
    return f"{branch}/{state}" if branch else state


def _task_error(status: int, raw: bytes, function: str, activation_id: str) -> StateError:
    """The error of a non-2xx answer of the gateway's call path."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode("utf-8", errors="replace")
    message = str(body.get("error")) if isinstance(body, dict) and body.get("error") is not None else str(body)
    if status == 504:
        return StateError(TIMEOUT, f"function {function}: {message}", activation_id=activation_id)
    if status == 503:
        return StateError(UNAVAILABLE, f"function {function}: {message}", activation_id=activation_id)
    kind = body.get("type") if isinstance(body, dict) and isinstance(body.get("type"), str) else ""
    return StateError(kind or TASK_FAILED, message or f"function {function} answered {status}", task_failed=True,
                      activation_id=activation_id)


# --- the language (minik8s/workflow.py), in one place ---------------------------------------------

def _select(data: Any, path: Any) -> Any:
    try:
        return language.select(data, path)
    except language.PathError as exc:
        raise StateError(RUNTIME, str(exc)) from None


def _place(data: Any, state: Obj, key: str, result: Any) -> Any:
    """``result`` put into ``data`` at ``state[key]`` (default ``$``: replaces it; ``null``: discarded)."""
    if key not in state or state[key] == "$":
        return result
    path = state[key]
    if path is None:
        return data
    try:
        return language.put(data, path, result)
    except language.PathError as exc:
        raise StateError(RUNTIME, str(exc)) from None


def _parameters(name: str, state: Obj, effective: Any) -> Any:
    """The input a Task, Parallel or Pass works on: its ``parameters`` applied to ``effective``."""
    if not isinstance(state.get("parameters"), dict):
        return effective
    try:
        return language.apply_parameters(state["parameters"], effective)
    except language.PathError as exc:
        raise StateError(RUNTIME, f"state {name}: {exc}") from None


def _input_of(state: Obj, data: Any) -> Any:
    if "inputPath" not in state:
        return data
    return {} if state["inputPath"] is None else _select(data, state["inputPath"])


def _output_of(state: Obj, data: Any) -> Any:
    if "outputPath" not in state:
        return data
    return {} if state["outputPath"] is None else _select(data, state["outputPath"])


def _error_matches(equals: Any, err: StateError) -> bool:
    """``errorEquals`` names ``err`` (``States.TaskFailed`` also names every error a function raised)."""
    names = [e for e in equals or [] if isinstance(e, str)]
    if language.error_matches(names, err.error):
        return True
    return err.task_failed and language.error_matches(names, TASK_FAILED)


# --- one execution ---------------------------------------------------------------------------------

class _Run:
    """One execution being driven. Its status in memory is the authority while it runs (this driver is
    its only writer); :meth:`commit` writes it before the caller goes on."""

    def __init__(self, driver: WorkflowDriver, obj: Obj) -> None:
        self.driver = driver
        meta = obj.get("metadata") or {}
        self.ns, self.name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        self.meta = meta
        self.spec = obj.get("spec") or {}
        definition = self.spec.get("definition")
        self.definition: Obj = definition if isinstance(definition, dict) else {}
        self.status: Obj = copy.deepcopy(obj.get("status") or {})
        self.status.setdefault("trace", [])
        self.status.setdefault("current", [])
        self._version = 0
        self._written = 0
        self._lock = asyncio.Lock()

    @property
    def clock(self) -> Clock:
        return self.driver.clock

    def obj(self) -> Obj:
        return {"apiVersion": EXECUTIONS.api_version, "kind": EXECUTIONS.kind, "metadata": self.meta,
                "spec": self.spec, "status": self.status}

    # --- the record ------------------------------------------------------------------------------

    async def commit(self) -> None:
        """Write the status as it is now; returns once a write that includes every change made before
        this call is stored. Concurrent branches share writes."""
        self._version += 1
        mine = self._version
        async with self._lock:
            if self._written >= mine:
                return
            version = self._version
            waits = [c["waitUntil"] for c in self.status["current"] if c.get("waitUntil")]
            self.status["waitUntil"] = min(waits, key=lambda w: parse_stamp(w) or 0.0) if waits else None
            body = orjson.loads(orjson.dumps(self.status))
            for key in ("waitUntil", "output", "error", "cause", "completionTime"):
                body.setdefault(key, None)  # merge patch: null removes a field left from before
            await self.driver.write_status(self.ns, self.name, body)
            self._written = version

    def cursor(self, branch: str) -> Obj | None:
        return next((c for c in self.status["current"] if c.get("branch") == branch), None)

    def set_cursor(self, cursor: Obj) -> Obj:
        current = self.status["current"]
        for i, c in enumerate(current):
            if c.get("branch") == cursor["branch"]:
                current[i] = cursor
                return cursor
        current.append(cursor)
        return cursor

    def drop_cursors(self, match: Callable[[str], bool]) -> None:
        self.status["current"] = [c for c in self.status["current"] if not match(str(c.get("branch") or ""))]

    def entry(self, index: int) -> Obj:
        trace: list[Obj] = self.status["trace"]
        return trace[index]

    async def begin(self, cursor: Obj, name: str, kind: str) -> tuple[int, bool]:
        """The trace entry of the state at ``cursor``: the one recorded ``Running`` (resumed: True), or a
        new ``Running`` one, written before the state acts."""
        index = cursor.get("traceIndex")
        trace: list[Obj] = self.status["trace"]
        if isinstance(index, int) and 0 <= index < len(trace) and trace[index].get("status") == "Running":
            return index, True
        entry: Obj = {"state": name, "branch": cursor["branch"], "type": kind, "status": "Running",
                      "attempt": int(cursor.get("attempt") or 1), "startTime": stamp(self.clock.time()),
                      "input": clip(cursor.get("input"))[0]}
        trace.append(entry)
        index = cursor["traceIndex"] = len(trace) - 1  # before the write: branches append meanwhile
        cursor.pop("retryAt", None)
        await self.commit()
        return index, False

    def close(self, index: int, status: str, *, output: Any = None, error: Obj | None = None,
              with_output: bool = True) -> None:
        entry = self.entry(index)
        entry["status"] = status
        entry["endTime"] = stamp(self.clock.time())
        if error is not None:
            entry.update(error=error["error"], cause=error["cause"])
        elif with_output:
            entry["output"] = clip(output)[0]

    def fail_running(self, match: Callable[[str], bool], error: Obj) -> None:
        """Mark the trace entries still ``Running`` in the matching branches ``Failed`` with ``error``."""
        for entry in self.status["trace"]:
            if entry.get("status") == "Running" and match(str(entry.get("branch") or "")):
                entry.update(status="Failed", endTime=stamp(self.clock.time()), error=error["error"],
                             cause=error["cause"])

    # --- the whole execution ---------------------------------------------------------------------

    async def drive(self) -> Obj:
        """Run to the end (or resume there); the final object. Raises ``_Gone`` when deleted meanwhile."""
        status = self.status
        if status.get("phase") in TERMINAL:
            return self.obj()
        now = self.clock.time()
        if status.get("phase") != "Running":
            status["phase"] = "Running"
            status.setdefault("startTime", stamp(now))
            status["current"] = []
        started = parse_stamp(status.get("startTime")) or now
        limit = self.definition.get("timeoutSeconds")
        budget = None
        if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0:
            budget = max(0.0, started + float(limit) - now)
        try:
            if not self.status["current"]:
                self.set_cursor({"branch": "", "state": self.definition.get("startAt"),
                                 "input": self.spec.get("input")})
                await self.commit()
            async with asyncio.timeout(budget):
                await self.thread(self.definition, "", self._finish_ok)
        except TimeoutError:
            expired = StateError(TIMEOUT, f"the execution did not finish within {limit}s")
            self.fail_running(lambda _b: True, expired.as_object())
            await self._finish_failed(expired)
        except StateError as err:
            await self._finish_failed(err)
        except (_Gone, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug or a definition the validator let through: fail, never crash-loop
            log.exception("execution %s/%s failed in the driver", self.ns, self.name)
            broken = StateError(RUNTIME, f"{type(exc).__name__}: {exc}")
            self.fail_running(lambda _b: True, broken.as_object())
            await self._finish_failed(broken)
        return self.obj()

    def _finish_ok(self, output: Any) -> None:
        self.status.update(phase="Succeeded", output=output, completionTime=stamp(self.clock.time()), current=[])

    async def _finish_failed(self, err: StateError) -> None:
        self.status.update(phase="Failed", error=err.error, cause=err.cause,
                           completionTime=stamp(self.clock.time()), current=[])
        self.status.pop("output", None)
        await self.commit()

    # --- threads and states ----------------------------------------------------------------------

    async def thread(self, scope: Obj, branch: str, on_end: Callable[[Any], None], data: Any = None) -> Any:
        """Run one scope's states from its cursor (or from ``startAt`` with ``data``) to an end; the
        output. ``on_end`` records the end in memory; it is written with the last state's outcome."""
        cursor = self.cursor(branch)
        if cursor is None:
            cursor = self.set_cursor({"branch": branch, "state": scope.get("startAt"), "input": data})
        states = scope.get("states") or {}
        while True:
            name = cursor.get("state")
            state = states.get(name) if isinstance(name, str) else None
            if not isinstance(state, dict):
                raise StateError(RUNTIME, f"no state {name!r} in {'branch ' + branch if branch else 'the workflow'}")
            step = await self.state(str(name), state, cursor)
            self.close(step.trace_index, step.status, output=step.output, error=step.error)
            if step.next is None:
                self.drop_cursors(lambda b: b == branch)
                on_end(step.output)
                await self.commit()
                return step.output
            cursor = self.set_cursor({"branch": branch, "state": step.next, "input": step.output})
            await self.commit()

    async def state(self, name: str, state: Obj, cursor: Obj) -> Step:
        kind = str(state.get("type") or "")
        data = cursor.get("input")
        if kind in ("Task", "Parallel"):
            return await self.retried(name, state, cursor, kind)
        if kind == "Wait":
            until = cursor.get("waitUntil")
            if not until:
                seconds = state.get("seconds")
                if seconds is None:
                    seconds = _select(data, state.get("secondsPath"))
                if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                    raise StateError(RUNTIME, f"state {name}: the seconds to wait must be a number ≥ 0, "
                                              f"not {seconds!r}")
                until = cursor["waitUntil"] = stamp(self.clock.time() + float(seconds))
            index, _ = await self.begin(cursor, name, kind)  # waitUntil is written with it (the cursor's)
            await self.clock.sleep((parse_stamp(until) or 0.0) - self.clock.time())
            cursor.pop("waitUntil", None)
            return Step(_output_of(state, _input_of(state, data)), self._next(state), index)
        index, _ = await self.begin(cursor, name, kind)
        if kind == "Pass":
            effective = _input_of(state, data)
            result = copy.deepcopy(state["result"]) if "result" in state else _parameters(name, state, effective)
            return Step(_output_of(state, _place(effective, state, "resultPath", result)), self._next(state), index)
        if kind == "Choice":
            chosen = language.choose(state, _input_of(state, data))
            if chosen is not None:
                return Step(_output_of(state, data), chosen, index)
            err = StateError(NO_CHOICE, f"state {name}: no choice matched and there is no default")
            self.close(index, "Failed", error=err.as_object())
            raise err
        if kind == "Succeed":
            return Step(_output_of(state, _input_of(state, data)), None, index)
        if kind == "Fail":
            err = StateError(str(state.get("error") or "States.Fail"), str(state.get("cause") or ""))
            self.close(index, "Failed", error=err.as_object())
            raise err
        err = StateError(RUNTIME, f"state {name}: unknown type {kind!r}")
        self.close(index, "Failed", error=err.as_object())
        raise err

    @staticmethod
    def _next(state: Obj) -> str | None:
        return None if state.get("end") is True or not state.get("next") else str(state["next"])

    async def retried(self, name: str, state: Obj, cursor: Obj, kind: str) -> Step:
        """A Task or Parallel with its ``retry`` and ``catch`` rules; every attempt is one trace entry."""
        data = cursor.get("input")
        retriers = [r for r in state.get("retry") or [] if isinstance(r, dict)]
        counts = cursor.setdefault("retries", [0] * len(retriers))
        while True:
            if cursor.get("retryAt") and cursor.get("traceIndex") is None:
                await self.clock.sleep((parse_stamp(cursor["retryAt"]) or 0.0) - self.clock.time())
            index, _ = await self.begin(cursor, name, kind)
            try:
                if kind == "Task":
                    result = await self.task(name, state, data, index)
                else:
                    result = await self.parallel(name, state, cursor)
            except StateError as err:
                error = err.as_object()
                at = next((i for i, r in enumerate(retriers) if _error_matches(r.get("errorEquals"), err)), None)
                delay = language.retry_delay(retriers[at], counts[at] + 1) if at is not None else None
                if at is not None and delay is not None:
                    counts[at] += 1
                    self.close(index, "Retrying", error=error)
                    cursor["attempt"] = int(cursor.get("attempt") or 1) + 1
                    cursor["retryAt"] = stamp(self.clock.time() + delay)
                    cursor.pop("traceIndex", None)
                    await self.commit()
                    continue
                for catcher in state.get("catch") or []:
                    if isinstance(catcher, dict) and _error_matches(catcher.get("errorEquals"), err):
                        placed = _place(data, catcher, "resultPath", error)
                        return Step(placed, str(catcher.get("next")), index, status="Caught", error=error)
                self.close(index, "Failed", error=error)
                raise
            output = _output_of(state, _place(data, state, "resultPath", result))
            return Step(output, self._next(state), index)

    async def task(self, name: str, state: Obj, data: Any, index: int) -> Any:
        effective = _parameters(name, state, _input_of(state, data))
        function = str(state.get("function") or "")
        limit = state.get("timeoutSeconds")
        budget = float(limit) if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0 else None
        try:
            async with asyncio.timeout(budget):
                status, raw, activation_id = await self.driver.invoker.invoke(self.ns, function,
                                                                              orjson.dumps(effective))
        except TimeoutError:
            raise StateError(TIMEOUT, f"state {name}: function {function} did not answer within {limit}s") from None
        if activation_id:
            self.entry(index)["activationId"] = activation_id
        if not 200 <= status < 300:
            raise _task_error(status, raw, function, activation_id)
        try:
            return orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            return raw.decode("utf-8", errors="replace")

    async def parallel(self, name: str, state: Obj, cursor: Obj) -> list[Any]:
        branches = [b for b in state.get("branches") or [] if isinstance(b, dict)]
        effective = _parameters(name, state, _input_of(state, cursor.get("input")))
        prefix = _scope_prefix(str(cursor["branch"]), name) + "["
        outputs: list[Any] = cursor.setdefault("branchOutputs", [None] * len(branches))
        done: list[bool] = cursor.setdefault("branchesDone", [False] * len(branches))

        async def one(i: int) -> Any:
            if done[i]:
                return outputs[i]

            def ended(output: Any) -> None:
                outputs[i], done[i] = output, True

            return await self.thread(branches[i], f"{prefix}{i}]", ended, effective)

        tasks = [asyncio.create_task(one(i), name=f"{self.name}:{prefix}{i}]") for i in range(len(branches))]
        try:
            return list(await asyncio.gather(*tasks))
        except StateError as err:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The failed branch's entry is already closed; its siblings' end here.
            self.fail_running(lambda b: b.startswith(prefix),
                              {"error": BRANCH_FAILED, "cause": f"another branch of {name} failed: {err.error}"})
            self.drop_cursors(lambda b: b.startswith(prefix))
            cursor.pop("branchOutputs", None)
            cursor.pop("branchesDone", None)
            raise
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


# --- the driver ------------------------------------------------------------------------------------

class WorkflowDriver:
    """See the module docstring. ``run()`` until ``stop()``; :meth:`sync` is the level-triggered part,
    :meth:`start` and :meth:`call` are what the gateway's routes and the triggers use."""

    name = "workflow-driver"

    def __init__(self, client: ExecutionClient, invoker: Invoker, *, workers: int = DEFAULT_WORKERS,
                 sync_timeout: float = DEFAULT_SYNC_TIMEOUT, clock: Clock | None = None,
                 resync: float = DEFAULT_RESYNC) -> None:
        self.client = client
        self.invoker = invoker
        self.clock: Clock = clock or WallClock()
        self.sync_timeout = sync_timeout
        self.executions = Informer(client, EXECUTIONS, resync_period=resync, name="wf-executions")
        self.executions.add_handler(on_add=self._enqueue, on_update=lambda _old, new: self._enqueue(new),
                                    on_delete=self._deleted)
        self.queue = WorkQueue(rate_limiter=ItemExponentialRateLimiter(base=0.5, cap=30.0))
        self._slots = asyncio.Semaphore(max(1, workers))
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, list[asyncio.Future[Obj | None]]] = {}
        self._finished: OrderedDict[str, str] = OrderedDict()  # key → uid of executions we ended
        self._stop = asyncio.Event()
        self._stopping = False

    # --- informer handlers (short: they only enqueue) -------------------------------------------

    def _enqueue(self, obj: Obj) -> None:
        self.queue.add(object_key(obj))

    def _deleted(self, obj: Obj) -> None:
        key = object_key(obj)
        self._finished.pop(key, None)
        self.queue.add(key)

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch executions and drive them until :meth:`stop`. Stopping leaves running executions
        ``Running`` in the API: the next gateway resumes them."""
        self._stop.clear()
        self._stopping = False
        tasks = [asyncio.create_task(self.executions.run(), name="informer-wf-executions")]
        try:
            while not await self.executions.wait_synced(0.5):
                if self._stop.is_set():
                    return
            log.info("%s synced: %d executions", self.name, len(self.executions.indexer))
            tasks.append(asyncio.create_task(run_worker(self.queue, self._sync_key, name=self.name),
                                             name=f"{self.name}-worker"))
            await self._stop.wait()
        finally:
            self._stopping = True
            self.queue.shut_down()
            self.executions.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.cancel_all()

    def stop(self) -> None:
        self._stopping = True
        self._stop.set()

    async def cancel_all(self) -> None:
        """Stop driving (the executions stay where they are recorded); sync callers are answered."""
        self._stopping = True
        running = list(self._tasks.values())
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for key in list(self._waiters):
            self._resolve(key, None)

    async def _sync_key(self, key: Any) -> None:
        await self.sync(str(key))

    # --- the level-triggered part ---------------------------------------------------------------

    async def sync(self, key: str) -> None:
        """Converge one execution: drive it when it should run and nobody does; answer waiters when done."""
        obj = self.executions.indexer.get(key)
        if obj is None:
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()
            self._resolve(key, None)
            return
        status = obj.get("status") or {}
        if status.get("phase") in TERMINAL:
            self._resolve(key, obj)
            return
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        if self._finished.get(key) == uid:
            return  # our cache is behind our own final write: its event is on its way
        self.adopt(obj)

    def adopt(self, obj: Obj) -> None:
        """Drive ``obj`` unless a task already does (or the driver is stopping)."""
        key = object_key(obj)
        if self._stopping or key in self._tasks:
            return
        task = asyncio.create_task(self._drive(key, obj), name=f"execution {key}")
        self._tasks[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(key) is done:
                del self._tasks[key]

        task.add_done_callback(forget)

    async def _drive(self, key: str, obj: Obj) -> None:
        async with self._slots:
            run = _Run(self, obj)
            try:
                final = await run.drive()
            except _Gone:
                log.info("execution %s was deleted while it ran", key)
                self._resolve(key, None)
                return
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        self._finished[key] = uid
        while len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)
        status = final.get("status") or {}
        log.info("execution %s %s", key, str(status.get("phase") or "").lower())
        self._resolve(key, final)

    def _resolve(self, key: str, obj: Obj | None) -> None:
        for fut in self._waiters.pop(key, []):
            if not fut.done():
                fut.set_result(obj)

    async def write_status(self, ns: str, name: str, status: Obj) -> None:
        """Merge-patch ``executions/NAME/status``; retried until stored. ``_Gone`` when deleted."""
        delay = WRITE_BACKOFF[0]
        while True:
            try:
                await self.client.patch(EXECUTIONS, name, {"status": status}, namespace=ns, subresource="status")
                return
            except NotFound:
                raise _Gone(f"{ns}/{name}") from None
            except (ApiError, ConnectionFailed) as exc:
                log.warning("writing the status of execution %s/%s failed: %s; retrying in %.1fs", ns, name, exc,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, WRITE_BACKOFF[1])

    # --- starting executions ----------------------------------------------------------------------

    async def start(self, namespace: str, workflow: str, input: Any, *, labels: dict[str, str] | None = None,
                    name: str | None = None) -> str:
        """Create an execution of ``workflow`` with ``input``; its name. ``NotFound``: no such workflow."""
        wf = await self.client.get(WORKFLOWS, workflow, namespace)
        meta = wf.get("metadata") or {}
        name = name or f"{workflow}-{uuid.uuid4().hex[:8]}"
        obj: Obj = {
            "apiVersion": EXECUTIONS.api_version, "kind": EXECUTIONS.kind,
            "metadata": {"name": name, "namespace": namespace, "labels": {**(labels or {}), WORKFLOW_LABEL: workflow},
                         "ownerReferences": [{"apiVersion": WORKFLOWS.api_version, "kind": WORKFLOWS.kind,
                                              "name": workflow, "uid": meta.get("uid", ""), "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": {"workflow": workflow, "input": input, "definition": copy.deepcopy(wf.get("spec") or {})},
        }
        created = await self.client.create(obj, namespace=namespace)
        # Drive it now rather than when its watch event comes: sync() then finds the task running.
        self.adopt(created)
        return name

    async def call(self, namespace: str, workflow: str, input: Any, *,
                   timeout: float | None = None) -> tuple[str, Obj | None]:
        """Start an execution and wait (at most ``timeout``, default ``sync_timeout``) for its end: (name,
        the finished object, or None when it did not end in time). ``ServiceUnavailable`` when the
        gateway stops meanwhile (the execution goes on after the restart)."""
        if self._stopping:
            raise ServiceUnavailable("the gateway is stopping; send the request again")
        name = f"{workflow}-{uuid.uuid4().hex[:8]}"
        key = f"{namespace}/{name}"
        fut: asyncio.Future[Obj | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(fut)  # before create: a quick execution must not be missed
        try:
            await self.start(namespace, workflow, input, name=name)
            try:
                final = await asyncio.wait_for(fut, timeout if timeout is not None else self.sync_timeout)
            except TimeoutError:
                return name, None
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None and fut in waiting:
                waiting.remove(fut)
                if not waiting:
                    del self._waiters[key]
        if final is None:
            if self._stopping:
                raise ServiceUnavailable(f"the gateway is stopping; execution {name} goes on after its restart")
            raise NotFound(f"execution {namespace}/{name} was deleted before it finished")
        return name, final


__all__ = ["StateError", "WorkflowDriver", "clip", "parse_stamp", "stamp"]
