"""The agent's side: make DPoP proofs and client assertions.

Used by the tests and by `corral connect`, which holds an agent's credential and signs for it,
so that MCP clients that cannot do DPoP still never hold a bearer secret.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any, Literal

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OKPKey

from corral.errors import InvalidInputError
from corral.identity import _jose
from corral.identity.dpop import DPOP_TYP

__all__ = ["DPoPKey", "client_assertion", "import_private_jwk"]

ClientAlg = Literal["EdDSA", "ES256"]


def import_private_jwk(jwk: Mapping[str, Any]) -> tuple[Key, ClientAlg]:
    """A private Ed25519 or P-256 JWK and the algorithm it signs with."""
    try:
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            key: Key = OKPKey.import_key(dict(jwk))
            alg: ClientAlg = "EdDSA"
        elif jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            key, alg = ECKey.import_key(dict(jwk)), "ES256"
        else:
            raise ValueError("unsupported key type")
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidInputError(
            "the credential's key is not a private Ed25519 or P-256 JWK"
        ) from exc
    if not key.is_private:
        raise InvalidInputError("the credential's key has no private part")
    return key, alg


class DPoPKey:
    """A key pair held by the client; the server only ever sees its public half."""

    def __init__(self, key: Key, alg: ClientAlg) -> None:
        self._key = key
        self.alg: ClientAlg = alg
        self.public_jwk: dict[str, Any] = {
            k: v for k, v in key.as_dict(private=False).items() if k not in ("kid", "alg", "use")
        }
        self.thumbprint: str = key.thumbprint()

    def __repr__(self) -> str:
        return f"DPoPKey(alg={self.alg!r}, thumbprint={self.thumbprint!r})"

    @classmethod
    def generate(cls, alg: ClientAlg = "EdDSA") -> DPoPKey:
        key: Key = OKPKey.generate_key("Ed25519") if alg == "EdDSA" else ECKey.generate_key("P-256")
        return cls(key, alg)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> DPoPKey:
        return cls(*import_private_jwk(jwk))

    def private_jwk(self) -> dict[str, Any]:
        """For the credential file only."""
        return dict(self._key.as_dict(private=True))

    def proof(
        self,
        method: str,
        url: str,
        access_token: str | None = None,
        nonce: str | None = None,
        now: float | None = None,
    ) -> str:
        """A fresh DPoP proof for one request; `url` loses its query and fragment."""
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": url.split("#", 1)[0].split("?", 1)[0],
            "iat": int(time.time() if now is None else now),
        }
        if access_token is not None:
            claims["ath"] = _jose.b64url_sha256(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        header = {"typ": DPOP_TYP, "alg": self.alg, "jwk": self.public_jwk}
        return _jose.sign(header, claims, self._key)


def client_assertion(
    client_id: str,
    token_url: str,
    private_jwk: Mapping[str, Any],
    now: float | None = None,
    lifetime: float = 60.0,
) -> str:
    """A private_key_jwt assertion (RFC 7523) authenticating `client_id` at `token_url`."""
    key, alg = import_private_jwk(private_jwk)
    issued_at = int(time.time() if now is None else now)
    kid = private_jwk.get("kid")
    header = {"typ": "JWT", "alg": alg, "kid": kid if isinstance(kid, str) else key.thumbprint()}
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "jti": secrets.token_urlsafe(16),
        "iat": issued_at,
        "exp": issued_at + int(lifetime),
    }
    return _jose.sign(header, claims, key)
