"""Sessions: acquire (with idempotency), touch, release, eviction, and time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import StatementError

from corral.domain.models import PCState, PoolSpec, Session, SessionState
from corral.errors import ConflictError, NotFoundError
from corral.store import Store

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _acquire(
    store: Store,
    session_id: str,
    *,
    key: str | None = None,
    request_hash: str = "h",
    now: datetime = NOW,
    pool: str = "p",
) -> tuple[Session, bool] | None:
    return store.acquire(
        pool,
        session_id=session_id,
        expires_at=now + HOUR,
        idempotency_key=key,
        request_hash=request_hash,
        now=now,
    )


def test_acquire_binds_one_ready_pc(store: Store, ready_pool: list[str]) -> None:
    got = _acquire(store, "s1")
    assert got is not None
    session, created = got
    assert created
    assert session.state is SessionState.ACTIVE
    assert session.pc_id in ready_pool
    assert (session.created_at, session.last_activity, session.expires_at) == (
        NOW,
        NOW,
        NOW + HOUR,
    )
    assert store.get_session("s1") == session
    pc = store.get_pc(session.pc_id)
    assert (pc.state, pc.session_id) == (PCState.IN_USE, "s1")


def test_idempotent_retry_returns_the_same_session(store: Store, ready_pool: list[str]) -> None:
    first = _acquire(store, "s1", key="k1")
    again = _acquire(store, "s2", key="k1")
    assert first is not None
    assert again is not None
    assert again == (first[0], False)
    assert len(store.list_sessions()) == 1
    assert store.pc_counts("p")[PCState.IN_USE] == 1
    # Still answered after release, with the released session.
    store.release_session("s1", reason="done", now=NOW)
    late = _acquire(store, "s3", key="k1")
    assert late is not None
    assert late[0].id == "s1"
    assert late[0].state is SessionState.RELEASED
    assert not late[1]


def test_same_key_different_request_conflicts(store: Store, ready_pool: list[str]) -> None:
    assert _acquire(store, "s1", key="k1", request_hash="a") is not None
    with pytest.raises(ConflictError, match="idempotency key reused"):
        _acquire(store, "s2", key="k1", request_hash="b")


def test_a_key_reused_on_another_pool_is_a_conflict(store: Store, ready_pool: list[str]) -> None:
    """The caller hashes the pool into the request, so the same key on another pool is a
    different request: 409, and never a second PC."""
    store.create_pool(PoolSpec(name="q", image="minimal"))
    store.add_pc("q", "q-1", PCState.READY)
    a = _acquire(store, "s1", key="k", request_hash="pool-p")
    assert a is not None
    with pytest.raises(ConflictError):
        _acquire(store, "s2", key="k", pool="q", request_hash="pool-q")
    assert store.get_pc("q-1").state == PCState.READY


def test_no_ready_pc_gives_none(store: Store) -> None:
    store.create_pool(PoolSpec(name="p", image="minimal"))
    store.add_pc("p", "pc-1", PCState.BOOTING)
    assert _acquire(store, "s1") is None
    store.set_pc_state("pc-1", PCState.READY)
    assert _acquire(store, "s1") is not None
    assert _acquire(store, "s2") is None
    assert store.list_sessions(active_only=True)[0].id == "s1"


def test_unknown_pool(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no pool named 'nope'"):
        _acquire(store, "s1", pool="nope")


def test_release_is_idempotent_and_resets_the_pc(store: Store, ready_pool: list[str]) -> None:
    got = _acquire(store, "s1")
    assert got is not None
    later = NOW + timedelta(minutes=5)
    released = store.release_session("s1", reason="client", now=later)
    assert released is not None
    assert released.state is SessionState.RELEASED
    assert (released.released_at, released.release_reason) == (later, "client")
    pc = store.get_pc(got[0].pc_id)
    assert (pc.state, pc.session_id) == (PCState.RESETTING, None)
    assert store.release_session("s1", reason="again", now=later + HOUR) is None
    assert store.get_session("s1") == released
    with pytest.raises(NotFoundError):
        store.release_session("nope", reason="x", now=NOW)


def test_release_leaves_a_quarantined_pc_alone(store: Store, ready_pool: list[str]) -> None:
    got = _acquire(store, "s1")
    assert got is not None
    store.set_pc_state(got[0].pc_id, PCState.QUARANTINED, detail="unhealthy")
    assert store.release_session("s1", reason="pc failed", now=NOW) is not None
    assert store.get_pc(got[0].pc_id).state is PCState.QUARANTINED


def test_a_reset_pc_is_lent_again(store: Store) -> None:
    store.create_pool(PoolSpec(name="p", image="minimal"))
    store.add_pc("p", "pc-1", PCState.READY)
    assert _acquire(store, "s1") is not None
    store.release_session("s1", reason="done", now=NOW)
    assert store.set_pc_state("pc-1", PCState.READY, expect=PCState.RESETTING)
    got = _acquire(store, "s2")
    assert got is not None
    assert got[0].pc_id == "pc-1"


def test_list_sessions_filters(store: Store, ready_pool: list[str]) -> None:
    for i in range(3):
        _acquire(store, f"s{i}", now=NOW + timedelta(seconds=i))
    store.release_session("s1", reason="done", now=NOW)
    assert [s.id for s in store.list_sessions()] == ["s0", "s1", "s2"]
    assert [s.id for s in store.list_sessions(active_only=True)] == ["s0", "s2"]
    assert store.list_sessions(pool="other") == []


def test_touch_moves_last_activity_forward(store: Store, ready_pool: list[str]) -> None:
    _acquire(store, "s1")
    store.touch_session("s1", NOW + timedelta(minutes=10))
    store.touch_session("s1", NOW + timedelta(minutes=5))  # late and out of order: ignored
    assert store.get_session("s1").last_activity == NOW + timedelta(minutes=10)
    store.release_session("s1", reason="done", now=NOW)
    store.touch_session("s1", NOW + HOUR)  # released: no change, no error
    assert store.get_session("s1").last_activity == NOW + timedelta(minutes=10)
    with pytest.raises(NotFoundError):
        store.touch_session("nope", NOW)


def test_eviction_picks_idle_and_expired(store: Store) -> None:
    store.create_pool(PoolSpec(name="p", image="minimal", idle_timeout_s=600))
    for i in range(4):
        store.add_pc("p", f"pc-{i}", PCState.READY)
    for sid in ("busy", "idle", "old", "gone"):
        _acquire(store, sid)
    t = NOW + timedelta(minutes=30)
    store.touch_session("busy", t - timedelta(minutes=5))
    store.touch_session("old", t - timedelta(minutes=1))
    store.release_session("gone", reason="done", now=t)
    assert store.sessions_to_evict(t) == [(store.get_session("idle"), "idle")]
    at_expiry = NOW + HOUR
    store.touch_session("busy", at_expiry)
    store.touch_session("old", at_expiry)
    due = {s.id: why for s, why in store.sessions_to_evict(at_expiry)}
    assert due == {"busy": "max_lifetime", "idle": "max_lifetime", "old": "max_lifetime"}


def test_datetimes_come_back_aware_utc(store: Store, ready_pool: list[str]) -> None:
    tz = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2026, 1, 1, 17, 30, 0, 123456, tzinfo=tz)
    got = _acquire(store, "s1", now=local)
    assert got is not None
    session = store.get_session("s1")
    assert session.created_at.tzinfo is UTC
    assert session.created_at == datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_naive_datetimes_are_refused(store: Store, ready_pool: list[str]) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        _acquire(store, "s1", now=datetime(2026, 1, 1, 12, 0))


def test_reused_session_id_is_a_conflict(store: Store, ready_pool: list[str]) -> None:
    assert _acquire(store, "s1") is not None
    with pytest.raises(ConflictError, match="could not record session 's1'"):
        _acquire(store, "s1")
    assert store.pc_counts("p")[PCState.IN_USE] == 1


def test_a_new_sessions_controls_are_recorded_with_it(store: Store) -> None:
    """Controls go in with the session (one transaction); a replay keeps the first ones."""
    from datetime import UTC, datetime, timedelta

    from corral.domain.models import PCState, PoolSpec

    store.create_pool(PoolSpec(name="ctl", image="minimal", warm=0))
    store.add_pc("ctl", "pc-ctl", PCState.READY)
    now = datetime.now(UTC)
    first = {"read_only": True, "allowed_hosts": ["example.org"]}
    got = store.acquire(
        "ctl",
        session_id="s-ctl",
        expires_at=now + timedelta(hours=1),
        idempotency_key="k",
        request_hash="h",
        now=now,
        owner="a-1",
        controls=first,
    )
    assert got is not None and got[1] is True
    assert store.session_controls("s-ctl") == first
    replay = store.acquire(
        "ctl",
        session_id="s-other",
        expires_at=now + timedelta(hours=1),
        idempotency_key="k",
        request_hash="h",
        now=now,
        owner="a-1",
        controls={"read_only": False},
    )
    assert replay is not None and replay[0].id == "s-ctl" and replay[1] is False
    assert store.session_controls("s-ctl") == first
