"""Policy rows: Cedar policies, their change log and version, pool assignments, approvals and
session controls.

Every change to policies or assignments runs in one transaction that bumps
`policy_state.version` and appends to `policy_changes` (who, what, when), so the change log is
complete and every worker sees the new set on its next request. The policy text is checked
(parsed, validated against the schema) by the service before it gets here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Connection, RowMapping, and_, delete, insert, or_, select, update

from corral.domain.policy import (
    Approval,
    ApprovalState,
    ChangeKind,
    PolicyChange,
    PoolAssignment,
    StoredPolicy,
)
from corral.errors import ConflictError, NotFoundError
from corral.store import _directory, _pools
from corral.store._tables import (
    agent_groups,
    agents,
    approvals,
    directory_state,
    groups,
    policies,
    policy_changes,
    policy_state,
    pool_assignments,
    pools,
    session_controls,
)

__all__ = [
    "VERSIONS_SQL",
    "add_policy",
    "approval_for",
    "assign_pool",
    "bearer_pools_of_agent",
    "create_approval",
    "decide_approval",
    "expire_approvals",
    "get_approval",
    "get_policy",
    "get_session_controls",
    "list_approvals",
    "list_assignments",
    "list_changes",
    "list_policies",
    "policy_exists_error",
    "remove_policy",
    "seed_policies",
    "set_policy_enabled",
    "set_session_controls",
    "unassign_pool",
    "use_approval",
    "version",
    "versions",
]


def version(conn: Connection) -> int:
    return int(conn.scalar(select(policy_state.c.version).where(policy_state.c.id == 1)) or 0)


#: the directory and policy-set versions as plain SQL (SQLite and PostgreSQL alike), for the
#: hot path of `Store.access_versions`
VERSIONS_SQL = (
    "SELECT (SELECT version FROM directory_state WHERE id = 1),"
    " (SELECT version FROM policy_state WHERE id = 1)"
)


def versions(conn: Connection) -> tuple[int, int]:
    """The directory version and the policy-set version, in one read: what a cached decision
    input depends on."""
    directory = select(directory_state.c.version).where(directory_state.c.id == 1)
    policy = select(policy_state.c.version).where(policy_state.c.id == 1)
    row = conn.execute(select(directory.scalar_subquery(), policy.scalar_subquery())).first()
    return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)


def _bump(conn: Connection) -> int:
    """Lock the state row (writers of policies take turns), bump and return the new version."""
    current = conn.execute(
        select(policy_state.c.version).where(policy_state.c.id == 1).with_for_update()
    ).scalar_one()
    new = int(current) + 1
    conn.execute(update(policy_state).where(policy_state.c.id == 1).values(version=new))
    return new


def _log(
    conn: Connection,
    kind: ChangeKind,
    subject: str,
    actor: str,
    now: datetime,
    text: str | None = None,
) -> int:
    new = _bump(conn)
    conn.execute(
        insert(policy_changes).values(
            version=new, kind=kind.value, subject=subject, text=text, actor=actor, at=now
        )
    )
    return new


# policies


def policy_exists_error(name: str) -> ConflictError:
    return ConflictError(
        f"a policy named {name!r} already exists",
        hint="choose another name, or replace it (corral policy add --replace)",
    )


def _policy_not_found(name: str) -> NotFoundError:
    return NotFoundError(f"no policy named {name!r}", hint="corral policy list shows the policies")


def _policy(row: RowMapping) -> StoredPolicy:
    return StoredPolicy(
        id=row["id"],
        name=row["name"],
        text=row["text"],
        enabled=row["enabled"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def get_policy(conn: Connection, name: str) -> StoredPolicy:
    row = conn.execute(select(policies).where(policies.c.name == name)).mappings().first()
    if row is None:
        raise _policy_not_found(name)
    return _policy(row)


def list_policies(conn: Connection) -> list[StoredPolicy]:
    rows = conn.execute(select(policies).order_by(policies.c.name)).mappings()
    return [_policy(r) for r in rows]


def add_policy(
    conn: Connection, name: str, text: str, *, actor: str, now: datetime, replace_: bool = False
) -> StoredPolicy:
    """Add policy `name`, or (with `replace_`) change the text of the existing one."""
    row = conn.execute(select(policies).where(policies.c.name == name)).mappings().first()
    if row is not None and not replace_:
        raise policy_exists_error(name)
    if row is None:
        conn.execute(
            insert(policies).values(
                id=f"p-{secrets.token_hex(8)}",
                name=name,
                text=text,
                enabled=True,
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
        )
        _log(conn, ChangeKind.ADD, name, actor, now, text)
    else:
        conn.execute(
            update(policies).where(policies.c.name == name).values(text=text, updated_at=now)
        )
        _log(conn, ChangeKind.REPLACE, name, actor, now, text)
    return get_policy(conn, name)


def remove_policy(conn: Connection, name: str, *, actor: str, now: datetime) -> StoredPolicy:
    found = get_policy(conn, name)
    conn.execute(delete(policies).where(policies.c.name == name))
    _log(conn, ChangeKind.REMOVE, name, actor, now)
    return found


def set_policy_enabled(
    conn: Connection, name: str, enabled: bool, *, actor: str, now: datetime
) -> StoredPolicy:
    found = get_policy(conn, name)
    if found.enabled == enabled:
        return found
    conn.execute(
        update(policies).where(policies.c.name == name).values(enabled=enabled, updated_at=now)
    )
    kind = ChangeKind.ENABLE if enabled else ChangeKind.DISABLE
    _log(conn, kind, name, actor, now, found.text)
    return replace(found, enabled=enabled, updated_at=now)


def seed_policies(
    conn: Connection, defaults: Sequence[tuple[str, str]], *, actor: str, now: datetime
) -> bool:
    """Install the shipped policies once, ever: True if this call did it. A later start after an
    admin removed some of them does not bring them back."""
    seeded = conn.execute(
        select(policy_state.c.seeded).where(policy_state.c.id == 1).with_for_update()
    ).scalar_one()
    if seeded:
        return False
    existing = {r[0] for r in conn.execute(select(policies.c.name))}
    for name, text in defaults:
        if name in existing:
            continue
        conn.execute(
            insert(policies).values(
                id=f"p-{secrets.token_hex(8)}",
                name=name,
                text=text,
                enabled=True,
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
        )
        _log(conn, ChangeKind.SEED, name, actor, now, text)
    conn.execute(update(policy_state).where(policy_state.c.id == 1).values(seeded=True))
    return True


def list_changes(conn: Connection, *, since: int = 0, limit: int = 200) -> list[PolicyChange]:
    """The change log, oldest first, from version `since` (exclusive)."""
    rows = conn.execute(
        select(policy_changes)
        .where(policy_changes.c.version > since)
        .order_by(policy_changes.c.id)
        .limit(limit)
    ).mappings()
    return [
        PolicyChange(
            version=r["version"],
            kind=ChangeKind(r["kind"]),
            subject=r["subject"],
            actor=r["actor"],
            at=r["at"],
            text=r["text"],
        )
        for r in rows
    ]


# pool assignments

Assignee = Literal["agent", "group"]


def _assignee(conn: Connection, kind: Assignee, ref: str) -> tuple[str, str]:
    """(id, name) of the agent or group `ref` (id or name)."""
    if kind == "agent":
        agent = _directory.get_agent(conn, ref)
        return agent.id, agent.name
    group = _directory.get_group(conn, ref)
    return group.id, group.name


def assign_pool(
    conn: Connection, pool: str, kind: Assignee, ref: str, *, actor: str, now: datetime
) -> bool:
    """Assign `pool` to an agent or group; False if it already was (nothing changes)."""
    _pools.get_pool(conn, pool)
    ident, name = _assignee(conn, kind, ref)
    column = pool_assignments.c.agent_id if kind == "agent" else pool_assignments.c.group_id
    found = conn.execute(
        select(pool_assignments.c.id).where(pool_assignments.c.pool == pool, column == ident)
    ).first()
    if found:
        return False
    conn.execute(
        insert(pool_assignments).values(
            pool=pool,
            agent_id=ident if kind == "agent" else None,
            group_id=ident if kind == "group" else None,
            created_by=actor,
            created_at=now,
        )
    )
    _log(conn, ChangeKind.ASSIGN, f"pool/{pool} {kind}/{name}", actor, now)
    return True


def unassign_pool(
    conn: Connection, pool: str, kind: Assignee, ref: str, *, actor: str, now: datetime
) -> bool:
    """Undo an assignment; False if there was none."""
    _pools.get_pool(conn, pool)
    ident, name = _assignee(conn, kind, ref)
    column = pool_assignments.c.agent_id if kind == "agent" else pool_assignments.c.group_id
    gone = conn.execute(
        delete(pool_assignments).where(pool_assignments.c.pool == pool, column == ident)
    ).rowcount
    if not gone:
        return False
    _log(conn, ChangeKind.UNASSIGN, f"pool/{pool} {kind}/{name}", actor, now)
    return True


def bearer_pools_of_agent(conn: Connection, agent_id: str) -> list[str]:
    mine = select(agent_groups.c.group_id).where(agent_groups.c.agent_id == agent_id)
    query = (
        select(pools.c.name)
        .select_from(pool_assignments.join(pools, pools.c.name == pool_assignments.c.pool))
        .where(
            pools.c.allow_bearer.is_(True),
            pools.c.deleting.is_(False),
            (pool_assignments.c.agent_id == agent_id) | pool_assignments.c.group_id.in_(mine),
        )
        .distinct()
        .order_by(pools.c.name)
    )
    return [r[0] for r in conn.execute(query)]


def list_assignments(conn: Connection, pool: str | None = None) -> list[PoolAssignment]:
    query = (
        select(
            pool_assignments.c.pool,
            agents.c.name.label("agent"),
            groups.c.name.label("group"),
            pool_assignments.c.created_by,
            pool_assignments.c.created_at,
            pool_assignments.c.agent_id,
            pool_assignments.c.group_id,
        )
        .select_from(
            pool_assignments.outerjoin(
                agents, agents.c.id == pool_assignments.c.agent_id
            ).outerjoin(groups, groups.c.id == pool_assignments.c.group_id)
        )
        .order_by(pool_assignments.c.pool, pool_assignments.c.id)
    )
    if pool is not None:
        query = query.where(pool_assignments.c.pool == pool)
    return [
        PoolAssignment(
            r["pool"],
            r["agent"],
            r["group"],
            r["created_by"],
            r["created_at"],
            r["agent_id"],
            r["group_id"],
        )
        for r in conn.execute(query).mappings()
    ]


# approvals


def _approval(row: RowMapping) -> Approval:
    return Approval(
        id=row["id"],
        agent_id=row["agent_id"],
        session_id=row["session_id"],
        action=row["action"],
        resource=row["resource"],
        digest=row["digest"],
        detail=json.loads(row["detail"]),
        policies=tuple(p for p in row["policies"].split(",") if p),
        state=ApprovalState(row["state"]),
        requested_at=row["requested_at"],
        expires_at=row["expires_at"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        uses=int(row["uses"]),
        max_uses=None if row["max_uses"] is None else int(row["max_uses"]),
        window_s=int(row["window_s"]),
    )


def create_approval(conn: Connection, approval: Approval) -> Approval:
    conn.execute(
        insert(approvals).values(
            id=approval.id,
            agent_id=approval.agent_id,
            session_id=approval.session_id,
            action=approval.action,
            resource=approval.resource,
            digest=approval.digest,
            detail=json.dumps(approval.detail, sort_keys=True),
            policies=",".join(approval.policies),
            state=approval.state.value,
            requested_at=approval.requested_at,
            expires_at=approval.expires_at,
            uses=approval.uses,
            max_uses=approval.max_uses,
            window_s=approval.window_s,
        )
    )
    return approval


def get_approval(conn: Connection, approval_id: str) -> Approval:
    row = conn.execute(select(approvals).where(approvals.c.id == approval_id)).mappings().first()
    if row is None:
        raise NotFoundError(
            f"no approval {approval_id!r}", hint="corral approvals list shows the approvals"
        )
    return _approval(row)


def approval_for(conn: Connection, agent_id: str, digest: str, now: datetime) -> Approval | None:
    """The newest approval of this exact request that still counts: not expired, and not an
    approval whose uses are spent (the next identical request asks again)."""
    row = (
        conn.execute(
            select(approvals)
            .where(
                approvals.c.agent_id == agent_id,
                approvals.c.digest == digest,
                approvals.c.state != ApprovalState.EXPIRED.value,
                approvals.c.expires_at > now,
                or_(approvals.c.max_uses.is_(None), approvals.c.uses < approvals.c.max_uses),
            )
            .order_by(approvals.c.requested_at.desc(), approvals.c.id)
            .limit(1)
        )
        .mappings()
        .first()
    )
    return _approval(row) if row else None


def list_approvals(
    conn: Connection,
    *,
    state: ApprovalState | None = None,
    agent_ids: Sequence[str] | None = None,
) -> list[Approval]:
    query = select(approvals).order_by(approvals.c.requested_at.desc(), approvals.c.id)
    if state is not None:
        query = query.where(approvals.c.state == state.value)
    if agent_ids is not None:
        query = query.where(approvals.c.agent_id.in_(list(agent_ids)))
    return [_approval(r) for r in conn.execute(query).mappings()]


def use_approval(conn: Connection, approval_id: str, now: datetime) -> bool:
    """Count one use of an approved, unexpired approval that has uses left; False if it has
    none (spent by a concurrent request, or expired). Conditional, so two requests racing for
    the last use do not both get it."""
    return bool(
        conn.execute(
            update(approvals)
            .where(
                approvals.c.id == approval_id,
                approvals.c.state == ApprovalState.APPROVED.value,
                approvals.c.expires_at > now,
                or_(approvals.c.max_uses.is_(None), approvals.c.uses < approvals.c.max_uses),
            )
            .values(uses=approvals.c.uses + 1)
        ).rowcount
    )


def expire_approvals(conn: Connection, now: datetime) -> int:
    """Mark every approval past its expiry as expired; how many were."""
    return int(
        conn.execute(
            update(approvals)
            .where(
                approvals.c.expires_at <= now,
                approvals.c.state != ApprovalState.EXPIRED.value,
            )
            .values(state=ApprovalState.EXPIRED.value)
        ).rowcount
    )


def decide_approval(
    conn: Connection,
    approval_id: str,
    *,
    approve: bool,
    by: str,
    now: datetime,
) -> Approval:
    """Answer a pending approval; it then stands (approved or denied) for its `window_s`.

    Only a pending, unexpired approval can be answered, once: the update is conditional, so two
    sponsors answering at once do not both win.
    """
    found = get_approval(conn, approval_id)
    if found.state is ApprovalState.PENDING and found.expires_at <= now:
        found = replace(found, state=ApprovalState.EXPIRED)  # the store marks it (own commit)
    if found.state is not ApprovalState.PENDING:
        raise ConflictError(
            f"approval {approval_id} is already {found.state.value}",
            hint="the agent asks again to get a new approval request",
        )
    state = ApprovalState.APPROVED if approve else ApprovalState.DENIED
    changed = conn.execute(
        update(approvals)
        .where(
            and_(
                approvals.c.id == approval_id,
                approvals.c.state == ApprovalState.PENDING.value,
            )
        )
        .values(
            state=state.value,
            decided_by=by,
            decided_at=now,
            expires_at=now + timedelta(seconds=found.window_s),
        )
    ).rowcount
    if not changed:
        raise ConflictError(f"approval {approval_id} was answered meanwhile")
    return get_approval(conn, approval_id)


# session controls


def set_session_controls(
    conn: Connection, session_id: str, controls: dict[str, object], now: datetime
) -> dict[str, object]:
    """Record a session's controls once: the first record wins and never changes for the life
    of the session (an idempotent replay of the acquire gets the controls it got first)."""
    existing = get_session_controls(conn, session_id)
    if existing is not None:
        return existing
    conn.execute(
        insert(session_controls).values(
            session_id=session_id, controls=json.dumps(controls, sort_keys=True), created_at=now
        )
    )
    return controls


def get_session_controls(conn: Connection, session_id: str) -> dict[str, object] | None:
    text = conn.scalar(
        select(session_controls.c.controls).where(session_controls.c.session_id == session_id)
    )
    return json.loads(text) if text is not None else None
