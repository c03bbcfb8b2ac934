"""Corral's errors as HTTP answers: RFC 9457 problem bodies from the error table.

The table itself is the error classes (`corral.errors`): each says its status, title, code and
extension members; this module only renders them. Request validation (FastAPI's 422) answers
400 `invalid_input` naming each bad field, like every other bad input.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.api._problem import PROBLEM_JSON
from corral.errors import (
    PROBLEM_MEDIA_TYPE,
    CorralError,
    InvalidInputError,
    MethodNotAllowedError,
    NotFoundError,
    TooLargeError,
    problem,
)

__all__ = ["ProblemResponse", "error_response", "install_error_handlers", "status_for"]


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


# The codes of the framework's own answers (FastAPI's body parsing, routing).
_HTTP_ERRORS: dict[int, type[CorralError]] = {
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: TooLargeError,
}


def status_for(exc: CorralError) -> int:
    return exc.status


def error_response(
    exc: CorralError, headers: dict[str, str] | None = None, *, alias: bool = True
) -> JSONResponse:
    """`exc` as an `application/problem+json` answer with the headers its class adds
    (Retry-After, WWW-Authenticate, DPoP-Nonce)."""
    answer_headers = {**exc.headers(), **(headers or {})}
    return ProblemResponse(
        problem(exc, alias=alias), status_code=exc.status, headers=answer_headers
    )


def validation_problem(exc: RequestValidationError) -> InvalidInputError:
    """FastAPI's validation failure as one `invalid_input` naming every bad field."""
    errors = [
        {"field": ".".join(str(p) for p in err["loc"]) or "request", "detail": str(err["msg"])}
        for err in exc.errors()
    ]
    problems = "; ".join(f"{e['field']}: {e['detail']}" for e in errors)
    return InvalidInputError(f"bad request: {problems}", errors=errors)


def install_error_handlers(app: Any) -> None:
    async def corral_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CorralError)
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_problem(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        # Raised by the framework itself (a body that is not JSON, an unknown path or method):
        # the same problem body as Corral's own errors.
        assert isinstance(exc, StarletteHTTPException)
        body = problem(_HTTP_ERRORS.get(exc.status_code, InvalidInputError)(str(exc.detail)))
        body["status"] = exc.status_code  # what the framework answers, whatever the row says
        return JSONResponse(
            body,
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
            media_type=PROBLEM_JSON,
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(CorralError, corral_error)
    app.add_exception_handler(RequestValidationError, validation_error)
