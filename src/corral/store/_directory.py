"""Directory rows: users, groups, agents, sponsors and agent keys.

Every write runs in one transaction that also bumps `directory_state.version`, so a request check
comparing versions sees the change on its next request. The sponsor rules come from
`corral.domain.identity`; this module only loads, locks and writes.

Lock order on PostgreSQL, always users before agents, so no two writers wait on each other in a
cycle: adding a sponsor share-locks the user then the agent; disabling a user locks the user, then
each agent it sponsors, and only then reads who else sponsors them. SQLite serializes writers.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    RowMapping,
    Select,
    delete,
    insert,
    or_,
    select,
    update,
)

from corral.domain import identity as rules
from corral.domain.identity import Agent, AgentKey, Group, Risk, Role, User, UserSecrets
from corral.errors import ConflictError, NotFoundError, PermissionDeniedError
from corral.store._secrets import TOTP, StoreKeys
from corral.store._tables import (
    agent_groups,
    agent_keys,
    agent_sponsors,
    agents,
    directory_state,
    groups,
    user_groups,
    users,
)

__all__ = [
    "add_agent_key",
    "add_sponsor",
    "create_agent",
    "create_group",
    "create_user",
    "delete_group",
    "get_agent",
    "get_group",
    "get_user",
    "get_user_secrets",
    "group_members",
    "list_agent_keys",
    "list_agents",
    "list_groups",
    "list_users",
    "remove_sponsor",
    "revoke_agent_key",
    "rotate_agent_key",
    "set_agent_enabled",
    "set_agent_risk",
    "set_group_member",
    "set_user_enabled",
    "set_user_password",
    "set_user_roles",
    "set_user_totp",
    "version",
]

Lock = Literal["share", "update"] | None


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def version(conn: Connection) -> int:
    return int(conn.scalar(select(directory_state.c.version).where(directory_state.c.id == 1)) or 0)


def _bump(conn: Connection) -> None:
    conn.execute(
        update(directory_state)
        .where(directory_state.c.id == 1)
        .values(version=directory_state.c.version + 1)
    )


def _locked(query: Select[Any], lock: Lock) -> Select[Any]:
    if lock is None:
        return query
    return query.with_for_update(read=lock == "share")


# users


def _user_not_found(ref: str) -> NotFoundError:
    return NotFoundError(f"no user named {ref!r}", hint="corral user list shows the users")


def _user_row(conn: Connection, ref: str, lock: Lock = None) -> RowMapping:
    query = select(users).where(or_(users.c.id == ref, users.c.name == ref))
    row = conn.execute(_locked(query, lock)).mappings().first()
    if row is None:
        raise _user_not_found(ref)
    return row


def _roles(text: str) -> frozenset[Role]:
    return frozenset(Role(r) for r in text.split(",") if r)


def _user(row: RowMapping, group_names: tuple[str, ...] = ()) -> User:
    return User(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        roles=_roles(row["roles"]),
        enabled=bool(row["enabled"]),
        totp_enabled=bool(row["totp_enabled"]),
        created_at=row["created_at"],
        groups=group_names,
    )


def _groups_of(conn: Connection, table: Any, key: str, ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    if not ids:
        return found
    column = table.c[key]
    rows = conn.execute(
        select(column, groups.c.name)
        .join(groups, groups.c.id == table.c.group_id)
        .where(column.in_(ids))
        .order_by(groups.c.name)
    )
    for owner, name in rows:
        found[owner].append(name)
    return found


def _users(conn: Connection, rows: Sequence[RowMapping]) -> list[User]:
    names = _groups_of(conn, user_groups, "user_id", [r["id"] for r in rows])
    return [_user(r, tuple(names[r["id"]])) for r in rows]


def create_user(
    conn: Connection,
    name: str,
    *,
    roles: Iterable[Role],
    email: str | None,
    password_hash: str | None,
    now: datetime,
) -> User:
    rules.validate_name("user", name)
    email = rules.validate_email(email)
    if conn.execute(select(users.c.id).where(users.c.name == name)).first():
        raise user_exists_error(name)
    user_id = new_id("u")
    conn.execute(
        insert(users).values(
            id=user_id,
            name=name,
            email=email,
            roles=",".join(sorted(r.value for r in roles)),
            enabled=True,
            password_hash=password_hash,
            totp_secret=None,
            totp_enabled=False,
            created_at=now,
            updated_at=now,
        )
    )
    _bump(conn)
    return get_user(conn, user_id)


def user_exists_error(name: str) -> ConflictError:
    return ConflictError(f"a user named {name!r} already exists", hint="choose another name")


def get_user(conn: Connection, ref: str) -> User:
    return _users(conn, [_user_row(conn, ref)])[0]


def list_users(conn: Connection) -> list[User]:
    return _users(conn, list(conn.execute(select(users).order_by(users.c.name)).mappings()))


def get_user_secrets(conn: Connection, ref: str, keys: StoreKeys) -> UserSecrets:
    row = _user_row(conn, ref)
    sealed = row["totp_secret_sealed"] or row["totp_secret"]  # a plaintext one fails to open
    return UserSecrets(
        password_hash=row["password_hash"],
        totp_secret=keys.open(sealed, TOTP, row["id"]) if sealed is not None else None,
        totp_enabled=bool(row["totp_enabled"]),
    )


def set_user_password(conn: Connection, ref: str, password_hash: str, now: datetime) -> None:
    row = _user_row(conn, ref, "update")
    conn.execute(
        update(users)
        .where(users.c.id == row["id"])
        .values(password_hash=password_hash, updated_at=now)
    )
    _bump(conn)


def set_user_totp(
    conn: Connection,
    ref: str,
    secret: str | None,
    *,
    enabled: bool,
    now: datetime,
    keys: StoreKeys,
) -> None:
    row = _user_row(conn, ref, "update")
    conn.execute(
        update(users)
        .where(users.c.id == row["id"])
        .values(
            totp_secret=None,
            totp_secret_sealed=keys.seal(secret, TOTP, row["id"]) if secret is not None else None,
            totp_enabled=enabled and secret is not None,
            updated_at=now,
        )
    )
    _bump(conn)


def set_user_roles(
    conn: Connection, ref: str, roles: Iterable[Role], now: datetime
) -> tuple[User, list[Agent]]:
    """Replace a user's roles; refused when that would leave no enabled admin. A user who
    loses the sponsor (and admin) role no longer counts as a sponsor, exactly as if disabled:
    returns the user and the agents this left without an able sponsor (now disabled)."""
    wanted = frozenset(roles)
    user_id = _user_row(conn, ref)["id"]
    # 1. Lock the user and every enabled user with an admin-like role, in id order (users
    #    before agents; one order for all), so two admins demoting each other at once cannot
    #    both see the other as the admin that remains.
    locked = conn.execute(
        select(users)
        .where(or_(users.c.id == user_id, users.c.roles.contains(Role.ADMIN.value)))
        .order_by(users.c.id)
        .with_for_update()
    ).mappings()
    rows = {r["id"]: r for r in locked}
    if user_id not in rows:  # deleted between the two reads
        raise _user_not_found(ref)
    others = [
        i
        for i, r in rows.items()
        if i != user_id and r["enabled"] and Role.ADMIN in _roles(r["roles"])
    ]
    # 2. Decide (pure), then 3. write, then 4. disable agents left without an able sponsor.
    rules.check_admin_remains(_user(rows[user_id]), wanted, others_enabled_admins=len(others))
    conn.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(roles=",".join(sorted(r.value for r in wanted)), updated_at=now)
    )
    disabled = _reconcile_sponsored(conn, user_id, now)
    _bump(conn)
    return get_user(conn, user_id), disabled


def _able_sponsors(conn: Connection, user_ids: Iterable[str]) -> set[str]:
    """Of `user_ids`, those who may sponsor right now (enabled, with the sponsor or admin role)."""
    ids = list(set(user_ids))
    if not ids:
        return set()
    rows = conn.execute(select(users).where(users.c.id.in_(ids))).mappings()
    return {r["id"] for r in rows if _user(r).can_sponsor}


def set_user_enabled(
    conn: Connection, ref: str, *, enabled: bool, now: datetime
) -> tuple[User, list[Agent]]:
    """Enable or disable a user; disabling one disables every agent left without an able
    sponsor. Returns the user and the agents this disabled."""
    # 1. Lock the user: no sponsorship of theirs can be added until we commit.
    row = _user_row(conn, ref, "update")
    user_id = row["id"]
    conn.execute(update(users).where(users.c.id == user_id).values(enabled=enabled, updated_at=now))
    # 2.-4. in _reconcile_sponsored
    disabled = [] if enabled else _reconcile_sponsored(conn, user_id, now)
    _bump(conn)
    return get_user(conn, user_id), disabled


def _reconcile_sponsored(conn: Connection, user_id: str, now: datetime) -> list[Agent]:
    """After a user (locked by the caller) stopped being able to sponsor: disable each agent
    they sponsor that has no able sponsor left; returns those agents."""
    disabled: list[Agent] = []
    # 2. Lock the agents they sponsor, then 3. read their sponsors afresh (committed state
    #    after the locks), and 4. disable those left without anyone able to sponsor.
    sponsored = conn.scalars(
        select(agent_sponsors.c.agent_id)
        .where(agent_sponsors.c.user_id == user_id)
        .order_by(agent_sponsors.c.agent_id)
    ).all()
    for agent_id in sponsored:
        agent = _agent(conn, _agent_row(conn, agent_id, "update"))
        after = rules.reconcile_sponsorship(agent, _able_sponsors(conn, agent.sponsors))
        if after != agent:
            _write_agent_state(conn, after, now)
            disabled.append(after)
    return disabled


# agents


def _agent_not_found(ref: str) -> NotFoundError:
    return NotFoundError(f"no agent named {ref!r}", hint="corral agent list shows the agents")


def agent_exists_error(name: str) -> ConflictError:
    return ConflictError(f"an agent named {name!r} already exists", hint="choose another name")


def _agent_row(conn: Connection, ref: str, lock: Lock = None) -> RowMapping:
    query = select(agents).where(or_(agents.c.id == ref, agents.c.name == ref))
    row = conn.execute(_locked(query, lock)).mappings().first()
    if row is None:
        raise _agent_not_found(ref)
    return row


def _agents(conn: Connection, rows: Sequence[RowMapping]) -> list[Agent]:
    ids = [r["id"] for r in rows]
    sponsors: dict[str, list[str]] = defaultdict(list)
    if ids:
        for agent_id, user_id in conn.execute(
            select(agent_sponsors.c.agent_id, agent_sponsors.c.user_id)
            .where(agent_sponsors.c.agent_id.in_(ids))
            .order_by(agent_sponsors.c.created_at, agent_sponsors.c.user_id)
        ):
            sponsors[agent_id].append(user_id)
    names = _groups_of(conn, agent_groups, "agent_id", ids)
    return [
        Agent(
            id=r["id"],
            name=r["name"],
            created_at=r["created_at"],
            sponsors=tuple(sponsors[r["id"]]),
            groups=tuple(names[r["id"]]),
            enabled=bool(r["enabled"]),
            risk=Risk(r["risk"]),
            disabled_reason=r["disabled_reason"],
        )
        for r in rows
    ]


def _agent(conn: Connection, row: RowMapping) -> Agent:
    return _agents(conn, [row])[0]


def _write_agent_state(conn: Connection, agent: Agent, now: datetime) -> None:
    conn.execute(
        update(agents)
        .where(agents.c.id == agent.id)
        .values(
            enabled=agent.enabled,
            disabled_reason=None if agent.enabled else agent.disabled_reason,
            risk=agent.risk.value,
            updated_at=now,
        )
    )


def get_agent(conn: Connection, ref: str) -> Agent:
    return _agent(conn, _agent_row(conn, ref))


def list_agents(conn: Connection) -> list[Agent]:
    return _agents(conn, list(conn.execute(select(agents).order_by(agents.c.name)).mappings()))


def create_agent(
    conn: Connection,
    name: str,
    *,
    sponsors: Sequence[str],
    group_refs: Sequence[str],
    key: AgentKey | None,
    now: datetime,
) -> Agent:
    """A new enabled agent with its sponsors, groups and first public key, all or nothing."""
    rules.validate_name("agent", name)
    # Share-lock the sponsors (users before agents) so none is disabled under us.
    sponsor_users = [_user(_user_row(conn, ref, "share")) for ref in sponsors]
    sponsor_ids = rules.check_new_agent_sponsors(sponsor_users)
    group_ids = list(dict.fromkeys(_group_row(conn, g)["id"] for g in group_refs))
    if conn.execute(select(agents.c.id).where(agents.c.name == name)).first():
        raise agent_exists_error(name)
    agent_id = new_id("a")
    conn.execute(
        insert(agents).values(
            id=agent_id,
            name=name,
            enabled=True,
            risk=Risk.NONE.value,
            disabled_reason=None,
            created_at=now,
            updated_at=now,
        )
    )
    for user_id in sponsor_ids:
        conn.execute(
            insert(agent_sponsors).values(agent_id=agent_id, user_id=user_id, created_at=now)
        )
    for group_id in group_ids:
        conn.execute(insert(agent_groups).values(agent_id=agent_id, group_id=group_id))
    if key is not None:
        _insert_key(conn, agent_id, key, now)
    _bump(conn)
    return get_agent(conn, agent_id)


def set_agent_enabled(
    conn: Connection, ref: str, *, enabled: bool, reason: str | None, now: datetime
) -> Agent:
    agent = _agent(conn, _agent_row(conn, ref, "update"))
    if enabled:
        rules.check_can_enable(agent, _able_sponsors(conn, agent.sponsors))
        after = replace(agent, enabled=True, disabled_reason=None)
    else:
        after = replace(agent, enabled=False, disabled_reason=reason or "disabled by an admin")
    _write_agent_state(conn, after, now)
    _bump(conn)
    return get_agent(conn, agent.id)


def set_agent_risk(
    conn: Connection, ref: str, risk: Risk, now: datetime, *, may_lower: bool = True
) -> Agent:
    """Set an agent's risk. Without `may_lower` only a raise (or the same level) is taken:
    the comparison is made against the row locked here, so a detection that raised the risk
    a moment ago is never undone by a caller who read the older, lower level."""
    agent = _agent(conn, _agent_row(conn, ref, "update"))
    if not may_lower and rules.risk_rank(risk) < rules.risk_rank(agent.risk):
        raise PermissionDeniedError(
            f"lowering agent {agent.name!r}'s risk from {agent.risk.value} to {risk.value} is "
            "not allowed: security admins may raise an agent's risk, never lower it",
            hint="ask an admin (the manage_directory action) to lower it",
        )
    _write_agent_state(conn, replace(agent, risk=risk), now)
    _bump(conn)
    return get_agent(conn, agent.id)


def add_sponsor(conn: Connection, agent_ref: str, user_ref: str, now: datetime) -> Agent:
    user = rules.check_sponsor(_user(_user_row(conn, user_ref, "share")))
    agent = _agent(conn, _agent_row(conn, agent_ref, "update"))
    if user.id in agent.sponsors:
        raise ConflictError(f"user {user.name!r} already sponsors agent {agent.name!r}")
    conn.execute(insert(agent_sponsors).values(agent_id=agent.id, user_id=user.id, created_at=now))
    _bump(conn)
    return get_agent(conn, agent.id)


def remove_sponsor(conn: Connection, agent_ref: str, user_ref: str, now: datetime) -> Agent:
    """Remove one sponsor; the agent is disabled in the same transaction if none able remains."""
    user = _user(_user_row(conn, user_ref))
    # 1. Lock the agent, then 2. read its sponsors and who of them can sponsor, then 3. decide.
    agent = _agent(conn, _agent_row(conn, agent_ref, "update"))
    after = rules.remove_sponsor(agent, user, _able_sponsors(conn, agent.sponsors))
    conn.execute(
        delete(agent_sponsors).where(
            agent_sponsors.c.agent_id == agent.id, agent_sponsors.c.user_id == user.id
        )
    )
    if after.enabled != agent.enabled:
        _write_agent_state(conn, after, now)
    _bump(conn)
    return get_agent(conn, agent.id)


# agent keys


def _key(row: RowMapping) -> AgentKey:
    return AgentKey(
        kid=row["kid"],
        agent_id=row["agent_id"],
        public_jwk=json.loads(row["public_jwk"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def _public_json(jwk: Mapping[str, Any]) -> str:
    return json.dumps(rules.check_public_jwk(jwk), sort_keys=True, separators=(",", ":"))


def _insert_key(conn: Connection, agent_id: str, key: AgentKey, now: datetime) -> None:
    if conn.execute(select(agent_keys.c.kid).where(agent_keys.c.kid == key.kid)).first():
        raise ConflictError(f"key {key.kid!r} is already registered", hint="generate a new key")
    conn.execute(
        insert(agent_keys).values(
            kid=key.kid,
            agent_id=agent_id,
            public_jwk=_public_json(key.public_jwk),
            created_at=now,
            expires_at=key.expires_at,
            revoked_at=None,
        )
    )


def add_agent_key(conn: Connection, agent_ref: str, key: AgentKey, now: datetime) -> AgentKey:
    agent_id = _agent_row(conn, agent_ref, "update")["id"]
    _insert_key(conn, agent_id, key, now)
    _bump(conn)
    return _key_row(conn, agent_id, key.kid)


def _key_row(conn: Connection, agent_id: str, kid: str) -> AgentKey:
    row = (
        conn.execute(
            select(agent_keys).where(agent_keys.c.agent_id == agent_id, agent_keys.c.kid == kid)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFoundError(
            f"agent has no key {kid!r}", hint="corral agent key list AGENT shows its keys"
        )
    return _key(row)


def list_agent_keys(conn: Connection, agent_ref: str) -> list[AgentKey]:
    agent_id = _agent_row(conn, agent_ref)["id"]
    rows = conn.execute(
        select(agent_keys)
        .where(agent_keys.c.agent_id == agent_id)
        .order_by(agent_keys.c.created_at, agent_keys.c.kid)
    ).mappings()
    return [_key(r) for r in rows]


def revoke_agent_key(conn: Connection, agent_ref: str, kid: str, now: datetime) -> AgentKey:
    agent_id = _agent_row(conn, agent_ref, "update")["id"]
    key = _key_row(conn, agent_id, kid)
    if not key.revoked:
        conn.execute(update(agent_keys).where(agent_keys.c.kid == kid).values(revoked_at=now))
        _bump(conn)
    return _key_row(conn, agent_id, kid)


def rotate_agent_key(
    conn: Connection, agent_ref: str, key: AgentKey, *, old_expires_at: datetime, now: datetime
) -> AgentKey:
    """Register `key` and cut every other live key's life to `old_expires_at` at the latest."""
    agent_id = _agent_row(conn, agent_ref, "update")["id"]
    for old in list_agent_keys(conn, agent_id):
        if old.usable(now) and (old.expires_at is None or old.expires_at > old_expires_at):
            conn.execute(
                update(agent_keys)
                .where(agent_keys.c.kid == old.kid)
                .values(expires_at=old_expires_at)
            )
    _insert_key(conn, agent_id, key, now)
    _bump(conn)
    return _key_row(conn, agent_id, key.kid)


# groups


def _group_row(conn: Connection, ref: str) -> RowMapping:
    row = (
        conn.execute(select(groups).where(or_(groups.c.id == ref, groups.c.name == ref)))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFoundError(f"no group named {ref!r}", hint="create it first")
    return row


def _group(row: RowMapping) -> Group:
    return Group(
        id=row["id"], name=row["name"], description=row["description"], created_at=row["created_at"]
    )


def group_exists_error(name: str) -> ConflictError:
    return ConflictError(f"a group named {name!r} already exists", hint="choose another name")


def create_group(conn: Connection, name: str, description: str, now: datetime) -> Group:
    rules.validate_name("group", name)
    if conn.execute(select(groups.c.id).where(groups.c.name == name)).first():
        raise group_exists_error(name)
    group_id = new_id("g")
    conn.execute(
        insert(groups).values(id=group_id, name=name, description=description, created_at=now)
    )
    _bump(conn)
    return _group(_group_row(conn, group_id))


def get_group(conn: Connection, ref: str) -> Group:
    return _group(_group_row(conn, ref))


def list_groups(conn: Connection) -> list[Group]:
    return [_group(r) for r in conn.execute(select(groups).order_by(groups.c.name)).mappings()]


def delete_group(conn: Connection, ref: str) -> None:
    group_id = _group_row(conn, ref)["id"]
    conn.execute(delete(groups).where(groups.c.id == group_id))  # memberships cascade
    _bump(conn)


def set_group_member(
    conn: Connection,
    group_ref: str,
    *,
    kind: Literal["user", "agent"],
    member_ref: str,
    member: bool,
    now: datetime,
) -> None:
    """Add or remove a user or an agent; adding twice or removing a non-member is a no-op."""
    group_id = _group_row(conn, group_ref)["id"]
    if kind == "user":
        table, column, member_id = (
            user_groups,
            "user_id",
            _user_row(conn, member_ref, "update")["id"],
        )
    else:
        table, column, member_id = (
            agent_groups,
            "agent_id",
            _agent_row(conn, member_ref, "update")["id"],
        )
    where = (table.c[column] == member_id, table.c.group_id == group_id)
    present = conn.execute(select(table.c.group_id).where(*where)).first() is not None
    if member and not present:
        conn.execute(insert(table).values({column: member_id, "group_id": group_id}))
    elif not member and present:
        conn.execute(delete(table).where(*where))
    else:
        return
    if kind == "agent":
        conn.execute(update(agents).where(agents.c.id == member_id).values(updated_at=now))
    _bump(conn)


def group_members(conn: Connection, group_ref: str) -> tuple[list[str], list[str]]:
    """The names of a group's users and agents."""
    group_id = _group_row(conn, group_ref)["id"]
    user_names = conn.scalars(
        select(users.c.name)
        .join(user_groups, user_groups.c.user_id == users.c.id)
        .where(user_groups.c.group_id == group_id)
        .order_by(users.c.name)
    ).all()
    agent_names = conn.scalars(
        select(agents.c.name)
        .join(agent_groups, agent_groups.c.agent_id == agents.c.id)
        .where(agent_groups.c.group_id == group_id)
        .order_by(agents.c.name)
    ).all()
    return list(user_names), list(agent_names)
