"""`Store.transaction()`: one transaction across repositories, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from corral.domain.identity import Role
from corral.domain.models import PCState, PoolSpec, Session, SessionState
from corral.errors import ConflictError, NotFoundError
from corral.store import Store, UnitOfWork, UnitOfWorkError

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CONTROLS: dict[str, object] = {"allowed_hosts": ["example.org"]}


class Boom(Exception):
    """A failure after the writes, before the unit of work ends."""


def _acquire(uow: UnitOfWork, session_id: str, key: str | None = None) -> Session | None:
    got = uow.sessions.acquire(
        "p",
        session_id=session_id,
        expires_at=NOW + timedelta(hours=1),
        idempotency_key=key,
        request_hash="h",
        now=NOW,
        owner="agent-1",
    )
    return None if got is None else got[0]


def _assert_consistent(store: Store) -> None:
    """Every IN_USE PC names one ACTIVE session, which names it back."""
    active = {s.id: s for s in store.list_sessions(active_only=True)}
    in_use = store.list_pcs(state=PCState.IN_USE)
    assert len(in_use) == len(active)
    for pc in in_use:
        assert pc.session_id is not None
        assert active[pc.session_id].pc_id == pc.id


def test_commits_every_repository_together(store: Store) -> None:
    with store.transaction() as uow:
        uow.pools.create(PoolSpec(name="p", image="minimal"))
        uow.pcs.add("p", "pc-1", PCState.READY)
        uow.directory.create_user("alice", roles=[Role.ADMIN])
        # Reads inside see the unit of work's own uncommitted writes.
        assert [pc.id for pc in uow.pcs.list("p")] == ["pc-1"]
    assert store.get_pool("p").spec.image == "minimal"
    assert store.get_pc("pc-1").state is PCState.READY
    assert store.get_user("alice").roles == frozenset({Role.ADMIN})


def test_an_exception_rolls_every_write_back(store: Store) -> None:
    with pytest.raises(Boom), store.transaction() as uow:
        uow.pools.create(PoolSpec(name="p", image="minimal"))
        uow.pcs.add("p", "pc-1", PCState.READY)
        uow.directory.create_user("alice")
        raise Boom
    assert store.list_pools() == []
    assert store.list_pcs() == []
    with pytest.raises(NotFoundError):
        store.get_user("alice")


def test_acquire_controls_and_more_writes_commit_as_one(
    store: Store, ready_pool: list[str]
) -> None:
    with store.transaction() as uow:
        session = _acquire(uow, "s1")
        assert session is not None
        assert uow.policies.set_session_controls(session.id, CONTROLS) == CONTROLS
        uow.pcs.set_state(ready_pool[-1], PCState.QUARANTINED, detail="another write")
    assert store.get_session("s1").state is SessionState.ACTIVE
    assert store.session_controls("s1") == CONTROLS
    assert store.get_pc(ready_pool[-1]).state is PCState.QUARANTINED
    _assert_consistent(store)


def test_a_failure_after_acquire_leaves_no_session(store: Store, ready_pool: list[str]) -> None:
    """The unit of work the control plane needs for acquire + controls + (later) its audit
    record: anything failing after the acquire undoes the acquire too."""
    with pytest.raises(Boom), store.transaction() as uow:
        session = _acquire(uow, "s1")
        assert session is not None
        uow.policies.set_session_controls(session.id, CONTROLS)
        raise Boom
    assert store.list_sessions() == []
    assert store.session_controls("s1") is None
    assert {pc.state for pc in store.list_pcs()} == {PCState.READY}
    assert all(pc.session_id is None for pc in store.list_pcs())
    # The PC it had claimed is lent again at once.
    with store.transaction() as uow:
        assert _acquire(uow, "s2") is not None
    _assert_consistent(store)


def test_store_acquire_then_runs_in_the_acquire_transaction(
    store: Store, ready_pool: list[str]
) -> None:
    def fail(uow: UnitOfWork, session: Session) -> None:
        uow.pcs.set_state(ready_pool[-1], PCState.QUARANTINED)
        raise Boom(session.id)

    def acquire(
        session_id: str, then: Callable[[UnitOfWork, Session], None]
    ) -> tuple[Session, bool] | None:
        return store.acquire(
            "p",
            session_id=session_id,
            expires_at=NOW + timedelta(hours=1),
            idempotency_key=None,
            request_hash="h",
            now=NOW,
            controls=CONTROLS,
            then=then,
        )

    with pytest.raises(Boom):
        acquire("s1", fail)
    assert store.list_sessions() == []
    assert store.session_controls("s1") is None
    assert store.get_pc(ready_pool[-1]).state is PCState.READY

    seen: list[str] = []
    got = acquire("s2", lambda uow, session: seen.append(uow.sessions.get(session.id).id))
    assert got is not None and got[1]
    assert seen == ["s2"]
    assert store.session_controls("s2") == CONTROLS


def test_nested_units_of_work_are_refused(store: Store) -> None:
    store.create_pool(PoolSpec(name="p", image="minimal"))
    with store.transaction() as uow:
        uow.pcs.add("p", "pc-1", PCState.READY)
        with pytest.raises(UnitOfWorkError, match="already open"), store.transaction():
            pass
        with pytest.raises(UnitOfWorkError, match=r"uow\.pools"):
            store.get_pool("p")  # a Store method is a transaction of its own
        with pytest.raises(UnitOfWorkError, match="already open"):
            store.migrate()
        uow.pcs.add("p", "pc-2", PCState.READY)  # the outer one goes on unharmed
    assert [pc.id for pc in store.list_pcs()] == ["pc-1", "pc-2"]
    with store.transaction() as uow:  # and once it has ended, the next one opens
        assert uow.pools.get("p").spec.name == "p"


def test_another_thread_is_not_nested(store: Store) -> None:
    """One unit of work per thread: a worker thread has its own, even while ours is open."""
    store.create_pool(PoolSpec(name="p", image="minimal"))
    with store.transaction(write=False) as uow:
        assert uow.pools.get("p").spec.name == "p"
        with ThreadPoolExecutor(max_workers=1) as pool:
            assert pool.submit(store.get_pool, "p").result().spec.name == "p"


def test_a_read_only_unit_of_work_refuses_writes(store: Store) -> None:
    store.create_pool(PoolSpec(name="p", image="minimal"))
    with store.transaction(write=False) as uow:
        assert not uow.writable
        with pytest.raises(UnitOfWorkError, match="read-only"):
            uow.pcs.add("p", "pc-1", PCState.READY)
        with pytest.raises(UnitOfWorkError, match="read-only"):
            uow.pools.set_deleting("p")
    assert store.list_pcs() == []
    assert not store.get_pool("p").deleting


def test_an_expected_conflict_leaves_the_unit_of_work_usable(store: Store) -> None:
    """A name taken is answered with a ConflictError and undone alone (a savepoint, where the
    unique constraint is what refuses it): on PostgreSQL, too, the failed statement does not
    abort the transaction, so the caller may answer it and go on."""
    store.create_pool(PoolSpec(name="p", image="minimal"))
    store.create_user("alice")
    with store.transaction() as uow:
        uow.pcs.add("p", "pc-1", PCState.READY)
        with pytest.raises(ConflictError, match="already exists"):
            uow.pools.create(PoolSpec(name="p", image="minimal"))
        with pytest.raises(ConflictError, match="already exists"):
            uow.directory.create_user("alice")
        uow.pcs.add("p", "pc-2", PCState.READY)
        with pytest.raises(ConflictError, match="already recorded"):
            uow.pcs.add("p", "pc-2", PCState.READY)
        # This one is the database's unique constraint itself (no look-up first): the failed
        # INSERT is rolled back to its savepoint, and the transaction stays good.
        assert uow.events.remember_inbound("iss", "jti-1")
        assert not uow.events.remember_inbound("iss", "jti-1")
        uow.pcs.add("p", "pc-3", PCState.READY)
    assert [pc.id for pc in store.list_pcs()] == ["pc-1", "pc-2", "pc-3"]


def test_racing_acquirers_with_failures_stay_consistent(
    store: Store, ready_pool: list[str]
) -> None:
    """Twelve units of work race for the PCs, each recording controls after its acquire; every
    third one then fails. Committed sessions all have their controls, failed ones left nothing,
    and no PC is lent twice."""
    n = 12
    barrier = threading.Barrier(n)

    def run(i: int) -> Session | None:
        barrier.wait()
        try:
            with store.transaction() as uow:
                session = _acquire(uow, f"s{i:02d}")
                if session is not None:
                    uow.policies.set_session_controls(session.id, {"n": i})
                if i % 3 == 0:
                    raise Boom
                return session
        except Boom:
            return None

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(run, range(n)))
    won = {s.id for s in results if s is not None}
    assert 1 <= len(won) <= len(ready_pool)
    assert {s.id for s in store.list_sessions()} == won
    for session_id in won:
        assert store.session_controls(session_id) == {"n": int(session_id[1:])}
    assert not any(f"s{i:02d}" in won for i in range(0, n, 3))
    assert len({store.get_session(s).pc_id for s in won}) == len(won)
    _assert_consistent(store)


def test_two_acquirers_of_one_key_get_one_session(store: Store, ready_pool: list[str]) -> None:
    """The advisory lock (PostgreSQL) or the write lock (SQLite) makes a retry racing the first
    request wait for its commit and answer with its session."""
    barrier = threading.Barrier(2)

    def run(i: int) -> tuple[Session, bool] | None:
        barrier.wait()
        with store.transaction() as uow:
            got = uow.sessions.acquire(
                "p",
                session_id=f"s{i}",
                expires_at=NOW + timedelta(hours=1),
                idempotency_key="key",
                request_hash="h",
                now=NOW,
                controls=CONTROLS,
            )
            return got

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, range(2)))
    assert all(r is not None for r in results)
    answers = [r for r in results if r is not None]
    assert {s.id for s, _ in answers} == {answers[0][0].id}
    assert sorted(created for _, created in answers) == [False, True]
    assert len(store.list_sessions()) == 1
    assert store.session_controls(answers[0][0].id) == CONTROLS
    _assert_consistent(store)
