"""Small pieces the lifecycle's services share: the clock, the fail-closed caller check and the
answer for a session that is not there (or not yours)."""

from __future__ import annotations

from datetime import UTC, datetime

from corral.domain.access import Caller
from corral.errors import PermissionDeniedError, SessionGoneError


def utcnow() -> datetime:
    return datetime.now(UTC)


def require_caller(principal: Caller | None) -> Caller:
    """Fail closed: an adapter that forgot to pass who is calling gets a refusal, not a pass."""
    if principal is None:
        raise PermissionDeniedError("no authenticated principal for this request")
    return principal


def gone(session_id: str) -> SessionGoneError:
    # The same answer for "unknown" and "someone else's": existence is not revealed.
    return SessionGoneError(f"no session {session_id!r}")
