"""``minictl rollout``'s pure parts: kubectl's status messages, revision lookup, target parsing."""

from __future__ import annotations

from typing import Any

import click
import pytest

from minictl.rollout import RolloutError, find_revision, parse_target, status_message

pytestmark = pytest.mark.timeout(10)


def dep(generation: int = 2, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "x", "generation": generation}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, **status}}


def rs(revision: str | None) -> dict[str, Any]:
    annotations = {} if revision is None else {"deployment.kubernetes.io/revision": revision}
    return {"metadata": {"name": f"x-{revision}", "annotations": annotations}}


def test_status_messages_follow_kubectl() -> None:
    assert status_message(dep(3))[0] == "Waiting for deployment spec update to be observed..."
    assert status_message(dep(updatedReplicas=1, replicas=3))[0] == \
        'Waiting for deployment "x" rollout to finish: 1 out of 3 new replicas have been updated...'
    assert status_message(dep(updatedReplicas=3, replicas=4))[0] == \
        'Waiting for deployment "x" rollout to finish: 1 old replicas are pending termination...'
    assert status_message(dep(updatedReplicas=3, replicas=3, availableReplicas=1))[0] == \
        'Waiting for deployment "x" rollout to finish: 1 of 3 updated replicas are available...'
    assert status_message(dep(updatedReplicas=3, replicas=3, availableReplicas=3)) == \
        ('deployment "x" successfully rolled out', True)
    stuck = dep(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}])
    with pytest.raises(RolloutError, match='deployment "x" exceeded its progress deadline'):
        status_message(stuck)


def test_find_revision_previous_and_specific() -> None:
    rss = [rs("1"), rs("3"), rs("2"), rs(None)]
    assert find_revision(dep(), rss, 0)["metadata"]["name"] == "x-2"
    assert find_revision(dep(), rss, 1)["metadata"]["name"] == "x-1"
    with pytest.raises(RolloutError, match="unable to find specified revision 7"):
        find_revision(dep(), rss, 7)
    with pytest.raises(RolloutError, match="no rollout history found"):
        find_revision(dep(), [rs("1")], 0)


def test_parse_target() -> None:
    assert parse_target(("deployment/web",))[1] == "web"
    assert parse_target(("deploy", "web"))[0].plural == "deployments"
    assert parse_target(("rs/web",), ("deployments", "replicasets"))[0].plural == "replicasets"
    with pytest.raises(click.UsageError, match='no rollout support for kind "Pod"'):
        parse_target(("pod/web",))
