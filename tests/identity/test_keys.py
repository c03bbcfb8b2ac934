"""The signing keyring: persistence, rotation, JWKS."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from corral.errors import InvalidInputError
from corral.identity import SigningKeyring, verify_access_token
from tests.identity.helpers import GATEWAY, ISSUER, NOW, World


def test_generate_gives_one_current_key() -> None:
    ring = SigningKeyring.generate(now=NOW)
    assert ring.current.alg == "EdDSA" and ring.current.retire_at is None
    assert ring.current.kid == ring.current.private.thumbprint()
    assert SigningKeyring.generate("ES256").current.alg == "ES256"


def test_save_is_owner_only_and_loads_back(tmp_path: Path) -> None:
    ring = SigningKeyring.generate(now=NOW)
    ring.rotate(now=NOW + 1)
    path = tmp_path / "keys" / "signing.json"
    ring.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = SigningKeyring.load(path)
    assert [k.kid for k in loaded.keys] == [k.kid for k in ring.keys]
    assert loaded.keys[1].retire_at == ring.keys[1].retire_at
    assert loaded.jwks(now=NOW) == ring.jwks(now=NOW)
    assert list(tmp_path.joinpath("keys").iterdir()) == [path]  # no temp file left


def test_tokens_survive_a_restart(tmp_path: Path) -> None:
    world = World()
    token = world.token().access_token
    world.ring.save(tmp_path / "k.json")
    again = SigningKeyring.load(tmp_path / "k.json")
    verify_access_token(token, keyring=again, issuer=ISSUER, audience=GATEWAY, now=NOW)


def test_load_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    SigningKeyring.generate().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(InvalidInputError, match="other users") as info:
        SigningKeyring.load(path)
    assert info.value.hint == f"chmod 600 {path}"


def test_load_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    for text in ("", "{}", json.dumps({"format": "corral-signing-keys/1", "keys": [{}]})):
        path.write_text(text)
        os.chmod(path, 0o600)
        with pytest.raises(InvalidInputError, match="not a Corral keyring"):
            SigningKeyring.load(path)


def test_load_or_create(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    first = SigningKeyring.load_or_create(path)
    assert SigningKeyring.load_or_create(path).current.kid == first.current.kid


def test_private_keys_never_show(tmp_path: Path) -> None:
    ring = SigningKeyring.generate()
    d = str(ring.current.private.as_dict(private=True)["d"])
    assert d not in repr(ring) and d not in repr(ring.current) and d not in str(ring.keys)
    assert d not in json.dumps(ring.jwks())
    assert all("d" not in k for k in ring.jwks()["keys"])


def test_rotation_keeps_old_tokens_valid_until_the_old_key_retires() -> None:
    world = World()
    old_token = world.token().access_token
    old_kid = world.ring.current.kid
    new = world.ring.rotate(now=NOW, keep_old_for=600)
    assert world.ring.current is new and new.kid != old_kid
    new_token = world.token().access_token

    jwks = world.ring.jwks(now=NOW)
    assert [k["kid"] for k in jwks["keys"]] == [new.kid, old_kid]
    assert all(k["use"] == "sig" and k["alg"] == "EdDSA" for k in jwks["keys"])

    def ok(token: str, now: float) -> bool:
        try:
            verify_access_token(
                token, keyring=world.ring, issuer=ISSUER, audience=GATEWAY, now=now, leeway=1e9
            )
        except Exception:
            return False
        return True

    assert ok(old_token, NOW + 599) and ok(new_token, NOW + 599)
    assert not ok(old_token, NOW + 600) and ok(new_token, NOW + 600)
    assert [k["kid"] for k in world.ring.jwks(now=NOW + 600)["keys"]] == [new.kid]
    world.ring.prune(now=NOW + 600)
    assert [k.kid for k in world.ring.keys] == [new.kid]


def test_rotation_can_change_algorithm() -> None:
    ring = SigningKeyring.generate(now=NOW)
    ring.rotate("ES256", now=NOW)
    assert [k.alg for k in ring.keys] == ["ES256", "EdDSA"]


def test_a_keyring_needs_a_current_key() -> None:
    ring = SigningKeyring.generate(now=NOW)
    ring.rotate(now=NOW)
    with pytest.raises(InvalidInputError):
        SigningKeyring(ring.keys[1:])
    with pytest.raises(InvalidInputError):
        SigningKeyring([])
