"""Fixtures for the pcd tests: a shared daemon, fresh daemons, clients, an event recorder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pcd_harness import Client, Daemon, Recorder


@pytest.fixture(scope="session")
def pcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The shared daemon most tests talk to."""
    daemon = Daemon(tmp_path_factory.mktemp("pcd"))
    yield daemon
    assert daemon.stop() == 0, daemon.log()


@pytest.fixture
def client(pcd: Daemon) -> Iterator[Client]:
    with pcd.client() as c:
        yield c


@pytest.fixture
def fresh_pcd(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon of its own, for tests that stop or break it."""
    daemon = Daemon(tmp_path)
    yield daemon
    daemon.stop()


@pytest.fixture
def recorder(pcd: Daemon, request: pytest.FixtureRequest) -> Iterator[Recorder]:
    rec = Recorder(pcd, f"recorder-{request.node.name}")
    yield rec
    rec.close()
