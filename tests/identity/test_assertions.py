"""private_key_jwt client assertions (RFC 7523)."""

from __future__ import annotations

from typing import Any

import pytest

from corral.identity import (
    AssertionSettings,
    DPoPKey,
    InvalidClientError,
    ReplayCache,
    VerifiedClient,
    client_assertion,
    verify_client_assertion,
)
from corral.identity._jose import sign
from tests.identity.helpers import NOW, craft, parts

TOKEN_URL = "https://corral.example/v1/token"  # noqa: S105 (a URL)


class Client:
    def __init__(self, alg: str = "EdDSA") -> None:
        self.key = DPoPKey.generate(alg)  # type: ignore[arg-type]
        self.registered = [{**self.key.public_jwk, "kid": "k-1"}]
        self.replay = ReplayCache()

    def assertion(self, **kw: Any) -> str:
        kw.setdefault("now", NOW)
        return client_assertion("a-1", TOKEN_URL, {**self.key.private_jwk(), "kid": "k-1"}, **kw)

    def check(self, assertion: str, **kw: Any) -> VerifiedClient:
        kw.setdefault("client_id", "a-1")
        kw.setdefault("token_url", TOKEN_URL)
        kw.setdefault("client_keys", self.registered)
        kw.setdefault("now", NOW)
        return verify_client_assertion(assertion, replay=self.replay, **kw)

    def refused(self, assertion: str, match: str, **kw: Any) -> None:
        with pytest.raises(InvalidClientError, match=match) as info:
            self.check(assertion, **kw)
        assert info.value.error == "invalid_client"
        assert info.value.token_endpoint_status == 401
        assert info.value.oauth_error()["error"] == "invalid_client"

    def resign(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        h, c, _ = parts(self.assertion())
        c = {k: v for k, v in {**c, **claims}.items() if v is not None}
        return sign({**h, **(header or {})}, c, self.key._key)


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_valid_assertion(alg: str) -> None:
    client = Client(alg)
    verified = client.check(client.assertion())
    assert verified == VerifiedClient("a-1", client.key.thumbprint, "k-1")


def test_key_registered_without_kid_matches_by_thumbprint(client: Client) -> None:
    client.registered = [client.key.public_jwk]
    assertion = client_assertion("a-1", TOKEN_URL, client.key.private_jwk(), now=NOW)
    assert parts(assertion)[0]["kid"] == client.key.thumbprint
    assert client.check(assertion).kid == client.key.thumbprint


def test_assertion_without_kid_tries_each_key(client: Client) -> None:
    other = DPoPKey.generate()
    client.registered = [{**other.public_jwk, "kid": "old"}, *client.registered]
    h, c, _ = parts(client.assertion())
    del h["kid"]
    assert client.check(sign(h, c, client.key._key)).kid == "k-1"


def test_wrong_audience(client: Client) -> None:
    client.refused(client.resign(aud="https://evil.example/token"), "aud")
    client.refused(client.resign(aud=None), "aud")
    assert client.check(client.resign(aud=["x", TOKEN_URL]))


def test_replayed_jti(client: Client) -> None:
    assertion = client.assertion()
    client.check(assertion)
    client.refused(assertion, "already used")


def test_unknown_key(client: Client) -> None:
    stranger = DPoPKey.generate()
    forged = client_assertion("a-1", TOKEN_URL, {**stranger.private_jwk(), "kid": "k-1"}, now=NOW)
    client.refused(forged, "signature")
    unnamed = client_assertion("a-1", TOKEN_URL, stranger.private_jwk(), now=NOW)
    client.refused(unnamed, "no registered key")
    client.refused(client.assertion(), "no registered key", client_keys=[])


def test_expired(client: Client) -> None:
    client.refused(client.assertion(now=NOW - 200, lifetime=60), "expired")
    client.refused(client.resign(exp=None), "exp is missing")


def test_not_yet_valid(client: Client) -> None:
    client.refused(client.resign(nbf=NOW + 120), "nbf")
    client.refused(client.resign(iat=NOW + 120, exp=NOW + 180), "iat")


def test_lifetime_is_capped(client: Client) -> None:
    client.refused(client.resign(exp=NOW + 3600), "longer than")
    short = AssertionSettings(max_lifetime=30)
    client.refused(client.assertion(lifetime=60), "longer than", settings=short)


def test_iss_and_sub_must_be_the_client(client: Client) -> None:
    client.refused(client.resign(iss="a-2"), "iss and sub")
    client.refused(client.resign(sub="a-2"), "iss and sub")
    client.refused(client.assertion(), "iss and sub", client_id="a-2")


def test_alg_none_and_hmac(client: Client) -> None:
    h, c, _ = parts(client.assertion())
    client.refused(craft({**h, "alg": "none"}, c), "not allowed")
    client.refused(craft({**h, "alg": "HS256"}, c, b"x" * 32), "not allowed")


def test_other_jwt_types_are_not_assertions(client: Client) -> None:
    for typ in ("dpop+jwt", "at+jwt"):
        client.refused(client.resign({"typ": typ}), "typ")


def test_jti_is_required(client: Client) -> None:
    client.refused(client.resign(jti=None), "jti")


def test_private_material_in_a_registration_does_not_match(client: Client) -> None:
    client.registered = [{**client.key.private_jwk(), "kid": "k-1"}]
    client.refused(client.assertion(), "no registered key")
