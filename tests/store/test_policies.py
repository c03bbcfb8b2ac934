"""Policy rows on SQLite and PostgreSQL: versioned, logged changes; assignments; approvals;
session controls."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from corral.domain.identity import Role
from corral.domain.models import PoolSpec
from corral.domain.policy import Approval, ApprovalState, ChangeKind
from corral.errors import ConflictError, NotFoundError
from corral.store import Store

PERMIT = "permit (principal, action, resource);"


def test_policy_changes_are_versioned_and_logged(store: Store) -> None:
    assert store.access_versions()[1] == 0 == store.policy_version()
    store.add_policy("one", PERMIT, actor="u-alice")
    assert store.policy_version() == 1
    with pytest.raises(ConflictError, match="already exists"):
        store.add_policy("one", PERMIT, actor="u-alice")
    store.add_policy("one", "forbid (principal, action, resource);", actor="u-bob", replace=True)
    store.set_policy_enabled("one", False, actor="u-bob")
    store.set_policy_enabled("one", False, actor="u-bob")  # no change, no version
    assert store.get_policy("one").enabled is False
    removed = store.remove_policy("one", actor="u-alice")
    assert removed.text.startswith("forbid")
    with pytest.raises(NotFoundError, match="no policy named 'one'"):
        store.get_policy("one")
    with pytest.raises(NotFoundError):
        store.remove_policy("one", actor="u-alice")
    changes = store.policy_changes()
    assert [(c.version, c.kind, c.subject, c.actor) for c in changes] == [
        (1, ChangeKind.ADD, "one", "u-alice"),
        (2, ChangeKind.REPLACE, "one", "u-bob"),
        (3, ChangeKind.DISABLE, "one", "u-bob"),
        (4, ChangeKind.REMOVE, "one", "u-alice"),
    ]
    assert changes[0].text == PERMIT and changes[3].text is None
    assert store.policy_version() == 4
    assert [c.version for c in store.policy_changes(since=2)] == [3, 4]


def test_seed_runs_once_ever(store: Store) -> None:
    defaults = [("a", PERMIT), ("b", PERMIT)]
    assert store.seed_policies(defaults, actor="system") is True
    assert [p.name for p in store.list_policies()] == ["a", "b"]
    store.remove_policy("a", actor="u-alice")
    assert store.seed_policies(defaults, actor="system") is False
    assert [p.name for p in store.list_policies()] == ["b"]
    assert [c.kind for c in store.policy_changes()] == [
        ChangeKind.SEED,
        ChangeKind.SEED,
        ChangeKind.REMOVE,
    ]


def test_concurrent_seeds_install_once(store: Store) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def seed() -> None:
        barrier.wait()
        results.append(store.seed_policies([("a", PERMIT)], actor="system"))

    threads = [threading.Thread(target=seed) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert len(store.policy_changes()) == 1


def test_directory_change_moves_the_directory_version(store: Store) -> None:
    before = store.access_versions()
    store.create_user("alice", roles=[Role.SPONSOR])
    after = store.access_versions()
    assert after[0] > before[0] and after[1] == before[1]


def test_pool_assignments(store: Store) -> None:
    store.create_pool(PoolSpec(name="gpu", image="minimal"))
    store.create_user("sam", roles=[Role.SPONSOR])
    agent = store.create_agent("bot", sponsors=["sam"])
    store.create_group("team")
    assert store.assign_pool("gpu", "agent", "bot", actor="u-alice") is True
    assert store.assign_pool("gpu", "agent", agent.id, actor="u-alice") is False  # by id too
    assert store.assign_pool("gpu", "group", "team", actor="u-alice") is True
    found = store.pool_assignments("gpu")
    assert [(a.agent, a.group) for a in found] == [("bot", None), (None, "team")]
    assert store.pool_assignments("other") == []
    with pytest.raises(NotFoundError, match="no pool"):
        store.assign_pool("nope", "agent", "bot", actor="u-alice")
    with pytest.raises(NotFoundError, match="no agent"):
        store.assign_pool("gpu", "agent", "nobody", actor="u-alice")
    with pytest.raises(NotFoundError, match="no group"):
        store.assign_pool("gpu", "group", "nobody", actor="u-alice")
    assert store.unassign_pool("gpu", "agent", "bot", actor="u-bob") is True
    assert store.unassign_pool("gpu", "agent", "bot", actor="u-bob") is False
    kinds = [(c.kind, c.subject, c.actor) for c in store.policy_changes()]
    assert kinds == [
        (ChangeKind.ASSIGN, "pool/gpu agent/bot", "u-alice"),
        (ChangeKind.ASSIGN, "pool/gpu group/team", "u-alice"),
        (ChangeKind.UNASSIGN, "pool/gpu agent/bot", "u-bob"),
    ]
    store.delete_group("team")  # assignments go with the group
    assert store.pool_assignments() == []


def _approval(agent_id: str, now: datetime, ident: str = "ap-1", digest: str = "d1") -> Approval:
    return Approval(
        id=ident,
        agent_id=agent_id,
        action="run_command",
        resource='PC::"pc-1"',
        digest=digest,
        detail={"program": "curl"},
        state=ApprovalState.PENDING,
        requested_at=now,
        expires_at=now + timedelta(minutes=15),
        session_id="ses-1",
        policies=("curl-needs-approval",),
        window_s=600,  # an answer stands 10 minutes
    )


def test_approval_lifecycle(store: Store) -> None:
    store.create_user("sam", roles=[Role.SPONSOR])
    agent = store.create_agent("bot", sponsors=["sam"])
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    store.create_approval(_approval(agent.id, now))
    found = store.approval_for(agent.id, "d1", now)
    assert found is not None and found.state is ApprovalState.PENDING
    assert found.detail == {"program": "curl"} and found.policies == ("curl-needs-approval",)
    assert store.approval_for(agent.id, "other", now) is None
    assert [a.id for a in store.list_approvals(state=ApprovalState.PENDING)] == ["ap-1"]
    assert store.list_approvals(agent_ids=["a-nobody"]) == []

    later = now + timedelta(minutes=5)
    approved = store.decide_approval("ap-1", approve=True, by="u-sam", now=later)
    assert approved.state is ApprovalState.APPROVED and approved.decided_by == "u-sam"
    assert approved.expires_at == later + timedelta(minutes=10)
    with pytest.raises(ConflictError, match="already approved"):
        store.decide_approval("ap-1", approve=False, by="u-sam", now=later)
    assert store.approval_for(agent.id, "d1", later + timedelta(minutes=9)) is not None
    assert store.approval_for(agent.id, "d1", later + timedelta(minutes=10)) is None
    assert store.expire_approvals(later + timedelta(minutes=10)) == 1
    assert store.get_approval("ap-1").state is ApprovalState.EXPIRED
    with pytest.raises(NotFoundError):
        store.get_approval("ap-nope")


def test_an_approval_is_used_once_by_default(store: Store) -> None:
    """Single use: the first identical request spends it (a conditional update, so two racing
    requests do not both get the last use); then it no longer counts and the next one asks
    again. With `max_uses` None (a policy's window), any number within the window."""
    store.create_user("sam", roles=[Role.SPONSOR])
    agent = store.create_agent("bot", sponsors=["sam"])
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    store.create_approval(_approval(agent.id, now))
    assert not store.use_approval("ap-1", now)  # pending: nothing to use
    store.decide_approval("ap-1", approve=True, by="u-sam", now=now)
    assert store.use_approval("ap-1", now)
    assert not store.use_approval("ap-1", now)
    used = store.get_approval("ap-1")
    assert used.uses == 1 and used.max_uses == 1 and used.used_up
    assert store.approval_for(agent.id, "d1", now) is None

    window = replace(_approval(agent.id, now, "ap-2", "d2"), max_uses=None)
    store.create_approval(window)
    store.decide_approval("ap-2", approve=True, by="u-sam", now=now)
    assert all(store.use_approval("ap-2", now) for _ in range(3))
    assert store.get_approval("ap-2").uses == 3
    assert not store.use_approval("ap-2", now + timedelta(minutes=10))  # the window is over


def test_pending_approval_expires_unanswered(store: Store) -> None:
    store.create_user("sam", roles=[Role.SPONSOR])
    agent = store.create_agent("bot", sponsors=["sam"])
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    store.create_approval(_approval(agent.id, now))
    too_late = now + timedelta(minutes=16)
    with pytest.raises(ConflictError, match="already expired"):
        store.decide_approval("ap-1", approve=True, by="u-sam", now=too_late)
    assert store.get_approval("ap-1").state is ApprovalState.EXPIRED


def test_session_controls_are_fixed(store: Store, ready_pool: list[str]) -> None:
    now = datetime.now(UTC)
    got = store.acquire(
        "p",
        session_id="ses-1",
        expires_at=now + timedelta(hours=1),
        idempotency_key=None,
        request_hash="h",
        now=now,
    )
    assert got is not None
    assert store.session_controls("ses-1") is None
    assert store.set_session_controls("ses-1", {"read_only": True}) == {"read_only": True}
    # fixed: a later call (an idempotent replay of the acquire) gets the first controls
    assert store.set_session_controls("ses-1", {"read_only": False}) == {"read_only": True}
    assert store.session_controls("ses-1") == {"read_only": True}
