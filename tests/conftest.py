"""Fixtures shared by every test tier: a real etcd and a real apiserver, each on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from minik8s.testing import ApiserverProcess, EtcdProcess


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdProcess]:
    """One real etcd for the whole session. Tests keep to their own key prefixes or namespaces."""
    with EtcdProcess() as proc:
        yield proc


@pytest.fixture()
def fresh_etcd() -> Iterator[EtcdProcess]:
    """A real etcd of this test's own (for tests that restart, compact or count keys)."""
    with EtcdProcess() as proc:
        yield proc


@pytest.fixture(scope="session")
def apiserver(etcd: EtcdProcess) -> Iterator[ApiserverProcess]:
    """A real apiserver on the session etcd; yields the process (``.url``)."""
    with ApiserverProcess(etcd.endpoint, extra_args=["--compaction-interval", "0"]) as proc:
        yield proc


@pytest.fixture(scope="module")
def cluster() -> Iterator[ApiserverProcess]:
    """A real etcd and apiserver of this test module's own (controllers, the scheduler and rollouts write
    many objects; a module of their own keeps other modules' objects out of their informers)."""
    with EtcdProcess() as etcd, ApiserverProcess(etcd.endpoint, extra_args=["--compaction-interval", "0"]) as api:
        yield api
