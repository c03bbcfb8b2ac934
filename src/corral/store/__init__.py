"""Durable state of pools, PCs and sessions: SQLite by default, PostgreSQL by URL.

`Store` is the only entry point; its return values are the domain's records.
"""

from __future__ import annotations

from corral.store._store import Store

__all__ = ["Store"]
