"""Pool rows: create, read, mark for draining, delete once empty."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select, update

from corral.domain.models import Pool, PoolSpec, SessionState, validate_pool_spec
from corral.errors import ConflictError, NotFoundError
from corral.store._rows import pool_from_row, pool_values
from corral.store._tables import pcs, pools, sessions

__all__ = [
    "create_pool",
    "delete_pool",
    "get_pool",
    "list_pools",
    "lock_pool",
    "pool_exists_error",
    "pool_not_found",
    "set_pool_deleting",
]


def pool_not_found(name: str) -> NotFoundError:
    return NotFoundError(f"no pool named {name!r}", hint="corral pool list shows the pools")


def pool_exists_error(name: str) -> ConflictError:
    return ConflictError(
        f"a pool named {name!r} already exists",
        hint="choose another name, or delete that pool first (corral pool delete)",
    )


def lock_pool(conn: Connection, name: str, *, exclusive: bool) -> Pool:
    """Read the pool and lock its row on PostgreSQL: shared for acquires, exclusive for changes,
    so a pool marked deleting lends no further PC and a deleted pool takes no new row."""
    query = select(pools).where(pools.c.name == name)
    query = query.with_for_update(read=not exclusive)
    row = conn.execute(query).mappings().first()
    if row is None:
        raise pool_not_found(name)
    return pool_from_row(row)


def create_pool(conn: Connection, spec: PoolSpec, now: datetime) -> Pool:
    validate_pool_spec(spec)
    if conn.execute(select(pools.c.name).where(pools.c.name == spec.name)).first():
        raise pool_exists_error(spec.name)
    conn.execute(insert(pools).values(**pool_values(spec), deleting=False, created_at=now))
    return Pool(spec=spec, created_at=now, deleting=False)


def get_pool(conn: Connection, name: str) -> Pool:
    row = conn.execute(select(pools).where(pools.c.name == name)).mappings().first()
    if row is None:
        raise pool_not_found(name)
    return pool_from_row(row)


def list_pools(conn: Connection) -> list[Pool]:
    rows = conn.execute(select(pools).order_by(pools.c.name)).mappings()
    return [pool_from_row(r) for r in rows]


def set_pool_deleting(conn: Connection, name: str) -> Pool:
    lock_pool(conn, name, exclusive=True)
    conn.execute(update(pools).where(pools.c.name == name).values(deleting=True))
    return get_pool(conn, name)


def delete_pool(conn: Connection, name: str) -> None:
    """Delete an empty pool with its released sessions; refuse while PCs or sessions remain."""
    lock_pool(conn, name, exclusive=True)
    n_pcs = conn.scalar(select(func.count()).select_from(pcs).where(pcs.c.pool == name)) or 0
    if n_pcs:
        raise ConflictError(
            f"pool {name!r} still has {n_pcs} PC(s)",
            hint="drain it first: mark it deleting and let its PCs be destroyed",
        )
    active = (
        conn.scalar(
            select(func.count())
            .select_from(sessions)
            .where(sessions.c.pool == name, sessions.c.state == SessionState.ACTIVE.value)
        )
        or 0
    )
    if active:
        raise ConflictError(
            f"pool {name!r} still has {active} active session(s)",
            hint="release them first (corral session release)",
        )
    conn.execute(delete(sessions).where(sessions.c.pool == name))
    conn.execute(delete(pools).where(pools.c.name == name))
