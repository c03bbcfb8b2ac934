"""The audit log in the store: appends join the caller's unit of work, so a change and its
records commit together or not at all (a crash or kill -9 at any point loses no acknowledged
record and leaves none of something that did not happen). Appends take turns on the log's
state row; tree heads and proofs are read from the stored tiles (corral.audit.tlog.tiled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from corral.audit.tlog.tiled import TiledLog

if TYPE_CHECKING:
    from corral.store import EntryKeys, UnitOfWork

__all__ = ["append", "consistency", "head", "inclusion"]


def append(
    uow: UnitOfWork,
    entries: Sequence[bytes],
    keys: Sequence[EntryKeys] | None = None,
) -> int:
    """Add `entries` to the log in `uow`'s transaction; the index of the first. `keys` (one
    per entry) name each entry's record, trace and session, to find it by."""
    if keys is not None and len(keys) != len(entries):
        raise ValueError("one EntryKeys (record id, trace, session) per entry")
    size, edge = uow.audit.state(lock=True)
    log = TiledLog(uow.audit, size, edge)
    first = log.append(entries)
    uow.audit.add_entries(first, list(entries), keys)
    uow.audit.set_state(log.size, log.edge.hashes)
    return first


def head(uow: UnitOfWork) -> tuple[int, bytes]:
    """(size, root hash) as of `uow`'s view."""
    size, edge = uow.audit.state()
    return size, TiledLog(uow.audit, size, edge).root()


def inclusion(uow: UnitOfWork, index: int, size: int) -> list[bytes]:
    current, edge = uow.audit.state()
    if size > current:
        raise ValueError(f"the log has {current} entries, not {size}")
    return TiledLog(uow.audit, current, edge).inclusion(index, size)


def consistency(uow: UnitOfWork, first: int, second: int) -> list[bytes]:
    current, edge = uow.audit.state()
    if second > current:
        raise ValueError(f"the log has {current} entries, not {second}")
    return TiledLog(uow.audit, current, edge).consistency(first, second)
