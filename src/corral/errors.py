"""One error tree for all of Corral, and the one table adapters read to answer with it.

Every expected failure is a `CorralError` whose message says what went wrong and, where it
helps, what to change (`hint`). Each class is one row of the error table: its `code`, a fixed
`title`, the HTTP `status`, the CLI `exit_code` (set on the class, inherited by subclasses that
do not say otherwise), and the extension members and headers its instances add. REST answers
with `problem(exc)` (RFC 9457), MCP tools with the same problem as a tool error, the CLI exits
with `exit_code`; anything that is not a `CorralError` is a crash (500). `error_table()` lists
the rows (docs/errors.md is generated from it); `from_problem()` turns a problem body back into
the matching class (the CLI's HTTP client).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "ActionError",
    "ActionTimeoutError",
    "ApprovalPendingError",
    "AuditIntegrityError",
    "BootError",
    "ConflictError",
    "CorralError",
    "DiskFullError",
    "ErrorRow",
    "ImageBuildError",
    "ImageNotFoundError",
    "InvalidInputError",
    "MethodNotAllowedError",
    "NotFoundError",
    "PCMisbehavingError",
    "PCNotFoundError",
    "PCUnavailableError",
    "PermissionDeniedError",
    "RuntimeFailureError",
    "SessionGoneError",
    "SessionLimitError",
    "StoreSecurityError",
    "StoreUnavailableError",
    "TooLargeError",
    "UnavailableError",
    "error_table",
    "from_problem",
    "problem",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:corral:error:"


class CorralError(Exception):
    """Base of every expected Corral failure (and, as a row, of failures without a class)."""

    exit_code = 1
    code = "error"
    #: the HTTP status of this class's answers
    status: int = 500
    #: RFC 9457 `title`: short, the same for every instance of the class
    title: ClassVar[str] = "Corral failed"
    #: how an MCP client sees it: a tool error (isError, the problem as structured content),
    #: or an HTTP answer before MCP reads the request
    mcp: ClassVar[str] = "tool error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def extensions(self) -> dict[str, Any]:
        """Problem extension members this instance adds (RFC 9457 section 3.2)."""
        return {}

    def headers(self) -> dict[str, str]:
        """Response headers an HTTP answer with this error carries."""
        return {}


class NotFoundError(CorralError):
    exit_code = 3
    code = "not_found"
    status = 404
    title = "Not found"


class ImageNotFoundError(NotFoundError):
    code = "image_not_found"
    title = "Image not found"


class PCNotFoundError(NotFoundError):
    code = "pc_not_found"
    title = "PC not found"


class InvalidInputError(CorralError):
    """The caller asked for something malformed or out of range."""

    exit_code = 2
    code = "invalid_input"
    status = 400
    title = "Invalid input"

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message, hint)
        #: one {"field", "detail"} per bad field, where the input was checked field by field
        self.errors = errors or []

    def extensions(self) -> dict[str, Any]:
        return {"errors": self.errors} if self.errors else {}


class TooLargeError(InvalidInputError):
    """A request body over the server's limit (refused before anything reads it)."""

    code = "too_large"
    status = 413
    title = "Request too large"


class MethodNotAllowedError(InvalidInputError):
    """A path that exists, asked with a method it does not serve."""

    code = "method_not_allowed"
    status = 405
    title = "Method not allowed"


class PermissionDeniedError(CorralError):
    exit_code = 4
    code = "permission_denied"
    status = 403
    title = "Permission denied"


class ApprovalPendingError(PermissionDeniedError):
    """A policy holds the request for a sponsor's approval; asking again after the sponsor
    approved goes through."""

    code = "approval_pending"
    title = "Approval pending"

    def __init__(self, message: str, hint: str | None = None, approval_id: str = "") -> None:
        super().__init__(message, hint)
        self.approval_id = approval_id

    def extensions(self) -> dict[str, Any]:
        return {"approval_id": self.approval_id}


class RuntimeFailureError(CorralError):
    """The host runtime could not do what was asked."""

    exit_code = 5
    code = "runtime_failure"
    status = 502
    title = "Runtime failure"


class ImageBuildError(RuntimeFailureError):
    code = "image_build_failed"
    title = "Image build failed"


class BootError(RuntimeFailureError):
    code = "boot_failed"
    title = "Boot failed"


class PCUnavailableError(RuntimeFailureError):
    """The PC exists but does not answer (its processes died or it is unhealthy)."""

    code = "pc_unavailable"
    title = "PC unavailable"


class PCMisbehavingError(PCUnavailableError):
    """The PC's daemon broke the protocol (an oversized, malformed or trickled answer): the
    host stops trusting that PC; the lifecycle quarantines it and ends its session."""

    code = "pc_misbehaving"
    title = "PC misbehaving"


class ActionError(CorralError):
    """An in-PC action failed; `code` carries pcd's error code."""

    exit_code = 6
    code = "action_failed"
    status = 422
    title = "Action failed"

    def __init__(self, message: str, hint: str | None = None, code: str = "action_failed") -> None:
        super().__init__(message, hint)
        self.code = code


class ActionTimeoutError(ActionError):
    exit_code = 7
    code = "timeout"
    status = 504
    title = "Action timed out"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, code="timeout")


class DiskFullError(ActionError):
    code = "disk_full"
    status = 507
    title = "Disk full"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint, code="disk_full")


class ConflictError(CorralError):
    """The request conflicts with the current state (e.g. an idempotency key reused with a
    different request, a pool that already exists)."""

    exit_code = 8
    code = "conflict"
    status = 409
    title = "Conflict"


class SessionLimitError(ConflictError):
    """The caller already holds as many sessions in the pool as its limit allows
    (`max_sessions_per_agent`): it must release one first. A conflict (409), not a wait."""

    code = "session_limit"
    title = "Session limit reached"


class UnavailableError(CorralError):
    """No capacity right now; the caller may retry after `retry_after_s`."""

    exit_code = 9
    code = "unavailable"
    status = 503
    title = "Unavailable"

    def __init__(self, message: str, hint: str | None = None, retry_after_s: int = 5) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s

    def extensions(self) -> dict[str, Any]:
        return {"retry_after_s": self.retry_after_s}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class StoreUnavailableError(UnavailableError):
    """The database is down, unreachable or locked past its busy timeout: a temporary
    condition (the store raises it at its engine boundary instead of the driver's error)."""

    code = "store_unavailable"
    title = "Store unavailable"

    def __init__(
        self,
        message: str = "the store is not available right now",
        hint: str | None = "retry in a few seconds",
        retry_after_s: int = 2,
    ) -> None:
        super().__init__(message, hint, retry_after_s)


class AuditUnavailableError(UnavailableError):
    """The audit log could not take a record (its store is down or full). Corral refuses
    actions it cannot record (fail closed) until a write succeeds again."""

    code = "audit_unavailable"
    title = "Audit log unavailable"

    def __init__(
        self,
        message: str = "the audit log cannot record right now, so nothing is done",
        hint: str | None = "retry in a few seconds; an operator sees why in the server's log",
        retry_after_s: int = 2,
    ) -> None:
        super().__init__(message, hint, retry_after_s)


class SessionGoneError(NotFoundError):
    """The session was released (or never existed): its URLs stop working at once."""

    code = "session_gone"
    title = "Session gone"


class StoreSecurityError(CorralError):
    """The store's files or sealed secrets are not safe to use: a data folder or file others
    can read or that someone else owns, a missing store key, or a sealed value that does not
    open (altered, or copied from another row). Corral refuses rather than go on without."""

    exit_code = 10
    code = "store_security"
    title = "Store not safe to use"


class AuditIntegrityError(CorralError):
    """The audit log cannot be signed as it stands: it disagrees with a checkpoint it signed
    before (rewritten or cut short), or its signing key does not fit the configured origin.
    Corral refuses to sign a checkpoint inconsistent with one it handed out."""

    exit_code = 11
    code = "audit_integrity"
    title = "Audit log integrity"


# The table: every class above (and in the modules that add their own, such as the
# authentication family in corral.identity.errors) is one row, read by every adapter.


def problem(exc: CorralError, *, alias: bool = True) -> dict[str, Any]:
    """The RFC 9457 body for `exc`; `alias` adds the deprecated `error` member (the body
    before problem details), which goes away in the next release."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + exc.code,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.message,
        "code": exc.code,
    }
    if exc.hint:
        body["hint"] = exc.hint
    extensions = exc.extensions()
    body.update(extensions)
    if alias:
        old: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.hint:
            old["hint"] = exc.hint
        old.update(extensions)
        body["error"] = old
    return body


@dataclass(frozen=True)
class ErrorRow:
    """One row of the error table."""

    cls: type[CorralError]
    code: str
    title: str
    status: int
    exit_code: int
    mcp: str

    @property
    def name(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


def _classes(root: type[CorralError]) -> Iterator[type[CorralError]]:
    yield root
    for sub in root.__subclasses__():
        yield from _classes(sub)


def _class_code(cls: type[CorralError]) -> str:
    # The authentication family derives its code from the OAuth error (see AuthError).
    derived = getattr(cls, "class_code", None)
    return str(derived()) if callable(derived) else cls.code


def error_table() -> list[ErrorRow]:
    """Every error class loaded, in tree order (import the adapters first to see them all)."""
    seen: set[type[CorralError]] = set()
    rows: list[ErrorRow] = []
    for cls in _classes(CorralError):
        if cls in seen or cls.__module__.startswith("tests"):
            continue
        seen.add(cls)
        rows.append(ErrorRow(cls, _class_code(cls), cls.title, cls.status, cls.exit_code, cls.mcp))
    return rows


def from_problem(status: int, body: Mapping[str, Any] | None, text: str = "") -> CorralError:
    """A server's error answer as a CorralError with the code, hint, status and exit code of
    the matching row (by code and status, else by status): what a client raises."""
    body = body or {}
    alias = body.get("error")
    legacy: Mapping[str, Any] = alias if isinstance(alias, Mapping) else {}
    code = body.get("code") or legacy.get("code")
    if not isinstance(code, str):  # an OAuth error answer (RFC 6749 5.2) or no JSON at all
        code = body.get("error") if isinstance(body.get("error"), str) else "error"
    detail = body.get("detail") or legacy.get("message") or body.get("error_description") or text
    hint = body.get("hint") or legacy.get("hint")
    rows = error_table()
    row = next((r for r in rows if r.code == code and r.status == status), None)
    row = row or next((r for r in rows[1:] if r.status == status), None)
    exc = CorralError(str(detail or f"HTTP {status}"), hint=str(hint) if hint else None)
    exc.code = str(code)
    exc.status = status
    exc.exit_code = row.exit_code if row is not None else 1
    return exc


def errors_markdown() -> str:
    """The table of docs/errors.md, generated from the classes (scripts/gen-errors-doc.py)."""
    lines = [
        "| code | title | HTTP status | MCP | CLI exit code | class |",
        "|---|---|---|---|---|---|",
    ]
    for r in error_table():
        lines.append(
            f"| `{r.code}` | {r.title} | {r.status} | {r.mcp} | {r.exit_code} | `{r.name}` |"
        )
    return "\n".join(lines) + "\n"
