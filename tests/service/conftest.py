"""Service tests that need a database run on SQLite and on PostgreSQL, like the store's."""

from tests.store.conftest import db_url, pg_url

__all__ = ["db_url", "pg_url"]
