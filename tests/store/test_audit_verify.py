"""The offline verifier against every kind of change to a stored log (SQLite and PostgreSQL):
a record changed, deleted, reordered or inserted, a tile or the head changed; each is found,
with the first bad index (0-based), and an intact log passes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Connection, delete, insert, select, update

from corral.audit import log
from corral.audit.verify import verify_log
from corral.store import Store
from corral.store._tables import audit_entries, audit_state, audit_tiles

SIZE = 700


@pytest.fixture
def filled(store: Store) -> Store:
    entries = [f"record {i}".encode() for i in range(SIZE)]
    for lo in range(0, SIZE, 100):
        with store.transaction() as uow:
            log.append(uow, entries[lo : lo + 100])
    return store


def _tamper(store: Store, change: Callable[[Connection], object]) -> None:
    with store.transaction() as uow:
        change(uow.connection)


def _entry(conn: Connection, idx: int) -> bytes:
    return bytes(
        conn.execute(select(audit_entries.c.entry).where(audit_entries.c.idx == idx)).scalar_one()
    )


def _swap(conn: Connection, a: int, b: int) -> None:
    ea, eb = _entry(conn, a), _entry(conn, b)
    conn.execute(update(audit_entries).where(audit_entries.c.idx == a).values(entry=eb))
    conn.execute(update(audit_entries).where(audit_entries.c.idx == b).values(entry=ea))


def _insert_at(conn: Connection, at: int) -> None:
    rows = conn.execute(
        select(audit_entries.c.idx, audit_entries.c.entry).where(audit_entries.c.idx >= at)
    ).all()
    conn.execute(delete(audit_entries).where(audit_entries.c.idx >= at))
    conn.execute(insert(audit_entries), [{"idx": r.idx + 1, "entry": r.entry} for r in rows])
    conn.execute(insert(audit_entries).values(idx=at, entry=b"forged"))


def _tile_byte(conn: Connection, level: int, idx: int, offset: int) -> None:
    where = (audit_tiles.c.level == level, audit_tiles.c.idx == idx)
    hashes = bytearray(conn.execute(select(audit_tiles.c.hashes).where(*where)).scalar_one())
    hashes[offset] ^= 1
    conn.execute(update(audit_tiles).where(*where).values(hashes=bytes(hashes)))


CASES: dict[str, tuple[Callable[[Connection], object], int]] = {
    "a record changed": (
        lambda c: c.execute(
            update(audit_entries).where(audit_entries.c.idx == 412).values(entry=b"changed")
        ),
        412,
    ),
    "the first record changed": (
        lambda c: c.execute(
            update(audit_entries).where(audit_entries.c.idx == 0).values(entry=b"x")
        ),
        0,
    ),
    "the last record changed": (
        lambda c: c.execute(
            update(audit_entries).where(audit_entries.c.idx == SIZE - 1).values(entry=b"x")
        ),
        SIZE - 1,
    ),
    "a record deleted": (
        lambda c: c.execute(delete(audit_entries).where(audit_entries.c.idx == 300)),
        300,
    ),
    "two records reordered": (lambda c: _swap(c, 130, 530), 130),
    "a record inserted": (lambda c: _insert_at(c, 257), 257),
    "a record appended behind the log's back": (
        lambda c: c.execute(insert(audit_entries).values(idx=SIZE, entry=b"late")),
        SIZE,
    ),
    "a leaf hash in a tile changed": (lambda c: _tile_byte(c, 0, 1, 32 * 5), 256 + 5),
    "a level-1 hash changed": (lambda c: _tile_byte(c, 1, 0, 32 * 1), 256),
    "a tile planted beyond the size": (
        lambda c: c.execute(insert(audit_tiles).values(level=0, idx=9, hashes=bytes(32))),
        SIZE,
    ),
    "an entry with a negative index": (
        lambda c: c.execute(insert(audit_entries).values(idx=-1, entry=b"x")),
        0,
    ),
    "the head changed": (
        lambda c: c.execute(update(audit_state).values(edge=bytes(32) * bin(SIZE).count("1"))),
        0,
    ),
}


def test_an_intact_log_verifies(filled: Store) -> None:
    with filled.transaction(write=False) as uow:
        verdict = verify_log(uow)
        assert verdict.ok and verdict.size == SIZE and verdict.root == log.head(uow)[1]


@pytest.mark.parametrize("case", list(CASES))
def test_each_change_is_found_with_the_first_bad_index(filled: Store, case: str) -> None:
    change, first_bad = CASES[case]
    _tamper(filled, change)
    with filled.transaction(write=False) as uow:
        verdict = verify_log(uow)
    assert not verdict.ok, case
    assert verdict.first_bad == first_bad, (case, verdict.problems)
