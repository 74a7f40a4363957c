"""Optimistic concurrency: read-modify-write through two apiservers never loses an update.

8 writer threads each add 1 to an annotation counter of one Deployment 200 times, alternating
between two apiserver processes on one etcd, re-reading and retrying on 409 Conflict. The final
counter must be exactly 8 × 200, and the race must really have happened (at least one 409).
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from minik8s.testing import ApiserverProcess

pytestmark = pytest.mark.timeout(300)

WRITERS = 8
INCREMENTS = 200
MAX_TRIES = 500        # per increment
DEADLINE = 240.0       # for the whole run
PATH = "/apis/apps/v1/namespaces/default/deployments/counter"


def deployment() -> dict:
    labels = {"app": "counter"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "counter", "annotations": {"counter": "0"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def test_concurrent_read_modify_write_through_two_apiservers_loses_nothing(fresh_etcd):
    servers = [ApiserverProcess(fresh_etcd.endpoint, extra_args=["--compaction-interval", "0"]) for _ in range(2)]
    for s in servers:
        s.start()
    try:
        r = httpx.post(f"{servers[0].url}/apis/apps/v1/namespaces/default/deployments", json=deployment(),
                       timeout=10)
        assert r.status_code == 201, r.text

        conflicts = [0] * WRITERS
        errors: list[str] = []
        deadline = time.monotonic() + DEADLINE

        def writer(i: int) -> None:
            clients = [httpx.Client(base_url=s.url, timeout=10) for s in servers]
            try:
                for n in range(INCREMENTS):
                    c = clients[(i + n) % 2]          # alternate between the two apiservers
                    for _ in range(MAX_TRIES):
                        if time.monotonic() > deadline:
                            errors.append(f"writer {i}: deadline passed at increment {n}")
                            return
                        got = c.get(PATH)
                        if got.status_code != 200:
                            errors.append(f"writer {i}: GET {got.status_code} {got.text}")
                            return
                        obj = got.json()
                        ann = obj["metadata"]["annotations"]
                        ann["counter"] = str(int(ann["counter"]) + 1)
                        put = c.put(PATH, json=obj)      # carries the resourceVersion it read
                        if put.status_code == 200:
                            break
                        if put.status_code == 409:
                            assert put.json()["reason"] == "Conflict", put.text
                            conflicts[i] += 1
                            continue
                        errors.append(f"writer {i}: PUT {put.status_code} {put.text}")
                        return
                    else:
                        errors.append(f"writer {i}: increment {n} lost {MAX_TRIES} races in a row")
                        return
            except Exception as e:  # reported below
                errors.append(f"writer {i}: {e!r}")
            finally:
                for cl in clients:
                    cl.close()

        threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic() + 5))
        assert not any(t.is_alive() for t in threads), "writers still running after the deadline"
        assert errors == [], errors[:5]

        for s in servers:
            final = httpx.get(f"{s.url}{PATH}", timeout=10).json()
            assert final["metadata"]["annotations"]["counter"] == str(WRITERS * INCREMENTS)
        assert sum(conflicts) >= 1, "no 409 was ever seen: the writers did not race"
        # Annotations are metadata: no spec change, so generation stays put.
        assert final["metadata"]["generation"] == 1
    finally:
        for s in servers:
            s.stop()
