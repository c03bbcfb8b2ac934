"""Replacing a user's roles in the store: the last admin stays, lost sponsors disable agents."""

from __future__ import annotations

import threading

import pytest

from corral.domain.identity import NO_SPONSOR, Role
from corral.errors import ConflictError, NotFoundError
from corral.store import Store


def test_roles_are_replaced_and_the_version_moves(store: Store) -> None:
    store.create_user("root", roles={Role.ADMIN})
    carol = store.create_user("carol", roles={Role.SPONSOR})
    before = store.identity_version()
    user, disabled = store.set_user_roles("carol", {Role.SECURITY_ADMIN, Role.SPONSOR})
    assert user.id == carol.id and user.roles == {Role.SECURITY_ADMIN, Role.SPONSOR}
    assert disabled == [] and store.get_user(carol.id).roles == user.roles
    assert store.identity_version() > before
    with pytest.raises(NotFoundError):
        store.set_user_roles("nobody", {Role.SPONSOR})


def test_the_last_enabled_admin_keeps_the_role(store: Store) -> None:
    store.create_user("root", roles={Role.ADMIN})
    with pytest.raises(ConflictError, match="last enabled admin"):
        store.set_user_roles("root", {Role.SPONSOR})
    assert store.get_user("root").roles == {Role.ADMIN}
    # a disabled admin does not count as the one that remains
    store.create_user("spare", roles={Role.ADMIN})
    store.set_user_enabled("spare", False)
    with pytest.raises(ConflictError):
        store.set_user_roles("root", set())
    store.set_user_enabled("spare", True)
    user, _ = store.set_user_roles("root", set())
    assert user.roles == frozenset()


def test_losing_the_sponsor_role_disables_agents_left_without_one(store: Store) -> None:
    store.create_user("root", roles={Role.ADMIN})
    store.create_user("alice", roles={Role.SPONSOR})
    store.create_user("bob", roles={Role.SPONSOR})
    store.create_agent("solo", sponsors=["alice"])
    store.create_agent("shared", sponsors=["alice", "bob"])
    _, disabled = store.set_user_roles("alice", {Role.SECURITY_ADMIN})
    assert [a.name for a in disabled] == ["solo"]
    solo, shared = store.get_agent("solo"), store.get_agent("shared")
    assert not solo.enabled and solo.disabled_reason == NO_SPONSOR
    assert shared.enabled


def test_two_admins_demoting_each_other_at_once_leave_one(store: Store) -> None:
    store.create_user("ann", roles={Role.ADMIN})
    store.create_user("ben", roles={Role.ADMIN})
    barrier = threading.Barrier(2)
    errors: list[Exception] = []

    def demote(name: str) -> None:
        barrier.wait()
        try:
            store.set_user_roles(name, {Role.SPONSOR})
        except ConflictError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=demote, args=(n,)) for n in ("ann", "ben")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admins = [u.name for u in store.list_users() if Role.ADMIN in u.roles]
    assert len(admins) == 1 and len(errors) == 1
