"""Tokens issued by a trusted external OpenID Connect provider: keys, discovery, verification.

A provider's JWT (a workload identity token from a CI system or a cloud, or an ID token from a
console login) says who someone is at that provider. Corral believes it only when the provider
is configured (`corral federation add`), trusted for that purpose, signed it with a key it
publishes, addressed it to Corral, it is fresh, and its subject is explicitly linked to an
enabled Corral user or agent. Anything else is a refusal; so is a provider we cannot reach.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey
from joserfc.jws import CompactSignature, JWSRegistry, extract_compact, validate_compact

from corral.domain.access import CallerKind
from corral.domain.federation import OidcProvider, PrincipalKind
from corral.domain.identity import Risk
from corral.errors import InvalidInputError
from corral.identity import _jose
from corral.identity.errors import AuthError, InvalidClientError
from corral.store import Store

__all__ = [
    "EXTERNAL_ALGS",
    "ExternalIdentity",
    "FederationSettings",
    "JwksSource",
    "ProviderKeys",
    "ProviderMetadata",
    "ProviderUnavailableError",
    "Purpose",
    "check_public_jwks",
    "fetch_metadata",
    "new_http_client",
    "unverified_issuer",
    "verify_external_jwt",
]

Purpose = Literal["assertion", "console"]

# What external providers sign with. Asymmetric only: "none" and HS* are absent, so a token
# "signed" with a provider's public key as an HMAC secret, or not signed at all, is refused
# before any key is looked at.
EXTERNAL_ALGS: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
# The key type (and curve) each algorithm needs.
_KEY_SHAPE: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "EdDSA": ("OKP", "Ed25519"),
}
MIN_RSA_BITS = 2048
# typ values an identity token may carry (absent is fine too); a DPoP proof, a Security Event
# Token, a logout token or any other kind of JWT from the same provider is never an identity.
_ACCEPTED_TYP = frozenset({"jwt", "application/jwt", "at+jwt", "application/at+jwt"})
MAX_TOKEN_CHARS = 16_384
MAX_SUBJECT_CHARS = 255  # federated_subjects.subject
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ProviderUnavailableError(AuthError):
    """The provider's keys or metadata could not be fetched: refuse (fail closed), and say
    it is temporary rather than blame the caller's token."""

    title = "Identity provider unavailable"
    error = "temporarily_unavailable"
    status = 503
    token_endpoint_status = 503
    retry_after_s = 5
    exit_code = 9


@dataclass(frozen=True)
class FederationSettings:
    """`leeway` absorbs clock differences; `max_lifetime` caps exp - iat (a long-lived
    token is a standing credential, and replay memory must outlive it); keys are cached for
    `jwks_ttl` seconds and fetched again at most once per `refetch_interval` when a token
    names a kid we do not know (key rotation) or after a failed fetch."""

    leeway: float = 30.0
    max_lifetime: float = 3600.0
    jwks_ttl: float = 300.0
    refetch_interval: float = 30.0
    http_timeout: float = 5.0
    max_document_bytes: int = 256 * 1024


@dataclass(frozen=True)
class ExternalIdentity:
    """A verified external token and the Corral identity its subject is linked to."""

    provider: str
    issuer: str
    subject: str
    kind: PrincipalKind
    principal_id: str
    token_id: str | None
    issued_at: float
    expires_at: float
    claims: Mapping[str, Any] = field(repr=False, compare=False)


def _fail(message: str) -> InvalidClientError:
    return InvalidClientError(f"external token refused: {message}")


# -- fetching -------------------------------------------------------------------------------


def new_http_client(settings: FederationSettings = FederationSettings()) -> httpx.Client:
    """The client that fetches provider documents: short timeouts, no redirects (a JWKS URL
    that redirects elsewhere is a misconfiguration, not something to follow)."""
    return httpx.Client(timeout=settings.http_timeout, follow_redirects=False)


def _fetch_json(http: httpx.Client, url: str, what: str, max_bytes: int) -> dict[str, Any]:
    """GET a JSON object, bounded in size; any failure is ProviderUnavailableError."""
    body = bytearray()
    try:
        with http.stream("GET", url, headers={"Accept": "application/json"}) as answer:
            if answer.status_code != 200:
                raise ProviderUnavailableError(
                    f"the provider's {what} ({url}) answered HTTP {answer.status_code}"
                )
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ProviderUnavailableError(f"the provider's {what} ({url}) is too large")
    except httpx.HTTPError as exc:
        raise ProviderUnavailableError(f"the provider's {what} ({url}) is unreachable") from exc
    try:
        doc = json.loads(body)
    except ValueError:
        raise ProviderUnavailableError(f"the provider's {what} ({url}) is not JSON") from None
    if not isinstance(doc, dict):
        raise ProviderUnavailableError(f"the provider's {what} ({url}) is not a JSON object")
    return doc


def _jwks_keys(doc: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    keys = doc.get("keys")
    if not isinstance(keys, list):
        raise ProviderUnavailableError(f"the JWK Set at {where} has no keys list")
    return [k for k in keys if isinstance(k, dict)]


def check_public_jwks(doc: object) -> dict[str, Any]:
    """A JWK Set to pin: a `keys` list of public keys only (refuses private or symmetric
    keys, which must never be copied into Corral's configuration)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise InvalidInputError("not a JWK Set", hint='pass a JSON document {"keys": [...]}')
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
            raise InvalidInputError("a key of the JWK Set is not a JWK object")
        if _jose.PRIVATE_MEMBERS & jwk.keys():
            raise InvalidInputError(
                "the JWK Set contains private or symmetric key material",
                hint="pin the provider's public keys only (its published jwks document)",
            )
    return doc


class JwksSource:
    """One provider's signing keys: pinned, or fetched from its `jwks_uri` and cached.

    Fetched keys are reused for `jwks_ttl` seconds. A token naming an unknown kid triggers
    one fetch (the provider may have rotated its keys), but at most one per
    `refetch_interval`, so garbage kids cannot make us hammer the provider. A failed fetch is
    a refusal (never a fall back to stale keys) and is not retried before that interval either.
    """

    def __init__(
        self,
        *,
        jwks_uri: str | None = None,
        pinned: Mapping[str, Any] | None = None,
        http: httpx.Client | Callable[[], httpx.Client] | None = None,
        settings: FederationSettings = FederationSettings(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (jwks_uri is None) == (pinned is None):
            raise ValueError("give exactly one of jwks_uri or pinned keys")
        self.jwks_uri = jwks_uri
        self._pinned = _jwks_keys(pinned, "the pinned keys") if pinned is not None else None
        self._http = http
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[dict[str, Any]] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._failed = False
        #: how many fetches were made (tests and metrics)
        self.fetches = 0

    def _client(self) -> httpx.Client:
        if self._http is None:
            raise ProviderUnavailableError("no HTTP client to fetch the provider's keys")
        return self._http if isinstance(self._http, httpx.Client) else self._http()

    def _fetch(self, now: float) -> list[dict[str, Any]]:
        assert self.jwks_uri is not None
        self._attempted_at = now
        self.fetches += 1
        try:
            doc = _fetch_json(
                self._client(), self.jwks_uri, "JWK Set", self._settings.max_document_bytes
            )
            keys = _jwks_keys(doc, self.jwks_uri)
        except ProviderUnavailableError:
            self._keys, self._failed = None, True
            raise
        self._keys, self._fetched_at, self._failed = keys, now, False
        return keys

    def _recently_tried(self, now: float) -> bool:
        at = self._attempted_at
        return at is not None and now - at < self._settings.refetch_interval

    def keys(self) -> list[dict[str, Any]]:
        """The keys to verify with now (fetching them when the cache is empty or stale)."""
        if self._pinned is not None:
            return self._pinned
        with self._lock:
            now = self._clock()
            if self._keys is not None and now - self._fetched_at < self._settings.jwks_ttl:
                return self._keys
            if self._failed and self._recently_tried(now):
                raise ProviderUnavailableError("the provider's keys could not be fetched")
            return self._fetch(now)

    def refetch_for_unknown_kid(self) -> list[dict[str, Any]] | None:
        """Fetch again because a token names a kid we lack; None when a fetch was made too
        recently (the token is then refused: its kid stays unknown)."""
        if self._pinned is not None:
            return None
        with self._lock:
            now = self._clock()
            if self._recently_tried(now):
                return None
            return self._fetch(now)


class ProviderKeys:
    """A `JwksSource` per provider, replaced when the provider's key configuration changes."""

    def __init__(
        self,
        http: httpx.Client | Callable[[], httpx.Client] | None,
        settings: FederationSettings = FederationSettings(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, tuple[str, JwksSource]] = {}

    def source(self, provider: OidcProvider) -> JwksSource:
        config = json.dumps([provider.issuer, provider.jwks_uri, provider.jwks], sort_keys=True)
        with self._lock:
            known = self._sources.get(provider.name)
            if known is not None and known[0] == config:
                return known[1]
            source = JwksSource(
                jwks_uri=None if provider.jwks is not None else provider.jwks_uri,
                pinned=provider.jwks,
                http=self._http,
                settings=self._settings,
                clock=self._clock,
            )
            self._sources[provider.name] = (config, source)
            return source


# -- discovery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of OpenID Provider Metadata a console login needs."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str | None
    token_endpoint_auth_methods: tuple[str, ...]
    code_challenge_methods: tuple[str, ...]


def _endpoint(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise ProviderUnavailableError(f"the provider's metadata has no {name}")
    parts = urlsplit(value)
    loopback = parts.scheme == "http" and (parts.hostname or "") in (
        "127.0.0.1",
        "localhost",
        "::1",
    )
    if not parts.netloc or not (parts.scheme == "https" or loopback):
        raise ProviderUnavailableError(f"the provider's {name} is not an https URL")
    return value


def _strings(doc: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = doc.get(name)
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def fetch_metadata(
    http: httpx.Client,
    issuer: str,
    settings: FederationSettings = FederationSettings(),
) -> ProviderMetadata:
    """OpenID Connect Discovery: `<issuer>/.well-known/openid-configuration`, whose `issuer`
    must be exactly the one we asked about (Discovery 1.0 section 4.3), so a document served
    for another provider cannot redirect our logins."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    doc = _fetch_json(http, url, "OpenID configuration", settings.max_document_bytes)
    if doc.get("issuer") != issuer:
        raise ProviderUnavailableError(
            f"the OpenID configuration at {url} is for another issuer",
            hint="the configured issuer must be exactly the `issuer` the provider publishes",
        )
    jwks_uri = doc.get("jwks_uri")
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=_endpoint(doc, "authorization_endpoint"),
        token_endpoint=_endpoint(doc, "token_endpoint"),
        jwks_uri=jwks_uri if isinstance(jwks_uri, str) else None,
        token_endpoint_auth_methods=_strings(doc, "token_endpoint_auth_methods_supported"),
        code_challenge_methods=_strings(doc, "code_challenge_methods_supported"),
    )


# -- verification ---------------------------------------------------------------------------


class _Registry(JWSRegistry):
    """joserfc's registry restricted to EXTERNAL_ALGS, without the EdDSA deprecation warning
    (warnings are errors in tests, and providers still publish "EdDSA")."""

    def get_alg(self, name: str) -> JWSAlgModel:
        if name not in EXTERNAL_ALGS or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


_REGISTRY = _Registry(algorithms=list(EXTERNAL_ALGS), strict_check_header=False)


def _parse(token: object) -> tuple[dict[str, Any], dict[str, Any], CompactSignature]:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise _jose.JoseFailure("not a compact JWS of a reasonable size")
    try:
        obj = extract_compact(token.encode("ascii"), registry=_REGISTRY)
        header = obj.headers()
        claims = json.loads(obj.payload)
    except (JoseError, ValueError, TypeError, AttributeError) as exc:
        raise _jose.JoseFailure("not a compact JWS with a JSON payload") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise _jose.JoseFailure("header or payload is not a JSON object")
    if {"b64", "crit"} & header.keys():
        raise _jose.JoseFailure("b64 and crit headers are not accepted")
    return header, claims, obj


def unverified_issuer(token: str) -> str | None:
    """The `iss` of a JWT before verification, only to pick which provider must verify it;
    the verification then checks it exactly."""
    try:
        _, claims, _ = _parse(token)
    except _jose.JoseFailure:
        return None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None


def _import_key(jwk: Mapping[str, Any], alg: str) -> Key | None:
    """The JWK as a verification key for `alg`, or None when it does not fit (other type,
    curve, use or alg; private material; an RSA modulus under 2048 bits)."""
    if _jose.PRIVATE_MEMBERS & jwk.keys():
        return None  # a provider publishing private keys is broken; never use those
    kty, crv = _KEY_SHAPE[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        return None
    if jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
        return None
    try:
        key: Key
        if kty == "RSA":
            # Size first, from the modulus itself: joserfc would import (and warn about) a
            # weak key before we could look.
            n, e = _b64_int(jwk.get("n")), _b64_int(jwk.get("e"))
            public = RSAPublicNumbers(e, n).public_key()
            if public.key_size < MIN_RSA_BITS:
                return None
            key = RSAKey.import_key(public)
        elif kty == "EC":
            key = ECKey.import_key(dict(jwk))
        else:
            key = OKPKey.import_key(dict(jwk))
    except (JoseError, ValueError, TypeError, binascii.Error):
        return None
    return None if key.is_private else key


def _b64_int(value: object) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError("not a base64url integer")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _candidates(keys: Sequence[Mapping[str, Any]], kid: object, alg: str) -> list[Key]:
    """The provider's keys that fit the header: the one named `kid`, or, when the token names
    none, every key of the right shape."""
    found = []
    for jwk in keys:
        if kid is not None and jwk.get("kid") != kid:
            continue
        key = _import_key(jwk, alg)
        if key is not None:
            found.append(key)
    return found


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    values: list[object] = list(aud) if isinstance(aud, list) else [aud]
    strings = [v for v in values if isinstance(v, str) and v]
    if not strings or len(strings) != len(values):
        raise _jose.JoseFailure("aud is missing or not a string or list of strings")
    return strings


def verify_external_jwt(
    provider: OidcProvider,
    token: str | None,
    *,
    purpose: Purpose,
    keys: JwksSource,
    store: Store,
    now: float | None = None,
    settings: FederationSettings = FederationSettings(),
    nonce: str | None = None,
) -> ExternalIdentity:
    """Verify a token `provider` issued and return the Corral identity its subject is linked
    to, or raise `InvalidClientError` (`ProviderUnavailableError` when the provider's keys
    cannot be fetched).

    `purpose` is "assertion" (a workload token at the token endpoint: `aud` must contain the
    provider's configured audience) or "console" (an ID token from a console login: `aud`
    must contain our client id, and `nonce` must be the one we sent).
    """
    now = time.time() if now is None else now
    leeway = settings.leeway
    # 0. The provider is trusted for this purpose at all.
    if purpose == "assertion" and not provider.allow_assertions:
        raise _fail(f"provider {provider.name} is not trusted for client assertions")
    if purpose == "console" and not (provider.allow_console and provider.client_id):
        raise _fail(f"provider {provider.name} is not trusted for console logins")

    try:
        # 1. A compact JWS with a JSON payload, of bounded size.
        header, claims, obj = _parse(token)

        # 2. typ, when present, names a plain JWT or an access token: a DPoP proof, a
        #    Security Event Token or a logout token from the same provider is no identity.
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
            raise _jose.JoseFailure("typ is not an identity token type")

        # 3. alg is on the allowlist (RS256, PS256, ES256, EdDSA): never none, never HMAC.
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in EXTERNAL_ALGS:
            raise _jose.JoseFailure(f"algorithm {str(alg)[:20]!r} is not allowed")

        # 4. The key: one the provider publishes, of the shape alg needs, for signing, named
        #    by kid. An unknown kid may mean the provider rotated its keys: fetch them again
        #    (at most once per refetch interval) before refusing.
        kid = header.get("kid")
        candidates = _candidates(keys.keys(), kid, alg)
        if not candidates and kid is not None:
            fresh = keys.refetch_for_unknown_kid()
            candidates = _candidates(fresh, kid, alg) if fresh is not None else []
        if not candidates:
            raise _jose.JoseFailure("signed by a key the provider does not publish")

        # 5. The signature verifies with one of them.
        if not any(_verifies(obj, key) for key in candidates):
            raise _jose.JoseFailure("signature does not verify with the provider's keys")

        # 6. The claims are there with the right types; a Security Event Token is refused
        #    even without its typ.
        iss = _jose.string_claim(claims, "iss")
        sub = _jose.string_claim(claims, "sub", max_len=MAX_SUBJECT_CHARS)
        audiences = _audiences(claims)
        exp = _jose.number_claim(claims, "exp")
        iat = _jose.number_claim(claims, "iat")
        nbf = _jose.number_claim(claims, "nbf")
        jti = claims.get("jti")
        if jti is not None and not (isinstance(jti, str) and 0 < len(jti) <= 256):
            raise _jose.JoseFailure("jti is not a string")
        if exp is None or iat is None:
            raise _jose.JoseFailure("exp and iat are required")
        if "events" in claims:
            raise _jose.JoseFailure("a security event token is not an identity")
    except _jose.JoseFailure as exc:
        raise _fail(str(exc)) from None

    # 7. The issuer is the provider's, exactly.
    if iss != provider.issuer:
        raise _fail("iss is not the provider's issuer")

    # 8. The audience is us: the configured audience for a workload token; our client id for
    #    an ID token (OIDC Core 3.1.3.7: with several audiences, azp must be our client id).
    if purpose == "assertion":
        if provider.audience not in audiences:
            raise _fail("aud does not contain the provider's configured audience")
    else:
        client_id = provider.client_id
        azp = claims.get("azp")
        if client_id not in audiences or (
            (len(audiences) > 1 or azp is not None) and azp != client_id
        ):
            raise _fail("aud (and azp) do not name Corral's client id")

    # 9. Time: not expired, not before nbf or iat, within leeway; and a bounded lifetime.
    if exp <= now - leeway:
        raise _fail("expired")
    if (nbf is not None and nbf > now + leeway) or iat > now + leeway:
        raise _fail("not valid yet")
    if exp - iat > settings.max_lifetime:
        raise _fail(f"lives longer than {settings.max_lifetime:.0f} s")

    # 10. A console login's ID token carries the nonce this login sent (no replayed token).
    if purpose == "console":
        got = claims.get("nonce")
        if nonce is None or not isinstance(got, str):
            raise _fail("nonce is missing")
        if not hmac.compare_digest(got.encode(), nonce.encode()):
            raise _fail("nonce does not match this login")

    # 11. The subject is linked to a Corral identity; an unlinked subject is nobody. A
    #     console login must be a user.
    link = store.resolve_subject(provider.name, sub)
    if link is None:
        raise _fail(f"subject is not linked to a Corral identity at provider {provider.name}")
    if purpose == "console" and link.kind != "user":
        raise _fail("console logins are for users; this subject is linked to an agent")

    # 12. That identity is enabled now (an agent also below high risk).
    status = store.principal_status(link.principal_id)
    if status is None or not status.enabled:
        raise _fail(f"{link.kind} {link.principal_id} is disabled")
    if status.kind is CallerKind.AGENT and status.risk is Risk.HIGH:
        raise _fail(f"agent {link.principal_id} is at high risk")

    return ExternalIdentity(
        provider=provider.name,
        issuer=iss,
        subject=sub,
        kind=link.kind,
        principal_id=link.principal_id,
        token_id=jti if isinstance(jti, str) else None,
        issued_at=iat,
        expires_at=exp,
        claims=claims,
    )


def _verifies(obj: CompactSignature, key: Key) -> bool:
    try:
        return bool(validate_compact(obj, key, registry=_REGISTRY))
    except (JoseError, ValueError, TypeError):
        return False
