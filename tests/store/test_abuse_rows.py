"""The rows issue 9's identity hardening reads: which bearer pools an agent is assigned to,
and console logouts that outlive the process (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from corral.domain.models import PoolSpec
from corral.identity.directory import Directory
from corral.store import Store


def test_bearer_pools_of_an_agent_directly_or_through_a_group(store: Store) -> None:
    directory = Directory(store)
    directory.create_user("alice", roles=["sponsor"])
    bot = directory.create_agent("bot", sponsors=["alice"])["agent_id"]
    other = directory.create_agent("other", sponsors=["alice"])["agent_id"]
    store.create_pool(PoolSpec(name="open", image="minimal", warm=0, allow_bearer=True))
    store.create_pool(PoolSpec(name="open2", image="minimal", warm=0, allow_bearer=True))
    store.create_pool(PoolSpec(name="closed", image="minimal", warm=0))
    assert store.bearer_pools_of_agent(bot) == []
    store.assign_pool("closed", "agent", bot, actor="t")
    assert store.bearer_pools_of_agent(bot) == []  # assigned, but not a bearer pool
    store.assign_pool("open", "agent", bot, actor="t")
    group = directory.create_group("g")
    directory.add_to_group(group.name, "agent", bot)
    store.assign_pool("open2", "group", group.name, actor="t")
    assert store.bearer_pools_of_agent(bot) == ["open", "open2"]
    assert store.bearer_pools_of_agent(other) == []
    store.set_pool_deleting("open")
    assert store.bearer_pools_of_agent(bot) == ["open2"]


def test_console_logouts_are_kept_until_they_expire(store: Store) -> None:
    now = datetime.now(UTC)
    store.end_console_session("t-live", "u-1", now + timedelta(hours=1))
    store.end_console_session("t-live", "u-1", now + timedelta(hours=1))  # again: no-op
    store.end_console_session("t-gone", "u-1", now - timedelta(seconds=1))
    assert [t for t, _ in store.live_console_logouts()] == ["t-live"]
    store.end_console_session("t-other", "u-2", now + timedelta(hours=2))  # prunes t-gone
    assert sorted(t for t, _ in store.live_console_logouts()) == ["t-live", "t-other"]
