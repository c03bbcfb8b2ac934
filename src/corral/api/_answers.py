"""The documented shapes of the REST answers that routes build as plain JSON.

Used for the OpenAPI document only (`responses=` of each route): the routes keep building their
answers from the records (no second validation on the request path), and the schema-driven
fuzzer (tests/api/test_openapi_fuzz.py) checks every real answer against these shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "Acquired",
    "ApprovalOut",
    "AssignmentChanged",
    "AssignmentOut",
    "ControlsOut",
    "DecisionOut",
    "Health",
    "Jwk",
    "JwkSet",
    "OAuthError",
    "PCOut",
    "PolicyAdded",
    "PolicyChangeOut",
    "PolicyList",
    "PolicyOut",
    "PoolOut",
    "SessionDetail",
    "SessionOut",
    "SetError",
    "SsfConfiguration",
    "TokenOut",
    "ToolOut",
    "ok",
]


def ok(model: Any, status: int = 200, description: str = "done") -> dict[int | str, Any]:
    """The `responses=` entry of a route's success answer."""
    return {status: {"model": model, "description": description}}


class Health(BaseModel):
    status: Literal["ok"]
    version: str


# pools and sessions


class PoolOut(BaseModel):
    name: str
    image: str
    region: str
    size: str
    warm: int
    max: int
    idle_timeout_s: int
    max_lifetime_s: int
    allow_bearer: bool
    max_sessions_per_agent: int | None
    counts: dict[str, int] = Field(description="PCs of the pool by state")
    deleting: bool


class PCOut(BaseModel):
    id: str
    state: str
    session_id: str | None
    created_at: datetime
    detail: str | None


class SessionOut(BaseModel):
    session_id: str
    pool: str
    pc_id: str | None
    state: str
    mcp_url: str = Field(description="the session's MCP server (the computer URL)")
    viewer_url: str
    created_at: datetime | None
    expires_at: datetime | None
    last_activity: datetime | None
    released_at: datetime | None
    release_reason: str | None
    released_by: str | None


class SealOut(BaseModel):
    """The signed checkpoint that seals a released session's records (docs/audit.md)."""

    checkpoint_size: int = Field(description="the log's size it covers")
    root: str = Field(description="the tree's root hash, base64")
    checkpoint: str | None = Field(description="the signed checkpoint (C2SP signed note)")


class ReleasedOut(SessionOut):
    audit: SealOut | None = Field(
        None, description="the checkpoint sealing the session's records (with the audit log)"
    )


class ControlsOut(BaseModel):
    """The session controls in force (docs/policies.md)."""

    read_only: bool
    no_clipboard: bool
    no_file_transfer: bool
    allowed_hosts: list[str] | None
    allow_alongside: list[str] | SkipJsonSchema[None] = None
    allow_schemes: list[str] | SkipJsonSchema[None] = None


class SessionDetail(SessionOut):
    controls: ControlsOut


class Acquired(SessionDetail):
    """The session and, for the caller's own use, a token for this session only."""

    session_token: str | SkipJsonSchema[None] = Field(
        None, description="an access token whose audience is this session (its URLs only)"
    )
    session_token_type: str | SkipJsonSchema[None] = Field(None, description="DPoP or Bearer")
    session_token_expires_in: int | SkipJsonSchema[None] = None


class ImageOut(BaseModel):
    mime_type: Literal["image/png"]
    base64: str


class ToolOut(BaseModel):
    text: str
    data: dict[str, Any] = Field(description="the tool's structured result (docs/tools.md)")
    image: ImageOut | SkipJsonSchema[None] = None


# policies, assignments, approvals


class PolicyOut(BaseModel):
    id: str
    name: str
    text: str
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime


class SystemPolicy(BaseModel):
    name: str
    text: str


class PolicyList(BaseModel):
    version: int = Field(description="the policy set's version (see /v1/policies/changes)")
    policies: list[PolicyOut]
    system: list[SystemPolicy] = Field(description="built in; they cannot be changed")


class PolicyAdded(PolicyOut):
    notes: list[str] = Field(description="names the policy used, stored as ids")
    warnings: list[str] = Field(description="entities that match nothing in the directory")


class PolicyChangeOut(BaseModel):
    version: int
    kind: Literal["seed", "add", "replace", "remove", "enable", "disable", "assign", "unassign"]
    subject: str
    actor: str
    at: datetime
    text: str | None


class ApprovalRef(BaseModel):
    id: str
    state: str | None


class DecisionOut(BaseModel):
    decision: Literal["allow", "deny"]
    policies: list[str]
    errors: list[str]
    reason: str
    approval: ApprovalRef | SkipJsonSchema[None] = None


class AssignmentOut(BaseModel):
    pool: str
    agent: str | None
    group: str | None
    agent_id: str | None
    group_id: str | None
    created_by: str
    created_at: datetime


class AssignmentChanged(BaseModel):
    pool: str
    agent: str | None
    group: str | None
    changed: bool


class ApprovalOut(BaseModel):
    id: str
    agent_id: str
    session_id: str | None
    action: str
    resource: str
    detail: dict[str, str] = Field(description="the request the sponsor decides on")
    policies: list[str]
    state: Literal["pending", "approved", "denied", "expired"]
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    uses: int
    max_uses: int | None
    window_s: int
    used_up: bool


# tokens, keys, Shared Signals (their error bodies are the ones their RFCs define)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["DPoP", "Bearer"]
    expires_in: int


class OAuthError(BaseModel):
    """RFC 6749 section 5.2."""

    error: str
    error_description: str


class Jwk(BaseModel):
    """A public JSON Web Key (RFC 7517)."""

    kty: str
    kid: str
    alg: str
    use: str
    crv: str | SkipJsonSchema[None] = None
    x: str | SkipJsonSchema[None] = None
    y: str | SkipJsonSchema[None] = None


class JwkSet(BaseModel):
    keys: list[Jwk]


class SsfConfiguration(BaseModel):
    """SSF 1.0 transmitter metadata."""

    spec_version: str
    issuer: str
    jwks_uri: str
    delivery_methods_supported: list[str]
    events_supported: list[str]


class SetError(BaseModel):
    """RFC 8935 section 2.3."""

    err: str
    description: str


class ResourceMetadata(BaseModel):
    """RFC 9728 protected resource metadata (docs/authentication.md)."""

    resource: str
    authorization_servers: list[str]
    jwks_uri: str
    bearer_methods_supported: list[str]
    dpop_signing_alg_values_supported: list[str]
    dpop_bound_access_tokens_required: bool
    resource_name: str


class AuthorizationServerMetadata(BaseModel):
    """RFC 8414 authorization server metadata: Corral's token endpoint."""

    issuer: str
    token_endpoint: str
    jwks_uri: str
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    token_endpoint_auth_signing_alg_values_supported: list[str]
    dpop_signing_alg_values_supported: list[str]
    response_types_supported: list[str]


# the audit log (docs/audit.md)


class AuditRecordOut(BaseModel):
    index: int = Field(description="the entry's index in the log (0-based)")
    record: dict[str, Any] | None = Field(
        description="the OCSF 1.8.0 record (docs/audit.md, Records); null for an entry that "
        "is not a JSON record"
    )
    bytes: int | None = Field(None, description="the size of an entry that is not a record")


class AuditRecordProved(AuditRecordOut):
    proof: str = Field(
        description="a C2SP tlog-proof of the entry against the latest signed checkpoint "
        "(`corral audit verify --proof`)"
    )


class AuditEntriesOut(BaseModel):
    size: int = Field(description="the log's size when read")
    records: list[AuditRecordOut]
    next: int | None = Field(description="the index to ask for next; null at the end")


class InclusionOut(BaseModel):
    index: int
    size: int
    hashes: list[str] = Field(description="RFC 9162 inclusion proof, hex SHA-256 hashes")


class ConsistencyOut(BaseModel):
    first: int
    second: int
    hashes: list[str] = Field(description="RFC 9162 consistency proof, hex SHA-256 hashes")


class TraceActor(BaseModel):
    id: str | None = None
    kind: str | None = None
    sponsor: str | None = None
    on_behalf_of: str | None = None


class TraceDecision(BaseModel):
    action: str | None = None
    resource: str | None = None
    allowed: bool | None = None
    policies: list[str] = Field(default_factory=list)
    reason: str | None = None


class TraceNode(BaseModel):
    index: int
    record_id: str | None = None
    time: int | None = None
    operation: str | None = None
    outcome: str | None = None
    actor: TraceActor
    session: str | None = None
    pc: str | None = None
    pool: str | None = None
    span_id: str | None = None
    parent_id: str | None = None
    decisions: list[TraceDecision] = Field(default_factory=list)
    error: str | None = None
    children: list[TraceNode] = Field(default_factory=list)


class TraceOut(BaseModel):
    trace_id: str
    records: int
    request_spans: list[str] = Field(
        description="the caller's spans the trace came from (its user request); empty when "
        "Corral started the trace"
    )
    started_by_corral: bool
    truncated: bool = Field(False, description="more records than shown (the first 2,000)")
    children: list[TraceNode]
