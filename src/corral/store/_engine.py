"""Engines and transactions tuned for concurrent writers on SQLite and PostgreSQL.

SQLite serializes writers by file lock, so every write transaction starts with BEGIN IMMEDIATE:
taking the lock up front means two writers never both read and then race to upgrade (which SQLite
answers with "database is locked" at once, past any busy timeout). PostgreSQL keeps its default
READ COMMITTED; the repositories lock the rows they change.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from corral.config import paths
from corral.errors import StoreUnavailableError

__all__ = [
    "BUSY_TIMEOUT_S",
    "default_url",
    "is_outage",
    "make_engine",
    "outage_errors",
    "sqlite_path",
    "transaction",
    "unavailable_on_outage",
]

BUSY_TIMEOUT_S = 10
_WRITE = "corral_write"


def default_url() -> str:
    """CORRAL_DATABASE_URL, else a SQLite file in the data folder (created if missing)."""
    url = os.environ.get("CORRAL_DATABASE_URL")
    if url:
        return url
    data = paths().data
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    return f"sqlite:///{data}/corral.db"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases and in-memory ones)."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:":
        return None
    if name.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return Path(name)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys, a busy timeout and our own BEGINs."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    return create_engine(url)


def _sqlite_engine(url: str) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        # Create the file 0600 before SQLite does (it would use 0644 under the usual umask);
        # SQLite gives its -wal and -shm files the database file's mode.
        with contextlib.suppress(FileNotFoundError):  # no such folder: let SQLite say so
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S},
        pool_size=10,
        max_overflow=20,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The driver must not BEGIN on its own: `_on_begin` does, with the right mode.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _enable_wal(cursor: Any) -> None:
    """Switch a database file to WAL once (the mode persists in the file).

    Switching ignores the busy timeout, so connections opening a new file together retry here.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def outage_errors(engine: Engine) -> tuple[type[Exception], ...]:
    """The errors that mean "database down, unreachable or locked past the busy timeout":
    SQLAlchemy's OperationalError, and the DBAPI's own (raised on raw connections)."""
    dbapi_error = getattr(engine.dialect.loaded_dbapi, "OperationalError", OperationalError)
    return (OperationalError, dbapi_error)


# SQLite reports a bad statement as an OperationalError too ("no such table"): that is a
# crash, not an outage. These are the outages.
_SQLITE_OUTAGES = ("locked", "busy", "unable to open", "disk i/o", "readonly", "disk is full")


def is_outage(exc: Exception) -> bool:
    """Is this driver error a store outage (temporary) rather than a bug?"""
    driver_error = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's
    if isinstance(driver_error, sqlite3.Error):
        text = str(driver_error).lower()
        return any(mark in text for mark in _SQLITE_OUTAGES)
    return True


@contextmanager
def unavailable_on_outage(engine: Engine) -> Iterator[None]:
    """The store's boundary: an outage leaves the store as `StoreUnavailableError` (503,
    retry after), never as the driver's or SQLAlchemy's error."""
    try:
        yield
    except outage_errors(engine) as exc:
        if not is_outage(exc):
            raise
        raise StoreUnavailableError() from exc


@contextmanager
def transaction(engine: Engine, *, write: bool) -> Iterator[Connection]:
    """One transaction on its own connection: committed on success, rolled back on error."""
    with unavailable_on_outage(engine), engine.connect() as conn:
        if write:
            conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn
