"""`corral user show|roles|revoke` and `corral agent show|revoke` on a temporary SQLite store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.cli.identity import agent_app, user_app
from corral.domain.identity import Role
from corral.store import Store

ENV = {"COLUMNS": "250"}


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/corral.db"
    monkeypatch.setenv("CORRAL_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    return url


def user(*args: str) -> Result:
    return CliRunner().invoke(user_app, list(args), env=ENV)


def agent(*args: str) -> Result:
    return CliRunner().invoke(agent_app, list(args), env=ENV)


def _revoked_before(db: str, ref: str) -> datetime | None:
    store = Store(db)
    try:
        status = store.principal_status(ref)
    finally:
        store.close()
    assert status is not None
    return status.tokens_revoked_before


def test_agent_show_and_revoke(db: str, tmp_path: Path) -> None:
    user("create", "alice", "--role", "sponsor")
    assert agent("create", "bot", "--sponsor", "alice").exit_code == 0
    cred = json.loads((tmp_path / "bot.json").read_text())
    shown = agent("show", "bot")
    assert shown.exit_code == 0, shown.output
    assert cred["agent_id"] in shown.output and "alice" in shown.output
    assert cred["key"]["kid"] in shown.output and cred["key"]["d"] not in shown.output

    assert _revoked_before(db, cred["agent_id"]) is None
    revoked = agent("revoke", "bot")
    assert revoked.exit_code == 0, revoked.output
    assert f"tokens of agent bot ({cred['agent_id']}) revoked" in revoked.output
    when = _revoked_before(db, cred["agent_id"])
    assert when is not None and abs(datetime.now(UTC) - when.replace(tzinfo=UTC)) < timedelta(
        minutes=1
    )
    # a user's name is not an agent's
    missing = agent("revoke", "alice")
    assert missing.exit_code == 3 and "no agent named 'alice'" in missing.output
    assert agent("show", "ghost").exit_code == 3


def test_user_show_roles_and_revoke(db: str) -> None:
    user("create", "root", "--role", "admin")
    user("create", "alice", "--role", "sponsor")
    agent("create", "bot", "--sponsor", "alice")
    shown = user("show", "alice")
    assert shown.exit_code == 0 and "sponsor" in shown.output

    changed = user("roles", "alice", "--role", "security_admin")
    assert changed.exit_code == 0, changed.output
    assert "agent bot disabled: no sponsor" in changed.output
    last = user("roles", "root")
    assert last.exit_code == 8 and "last enabled admin" in last.output
    assert user("roles", "alice", "--role", "wizard").exit_code == 2
    store = Store(db)
    try:
        assert store.get_user("alice").roles == {Role.SECURITY_ADMIN}
        assert store.get_user("root").roles == {Role.ADMIN}
        alice_id = store.get_user("alice").id
    finally:
        store.close()

    revoked = user("revoke", "alice")
    assert revoked.exit_code == 0 and alice_id in revoked.output
    assert _revoked_before(db, alice_id) is not None
    assert user("revoke", "bot").exit_code == 3  # an agent is no user
