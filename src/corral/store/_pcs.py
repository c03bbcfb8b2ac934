"""PC rows: the store's mirror of the runtime PCs that belong to pools, and their states."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select, update

from corral.domain.models import PC, PCState
from corral.errors import ConflictError, PCNotFoundError
from corral.store._pools import get_pool
from corral.store._rows import pc_from_row
from corral.store._tables import pcs

__all__ = [
    "add_pc",
    "delete_pc",
    "get_pc",
    "list_pcs",
    "pc_counts",
    "pc_exists_error",
    "set_pc_state",
]


def pc_not_found(pc_id: str) -> PCNotFoundError:
    return PCNotFoundError(f"no PC with id {pc_id!r}", hint="corral pool show lists a pool's PCs")


def pc_exists_error(pc_id: str) -> ConflictError:
    return ConflictError(f"a PC with id {pc_id!r} is already recorded")


def add_pc(conn: Connection, pool: str, pc_id: str, state: PCState, now: datetime) -> PC:
    get_pool(conn, pool)
    if conn.execute(select(pcs.c.id).where(pcs.c.id == pc_id)).first():
        raise pc_exists_error(pc_id)
    conn.execute(
        insert(pcs).values(
            id=pc_id,
            pool=pool,
            state=state.value,
            session_id=None,
            detail="",
            created_at=now,
            updated_at=now,
        )
    )
    return PC(id=pc_id, pool=pool, state=state, session_id=None, created_at=now)


def get_pc(conn: Connection, pc_id: str) -> PC:
    row = conn.execute(select(pcs).where(pcs.c.id == pc_id)).mappings().first()
    if row is None:
        raise pc_not_found(pc_id)
    return pc_from_row(row)


def list_pcs(conn: Connection, pool: str | None, state: PCState | None) -> list[PC]:
    query = select(pcs).order_by(pcs.c.pool, pcs.c.created_at, pcs.c.id)
    if pool is not None:
        query = query.where(pcs.c.pool == pool)
    if state is not None:
        query = query.where(pcs.c.state == state.value)
    return [pc_from_row(r) for r in conn.execute(query).mappings()]


def set_pc_state(
    conn: Connection,
    pc_id: str,
    state: PCState,
    *,
    expect: PCState | None,
    detail: str,
    now: datetime,
) -> bool:
    """Move a PC to `state`; with `expect`, only from that state (compare-and-set).

    Leaving IN_USE unbinds the PC from its session, so the row never names a session it no
    longer serves.
    """
    values: dict[str, object] = {"state": state.value, "detail": detail, "updated_at": now}
    if state is not PCState.IN_USE:
        values["session_id"] = None
    query = update(pcs).where(pcs.c.id == pc_id).values(**values)
    if expect is not None:
        query = query.where(pcs.c.state == expect.value)
    if conn.execute(query).rowcount == 1:
        return True
    get_pc(conn, pc_id)  # raises if the PC is unknown; otherwise the state differed
    return False


def delete_pc(conn: Connection, pc_id: str) -> None:
    if conn.execute(delete(pcs).where(pcs.c.id == pc_id)).rowcount == 0:
        raise pc_not_found(pc_id)


def pc_counts(conn: Connection, pool: str) -> dict[PCState, int]:
    get_pool(conn, pool)
    counts = dict.fromkeys(PCState, 0)
    query = select(pcs.c.state, func.count()).where(pcs.c.pool == pool).group_by(pcs.c.state)
    for state, n in conn.execute(query):
        counts[PCState(state)] = int(n)
    return counts
