"""Continuous access evaluation: is a verified token's principal still allowed, right now?

Called on every request (as `verify_request`'s revocation check) and reads the store, which
every server worker shares, so a change counts on the very next request in every worker.
"""

from __future__ import annotations

import math

from corral.domain.access import Caller, CallerKind, PrincipalStatus
from corral.domain.identity import Risk
from corral.domain.models import SessionState
from corral.errors import NotFoundError
from corral.identity.errors import (
    IdentityDisabledError,
    IdentityHighRiskError,
    IdentityUnknownError,
    SessionEndedError,
    TokenRevokedError,
)
from corral.identity.tokens import AccessTokenClaims
from corral.store import Store

__all__ = ["AccessEvaluator"]


class AccessEvaluator:
    """Turns verified claims into the `Caller` the Gate authorizes, or refuses them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def evaluate(self, claims: AccessTokenClaims, jkt: str | None) -> Caller:
        """The caller behind `claims`, from the store's state now; an InvalidTokenError
        saying why not (unknown, disabled, at high risk, revoked, session ended)."""
        status = self._check(claims.subject, claims.issued_at, claims.session_id)
        return Caller(
            kind=status.kind,
            id=status.id,
            roles=status.roles,
            session_id=claims.session_id,
            jkt=jkt,
            issued_at=claims.issued_at,
        )

    def recheck(self, caller: Caller) -> None:
        """Is `caller`, authenticated when its request arrived, still allowed now? For a call
        that waited (for a sponsor's approval, or for its session's lock): an identity
        disabled, revoked or raised to high risk meanwhile does not get to run it."""
        if caller.kind is CallerKind.SYSTEM:
            return
        if caller.issued_at is None:
            # Not from a token (only the server's own code makes such a Caller): what the
            # directory says of it, if it knows it (as `authorize` describes such a caller).
            status = self.store.principal_status(caller.id)
            if status is not None:
                self._status_ok(status)
            return
        self._check(caller.id, caller.issued_at, caller.session_id)

    @staticmethod
    def _status_ok(status: PrincipalStatus | None) -> PrincipalStatus:
        # 1. The subject exists (by id) and is enabled; each refusal says which.
        if status is None:
            raise IdentityUnknownError(
                "access token refused: the identity no longer exists",
                hint="it was deleted; an admin creates a new identity",
            )
        if not status.enabled:
            raise IdentityDisabledError(
                "access token refused: the identity is disabled",
                hint=f"an admin re-enables it (corral {status.kind.value} enable)",
            )
        # 2. An agent at high risk gets nothing.
        if status.kind is CallerKind.AGENT and status.risk is Risk.HIGH:
            raise IdentityHighRiskError(
                "access token refused: the identity is at high risk",
                hint="a security admin looks into it and lowers its risk",
            )
        return status

    def _check(self, subject: str, issued_at: float, session_id: str | None) -> PrincipalStatus:
        """Steps (numbered as in docs/authentication.md, "Continuous access evaluation")."""
        # 1.-2. Exists, enabled, not at high risk.
        status = self._status_ok(self.store.principal_status(subject))
        # 3. Not issued before an admin's revoke. iat has whole seconds, so a token issued in
        #    the same second as the revoke is refused too (fail closed: ask again a second on).
        if status.tokens_revoked_before is not None:
            cutoff = math.ceil(status.tokens_revoked_before.timestamp())
            if issued_at < cutoff:
                raise TokenRevokedError(
                    "access token refused: revoked (an admin revoked this identity's tokens)",
                    hint="get a new token",
                )
        # 4. A session token lives only as long as its session, and only for its owner.
        if session_id is not None:
            try:
                session = self.store.get_session(session_id)
            except NotFoundError:
                raise SessionEndedError("access token refused: no such session") from None
            if session.state != SessionState.ACTIVE or session.owner != status.id:
                raise SessionEndedError("access token refused: the session has ended")
        return status

    def pool_allows_bearer(self, pool: str) -> bool:
        """An admin opted this pool into bearer tokens; an unknown pool does not."""
        try:
            return self.store.get_pool(pool).spec.allow_bearer
        except NotFoundError:
            return False

    def session_allows_bearer(self, session_id: str) -> bool:
        """The session's pool accepts bearer tokens; an unknown session's does not."""
        try:
            session = self.store.get_session(session_id)
        except NotFoundError:
            return False
        return self.pool_allows_bearer(session.pool)
