"""`corral events ...`, and events queued by `corral agent ...`, on a temporary SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.cli.events import app as events_app
from corral.cli.identity import agent_app, user_app
from corral.domain.events import RISK_LEVEL_CHANGE, SESSION_REVOKED
from corral.domain.federation import OidcProvider
from corral.identity.caep import verify_set
from corral.identity.keys import SigningKeyring
from corral.store import Store

ENV = {"COLUMNS": "250"}


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/corral.db"
    monkeypatch.setenv("CORRAL_DATABASE_URL", url)
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CORRAL_URL", "http://127.0.0.1:8999")
    monkeypatch.chdir(tmp_path)
    return url


def events(*args: str) -> Result:
    return CliRunner().invoke(events_app, list(args), env=ENV)


def test_receivers_add_list_remove(db: str, tmp_path: Path) -> None:
    secret = tmp_path / "auth"
    secret.write_text("Bearer s3cret-value\n")
    secret.chmod(0o644)
    add = [
        "receivers", "add", "siem", "--endpoint", "https://siem.example/push",
        "--audience", "https://siem.example", "--events", "session-revoked",
        "--auth-header-file", str(secret),
    ]  # fmt: skip
    refused = events(*add)
    assert refused.exit_code == 2 and "readable by others" in refused.output
    secret.chmod(0o600)
    made = events(*add)
    assert made.exit_code == 0, made.output
    listed = events("receivers", "list")
    row = next(line for line in listed.output.splitlines() if " siem " in line)
    assert "session-revoked" in row and "risk-level-change" not in row and "set" in row
    assert "s3cret" not in made.output + listed.output
    again = events(*add)
    assert again.exit_code == 8 and "already exists" in again.output
    bad = events("receivers", "add", "x", "--endpoint", "http://siem.example", "--audience", "a")
    assert bad.exit_code == 2 and "https" in bad.output
    assert events("receivers", "remove", "siem").exit_code == 0
    assert events("receivers", "remove", "siem").exit_code == 3


def test_cli_changes_are_queued_for_the_server(db: str, tmp_path: Path) -> None:
    ring = SigningKeyring.generate()
    ring.save(tmp_path / "data" / "signing-keys.json")
    store = Store(db)
    store.migrate()
    store.create_ssf_receiver("r", endpoint="https://r.example/p", audience="aud")
    assert CliRunner().invoke(user_app, ["create", "sam", "--role", "sponsor"]).exit_code == 0
    made = CliRunner().invoke(agent_app, ["create", "bot", "--sponsor", "sam", "-o", "bot.json"])
    assert made.exit_code == 0, made.output
    assert CliRunner().invoke(agent_app, ["risk", "bot", "high"]).exit_code == 0
    revoked = CliRunner().invoke(agent_app, ["revoke", "bot"])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    entries = list(reversed(store.list_ssf_outbox()))
    ring_provider = _provider(ring)
    kinds = [
        verify_set(
            e.token,
            audience="aud",
            provider_for=lambda iss: ring_provider,
            remember=lambda i, j: True,
            now=e.created_at.timestamp(),
        ).type
        for e in entries
    ]
    assert kinds == [RISK_LEVEL_CHANGE, SESSION_REVOKED]
    outbox = events("outbox", "--pending")
    assert outbox.exit_code == 0 and outbox.output.count(" pending ") == 2
    assert entries[0].token not in outbox.output
    store.close()


def test_no_server_keys_no_events(db: str) -> None:
    store = Store(db)
    store.migrate()
    store.create_ssf_receiver("r", endpoint="https://r.example/p", audience="aud")
    assert CliRunner().invoke(user_app, ["create", "sam", "--role", "sponsor"]).exit_code == 0
    made = CliRunner().invoke(agent_app, ["create", "bot", "--sponsor", "sam", "-o", "bot.json"])
    assert made.exit_code == 0
    assert CliRunner().invoke(agent_app, ["risk", "bot", "high"]).exit_code == 0
    assert store.list_ssf_outbox() == []  # never signed with keys the server does not publish
    store.close()


def _provider(ring: SigningKeyring) -> OidcProvider:
    return OidcProvider(
        name="corral",
        issuer="http://127.0.0.1:8999",
        audience="-",
        jwks=ring.jwks(),
        allow_events=True,
    )
