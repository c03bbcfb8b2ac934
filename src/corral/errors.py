"""One error tree for all of Corral.

Every expected failure is a `CorralError` whose message says what went wrong and, where it
helps, what to change (`hint`). Adapters map the classes to exit codes, HTTP statuses and MCP
tool errors through `exit_code`; anything that is not a `CorralError` is a crash.
"""

from __future__ import annotations

__all__ = [
    "ActionError",
    "ActionTimeoutError",
    "ApprovalPendingError",
    "BootError",
    "CorralError",
    "DiskFullError",
    "ImageBuildError",
    "ImageNotFoundError",
    "InvalidInputError",
    "NotFoundError",
    "PCMisbehavingError",
    "PCNotFoundError",
    "PCUnavailableError",
    "PermissionDeniedError",
    "RuntimeFailureError",
    "SessionLimitError",
    "StoreSecurityError",
]


class CorralError(Exception):
    """Base of every expected Corral failure."""

    exit_code = 1
    code = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class NotFoundError(CorralError):
    exit_code = 3
    code = "not_found"


class ImageNotFoundError(NotFoundError):
    code = "image_not_found"


class PCNotFoundError(NotFoundError):
    code = "pc_not_found"


class InvalidInputError(CorralError):
    """The caller asked for something malformed or out of range."""

    exit_code = 2
    code = "invalid_input"


class PermissionDeniedError(CorralError):
    exit_code = 4
    code = "permission_denied"


class ApprovalPendingError(PermissionDeniedError):
    """A policy holds the request for a sponsor's approval; asking again after the sponsor
    approved goes through."""

    code = "approval_pending"

    def __init__(self, message: str, hint: str | None = None, approval_id: str = "") -> None:
        super().__init__(message, hint)
        self.approval_id = approval_id


class RuntimeFailureError(CorralError):
    """The host runtime could not do what was asked."""

    exit_code = 5
    code = "runtime_failure"


class ImageBuildError(RuntimeFailureError):
    code = "image_build_failed"


class BootError(RuntimeFailureError):
    code = "boot_failed"


class PCUnavailableError(RuntimeFailureError):
    """The PC exists but does not answer (its processes died or it is unhealthy)."""

    code = "pc_unavailable"


class PCMisbehavingError(PCUnavailableError):
    """The PC's daemon broke the protocol (an oversized, malformed or trickled answer): the
    host stops trusting that PC; the lifecycle quarantines it and ends its session."""

    code = "pc_misbehaving"


class ActionError(CorralError):
    """An in-PC action failed; `code` carries pcd's error code."""

    exit_code = 6

    def __init__(self, message: str, hint: str | None = None, code: str = "action_failed") -> None:
        super().__init__(message, hint)
        self.code = code


class ActionTimeoutError(ActionError):
    exit_code = 7

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, code="timeout")


class DiskFullError(ActionError):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, code="disk_full")


class ConflictError(CorralError):
    """The request conflicts with the current state (e.g. an idempotency key reused with a
    different request, a pool that already exists)."""

    exit_code = 8
    code = "conflict"


class SessionLimitError(ConflictError):
    """The caller already holds as many sessions in the pool as its limit allows
    (`max_sessions_per_agent`): it must release one first. A conflict (409), not a wait."""

    code = "session_limit"


class UnavailableError(CorralError):
    """No capacity right now; the caller may retry after `retry_after_s`."""

    exit_code = 9
    code = "unavailable"

    def __init__(self, message: str, hint: str | None = None, retry_after_s: int = 5) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s


class SessionGoneError(NotFoundError):
    """The session was released (or never existed): its URLs stop working at once."""

    code = "session_gone"


class StoreSecurityError(CorralError):
    """The store's files or sealed secrets are not safe to use: a data folder or file others
    can read or that someone else owns, a missing store key, or a sealed value that does not
    open (altered, or copied from another row). Corral refuses rather than go on without."""

    exit_code = 10
    code = "store_security"
