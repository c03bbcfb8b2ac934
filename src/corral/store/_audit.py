"""The audit log's rows: statements only (the tree's rules live in corral.audit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update

from corral.store._tables import audit_checkpoints, audit_entries, audit_state, audit_tiles

HASH = 32


@dataclass(frozen=True)
class CheckpointRow:
    """A signed checkpoint as stored: the tree's size and root, and the signed note text."""

    size: int
    root: bytes
    note: str
    signed_at: datetime


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


# Built once: each append reads and writes a few tiles, and building the statements anew
# each time was most of an append's own cost.
_TILE_KEY = (audit_tiles.c.level == bindparam("t_level"), audit_tiles.c.idx == bindparam("t_idx"))
_READ_TILE = select(audit_tiles.c.hashes).where(*_TILE_KEY)
_UPDATE_TILE = update(audit_tiles).where(*_TILE_KEY).values(hashes=bindparam("t_hashes"))
_INSERT_TILE = insert(audit_tiles)


def read_tile(conn: Connection, level: int, index: int) -> bytes:
    row = conn.execute(_READ_TILE, {"t_level": level, "t_idx": index}).one_or_none()
    return b"" if row is None else bytes(row.hashes)


def write_tile(conn: Connection, level: int, index: int, hashes: bytes) -> None:
    done = conn.execute(_UPDATE_TILE, {"t_level": level, "t_idx": index, "t_hashes": hashes})
    if done.rowcount == 0:
        conn.execute(_INSERT_TILE, {"level": level, "idx": index, "hashes": hashes})


@dataclass(frozen=True, slots=True)
class EntryKeys:
    """What an entry is found by besides its index: its record's id, trace and session."""

    record_id: str | None = None
    trace_id: str | None = None
    session_id: str | None = None


_NO_KEYS = EntryKeys()
_INSERT_QMARK = (  # SQLite's paramstyle
    "INSERT INTO audit_entries (idx, entry, record_id, trace_id, session_id) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_FORMAT = (  # psycopg's
    "INSERT INTO audit_entries (idx, entry, record_id, trace_id, session_id) "
    "VALUES (%s, %s, %s, %s, %s)"
)


def add_entries(
    conn: Connection,
    first: int,
    entries: list[bytes],
    keys: Sequence[EntryKeys] | None = None,
) -> None:
    if keys is not None and len(keys) != len(entries):
        raise ValueError("one EntryKeys (record id, trace, session) per entry")
    found = keys if keys is not None else [_NO_KEYS] * len(entries)
    if not entries:
        return
    # The log's hot path: the driver's executemany straight, without SQLAlchemy building
    # parameters row by row (that was a third of an append's time).
    conn.exec_driver_sql(
        _INSERT_QMARK if conn.dialect.paramstyle == "qmark" else _INSERT_FORMAT,
        [
            (first + i, e, k.record_id, k.trace_id, k.session_id)
            for i, (e, k) in enumerate(zip(entries, found, strict=True))
        ],
    )


def keyed_entries(
    conn: Connection,
    *,
    trace_id: str | None = None,
    session_id: str | None = None,
    start: int = 0,
    limit: int = 10_000,
) -> list[tuple[int, bytes]]:
    """(index, entry) of a trace's or a session's entries from `start`, in order."""
    column = audit_entries.c.trace_id if trace_id is not None else audit_entries.c.session_id
    value = trace_id if trace_id is not None else session_id
    rows = conn.execute(
        select(audit_entries.c.idx, audit_entries.c.entry)
        .where(column == value, audit_entries.c.idx >= start)
        .order_by(audit_entries.c.idx)
        .limit(limit)
    ).all()
    return [(int(r.idx), bytes(r.entry)) for r in rows]


def index_of_record(conn: Connection, record_id: str) -> int | None:
    """The lowest index of an entry with this record id (None: no such entry)."""
    row = conn.execute(
        select(audit_entries.c.idx)
        .where(audit_entries.c.record_id == record_id)
        .order_by(audit_entries.c.idx)
        .limit(1)
    ).one_or_none()
    return None if row is None else int(row.idx)


def _checkpoint(row: object) -> CheckpointRow:
    return CheckpointRow(
        int(row.size),  # type: ignore[attr-defined]
        bytes(row.root),  # type: ignore[attr-defined]
        str(row.note),  # type: ignore[attr-defined]
        row.signed_at,  # type: ignore[attr-defined]
    )


_CHECKPOINT_COLUMNS = (
    audit_checkpoints.c.size,
    audit_checkpoints.c.root,
    audit_checkpoints.c.note,
    audit_checkpoints.c.signed_at,
)


def add_checkpoint(conn: Connection, checkpoint: CheckpointRow) -> None:
    conn.execute(
        insert(audit_checkpoints).values(
            size=checkpoint.size,
            root=checkpoint.root,
            note=checkpoint.note,
            signed_at=checkpoint.signed_at,
        )
    )


def latest_checkpoint(conn: Connection) -> CheckpointRow | None:
    row = conn.execute(
        select(*_CHECKPOINT_COLUMNS).order_by(audit_checkpoints.c.size.desc()).limit(1)
    ).one_or_none()
    return None if row is None else _checkpoint(row)


def checkpoint_at_or_after(conn: Connection, size: int) -> CheckpointRow | None:
    """The smallest checkpoint of at least `size` entries."""
    row = conn.execute(
        select(*_CHECKPOINT_COLUMNS)
        .where(audit_checkpoints.c.size >= size)
        .order_by(audit_checkpoints.c.size)
        .limit(1)
    ).one_or_none()
    return None if row is None else _checkpoint(row)


def checkpoints(conn: Connection, start: int = 0, limit: int | None = None) -> list[CheckpointRow]:
    """Checkpoints of at least `start` entries, smallest first."""
    query = (
        select(*_CHECKPOINT_COLUMNS)
        .where(audit_checkpoints.c.size >= start)
        .order_by(audit_checkpoints.c.size)
    )
    if limit is not None:
        query = query.limit(limit)
    return [_checkpoint(r) for r in conn.execute(query)]


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
