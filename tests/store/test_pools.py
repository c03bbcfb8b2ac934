"""Pool rows: create, read, list, drain and delete, with the errors a user sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral.domain.models import PCState, PoolSpec
from corral.errors import ConflictError, InvalidInputError, NotFoundError
from corral.store import Store

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _acquire(store: Store, session_id: str, key: str | None = None) -> object:
    return store.acquire(
        "p",
        session_id=session_id,
        expires_at=NOW + timedelta(hours=1),
        idempotency_key=key,
        request_hash="h",
        now=NOW,
    )


def test_create_get_list(store: Store) -> None:
    spec = PoolSpec(name="web", image="desktop", region="eu", size="large", warm=1, max=3)
    pool = store.create_pool(spec)
    assert pool.spec == spec
    assert not pool.deleting
    assert pool.created_at.tzinfo is UTC
    assert store.get_pool("web") == pool
    store.create_pool(PoolSpec(name="api", image="minimal"))
    assert [p.name for p in store.list_pools()] == ["api", "web"]


def test_duplicate_name_conflicts(store: Store) -> None:
    store.create_pool(PoolSpec(name="web", image="minimal"))
    with pytest.raises(ConflictError, match="already exists"):
        store.create_pool(PoolSpec(name="web", image="desktop"))


def test_invalid_spec_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInputError):
        store.create_pool(PoolSpec(name="Bad Name", image="minimal"))
    assert store.list_pools() == []


def test_unknown_pool_says_how_to_list(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no pool named 'nope'") as err:
        store.get_pool("nope")
    assert err.value.hint is not None
    assert "corral pool list" in err.value.hint
    for call in (
        lambda: store.set_pool_deleting("nope"),
        lambda: store.delete_pool("nope"),
        lambda: store.pc_counts("nope"),
        lambda: store.add_pc("nope", "pc-1"),
    ):
        with pytest.raises(NotFoundError, match="no pool named"):
            call()


def test_deleting_pool_lends_no_pc(store: Store) -> None:
    store.create_pool(PoolSpec(name="p", image="minimal"))
    store.add_pc("p", "pc-1", PCState.READY)
    pool = store.set_pool_deleting("p")
    assert pool.deleting
    assert store.set_pool_deleting("p").deleting  # idempotent
    with pytest.raises(ConflictError, match="being deleted"):
        _acquire(store, "s1")


def test_delete_only_once_empty(store: Store) -> None:
    store.create_pool(PoolSpec(name="p", image="minimal"))
    store.add_pc("p", "pc-1", PCState.READY)
    assert _acquire(store, "s1", key="k") is not None
    with pytest.raises(ConflictError, match="PC"):
        store.delete_pool("p")
    # The PC went away (destroyed by the runtime) but its session is still active.
    store.delete_pc("pc-1")
    with pytest.raises(ConflictError, match="active session"):
        store.delete_pool("p")
    assert store.release_session("s1", reason="drain", now=NOW) is not None
    store.delete_pool("p")
    with pytest.raises(NotFoundError):
        store.get_pool("p")
    assert store.list_sessions(pool="p") == []  # released sessions go with the pool
    # A new pool of the same name starts clean: the old idempotency key is free again.
    store.create_pool(PoolSpec(name="p", image="minimal"))
    store.add_pc("p", "pc-2", PCState.READY)
    result = _acquire(store, "s2", key="k")
    assert result is not None
