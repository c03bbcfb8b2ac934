"""The directory's records and rules: users, agents, sponsors, groups, agent keys.

Pure (no I/O): the store applies these decisions inside its transactions, so the rules hold the
same way for the CLI, REST and any later adapter. An agent is never a user; every agent answers to
at least one enabled human sponsor, and loses access the moment it has none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from corral.errors import ConflictError, InvalidInputError

__all__ = [
    "NO_SPONSOR",
    "Agent",
    "AgentKey",
    "Group",
    "Risk",
    "Role",
    "User",
    "UserSecrets",
    "check_admin_remains",
    "check_can_enable",
    "check_new_agent_sponsors",
    "check_public_jwk",
    "check_sponsor",
    "parse_risk",
    "parse_roles",
    "reconcile_sponsorship",
    "remove_sponsor",
    "risk_rank",
    "validate_email",
    "validate_name",
]

NO_SPONSOR = "no sponsor"

_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,62}$")
# Ids look like `a-` + 16 hex digits; a name of that shape could be mistaken for an id.
_ID_SHAPE = re.compile(r"^[a-z]-[0-9a-f]{16}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Role(StrEnum):
    ADMIN = "admin"
    SECURITY_ADMIN = "security_admin"
    SPONSOR = "sponsor"


class Risk(StrEnum):
    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


_RISK_ORDER = tuple(Risk)


def risk_rank(risk: Risk) -> int:
    """Order of the levels, none < low < medium < high (raising vs lowering)."""
    return _RISK_ORDER.index(risk)


_SPONSOR_ROLES = frozenset({Role.SPONSOR, Role.ADMIN})
# JWK members only a private (or symmetric) key has (RFC 7518 section 6, RFC 8037).
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True)
class User:
    """A human: console logins, admin roles, sponsorship. Secrets never live on this record."""

    id: str
    name: str
    roles: frozenset[Role]
    created_at: datetime
    email: str | None = None
    enabled: bool = True
    totp_enabled: bool = False
    groups: tuple[str, ...] = ()

    @property
    def can_sponsor(self) -> bool:
        return self.enabled and bool(self.roles & _SPONSOR_ROLES)


@dataclass(frozen=True)
class UserSecrets:
    """What verifies a user's console login; kept off `User` and out of every repr."""

    password_hash: str | None = field(default=None, repr=False)
    totp_secret: str | None = field(default=None, repr=False)
    totp_enabled: bool = False


@dataclass(frozen=True)
class Agent:
    """A non-human identity; `sponsors` are user ids, `groups` group names."""

    id: str
    name: str
    created_at: datetime
    sponsors: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    enabled: bool = True
    risk: Risk = Risk.NONE
    disabled_reason: str | None = None

    @property
    def client_id(self) -> str:
        """The OAuth client id of the agent: its id, which never changes."""
        return self.id


@dataclass(frozen=True)
class Group:
    id: str
    name: str
    created_at: datetime
    description: str = ""


@dataclass(frozen=True)
class AgentKey:
    """One public key an agent signs client assertions with; kid is its JWK thumbprint."""

    kid: str
    agent_id: str
    created_at: datetime
    public_jwk: Mapping[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def usable(self, now: datetime) -> bool:
        """Not revoked and not expired at `now`."""
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


def validate_name(kind: str, name: str) -> str:
    """Refuse a user, agent or group name that is not a short lowercase slug."""
    if not _NAME.match(name):
        raise InvalidInputError(
            f"bad {kind} name {name!r}",
            hint="use 1-63 lowercase letters, digits, '.', '_' and '-', starting with a letter",
        )
    if _ID_SHAPE.match(name):
        raise InvalidInputError(
            f"bad {kind} name {name!r}: it looks like an id", hint="choose a more descriptive name"
        )
    return name


def validate_email(email: str | None) -> str | None:
    if email is None or email == "":
        return None
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidInputError(f"bad email address {email!r}", hint="use name@example.com")
    return email


def parse_roles(values: Iterable[str]) -> frozenset[Role]:
    roles: set[Role] = set()
    for value in values:
        try:
            roles.add(Role(value.strip().lower().replace("-", "_")))
        except ValueError:
            raise InvalidInputError(
                f"unknown role {value!r}", hint=f"use one of: {', '.join(r.value for r in Role)}"
            ) from None
    return frozenset(roles)


def parse_risk(value: str) -> Risk:
    try:
        return Risk(value.strip().lower())
    except ValueError:
        raise InvalidInputError(
            f"unknown risk level {value!r}", hint=f"use one of: {', '.join(r.value for r in Risk)}"
        ) from None


def check_sponsor(user: User) -> User:
    """Only an enabled human with the sponsor (or admin) role may answer for an agent."""
    if not user.enabled:
        raise InvalidInputError(
            f"user {user.name!r} is disabled and cannot sponsor an agent",
            hint="enable the user first, or choose another sponsor",
        )
    if not user.roles & _SPONSOR_ROLES:
        raise InvalidInputError(
            f"user {user.name!r} cannot sponsor an agent: it lacks the sponsor role",
            hint="choose a user with the sponsor or admin role",
        )
    return user


def check_new_agent_sponsors(sponsors: Sequence[User]) -> tuple[str, ...]:
    """The sponsor ids of a new agent: at least one, each one allowed to sponsor."""
    if not sponsors:
        raise InvalidInputError(
            "an agent needs at least one sponsor", hint="name a sponsoring user with --sponsor USER"
        )
    for user in sponsors:
        check_sponsor(user)
    return tuple(dict.fromkeys(u.id for u in sponsors))


def reconcile_sponsorship(agent: Agent, active_sponsors: Iterable[str]) -> Agent:
    """Disable an enabled agent none of whose sponsors can still sponsor (enabled, with a role).

    `active_sponsors` holds the ids of users able to sponsor right now; an agent already disabled
    keeps its reason.
    """
    if agent.enabled and not set(agent.sponsors) & set(active_sponsors):
        return replace(agent, enabled=False, disabled_reason=NO_SPONSOR)
    return agent


def remove_sponsor(agent: Agent, user: User, active_sponsors: Iterable[str]) -> Agent:
    """The agent without `user` as sponsor; disabled if no able sponsor remains."""
    if user.id not in agent.sponsors:
        raise InvalidInputError(f"user {user.name!r} does not sponsor agent {agent.name!r}")
    remaining = tuple(s for s in agent.sponsors if s != user.id)
    return reconcile_sponsorship(
        replace(agent, sponsors=remaining), set(active_sponsors) - {user.id}
    )


def check_can_enable(agent: Agent, active_sponsors: Iterable[str]) -> None:
    """An agent comes back only while someone can answer for it."""
    if not set(agent.sponsors) & set(active_sponsors):
        raise ConflictError(
            f"agent {agent.name!r} has no enabled sponsor",
            hint="add one first: corral agent sponsor add AGENT USER",
        )


def check_public_jwk(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """The server keeps public keys only: a JWK with a private member is refused outright."""
    if _PRIVATE_JWK_MEMBERS & set(jwk):
        raise InvalidInputError("refusing to store a private key: only the public half is kept")
    if not isinstance(jwk.get("kty"), str):
        raise InvalidInputError("a public key needs a kty")
    return dict(jwk)


def check_admin_remains(user: User, roles: frozenset[Role], *, others_enabled_admins: int) -> None:
    """Refuse taking the admin role from the last enabled admin: nobody could manage the
    directory over the API any more (`corral user` on the server host still could)."""
    if (
        user.enabled
        and Role.ADMIN in user.roles
        and Role.ADMIN not in roles
        and others_enabled_admins == 0
    ):
        raise ConflictError(
            f"user {user.name!r} is the last enabled admin",
            hint="give another user the admin role first",
        )
