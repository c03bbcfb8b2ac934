"""Access tokens: what the server signs verifies, and every forgery or misuse is refused."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from corral.identity import (
    InvalidTokenError,
    SigningKeyring,
    VerifiedTokenCache,
    issue_access_token,
    verify_access_token,
)
from corral.identity.client import DPoPKey
from tests.identity.helpers import GATEWAY, ISSUER, NOW, World, b64json, craft, hmac_craft, parts


def verify(world: World, token: str, **kw: Any) -> Any:
    kw.setdefault("audience", GATEWAY)
    kw.setdefault("now", world.now)
    return verify_access_token(token, keyring=world.ring, issuer=ISSUER, **kw)


def refused(world: World, token: str, match: str, **kw: Any) -> None:
    with pytest.raises(InvalidTokenError, match=match) as info:
        verify(world, token, **kw)
    assert info.value.error == "invalid_token"


def test_issued_token_verifies_with_its_claims(world: World) -> None:
    issued = world.token(scope=["pcs:acquire", "pcs:act"])
    header, claims, _ = parts(issued.access_token)
    assert header == {"typ": "at+jwt", "alg": "EdDSA", "kid": world.ring.current.kid}
    assert claims["cnf"] == {"jkt": world.agent.thumbprint}
    assert claims["exp"] - claims["iat"] == 300
    assert (issued.token_type, issued.expires_in) == ("DPoP", 300)
    verified = verify(world, issued.access_token)
    assert verified == issued.claims
    assert verified.subject == "agent:a-1" and verified.client_id == "a-1"
    assert verified.scope == ("pcs:acquire", "pcs:act")
    assert verified.jkt == world.agent.thumbprint


def test_es256_keyring_signs_and_verifies() -> None:
    world = World(ring=SigningKeyring.generate("ES256", now=NOW))
    token = world.token().access_token
    assert parts(token)[0]["alg"] == "ES256"
    assert verify(world, token).subject == "agent:a-1"


def test_unbound_token_is_a_bearer_token(world: World) -> None:
    issued = world.token(jkt=None)
    assert issued.token_type.lower() == "bearer"
    assert verify(world, issued.access_token).jkt is None


def test_expired_token_is_refused_after_the_leeway(world: World) -> None:
    token = world.token().access_token
    verify(world, token, now=NOW + 300 + 29)  # within leeway
    refused(world, token, "expired", now=NOW + 300 + 30)


def test_token_from_the_future_is_refused(world: World) -> None:
    token = world.token().access_token
    refused(world, token, "not valid yet", now=NOW - 31)


def test_wrong_audience_is_refused(world: World) -> None:
    token = world.token(audience="s-1").access_token
    refused(world, token, "audience", audience="s-2")
    refused(world, token, "audience", audience="s-1/")  # exact, no prefix games


def test_wrong_issuer_is_refused(world: World) -> None:
    token = world.token().access_token
    with pytest.raises(InvalidTokenError, match="issuer"):
        verify_access_token(
            token, keyring=world.ring, issuer="https://evil.example", audience=GATEWAY, now=NOW
        )


def test_alg_none_is_refused(world: World) -> None:
    _, claims, _ = parts(world.token().access_token)
    token = craft({"typ": "at+jwt", "alg": "none", "kid": world.ring.current.kid}, claims)
    refused(world, token, "not allowed")


@pytest.mark.parametrize("secret_from", ["x", "jwk", "pem"])
def test_hmac_signed_with_the_public_key_is_refused(world: World, secret_from: str) -> None:
    """The classic key-confusion attack: the public key used as an HMAC secret."""
    public = world.ring.current.public_jwk()
    secret = {
        "x": base64.urlsafe_b64decode(public["x"] + "=="),
        "jwk": b64json(public).encode(),
        "pem": OKPKey.import_key(public).as_pem(private=False),
    }[secret_from]
    _, claims, _ = parts(world.token().access_token)
    claims["sub"] = "admin"
    for alg in ("HS256", "HS384", "HS512"):
        token = hmac_craft({"typ": "at+jwt", "alg": alg, "kid": public["kid"]}, claims, secret)
        refused(world, token, "not allowed")


def test_forged_signature_is_refused(world: World) -> None:
    """Signed by another Ed25519 key that claims our kid."""
    impostor = SigningKeyring.generate(now=NOW)
    forged = issue_access_token(
        impostor, issuer=ISSUER, subject="admin", audience=GATEWAY, client_id="x", jkt="j", now=NOW
    ).access_token
    header, _, signature = parts(forged)
    header["kid"] = world.ring.current.kid
    token = f"{b64json(header)}.{forged.split('.')[1]}.{signature}"
    refused(world, token, "signature")


def test_tampered_claims_are_refused(world: World) -> None:
    token = world.token().access_token
    head, _, sig = token.split(".")
    _, claims, _ = parts(token)
    for change in ({"sub": "agent:other"}, {"exp": NOW + 86400}, {"aud": "s-9"}, {"cnf": None}):
        body = b64json({**claims, **change})
        refused(world, f"{head}.{body}.{sig}", "signature")


def test_unknown_kid_is_refused(world: World) -> None:
    header, claims, sig = parts(world.token().access_token)
    token = f"{b64json({**header, 'kid': 'nope'})}.{b64json(claims)}.{sig}"
    refused(world, token, "unknown or retired key")


def test_a_dpop_proof_is_not_an_access_token(world: World) -> None:
    refused(world, world.proof(None), "typ")


@pytest.mark.parametrize(
    "garbage", ["", "abc", "a.b.c", "a.b", "x" * 10_000, "e30.e30.", "W10.e30.e30"]
)
def test_garbage_is_refused(world: World, garbage: str) -> None:
    refused(world, garbage, "access token refused")


def test_missing_or_mistyped_claims_are_refused(world: World) -> None:
    key = world.ring.current
    base = parts(world.token().access_token)[1]
    from corral.identity._jose import sign

    for change in ({"exp": None}, {"exp": "soon"}, {"sub": 7}, {"iat": True}, {"cnf": "x"}):
        claims = {k: v for k, v in {**base, **change}.items() if v is not None}
        token = sign({"typ": "at+jwt", "alg": "EdDSA", "kid": key.kid}, claims, key.private)
        refused(world, token, "access token refused")


def test_cache_skips_only_the_signature(world: World) -> None:
    cache = VerifiedTokenCache(max_entries=2)
    token = world.token().access_token
    verify(world, token, cache=cache)
    assert cache.get(token) is not None
    verify(world, token, cache=cache)
    refused(world, token, "audience", audience="s-2", cache=cache)
    refused(world, token, "expired", now=NOW + 400, cache=cache)
    world.ring.rotate(now=NOW, keep_old_for=10)
    world.ring.prune(now=NOW + 11)
    refused(world, token, "retired", now=NOW + 11, cache=cache)


def test_cache_is_bounded(world: World) -> None:
    cache = VerifiedTokenCache(max_entries=2)
    tokens = [world.token().access_token for _ in range(3)]
    for token in tokens:
        verify(world, token, cache=cache)
    assert cache.get(tokens[0]) is None and cache.get(tokens[2]) is not None


def test_session_token_carries_its_session(world: World) -> None:
    token = world.token(audience="s-1", session_id="s-1").access_token
    assert verify(world, token, audience="s-1").session_id == "s-1"


def test_token_does_not_show_in_repr(world: World) -> None:
    issued = world.token()
    assert issued.access_token not in repr(issued)
    agent = DPoPKey.generate()
    assert agent.private_jwk()["d"] not in repr(agent)
