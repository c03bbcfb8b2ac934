"""Atomic assignment under real contention, and the constraints that back it up."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy import create_engine, insert
from sqlalchemy.exc import IntegrityError

from corral.domain.models import PCState, PoolSpec, Session, SessionState
from corral.errors import SessionLimitError
from corral.store import Store
from corral.store._tables import sessions

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T = TypeVar("T")


def _all_at_once(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run fn(0..n-1) on n threads released together by a barrier."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def _acquire(store: Store, session_id: str, key: str | None) -> tuple[Session, bool] | None:
    return store.acquire(
        "p",
        session_id=session_id,
        expires_at=NOW + timedelta(hours=1),
        idempotency_key=key,
        request_hash="h",
        now=NOW,
    )


def _assert_consistent(store: Store) -> None:
    """Every IN_USE PC names one ACTIVE session, which names it back."""
    active = {s.id: s for s in store.list_sessions(active_only=True)}
    in_use = store.list_pcs(state=PCState.IN_USE)
    assert len(in_use) == len(active)
    for pc in in_use:
        assert pc.session_id is not None
        assert active[pc.session_id].pc_id == pc.id


def test_fifty_acquires_ten_ready_pcs(store: Store, ready_pool: list[str]) -> None:
    results = _all_at_once(50, lambda i: _acquire(store, f"s{i:02d}", key=f"k{i}"))
    won = [r for r in results if r is not None]
    assert len(won) == 10
    assert all(created for _, created in won)
    assert sorted(s.pc_id for s, _ in won) == sorted(ready_pool)
    assert len(store.list_sessions(active_only=True)) == 10
    assert store.pc_counts("p")[PCState.IN_USE] == 10
    assert store.pc_counts("p")[PCState.READY] == 0
    _assert_consistent(store)


def test_twenty_retries_of_one_request_make_one_session(
    store: Store, ready_pool: list[str]
) -> None:
    results = _all_at_once(20, lambda i: _acquire(store, f"s{i:02d}", key="same"))
    assert all(r is not None for r in results)
    sessions_seen = {r[0].id for r in results if r is not None}
    assert len(sessions_seen) == 1
    assert sum(1 for r in results if r is not None and r[1]) == 1
    assert len(store.list_sessions()) == 1
    assert store.pc_counts("p")[PCState.IN_USE] == 1
    _assert_consistent(store)


def test_churn_never_lends_a_pc_twice(store: Store, ready_pool: list[str]) -> None:
    """Acquire, release and reset from many threads at once: the invariants hold throughout."""

    def worker(i: int) -> int:
        got = 0
        for j in range(5):
            r = _acquire(store, f"s{i:02d}-{j}", key=None)
            if r is None:
                continue
            got += 1
            session = r[0]
            store.release_session(session.id, reason="done", now=NOW)
            store.set_pc_state(session.pc_id, PCState.READY, expect=PCState.RESETTING)
        return got

    total = sum(_all_at_once(20, worker))
    assert total == len(store.list_sessions())
    assert store.list_sessions(active_only=True) == []
    assert store.pc_counts("p")[PCState.READY] == 10


def test_two_active_sessions_cannot_share_a_pc(store: Store, ready_pool: list[str]) -> None:
    got = _acquire(store, "s1", key=None)
    assert got is not None
    row = {
        "id": "intruder",
        "pool": "p",
        "pc_id": got[0].pc_id,
        "state": SessionState.ACTIVE.value,
        "request_hash": "h",
        "created_at": NOW,
        "expires_at": NOW,
        "last_activity": NOW,
    }
    engine = create_engine(store.url)
    try:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(sessions).values(**row))
        # A released session on the same PC is history, and allowed.
        with engine.begin() as conn:
            conn.execute(insert(sessions).values({**row, "state": SessionState.RELEASED.value}))
    finally:
        engine.dispose()


def test_one_agent_racing_for_a_pool_gets_only_its_limit(store: Store) -> None:
    """Issue 9, section 5: thirty acquires of one agent at once, ten READY PCs, a limit of three
    per agent: three sessions, the rest refused by name (SessionLimitError), seven PCs left for
    other agents; on PostgreSQL too, where acquires run truly in parallel."""
    store.create_pool(PoolSpec(name="p", image="minimal", max=10, max_sessions_per_agent=3))
    for i in range(10):
        store.add_pc("p", f"pc-{i:02d}", PCState.READY)

    def grab(i: int, owner: str = "a-greedy") -> str:
        try:
            got = store.acquire(
                "p",
                session_id=f"s{i:02d}",
                expires_at=NOW + timedelta(hours=1),
                idempotency_key=None,
                request_hash="h",
                now=NOW,
                owner=owner,
                limit_owner=True,
            )
        except SessionLimitError as exc:
            assert "max_sessions_per_agent 3" in exc.message and exc.hint
            return "limit"
        return "won" if got is not None else "none"

    results = _all_at_once(30, grab)
    assert results.count("won") == 3 and results.count("limit") == 27
    assert len(store.list_sessions(active_only=True, owner="a-greedy")) == 3
    assert store.pc_counts("p")[PCState.READY] == 7
    # another agent still gets a PC; a released session frees a place for the first one
    assert grab(90, owner="a-other") == "won"
    held = store.list_sessions(active_only=True, owner="a-greedy")
    store.release_session(held[0].id, reason="released", now=NOW, by="a-greedy")
    assert grab(91) == "won" and grab(92) == "limit"
    _assert_consistent(store)


def test_the_default_limit_is_half_the_pool(store: Store, ready_pool: list[str]) -> None:
    """Pool `p` has max 20 and no limit given: one agent gets ten sessions, never more."""
    assert store.get_pool("p").spec.max_sessions_per_agent == 10
    results = _all_at_once(
        12,
        lambda i: _limited_acquire(store, f"s{i:02d}"),
    )
    assert results.count("won") == 10 and results.count("limit") == 2


def _limited_acquire(store: Store, session_id: str) -> str:
    try:
        got = store.acquire(
            "p",
            session_id=session_id,
            expires_at=NOW + timedelta(hours=1),
            idempotency_key=None,
            request_hash="h",
            now=NOW,
            owner="a-1",
            limit_owner=True,
        )
    except SessionLimitError:
        return "limit"
    return "won" if got is not None else "none"
