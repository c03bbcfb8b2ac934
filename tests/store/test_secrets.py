"""Secrets at rest, on SQLite and PostgreSQL: whoever reads the database (its file, a dump, a
backup) without the key file finds no TOTP seed, OIDC client secret or push authorization header;
a sealed value copied into another row does not open; rotation reseals everything."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import Column, NullPool, Table, create_engine, inspect, select, text, update

from corral.domain.federation import OidcProvider
from corral.domain.identity import Role
from corral.errors import StoreSecurityError
from corral.identity.passwords import new_totp
from corral.store import Store
from corral.store._engine import sqlite_path
from corral.store._secrets import SEALED_COLUMNS
from corral.store._tables import oidc_providers, ssf_receivers, users

JWKS = {
    "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]
}
CLIENT_SECRET = "client-secret-6f1d0c9e2b7a4e58"  # noqa: S105 (test data)
HEADER_A = "Bearer push-token-a-93c1f7e0d2"
HEADER_B = "Bearer push-token-b-17aa5e6c44"


def _provider(name: str = "idp", secret: str | None = CLIENT_SECRET) -> OidcProvider:
    return OidcProvider(
        name=name,
        issuer=f"https://{name}.example.test",
        audience="corral",
        jwks=JWKS,
        client_id="corral-console",
        client_secret=secret,
        allow_console=True,
    )


def _receiver(store: Store, name: str, header: str) -> str:
    return store.create_ssf_receiver(
        name,
        endpoint=f"https://{name}.example.test/ssf",
        audience=f"https://{name}.example.test",
        auth_header=header,
    ).id


def _fill(store: Store) -> tuple[str, str]:
    """A user with a TOTP seed, a provider with a client secret, two receivers with headers."""
    user = store.create_user("alice", roles=[Role.ADMIN])
    seed = new_totp("alice").secret
    store.set_user_totp(user.id, seed, enabled=True)
    store.create_oidc_provider(_provider())
    _receiver(store, "siem-a", HEADER_A)
    _receiver(store, "siem-b", HEADER_B)
    return user.id, seed


def _raw(url: str) -> str:
    """Everything the database holds, as an attacker with the file or a dump sees it: every
    row of every table, and for SQLite the file's bytes (database and WAL) too."""
    engine = create_engine(url, poolclass=NullPool)
    parts: list[str] = []
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                query = text(f'SELECT * FROM "{table}"')  # noqa: S608 (names from the schema)
                for row in conn.execute(query):
                    parts.append(repr(tuple(row)))
    finally:
        engine.dispose()
    path = sqlite_path(url)
    if path is not None:
        for suffix in ("", "-wal"):
            file = path.with_name(path.name + suffix)
            if file.exists():
                parts.append(file.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def _set(url: str, table: Table, key: str, row_id: str, **values: object) -> None:
    """Write a row behind the store's back, as someone with write access to the database."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(update(table).where(table.c[key] == row_id).values(**values))
    finally:
        engine.dispose()


def _get(url: str, column: Column[str], key: Column[str], row_id: str) -> str | None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(column).where(key == row_id))
    finally:
        engine.dispose()


def test_no_secret_is_readable_in_the_database(store: Store) -> None:
    user_id, seed = _fill(store)
    raw = _raw(store.url)
    for secret in (seed, CLIENT_SECRET, HEADER_A, HEADER_B, "push-token-a"):
        assert secret not in raw
    assert "sealed:v1:" in raw
    # the store still hands them out
    assert store.get_user_secrets(user_id).totp_secret == seed
    assert store.get_oidc_provider("idp").client_secret == CLIENT_SECRET
    assert store.get_oidc_provider_by_issuer("https://idp.example.test").client_secret
    assert [r.auth_header for r in store.list_ssf_receivers()] == [HEADER_A, HEADER_B]


def test_the_key_file_is_private(store: Store) -> None:
    _fill(store)
    st = store.keys.path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert CLIENT_SECRET not in store.keys.path.read_text()


def test_swapped_ciphertexts_fail_closed(store: Store) -> None:
    """The attack, by someone who can write the database but lacks the key: copy a sealed
    value into another row, so that it goes where the attacker chose."""
    alice, _seed = _fill(store)
    mallory = store.create_user("mallory", roles=[Role.SPONSOR]).id
    a = store.get_ssf_receiver("siem-a").id
    b = store.get_ssf_receiver("siem-b").id
    # 1. A's authorization header into B's row: B's endpoint would receive A's token.
    sealed_a = _get(store.url, ssf_receivers.c.auth_header, ssf_receivers.c.id, a)
    _set(store.url, ssf_receivers, "id", b, auth_header=sealed_a)
    with pytest.raises(StoreSecurityError, match="copied from another row"):
        store.get_ssf_receiver(b)
    with pytest.raises(StoreSecurityError):
        store.list_ssf_receivers()
    assert store.get_ssf_receiver(a).auth_header == HEADER_A
    store.delete_ssf_receiver(b)  # the remedy: remove it (and add it again)
    # 2. Alice's TOTP seed into Mallory's row.
    sealed = _get(store.url, users.c.totp_secret_sealed, users.c.id, alice)
    _set(store.url, users, "id", mallory, totp_secret_sealed=sealed, totp_enabled=True)
    with pytest.raises(StoreSecurityError, match="copied from another row"):
        store.get_user_secrets(mallory)
    store.set_user_totp(mallory, None, enabled=False)  # the remedy: enrol again
    assert store.get_user_secrets(mallory).totp_secret is None
    # 3. A provider's client secret under another provider's name.
    store.create_oidc_provider(_provider("evil", secret="evil-secret"))  # noqa: S106
    sealed = _get(store.url, oidc_providers.c.client_secret, oidc_providers.c.name, "idp")
    _set(store.url, oidc_providers, "name", "evil", client_secret=sealed)
    with pytest.raises(StoreSecurityError, match="copied from another row"):
        store.get_oidc_provider("evil")
    store.delete_oidc_provider("evil")
    # 4. A plaintext value written behind the store's back is refused, not used.
    _set(store.url, ssf_receivers, "id", a, auth_header="Bearer planted")
    with pytest.raises(StoreSecurityError, match="not sealed"):
        store.get_ssf_receiver(a)


def test_rotation_reseals_everything_and_drops_the_old_key(store: Store, db_url: str) -> None:
    user_id, seed = _fill(store)
    old = store.keys.current
    done = store.rotate_secrets_key()
    assert done.new_key != old and done.retired == [old] and done.resealed == 4
    assert store.keys.key_ids() == [done.new_key]
    raw = _raw(store.url)
    assert f"sealed:v1:{old}:" not in raw and raw.count(f"sealed:v1:{done.new_key}:") >= 4
    # another process (a fresh Store on the same files) reads the old rows and writes new ones
    other = Store(db_url, key_file=store.keys.path)
    try:
        assert other.get_user_secrets(user_id).totp_secret == seed
        assert other.get_oidc_provider("idp").client_secret == CLIENT_SECRET
        _receiver(other, "siem-c", "Bearer c")
        assert other.get_ssf_receiver("siem-c").auth_header == "Bearer c"
    finally:
        other.close()
    # this store notices the rotation on disk and seals new values with the new key too
    store.set_user_totp(user_id, seed, enabled=True)
    sealed = _get(store.url, users.c.totp_secret_sealed, users.c.id, user_id)
    assert sealed is not None and sealed.startswith(f"sealed:v1:{done.new_key}:")
    assert store.get_ssf_receiver("siem-c").auth_header == "Bearer c"


def test_rotation_can_keep_the_old_key(store: Store) -> None:
    _fill(store)
    old = store.keys.current
    done = store.rotate_secrets_key(keep_old=True)
    assert done.retired == [] and store.keys.key_ids() == [old, done.new_key]
    assert store.rotate_secrets_key().retired == [old, done.new_key]


def test_a_missing_key_file_is_a_clear_error(store: Store, db_url: str) -> None:
    user_id, _seed = _fill(store)
    key_file = store.keys.path
    key_file.unlink()
    with pytest.raises(StoreSecurityError, match="missing"):
        store.get_user_secrets(user_id)
    # a write while running does not quietly start a new key either
    with pytest.raises(StoreSecurityError, match="missing"):
        store.keys.seal("new secret", SEALED_COLUMNS[0], "row-1")
    assert not key_file.exists()
    again = Store(db_url, key_file=key_file)
    try:
        with pytest.raises(StoreSecurityError, match=r"missing, and 4 secret\(s\)"):
            again.migrate()
    finally:
        again.close()
    assert not key_file.exists()  # refused: no fresh key to hide the loss behind


def test_a_wrong_key_file_refuses_to_start(store: Store, db_url: str, tmp_path: Path) -> None:
    _fill(store)
    other = Store(db_url, key_file=tmp_path / "elsewhere" / "secrets.key")
    try:
        assert (
            other.keys.create_if_missing()
        )  # a key file of its own, not the one that sealed the rows
        with pytest.raises(StoreSecurityError, match="does not hold"):
            other.migrate()
    finally:
        other.close()


def test_plaintext_from_older_versions_is_sealed_on_start(store: Store, db_url: str) -> None:
    user_id = store.create_user("bob", roles=[Role.ADMIN]).id
    store.create_oidc_provider(_provider(secret=None))
    rid = _receiver(store, "siem", HEADER_A)
    seed = new_totp("bob").secret
    # as version 0005 left them: plaintext in the columns
    _set(store.url, users, "id", user_id, totp_secret=seed, totp_enabled=True)
    _set(store.url, oidc_providers, "name", "idp", client_secret=CLIENT_SECRET)
    _set(store.url, ssf_receivers, "id", rid, auth_header=HEADER_B)
    assert seed in _raw(store.url)
    store.migrate()  # what every start runs
    raw = _raw(store.url)
    assert _get(store.url, users.c.totp_secret, users.c.id, user_id) is None
    for secret in (seed, CLIENT_SECRET, HEADER_B):
        assert secret not in raw
    assert store.get_user_secrets(user_id).totp_secret == seed
    assert store.get_oidc_provider("idp").client_secret == CLIENT_SECRET
    assert store.get_ssf_receiver(rid).auth_header == HEADER_B
    store.migrate()  # idempotent


def test_a_tampered_key_file_is_refused(store: Store) -> None:
    _fill(store)
    path = store.keys.path
    doc = json.loads(path.read_text())
    path.chmod(0o644)
    with pytest.raises(StoreSecurityError, match="accessible to other users"):
        store.get_oidc_provider("idp")
    path.chmod(0o600)
    doc["keys"][0]["key"] = doc["keys"][0]["key"][::-1]
    path.write_text(json.dumps(doc))
    with pytest.raises(StoreSecurityError):
        store.get_oidc_provider("idp")
