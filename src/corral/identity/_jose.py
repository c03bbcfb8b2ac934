"""JOSE plumbing shared by tokens, proofs and assertions, on top of joserfc.

One parse, one algorithm allowlist, one way to import a public key and to check a signature,
so the three verifiers cannot drift apart. Failures raise `JoseFailure` with a safe message;
each verifier turns it into its own `AuthError`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import ECKey, Key, OKPKey
from joserfc.jws import (
    CompactSignature,
    JWSRegistry,
    extract_compact,
    serialize_compact,
    validate_compact,
)

__all__ = [
    "ALLOWED_ALGS",
    "JoseFailure",
    "ParsedJWS",
    "b64url_sha256",
    "check_alg",
    "import_public_jwk",
    "number_claim",
    "parse",
    "sign",
    "string_claim",
    "verify_signature",
]

# Asymmetric algorithms only: "none" and HS* are absent, so a token "signed" with our public
# key as an HMAC secret, or not signed at all, fails here before any key is looked at.
ALLOWED_ALGS = frozenset({"EdDSA", "Ed25519", "ES256"})
# The key type and curve each algorithm needs (RFC 8037, RFC 9864, RFC 7518).
_KEY_SHAPE: dict[str, tuple[str, str]] = {
    "EdDSA": ("OKP", "Ed25519"),
    "Ed25519": ("OKP", "Ed25519"),
    "ES256": ("EC", "P-256"),
}
# JWK members that only a private (or symmetric) key has (RFC 7518 section 6, RFC 8037).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# Headers that change how the payload is read (RFC 7797 b64) or demand extensions: refused.
_REFUSED_HEADERS = frozenset({"b64", "crit"})
MAX_JWS_CHARS = 8192


class JoseFailure(Exception):
    """A JWS was refused; the message is safe to show."""


class _Registry(JWSRegistry):
    """joserfc's registry restricted to ALLOWED_ALGS, without its EdDSA deprecation warning
    (RFC 9864 prefers "Ed25519"; we accept both spellings, and warnings are errors in tests)."""

    def get_alg(self, name: str) -> JWSAlgModel:
        if name not in ALLOWED_ALGS or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


_REGISTRY = _Registry(algorithms=sorted(ALLOWED_ALGS), strict_check_header=False)


@dataclass(frozen=True)
class ParsedJWS:
    """A compact JWS split and decoded, its signature not yet checked."""

    header: dict[str, Any]
    claims: dict[str, Any]
    obj: CompactSignature


def parse(token: object) -> ParsedJWS:
    """Split and decode a compact JWS whose payload is a JSON object."""
    if not isinstance(token, str) or not token:
        raise JoseFailure("not a compact JWS")
    if len(token) > MAX_JWS_CHARS:
        raise JoseFailure("too long")
    try:
        obj = extract_compact(token.encode("ascii"), registry=_REGISTRY)
        header = obj.headers()
        claims = json.loads(obj.payload)
    except (JoseError, ValueError, TypeError, AttributeError) as exc:
        # joserfc assumes a JSON object header; anything else may surface as a TypeError or
        # AttributeError from inside it. All of it is malformed input.
        raise JoseFailure("not a compact JWS with a JSON payload") from exc
    if not isinstance(header, dict):
        raise JoseFailure("header is not a JSON object")
    if not isinstance(claims, dict):
        raise JoseFailure("payload is not a JSON object")
    if _REFUSED_HEADERS & header.keys():
        raise JoseFailure("b64 and crit headers are not accepted")
    return ParsedJWS(header, claims, obj)


def check_alg(header: Mapping[str, Any]) -> str:
    """The header's alg, if it is on the allowlist."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
        raise JoseFailure(f"algorithm {str(alg)[:20]!r} is not allowed")
    return alg


def import_public_jwk(jwk: object, alg: str) -> Key:
    """Import a JWK that must be a public key of the shape `alg` needs."""
    if not isinstance(jwk, dict):
        raise JoseFailure("jwk is not a JSON object")
    if PRIVATE_MEMBERS & jwk.keys():
        raise JoseFailure("jwk contains private key material")
    kty, crv = _KEY_SHAPE[alg]
    if jwk.get("kty") != kty or jwk.get("crv") != crv:
        raise JoseFailure(f"{alg} needs a {kty} {crv} key")
    try:
        key: Key = OKPKey.import_key(jwk) if kty == "OKP" else ECKey.import_key(jwk)
    except (JoseError, ValueError, TypeError) as exc:
        raise JoseFailure("jwk is not a valid public key") from exc
    if key.is_private:
        raise JoseFailure("jwk contains private key material")
    return key


def verify_signature(parsed: ParsedJWS, key: Key) -> None:
    """Check the JWS signature with `key` (the alg was checked by `check_alg`)."""
    try:
        ok = validate_compact(parsed.obj, key, registry=_REGISTRY)
    except (JoseError, ValueError, TypeError) as exc:
        raise JoseFailure("key does not fit the algorithm") from exc
    if not ok:
        raise JoseFailure("signature does not verify")


def sign(header: dict[str, Any], claims: Mapping[str, Any], key: Key) -> str:
    """Compact JWS over the claims as compact JSON."""
    payload = json.dumps(claims, separators=(",", ":"), sort_keys=True)
    return serialize_compact(header, payload, key, registry=_REGISTRY)


def b64url_sha256(value: str) -> str:
    """base64url(SHA-256(value)) without padding, as `ath` and `jkt` use."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def number_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim, None when absent; booleans and strings are refused."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JoseFailure(f"{name} is not a number")
    return float(value)


def string_claim(claims: Mapping[str, Any], name: str, max_len: int = 512) -> str:
    """A required, non-empty string claim of bounded length."""
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise JoseFailure(f"{name} is missing or not a string")
    return value
