"""The store's boundary: an outage (database unreachable, file gone, locked past the busy
timeout) leaves the store as `StoreUnavailableError` (503, retry after), never as SQLAlchemy's
or the driver's error; a bad statement is still a crash. Real drivers, real failures."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from corral.errors import StoreUnavailableError, UnavailableError
from corral.store import Store


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_unreachable_database_is_store_unavailable(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/no-such-folder/corral.db"
    else:
        url = f"postgresql+psycopg://corral:corral@127.0.0.1:{_closed_port()}/corral"
    store = Store(url, key_file=tmp_path / "secrets.key")
    try:
        with pytest.raises(StoreUnavailableError) as info:
            store.list_pools()  # a transaction
        assert isinstance(info.value, UnavailableError) and info.value.retry_after_s == 2
        assert info.value.status == 503 and info.value.code == "store_unavailable"
        assert isinstance(info.value.__cause__, OperationalError)  # kept for the log
        with pytest.raises(StoreUnavailableError):
            store.principal_status("agent-1")  # the hot path's raw connection
    finally:
        store.close()


def test_a_bad_statement_is_a_crash_not_an_outage(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/corral.db", key_file=tmp_path / "secrets.key")
    try:  # never migrated: "no such table" is SQLite's OperationalError, but a bug
        with pytest.raises(OperationalError, match="no such table"):
            store.list_pools()
    finally:
        store.close()
