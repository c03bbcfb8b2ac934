"""The token endpoint's service half: client credentials with a client assertion and DPoP.

An agent asks for an access token with `grant_type=client_credentials`, a `private_key_jwt`
client assertion (RFC 7523) signed by one of its registered keys, and a DPoP proof (RFC 9449)
made with the key the token will be bound to. The HTTP adapter (`corral.api.auth_routes`) only
parses the form and maps `AuthError`s to OAuth answers; every decision is made here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.domain.access import Caller, CallerKind
from corral.domain.identity import Agent, Risk, User
from corral.errors import CorralError, NotFoundError
from corral.identity.assertions import CLIENT_ASSERTION_TYPE, verify_client_assertion
from corral.identity.directory import Directory
from corral.identity.dpop import (
    CheckedProof,
    DPoPSettings,
    check_dpop_proof,
    record_dpop_proof,
)
from corral.identity.errors import AuthError, InvalidClientError, InvalidDPoPProofError
from corral.identity.federation_service import FederationService
from corral.identity.keys import SigningKeyring
from corral.identity.nonces import NonceSource
from corral.identity.replay import ReplayCache, ReplayGuard
from corral.identity.tokens import DEFAULT_LIFETIME, IssuedToken, issue_access_token
from corral.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "AuthService",
    "InvalidRequestError",
    "RateLimit",
    "RateLimitedError",
    "TokenBuckets",
    "UnsupportedGrantTypeError",
    "session_audience",
]

GRANT_TYPE = "client_credentials"
# Longest form value we look at: assertions and proofs are a few hundred bytes.
MAX_FIELD_CHARS = 8192


class InvalidRequestError(AuthError):
    """A parameter is missing, repeated, oversized or of the wrong kind (RFC 6749 5.2)."""

    title = "Invalid token request"
    error = "invalid_request"


class UnsupportedGrantTypeError(AuthError):
    """Any grant but client_credentials."""

    title = "Unsupported grant type"
    error = "unsupported_grant_type"


class RateLimitedError(AuthError):
    """Too many token requests from one client or address; retry after `retry_after_s`.

    `slow_down` is the OAuth registry's code for "poll less often" (RFC 8628 3.5)."""

    title = "Too many requests"
    error = "slow_down"
    status = 429
    token_endpoint_status = 429
    exit_code = 9

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, hint=f"retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `rate` requests a second on average, bursts of up to `burst`."""

    rate: float = 10.0
    burst: float = 20.0


@dataclass
class TokenOutcome:
    """What one token request came to, for the audit log (`AuthService.on_outcome`)."""

    address: str | None
    client_id: str | None = None
    #: who the token was issued to (an agent or user id), once known
    subject: str | None = None
    kind: str | None = None
    #: the DPoP key the token is bound to
    jkt: str | None = None
    #: a workload identity token of a trusted provider was exchanged
    federated: bool = False
    error_code: str | None = None
    error_message: str | None = None


class TokenBuckets:
    """One token bucket per key (a client id, an address), bounded in memory.

    When more than `max_keys` keys are live the least recently used bucket is dropped; a
    dropped bucket comes back full, which errs towards letting a request through.
    """

    def __init__(self, limit: RateLimit, max_keys: int = 100_000) -> None:
        if limit.rate <= 0 or limit.burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.limit = limit
        self._max = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def take(self, key: str, now: float) -> float:
        """Spend one token for `key`: 0.0 if allowed, else the seconds until one is back."""
        rate, burst = self.limit.rate, self.limit.burst
        with self._lock:
            tokens, at = self._buckets.pop(key, (burst, now))
            tokens = min(burst, tokens + max(0.0, now - at) * rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
            if wait == 0.0:
                tokens -= 1
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
            return wait


def _limited(buckets: TokenBuckets, key: str, what: str, now: float) -> None:
    wait = buckets.take(key, now)
    if wait > 0:
        raise RateLimitedError(f"too many token requests {what}", max(1, math.ceil(wait)))


def session_audience(issuer: str, session_id: str) -> str:
    """The audience of a session token: that session's base URL."""
    return f"{issuer}/sessions/{session_id}"


def _field(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise InvalidRequestError(f"the {name} parameter is missing")
    if len(value) > MAX_FIELD_CHARS:
        raise InvalidRequestError(f"the {name} parameter is too long")
    return value


def _assertion_subject(assertion: str) -> str | None:
    """The unverified `sub` of an assertion, only to know whose keys to verify it with when
    the form names no client_id (RFC 7521 4.2 makes client_id optional)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and sub else None


class AuthService:
    """Issues DPoP-bound access tokens to agents of the directory.

    `issuer` is the server's public base URL (also the tokens' audience for now); `token_url`
    is the endpoint's public URL, which proofs (`htu`) and assertions (`aud`) must name.
    """

    def __init__(
        self,
        store: Store,
        keyring: SigningKeyring,
        issuer: str,
        token_url: str,
        *,
        lifetime: float = DEFAULT_LIFETIME,
        replay: ReplayGuard | None = None,
        nonces: NonceSource | None = None,
        client_limit: RateLimit = RateLimit(),
        address_limit: RateLimit = RateLimit(),
        clock: Callable[[], float] = time.time,
        federation: FederationService | None = None,
    ) -> None:
        self.store = store
        self.directory = Directory(store)
        self.keyring = keyring
        self.issuer = issuer
        self.token_url = token_url
        self.lifetime = lifetime
        self._replay: ReplayGuard = replay if replay is not None else ReplayCache()
        #: proof checking of the token endpoint and, through create_app, of every request
        self.dpop_settings = self._dpop = DPoPSettings(nonces=nonces)
        self._per_client = TokenBuckets(client_limit)
        self._per_address = TokenBuckets(address_limit)
        self._clock = clock
        #: workload identity tokens of trusted OIDC providers (docs/federation.md)
        self.federation = federation or FederationService(store, clock=clock)
        #: told each token request's outcome before the answer (the audit log's records of
        #: token issue and refusal); if it raises for an issued token, none is issued
        self.on_outcome: Callable[[TokenOutcome], Awaitable[None]] | None = None

    def __repr__(self) -> str:
        return f"AuthService(issuer={self.issuer!r}, token_url={self.token_url!r})"

    def jwks(self) -> dict[str, Any]:
        """The public keys that verify our tokens, for `/.well-known/jwks.json`."""
        return self.keyring.jwks(self._clock())

    def _client(self, client_id: str) -> tuple[Agent | User | None, list[dict[str, Any]]]:
        """The agent or user and its usable public keys; (None, []) when there is none."""
        try:
            agent = self.directory.get_agent(client_id)
            if agent.id == client_id:  # found by name: a client id is the id, nothing else
                return agent, self.directory.usable_public_keys(agent.id)
        except NotFoundError:
            pass
        try:
            user = self.directory.get_user(client_id)
        except NotFoundError:
            return None, []
        if user.id != client_id:
            return None, []
        return user, self.directory.usable_user_keys(user.id)

    def session_token(self, caller: Caller, session_id: str) -> IssuedToken:
        """A token for one session: audience `<issuer>/sessions/<id>`, bound to the same DPoP
        key as the caller's own token (`caller.jkt`), dead once the session is released.

        A caller without a key came with a bearer token, which the middleware admits only for
        a pool whose admin allowed them; its session token is a bearer token too."""
        return issue_access_token(
            self.keyring,
            issuer=self.issuer,
            subject=caller.id,
            audience=session_audience(self.issuer, session_id),
            client_id=caller.id,
            jkt=caller.jkt,
            now=self._clock(),
            lifetime=self.lifetime,
            session_id=session_id,
        )

    def session_grant(self, caller: Caller, session_id: str) -> dict[str, Any]:
        """The session-token fields an acquire answers with (REST and the MCP gateway)."""
        if caller.kind is CallerKind.SYSTEM:
            return {}
        issued = self.session_token(caller, session_id)
        return {
            "session_token": issued.access_token,
            "session_token_type": issued.token_type,
            "session_token_expires_in": issued.expires_in,
        }

    async def _bind(
        self, proof: CheckedProof | None, client: Agent | User, now: float
    ) -> str | None:
        """The key the token is bound to: the proof's, recorded now in the client's share of
        the replay cache. Without a proof, None (a bearer token) only for an agent assigned
        to a pool whose admin opted into bearer tokens; never for a user. The refusal is the
        same whatever the pools are, and comes only after client authentication, so nobody
        learns from it whether any pool accepts bearer tokens."""
        if proof is not None:
            record_dpop_proof(proof, replay=self._replay, now=now, owner=client.id)
            return proof.jkt
        if isinstance(client, Agent):
            pools = await asyncio.to_thread(self.store.bearer_pools_of_agent, client.id)
            if pools:
                return None
        raise InvalidDPoPProofError("DPoP proof refused: the request has no DPoP header")

    async def token(
        self,
        form: Mapping[str, str],
        dpop_header: str | None,
        method: str,
        *,
        client_address: str | None = None,
    ) -> dict[str, Any]:
        """Answer a token request, or raise the `AuthError` the endpoint must return.

        `form` holds the request's parameters, each given once (the adapter refuses repeats).
        Each outcome is told to `on_outcome` (but rate-limited refusals, so a flood of them
        cannot flood the audit log); a token is issued only once its record is written.
        """
        seen = TokenOutcome(address=client_address)
        try:
            answer = await self._token(form, dpop_header, method, client_address, seen)
        except AuthError as exc:
            if self.on_outcome is not None and not isinstance(exc, RateLimitedError):
                seen.error_code, seen.error_message = exc.code, exc.message
                try:
                    await self.on_outcome(seen)
                except CorralError:  # the refusal stands whether or not it was recorded
                    log.warning("the audit log did not take a refused token request")
            raise
        if self.on_outcome is not None:
            await self.on_outcome(seen)  # fails closed: no token without its record
        return answer

    async def _token(
        self,
        form: Mapping[str, str],
        dpop_header: str | None,
        method: str,
        client_address: str | None,
        seen: TokenOutcome,
    ) -> dict[str, Any]:
        now = self._clock()
        # 1. Per-address rate limit, before any signature or store work is spent on it.
        _limited(self._per_address, client_address or "-", "from this address", time.monotonic())

        # 2. The grant is client_credentials, the only one Corral issues.
        if _field(form, "grant_type") != GRANT_TYPE:
            raise UnsupportedGrantTypeError("only grant_type=client_credentials is supported")

        # 3. The client authenticates with a private_key_jwt assertion (RFC 7523 2.2).
        if _field(form, "client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise InvalidClientError(
                "client_assertion_type must be " + CLIENT_ASSERTION_TYPE,
                hint="authenticate with a private_key_jwt client assertion",
            )
        assertion = _field(form, "client_assertion")
        client_id = form.get("client_id") or _assertion_subject(assertion)
        if not client_id or len(client_id) > 256:
            raise InvalidRequestError("the client_id parameter is missing")
        seen.client_id = client_id

        # 4. The DPoP proof: made for POST to this endpoint's public URL, just now; no access
        #    token exists yet (so no ath); a nonce only when the server demands them. Its key
        #    is what the token will be bound to. Its jti is recorded only in step 8, once the
        #    client is known: unauthenticated requests leave nothing behind.
        if method != "POST":
            raise InvalidRequestError("the token endpoint takes POST only")
        proof: CheckedProof | None = None
        if dpop_header is not None:
            proof = check_dpop_proof(
                dpop_header, method=method, url=self.token_url, now=now, settings=self._dpop
            )

        # 4b. Federation: an assertion whose `iss` is a trusted OIDC provider's issuer is a
        #     workload identity token, for the agent or user its subject is linked to (see
        #     corral.identity.federation_service). Corral's own clients sign with their id as `iss`.
        external = await asyncio.to_thread(
            self.federation.exchange_assertion, assertion, form.get("client_id"), self._replay, now
        )
        if external is not None:
            seen.federated, seen.subject = True, external.principal_id
            seen.jkt = proof.jkt if proof is not None else None
            return self._federated_answer(external.principal_id, proof, now)

        # 5. The client: an agent of the directory, by id, with its keys that are neither
        #    revoked nor expired. An unknown client has no keys, so it fails step 6 exactly as
        #    a forged assertion does and the answer does not say which client ids exist.
        agent, keys = await asyncio.to_thread(self._client, client_id)

        # 6. The assertion: signed by one of those keys, for this endpoint, fresh, used once.
        verify_client_assertion(
            assertion,
            client_id=client_id,
            token_url=self.token_url,
            client_keys=keys,
            replay=self._replay,
            now=now,
        )
        if agent is None:  # unreachable: only a known agent has keys to verify with
            raise InvalidClientError("client assertion refused: unknown client")
        seen.subject = agent.id
        seen.kind = "user" if isinstance(agent, User) else "agent"

        # 7. The agent may have tokens: enabled (which also means it still has an able
        #    sponsor: losing the last one disables it) and not at high risk. A user: enabled.
        if isinstance(agent, User):
            if not agent.enabled:
                raise InvalidClientError(f"user {agent.id} is disabled")
        elif not agent.enabled:
            reason = f" ({agent.disabled_reason})" if agent.disabled_reason else ""
            raise InvalidClientError(f"agent {agent.id} is disabled{reason}")
        elif agent.risk is Risk.HIGH:
            raise InvalidClientError(f"agent {agent.id} is at high risk")

        # 8. Per-client rate limit, charged to authenticated requests only, so nobody can use
        #    up an agent's allowance by sending requests in its name. Then the proof's jti, in
        #    this client's own share of the replay cache.
        _limited(self._per_client, agent.id, "for this client", time.monotonic())
        jkt = await self._bind(proof, agent, now)
        seen.jkt = jkt

        # 9. A short-lived token for the agent, bound to the proof key (cnf.jkt), or a bearer
        #    token when no proof came (step 4).
        issued = issue_access_token(
            self.keyring,
            issuer=self.issuer,
            subject=agent.id,
            audience=self.issuer,
            client_id=agent.id,
            jkt=jkt,
            now=now,
            lifetime=self.lifetime,
        )
        return {
            "access_token": issued.access_token,
            "token_type": issued.token_type,
            "expires_in": issued.expires_in,
        }

    def _federated_answer(
        self, principal_id: str, proof: CheckedProof | None, now: float
    ) -> dict[str, Any]:
        """Steps 8 and 9 for a verified workload token (whose identity is already checked
        enabled and below high risk): the per-client limit, then the usual bound token. A
        workload token never buys a bearer token, even while some pool accepts them."""
        if proof is None:
            raise InvalidDPoPProofError(
                "a workload identity token is exchanged only with a DPoP proof",
                hint="send a DPoP header (and a fresh token from your platform)",
            )
        _limited(self._per_client, principal_id, "for this client", time.monotonic())
        record_dpop_proof(proof, replay=self._replay, now=now, owner=principal_id)
        jkt = proof.jkt
        issued = issue_access_token(
            self.keyring,
            issuer=self.issuer,
            subject=principal_id,
            audience=self.issuer,
            client_id=principal_id,
            jkt=jkt,
            now=now,
            lifetime=self.lifetime,
        )
        return {
            "access_token": issued.access_token,
            "token_type": issued.token_type,
            "expires_in": issued.expires_in,
        }
