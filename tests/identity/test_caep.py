"""Security Event Tokens: Corral's own, and every refusal of a pushed one (RFC 8417/8935)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey
from joserfc.jws import JWSRegistry, serialize_compact

from corral.domain.events import CREDENTIAL_CHANGE, RISK_LEVEL_CHANGE, SESSION_REVOKED
from corral.domain.federation import OidcProvider
from corral.domain.identity import Risk
from corral.identity import caep
from corral.identity.errors import SetRefusedError
from corral.identity.keys import SigningKeyring
from tests.identity.helpers import b64, b64json, craft, hmac_craft, parts

NOW = 1_800_000_000.0
CORRAL = "https://corral.example"
IDP = "https://idp.example"


class _AnyAlg(JWSRegistry):
    """Signs with whatever the test asks, without joserfc's EdDSA deprecation warning."""

    def get_alg(self, name: str) -> Any:
        return self.algorithms[name]


_ANY_ALG = _AnyAlg(strict_check_header=False)


def public(key: Key, kid: str) -> dict[str, Any]:
    return {**key.as_dict(private=False), "kid": kid, "use": "sig"}


class Idp:
    """An identity provider pushing SETs to Corral, with one pinned Ed25519 key."""

    def __init__(self) -> None:
        self.key = OKPKey.generate_key("Ed25519")
        self.provider = OidcProvider(
            name="idp",
            issuer=IDP,
            audience="corral",
            jwks={"keys": [public(self.key, "k1")]},
            allow_events=True,
        )
        self.seen: set[tuple[str, str]] = set()
        self.n = 0

    def claims(self, **changes: Any) -> dict[str, Any]:
        self.n += 1
        claims: dict[str, Any] = {
            "iss": IDP,
            "aud": CORRAL,
            "iat": int(NOW),
            "jti": f"jti-{self.n}",
            "sub_id": {"format": "iss_sub", "iss": IDP, "sub": "user-7"},
            "events": {
                RISK_LEVEL_CHANGE: {
                    "principal": "USER",
                    "current_level": "HIGH",
                    "event_timestamp": int(NOW),
                }
            },
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(
        self,
        claims: dict[str, Any] | None = None,
        *,
        key: Key | None = None,
        alg: str = "EdDSA",
        **header: Any,
    ) -> str:
        head = {"typ": "secevent+jwt", "alg": alg, "kid": "k1", **header}
        head = {k: v for k, v in head.items() if v is not None}
        payload = json.dumps(claims or self.claims())
        return serialize_compact(head, payload, key or self.key, registry=_ANY_ALG)

    def remember(self, issuer: str, jti: str) -> bool:
        if (issuer, jti) in self.seen:
            return False
        self.seen.add((issuer, jti))
        return True

    def verify(self, token: object, **kw: Any) -> caep.ReceivedEvent:
        provider = kw.pop("provider", self.provider)
        kw.setdefault("now", NOW)
        return caep.verify_set(
            token,
            audience=CORRAL,
            provider_for=lambda iss: provider if iss == provider.issuer else None,
            remember=self.remember,
            **kw,
        )


@pytest.fixture
def idp() -> Idp:
    return Idp()


def refused(idp: Idp, token: object, err: str, **kw: Any) -> str:
    with pytest.raises(SetRefusedError) as info:
        idp.verify(token, **kw)
    assert info.value.err == err, info.value.message
    assert info.value.body() == {"err": err, "description": info.value.message}
    return info.value.message


# -- Corral's own SETs -------------------------------------------------------------------------


def corral_as_provider(ring: SigningKeyring) -> OidcProvider:
    return OidcProvider(
        name="corral", issuer=CORRAL, audience="-", jwks=ring.jwks(NOW), allow_events=True
    )


def test_corral_set_round_trip() -> None:
    ring = SigningKeyring.generate(now=NOW)
    event = caep.risk_level_change("a-1", at=NOW - 5, current=Risk.HIGH, previous=Risk.NONE)
    claims = caep.set_claims(event, issuer=CORRAL, audience="rcv", jti="j1", iat=NOW)
    token = caep.build_set(claims, ring)
    header, body, _ = parts(token)
    assert header == {"typ": "secevent+jwt", "alg": "EdDSA", "kid": ring.current.kid}
    assert body["iss"] == CORRAL and body["aud"] == "rcv" and body["jti"] == "j1"
    assert body["iat"] == int(NOW)
    assert body["sub_id"] == {"format": "iss_sub", "iss": CORRAL, "sub": "a-1"}
    assert body["events"] == {
        RISK_LEVEL_CHANGE: {
            "principal": "USER",
            "current_level": "HIGH",
            "previous_level": "LOW",  # CAEP has no "none": reported as LOW
            "risk_reason": "risk set to high",
            "event_timestamp": int(NOW - 5),
        }
    }
    # a receiver holding Corral's JWKS verifies it
    seen: set[tuple[str, str]] = set()

    def remember(issuer: str, jti: str) -> bool:
        new = (issuer, jti) not in seen
        seen.add((issuer, jti))
        return new

    got = caep.verify_set(
        token,
        audience="rcv",
        provider_for=lambda iss: corral_as_provider(ring),
        remember=remember,
        now=NOW,
    )
    assert got.type == RISK_LEVEL_CHANGE and got.subject["sub"] == "a-1" and got.jti == "j1"


def test_session_and_credential_events() -> None:
    one = caep.session_revoked("a-1", at=NOW, initiating_entity="policy", session_id="ses-1")
    claims = caep.set_claims(one, issuer=CORRAL, audience="r", jti="j", iat=NOW)
    assert claims["sub_id"] == {
        "format": "complex",
        "user": {"format": "iss_sub", "iss": CORRAL, "sub": "a-1"},
        "session": {"format": "opaque", "id": "ses-1"},
    }
    assert claims["events"][SESSION_REVOKED]["initiating_entity"] == "policy"
    cred = caep.credential_change(
        "u-1", at=NOW, credential_type="password", change_type="update", friendly_name="pw"
    )
    payload = caep.set_claims(cred, issuer=CORRAL, audience="r", jti="j", iat=NOW)["events"]
    assert payload[CREDENTIAL_CHANGE]["change_type"] == "update"
    assert payload[CREDENTIAL_CHANGE]["friendly_name"] == "pw"
    with pytest.raises(ValueError, match="change_type"):
        caep.credential_change("u-1", at=NOW, credential_type="password", change_type="lost")


def test_levels() -> None:
    assert [caep.caep_level(r) for r in Risk] == ["LOW", "LOW", "MEDIUM", "HIGH"]
    assert caep.corral_risk("high") is Risk.HIGH and caep.corral_risk("LOW") is Risk.LOW
    with pytest.raises(ValueError):
        caep.corral_risk("NONE")


# -- accepted pushes ---------------------------------------------------------------------------


def test_accepts_a_good_set(idp: Idp) -> None:
    got = idp.verify(idp.sign())
    assert got.issuer == IDP and got.jti == "jti-1" and got.type == RISK_LEVEL_CHANGE
    assert got.payload["current_level"] == "HIGH" and got.provider is idp.provider
    assert idp.seen == {(IDP, "jti-1")}


def test_accepts_audience_lists_subject_in_event_and_application_typ(idp: Idp) -> None:
    claims = idp.claims(aud=["other", CORRAL], sub_id=None)
    claims["events"][RISK_LEVEL_CHANGE]["subject"] = {"format": "email", "email": "a@b.example"}
    got = idp.verify(idp.sign(claims, typ="application/secevent+jwt"))
    assert got.subject == {"format": "email", "email": "a@b.example"}


def test_accepts_rs256_and_es256_keys(idp: Idp) -> None:
    rsa = RSAKey.generate_key(2048)
    ec = ECKey.generate_key("P-256")
    provider = replace(idp.provider, jwks={"keys": [public(rsa, "r"), public(ec, "e")]})
    idp.verify(idp.sign(key=rsa, alg="RS256", kid="r"), provider=provider)
    idp.verify(idp.sign(key=ec, alg="ES256", kid="e"), provider=provider)
    # without a kid, each key of the right shape is tried
    idp.verify(idp.sign(key=ec, alg="ES256", kid=None), provider=provider)


def test_keys_come_from_the_injected_source(idp: Idp) -> None:
    fetched = replace(idp.provider, jwks=None, jwks_uri=f"{IDP}/jwks")
    # the default fails closed: no pinned keys, and no fetching here
    message = refused(idp, idp.sign(), "invalid_key", provider=fetched)
    assert "no pinned keys" in message
    keys: Mapping[str, Any] = {"keys": [public(idp.key, "k1")]}
    idp.verify(idp.sign(), provider=fetched, keys_for=lambda p: keys)


# -- refusals, one per step --------------------------------------------------------------------


def test_1_not_a_jws(idp: Idp) -> None:
    for token in ("", "a.b", "not a token", None, 42, "x" * 9000):
        refused(idp, token, "invalid_request")


def test_2_typ(idp: Idp) -> None:
    for typ in ("JWT", "at+jwt", "dpop+jwt", None):
        refused(idp, idp.sign(typ=typ), "invalid_request")


def test_3_alg_none_and_hmac(idp: Idp) -> None:
    claims = idp.claims()
    refused(
        idp, craft({"typ": "secevent+jwt", "alg": "none", "kid": "k1"}, claims), "invalid_request"
    )
    # HMAC with the provider's public key as the secret: the classic confusion attack
    x = idp.key.as_dict(private=False)["x"]
    assert isinstance(x, str)
    secret = x.encode()
    forged = hmac_craft({"typ": "secevent+jwt", "alg": "HS256", "kid": "k1"}, claims, secret)
    assert "not allowed" in refused(idp, forged, "invalid_request")
    assert idp.seen == set()


def test_4_issuer(idp: Idp) -> None:
    refused(idp, idp.sign(idp.claims(iss="https://evil.example")), "invalid_issuer")
    refused(idp, idp.sign(idp.claims(iss=None)), "invalid_issuer")
    not_allowed = replace(idp.provider, allow_events=False, allow_assertions=True)
    refused(idp, idp.sign(), "invalid_issuer", provider=not_allowed)


def test_5_keys(idp: Idp) -> None:
    refused(idp, idp.sign(kid="unknown"), "invalid_key")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (refused)
    numbers = weak.public_key()
    n = numbers.public_numbers().n.to_bytes(128, "big")
    small = {"kty": "RSA", "kid": "k1", "n": b64(n), "e": "AQAB"}
    provider = replace(idp.provider, jwks={"keys": [small]})
    refused(idp, idp.sign(alg="EdDSA"), "invalid_key", provider=provider)
    signer = RSAKey.generate_key(2048)  # the signature is never looked at: the key is refused
    refused(idp, idp.sign(key=signer, alg="RS256"), "invalid_key", provider=provider)
    # a key listed for encryption, or for another algorithm, does not verify signatures
    enc = replace(idp.provider, jwks={"keys": [{**public(idp.key, "k1"), "use": "enc"}]})
    refused(idp, idp.sign(), "invalid_key", provider=enc)
    es = replace(idp.provider, jwks={"keys": [{**public(idp.key, "k1"), "alg": "ES256"}]})
    refused(idp, idp.sign(), "invalid_key", provider=es)
    refused(idp, idp.sign(), "invalid_key", provider=replace(idp.provider, jwks={"k": 1}))


def test_6_signature(idp: Idp) -> None:
    other = OKPKey.generate_key("Ed25519")
    refused(idp, idp.sign(key=other), "authentication_failed")  # right kid, wrong key
    header, _, signature = idp.sign().split(".")
    tampered = f"{header}.{b64json(idp.claims(aud=CORRAL, jti='other'))}.{signature}"
    refused(idp, tampered, "authentication_failed")
    assert idp.seen == set()


def test_7_claims(idp: Idp) -> None:
    refused(idp, idp.sign(idp.claims(jti=None)), "invalid_request")
    refused(idp, idp.sign(idp.claims(iat=None)), "invalid_request")
    refused(idp, idp.sign(idp.claims(iat="now")), "invalid_request")


def test_8_audience(idp: Idp) -> None:
    assert "not addressed" in refused(
        idp, idp.sign(idp.claims(aud="https://other.example")), "invalid_audience"
    )
    refused(idp, idp.sign(idp.claims(aud=None)), "invalid_audience")
    refused(idp, idp.sign(idp.claims(aud=[1])), "invalid_audience")


def test_9_times(idp: Idp) -> None:
    refused(idp, idp.sign(idp.claims(iat=int(NOW) + 120)), "invalid_request")
    refused(idp, idp.sign(idp.claims(iat=int(NOW) - 3700)), "invalid_request")
    refused(idp, idp.sign(idp.claims(exp=int(NOW) - 120)), "invalid_request")
    idp.verify(idp.sign(idp.claims(iat=int(NOW) + 30)))  # within the leeway


def test_10_events(idp: Idp) -> None:
    two = {
        RISK_LEVEL_CHANGE: {"current_level": "HIGH"},
        SESSION_REVOKED: {},
    }
    bad: list[dict[str, Any]] = [
        {"events": two},
        {"events": {}},
        {"events": None},
        {"events": {"https://schemas.openid.net/secevent/risc/event-type/account-purged": {}}},
        {"events": {SESSION_REVOKED: "revoked"}},
        {"events": {CREDENTIAL_CHANGE: {"credential_type": "password", "change_type": "lost"}}},
        {"events": {CREDENTIAL_CHANGE: {"change_type": "revoke"}}},
        {"events": {RISK_LEVEL_CHANGE: {"current_level": "SEVERE"}}},
        {"events": {RISK_LEVEL_CHANGE: {"current_level": "HIGH", "previous_level": 3}}},
        {"events": {SESSION_REVOKED: {"event_timestamp": "yesterday"}}},
        {"sub_id": None},
        {"sub_id": {"format": "phone_number", "phone_number": "+1"}},
        {"sub_id": {"format": "iss_sub", "iss": IDP}},
        {"sub_id": {"format": "complex", "user": {"format": "complex", "user": {}}}},
        {"sub_id": "user-7"},
    ]
    for changes in bad:
        refused(idp, idp.sign(idp.claims(**changes)), "invalid_request")
    assert idp.seen == set()  # a refused SET never uses up its jti
    complex_subject = {
        "format": "complex",
        "user": {"format": "opaque", "id": "u7"},
        "session": {"format": "opaque", "id": "s"},
    }
    idp.verify(idp.sign(idp.claims(sub_id=complex_subject)))


def test_11_replay(idp: Idp) -> None:
    token = idp.sign()
    idp.verify(token)
    assert "already received" in refused(idp, token, "invalid_request")
    # the same jti from another issuer is another SET
    other = Idp()
    other.provider = replace(other.provider, name="idp2", issuer="https://idp2.example")
    other.seen = idp.seen
    claims = other.claims(iss="https://idp2.example", jti="jti-1")
    other.verify(other.sign(claims))
