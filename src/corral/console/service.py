"""Console logins for users: a local password (and TOTP), or an OIDC provider's login.

Both end in a console session (`corral.identity.console`), checked on every request by the same
continuous access evaluation as any token: a disabled user or an admin's revoke ends it on
the next request. Every login failure tells the browser the same thing; the reason goes to
the server log only (never a password, code or token).
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from corral.domain.access import Caller, CallerKind
from corral.errors import NotFoundError
from corral.identity.console import (
    DEFAULT_SESSION_LIFETIME,
    LOGIN_STATE_LIFETIME,
    console_audience,
    issue_console_session,
    new_login_state,
    open_login_state,
    pkce_challenge,
    seal_login_state,
    verify_console_session,
)
from corral.identity.directory import Directory
from corral.identity.errors import AuthError, InvalidTokenError
from corral.identity.evaluation import AccessEvaluator
from corral.identity.federation_service import FederationService
from corral.identity.keys import SigningKeyring
from corral.identity.passwords import normalize_totp_code, verify_password
from corral.identity.replay import ReplayCache, ReplayGuard
from corral.identity.token_endpoint import RateLimit, RateLimitedError, TokenBuckets
from corral.identity.tokens import IssuedToken, VerifiedTokenCache
from corral.store import Store

__all__ = ["ConsoleLoginError", "ConsoleService", "ConsoleSettings", "OidcStart"]

_log = logging.getLogger("corral.console")
GENERIC_FAILURE = "sign-in failed: the name, password or code is not right"
OIDC_FAILURE = "sign-in with the identity provider failed"
MAX_FIELD_CHARS = 1024


class ConsoleLoginError(AuthError):
    """A console login was refused; the message is the same whatever failed."""

    title = "Console login refused"
    error = "access_denied"


@dataclass(frozen=True)
class ConsoleSettings:
    """`session_lifetime`: how long a console session lives (it also ends on logout, disable
    and revoke). Login attempts are limited per account (user id) and per address: guessing
    a password gets a handful of tries, then one every ten seconds."""

    session_lifetime: float = DEFAULT_SESSION_LIFETIME
    per_user: RateLimit = RateLimit(rate=0.1, burst=5)  # noqa: RUF009 (frozen)
    per_address: RateLimit = RateLimit(rate=1.0, burst=20)  # noqa: RUF009 (frozen)


@dataclass(frozen=True)
class OidcStart:
    """Where to send the browser, and the signed login state to keep in its cookie."""

    location: str
    state_cookie: str
    max_age: int


class _EndedSessions:
    """Console sessions logged out before they expire, until they would have expired.

    Kept in the store (so a restart does not bring a logged-out session back) and mirrored in
    memory, read from the store once at first use, so the check on each console request is a
    set lookup, not a store round trip. A logout is written to the store before it counts.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._ended: dict[str, float] | None = None
        self._prune_at = 1024
        self._lock = threading.Lock()

    def _loaded(self) -> dict[str, float]:
        if self._ended is None:
            with self._lock:
                if self._ended is None:
                    self._ended = {
                        token_id: at.timestamp()
                        for token_id, at in self._store.live_console_logouts()
                    }
        return self._ended

    def end(self, token_id: str, user_id: str, expires_at: float, now: float) -> None:
        ended = self._loaded()
        # 1. The store first: once the browser is told it is logged out, a restart agrees.
        self._store.end_console_session(token_id, user_id, datetime.fromtimestamp(expires_at, UTC))
        # 2. Then this process's view, pruned of sessions that have expired anyway.
        with self._lock:
            ended[token_id] = expires_at
            if len(ended) >= self._prune_at:
                live = {k: v for k, v in ended.items() if v > now}
                ended.clear()
                ended.update(live)
                self._prune_at = max(1024, 2 * len(ended))

    def __contains__(self, token_id: str) -> bool:
        return token_id in self._loaded()


class ConsoleService:
    """Logins, session checks and logouts for the web console."""

    def __init__(
        self,
        store: Store,
        keyring: SigningKeyring,
        issuer: str,
        *,
        federation: FederationService,
        settings: ConsoleSettings = ConsoleSettings(),
        replay: ReplayGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.directory = Directory(store)
        self.keyring = keyring
        self.issuer = issuer.rstrip("/")
        self.federation = federation
        self.settings = settings
        self.access = AccessEvaluator(store)
        self._replay: ReplayGuard = replay if replay is not None else ReplayCache()
        self._per_user = TokenBuckets(settings.per_user)
        self._per_address = TokenBuckets(settings.per_address)
        self._ended = _EndedSessions(store)
        self._cache = VerifiedTokenCache()
        self._clock = clock

    def __repr__(self) -> str:
        return f"ConsoleService(audience={console_audience(self.issuer)!r})"

    def _session(self, user_id: str, now: float) -> IssuedToken:
        return issue_console_session(
            self.keyring,
            issuer=self.issuer,
            user_id=user_id,
            lifetime=self.settings.session_lifetime,
            now=now,
        )

    # -- local login -------------------------------------------------------------------------

    def password_login(
        self, username: str, password: str, code: str, *, address: str | None
    ) -> IssuedToken:
        """A console session for a user who knows the password (and the TOTP code, when
        TOTP is enabled for them); ConsoleLoginError, the same for every reason, if not.

        Steps: 1. rate limits per address and per account, before any hashing; 2. the
        password (argon2id; an unknown user costs the same hash time); 3. the TOTP code, used
        once; 4. a session for that user.
        """
        now = self._clock()
        name = username.strip().lower()[:MAX_FIELD_CHARS]
        # 1a. Per address (the TCP peer, or what a trusted proxy forwarded: never a header
        #     anyone can write), before any lookup or hashing.
        self._limit(self._per_address, address or "-")
        if not name or not password or len(password) > MAX_FIELD_CHARS or len(code) > 16:
            raise ConsoleLoginError(GENERIC_FAILURE)
        # The code's one spelling (six ASCII digits), used by both the check and the replay
        # key below; anything else is no code at all.
        totp_code = normalize_totp_code(code) or ""
        try:
            user = self.directory.get_user(name)
        except NotFoundError:
            user = None
        # 1b. Per account: keyed by the user's id, so the id and the name of one account
        #     share one allowance; an unknown name has its own, as if it existed.
        self._limit(self._per_user, f"user:{user.id}" if user else f"name:{name}")
        # 2. The password; a disabled user never passes.
        if user is None:
            verify_password(None, password)  # same cost as a real check: names stay private
            _log.info("console login refused: unknown user")
            raise ConsoleLoginError(GENERIC_FAILURE)
        if not self.directory.check_password(user.id, password):
            _log.info("console login refused for %s: wrong password or disabled", user.id)
            raise ConsoleLoginError(GENERIC_FAILURE)
        # 3. The second factor, when the user has one; a code works once.
        if not self.directory.check_totp(user.id, totp_code):
            _log.info("console login refused for %s: wrong TOTP code", user.id)
            raise ConsoleLoginError(GENERIC_FAILURE)
        if user.totp_enabled and not self._replay.first_use(
            f"totp:{user.id}:{totp_code}", expires_at=now + 120, now=now, owner=user.id
        ):
            _log.info("console login refused for %s: TOTP code reused", user.id)
            raise ConsoleLoginError(GENERIC_FAILURE)
        # 4. The session.
        _log.info("console login for %s (password)", user.id)
        return self._session(user.id, now)

    @staticmethod
    def _limit(buckets: TokenBuckets, key: str) -> None:
        """RateLimitedError (429 with Retry-After) when `key` has no attempt left."""
        wait = buckets.take(key, time.monotonic())
        if wait > 0:
            raise RateLimitedError("too many sign-in attempts", max(1, math.ceil(wait)))

    # -- OIDC login --------------------------------------------------------------------------

    def login_providers(self) -> list[str]:
        """Names of the providers users may sign in with."""
        return [p.name for p in self.store.list_oidc_providers() if p.allow_console]

    def redirect_uri(self, provider: str) -> str:
        return f"{self.issuer}/console/oidc/{provider}/callback"

    def oidc_start(self, provider_name: str) -> OidcStart:
        """Begin an authorization code login with PKCE (S256), state and nonce."""
        try:
            provider = self.store.get_oidc_provider(provider_name)
        except NotFoundError:
            raise ConsoleLoginError(OIDC_FAILURE, hint="no such identity provider") from None
        if not provider.allow_console or not provider.client_id:
            raise ConsoleLoginError(OIDC_FAILURE, hint="this provider is not for console logins")
        meta = self.federation.metadata(provider)
        login = new_login_state(provider.name, self._clock())
        params = {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": self.redirect_uri(provider.name),
            "scope": "openid",
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": pkce_challenge(login.verifier),
            "code_challenge_method": "S256",
        }
        endpoint = meta.authorization_endpoint
        location = endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)
        return OidcStart(
            location=location,
            state_cookie=seal_login_state(self.keyring, self.issuer, login),
            max_age=int(LOGIN_STATE_LIFETIME),
        )

    def oidc_finish(
        self,
        provider_name: str,
        *,
        state_cookie: str | None,
        state: str | None,
        code: str | None,
        error: str | None,
    ) -> IssuedToken:
        """Finish a login at the callback: a console session, or ConsoleLoginError."""
        try:
            return self._oidc_finish(provider_name, state_cookie, state, code, error)
        except AuthError as exc:
            _log.info("console OIDC login via %s refused: %s", provider_name, exc.message)
            raise ConsoleLoginError(OIDC_FAILURE) from None

    def _oidc_finish(
        self,
        provider_name: str,
        state_cookie: str | None,
        state: str | None,
        code: str | None,
        error: str | None,
    ) -> IssuedToken:
        now = self._clock()
        # 1. The login state is ours, fresh, and for this provider.
        login = open_login_state(self.keyring, self.issuer, state_cookie, now)
        if login.provider != provider_name:
            raise ConsoleLoginError("the login was started for another provider")
        # 2. The provider did not refuse, and answered this browser's request (state).
        if error is not None:
            raise ConsoleLoginError("the provider answered with an error")
        if not state or not hmac.compare_digest(state.encode(), login.state.encode()):
            raise ConsoleLoginError("state does not match this browser's login")
        if not code or len(code) > 4096:
            raise ConsoleLoginError("no authorization code")
        # 3. The provider is (still) trusted for console logins.
        try:
            provider = self.store.get_oidc_provider(provider_name)
        except NotFoundError:
            raise ConsoleLoginError("the provider is gone") from None
        # 4. The code, redeemed with the PKCE verifier, gives an ID token; 5. which verifies
        #    (signature, iss, aud = our client id, lifetime, nonce) and names a linked,
        #    enabled user.
        id_token = self.federation.exchange_code(
            provider,
            code=code,
            redirect_uri=self.redirect_uri(provider.name),
            verifier=login.verifier,
        )
        identity = self.federation.verify(provider, id_token, purpose="console", nonce=login.nonce)
        # 6. The session.
        _log.info("console login for %s (via %s)", identity.principal_id, provider.name)
        return self._session(identity.principal_id, now)

    # -- sessions ----------------------------------------------------------------------------

    def authenticate(self, token: str) -> Caller:
        """The user behind a console session cookie, as of now; InvalidTokenError if none.

        Steps: 1. the token is a console session of ours (signature, alg, issuer, audience
        `<issuer>/console`, lifetime, unbound); 2. not logged out; 3. continuous access
        evaluation (enabled, not revoked); 4. a user.
        """
        now = self._clock()
        claims = verify_console_session(
            token, keyring=self.keyring, issuer=self.issuer, now=now, cache=self._cache
        )
        if claims.token_id in self._ended:
            raise InvalidTokenError("console session refused: logged out")
        caller = self.access.evaluate(claims, jkt=None)
        if caller.kind is not CallerKind.USER:
            raise InvalidTokenError("console session refused: not a user")
        return caller

    def logout(self, token: str | None) -> None:
        """End a console session now (the cookie is cleared by the adapter too)."""
        if not token:
            return
        now = self._clock()
        try:
            claims = verify_console_session(
                token, keyring=self.keyring, issuer=self.issuer, now=now, cache=self._cache
            )
        except InvalidTokenError:
            return  # nothing live to end
        self._ended.end(claims.token_id, claims.subject, claims.expires_at, now)
