"""Durable state of pools, PCs and sessions: SQLite by default, PostgreSQL by URL.

`Store` is the only entry point; its return values are the domain's records.
"""

from __future__ import annotations

from corral.store._files import check_data_files
from corral.store._store import KeyRotation, Store

__all__ = ["KeyRotation", "Store", "check_data_files"]
