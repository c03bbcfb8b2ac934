"""The RFC 9457 problem body of every error answer, as a pydantic model: what REST documents in
its OpenAPI document and what clients and tests validate against. `corral.errors.problem(exc)`
builds the body; this module only describes it (kept apart so that importing the error table
does not import pydantic, which the CLI's start-up cannot afford)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

__all__ = ["ErrorAlias", "FieldProblem", "Problem"]


class FieldProblem(BaseModel):
    """One bad field of a request that failed validation."""

    field: str = Field(description="where, dotted (`body.warm`), or `request`")
    detail: str = Field(description="what is wrong with it")


class ErrorAlias(BaseModel):
    """The pre-RFC 9457 error member, kept for one release: read the top-level members."""

    code: str
    message: str
    hint: str | SkipJsonSchema[None] = None
    approval_id: str | SkipJsonSchema[None] = None
    retry_after_s: int | SkipJsonSchema[None] = None
    errors: list[FieldProblem] | SkipJsonSchema[None] = None


class Problem(BaseModel):
    """An RFC 9457 problem body as Corral answers it (`application/problem+json`), with
    Corral's code and hint and the extension members some errors add. The one model of an
    error answer: REST documents it in OpenAPI, clients and tests validate against it."""

    type: str = Field(
        max_length=200,
        description="`urn:corral:error:<code>`",
        examples=["urn:corral:error:not_found"],
    )
    title: str = Field(
        max_length=200, description="short summary of the error class; the same for each code"
    )
    status: int = Field(ge=400, le=599, description="the HTTP status of this answer")
    detail: str = Field(description="what went wrong in this occurrence")
    code: str = Field(max_length=100, description="Corral's error code (docs/errors.md)")
    hint: str | SkipJsonSchema[None] = Field(
        None, description="what to change; omitted when there is nothing to suggest"
    )
    approval_id: str | SkipJsonSchema[None] = Field(
        None, description="`approval_pending` only: the approval to wait for"
    )
    retry_after_s: int | SkipJsonSchema[None] = Field(
        None, description="temporarily unavailable: seconds to wait (also `Retry-After`)"
    )
    errors: list[FieldProblem] | SkipJsonSchema[None] = Field(
        None, description="`invalid_input` from validation: one entry per field"
    )
    error: ErrorAlias | SkipJsonSchema[None] = Field(
        None, deprecated=True, description="the old error member; read the top level instead"
    )
