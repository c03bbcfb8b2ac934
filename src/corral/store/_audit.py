"""The audit log's rows: statements only (the tree's rules live in corral.audit)."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select, update

from corral.store._tables import audit_entries, audit_state, audit_tiles

HASH = 32


def state(conn: Connection, *, lock: bool) -> tuple[int, tuple[bytes, ...]]:
    """(size, right edge). `lock`: hold the row until the transaction ends (appends take
    turns; SQLite's write transaction already does)."""
    query = select(audit_state.c.size, audit_state.c.edge).where(audit_state.c.id == 1)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).one()
    edge = bytes(row.edge)
    return int(row.size), tuple(edge[i : i + HASH] for i in range(0, len(edge), HASH))


def set_state(conn: Connection, size: int, edge: tuple[bytes, ...]) -> None:
    conn.execute(
        update(audit_state).where(audit_state.c.id == 1).values(size=size, edge=b"".join(edge))
    )


def read_tile(conn: Connection, level: int, index: int) -> bytes:
    row = conn.execute(
        select(audit_tiles.c.hashes).where(audit_tiles.c.level == level, audit_tiles.c.idx == index)
    ).one_or_none()
    return b"" if row is None else bytes(row.hashes)


def write_tile(conn: Connection, level: int, index: int, hashes: bytes) -> None:
    done = conn.execute(
        update(audit_tiles)
        .where(audit_tiles.c.level == level, audit_tiles.c.idx == index)
        .values(hashes=hashes)
    )
    if done.rowcount == 0:
        conn.execute(insert(audit_tiles).values(level=level, idx=index, hashes=hashes))


def add_entries(conn: Connection, first: int, entries: list[bytes]) -> None:
    if entries:
        conn.execute(
            insert(audit_entries),
            [{"idx": first + i, "entry": e} for i, e in enumerate(entries)],
        )


def entries(conn: Connection, start: int, end: int) -> list[bytes]:
    rows = conn.execute(
        select(audit_entries.c.entry)
        .where(audit_entries.c.idx >= start, audit_entries.c.idx < end)
        .order_by(audit_entries.c.idx)
    )
    return [bytes(r.entry) for r in rows]


def tile_keys(conn: Connection) -> list[tuple[int, int]]:
    rows = conn.execute(select(audit_tiles.c.level, audit_tiles.c.idx))
    return [(int(r.level), int(r.idx)) for r in rows]


def snapshot(conn: Connection) -> None:
    """On PostgreSQL, make this (read-only) transaction see one snapshot for all its reads,
    as a verifier must while the server appends; SQLite's read transaction already does."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def entry_rows(conn: Connection, start: int, limit: int) -> list[tuple[int, bytes]]:
    """(index, entry) of the first `limit` rows from index `start` on, as stored (a verifier
    must see gaps and strays, not a renumbered list)."""
    rows = conn.execute(
        select(audit_entries.c.idx, audit_entries.c.entry)
        .where(audit_entries.c.idx >= start)
        .order_by(audit_entries.c.idx)
        .limit(limit)
    )
    return [(int(r.idx), bytes(r.entry)) for r in rows]
