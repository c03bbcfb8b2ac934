"""`corral user ...` and `corral agent ...` on a temporary SQLite store."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.cli.identity import agent_app, user_app
from corral.identity.directory import read_credential
from corral.store import Store

ENV = {"COLUMNS": "250"}


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/corral.db"
    monkeypatch.setenv("CORRAL_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    return url


def user(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(user_app, list(args), input=stdin, env=ENV)


def agent(*args: str) -> Result:
    return CliRunner().invoke(agent_app, list(args), env=ENV)


def _row(result: Result, name: str) -> str:
    return next(line for line in result.output.splitlines() if f" {name} " in line)


def test_create_and_list_users(db: str) -> None:
    result = user(
        "create", "alice", "--role", "sponsor", "--email", "alice@example.com", "--password-stdin",
        stdin="a long enough password\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = user("list")
    assert result.exit_code == 0, result.output
    row = _row(result, "alice")
    assert "sponsor" in row and "alice@example.com" in row and "yes" in row
    assert "a long enough password" not in result.output
    store = Store(db)
    try:
        stored = store.get_user_secrets("alice").password_hash
    finally:
        store.close()
    assert stored is not None and stored.startswith("$argon2id$")


def test_bad_input_is_a_clear_error(db: str) -> None:
    result = user("create", "alice", "--role", "root")
    assert result.exit_code == 2 and "unknown role" in result.output
    result = user("create", "Alice Smith")
    assert result.exit_code == 2 and "bad user name" in result.output
    result = user("create", "bob", "--password-stdin", stdin="short\n")
    assert result.exit_code == 2 and "too short" in result.output


def test_agent_needs_a_sponsor(db: str, tmp_path: Path) -> None:
    result = agent("create", "bot")
    assert result.exit_code == 2
    assert "at least one sponsor" in result.output and "--sponsor" in result.output
    assert not (tmp_path / "bot.json").exists()
    user("create", "carol")  # no sponsor role
    result = agent("create", "bot", "--sponsor", "carol")
    assert result.exit_code == 2 and "sponsor role" in result.output
    result = agent("create", "bot", "--sponsor", "nobody")
    assert result.exit_code == 3 and "no user named 'nobody'" in result.output


def test_agent_lifecycle(db: str, tmp_path: Path) -> None:
    assert user("create", "alice", "--role", "sponsor").exit_code == 0
    result = agent("create", "bot", "--sponsor", "alice")
    assert result.exit_code == 0, result.output
    path = tmp_path / "bot.json"
    cred = read_credential(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "bot.json" in result.output and cred["agent_id"] in result.output
    assert cred["token_endpoint"] == "http://127.0.0.1:8420/v1/token"  # noqa: S105

    # a second create does not clobber the credential, and creates nothing
    result = agent("create", "bot2", "--sponsor", "alice", "-o", str(path))
    assert result.exit_code == 8 and "already exists" in result.output
    assert read_credential(path) == cred

    row = _row(agent("list"), "bot")
    assert cred["agent_id"] in row and "alice" in row and "none" in row and "yes" in row

    assert agent("risk", "bot", "high").exit_code == 0
    assert "high" in _row(agent("list"), "bot")
    assert agent("risk", "bot", "extreme").exit_code == 2

    result = agent("disable", "bot", "--reason", "testing")
    assert result.exit_code == 0 and "testing" in _row(agent("list"), "bot")
    assert agent("enable", "bot").exit_code == 0
    assert " yes " in _row(agent("list"), "bot")

    result = agent("sponsor", "remove", "bot", "alice")
    assert result.exit_code == 0, result.output
    row = _row(agent("list"), "bot")
    assert " no " in row and "no sponsor" in row
    result = agent("enable", "bot")
    assert result.exit_code == 8 and "no enabled sponsor" in result.output
    assert agent("sponsor", "add", "bot", "alice").exit_code == 0
    assert agent("enable", "bot").exit_code == 0


def test_key_rotation_rewrites_the_credential(db: str, tmp_path: Path) -> None:
    user("create", "alice", "--role", "admin")
    assert agent("create", "bot", "--sponsor", "alice", "-o", "bot.json").exit_code == 0
    old = json.loads((tmp_path / "bot.json").read_text())
    result = agent("key", "rotate", "bot", "--grace", "60")
    assert result.exit_code == 0, result.output
    new = read_credential(tmp_path / "bot.json")
    assert new["key"]["kid"] != old["key"]["kid"] and new["agent_id"] == old["agent_id"]
    listing = agent("key", "list", "bot")
    assert old["key"]["kid"] in listing.output and new["key"]["kid"] in listing.output
    # `--` lets a kid that starts with '-' through
    assert agent("key", "revoke", "bot", "--", old["key"]["kid"]).exit_code == 0
    store = Store(db)
    try:
        assert [k.revoked for k in store.list_agent_keys("bot")] == [True, False]
    finally:
        store.close()


def test_disabling_a_users_disables_their_agents(db: str) -> None:
    user("create", "alice", "--role", "sponsor")
    agent("create", "bot", "--sponsor", "alice")
    result = user("disable", "alice")
    assert result.exit_code == 0 and "agent bot disabled: no sponsor" in result.output
