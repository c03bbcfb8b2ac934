"""Malformed input of every shape is an AuthError (a 401), never a crash (a 500)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from corral.identity import AuthError, ReplayCache, verify_client_assertion
from tests.identity.helpers import NOW, URL, World, craft

_X = World().agent.public_jwk["x"]
_OKP = {"kty": "OKP", "crv": "Ed25519", "x": _X}
HEADERS: list[Any] = [
    ["alg"],
    "alg",
    5,
    None,
    {"alg": 5},
    {"alg": ["EdDSA"]},
    {"alg": "EdDSA", "typ": ["at+jwt"]},
    {"alg": "EdDSA", "typ": "at+jwt", "kid": [1]},
    {"alg": "EdDSA", "typ": "at+jwt", "kid": {"a": 1}},
    {"alg": "EdDSA", "typ": "dpop+jwt", "jwk": "s"},
    {"alg": "EdDSA", "typ": "dpop+jwt", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": 5}},
    {"alg": "EdDSA", "typ": "dpop+jwt", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}},
    {"alg": "ES256", "typ": "dpop+jwt", "jwk": {"kty": "EC", "crv": "P-256", "x": "A", "y": "A"}},
    {"alg": "ES256", "typ": "dpop+jwt", "jwk": {"kty": "EC", "crv": "P-256"}},
    {"alg": "EdDSA", "typ": "dpop+jwt", "jwk": {**_OKP, "use": "enc"}},
    {"alg": "EdDSA", "typ": "dpop+jwt", "jwk": {**_OKP, "alg": "ES256"}},
]  # fmt: skip
CLAIMS: list[Any] = [{}, [], "x", 5, None, {"iat": "x", "jti": 5, "aud": [{}], "typ": {}},
                     {"jti": "a", "htm": "GET", "htu": URL, "iat": NOW}]  # fmt: skip


@pytest.mark.parametrize(("header", "claims"), list(itertools.product(HEADERS, CLAIMS)))
def test_refused_not_crashed(world: World, header: Any, claims: Any) -> None:
    token = world.token().access_token
    checks: list[Callable[[str], object]] = [
        lambda jws: world.call(jws, world.proof(jws)),
        lambda jws: world.call(token, jws),
        lambda jws: verify_client_assertion(
            jws,
            client_id="a",
            token_url="https://corral.example/v1/token",  # noqa: S106 (a URL)
            client_keys=[world.agent.public_jwk],
            replay=ReplayCache(),
            now=NOW,
        ),
    ]
    for signature, check in itertools.product((b"", b"x" * 64), checks):
        with pytest.raises(AuthError):
            check(craft(header, claims, signature))


@pytest.mark.parametrize("value", ["DPoP", "DPoP ", "DPoP a b", "DPoP \u00e9.\u00e9.\u00e9", "\0"])
def test_odd_authorization_headers(world: World, value: str) -> None:
    from corral.identity import verify_request

    with pytest.raises(AuthError):
        verify_request(
            "GET", URL, value, world.proof(None), keyring=world.ring, issuer="i",
            audience="a", replay=world.replay, revocation=world.alive, now=NOW,
        )  # fmt: skip
