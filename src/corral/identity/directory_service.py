"""The directory as the API offers it: who may read or change users, agents and groups.

Every operation first asks the one enforcement point, `PolicyService.require` (Cedar, issue 5),
for the action its `Power` maps to on the `Directory::"directory"` resource:

| power | Cedar action | shipped policies allow |
|---|---|---|
| read (list, show) | `read_directory` | admins, security admins |
| contain (disable, revoke tokens or keys, raise risk) | `revoke_tokens` | admins, security admins |
| lower an agent's risk (gives access back) | `revoke_tokens` and `manage_directory` | admins |
| manage (create, delete, enable, roles, sponsors, keys, groups) | `manage_directory` | admins |

Agents, sponsors, users without a role and every session token are refused (no policy permits
them; a session token reaches only its own session). Then it calls `Directory`, which enforces
the directory's own rules (the sponsor rule, names, public keys only). Adapters (REST now) call
this and nothing below it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Literal

from corral.access.service import PolicyService
from corral.domain.access import Caller
from corral.domain.identity import Agent, AgentKey, Group, Risk, Role, User
from corral.errors import ConflictError, PermissionDeniedError
from corral.identity.directory import DEFAULT_ROTATION_GRACE, Credential, Directory

__all__ = [
    "AgentView",
    "DirectoryService",
    "GroupMembers",
    "Power",
]

log = logging.getLogger("corral.directory")


class Power(StrEnum):
    """What an operation does to access, which decides the Cedar action it needs."""

    READ = "read_directory"  # list and show
    CONTAIN = "revoke_tokens"  # take access away: disable, revoke, risk
    MANAGE = "manage_directory"  # everything else: create, delete, enable, roles, sponsors, ...


_DIRECTORY = PolicyService.collection("Directory", "directory")
_NEEDS = {
    Power.READ: "the admin or security_admin role",
    Power.CONTAIN: "the admin or security_admin role",
    Power.MANAGE: "the admin role",
}


@dataclass(frozen=True)
class AgentView:
    """An agent with its sponsors' names, and its keys when asked for (never private halves:
    the store has none)."""

    agent: Agent
    sponsors: tuple[tuple[str, str], ...]  # (user id, user name)
    keys: tuple[AgentKey, ...] | None = None


@dataclass(frozen=True)
class GroupMembers:
    group: Group
    users: tuple[str, ...]  # names
    agents: tuple[str, ...]  # names


class DirectoryService:
    """The directory operations behind `/v1/users`, `/v1/agents` and `/v1/groups`."""

    def __init__(self, directory: Directory, *, token_endpoint: str, policy: PolicyService) -> None:
        self.directory = directory
        self.policy = policy
        #: written into the credentials this hands out: where the agent gets its tokens
        self.token_endpoint = token_endpoint

    def _require(self, caller: Caller | None, power: Power, what: str) -> Caller:
        """`caller`, if policy allows `power` on the directory; PermissionDeniedError if not."""
        self.policy.require(
            caller,
            power.value,
            _DIRECTORY,
            deny=lambda d: PermissionDeniedError(
                f"{what} is not allowed: {d.reason}",
                hint=f"the shipped policies give it to {_NEEDS[power]}; "
                "`corral policy test` shows which policies decide",
            ),
        )
        assert caller is not None  # a missing caller is always denied
        return caller

    def _done(self, caller: Caller, what: str) -> None:
        log.info("directory: %s (by %s %s)", what, caller.kind.value, caller.id)

    def _views(self, agents: Sequence[Agent], *, keys: bool = False) -> list[AgentView]:
        names = {u.id: u.name for u in self.directory.list_users()}
        return [
            AgentView(
                agent=a,
                sponsors=tuple((s, names.get(s, s)) for s in a.sponsors),
                keys=tuple(self.directory.agent_keys(a.id)) if keys else None,
            )
            for a in agents
        ]

    def _view(self, agent: Agent, *, keys: bool = True) -> AgentView:
        return self._views([agent], keys=keys)[0]

    # users

    def list_users(self, *, principal: Caller | None) -> list[User]:
        self._require(principal, Power.READ, "listing users")
        return self.directory.list_users()

    def get_user(self, ref: str, *, principal: Caller | None) -> User:
        self._require(principal, Power.READ, "reading a user")
        return self.directory.get_user(ref)

    def create_user(
        self,
        name: str,
        *,
        roles: Iterable[str],
        email: str | None,
        password: str | None,
        principal: Caller | None,
    ) -> User:
        caller = self._require(principal, Power.MANAGE, "creating a user")
        user = self.directory.create_user(name, roles=roles, email=email, password=password)
        self._done(caller, f"user {user.name} ({user.id}) created")
        return user

    def set_user_roles(
        self, ref: str, roles: Iterable[str], *, principal: Caller | None
    ) -> tuple[User, list[Agent]]:
        caller = self._require(principal, Power.MANAGE, "changing a user's roles")
        user, disabled = self.directory.set_roles(ref, roles)
        self._done(caller, f"user {user.id} roles set to {sorted(r.value for r in user.roles)}")
        return user, disabled

    def disable_user(self, ref: str, *, principal: Caller | None) -> tuple[User, list[Agent]]:
        """Disable a user; returns them and the agents this left without a sponsor."""
        caller = self._require(principal, Power.CONTAIN, "disabling a user")
        user = self.directory.get_user(ref)
        if Role.ADMIN in user.roles and user.enabled and not self._other_admins(user.id):
            # Over the API only: an operator on the server host may still do it with the CLI.
            raise ConflictError(
                f"user {user.name!r} is the last enabled admin",
                hint="give another user the admin role first",
            )
        disabled = self.directory.disable_user(user.id)
        self._done(caller, f"user {user.id} disabled, and {len(disabled)} agent(s) with it")
        return self.directory.get_user(user.id), disabled

    def _other_admins(self, user_id: str) -> list[User]:
        return [
            u
            for u in self.directory.list_users()
            if u.id != user_id and u.enabled and Role.ADMIN in u.roles
        ]

    def enable_user(self, ref: str, *, principal: Caller | None) -> User:
        caller = self._require(principal, Power.MANAGE, "enabling a user")
        user = self.directory.enable_user(ref)
        self._done(caller, f"user {user.id} enabled")
        return user

    def revoke_user_tokens(self, ref: str, *, principal: Caller | None) -> str:
        """Every token issued so far to this user is refused from the next request."""
        caller = self._require(principal, Power.CONTAIN, "revoking a user's tokens")
        user_id = self.directory.revoke_tokens(self.directory.get_user(ref).id)
        self._done(caller, f"tokens of user {user_id} revoked")
        return user_id

    # agents

    def list_agents(self, *, principal: Caller | None) -> list[AgentView]:
        self._require(principal, Power.READ, "listing agents")
        return self._views(self.directory.list_agents())

    def get_agent(self, ref: str, *, principal: Caller | None) -> AgentView:
        self._require(principal, Power.READ, "reading an agent")
        return self._view(self.directory.get_agent(ref))

    def create_agent(
        self,
        name: str,
        *,
        sponsors: Sequence[str],
        groups: Sequence[str],
        key_lifetime: timedelta | None,
        principal: Caller | None,
    ) -> tuple[AgentView, Credential]:
        """A new agent and its credential (with the private key), which exists nowhere else."""
        caller = self._require(principal, Power.MANAGE, "creating an agent")
        credential = self.directory.create_agent(
            name, sponsors, groups, self.token_endpoint, key_lifetime
        )
        view = self._view(self.directory.get_agent(credential["agent_id"]))
        self._done(caller, f"agent {name} ({view.agent.id}) created")
        return view, credential

    def disable_agent(self, ref: str, reason: str | None, *, principal: Caller | None) -> AgentView:
        caller = self._require(principal, Power.CONTAIN, "disabling an agent")
        agent = self.directory.disable_agent(ref, reason)
        self._done(caller, f"agent {agent.id} disabled")
        return self._view(agent)

    def enable_agent(self, ref: str, *, principal: Caller | None) -> AgentView:
        caller = self._require(principal, Power.MANAGE, "enabling an agent")
        agent = self.directory.enable_agent(ref)
        self._done(caller, f"agent {agent.id} enabled")
        return self._view(agent)

    def set_risk(self, ref: str, level: Risk | str, *, principal: Caller | None) -> AgentView:
        """Raising a risk takes access away (CONTAIN: security admins too); lowering it gives
        access back, which only who may MANAGE the directory (admins) may do.

        Steps: 1. the caller may contain at all; 2. policy says whether it may also manage
        (lower); 3. the store compares the new level with the locked row's current one and
        refuses a lower one without that right (no read-then-write race)."""
        caller = self._require(principal, Power.CONTAIN, "setting an agent's risk")
        may_lower = self.policy.authorize(caller, Power.MANAGE.value, _DIRECTORY).allowed
        agent = self.directory.set_risk(ref, level, may_lower=may_lower)
        self._done(caller, f"agent {agent.id} risk set to {agent.risk.value}")
        return self._view(agent)

    def add_sponsor(self, ref: str, user: str, *, principal: Caller | None) -> AgentView:
        caller = self._require(principal, Power.MANAGE, "adding a sponsor")
        agent = self.directory.add_sponsor(ref, user)
        self._done(caller, f"agent {agent.id} sponsor {user!r} added")
        return self._view(agent)

    def remove_sponsor(self, ref: str, user: str, *, principal: Caller | None) -> AgentView:
        """Removing the last able sponsor disables the agent (reason "no sponsor")."""
        caller = self._require(principal, Power.MANAGE, "removing a sponsor")
        agent = self.directory.remove_sponsor(ref, user)
        self._done(caller, f"agent {agent.id} sponsor {user!r} removed")
        return self._view(agent)

    def list_keys(self, ref: str, *, principal: Caller | None) -> list[AgentKey]:
        self._require(principal, Power.READ, "listing an agent's keys")
        return self.directory.agent_keys(ref)

    def rotate_key(
        self,
        ref: str,
        grace: timedelta = DEFAULT_ROTATION_GRACE,
        *,
        principal: Caller | None,
    ) -> tuple[AgentView, Credential]:
        """A new key pair; the old keys expire after `grace`. The credential exists only here."""
        caller = self._require(principal, Power.MANAGE, "rotating an agent's key")
        credential = self.directory.rotate_agent_key(ref, grace, self.token_endpoint)
        view = self._view(self.directory.get_agent(credential["agent_id"]))
        self._done(caller, f"agent {view.agent.id} key rotated to {credential['key']['kid']}")
        return view, credential

    def revoke_key(self, ref: str, kid: str, *, principal: Caller | None) -> AgentKey:
        caller = self._require(principal, Power.CONTAIN, "revoking an agent's key")
        key = self.directory.revoke_agent_key(ref, kid)
        self._done(caller, f"agent {key.agent_id} key {key.kid} revoked")
        return key

    def revoke_agent_tokens(self, ref: str, *, principal: Caller | None) -> str:
        """Every token issued so far to this agent is refused from the next request."""
        caller = self._require(principal, Power.CONTAIN, "revoking an agent's tokens")
        agent_id = self.directory.revoke_tokens(self.directory.get_agent(ref).id)
        self._done(caller, f"tokens of agent {agent_id} revoked")
        return agent_id

    # groups

    def list_groups(self, *, principal: Caller | None) -> list[Group]:
        self._require(principal, Power.READ, "listing groups")
        return self.directory.list_groups()

    def get_group(self, ref: str, *, principal: Caller | None) -> GroupMembers:
        self._require(principal, Power.READ, "reading a group")
        return self._members(ref)

    def _members(self, ref: str) -> GroupMembers:
        group = self.directory.get_group(ref)
        users, agents = self.directory.group_members(group.id)
        return GroupMembers(group, tuple(users), tuple(agents))

    def create_group(
        self, name: str, description: str, *, principal: Caller | None
    ) -> GroupMembers:
        caller = self._require(principal, Power.MANAGE, "creating a group")
        group = self.directory.create_group(name, description)
        self._done(caller, f"group {group.name} ({group.id}) created")
        return GroupMembers(group, (), ())

    def delete_group(self, ref: str, *, principal: Caller | None) -> None:
        caller = self._require(principal, Power.MANAGE, "deleting a group")
        group = self.directory.get_group(ref)
        self.directory.delete_group(group.id)
        self._done(caller, f"group {group.name} ({group.id}) deleted")

    def set_member(
        self,
        ref: str,
        kind: Literal["user", "agent"],
        member: str,
        present: bool,
        *,
        principal: Caller | None,
    ) -> GroupMembers:
        """Add (`present`) or remove a user or agent; idempotent."""
        caller = self._require(principal, Power.MANAGE, "changing a group's members")
        group = self.directory.get_group(ref)
        if present:
            self.directory.add_to_group(group.id, kind, member)
        else:
            self.directory.remove_from_group(group.id, kind, member)
        change = "added" if present else "removed"
        self._done(caller, f"group {group.id}: {kind} {member!r} {change}")
        return self._members(group.id)
