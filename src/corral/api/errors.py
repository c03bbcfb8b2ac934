"""The one table that maps Corral's errors to HTTP answers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.api._problem import PROBLEM_JSON, problem_body
from corral.errors import (
    ActionError,
    ActionTimeoutError,
    ApprovalPendingError,
    ConflictError,
    CorralError,
    DiskFullError,
    InvalidInputError,
    NotFoundError,
    PCUnavailableError,
    PermissionDeniedError,
    RuntimeFailureError,
    UnavailableError,
)
from corral.identity.errors import AuthError

__all__ = ["STATUS", "error_response", "install_error_handlers", "status_for"]

# Most specific first: the first class an error is an instance of decides.
STATUS: tuple[tuple[type[CorralError], int], ...] = (
    (InvalidInputError, 400),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (DiskFullError, 507),
    (ActionTimeoutError, 504),
    (ActionError, 422),
    (UnavailableError, 503),
    (PCUnavailableError, 502),
    (RuntimeFailureError, 502),
)

# The codes of the framework's own answers (FastAPI's body parsing, routing).
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def status_for(exc: CorralError) -> int:
    if isinstance(exc, AuthError):  # an identity refused after the request was authenticated
        return exc.status  # (a call that waited and was checked again)
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(exc: CorralError) -> JSONResponse:
    extra = {"approval_id": exc.approval_id} if isinstance(exc, ApprovalPendingError) else {}
    body = problem_body(status_for(exc), exc.code, exc.message, exc.hint, **extra)
    headers = {}
    if isinstance(exc, AuthError):
        headers.update(exc.headers())
    if isinstance(exc, UnavailableError):
        headers["Retry-After"] = str(exc.retry_after_s)
    return JSONResponse(body, status_code=status_for(exc), headers=headers, media_type=PROBLEM_JSON)


def install_error_handlers(app: Any) -> None:
    async def corral_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CorralError)
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        return error_response(InvalidInputError(f"bad request: {problems}"))

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        # The database is down or locked past its timeout: a temporary condition, not a crash.
        return error_response(
            UnavailableError(
                "the store is not available right now",
                hint="retry in a few seconds",
                retry_after_s=2,
            )
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        # Raised by the framework itself (a body that is not JSON, an unknown path or method):
        # the same problem body as Corral's own errors.
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "invalid_input")
        body = problem_body(exc.status_code, code, str(exc.detail))
        return JSONResponse(
            body,
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
            media_type=PROBLEM_JSON,
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(CorralError, corral_error)
    app.add_exception_handler(OperationalError, store_error)
    app.add_exception_handler(RequestValidationError, validation_error)
