"""Federation at run time: trusted OIDC providers' tokens become Corral identities.

Two uses, both verified by `corral.identity.federation.verify_external_jwt`:

- the token endpoint takes a workload identity token (a JWT from a CI system or a cloud
  identity provider) as the client assertion, for the agent or user its subject is linked to;
- console logins exchange an authorization code at the provider for an ID token.

This module holds the I/O around that: the HTTP client, key and metadata caches, the code
exchange, and replay protection for workload tokens.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

import httpx

from corral.domain.federation import OidcProvider
from corral.errors import NotFoundError
from corral.identity.errors import InvalidClientError
from corral.identity.federation import (
    ExternalIdentity,
    FederationSettings,
    ProviderKeys,
    ProviderMetadata,
    ProviderUnavailableError,
    Purpose,
    fetch_metadata,
    new_http_client,
    unverified_issuer,
    verify_external_jwt,
)
from corral.identity.replay import ReplayGuard
from corral.store import Store

__all__ = ["FederationService"]

# How long discovered provider metadata is reused before asking again.
METADATA_TTL = 300.0
MAX_TOKEN_ANSWER_BYTES = 256 * 1024


def _looks_like_issuer(iss: str | None) -> bool:
    """Provider issuers are URLs; Corral clients sign with their id (`a-...`, `u-...`) as iss."""
    return iss is not None and iss.startswith(("https://", "http://"))


class FederationService:
    """Verifies tokens of the providers in the store, with cached keys and metadata."""

    def __init__(
        self,
        store: Store,
        *,
        settings: FederationSettings = FederationSettings(),  # noqa: B008
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self._http = http
        self._own_http = http is None
        self._http_lock = threading.Lock()
        self._clock = clock
        self._monotonic = monotonic
        self.keys = ProviderKeys(self.http, settings, monotonic)
        self._metadata: dict[str, tuple[float, ProviderMetadata]] = {}

    def __repr__(self) -> str:
        return "FederationService()"

    def http(self) -> httpx.Client:
        """The HTTP client, made on first use (most servers never fetch anything)."""
        with self._http_lock:
            if self._http is None:
                self._http = new_http_client(self.settings)
            return self._http

    def close(self) -> None:
        with self._http_lock:
            if self._own_http and self._http is not None:
                self._http.close()
            self._http = None

    def verify(
        self,
        provider: OidcProvider,
        token: str,
        *,
        purpose: Purpose,
        nonce: str | None = None,
    ) -> ExternalIdentity:
        return verify_external_jwt(
            provider,
            token,
            purpose=purpose,
            keys=self.keys.source(provider),
            store=self.store,
            now=self._clock(),
            settings=self.settings,
            nonce=nonce,
        )

    # -- the token endpoint ------------------------------------------------------------------

    def provider_of_assertion(self, assertion: str) -> OidcProvider | None:
        """The trusted provider whose issuer the assertion names (unverified), if any."""
        iss = unverified_issuer(assertion)
        if not _looks_like_issuer(iss):
            return None
        assert iss is not None
        try:
            return self.store.get_oidc_provider_by_issuer(iss)
        except NotFoundError:
            return None

    def exchange_assertion(
        self,
        assertion: str,
        client_id: str | None,
        replay: ReplayGuard,
        now: float,
    ) -> ExternalIdentity | None:
        """The identity a workload token stands for, or None when its issuer is no trusted
        provider (then it is an ordinary private_key_jwt assertion). Raises InvalidClientError
        when it is a provider's token but is refused.

        Steps: 1. its `iss` is a configured provider's issuer; 2. `verify_external_jwt`
        (provider trusted for assertions, signature, alg, iss, aud, lifetime, subject linked to
        an enabled identity); 3. a `client_id` in the form, if any, names that identity;
        4. single use: its `jti`, else the token itself, is remembered until it expires.
        """
        # 1. Which provider (None: not a federated assertion at all).
        provider = self.provider_of_assertion(assertion)
        if provider is None:
            return None
        # 2. The token and the identity it maps to.
        identity = self.verify(provider, assertion, purpose="assertion")
        # 3. The form may name the client; it must then be that identity.
        if client_id is not None and client_id != identity.principal_id:
            raise InvalidClientError(
                "external token refused: client_id is not the identity its subject is linked to",
                hint="leave client_id out, or give the linked agent's or user's id",
            )
        # 4. Once only. Remembered until exp plus leeway, when it would be refused anyway.
        if identity.token_id is not None:
            seen = f"federated:{provider.issuer}:jti:{identity.token_id}"
        else:
            digest = hashlib.sha256(assertion.encode()).hexdigest()
            seen = f"federated:{provider.issuer}:sha256:{digest}"
        if not replay.first_use(
            seen,
            expires_at=identity.expires_at + self.settings.leeway,
            now=now,
            owner=identity.principal_id,
        ):
            raise InvalidClientError("external token refused: it was already used")
        return identity

    # -- console logins ----------------------------------------------------------------------

    def metadata(self, provider: OidcProvider) -> ProviderMetadata:
        """The provider's OpenID configuration, cached for a few minutes."""
        now = self._monotonic()
        cached = self._metadata.get(provider.issuer)
        if cached is not None and now - cached[0] < METADATA_TTL:
            return cached[1]
        found = fetch_metadata(self.http(), provider.issuer, self.settings)
        self._metadata[provider.issuer] = (now, found)
        return found

    def exchange_code(
        self,
        provider: OidcProvider,
        *,
        code: str,
        redirect_uri: str,
        verifier: str,
    ) -> str:
        """Redeem an authorization code at the provider's token endpoint; returns the ID token.

        The client authenticates with its secret when one is configured (client_secret_basic,
        or client_secret_post when that is all the provider supports), else as a public client
        whose proof is the PKCE verifier. The secret never appears in an error or a log.
        """
        meta = self.metadata(provider)
        client_id = provider.client_id or ""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        secret = provider.client_secret
        methods = meta.token_endpoint_auth_methods
        if (
            secret
            and methods
            and "client_secret_basic" not in methods
            and ("client_secret_post" in methods)
        ):
            form.update(client_id=client_id, client_secret=secret)
        elif secret:
            # RFC 6749 2.3.1: both halves form-urlencoded before the Basic encoding.
            pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = client_id
        try:
            answer = self.http().post(meta.token_endpoint, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError("the provider's token endpoint is unreachable") from exc
        if answer.status_code >= 500:
            raise ProviderUnavailableError(
                f"the provider's token endpoint answered HTTP {answer.status_code}"
            )
        if answer.status_code != 200 or len(answer.content) > MAX_TOKEN_ANSWER_BYTES:
            raise InvalidClientError(
                f"the provider refused the authorization code (HTTP {answer.status_code})"
            )
        try:
            body = answer.json()
        except ValueError:
            raise InvalidClientError("the provider's token answer is not JSON") from None
        id_token = body.get("id_token") if isinstance(body, dict) else None
        if not isinstance(id_token, str):
            raise InvalidClientError("the provider's token answer has no id_token")
        return id_token
