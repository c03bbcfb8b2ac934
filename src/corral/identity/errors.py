"""Authentication failures, each carrying the OAuth error code the RFCs give it.

Resource servers answer with `status` and a `WWW-Authenticate` challenge (RFC 6750 section 3,
RFC 9449 section 7.1); the token endpoint answers with `token_endpoint_status` and a JSON body
`{"error": ..., "error_description": ...}` (RFC 6749 section 5.2). Messages never contain a
token, a proof or a key: they end up in logs and in responses.
"""

from __future__ import annotations

from typing import Any

from corral.errors import CorralError

__all__ = [
    "SUPPORTED_ALGS",
    "AuthError",
    "IdentityDisabledError",
    "IdentityHighRiskError",
    "IdentityUnknownError",
    "InvalidClientError",
    "InvalidDPoPProofError",
    "InvalidTokenError",
    "MissingCredentialsError",
    "ReplayCacheFullError",
    "SessionEndedError",
    "SetRefusedError",
    "TokenRevokedError",
    "UseDPoPNonceError",
]

# Algorithms Corral accepts in proofs, client assertions and its own tokens, in the order a
# challenge advertises them (`algs`, RFC 9449 section 7.1). Never "none", never HMAC.
SUPPORTED_ALGS: tuple[str, ...] = ("EdDSA", "ES256", "Ed25519")


def _quote(value: str) -> str:
    """An RFC 7230 quoted-string; descriptions are ours, but stay safe if one quotes input."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AuthError(CorralError):
    """Base of every authentication failure: the caller is not (or no longer) who it claims."""

    exit_code = 4
    #: OAuth error code (RFC 6749/6750/9449); None when the request carried no credentials.
    error: str | None = "invalid_request"
    status = 401
    token_endpoint_status = 400
    #: the answer body's `code` when it says more than the OAuth `error` (which stays the
    #: RFC's, in the WWW-Authenticate challenge)
    reason: str | None = None

    title = "Authentication failed"
    mcp = "HTTP answer"
    #: seconds to wait before retrying, for the temporary refusals
    retry_after_s: int | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.code = self.class_code()

    @classmethod
    def class_code(cls) -> str:
        """The code of the class's answers (the error table's row)."""
        return cls.reason or cls.error or "unauthenticated"

    def www_authenticate(self, scheme: str = "DPoP", resource_metadata: str | None = None) -> str:
        """The `WWW-Authenticate` value for a resource server's 401 answer: RFC 9449 section
        7.1 (`algs`), plus RFC 9728 section 5.1's `resource_metadata` where a resource has it."""
        params: list[str] = []
        if self.error is not None:
            params.append(f"error={_quote(self.error)}")
            params.append(f"error_description={_quote(self.message)}")
        if scheme == "DPoP":
            params.append(f"algs={_quote(' '.join(SUPPORTED_ALGS))}")
        if resource_metadata is not None:
            params.append(f"resource_metadata={_quote(resource_metadata)}")
        return f"{scheme} {', '.join(params)}" if params else scheme

    def headers(self, scheme: str = "DPoP", resource_metadata: str | None = None) -> dict[str, str]:
        """Response headers for a resource server's answer."""
        headers = {"WWW-Authenticate": self.www_authenticate(scheme, resource_metadata)}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers

    def extensions(self) -> dict[str, Any]:
        return {} if self.retry_after_s is None else {"retry_after_s": self.retry_after_s}

    def oauth_error(self) -> dict[str, str]:
        """The token endpoint's JSON error body."""
        return {"error": self.error or "invalid_request", "error_description": self.message}


class MissingCredentialsError(AuthError):
    """No Authorization header, or a scheme this resource does not take: per RFC 6750 section
    3.1 the challenge then names the scheme and no error code."""

    title = "Credentials missing"
    error = None


class InvalidTokenError(AuthError):
    """The access token is malformed, forged, expired, for someone else, unbound or revoked."""

    title = "Invalid token"
    error = "invalid_token"


class IdentityUnknownError(InvalidTokenError):
    """The token's subject no longer exists in the directory (deleted)."""

    title = "Identity unknown"
    reason = "identity_unknown"


class IdentityDisabledError(InvalidTokenError):
    """The token's subject is disabled (by an admin, or an agent that lost its last sponsor)."""

    title = "Identity disabled"
    reason = "identity_disabled"


class IdentityHighRiskError(InvalidTokenError):
    """The token's subject is an agent at high risk: it gets nothing until its risk is lowered."""

    title = "Identity at high risk"
    reason = "identity_high_risk"


class TokenRevokedError(InvalidTokenError):
    """The token was issued before an admin revoked the identity's tokens."""

    title = "Token revoked"
    reason = "token_revoked"


class SessionEndedError(InvalidTokenError):
    """A session token whose session has ended (or never existed, or is someone else's)."""

    title = "Session ended"
    reason = "session_ended"


class InvalidDPoPProofError(AuthError):
    """The DPoP proof is missing, malformed, replayed or for another request."""

    title = "Invalid DPoP proof"
    error = "invalid_dpop_proof"


class UseDPoPNonceError(AuthError):
    """The server demands a nonce in the proof; the client retries with `nonce`."""

    title = "DPoP nonce required"
    error = "use_dpop_nonce"

    def __init__(self, message: str, nonce: str, hint: str | None = None) -> None:
        super().__init__(message, hint or "retry with a new proof carrying the DPoP-Nonce value")
        self.nonce = nonce

    def headers(self, scheme: str = "DPoP", resource_metadata: str | None = None) -> dict[str, str]:
        return {**super().headers(scheme, resource_metadata), "DPoP-Nonce": self.nonce}


class InvalidClientError(AuthError):
    """Client authentication (the private_key_jwt assertion) failed."""

    title = "Client authentication failed"
    error = "invalid_client"
    token_endpoint_status = 401


class ReplayCacheFullError(AuthError):
    """Too many proofs in flight to remember them all: refuse rather than forget one."""

    title = "Too many proofs in flight"
    error = "temporarily_unavailable"
    status = 503
    token_endpoint_status = 503
    retry_after_s = 1
    exit_code = 9


class SetRefusedError(CorralError):
    """An inbound Security Event Token was refused; `err` is the RFC 8935 section 2.4 code
    (invalid_request, invalid_key, invalid_issuer, invalid_audience, authentication_failed,
    access_denied) and the message its description. Never contains the token."""

    exit_code = 4
    code = "set_refused"
    status = 400
    title = "Security event refused"
    mcp = "HTTP answer"

    def __init__(self, err: str, description: str) -> None:
        super().__init__(description)
        self.err = err

    def body(self) -> dict[str, str]:
        """The push receiver's JSON error answer (RFC 8935 section 2.3)."""
        return {"err": self.err, "description": self.message}
