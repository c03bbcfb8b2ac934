"""The ControlPlane's own logic, on a real store (SQLite) and a fake runtime.

The fake stands in for root-only containers so that ordering, cancellation, on-demand boots
and shutdown can be driven precisely; the real runtime is covered by tests/e2e.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.domain.access import Caller, CallerKind
from corral.domain.identity import Role
from corral.domain.models import PoolSpec
from corral.errors import ConflictError, UnavailableError
from corral.runtime.client import CommandResult
from corral.runtime.pcs import Health
from corral.service.control import ControlPlane
from corral.store import Store

ADMIN = Caller(CallerKind.USER, "u-test", frozenset({Role.ADMIN}))

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class _Info:
    id: str
    status: str = "ready"


class FakeClient:
    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime

    def run(
        self,
        argv: list[str] | None = None,
        *,
        shell: str | None = None,
        timeout_s: float = 30,
        **_: Any,
    ) -> CommandResult:
        rt = self.runtime
        with rt.lock:
            rt.in_flight += 1
            rt.max_in_flight = max(rt.max_in_flight, rt.in_flight)
        try:
            line = shell if shell is not None else " ".join(argv or [])
            name, _sep, delay = line.partition(":")
            time.sleep(float(delay or 0))
            rt.ran.append(name)
        finally:
            with rt.lock:
                rt.in_flight -= 1
        return CommandResult(0, name, "", False, False, False, 0.0)

    def close(self) -> None:
        pass


class FakeRuntime:
    def __init__(self, boot_s: float = 0.0) -> None:
        self.boot_s = boot_s
        self.alive: set[str] = set()
        self.ran: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self._ids = itertools.count()
        self.images = self

    def get(self, name: str) -> object:
        return name

    def boot(self, image: str, size: str = "small") -> _Info:
        time.sleep(self.boot_s)
        pc_id = f"pc-{next(self._ids):04d}"
        with self.lock:
            self.alive.add(pc_id)
        return _Info(pc_id)

    def reset(self, pc_id: str) -> _Info:
        return _Info(pc_id)

    def destroy(self, pc_id: str) -> None:
        with self.lock:
            self.alive.discard(pc_id)

    def health(self, pc_id: str) -> Health:
        return Health(True, True, True, "healthy")

    def list_pcs(self) -> list[_Info]:
        return [_Info(i) for i in sorted(self.alive)]

    def reconcile(self, boot_grace_s: float = 60.0) -> list[str]:
        return []

    def client(self, pc_id: str, timeout: float = 30.0) -> FakeClient:
        return FakeClient(self)


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, FakeRuntime]]:
    runtime = FakeRuntime()
    control = ControlPlane(Store(f"sqlite:///{tmp_path}/c.db"), runtime)  # type: ignore[arg-type]
    await control.start()
    manager = asyncio.create_task(control.run())
    yield control, runtime
    manager.cancel()
    with pytest.raises(asyncio.CancelledError):
        await manager
    await control.stop()


async def test_a_pool_with_no_warm_pcs_boots_one_for_a_waiting_acquire(
    plane: tuple[ControlPlane, FakeRuntime],
) -> None:
    control, runtime = plane
    await control.create_pool(PoolSpec("cold", "minimal", warm=0, max=2), principal=ADMIN)
    session = await control.acquire("cold", wait_s=10, principal=ADMIN)
    assert session.pc_id in runtime.alive


async def test_actions_run_one_at_a_time_in_arrival_order(
    plane: tuple[ControlPlane, FakeRuntime],
) -> None:
    control, runtime = plane
    await control.create_pool(PoolSpec("p", "minimal", warm=1, max=1), principal=ADMIN)
    sid = (await control.acquire("p", wait_s=10, principal=ADMIN)).id
    tasks = []
    for i in range(12):
        tasks.append(
            asyncio.create_task(
                control.act(sid, "run_command", {"command": f"a{i}:0.01"}, principal=ADMIN)
            )
        )
        await asyncio.sleep(0)  # each request arrives before the next
    await asyncio.gather(*tasks)
    assert runtime.ran == [f"a{i}" for i in range(12)]
    assert runtime.max_in_flight == 1


async def test_a_cancelled_action_still_blocks_the_next_until_it_is_done(
    plane: tuple[ControlPlane, FakeRuntime],
) -> None:
    control, runtime = plane
    await control.create_pool(PoolSpec("p", "minimal", warm=1, max=1), principal=ADMIN)
    sid = (await control.acquire("p", wait_s=10, principal=ADMIN)).id
    slow = asyncio.create_task(
        control.act(sid, "run_command", {"command": "slow:0.3"}, principal=ADMIN)
    )
    while runtime.in_flight == 0:
        await asyncio.sleep(0.005)
    slow.cancel()
    await control.act(sid, "run_command", {"command": "next:0"}, principal=ADMIN)
    assert runtime.ran == ["slow", "next"]
    assert runtime.max_in_flight == 1


async def test_long_actions_do_not_starve_acquires(
    plane: tuple[ControlPlane, FakeRuntime],
) -> None:
    control, runtime = plane
    await control.create_pool(PoolSpec("busy", "minimal", warm=10, max=10), principal=ADMIN)
    await control.create_pool(PoolSpec("other", "minimal", warm=1, max=1), principal=ADMIN)
    sessions = [await control.acquire("busy", wait_s=10, principal=ADMIN) for _ in range(10)]
    while control.get_pool("other", principal=ADMIN).counts["ready"] < 1:
        await asyncio.sleep(0.01)
    long = [
        asyncio.create_task(
            control.act(s.id, "run_command", {"command": "long:1.5"}, principal=ADMIN)
        )
        for s in sessions
    ]
    while runtime.in_flight < 10:
        await asyncio.sleep(0.01)
    got = await control.acquire("other", wait_s=10, principal=ADMIN)
    assert got.pool == "other"
    assert runtime.in_flight == 10  # all ten long actions were still running
    await asyncio.gather(*long)


async def test_same_key_on_another_pool_is_a_conflict(
    plane: tuple[ControlPlane, FakeRuntime],
) -> None:
    control, _ = plane
    await control.create_pool(PoolSpec("a", "minimal", warm=1, max=1), principal=ADMIN)
    await control.create_pool(PoolSpec("b", "minimal", warm=1, max=1), principal=ADMIN)
    await control.acquire("a", idempotency_key="k", wait_s=10, principal=ADMIN)
    with pytest.raises(ConflictError):
        await control.acquire("b", idempotency_key="k", wait_s=10, principal=ADMIN)


async def test_no_capacity_is_unavailable_with_retry_after(
    plane: tuple[ControlPlane, FakeRuntime],
) -> None:
    control, _ = plane
    await control.create_pool(PoolSpec("one", "minimal", warm=1, max=1), principal=ADMIN)
    await control.acquire("one", wait_s=10, principal=ADMIN)
    with pytest.raises(UnavailableError) as info:
        await control.acquire("one", wait_s=0.2, principal=ADMIN)
    assert info.value.retry_after_s > 0


async def test_stop_during_boots_leaves_no_pc_running(tmp_path: Path) -> None:
    runtime = FakeRuntime(boot_s=0.3)
    control = ControlPlane(Store(f"sqlite:///{tmp_path}/c.db"), runtime)  # type: ignore[arg-type]
    await control.start()
    manager = asyncio.create_task(control.run())
    await control.create_pool(PoolSpec("p", "minimal", warm=3, max=3), principal=ADMIN)
    await asyncio.sleep(0.1)  # boots are in flight now
    manager.cancel()
    with pytest.raises(asyncio.CancelledError):
        await manager
    await control.stop()
    assert runtime.alive == set()
