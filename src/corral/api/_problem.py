"""The documented shape of every REST error answer: an RFC 9457 problem body.

This module only describes the body for the OpenAPI document (the error handlers build it);
`problems(...)` gives a route's `responses=` entries for the statuses it can answer.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from corral.errors import PROBLEM_MEDIA_TYPE
from corral.problem import Problem

__all__ = ["PROBLEM_JSON", "problems"]

PROBLEM_JSON = PROBLEM_MEDIA_TYPE
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
