"""The ControlPlane's own logic, on a real store (SQLite) and a fake PC driver
(tests/support/fakes.py).

The fake stands in for root-only containers so that ordering, cancellation, on-demand boots
and shutdown can be driven precisely; the real runtime is covered by tests/e2e.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from corral.domain.access import Caller, CallerKind
from corral.domain.identity import Role
from corral.domain.models import PoolSpec
from corral.errors import ConflictError, UnavailableError
from corral.lifecycle.control import ControlPlane
from corral.lifecycle.sessions import ACTIVITY_GRANULARITY
from corral.store import Store
from tests.support.fakes import FakeDriver

ADMIN = Caller(CallerKind.USER, "u-test", frozenset({Role.ADMIN}))

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, FakeDriver]]:
    runtime = FakeDriver()
    control = ControlPlane(Store(f"sqlite:///{tmp_path}/c.db"), runtime)
    await control.start()
    manager = asyncio.create_task(control.run())
    yield control, runtime
    manager.cancel()
    with pytest.raises(asyncio.CancelledError):
        await manager
    await control.stop()


async def test_a_pool_with_no_warm_pcs_boots_one_for_a_waiting_acquire(
    plane: tuple[ControlPlane, FakeDriver],
) -> None:
    control, runtime = plane
    await control.create_pool(PoolSpec("cold", "minimal", warm=0, max=2), principal=ADMIN)
    session = await control.acquire("cold", wait_s=10, principal=ADMIN)
    assert session.pc_id in runtime.alive


async def test_actions_run_one_at_a_time_in_arrival_order(
    plane: tuple[ControlPlane, FakeDriver],
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
    plane: tuple[ControlPlane, FakeDriver],
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
    plane: tuple[ControlPlane, FakeDriver],
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
    plane: tuple[ControlPlane, FakeDriver],
) -> None:
    control, _ = plane
    await control.create_pool(PoolSpec("a", "minimal", warm=1, max=1), principal=ADMIN)
    await control.create_pool(PoolSpec("b", "minimal", warm=1, max=1), principal=ADMIN)
    await control.acquire("a", idempotency_key="k", wait_s=10, principal=ADMIN)
    with pytest.raises(ConflictError):
        await control.acquire("b", idempotency_key="k", wait_s=10, principal=ADMIN)


async def test_no_capacity_is_unavailable_with_retry_after(
    plane: tuple[ControlPlane, FakeDriver],
) -> None:
    control, _ = plane
    await control.create_pool(PoolSpec("one", "minimal", warm=1, max=1), principal=ADMIN)
    await control.acquire("one", wait_s=10, principal=ADMIN)
    with pytest.raises(UnavailableError) as info:
        await control.acquire("one", wait_s=0.2, principal=ADMIN)
    assert info.value.retry_after_s > 0


async def test_stop_during_boots_leaves_no_pc_running(tmp_path: Path) -> None:
    runtime = FakeDriver(boot_s=0.3)
    control = ControlPlane(Store(f"sqlite:///{tmp_path}/c.db"), runtime)
    await control.start()
    manager = asyncio.create_task(control.run())
    await control.create_pool(PoolSpec("p", "minimal", warm=3, max=3), principal=ADMIN)
    await asyncio.sleep(0.1)  # boots are in flight now
    manager.cancel()
    with pytest.raises(asyncio.CancelledError):
        await manager
    await control.stop()
    assert runtime.alive == set()


async def test_a_burst_of_actions_writes_activity_once_per_tick(
    plane: tuple[ControlPlane, FakeDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    control, _ = plane
    await control.create_pool(PoolSpec("p", "minimal", warm=1, max=1), principal=ADMIN)
    sid = (await control.acquire("p", wait_s=10, principal=ADMIN)).id
    acquired = control.store.get_session(sid).last_activity
    writes: list[datetime] = []
    touch = control.store.touch_session

    def counting_touch(session_id: str, now: datetime) -> None:
        writes.append(now)
        touch(session_id, now)

    clock = [acquired + ACTIVITY_GRANULARITY / 2]
    monkeypatch.setattr(control.store, "touch_session", counting_touch)
    monkeypatch.setattr("corral.lifecycle.sessions.utcnow", lambda: clock[0])
    for i in range(10):  # all within one tick of the acquire: no write
        await control.act(sid, "run_command", {"command": f"q{i}"}, principal=ADMIN)
    assert writes == []
    clock[0] = acquired + ACTIVITY_GRANULARITY * 2
    for i in range(10):  # a tick later: one write, then the stored mark is fresh again
        await control.act(sid, "run_command", {"command": f"r{i}"}, principal=ADMIN)
    assert writes == [clock[0]]
    assert control.store.get_session(sid).last_activity == clock[0]


async def test_an_action_longer_than_a_tick_counts_as_activity_until_it_ends(
    plane: tuple[ControlPlane, FakeDriver],
) -> None:
    control, _ = plane
    await control.create_pool(PoolSpec("p", "minimal", warm=1, max=1), principal=ADMIN)
    sid = (await control.acquire("p", wait_s=10, principal=ADMIN)).id
    seconds = ACTIVITY_GRANULARITY.total_seconds() * 1.5
    before = datetime.now(UTC)
    await control.act(sid, "run_command", {"command": f"long:{seconds}"}, principal=ADMIN)
    assert control.store.get_session(sid).last_activity >= before + timedelta(seconds=seconds)
