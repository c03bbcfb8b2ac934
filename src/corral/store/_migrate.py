"""Bring a database to the newest schema with Alembic, from code, inside one transaction."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from corral.store._engine import transaction

__all__ = ["alembic_config", "migrate"]

_SCRIPTS = Path(__file__).with_name("migrations")
_LOCK_ID = 0x636F7272616C  # "corral": one migrator at a time on a shared PostgreSQL


def alembic_config() -> Config:
    """Alembic's config built in code: the scripts ship inside the package, no alembic.ini."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def migrate(engine: Engine) -> None:
    """Upgrade to head; a no-op when already there. Concurrent callers take turns (the advisory
    lock on PostgreSQL, the writer lock of BEGIN IMMEDIATE on SQLite), and a failed upgrade
    leaves nothing half-done because both databases roll back DDL."""
    with transaction(engine, write=True) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
