"""Helpers for the identity tests: one server and agent on a fixed clock, hand-made JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from corral.identity import (
    AccessTokenClaims,
    DPoPKey,
    IssuedToken,
    Principal,
    ReplayCache,
    SigningKeyring,
    issue_access_token,
    verify_request,
)

NOW = 1_800_000_000.0
ISSUER = "https://corral.example"
GATEWAY = "https://corral.example/mcp"
URL = "https://corral.example/v1/sessions/s-1/screenshot"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def unb64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def craft(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWS put together by hand, as an attacker would."""
    return f"{b64json(header)}.{b64json(claims)}.{b64(signature)}"


def hmac_craft(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(claims)}".encode()
    return (
        f"{signing_input.decode()}.{b64(hmac.new(secret, signing_input, hashlib.sha256).digest())}"
    )


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    h, c, s = token.split(".")
    return unb64json(h), unb64json(c), s


@dataclass
class World:
    """One server and one agent, on a clock that only moves when a test says so."""

    ring: SigningKeyring = field(default_factory=lambda: SigningKeyring.generate(now=NOW))
    agent: DPoPKey = field(default_factory=DPoPKey.generate)
    replay: ReplayCache = field(default_factory=ReplayCache)
    now: float = NOW
    revoked: set[str] = field(default_factory=set)

    def token(self, audience: str = GATEWAY, **kw: Any) -> IssuedToken:
        kw.setdefault("jkt", self.agent.thumbprint)
        return issue_access_token(
            self.ring,
            issuer=ISSUER,
            subject="agent:a-1",
            audience=audience,
            client_id="a-1",
            now=self.now,
            **kw,
        )

    def alive(self, claims: AccessTokenClaims) -> bool:
        return not {claims.token_id, claims.subject, claims.session_id} & self.revoked

    def call(
        self,
        token: str,
        proof: str | None,
        *,
        method: str = "GET",
        url: str = URL,
        audience: str = GATEWAY,
        scheme: str = "DPoP",
        **kw: Any,
    ) -> Principal:
        kw.setdefault("revocation", self.alive)
        return verify_request(
            method,
            url,
            f"{scheme} {token}",
            proof,
            keyring=self.ring,
            issuer=ISSUER,
            audience=audience,
            replay=self.replay,
            now=self.now,
            **kw,
        )

    def proof(self, token: str | None, method: str = "GET", url: str = URL, **kw: Any) -> str:
        kw.setdefault("now", self.now)
        return self.agent.proof(method, url, access_token=token, **kw)
