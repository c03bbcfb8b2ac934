"""The directory service: credentials, key pairs, rotation, passwords and TOTP (SQLite store)."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest

from corral.domain.identity import NO_SPONSOR, Risk, Role
from corral.errors import ConflictError, InvalidInputError
from corral.identity import ReplayCache, client_assertion, verify_client_assertion
from corral.identity.directory import (
    DEFAULT_TOKEN_ENDPOINT,
    Directory,
    read_credential,
    write_credential,
)
from corral.identity.errors import InvalidClientError
from corral.identity.passwords import hash_password, verify_password, verify_totp
from corral.store import Store

TOKEN_URL = "https://corral.example/v1/token"  # noqa: S105
PASSWORD = "correct horse battery"  # noqa: S105


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Directory]:
    store = Store(f"sqlite:///{tmp_path}/corral.db")
    store.migrate()
    try:
        yield Directory(store)
    finally:
        store.close()


@pytest.fixture
def sponsor(directory: Directory) -> str:
    return directory.create_user("alice", roles=["sponsor"]).name


def _verify(directory: Directory, cred: dict[str, object], assertion: str) -> str:
    client_id = str(cred["client_id"])
    verified = verify_client_assertion(
        assertion,
        client_id=client_id,
        token_url=TOKEN_URL,
        client_keys=directory.usable_public_keys(client_id),
        replay=ReplayCache(),
        now=time.time(),
    )
    return verified.kid


def test_credential_key_pair_verifies_an_assertion(directory: Directory, sponsor: str) -> None:
    cred = directory.create_agent("bot", [sponsor], token_endpoint=TOKEN_URL)
    agent = directory.get_agent("bot")
    assert cred["agent_id"] == cred["client_id"] == agent.id
    assert cred["token_endpoint"] == TOKEN_URL
    key = cred["key"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and "d" in key
    # The server kept the public half only, under the key's thumbprint.
    [stored] = directory.agent_keys("bot")
    assert stored.kid == key["kid"] and "d" not in stored.public_jwk
    assert stored.public_jwk["x"] == key["x"]
    assertion = client_assertion(agent.id, TOKEN_URL, key)
    assert _verify(directory, cred, assertion) == key["kid"]


def test_default_token_endpoint(directory: Directory, sponsor: str) -> None:
    assert directory.create_agent("bot", [sponsor])["token_endpoint"] == DEFAULT_TOKEN_ENDPOINT


def test_no_sponsor_no_agent(directory: Directory) -> None:
    with pytest.raises(InvalidInputError, match="at least one sponsor"):
        directory.create_agent("bot", [])
    assert directory.list_agents() == []


def test_rotation_keeps_the_old_key_for_the_grace_period(
    directory: Directory, sponsor: str
) -> None:
    old = directory.create_agent("bot", [sponsor], token_endpoint=TOKEN_URL)
    new = directory.rotate_agent_key("bot", timedelta(minutes=5), token_endpoint=TOKEN_URL)
    assert new["key"]["kid"] != old["key"]["kid"] and new["agent_id"] == old["agent_id"]
    for cred in (old, new):
        assertion = client_assertion(str(cred["client_id"]), TOKEN_URL, cred["key"])
        assert _verify(directory, cred, assertion) == cred["key"]["kid"]
    later = Directory(directory.store, clock=lambda: datetime.now(UTC) + timedelta(minutes=6))
    assert [k["kid"] for k in later.usable_public_keys("bot")] == [new["key"]["kid"]]
    # Revoked keys stop at once.
    directory.revoke_agent_key("bot", new["key"]["kid"])
    assertion = client_assertion(str(new["client_id"]), TOKEN_URL, new["key"])
    with pytest.raises(InvalidClientError):
        _verify(directory, new, assertion)


def test_write_credential_is_private_and_atomic(
    directory: Directory, sponsor: str, tmp_path: Path
) -> None:
    cred = directory.create_agent("bot", [sponsor])
    path = tmp_path / "bot.json"
    write_credential(path, cred)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == cred == read_credential(path)
    with pytest.raises(ConflictError, match="already exists"):
        write_credential(path, {"other": 1})
    assert json.loads(path.read_text()) == cred  # untouched
    write_credential(path, {**cred, "token_endpoint": TOKEN_URL}, overwrite=True)
    assert read_credential(path)["token_endpoint"] == TOKEN_URL
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_credential_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_credential(tmp_path / "c.json", {"agent_id": "a"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_read_credential_refuses_open_files(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"agent_id": "a"}))
    path.chmod(0o644)
    with pytest.raises(InvalidInputError, match="readable by others"):
        read_credential(path)
    path.chmod(0o600)
    with pytest.raises(InvalidInputError, match="not a Corral credential"):
        read_credential(path)


def test_totp_secret_stays_out_of_reprs(directory: Directory, sponsor: str) -> None:
    enrolment = directory.enroll_totp(sponsor)
    assert enrolment.secret not in repr(enrolment)
    assert enrolment.secret not in repr(directory.store.get_user_secrets(sponsor))


def test_sponsor_rules_through_the_service(directory: Directory, sponsor: str) -> None:
    directory.create_user("bob", roles=["admin"])
    directory.create_agent("bot", [sponsor, "bob"])
    assert directory.remove_sponsor("bot", "bob").enabled
    disabled = directory.disable_user(sponsor)
    assert [a.name for a in disabled] == ["bot"]
    assert directory.get_agent("bot").disabled_reason == NO_SPONSOR
    assert directory.set_risk("bot", "high").risk is Risk.HIGH
    with pytest.raises(InvalidInputError, match="unknown risk"):
        directory.set_risk("bot", "extreme")
    with pytest.raises(InvalidInputError, match="unknown role"):
        directory.create_user("carol", roles=["root"])


def test_passwords_are_argon2id_and_never_stored_in_clear(directory: Directory) -> None:
    user = directory.create_user("carol", roles=[Role.SECURITY_ADMIN.value], password=PASSWORD)
    stored = directory.store.get_user_secrets(user.id).password_hash
    assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored
    assert directory.check_password("carol", PASSWORD)
    assert not directory.check_password("carol", PASSWORD + "!")
    directory.store.set_user_enabled("carol", False)
    assert not directory.check_password("carol", PASSWORD)  # disabled users never log in
    with pytest.raises(InvalidInputError, match="too short"):
        hash_password("short")
    assert not verify_password(None, "anything")
    assert not verify_password("not-a-hash", "anything")


def test_totp_enrolment_and_window(directory: Directory, sponsor: str) -> None:
    enrolment = directory.enroll_totp(sponsor)
    assert enrolment.uri.startswith("otpauth://totp/")
    assert directory.check_totp(sponsor, "000000")  # not required until confirmed
    totp = pyotp.TOTP(enrolment.secret)
    with pytest.raises(InvalidInputError, match="wrong TOTP"):
        directory.confirm_totp(sponsor, "abcdef")
    directory.confirm_totp(sponsor, totp.now())
    assert directory.store.get_user(sponsor).totp_enabled
    now = time.time()
    assert verify_totp(enrolment.secret, totp.at(now - 30), now)  # one step either side
    assert verify_totp(enrolment.secret, totp.at(now + 30), now)
    assert not verify_totp(enrolment.secret, totp.at(now - 90), now)
    assert not directory.check_totp(sponsor, totp.at(now - 120))
