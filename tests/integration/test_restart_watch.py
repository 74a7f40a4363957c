"""A watch survives a crash of its apiserver: resume from the last seen resourceVersion, lose nothing.

    writer thread ──HTTP──▶ apiserver B ─┐
                                         ├──▶ one etcd (fresh)
    watcher thread ◀─watch── apiserver A ┘     A is SIGKILLed mid-stream and restarted on its port

Every write the writer saw acknowledged (type, name, resourceVersion) must reach the watcher
exactly once, in order, over both watch sessions, and the resumed watch must not get 410 Gone.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from minik8s.testing import ApiserverProcess, free_port, wait_until

pytestmark = pytest.mark.timeout(180)

NS = "default"
BASE = f"/api/v1/namespaces/{NS}/endpoints"
TOTAL_WRITES = 300
KILL_AT = 80           # the writer has made this many writes when A is killed
GATE_KILLED = 150      # the writer waits here until A is dead (so writes happen while it is down)
GATE_RESTARTED = 250   # ... and here until A is back (so writes happen after the restart too)
DEADLINE = 120.0


class Writer(threading.Thread):
    """Creates, updates (PUT and merge PATCH) and deletes Endpoints through apiserver B."""

    def __init__(self, url: str, killed: threading.Event, restarted: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.killed = killed
        self.restarted = restarted
        self.acks: list[tuple[str, str, int]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.done.set()

    def _ack(self, kind: str, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code in (200, 201), f"write failed: {r.status_code} {r.text}"
        obj = r.json()
        self.acks.append((kind, obj["metadata"]["name"], int(obj["metadata"]["resourceVersion"])))
        return obj

    def _run(self) -> None:
        live: dict[str, dict[str, Any]] = {}
        serial = 0
        with httpx.Client(base_url=self.url, timeout=10) as c:
            for i in range(TOTAL_WRITES):
                if i == GATE_KILLED:
                    assert self.killed.wait(60), "apiserver A was not killed in time"
                if i == GATE_RESTARTED:
                    assert self.restarted.wait(60), "apiserver A was not restarted in time"
                if len(live) < 8 or i % 3 == 0:
                    serial += 1
                    name = f"ep-{serial}"
                    body = {"apiVersion": "v1", "kind": "Endpoints",
                            "metadata": {"name": name, "labels": {"app": "restart-watch"}}, "subsets": []}
                    live[name] = self._ack("ADDED", c.post(BASE, json=body))
                elif i % 7 == 0:
                    name = sorted(live)[0]
                    self._ack("DELETED", c.delete(f"{BASE}/{name}"))
                    del live[name]
                elif i % 2 == 0:
                    name = sorted(live)[i % len(live)]
                    obj = live[name]
                    obj["metadata"].setdefault("annotations", {})["write"] = str(i)
                    live[name] = self._ack("MODIFIED", c.put(f"{BASE}/{name}", json=obj))
                else:
                    name = sorted(live)[i % len(live)]
                    patch = {"metadata": {"annotations": {"write": str(i)}}}
                    live[name] = self._ack("MODIFIED", c.patch(
                        f"{BASE}/{name}", content=json.dumps(patch),
                        headers={"Content-Type": "application/merge-patch+json"}))


class Watcher(threading.Thread):
    """Watches Endpoints through apiserver A; reconnects from the last seen resourceVersion."""

    def __init__(self, url: str, from_rv: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.last_rv = from_rv
        self.events: list[tuple[str, str, int]] = []
        self.sessions: list[list[tuple[str, str, int]]] = []
        self.failures: list[str] = []       # 410s, ERROR events, unexpected codes
        self.target_rv: int | None = None   # stop once this revision has been seen
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        deadline = time.monotonic() + DEADLINE
        timeout = httpx.Timeout(connect=2, read=3, write=5, pool=5)
        with httpx.Client(base_url=self.url, timeout=timeout) as c:
            while not self.stop.is_set() and time.monotonic() < deadline:
                if self.target_rv is not None and self.last_rv >= self.target_rv:
                    return
                try:
                    self._session(c)
                except (httpx.TransportError, httpx.StreamError):
                    # The server died mid-stream, is not listening yet, or was idle past the read
                    # timeout: reconnect (bounded by the deadline, paced so a dead port is not hammered).
                    self.stop.wait(0.05)

    def _session(self, c: httpx.Client) -> None:
        params = {"watch": "true", "resourceVersion": str(self.last_rv)}
        with c.stream("GET", BASE, params=params) as r:
            if r.status_code == 503:       # starting up: try again
                r.read()
                self.stop.wait(0.05)
                return
            if r.status_code != 200:
                r.read()
                self.failures.append(f"watch from {self.last_rv} answered {r.status_code}: {r.text}")
                self.stop.set()
                return
            session: list[tuple[str, str, int]] = []
            with self.lock:
                self.sessions.append(session)
            for line in r.iter_lines():
                if not line.strip():
                    continue
                ev = json.loads(line)
                if ev["type"] == "ERROR":
                    self.failures.append(f"ERROR event on a watch from {self.last_rv}: {ev['object']}")
                    self.stop.set()
                    return
                if ev["type"] == "BOOKMARK":
                    continue
                meta = ev["object"]["metadata"]
                item = (ev["type"], meta["name"], int(meta["resourceVersion"]))
                with self.lock:
                    session.append(item)
                    self.events.append(item)
                    self.last_rv = item[2]
                if self.target_rv is not None and self.last_rv >= self.target_rv:
                    return


def test_watch_resumes_after_apiserver_sigkill_without_loss_or_duplicates(fresh_etcd):
    port_a = free_port()
    a = ApiserverProcess(fresh_etcd.endpoint, port=port_a, extra_args=["--compaction-interval", "0"])
    b = ApiserverProcess(fresh_etcd.endpoint, extra_args=["--compaction-interval", "0"])
    a.start()
    b.start()
    a2: ApiserverProcess | None = None
    try:
        listed = httpx.get(f"{a.url}{BASE}", timeout=10)
        assert listed.status_code == 200, listed.text
        start_rv = int(listed.json()["metadata"]["resourceVersion"])

        watcher = Watcher(a.url, start_rv)
        watcher.start()
        # The watch stream is open before the first write, so the first session sees writes live.
        wait_until(lambda: len(watcher.sessions) == 1, timeout=10, what="the watch to open")

        killed, restarted = threading.Event(), threading.Event()
        writer = Writer(b.url, killed, restarted)
        writer.start()

        wait_until(lambda: len(writer.acks) >= KILL_AT or writer.done.is_set(), timeout=60,
                   what=f"{KILL_AT} acknowledged writes")
        assert writer.error is None, f"writer failed: {writer.error!r}"
        wait_until(lambda: len(watcher.events) > 0, timeout=10, what="the watcher to see events before the kill")
        a.kill()
        killed.set()
        seen_before_kill = len(watcher.events)

        a2 = ApiserverProcess(fresh_etcd.endpoint, port=port_a, extra_args=["--compaction-interval", "0"])
        a2.start()
        restarted.set()

        assert writer.done.wait(DEADLINE), "the writer did not finish"
        assert writer.error is None, f"writer failed: {writer.error!r}"
        assert len(writer.acks) == TOTAL_WRITES
        watcher.target_rv = max(rv for _, _, rv in writer.acks)
        wait_until(lambda: not watcher.is_alive(), timeout=60, what="the watcher to see the last write")
        watcher.stop.set()

        assert watcher.failures == [], watcher.failures
        assert len(watcher.sessions) >= 2, "the watch was never interrupted by the kill"
        assert seen_before_kill < TOTAL_WRITES
        resumed = [e for s in watcher.sessions[1:] for e in s]
        assert resumed, "the resumed watch delivered nothing"

        expected = sorted(writer.acks, key=lambda e: e[2])
        got = watcher.events
        dupes = len(got) - len(set(got))
        missing = set(expected) - set(got)
        extra = set(got) - set(expected)
        assert dupes == 0, f"{dupes} duplicated events"
        assert not missing, f"{len(missing)} acknowledged writes never reached the watcher: {sorted(missing)[:10]}"
        assert not extra, f"{len(extra)} events for writes nobody made: {sorted(extra)[:10]}"
        assert got == expected, "events arrived out of resourceVersion order"
    finally:
        for p in (a2, a, b):
            if p is not None:
                p.stop()
