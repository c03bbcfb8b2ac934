"""The documented shape of every REST error answer: an RFC 9457 problem body.

This module only describes the body for the OpenAPI document (the error handlers build it);
`problems(...)` gives a route's `responses=` entries for the statuses it can answer.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

__all__ = ["PROBLEM_JSON", "ErrorAlias", "Problem", "problem_body", "problems"]

PROBLEM_JSON = "application/problem+json"
_REF = {"$ref": "#/components/schemas/Problem"}

# What each status means on Corral's REST routes (the `description` of the response).
_MEANING: dict[int, str] = {
    400: "bad input; `detail` says what is wrong and `hint` what to change",
    401: "no valid DPoP-bound access token (WWW-Authenticate says why)",
    403: "a policy does not allow it (`approval_pending`: a sponsor must approve first)",
    404: "no such object, or not one the caller may see",
    409: "conflicts with the current state (name taken, limit reached, rule broken)",
    413: "the request body is over 32 MiB",
    422: "the PC could not do the action (`detail` says why)",
    502: "the PC failed or does not answer",
    503: "temporarily unavailable (the store); retry after Retry-After seconds",
    504: "the action did not finish in time",
    507: "the PC's disk is full",
}


class ErrorAlias(BaseModel):
    """The pre-RFC 9457 error member, kept for one release: read the top-level members."""

    code: str
    message: str
    hint: str | SkipJsonSchema[None] = None
    approval_id: str | SkipJsonSchema[None] = None


class Problem(BaseModel):
    """An error answer (RFC 9457, `application/problem+json`) with Corral's code and hint."""

    type: str = Field(
        max_length=200,
        description="`urn:corral:error:<code>`",
        examples=["urn:corral:error:not_found"],
    )
    title: str = Field(max_length=200, description="a short fixed title of the error class")
    status: int = Field(ge=400, le=599, description="the HTTP status, repeated")
    detail: str = Field(description="what went wrong, for a person")
    code: str = Field(max_length=100, description="Corral's error code (a stable identifier)")
    hint: str | SkipJsonSchema[None] = Field(
        None, description="what to change; omitted when there is nothing to suggest"
    )
    approval_id: str | SkipJsonSchema[None] = Field(
        None, description="`approval_pending` only: the approval to wait for"
    )
    error: ErrorAlias | SkipJsonSchema[None] = Field(
        None, deprecated=True, description="the old error member; read the top level instead"
    )


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries: each status answered with a problem body."""
    return {
        status: {
            "description": _MEANING.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_JSON: {"schema": dict(_REF)}},
        }
        for status in statuses
    }


def problem_json_schema() -> dict[str, dict[str, Any]]:
    """The component schemas the problem responses refer to (Problem and ErrorAlias)."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, dict[str, Any]] = schema.pop("$defs", {})
    return {**defs, "Problem": schema}


def problem_body(
    status: int, code: str, detail: str, hint: str | None = None, **extensions: str
) -> dict[str, Any]:
    """The JSON of a problem answer, with the deprecated `error` alias beside it."""
    body: dict[str, Any] = {
        "type": f"urn:corral:error:{code}",
        "title": code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
    }
    alias: dict[str, Any] = {"code": code, "message": detail}
    if hint:
        body["hint"] = alias["hint"] = hint
    body.update(extensions)
    alias.update(extensions)
    body["error"] = alias
    return body
