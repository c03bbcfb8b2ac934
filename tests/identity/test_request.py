"""verify_request: the issue's attack list, each refused with the right error code."""

from __future__ import annotations

from typing import Any

import pytest

from corral.identity import (
    AccessTokenClaims,
    AuthError,
    DPoPKey,
    DPoPSettings,
    InvalidDPoPProofError,
    InvalidTokenError,
    MissingCredentialsError,
    NonceSource,
    UseDPoPNonceError,
    VerifiedTokenCache,
)
from corral.identity.errors import (
    IdentityDisabledError,
    IdentityHighRiskError,
    TokenRevokedError,
)
from tests.identity.helpers import NOW, URL, World, craft, parts


def refused(world: World, error: type[AuthError], code: str | None, *a: Any, **kw: Any) -> str:
    with pytest.raises(error) as info:
        world.call(*a, **kw)
    assert info.value.error == code
    assert info.value.status == 401
    return info.value.www_authenticate()


def test_legitimate_request_gives_the_principal(world: World) -> None:
    token = world.token(scope=["act"]).access_token
    principal = world.call(token, world.proof(token))
    assert principal.subject == "agent:a-1"
    assert principal.client_id == "a-1"
    assert principal.jkt == world.agent.thumbprint
    assert principal.scope == ("act",)
    assert principal.expires_at == NOW + 300


def test_every_request_needs_its_own_proof(world: World) -> None:
    token = world.token().access_token
    for _ in range(3):
        world.call(token, world.proof(token))


def test_scheme_is_case_insensitive(world: World) -> None:
    token = world.token().access_token
    world.call(token, world.proof(token), scheme="dpop")


def test_stolen_token_with_a_proof_from_another_key(world: World) -> None:
    token = world.token().access_token
    thief = DPoPKey.generate()
    proof = thief.proof("GET", URL, access_token=token, now=NOW)
    challenge = refused(world, InvalidTokenError, "invalid_token", token, proof)
    assert "key binding" in challenge


def test_replayed_proof(world: World) -> None:
    token = world.token().access_token
    proof = world.proof(token)
    world.call(token, proof)
    refused(world, InvalidDPoPProofError, "invalid_dpop_proof", token, proof)


def test_proof_for_another_url_or_method(world: World) -> None:
    token = world.token().access_token
    other_url = world.proof(token, url="https://corral.example/v1/sessions/s-2/screenshot")
    refused(world, InvalidDPoPProofError, "invalid_dpop_proof", token, other_url)
    refused(world, InvalidDPoPProofError, "invalid_dpop_proof", token, world.proof(token, "POST"))


def test_stale_iat(world: World) -> None:
    token = world.token().access_token
    stale = world.proof(token, now=NOW - 120)
    refused(world, InvalidDPoPProofError, "invalid_dpop_proof", token, stale)


def test_token_without_a_proof(world: World) -> None:
    token = world.token().access_token
    refused(world, InvalidDPoPProofError, "invalid_dpop_proof", token, None)


def test_bearer_is_refused_by_default(world: World) -> None:
    token = world.token(jkt=None).access_token
    challenge = refused(world, MissingCredentialsError, None, token, None, scheme="Bearer")
    assert challenge == 'DPoP algs="EdDSA ES256 Ed25519"'


def test_bearer_allowed_takes_unbound_tokens_only(world: World) -> None:
    bearer = world.token(jkt=None).access_token
    assert world.call(bearer, None, scheme="Bearer", allow_bearer=True).jkt is None
    bound = world.token().access_token  # stolen DPoP token presented as a bearer token
    refused(
        world, InvalidTokenError, "invalid_token", bound, None, scheme="Bearer", allow_bearer=True
    )


def test_unbound_token_with_dpop_scheme_is_refused(world: World) -> None:
    token = world.token(jkt=None).access_token
    refused(world, InvalidTokenError, "invalid_token", token, world.proof(token))


def test_no_authorization_header(world: World) -> None:
    from corral.identity import verify_request

    with pytest.raises(MissingCredentialsError) as info:
        verify_request(
            "GET",
            URL,
            None,
            None,
            keyring=world.ring,
            issuer="i",
            audience="a",
            replay=world.replay,
            revocation=world.alive,
            now=NOW,
        )
    assert info.value.www_authenticate().startswith("DPoP ")
    assert "error=" not in info.value.www_authenticate()


@pytest.mark.parametrize("scheme", ["Basic", "Token", "DPoPx"])
def test_other_schemes_are_refused(world: World, scheme: str) -> None:
    token = world.token().access_token
    refused(world, MissingCredentialsError, None, token, world.proof(token), scheme=scheme)


def test_alg_none_token(world: World) -> None:
    header, claims, _ = parts(world.token().access_token)
    forged = craft({**header, "alg": "none"}, claims)
    refused(world, InvalidTokenError, "invalid_token", forged, world.proof(forged))


def test_expired_token(world: World) -> None:
    token = world.token().access_token
    world.now = NOW + 3600
    refused(world, InvalidTokenError, "invalid_token", token, world.proof(token))


def test_wrong_audience(world: World) -> None:
    token = world.token(audience="https://other.example").access_token
    refused(world, InvalidTokenError, "invalid_token", token, world.proof(token))


def test_session_token_on_another_session(world: World) -> None:
    token = world.token(audience="s-1", session_id="s-1").access_token
    assert world.call(token, world.proof(token), audience="s-1").session_id == "s-1"
    other = "https://corral.example/sessions/s-2/mcp"
    refused(
        world,
        InvalidTokenError,
        "invalid_token",
        token,
        world.proof(token, url=other),
        url=other,
        audience="s-2",
    )
    # nor on the gateway
    refused(world, InvalidTokenError, "invalid_token", token, world.proof(token))


def test_revoked_token_subject_or_session(world: World) -> None:
    token = world.token(session_id="s-1")
    world.call(token.access_token, world.proof(token.access_token))
    for revoked in (token.claims.token_id, "agent:a-1", "s-1"):
        world.revoked = {revoked}
        proof = world.proof(token.access_token)
        refused(world, InvalidTokenError, "invalid_token", token.access_token, proof)


def test_revocation_check_failure_fails_closed(world: World) -> None:
    def broken(claims: AccessTokenClaims) -> bool:
        raise RuntimeError("store down")

    def sloppy(claims: AccessTokenClaims) -> bool:
        return "yes"  # type: ignore[return-value]

    token = world.token().access_token
    for check in (broken, sloppy):
        proof = world.proof(token)
        refused(world, InvalidTokenError, "invalid_token", token, proof, revocation=check)


def test_a_refusal_of_the_revocation_check_keeps_its_reason(world: World) -> None:
    """The attack on clarity (issue 9): after `corral agent disable` the check refuses with
    "the identity is disabled", and a broad `except` answered "revocation state unavailable"
    instead. Each refusal reaches the caller as it is, with its own code; the OAuth error in
    the challenge stays `invalid_token`."""
    token = world.token().access_token
    for error, code, message in (
        (IdentityDisabledError, "identity_disabled", "the identity is disabled"),
        (TokenRevokedError, "token_revoked", "revoked"),
        (IdentityHighRiskError, "identity_high_risk", "the identity is at high risk"),
    ):

        def check(claims: AccessTokenClaims, e: type[AuthError] = error, m: str = message) -> bool:
            raise e(f"access token refused: {m}")

        with pytest.raises(error) as info:
            world.call(token, world.proof(token), revocation=check)
        assert info.value.code == code and info.value.error == "invalid_token"
        assert info.value.message == f"access token refused: {message}"
        assert "unavailable" not in info.value.message


def test_nonce_required_then_accepted(world: World) -> None:
    settings = DPoPSettings(nonces=NonceSource())
    token = world.token().access_token
    with pytest.raises(UseDPoPNonceError) as info:
        world.call(token, world.proof(token), dpop_settings=settings)
    assert info.value.headers()["DPoP-Nonce"] == info.value.nonce
    proof = world.proof(token, nonce=info.value.nonce)
    assert world.call(token, proof, dpop_settings=settings).subject == "agent:a-1"


def test_malformed_authorization_header(world: World) -> None:
    refused(world, InvalidTokenError, "invalid_token", "", None)
    refused(world, InvalidTokenError, "invalid_token", "a b", None)


def test_cached_token_still_needs_a_fresh_bound_proof(world: World) -> None:
    cache = VerifiedTokenCache()
    token = world.token().access_token
    world.call(token, world.proof(token), token_cache=cache)
    thief = DPoPKey.generate().proof("GET", URL, access_token=token, now=NOW)
    refused(world, InvalidTokenError, "invalid_token", token, thief, token_cache=cache)
    world.revoked = {"agent:a-1"}
    proof = world.proof(token)
    refused(world, InvalidTokenError, "invalid_token", token, proof, token_cache=cache)
