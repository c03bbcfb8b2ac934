"""CAEP events as Security Event Tokens: build Corral's own, verify those pushed to Corral.

A Security Event Token (SET, RFC 8417) is a JWT with header `typ: secevent+jwt` whose `events`
claim holds exactly one event (Shared Signals Framework 1.0), about the subject named by
`sub_id` (a subject identifier, RFC 9493). Corral emits and accepts three CAEP 1.0 event types:
session-revoked, credential-change and risk-level-change.

Pure: time, keys, the trusted issuers and the record of seen `jti`s are all arguments, so every
refusal is tested without a server. `verify_set` raises `SetRefusedError` carrying the RFC 8935
error code the push endpoint answers with.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey
from joserfc.jws import JWSRegistry, validate_compact

from corral.domain.events import (
    CAEP_EVENT_TYPES,
    CREDENTIAL_CHANGE,
    RISK_LEVEL_CHANGE,
    SESSION_REVOKED,
)
from corral.domain.federation import OidcProvider
from corral.domain.identity import Risk
from corral.identity import _jose
from corral.identity.errors import SetRefusedError
from corral.identity.keys import SigningKeyring

__all__ = [
    "AGENT_KEY_CREDENTIAL",
    "CHANGE_TYPES",
    "DEFAULT_MAX_AGE",
    "SET_ALGS",
    "SET_TYP",
    "CorralEvent",
    "EventSink",
    "KeysFor",
    "ReceivedEvent",
    "build_set",
    "caep_level",
    "corral_risk",
    "credential_change",
    "pinned_keys",
    "risk_level_change",
    "session_revoked",
    "set_claims",
    "subject_iss_sub",
    "verify_set",
]

SET_TYP = "secevent+jwt"
#: `credential_type` for an agent's key pair (private_key_jwt): an extension value, CAEP allows
#: credential types agreed between transmitter and receiver beyond its list
AGENT_KEY_CREDENTIAL = "private-key-jwt"
_ACCEPTED_TYP = frozenset({"secevent+jwt", "application/secevent+jwt"})
#: Asymmetric algorithms only. Identity providers commonly sign with RSA, so RS256/PS256 are
#: accepted here (2048-bit keys at least), unlike for Corral's own tokens. Never none or HMAC.
SET_ALGS = frozenset({"EdDSA", "Ed25519", "ES256", "ES384", "RS256", "PS256"})
_KEY_SHAPE: dict[str, tuple[str, str | None]] = {
    "EdDSA": ("OKP", "Ed25519"),
    "Ed25519": ("OKP", "Ed25519"),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
}
MIN_RSA_BITS = 2048
#: how old (by `iat`) a pushed SET may be; the jti record is kept at least this long
DEFAULT_MAX_AGE = 3600.0
DEFAULT_LEEWAY = 60.0
CHANGE_TYPES = frozenset({"create", "revoke", "update", "delete"})
INITIATING_ENTITIES = frozenset({"admin", "user", "policy", "system"})
_LEVELS = {"LOW": Risk.LOW, "MEDIUM": Risk.MEDIUM, "HIGH": Risk.HIGH}
_SUBJECT_FORMATS = frozenset({"opaque", "iss_sub", "email", "complex"})


class _Registry(JWSRegistry):
    """joserfc's registry restricted to SET_ALGS."""

    def get_alg(self, name: str) -> Any:
        if name not in SET_ALGS:
            raise JoseError(f"algorithm {name!r} is not allowed")
        return self.algorithms[name]


_REGISTRY = _Registry(algorithms=sorted(SET_ALGS), strict_check_header=False)


# -- what Corral emits -------------------------------------------------------------------------


@dataclass(frozen=True)
class CorralEvent:
    """Something that happened to one Corral identity, before it becomes a SET per receiver."""

    type: str  # a CAEP event type URI
    principal: str  # the Corral agent or user id it is about
    at: float  # when it happened (event_timestamp)
    payload: Mapping[str, Any] = field(default_factory=dict)  # event-specific claims
    session_id: str | None = None  # set when one session is meant, not all of them


class EventSink(Protocol):
    """Where the identity layer and the control plane report changes (the EventEmitter)."""

    def emit(self, event: CorralEvent) -> None: ...


def _reason(text: str | None) -> dict[str, Any]:
    return {"reason_admin": {"en": text}} if text else {}


def session_revoked(
    principal: str,
    *,
    at: float,
    initiating_entity: str = "admin",
    reason: str | None = None,
    session_id: str | None = None,
) -> CorralEvent:
    """All the principal's sessions (or `session_id` only) were revoked."""
    payload = {"initiating_entity": initiating_entity, **_reason(reason)}
    return CorralEvent(SESSION_REVOKED, principal, at, payload, session_id)


def credential_change(
    principal: str,
    *,
    at: float,
    credential_type: str,
    change_type: str,
    friendly_name: str | None = None,
    initiating_entity: str = "admin",
) -> CorralEvent:
    """A credential was created, updated, revoked or deleted. `credential_type` is CAEP's
    (`password`, `app` for TOTP) or `private-key-jwt` for an agent's key pair (an extension
    value: CAEP allows types agreed between transmitter and receiver)."""
    if change_type not in CHANGE_TYPES:
        raise ValueError(f"change_type {change_type!r} is not one of {sorted(CHANGE_TYPES)}")
    payload: dict[str, Any] = {
        "credential_type": credential_type,
        "change_type": change_type,
        "initiating_entity": initiating_entity,
    }
    if friendly_name:
        payload["friendly_name"] = friendly_name
    return CorralEvent(CREDENTIAL_CHANGE, principal, at, payload)


def caep_level(risk: Risk) -> str:
    """CAEP has LOW, MEDIUM and HIGH; Corral's `none` is reported as LOW."""
    return "LOW" if risk in (Risk.NONE, Risk.LOW) else risk.value.upper()


def corral_risk(level: str) -> Risk:
    """The Corral risk for a CAEP level (case-insensitive); ValueError for anything else."""
    try:
        return _LEVELS[level.upper()]
    except KeyError:
        raise ValueError(f"risk level {level!r} is not LOW, MEDIUM or HIGH") from None


def risk_level_change(
    principal: str, *, at: float, current: Risk, previous: Risk | None, reason: str | None = None
) -> CorralEvent:
    payload: dict[str, Any] = {
        "principal": "USER",  # CAEP's closest principal type for an agent or user identity
        "current_level": caep_level(current),
        "risk_reason": reason or f"risk set to {current.value}",
    }
    if previous is not None:
        payload["previous_level"] = caep_level(previous)
    return CorralEvent(RISK_LEVEL_CHANGE, principal, at, payload)


def subject_iss_sub(issuer: str, subject: str) -> dict[str, str]:
    return {"format": "iss_sub", "iss": issuer, "sub": subject}


def set_claims(
    event: CorralEvent, *, issuer: str, audience: str, jti: str, iat: float
) -> dict[str, Any]:
    """The SET's claims: the subject is the Corral identity as `iss_sub` (Corral's issuer, the
    agent or user id), or for one session a complex subject with its `user` and `session`."""
    subject: dict[str, Any] = subject_iss_sub(issuer, event.principal)
    if event.session_id is not None:
        subject = {
            "format": "complex",
            "user": subject,
            "session": {"format": "opaque", "id": event.session_id},
        }
    return {
        "iss": issuer,
        "aud": audience,
        "iat": int(iat),
        "jti": jti,
        "sub_id": subject,
        "events": {event.type: {**event.payload, "event_timestamp": int(event.at)}},
    }


def build_set(claims: Mapping[str, Any], keyring: SigningKeyring) -> str:
    """Sign `claims` (from `set_claims`) with the keyring's current key."""
    key = keyring.current
    return _jose.sign({"typ": SET_TYP, "alg": key.alg, "kid": key.kid}, claims, key.private)


# -- what Corral accepts -----------------------------------------------------------------------

#: The JWK Set to verify a provider's SETs with. The default uses the provider's pinned keys;
#: a fetcher of `jwks_uri` (with caching) plugs in here. It raises SetRefusedError if it has none.
KeysFor = Callable[[OidcProvider], Mapping[str, Any]]


def pinned_keys(provider: OidcProvider) -> Mapping[str, Any]:
    """The provider's pinned JWK Set; fail closed without one (no fetching here)."""
    if provider.jwks is None:
        raise SetRefusedError(
            "invalid_key", "no pinned keys for this issuer: its events cannot be verified"
        )
    return provider.jwks


@dataclass(frozen=True)
class ReceivedEvent:
    """A verified SET with its one event."""

    issuer: str
    jti: str
    issued_at: float
    type: str
    subject: Mapping[str, Any]  # RFC 9493 subject identifier
    payload: Mapping[str, Any]  # the event's claims
    provider: OidcProvider


def _refuse(err: str, description: str) -> SetRefusedError:
    return SetRefusedError(err, f"SET refused: {description}")


def _import_key(jwk: Mapping[str, Any], alg: str) -> Key:
    """A public key of the shape `alg` needs; JoseFailure otherwise."""
    if _jose.PRIVATE_MEMBERS & jwk.keys():
        raise _jose.JoseFailure("jwk contains private key material")
    kty, crv = _KEY_SHAPE[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise _jose.JoseFailure(f"{alg} needs a {kty} key")
    try:
        key: Key
        if kty == "OKP":
            key = OKPKey.import_key(dict(jwk))
        elif kty == "EC":
            key = ECKey.import_key(dict(jwk))
        else:
            if _rsa_bits(jwk.get("n")) < MIN_RSA_BITS:  # before joserfc warns about it
                raise _jose.JoseFailure(f"RSA keys need at least {MIN_RSA_BITS} bits")
            key = RSAKey.import_key(dict(jwk))
    except (JoseError, ValueError, TypeError) as exc:
        raise _jose.JoseFailure("jwk is not a valid public key") from exc
    if key.is_private:
        raise _jose.JoseFailure("jwk contains private key material")
    return key


def _rsa_bits(n: object) -> int:
    if not isinstance(n, str):
        return 0
    try:
        modulus = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except (binascii.Error, ValueError):
        return 0
    return int.from_bytes(modulus, "big").bit_length()


def _candidate_keys(jwks: Mapping[str, Any], header: Mapping[str, Any], alg: str) -> list[Key]:
    """The provider's keys that could have signed this SET: by `kid` when the header names
    one, else every signing key of the right shape."""
    listed = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(listed, list):
        raise _refuse("invalid_key", "the issuer's key set has no keys")
    kid = header.get("kid")
    found: list[Key] = []
    for jwk in listed:
        if not isinstance(jwk, dict):
            continue
        if kid is not None and jwk.get("kid") != kid:
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
            continue
        try:
            found.append(_import_key(jwk, alg))
        except _jose.JoseFailure:
            continue
    if not found:
        raise _refuse("invalid_key", f"no usable {alg} key of the issuer matches the SET's kid")
    return found


def _signed_by_one_of(parsed: _jose.ParsedJWS, keys: list[Key]) -> bool:
    for key in keys:
        try:
            if validate_compact(parsed.obj, key, registry=_REGISTRY):
                return True
        except (JoseError, ValueError, TypeError):
            continue
    return False


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return list(aud)
    raise _refuse("invalid_audience", "aud is missing or not a string or list of strings")


def _text(value: object, name: str, max_len: int = 512) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise _refuse("invalid_request", f"{name} is missing or not a string")
    return value


def _check_subject(subject: object, *, nested: bool = False) -> Mapping[str, Any]:
    """An RFC 9493 subject identifier Corral can map: opaque, iss_sub, email, or (SSF) a
    complex subject whose `user` member is one of those."""
    if not isinstance(subject, dict):
        raise _refuse("invalid_request", "the event has no subject (sub_id)")
    fmt = subject.get("format")
    if fmt is None and not nested and "user" in subject:
        fmt = "complex"  # SSF complex subjects may leave the format out
    if fmt not in _SUBJECT_FORMATS or (nested and fmt == "complex"):
        raise _refuse("invalid_request", f"subject format {str(fmt)[:40]!r} is not supported")
    if fmt == "opaque":
        _text(subject.get("id"), "sub_id.id")
    elif fmt == "iss_sub":
        _text(subject.get("iss"), "sub_id.iss")
        _text(subject.get("sub"), "sub_id.sub")
    elif fmt == "email":
        _text(subject.get("email"), "sub_id.email", 254)
    else:
        _check_subject(subject.get("user"), nested=True)
    return subject


def _check_payload(event_type: str, payload: Mapping[str, Any]) -> None:
    """The members Corral acts on are present and well formed (RFC 8935: invalid_request)."""
    stamp = payload.get("event_timestamp")
    if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int | float)):
        raise _refuse("invalid_request", "event_timestamp is not a number")
    if event_type == CREDENTIAL_CHANGE:
        _text(payload.get("credential_type"), "credential_type", 64)
        if payload.get("change_type") not in CHANGE_TYPES:
            raise _refuse("invalid_request", "change_type is not create, revoke, update or delete")
    elif event_type == RISK_LEVEL_CHANGE:
        for name in ("current_level", "previous_level"):
            value = payload.get(name)
            if value is None and name == "previous_level":
                continue
            try:
                corral_risk(_text(value, name, 16))
            except ValueError:
                raise _refuse("invalid_request", f"{name} is not LOW, MEDIUM or HIGH") from None


def verify_set(
    token: object,
    *,
    audience: str,
    provider_for: Callable[[str], OidcProvider | None],
    remember: Callable[[str, str], bool],
    now: float,
    keys_for: KeysFor = pinned_keys,
    max_age: float = DEFAULT_MAX_AGE,
    leeway: float = DEFAULT_LEEWAY,
) -> ReceivedEvent:
    """Verify a pushed SET; its jti is recorded (once per issuer) only when every check passed.

    `provider_for(issuer)` finds the trusted provider for an issuer (None if there is none);
    `remember(issuer, jti)` records a jti and says whether it is new (an insert-unique in the
    store, so it holds across processes).
    """
    # 1. A compact JWS with a JSON object payload, of bounded size; no b64/crit headers.
    try:
        parsed = _jose.parse(token)
    except _jose.JoseFailure as exc:
        raise _refuse("invalid_request", str(exc)) from None
    header, claims = parsed.header, parsed.claims
    # 2. typ is secevent+jwt: an ID token, access token or other JWT is never an event.
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP:
        raise _refuse("invalid_request", "typ is not secevent+jwt")
    # 3. alg on the allowlist: asymmetric only, never none, never HMAC.
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SET_ALGS:
        raise _refuse("invalid_request", f"algorithm {str(alg)[:20]!r} is not allowed")
    # 4. iss names a trusted provider allowed to push events (unverified until step 6: it only
    #    chooses whose keys to check the signature with).
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer or len(issuer) > 512:
        raise _refuse("invalid_issuer", "iss is missing or not a string")
    provider = provider_for(issuer)
    if provider is None or not provider.allow_events or provider.issuer != issuer:
        raise _refuse("invalid_issuer", "the issuer is not trusted to push events")
    # 5. That provider's keys (pinned, or from the plugged-in fetcher) with the header's kid.
    keys = _candidate_keys(keys_for(provider), header, alg)
    # 6. The signature verifies with one of them.
    if not _signed_by_one_of(parsed, keys):
        raise _refuse("authentication_failed", "the signature does not verify")
    # 7. The claims are present with the right types.
    jti = _text(claims.get("jti"), "jti", 128)
    try:
        iat = _jose.number_claim(claims, "iat")
        exp = _jose.number_claim(claims, "exp")
    except _jose.JoseFailure as exc:
        raise _refuse("invalid_request", str(exc)) from None
    if iat is None:
        raise _refuse("invalid_request", "iat is missing")
    # 8. aud is (or contains) Corral's SSF audience: its issuer URL.
    if audience not in _audiences(claims):
        raise _refuse("invalid_audience", "the SET is not addressed to this Corral")
    # 9. iat is not in the future (beyond leeway) nor older than max_age; no exp in the past.
    if iat > now + leeway:
        raise _refuse("invalid_request", "iat is in the future")
    if iat < now - max_age:
        raise _refuse("invalid_request", f"the SET is older than {max_age:g} s")
    if exp is not None and exp < now - leeway:
        raise _refuse("invalid_request", "the SET has expired")
    # 10. Exactly one event, of a type Corral knows, with a well-formed payload and subject.
    events = claims.get("events")
    if not isinstance(events, dict) or len(events) != 1:
        raise _refuse("invalid_request", "events must hold exactly one event")
    ((event_type, payload),) = events.items()
    if event_type not in CAEP_EVENT_TYPES:
        raise _refuse("invalid_request", f"event type {str(event_type)[:120]!r} is not supported")
    if not isinstance(payload, dict):
        raise _refuse("invalid_request", "the event payload is not a JSON object")
    _check_payload(event_type, payload)
    subject = _check_subject(claims.get("sub_id", payload.get("subject")))
    # 11. The jti was never seen from this issuer (recorded last, insert-unique).
    if not remember(issuer, jti):
        raise _refuse("invalid_request", "this SET (jti) was already received")
    return ReceivedEvent(issuer, jti, iat, event_type, subject, payload, provider)
