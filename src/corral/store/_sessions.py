"""Session rows: atomic acquire (one READY PC to exactly one session), touch, release, eviction."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, exists, func, insert, select, update

from corral.domain.models import PCState, Session, SessionState
from corral.errors import ConflictError, NotFoundError, SessionLimitError
from corral.store._pools import lock_pool
from corral.store._rows import session_from_row
from corral.store._tables import pcs, pools, sessions

__all__ = [
    "acquire",
    "get_session",
    "list_sessions",
    "release_session",
    "sessions_to_evict",
    "touch_session",
]

_ACTIVE = SessionState.ACTIVE.value


def session_not_found(session_id: str) -> NotFoundError:
    return NotFoundError(
        f"no session with id {session_id!r}", hint="corral session list shows the sessions"
    )


def _by_key(conn: Connection, key: str) -> tuple[Session, str] | None:
    """The session made with this idempotency key (in any pool), and its request hash.

    Looked up across pools: the request hash covers the pool, so the same key sent to another
    pool is a different request (409), never a second PC.
    """
    query = select(sessions).where(sessions.c.idempotency_key == key)
    row = conn.execute(query).mappings().first()
    return (session_from_row(row), row["request_hash"]) if row else None


def acquire(
    conn: Connection,
    pool: str,
    *,
    session_id: str,
    expires_at: datetime,
    idempotency_key: str | None,
    request_hash: str,
    now: datetime,
    owner: str | None = None,
    limit_owner: bool = False,
) -> tuple[Session, bool] | None:
    """Bind one READY PC of `pool` to a new session, or replay an idempotent request.

    With `limit_owner` (an agent acquiring), `owner` may hold at most the pool's
    `max_sessions_per_agent` active sessions in it; SessionLimitError past that.

    Runs inside one write transaction (BEGIN IMMEDIATE on SQLite, so writers take turns).
    """
    postgres = conn.dialect.name == "postgresql"
    if idempotency_key is not None:
        # 1. On PostgreSQL, requests with the same key take turns, so a retry racing the first
        #    request waits for its answer instead of claiming a second PC. (The unique
        #    constraint on (pool, idempotency_key) still backs this up.)
        if postgres:
            conn.execute(
                select(
                    func.pg_advisory_xact_lock(
                        func.hashtextextended(f"corral-acquire:{idempotency_key}", 0)
                    )
                )
            )
        # 2. A known key answers with the session it made, if the request is the same.
        known = _by_key(conn, idempotency_key)
        if known is not None:
            session, known_hash = known
            if known_hash != request_hash:
                raise ConflictError(
                    "idempotency key reused with a different request",
                    hint="use a new Idempotency-Key for a new request",
                )
            return session, False
    # 3. The pool must lend. Its row is share-locked, so marking it deleting waits for us and
    #    no session starts after the drain has begun.
    spec = lock_pool(conn, pool, exclusive=False)
    if spec.deleting:
        raise ConflictError(f"pool {pool!r} is being deleted", hint="acquire from another pool")
    # 3b. The per-agent limit, counted and claimed in this one transaction. SQLite: writers
    #     already take turns (BEGIN IMMEDIATE). PostgreSQL: the pool row is only share-locked,
    #     so one agent's acquires in this pool take turns on an advisory lock (other agents and
    #     other pools do not wait), and each sees the sessions the one before it committed.
    if limit_owner and owner is not None:
        if postgres:
            conn.execute(
                select(
                    func.pg_advisory_xact_lock(
                        func.hashtextextended(f"corral-agent-limit:{pool}:{owner}", 0)
                    )
                )
            )
        held_now = conn.scalar(
            select(func.count())
            .select_from(sessions)
            .where(sessions.c.owner == owner, sessions.c.state == _ACTIVE, sessions.c.pool == pool)
        )
        limit = spec.spec.agent_limit
        if (held_now or 0) >= limit:
            raise SessionLimitError(
                f"agent {owner} already holds {held_now} session(s) in pool {pool!r}, its limit "
                f"there (max_sessions_per_agent {limit})",
                hint="release a session first (release_pc, or DELETE /v1/sessions/{id}); an "
                "admin may raise the limit: corral pool create --max-sessions-per-agent N",
            )
    # 4. Claim one READY PC that no active session holds. SKIP LOCKED lets concurrent acquires
    #    on PostgreSQL each take a different PC without waiting on each other; SQLite renders no
    #    lock clause and relies on the writer lock taken at BEGIN IMMEDIATE.
    held = exists().where(sessions.c.pc_id == pcs.c.id, sessions.c.state == _ACTIVE)
    pick = (
        select(pcs.c.id)
        .where(pcs.c.pool == pool, pcs.c.state == PCState.READY.value, ~held)
        .order_by(pcs.c.updated_at, pcs.c.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=pcs)
    )
    pc_id = conn.scalar(pick)
    if pc_id is None:
        return None
    # 5. Compare-and-set READY -> IN_USE, then record the session, both in this transaction.
    claim = (
        update(pcs)
        .where(pcs.c.id == pc_id, pcs.c.state == PCState.READY.value)
        .values(state=PCState.IN_USE.value, session_id=session_id, detail="", updated_at=now)
    )
    if conn.execute(claim).rowcount != 1:
        return None
    session = Session(
        id=session_id,
        pool=pool,
        pc_id=pc_id,
        state=SessionState.ACTIVE,
        created_at=now,
        expires_at=expires_at,
        last_activity=now,
        idempotency_key=idempotency_key,
        owner=owner,
    )
    conn.execute(
        insert(sessions).values(
            id=session_id,
            pool=pool,
            pc_id=pc_id,
            state=_ACTIVE,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            created_at=now,
            expires_at=expires_at,
            last_activity=now,
            owner=owner,
        )
    )
    return session, True


def get_session(conn: Connection, session_id: str) -> Session:
    row = conn.execute(select(sessions).where(sessions.c.id == session_id)).mappings().first()
    if row is None:
        raise session_not_found(session_id)
    return session_from_row(row)


def list_sessions(
    conn: Connection, *, active_only: bool, pool: str | None, owner: str | None = None
) -> list[Session]:
    query = select(sessions).order_by(sessions.c.created_at, sessions.c.id)
    if owner is not None:
        query = query.where(sessions.c.owner == owner)
    if active_only:
        query = query.where(sessions.c.state == _ACTIVE)
    if pool is not None:
        query = query.where(sessions.c.pool == pool)
    return [session_from_row(r) for r in conn.execute(query).mappings()]


def touch_session(conn: Connection, session_id: str, now: datetime) -> None:
    """Record activity on an active session; last_activity only moves forward."""
    query = (
        update(sessions)
        .where(
            sessions.c.id == session_id,
            sessions.c.state == _ACTIVE,
            sessions.c.last_activity < now,
        )
        .values(last_activity=now)
    )
    if conn.execute(query).rowcount == 0:
        get_session(conn, session_id)  # unknown raises; released or newer activity is no change


def release_session(
    conn: Connection, session_id: str, *, reason: str, now: datetime, by: str | None = None
) -> Session | None:
    """End an active session and send its PC to reset; None if it had already ended."""
    # 1. Lock the session row, so two releases cannot both see it active.
    row = (
        conn.execute(select(sessions).where(sessions.c.id == session_id).with_for_update())
        .mappings()
        .first()
    )
    if row is None:
        raise session_not_found(session_id)
    if row["state"] != _ACTIVE:
        return None
    # 2. Mark it released: its URLs stop working from this commit on.
    conn.execute(
        update(sessions)
        .where(sessions.c.id == session_id)
        .values(
            state=SessionState.RELEASED.value,
            released_at=now,
            release_reason=reason,
            released_by=by,
        )
    )
    # 3. Its PC goes to reset, only if it is still bound to this session (a PC quarantined or
    #    destroyed meanwhile keeps its state).
    conn.execute(
        update(pcs)
        .where(
            pcs.c.id == row["pc_id"],
            pcs.c.state == PCState.IN_USE.value,
            pcs.c.session_id == session_id,
        )
        .values(state=PCState.RESETTING.value, session_id=None, detail="", updated_at=now)
    )
    return get_session(conn, session_id)


def sessions_to_evict(conn: Connection, now: datetime) -> list[tuple[Session, str]]:
    """Active sessions past their maximum lifetime ("max_lifetime") or idle longer than their
    pool's idle timeout ("idle"); the lifetime wins when both hold."""
    query = (
        select(sessions, pools.c.idle_timeout_s)
        .join(pools, pools.c.name == sessions.c.pool)
        .where(sessions.c.state == _ACTIVE)
        .order_by(sessions.c.created_at, sessions.c.id)
    )
    due: list[tuple[Session, str]] = []
    for row in conn.execute(query).mappings():
        session = session_from_row(row)
        if now >= session.expires_at:
            due.append((session, "max_lifetime"))
        elif now - session.last_activity > timedelta(seconds=row["idle_timeout_s"]):
            due.append((session, "idle"))
    return due
