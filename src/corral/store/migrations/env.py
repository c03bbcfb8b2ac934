"""Alembic environment: runs on the connection `Store.migrate` hands over, never its own."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from corral.store._tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by table copy
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError("run migrations through corral.store.Store.migrate")
_run(_connection)
