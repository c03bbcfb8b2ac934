"""Identity and authentication: signing keys, access tokens, DPoP proofs, client assertions.

A pure library: it decides from its arguments and injected checks (replay memory, revocation
state), and is wired into the HTTP app elsewhere. See docs/authentication.md.
"""

from corral.identity.assertions import (
    CLIENT_ASSERTION_TYPE,
    AssertionSettings,
    VerifiedClient,
    verify_client_assertion,
)
from corral.identity.client import DPoPKey, client_assertion
from corral.identity.dpop import DPoPSettings, verify_dpop_proof
from corral.identity.errors import (
    AuthError,
    InvalidClientError,
    InvalidDPoPProofError,
    InvalidTokenError,
    MissingCredentialsError,
    ReplayCacheFullError,
    UseDPoPNonceError,
)
from corral.identity.keys import SigningKey, SigningKeyring
from corral.identity.nonces import NonceSource
from corral.identity.replay import ReplayCache, ReplayGuard
from corral.identity.request import Principal, RevocationCheck, verify_request
from corral.identity.tokens import (
    AccessTokenClaims,
    IssuedToken,
    VerifiedTokenCache,
    issue_access_token,
    verify_access_token,
)

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "AccessTokenClaims",
    "AssertionSettings",
    "AuthError",
    "DPoPKey",
    "DPoPSettings",
    "InvalidClientError",
    "InvalidDPoPProofError",
    "InvalidTokenError",
    "IssuedToken",
    "MissingCredentialsError",
    "NonceSource",
    "Principal",
    "ReplayCache",
    "ReplayCacheFullError",
    "ReplayGuard",
    "RevocationCheck",
    "SigningKey",
    "SigningKeyring",
    "UseDPoPNonceError",
    "VerifiedClient",
    "VerifiedTokenCache",
    "client_assertion",
    "issue_access_token",
    "verify_access_token",
    "verify_client_assertion",
    "verify_dpop_proof",
    "verify_request",
]
