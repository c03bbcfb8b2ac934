"""Every store test runs on SQLite and on PostgreSQL.

PostgreSQL comes from CORRAL_TEST_PG_URL, else from scripts/postgres-test.sh (run once per test
session; it installs and starts a private server as root). Each test gets its own schema.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import NullPool, create_engine, text
from sqlalchemy.engine import make_url

from corral.domain.models import PCState, PoolSpec
from corral.store import Store

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "postgres-test.sh"


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("CORRAL_TEST_PG_URL")
    if url:
        return url
    proc = subprocess.run(
        ["bash", str(_SCRIPT)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(f"{_SCRIPT.name} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/corral.db"
        return
    base = request.getfixturevalue("pg_url")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.migrate()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ready_pool(store: Store) -> list[str]:
    """Pool `p` with ten READY PCs; returns their ids."""
    store.create_pool(PoolSpec(name="p", image="minimal", max=20))
    ids = [f"pc-{i:02d}" for i in range(10)]
    for pc_id in ids:
        store.add_pc("p", pc_id, PCState.READY)
    return ids
