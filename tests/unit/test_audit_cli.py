"""`corral audit verify` on the host's database: intact, then tampered (first bad index)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from corral.audit import log
from corral.cli.audit import app
from corral.store import Store
from corral.store._tables import audit_entries


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/corral.db"
    monkeypatch.setenv("CORRAL_DATABASE_URL", url)
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path / "data"))
    return url


def test_verify_says_intact_then_names_the_first_bad_index(db: str) -> None:
    store = Store(db)
    store.migrate()
    with store.transaction() as uow:
        log.append(uow, [f"r{i}".encode() for i in range(300)])
    done = CliRunner().invoke(app, ["verify"])
    assert done.exit_code == 0, done.output
    assert "audit log intact: 300 records" in done.output
    with store.transaction() as uow:
        uow.connection.execute(
            update(audit_entries).where(audit_entries.c.idx == 42).values(entry=b"r42!")
        )
    store.close()
    bad = CliRunner().invoke(app, ["verify"])
    assert bad.exit_code == 1 and "first bad index: 42" in bad.output
    as_json = CliRunner().invoke(app, ["verify", "--output", "json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["first_bad_index"] == 42
