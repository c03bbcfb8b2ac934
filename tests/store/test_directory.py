"""The directory in the store: sponsor rules applied atomically, keys, groups, version bumps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from corral.domain.identity import NO_SPONSOR, AgentKey, Risk, Role
from corral.errors import ConflictError, InvalidInputError, NotFoundError
from corral.store import Store

HASH = "$argon2id$v=19$fake"
TOTP = "JBSWY3DPEHPK3PXP"
JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}


def _key(kid: str, expires_at: datetime | None = None) -> AgentKey:
    return AgentKey(
        kid=kid, agent_id="", created_at=datetime.now(UTC), public_jwk=JWK, expires_at=expires_at
    )


@pytest.fixture
def alice(store: Store) -> str:
    return store.create_user("alice", roles={Role.SPONSOR}, email="alice@example.com").id


@pytest.fixture
def bob(store: Store) -> str:
    return store.create_user("bob", roles={Role.ADMIN}).id


def test_users_round_trip(store: Store, alice: str) -> None:
    user = store.get_user("alice")
    assert user.id == alice and user.roles == {Role.SPONSOR} and user.enabled
    assert user.email == "alice@example.com" and not user.totp_enabled
    assert store.get_user(alice) == user
    assert [u.name for u in store.list_users()] == ["alice"]
    with pytest.raises(ConflictError):
        store.create_user("alice")
    with pytest.raises(NotFoundError):
        store.get_user("nobody")
    with pytest.raises(InvalidInputError):
        store.create_user("Not A Name")


def test_user_secrets_stay_off_the_user(store: Store, alice: str) -> None:
    store.set_user_password("alice", HASH)
    store.set_user_totp("alice", TOTP, enabled=True)
    secrets = store.get_user_secrets("alice")
    assert secrets.password_hash == HASH
    assert secrets.totp_secret == TOTP and secrets.totp_enabled
    assert "argon2" not in repr(secrets) and "JBSW" not in repr(secrets)
    assert store.get_user("alice").totp_enabled


def test_agent_needs_a_sponsor_who_may_sponsor(store: Store, alice: str) -> None:
    with pytest.raises(InvalidInputError, match="at least one sponsor"):
        store.create_agent("bot", sponsors=[])
    store.create_user("carol")  # no role
    with pytest.raises(InvalidInputError, match="sponsor role"):
        store.create_agent("bot", sponsors=["carol"])
    with pytest.raises(NotFoundError):
        store.create_agent("bot", sponsors=["nobody"])
    store.set_user_enabled("alice", False)
    with pytest.raises(InvalidInputError, match="disabled"):
        store.create_agent("bot", sponsors=["alice"])
    assert store.list_agents() == []


def test_create_agent_with_groups_and_key(store: Store, alice: str, bob: str) -> None:
    store.create_group("ops", "operations")
    agent = store.create_agent("bot", sponsors=["alice", bob], groups=["ops"], key=_key("k1"))
    assert set(agent.sponsors) == {alice, bob} and agent.groups == ("ops",)
    assert agent.enabled and agent.risk is Risk.NONE and agent.client_id == agent.id
    assert store.get_agent(agent.id) == agent == store.get_agent("bot")
    [key] = store.list_agent_keys("bot")
    assert key.kid == "k1" and key.agent_id == agent.id and key.public_jwk == JWK
    with pytest.raises(ConflictError):
        store.create_agent("bot", sponsors=["alice"])
    with pytest.raises(NotFoundError):
        store.create_agent("bot2", sponsors=["alice"], groups=["nope"])
    assert [a.name for a in store.list_agents()] == ["bot"]


def test_private_keys_are_refused(store: Store, alice: str) -> None:
    private = AgentKey(
        kid="k", agent_id="", created_at=datetime.now(UTC), public_jwk={**JWK, "d": "x"}
    )
    with pytest.raises(InvalidInputError, match="private"):
        store.create_agent("bot", sponsors=["alice"], key=private)
    assert store.list_agents() == []  # nothing half-made


def test_removing_the_last_sponsor_disables(store: Store, alice: str, bob: str) -> None:
    store.create_agent("bot", sponsors=["alice", "bob"])
    agent = store.remove_sponsor("bot", "bob")
    assert agent.enabled and agent.sponsors == (alice,)
    agent = store.remove_sponsor("bot", "alice")
    assert not agent.enabled and agent.disabled_reason == NO_SPONSOR and agent.sponsors == ()
    with pytest.raises(ConflictError, match="no enabled sponsor"):
        store.set_agent_enabled("bot", True)
    store.add_sponsor("bot", "bob")
    assert store.set_agent_enabled("bot", True).enabled
    assert store.get_agent("bot").disabled_reason is None
    with pytest.raises(InvalidInputError, match="does not sponsor"):
        store.remove_sponsor("bot", "alice")
    with pytest.raises(ConflictError, match="already sponsors"):
        store.add_sponsor("bot", "bob")


def test_disabling_the_last_sponsor_disables_its_agents(store: Store, alice: str, bob: str) -> None:
    store.create_agent("solo", sponsors=["alice"])
    store.create_agent("shared", sponsors=["alice", "bob"])
    user, disabled = store.set_user_enabled("alice", False)
    assert not user.enabled
    assert [a.name for a in disabled] == ["solo"]
    assert store.get_agent("solo").disabled_reason == NO_SPONSOR
    assert store.get_agent("shared").enabled
    # bob goes too: "shared" now has no enabled sponsor left
    _, disabled = store.set_user_enabled("bob", False)
    assert [a.name for a in disabled] == ["shared"]
    # re-enabling a user does not silently re-enable agents
    store.set_user_enabled("alice", True)
    assert not store.get_agent("solo").enabled
    assert store.set_agent_enabled("solo", True).enabled


def test_removing_a_sponsor_whose_co_sponsor_is_disabled(
    store: Store, alice: str, bob: str
) -> None:
    store.create_agent("bot", sponsors=["alice", "bob"])
    store.set_user_enabled("bob", False)
    assert store.get_agent("bot").enabled  # alice still answers for it
    agent = store.remove_sponsor("bot", "alice")
    assert not agent.enabled and agent.disabled_reason == NO_SPONSOR


def test_admin_disable_keeps_its_reason(store: Store, alice: str) -> None:
    store.create_agent("bot", sponsors=["alice"])
    agent = store.set_agent_enabled("bot", False, reason="suspicious")
    assert agent.disabled_reason == "suspicious"
    assert store.set_agent_enabled("bot", False).disabled_reason == "disabled by an admin"


def test_risk(store: Store, alice: str) -> None:
    store.create_agent("bot", sponsors=["alice"])
    assert store.set_agent_risk("bot", Risk.HIGH).risk is Risk.HIGH
    assert store.get_agent("bot").risk is Risk.HIGH


def test_keys_revoke_and_rotate(store: Store, alice: str) -> None:
    store.create_agent("bot", sponsors=["alice"], key=_key("k1"))
    later = datetime.now(UTC) + timedelta(hours=1)
    new = store.rotate_agent_key("bot", _key("k2"), old_expires_at=later)
    assert new.kid == "k2" and new.expires_at is None
    k1, _ = store.list_agent_keys("bot")
    assert k1.expires_at == later and k1.usable(datetime.now(UTC))
    assert not k1.usable(later)
    revoked = store.revoke_agent_key("bot", "k1")
    assert revoked.revoked and not revoked.usable(datetime.now(UTC))
    with pytest.raises(NotFoundError):
        store.revoke_agent_key("bot", "k9")
    with pytest.raises(ConflictError):
        store.add_agent_key("bot", _key("k2"))
    store.add_agent_key("bot", _key("k3", later))
    assert [k.kid for k in store.list_agent_keys("bot")] == ["k1", "k2", "k3"]


def test_groups(store: Store, alice: str) -> None:
    store.create_group("ops")
    store.create_agent("bot", sponsors=["alice"])
    store.set_group_member("ops", "agent", "bot", present=True)
    store.set_group_member("ops", "agent", "bot", present=True)  # idempotent
    store.set_group_member("ops", "user", "alice", present=True)
    assert store.get_agent("bot").groups == ("ops",)
    assert store.get_user("alice").groups == ("ops",)
    assert store.group_members("ops") == (["alice"], ["bot"])
    store.set_group_member("ops", "agent", "bot", present=False)
    assert store.get_agent("bot").groups == ()
    with pytest.raises(ConflictError):
        store.create_group("ops")
    store.delete_group("ops")
    assert store.list_groups() == [] and store.get_user("alice").groups == ()
    with pytest.raises(NotFoundError):
        store.get_group("ops")


def test_every_access_change_bumps_the_version(store: Store, alice: str, bob: str) -> None:
    store.create_agent("bot", sponsors=["alice", "bob"], key=_key("k1"))
    changes: list[Callable[[], object]] = [
        lambda: store.set_agent_risk("bot", Risk.HIGH),
        lambda: store.set_agent_enabled("bot", False),
        lambda: store.remove_sponsor("bot", "bob"),
        lambda: store.add_sponsor("bot", "bob"),
        lambda: store.add_agent_key("bot", _key("k2")),
        lambda: store.revoke_agent_key("bot", "k1"),
        lambda: store.set_user_enabled("alice", False),
        lambda: store.create_group("g"),
        lambda: store.set_group_member("g", "agent", "bot", present=True),
    ]
    for change in changes:
        before = store.identity_version()
        change()
        assert store.identity_version() > before
    before = store.identity_version()
    store.list_agents()
    store.get_agent("bot")
    assert store.identity_version() == before  # reads never bump
    with pytest.raises(NotFoundError):
        store.set_agent_risk("nobody", Risk.LOW)
    assert store.identity_version() == before  # a failed change leaves no trace


def _at_once(calls: list[Callable[[], object]]) -> list[BaseException]:
    """Run the calls in threads released together; the errors they raised."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_sponsor_removals_leave_no_enabled_orphan(store: Store) -> None:
    """Two admins each remove a different sponsor at once: whoever goes last disables."""
    for name in ("s1", "s2"):
        store.create_user(name, roles={Role.SPONSOR})
    for round_ in range(5):
        agent = store.create_agent(f"bot{round_}", sponsors=["s1", "s2"])
        errors = _at_once(
            [
                partial(store.remove_sponsor, agent.id, "s1"),
                partial(store.remove_sponsor, agent.id, "s2"),
            ]
        )
        assert errors == []
        final = store.get_agent(agent.id)
        assert final.sponsors == () and not final.enabled
        assert final.disabled_reason == NO_SPONSOR


def test_concurrent_disable_and_removal_leave_no_enabled_orphan(store: Store) -> None:
    """One sponsor is disabled while the other is removed: the agent ends up disabled."""
    for name in ("s1", "s2"):
        store.create_user(name, roles={Role.SPONSOR})
    for round_ in range(5):
        agent = store.create_agent(f"bot{round_}", sponsors=["s1", "s2"])
        errors = _at_once(
            [
                lambda: store.set_user_enabled("s1", False),
                partial(store.remove_sponsor, agent.id, "s2"),
            ]
        )
        assert errors == []
        final = store.get_agent(agent.id)
        assert not final.enabled and final.disabled_reason == NO_SPONSOR
        store.set_user_enabled("s1", True)


def test_principal_status_reads_the_live_state_of_agents_and_users(
    store: Store, alice: str, bob: str
) -> None:
    """The per-request read (a direct DBAPI query on both databases) matches the directory."""
    agent = store.create_agent("bot", sponsors=[alice])
    status = store.principal_status(agent.id)
    assert status is not None and status.kind.value == "agent"
    assert status.enabled and status.risk is Risk.NONE and status.tokens_revoked_before is None
    store.set_agent_risk(agent.id, Risk.HIGH)
    store.set_agent_enabled(agent.id, False, reason="test")
    store.revoke_tokens(agent.id)
    status = store.principal_status(agent.id)
    assert status is not None and not status.enabled and status.risk is Risk.HIGH
    revoked = status.tokens_revoked_before
    assert revoked is not None and revoked.tzinfo is not None
    assert abs((datetime.now(UTC) - revoked).total_seconds()) < 60
    user = store.principal_status(bob)
    assert user is not None and user.kind.value == "user" and user.roles == {Role.ADMIN}
    assert store.principal_status("bot") is None  # by id only, never by name
    assert store.principal_status("nobody") is None
