"""`corral federation ...` on a temporary SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey
from typer.testing import CliRunner, Result

from corral.cli.federation import app
from corral.cli.identity import agent_app, user_app
from corral.store import Store

ENV = {"COLUMNS": "250"}
SECRET = "very-secret-client-value"  # noqa: S105


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/corral.db"
    monkeypatch.setenv("CORRAL_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(user_app, ["create", "alice", "--role", "sponsor"]).exit_code == 0
    assert CliRunner().invoke(agent_app, ["create", "bot", "--sponsor", "alice"]).exit_code == 0
    return url


def fed(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def _secret_file(tmp: Path, mode: int = 0o600) -> Path:
    path = tmp / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(mode)
    return path


def test_add_show_link_and_remove(db: str, tmp_path: Path) -> None:
    r = fed(
        "add", "corp", "--issuer", "https://idp.example", "--audience", "corral",
        "--jwks-uri", "https://idp.example/jwks", "--client-id", "corral-app",
        "--client-secret-file", str(_secret_file(tmp_path)), "--console", "--assertions",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    shown = fed("show", "corp")
    assert shown.exit_code == 0 and "set" in shown.output and "console, assertions" in shown.output
    listed = fed("list")
    for output in (r.output, shown.output, listed.output):
        assert SECRET not in output
    assert Store(db).get_oidc_provider("corp").client_secret == SECRET  # stored, trimmed

    assert fed("link", "corp", "repo:acme/app", "--agent", "bot").exit_code == 0
    assert fed("link", "corp", "alice@corp", "--user", "alice").exit_code == 0
    subjects = fed("subjects", "corp")
    assert "repo:acme/app" in subjects.output and "alice@corp" in subjects.output
    assert fed("link", "corp", "repo:acme/app", "--user", "alice").exit_code == 8  # taken
    assert fed("unlink", "corp", "repo:acme/app").exit_code == 0
    assert fed("unlink", "corp", "repo:acme/app").exit_code == 3
    assert fed("remove", "corp").exit_code == 0
    assert fed("show", "corp").exit_code == 3
    assert fed("subjects", "corp").exit_code == 3


def test_pinned_keys_must_be_public(db: str, tmp_path: Path) -> None:
    key = OKPKey.generate_key("Ed25519")
    public, private = tmp_path / "public.json", tmp_path / "private.json"
    public.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    private.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    base = ["--issuer", "https://ci.example", "--audience", "corral", "--assertions"]
    r = fed("add", "ci", *base, "--jwks", str(private))
    assert r.exit_code == 2 and "private" in r.output
    r = fed("add", "ci", *base, "--jwks", str(public))
    assert r.exit_code == 0, r.output
    assert "pinned" in fed("list").output


def test_refusals(db: str, tmp_path: Path) -> None:
    base = ["--issuer", "https://ci.example", "--audience", "corral", "--assertions"]
    r = fed("add", "ci", *base)
    assert r.exit_code == 2 and "exactly one of --jwks-uri or --jwks" in r.output
    r = fed("add", "ci", *base, "--jwks-uri", "https://a/j", "--jwks", "x.json")
    assert r.exit_code == 2
    loose = _secret_file(tmp_path, 0o644)
    r = fed("add", "ci", *base, "--jwks-uri", "https://ci.example/jwks", "--client-id", "c",
            "--client-secret-file", str(loose))  # fmt: skip
    assert r.exit_code == 2 and "chmod 600" in r.output and SECRET not in r.output
    r = fed("add", "ci", "--issuer", "http://ci.example", "--audience", "x",
            "--jwks-uri", "https://ci.example/jwks", "--assertions")  # fmt: skip
    assert r.exit_code == 2 and "https" in r.output
    r = fed("add", "ci", "--issuer", "https://ci.example", "--audience", "x",
            "--jwks-uri", "https://ci.example/jwks")  # fmt: skip
    assert r.exit_code == 2 and "trusted for nothing" in r.output
    assert fed("link", "nope", "s", "--agent", "bot").exit_code == 3
    assert fed("link", "nope", "s").exit_code == 2
