"""Continuous access evaluation: is a verified token's principal still allowed, right now?

Called on every request (as `verify_request`'s revocation check) and reads the store, which
every server worker shares, so a change counts on the very next request in every worker.
"""

from __future__ import annotations

import math

from corral.domain.access import Caller, CallerKind
from corral.domain.identity import Risk
from corral.domain.models import SessionState
from corral.errors import NotFoundError
from corral.identity.errors import InvalidTokenError
from corral.identity.tokens import AccessTokenClaims
from corral.store import Store

__all__ = ["AccessEvaluator"]


class AccessEvaluator:
    """Turns verified claims into the `Caller` the Gate authorizes, or refuses them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def evaluate(self, claims: AccessTokenClaims, jkt: str | None) -> Caller:
        """The caller behind `claims`, from the store's state now; InvalidTokenError if not.

        Steps (numbered as in docs/authentication.md, "Continuous access evaluation"):
        """
        # 1. The subject exists (by id) and is enabled.
        status = self.store.principal_status(claims.subject)
        if status is None or not status.enabled:
            raise InvalidTokenError("access token refused: the identity is unknown or disabled")
        # 2. An agent at high risk gets nothing.
        if status.kind is CallerKind.AGENT and status.risk is Risk.HIGH:
            raise InvalidTokenError("access token refused: the identity is at high risk")
        # 3. Not issued before an admin's revoke. iat has whole seconds, so a token issued in
        #    the same second as the revoke is refused too (fail closed: ask again a second on).
        if status.tokens_revoked_before is not None:
            cutoff = math.ceil(status.tokens_revoked_before.timestamp())
            if claims.issued_at < cutoff:
                raise InvalidTokenError("access token refused: revoked")
        # 4. A session token lives only as long as its session, and only for its owner.
        if claims.session_id is not None:
            try:
                session = self.store.get_session(claims.session_id)
            except NotFoundError:
                raise InvalidTokenError("access token refused: no such session") from None
            if session.state != SessionState.ACTIVE or session.owner != status.id:
                raise InvalidTokenError("access token refused: the session has ended")
        return Caller(
            kind=status.kind,
            id=status.id,
            roles=status.roles,
            session_id=claims.session_id,
            jkt=jkt,
        )

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
