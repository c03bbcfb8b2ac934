"""Where the store lives by default, and the SQLite settings concurrency relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from corral.store import Store
from corral.store._engine import default_url, make_engine


def test_default_url_is_a_file_in_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_DATABASE_URL", raising=False)
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path / "data"))
    store = Store()
    try:
        assert store.url == f"sqlite:///{tmp_path}/data/corral.db"
        assert store.dialect == "sqlite"
        assert (tmp_path / "data").is_dir()
    finally:
        store.close()


def test_database_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg://u:p@127.0.0.1:1/db"
    monkeypatch.setenv("CORRAL_DATABASE_URL", url)
    assert default_url() == url
    store = Store()  # connects lazily: nothing is reached here
    try:
        assert (store.url, store.dialect) == (url, "postgresql")
    finally:
        store.close()


def test_sqlite_runs_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/c.db")
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert conn.scalar(text("PRAGMA foreign_keys")) == 1
            assert conn.scalar(text("PRAGMA busy_timeout")) == 10_000
    finally:
        engine.dispose()
