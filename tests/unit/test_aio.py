"""The pool manager under races. A loop waiting on an event with a timeout stops when
cancelled, even when the event is set at the same moment (CPython 3.11's `asyncio.wait_for`
loses that cancellation; CI hung on it); a boot that ends while the manager counts is counted
once (CI saw a pool boot past its max)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path

import pytest

from corral.aio import wait_event
from corral.lifecycle.manager import PoolManager
from corral.store import Store
from tests.support.fakes import FakeDriver

pytestmark = pytest.mark.anyio


async def _old_wait(event: asyncio.Event, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=timeout)
    return event.is_set()


async def _cancel_as_set(
    wait: Callable[[asyncio.Event, float], Coroutine[None, None, bool]],
) -> bool:
    """True if the cancellation reached the waiting task."""
    event = asyncio.Event()
    task: asyncio.Task[bool] = asyncio.create_task(wait(event, 10))
    await asyncio.sleep(0)  # the task is waiting now
    event.set()
    task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(task), 5)
    except asyncio.CancelledError:
        return True
    return False


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_wait_event_answers_set_or_timed_out() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 10) is True


async def test_a_cancellation_as_the_event_is_set_is_not_lost() -> None:
    assert await _cancel_as_set(wait_event)
    if sys.version_info < (3, 12):  # the bug this guards against is real here
        assert not await _cancel_as_set(_old_wait)


async def test_the_pool_manager_stops_when_cancelled_as_it_is_woken(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/m.db")
    store.migrate()
    manager = PoolManager(store, FakeDriver())
    for _ in range(20):  # each round cancels it at the moment it is woken
        task = asyncio.create_task(manager.run())
        await asyncio.sleep(0.02)
        manager.wake()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 5)
    await manager.stop(destroy_pcs=False)


async def test_a_boot_ending_while_the_manager_counts_is_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race CI found: a boot recorded between the manager's read of the stored PCs and
    its read of the boots in flight was in neither, so the manager booted past `max`."""
    import threading

    from corral.domain.models import PoolSpec

    store = Store(f"sqlite:///{tmp_path}/r.db")
    store.migrate()
    store.create_pool(PoolSpec("p", "minimal", warm=1, max=1))
    manager = PoolManager(store, FakeDriver())
    manager._booting["p"] = 1  # one boot in flight
    real = store.pc_counts
    ended: list[threading.Thread] = []

    def counts_while_the_boot_ends(pool: str) -> object:
        got = real(pool)
        boot = threading.Thread(target=manager._record_booted, args=("p", "pc-1"))
        boot.start()
        boot.join(0.3)  # it ends now, unless the manager's read holds it off
        ended.append(boot)
        return got

    monkeypatch.setattr(store, "pc_counts", counts_while_the_boot_ends)
    await manager._manage(store.get_pool("p"), check_health=False)
    ended[0].join(5)
    assert manager._booting["p"] == 0  # no second boot for a pool of max 1
    assert [pc.id for pc in store.list_pcs("p")] == ["pc-1"]
    await manager.stop(destroy_pcs=False)
