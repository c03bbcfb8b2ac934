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
from corral.identity.keys import SigningKeyring
from corral.identity.passwords import verify_password
from corral.identity.replay import ReplayCache, ReplayGuard
from corral.identity.tokens import IssuedToken, VerifiedTokenCache
from corral.service.access import AccessEvaluator
from corral.service.auth import RateLimit, RateLimitedError, TokenBuckets
from corral.service.federation import FederationService
from corral.store import Store

__all__ = ["ConsoleLoginError", "ConsoleService", "ConsoleSettings", "OidcStart"]

_log = logging.getLogger("corral.console")
GENERIC_FAILURE = "sign-in failed: the name, password or code is not right"
OIDC_FAILURE = "sign-in with the identity provider failed"
MAX_FIELD_CHARS = 1024


class ConsoleLoginError(AuthError):
    """A console login was refused; the message is the same whatever failed."""

    error = "access_denied"


@dataclass(frozen=True)
class ConsoleSettings:
    """`session_lifetime`: how long a console session lives (it also ends on logout, disable
    and revoke). Login attempts are limited per user name and per address: guessing a password
    gets a handful of tries, then one every ten seconds."""

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
    """Console sessions logged out before they expire, remembered until they would have
    expired. Per process (like the replay cache); full means logouts are refused, never that
    an ended session comes back."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._ended: dict[str, float] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def end(self, token_id: str, expires_at: float, now: float) -> None:
        with self._lock:
            if len(self._ended) >= self._max:
                self._ended = {k: v for k, v in self._ended.items() if v > now}
            if len(self._ended) >= self._max:
                raise ConsoleLoginError("too many console sessions ended recently; retry shortly")
            self._ended[token_id] = expires_at

    def __contains__(self, token_id: str) -> bool:
        with self._lock:
            return token_id in self._ended


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
        self._ended = _EndedSessions()
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

        Steps: 1. rate limits per address and per user name, before any hashing; 2. the
        password (argon2id; an unknown user costs the same hash time); 3. the TOTP code, used
        once; 4. a session for that user.
        """
        now = self._clock()
        name = username.strip().lower()[:MAX_FIELD_CHARS]
        # 1. Rate limits (RateLimitedError: the browser is told to wait, not why it failed).
        for buckets, key in ((self._per_address, address or "-"), (self._per_user, name or "-")):
            wait = buckets.take(key, time.monotonic())
            if wait > 0:
                raise RateLimitedError("too many sign-in attempts", max(1, math.ceil(wait)))
        if not name or not password or len(password) > MAX_FIELD_CHARS or len(code) > 16:
            raise ConsoleLoginError(GENERIC_FAILURE)
        # 2. The password; a disabled user never passes.
        try:
            user = self.directory.get_user(name)
            ok = self.directory.check_password(user.id, password)
        except NotFoundError:
            verify_password(None, password)  # same cost as a real check: names stay private
            _log.info("console login refused: unknown user")
            raise ConsoleLoginError(GENERIC_FAILURE) from None
        if not ok:
            _log.info("console login refused for %s: wrong password or disabled", user.id)
            raise ConsoleLoginError(GENERIC_FAILURE)
        # 3. The second factor, when the user has one; a code works once.
        if not self.directory.check_totp(user.id, code):
            _log.info("console login refused for %s: wrong TOTP code", user.id)
            raise ConsoleLoginError(GENERIC_FAILURE)
        if user.totp_enabled and not self._replay.first_use(
            f"totp:{user.id}:{code.strip()}", expires_at=now + 120, now=now
        ):
            _log.info("console login refused for %s: TOTP code reused", user.id)
            raise ConsoleLoginError(GENERIC_FAILURE)
        # 4. The session.
        _log.info("console login for %s (password)", user.id)
        return self._session(user.id, now)

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
        self._ended.end(claims.token_id, claims.expires_at, now)
