"""DPoP proofs (RFC 9449 section 4.3): each numbered check refuses what it should."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from corral.identity import (
    DPoPKey,
    DPoPSettings,
    InvalidDPoPProofError,
    NonceSource,
    ReplayCache,
    UseDPoPNonceError,
    verify_dpop_proof,
)
from corral.identity._jose import b64url_sha256, sign
from tests.identity.helpers import NOW, URL, craft, hmac_craft, parts

TOKEN = "an.access.token"  # noqa: S105 (test data)


class Agent:
    def __init__(self, alg: str = "EdDSA") -> None:
        self.key = DPoPKey.generate(alg)  # type: ignore[arg-type]
        self.replay = ReplayCache()

    def proof(self, **kw: Any) -> str:
        return self.key.proof(
            kw.pop("method", "GET"),
            kw.pop("url", URL),
            access_token=kw.pop("access_token", TOKEN),
            now=kw.pop("iat", NOW),
            **kw,
        )

    def check(self, proof: str | None, **kw: Any) -> str:
        kw.setdefault("method", "GET")
        kw.setdefault("url", URL)
        kw.setdefault("now", NOW)
        kw.setdefault("access_token", TOKEN)
        return verify_dpop_proof(proof, replay=self.replay, **kw)

    def refused(self, proof: str | None, match: str, **kw: Any) -> None:
        with pytest.raises(InvalidDPoPProofError, match=match) as info:
            self.check(proof, **kw)
        assert info.value.error == "invalid_dpop_proof"
        assert info.value.www_authenticate().startswith('DPoP error="invalid_dpop_proof"')


@pytest.fixture
def agent() -> Agent:
    return Agent()


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_valid_proof_returns_the_key_thumbprint(alg: str) -> None:
    agent = Agent(alg)
    assert agent.check(agent.proof()) == agent.key.thumbprint


def test_ed25519_fully_specified_alg_is_accepted(agent: Agent) -> None:
    header, claims, _ = parts(agent.proof())
    proof = sign({**header, "alg": "Ed25519"}, claims, agent.key._key)
    assert agent.check(proof) == agent.key.thumbprint


def test_missing_proof_is_refused(agent: Agent) -> None:
    agent.refused(None, "no DPoP header")
    agent.refused("", "no DPoP header")


def test_two_proofs_are_refused(agent: Agent) -> None:
    agent.refused(f"{agent.proof()}, {agent.proof()}", "more than one")


def test_replayed_proof_is_refused(agent: Agent) -> None:
    proof = agent.proof()
    agent.check(proof)
    agent.refused(proof, "already used")


def test_same_jti_from_another_key_is_its_own_proof(agent: Agent) -> None:
    """The replay cache is keyed by thumbprint: one client cannot burn another's jtis."""
    other = DPoPKey.generate()
    header, claims, _ = parts(agent.proof())
    agent.check(agent.proof(), now=NOW)
    mine = sign(header, {**claims, "jti": "shared"}, agent.key._key)
    theirs = sign({**header, "jwk": other.public_jwk}, {**claims, "jti": "shared"}, other._key)
    assert agent.check(mine) == agent.key.thumbprint
    assert agent.check(theirs) == other.thumbprint


def test_wrong_typ_is_refused(agent: Agent) -> None:
    header, claims, _ = parts(agent.proof())
    for typ in ("JWT", "at+jwt", None):
        h = {k: v for k, v in {**header, "typ": typ}.items() if v is not None}
        agent.refused(sign(h, claims, agent.key._key), "typ")


def test_alg_none_is_refused(agent: Agent) -> None:
    header, claims, _ = parts(agent.proof())
    agent.refused(craft({**header, "alg": "none"}, claims), "not allowed")


def test_hmac_proof_is_refused(agent: Agent) -> None:
    header, claims, _ = parts(agent.proof())
    secret = base64.urlsafe_b64decode(header["jwk"]["x"] + "==")
    agent.refused(hmac_craft({**header, "alg": "HS256"}, claims, secret), "not allowed")


def test_missing_jwk_is_refused(agent: Agent) -> None:
    header, claims, _ = parts(agent.proof())
    del header["jwk"]
    agent.refused(sign(header, claims, agent.key._key), "jwk")


@pytest.mark.parametrize("member", ["d", "p", "q", "k"])
def test_private_key_in_jwk_is_refused(agent: Agent, member: str) -> None:
    header, claims, _ = parts(agent.proof())
    private = agent.key.private_jwk()
    jwk = {**header["jwk"], member: private["d"]}
    agent.refused(sign({**header, "jwk": jwk}, claims, agent.key._key), "private key material")


def test_jwk_of_the_wrong_shape_is_refused(agent: Agent) -> None:
    header, claims, _ = parts(agent.proof())
    ec = DPoPKey.generate("ES256")
    # an EdDSA proof carrying a P-256 key, and an oct key
    agent.refused(sign({**header, "jwk": ec.public_jwk}, claims, agent.key._key), "needs a OKP")
    oct_jwk = {"kty": "oct", "k": "c2VjcmV0"}
    agent.refused(sign({**header, "jwk": oct_jwk}, claims, agent.key._key), "private key")


def test_signature_by_another_key_is_refused(agent: Agent) -> None:
    """A proof that names the victim's public key but is signed by the attacker's."""
    header, claims, _ = parts(agent.proof())
    attacker = DPoPKey.generate()
    agent.refused(sign(header, claims, attacker._key), "signature")


def test_tampered_proof_is_refused(agent: Agent) -> None:
    head, _, sig = agent.proof().split(".")
    _, claims, _ = parts(agent.proof())
    from tests.identity.helpers import b64json

    agent.refused(f"{head}.{b64json({**claims, 'htm': 'POST'})}.{sig}", "signature")


def test_proof_for_another_method_is_refused(agent: Agent) -> None:
    agent.refused(agent.proof(method="POST"), "htm", method="GET")
    agent.refused(agent.proof(method="get"), "htm", method="GET")


@pytest.mark.parametrize(
    "htu",
    [
        "https://corral.example/v1/sessions/s-2/screenshot",
        "https://evil.example/v1/sessions/s-1/screenshot",
        "http://corral.example/v1/sessions/s-1/screenshot",
        "https://corral.example:8443/v1/sessions/s-1/screenshot",
        "https://corral.example/v1/sessions/s-1/screenshot/",
        "https://corral.example/v1/sessions/s-1",
        "not a url",
    ],
)
def test_proof_for_another_url_is_refused(agent: Agent, htu: str) -> None:
    header, claims, _ = parts(agent.proof())
    agent.refused(sign(header, {**claims, "htu": htu}, agent.key._key), "htu")


@pytest.mark.parametrize(
    "htu",
    [
        "HTTPS://Corral.Example/v1/sessions/s-1/screenshot",
        "https://corral.example:443/v1/sessions/s-1/screenshot",
        "https://corral.example/v1/sessions/s-1/screenshot?x=1#frag",
        "https://corral.example/v1/./sessions/x/../s-1/screenshot",
        "https://corral.example/v1/sessions/%73-1/screenshot",
    ],
)
def test_equivalent_url_spellings_match(agent: Agent, htu: str) -> None:
    header, claims, _ = parts(agent.proof())
    assert agent.check(sign(header, {**claims, "htu": htu}, agent.key._key))


def test_request_query_is_ignored(agent: Agent) -> None:
    assert agent.check(agent.proof(), url=URL + "?page=2")


def test_stale_or_future_iat_is_refused(agent: Agent) -> None:
    agent.refused(agent.proof(iat=NOW - 61), "iat")
    agent.refused(agent.proof(iat=NOW + 61), "iat")
    assert agent.check(agent.proof(iat=NOW - 60))
    narrow = DPoPSettings(max_age=10, max_skew=2)
    agent.refused(agent.proof(iat=NOW - 11), "iat", settings=narrow)
    agent.refused(agent.proof(iat=NOW + 3), "iat", settings=narrow)


def test_missing_iat_or_jti_is_refused(agent: Agent) -> None:
    header, claims, _ = parts(agent.proof())
    for name in ("iat", "jti", "htm", "htu"):
        rest = {k: v for k, v in claims.items() if k != name}
        agent.refused(sign(header, rest, agent.key._key), name)


def test_missing_or_wrong_ath_is_refused(agent: Agent) -> None:
    agent.refused(agent.proof(access_token=None), "ath is missing")
    agent.refused(agent.proof(access_token=TOKEN + "x"), "ath does not match")


def test_no_ath_needed_without_a_token(agent: Agent) -> None:
    """At the token endpoint there is no access token yet."""
    assert agent.check(agent.proof(access_token=None), access_token=None)


def test_ath_is_the_token_hash(agent: Agent) -> None:
    assert parts(agent.proof())[1]["ath"] == b64url_sha256(TOKEN)


def test_nonce_demanded_then_accepted(agent: Agent) -> None:
    settings = DPoPSettings(nonces=NonceSource())
    with pytest.raises(UseDPoPNonceError) as info:
        agent.check(agent.proof(), settings=settings)
    error = info.value
    assert error.error == "use_dpop_nonce"
    assert error.headers()["DPoP-Nonce"] == error.nonce
    assert error.www_authenticate().startswith('DPoP error="use_dpop_nonce"')
    assert agent.check(agent.proof(nonce=error.nonce), settings=settings)


def test_bad_or_old_nonce_gets_a_fresh_one(agent: Agent) -> None:
    nonces = NonceSource(lifetime=300)
    settings = DPoPSettings(nonces=nonces)
    old = nonces.issue(NOW - 301)
    foreign = NonceSource().issue(NOW)
    for nonce in (old, foreign, "made-up"):
        with pytest.raises(UseDPoPNonceError) as info:
            agent.check(agent.proof(nonce=nonce), settings=settings)
        assert nonces.check(info.value.nonce, NOW)


def test_a_nonce_refusal_does_not_burn_the_jti(agent: Agent) -> None:
    settings = DPoPSettings(nonces=NonceSource())
    proof = agent.proof()
    with pytest.raises(UseDPoPNonceError):
        agent.check(proof, settings=settings)
    assert len(agent.replay) == 0


def test_b64_and_crit_headers_are_refused(agent: Agent) -> None:
    header, claims, _ = parts(agent.proof())
    agent.refused(sign({**header, "crit": ["typ"]}, claims, agent.key._key), "crit")
    agent.refused(sign({**header, "b64": True}, claims, agent.key._key), "b64")
