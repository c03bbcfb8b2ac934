"""External OpenID Connect providers Corral trusts, and the rules for configuring them.

A provider is trusted for up to three things, each opted into separately: client assertions
(workload identities signing in as Corral agents or users), console logins (authorization code
flow), and inbound Shared Signals events (CAEP). Its subjects map to Corral identities explicitly;
an unmapped subject is nobody.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from corral.domain.urls import require_https_or_loopback
from corral.errors import InvalidInputError

__all__ = [
    "FederatedSubject",
    "OidcProvider",
    "PrincipalKind",
    "validate_provider",
]

PrincipalKind = Literal["user", "agent"]
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class OidcProvider:
    name: str
    issuer: str
    audience: str
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None  # pinned keys; used instead of fetching jwks_uri
    client_id: str | None = None
    client_secret: str | None = None
    allow_console: bool = False
    allow_assertions: bool = False
    allow_events: bool = False
    created_at: datetime | None = None

    def __repr__(self) -> str:  # never show the client secret
        return f"OidcProvider(name={self.name!r}, issuer={self.issuer!r})"


@dataclass(frozen=True)
class FederatedSubject:
    provider: str
    subject: str
    kind: PrincipalKind
    principal_id: str
    created_at: datetime


def validate_provider(p: OidcProvider) -> None:
    """Refuse a configuration that could not be used safely, saying what to change."""
    if not _NAME.match(p.name):
        raise InvalidInputError(
            f"provider name {p.name!r} is not valid",
            hint="use 1-63 lowercase letters, digits and dashes, starting with a letter or digit",
        )
    require_https_or_loopback(p.issuer, "issuer")
    if not p.audience:
        raise InvalidInputError("audience is empty", hint="set the `aud` its tokens carry")
    if p.jwks_uri is None and p.jwks is None:
        raise InvalidInputError(
            "the provider has no keys",
            hint="give --jwks-uri (fetched and cached) or --jwks FILE (pinned keys)",
        )
    if p.jwks_uri is not None:
        require_https_or_loopback(p.jwks_uri, "jwks_uri")
    if p.jwks is not None and not isinstance(p.jwks.get("keys"), list):
        raise InvalidInputError("jwks has no `keys` list", hint="pass a JWK Set document")
    if not (p.allow_console or p.allow_assertions or p.allow_events):
        raise InvalidInputError(
            "the provider is trusted for nothing",
            hint="allow at least one of console logins, client assertions or events",
        )
    if p.allow_console and not p.client_id:
        raise InvalidInputError(
            "console logins need a client id", hint="register Corral with the provider first"
        )
