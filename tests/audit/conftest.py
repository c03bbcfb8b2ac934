"""The store fixtures of tests/store (SQLite and PostgreSQL) for the audit log's tests."""

from tests.store.conftest import db_url, pg_url, store

__all__ = ["db_url", "pg_url", "store"]
