"""Who may read, contain and manage the directory: the pure decision, and the service using it."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.access.service import PolicyService
from corral.domain.access import SYSTEM, Caller, CallerKind
from corral.domain.identity import Role
from corral.errors import ConflictError, PermissionDeniedError
from corral.identity.directory import Directory
from corral.identity.directory_service import DirectoryService, Power
from corral.store import Store

ADMIN = Caller(CallerKind.USER, "u-admin", frozenset({Role.ADMIN}))
SECURITY = Caller(CallerKind.USER, "u-sec", frozenset({Role.SECURITY_ADMIN}))
SPONSOR = Caller(CallerKind.USER, "u-sponsor", frozenset({Role.SPONSOR}))
NOBODY = Caller(CallerKind.USER, "u-nobody")
AGENT = Caller(CallerKind.AGENT, "a-bot")
# an agent carrying a role it cannot have: roles count for users only
ODD_AGENT = Caller(CallerKind.AGENT, "a-odd", frozenset({Role.SECURITY_ADMIN}))
ADMIN_SESSION = Caller(CallerKind.USER, "u-admin", frozenset({Role.ADMIN}), session_id="s-1")

TOKEN_URL = "https://corral.example/v1/token"  # noqa: S105 (a URL)
ALL = (Power.READ, Power.CONTAIN, Power.MANAGE)


@pytest.fixture
def service(tmp_path: Path) -> DirectoryService:
    store = Store(f"sqlite:///{tmp_path}/d.db")
    store.migrate()
    policy = PolicyService(store)
    policy.start()  # the shipped policies
    return DirectoryService(Directory(store), token_endpoint=TOKEN_URL, policy=policy)


@pytest.mark.parametrize(
    ("caller", "powers"),
    [
        (ADMIN, ALL),
        (SYSTEM, ALL),
        (SECURITY, (Power.READ, Power.CONTAIN)),
        (SPONSOR, ()),
        (NOBODY, ()),
        (AGENT, ()),
        (ODD_AGENT, ()),
        (ADMIN_SESSION, ()),
        (None, ()),
    ],
)
def test_who_may_do_what_under_the_shipped_policies(
    service: DirectoryService, caller: Caller | None, powers: tuple[Power, ...]
) -> None:
    def may(power: Power) -> bool:
        try:
            service._require(caller, power, "x")
        except PermissionDeniedError:
            return False
        return True

    assert {p for p in ALL if may(p)} == set(powers)


def test_refusals_say_what_was_refused(service: DirectoryService) -> None:
    with pytest.raises(PermissionDeniedError, match=r"^creating a user is not allowed"):
        service._require(SECURITY, Power.MANAGE, "creating a user")
    assert service._require(SECURITY, Power.CONTAIN, "disabling an agent") is SECURITY


def test_a_policy_change_changes_who_may_manage_the_directory(service: DirectoryService) -> None:
    """The directory is decided by Cedar: a forbid added by an admin takes effect at once."""
    assert service._require(SECURITY, Power.CONTAIN, "revoking") is SECURITY
    service.policy.add_policy(
        "no-containment-by-security",
        'forbid (principal in Role::"security_admin", action == Action::"revoke_tokens",'
        " resource);",
        principal=ADMIN,
    )
    with pytest.raises(PermissionDeniedError):
        service._require(SECURITY, Power.CONTAIN, "revoking")


def test_the_service_checks_before_it_touches_anything(service: DirectoryService) -> None:
    with pytest.raises(PermissionDeniedError):
        service.create_user("eve", roles=["admin"], email=None, password=None, principal=SECURITY)
    assert service.directory.list_users() == []
    service.create_user("root", roles=["admin"], email=None, password=None, principal=ADMIN)
    service.create_user("alice", roles=["sponsor"], email=None, password=None, principal=ADMIN)
    view, cred = service.create_agent(
        "bot", sponsors=["alice"], groups=[], key_lifetime=None, principal=ADMIN
    )
    assert cred["token_endpoint"] == TOKEN_URL
    assert view.sponsors == ((service.directory.get_user("alice").id, "alice"),)
    assert view.keys is not None and [k.kid for k in view.keys] == [cred["key"]["kid"]]
    with pytest.raises(PermissionDeniedError):
        service.enable_agent("bot", principal=SECURITY)
    assert not service.disable_agent("bot", None, principal=SECURITY).agent.enabled


def test_the_last_admin_cannot_be_disabled_over_the_api(service: DirectoryService) -> None:
    service.create_user("root", roles=["admin"], email=None, password=None, principal=ADMIN)
    with pytest.raises(ConflictError, match="last enabled admin"):
        service.disable_user("root", principal=ADMIN)
    service.create_user("spare", roles=["admin"], email=None, password=None, principal=ADMIN)
    user, _ = service.disable_user("root", principal=SECURITY)
    assert not user.enabled
