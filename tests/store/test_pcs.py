"""PC rows: states, compare-and-set, counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral.domain.models import PCState, PoolSpec
from corral.errors import ConflictError, NotFoundError, PCNotFoundError
from corral.store import Store


@pytest.fixture
def pool(store: Store) -> str:
    store.create_pool(PoolSpec(name="p", image="minimal"))
    return "p"


def test_add_get_list(store: Store, pool: str) -> None:
    pc = store.add_pc(pool, "pc-1")
    assert pc.state is PCState.BOOTING
    assert pc.session_id is None
    assert pc.created_at.tzinfo is not None
    assert store.get_pc("pc-1") == pc
    store.add_pc(pool, "pc-2", PCState.READY)
    store.create_pool(PoolSpec(name="q", image="minimal"))
    store.add_pc("q", "pc-3", PCState.READY)
    assert [p.id for p in store.list_pcs()] == ["pc-1", "pc-2", "pc-3"]
    assert [p.id for p in store.list_pcs(pool="p")] == ["pc-1", "pc-2"]
    assert [p.id for p in store.list_pcs(state=PCState.READY)] == ["pc-2", "pc-3"]
    assert [p.id for p in store.list_pcs(pool="q", state=PCState.BOOTING)] == []


def test_duplicate_and_unknown(store: Store, pool: str) -> None:
    store.add_pc(pool, "pc-1")
    with pytest.raises(ConflictError):
        store.add_pc(pool, "pc-1")
    with pytest.raises(PCNotFoundError, match="pc-9"):
        store.get_pc("pc-9")
    with pytest.raises(NotFoundError):
        store.set_pc_state("pc-9", PCState.READY)
    with pytest.raises(NotFoundError):
        store.set_pc_state("pc-9", PCState.READY, expect=PCState.BOOTING)
    with pytest.raises(NotFoundError):
        store.delete_pc("pc-9")


def test_set_state_and_compare_and_set(store: Store, pool: str) -> None:
    store.add_pc(pool, "pc-1")
    assert store.set_pc_state("pc-1", PCState.READY, expect=PCState.BOOTING)
    assert store.get_pc("pc-1").state is PCState.READY
    # The state is no longer BOOTING: no change.
    assert not store.set_pc_state("pc-1", PCState.QUARANTINED, expect=PCState.BOOTING)
    assert store.get_pc("pc-1").state is PCState.READY
    assert store.set_pc_state("pc-1", PCState.QUARANTINED, detail="health check failed")
    pc = store.get_pc("pc-1")
    assert (pc.state, pc.detail) == (PCState.QUARANTINED, "health check failed")


def test_leaving_in_use_unbinds_the_session(store: Store, ready_pool: list[str]) -> None:
    now = datetime.now(UTC)
    got = store.acquire(
        "p",
        session_id="s1",
        expires_at=now + timedelta(hours=1),
        idempotency_key=None,
        request_hash="h",
        now=now,
    )
    assert got is not None
    pc_id = got[0].pc_id
    assert store.get_pc(pc_id).session_id == "s1"
    assert store.set_pc_state(pc_id, PCState.QUARANTINED, expect=PCState.IN_USE)
    assert store.get_pc(pc_id).session_id is None


def test_delete_and_counts(store: Store, pool: str) -> None:
    store.add_pc(pool, "pc-1", PCState.READY)
    store.add_pc(pool, "pc-2", PCState.READY)
    store.add_pc(pool, "pc-3")
    counts = store.pc_counts(pool)
    assert set(counts) == set(PCState)
    assert counts[PCState.READY] == 2
    assert counts[PCState.BOOTING] == 1
    assert counts[PCState.IN_USE] == 0
    store.delete_pc("pc-1")
    assert store.pc_counts(pool)[PCState.READY] == 1
    with pytest.raises(PCNotFoundError):
        store.get_pc("pc-1")
