"""What request authentication reads on every request, and the keys of users with API access.

The per-request read itself (`principal_status`) lives in `_hot`. Writes bump the directory
version.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, insert, or_, select, update

from corral.domain import identity as rules
from corral.domain.identity import AgentKey
from corral.errors import ConflictError, NotFoundError
from corral.store._directory import _bump
from corral.store._tables import agent_keys, agents, user_keys, users

__all__ = [
    "add_user_key",
    "admin_exists",
    "list_user_keys",
    "revoke_tokens",
]


def revoke_tokens(conn: Connection, ref: str, now: datetime) -> str:
    """Refuse every token of the agent or user `ref` (id or name) issued before `now`."""
    for table in (agents, users):
        row = conn.execute(
            select(table.c.id).where(or_(table.c.id == ref, table.c.name == ref))
        ).first()
        if row is not None:
            conn.execute(
                update(table).where(table.c.id == row[0]).values(tokens_revoked_before=now)
            )
            _bump(conn)
            return str(row[0])
    raise NotFoundError(f"no agent or user named {ref!r}", hint="corral agent list")


def admin_exists(conn: Connection) -> bool:
    return any("admin" in r.split(",") for r in conn.scalars(select(users.c.roles)))


def _user_id(conn: Connection, ref: str) -> str:
    row = conn.execute(
        select(users.c.id).where(or_(users.c.id == ref, users.c.name == ref))
    ).first()
    if row is None:
        raise NotFoundError(f"no user named {ref!r}", hint="corral user list shows the users")
    return str(row[0])


def add_user_key(conn: Connection, user_ref: str, key: AgentKey, now: datetime) -> None:
    user_id = _user_id(conn, user_ref)
    taken = select(user_keys.c.kid).where(user_keys.c.kid == key.kid)
    if (
        conn.execute(taken).first()
        or conn.execute(select(agent_keys.c.kid).where(agent_keys.c.kid == key.kid)).first()
    ):
        raise ConflictError(f"key {key.kid!r} is already registered", hint="generate a new key")
    conn.execute(
        insert(user_keys).values(
            kid=key.kid,
            user_id=user_id,
            public_jwk=json.dumps(rules.check_public_jwk(key.public_jwk), sort_keys=True),
            created_at=now,
            expires_at=key.expires_at,
            revoked_at=None,
        )
    )
    _bump(conn)


def list_user_keys(conn: Connection, user_ref: str) -> list[AgentKey]:
    user_id = _user_id(conn, user_ref)
    rows = conn.execute(
        select(user_keys).where(user_keys.c.user_id == user_id).order_by(user_keys.c.created_at)
    ).mappings()
    return [
        AgentKey(
            kid=r["kid"],
            agent_id=r["user_id"],
            public_jwk=json.loads(r["public_jwk"]),
            created_at=r["created_at"],
            expires_at=r["expires_at"],
            revoked_at=r["revoked_at"],
        )
        for r in rows
    ]
