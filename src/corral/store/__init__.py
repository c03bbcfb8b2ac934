"""Durable state of pools, PCs and sessions: SQLite by default, PostgreSQL by URL.

`Store` is the only entry point; its return values are the domain's records. `Store.transaction()`
yields a `UnitOfWork`: several repositories' writes in one transaction.
"""

from __future__ import annotations

from corral.store._audit import CheckpointRow, EntryKeys
from corral.store._files import check_data_files
from corral.store._store import KeyRotation, Store
from corral.store._uow import UnitOfWork, UnitOfWorkError

__all__ = [
    "CheckpointRow",
    "EntryKeys",
    "KeyRotation",
    "Store",
    "UnitOfWork",
    "UnitOfWorkError",
    "check_data_files",
]
