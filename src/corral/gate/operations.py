"""The operation catalogue: every operation the Gate serves besides the computer tools.

One entry per operation, like the tool catalogue (`corral.lifecycle.tools.TOOLS`): its name, the
Cedar action it needs, what its `target` names, its argument model (pydantic: what REST and MCP
validate and publish as JSON schema) and where adapters expose it. REST, both MCP servers, the
console and the host CLI hand the Gate these names; `docs/operations.md` is generated from this
table (`python -m corral.gate > docs/operations.md`); tests keep that file current and every
action declared in the Cedar schema.

The computer tools are operations too (`tool_operation`): their name is the tool's, their action
the tool's own, their target the session, their arguments the tool's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.errors import InvalidInputError
from corral.lifecycle.tools import TOOLS

__all__ = [
    "OPERATIONS",
    "TOOLS",
    "Acquire",
    "AcquirePc",
    "AcquireRequest",
    "Kind",
    "ListApprovals",
    "Operation",
    "PoolCreate",
    "SessionControls",
    "operation",
    "render_markdown",
    "tool_operation",
]


class Kind(StrEnum):
    TOOL = "tool"  # a computer tool acting on a session's PC
    SESSION = "session"  # acquire, release, read and watch sessions
    POOL = "pool"  # read and administer pools
    DIRECTORY = "directory"  # users, agents, keys, groups, federation, event receivers
    POLICY = "policy"  # policies, pool assignments, approvals
    AUDIT = "audit"  # the audit log's records, proofs and traces


# -- argument models -------------------------------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    """No arguments."""


_YEAR_S = 366 * 86400  # timeouts and lifetimes: a year at most


class SessionControls(BaseModel):
    """Restrictions fixed for the session's whole life (on top of any a policy sets). The one
    definition of the session controls a caller may ask for: REST's acquire body and the
    gateway's `acquire_pc` both use it; `corral.access.Controls` is how policy holds them
    (it adds the exemptions only a permit grants)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    read_only: bool = Field(False, description="no input tools: the agent can only look")
    no_clipboard: bool = Field(False, description="no get_clipboard / set_clipboard")
    no_file_transfer: bool = Field(False, description="no read_file / write_file")
    allowed_hosts: list[Annotated[str, Field(max_length=253)]] | None = Field(
        None, max_length=100, description="open_url only to these hosts (omit: any host)"
    )


class AcquireRequest(_Args):
    """The body of a REST acquire (the Idempotency-Key comes as a header)."""

    wait_s: float | None = Field(
        None, ge=0, le=120, description="seconds to wait for a free PC (server default if omitted)"
    )
    controls: SessionControls | None = Field(
        None,
        description="restrictions fixed for the session's whole life, on top of any a policy "
        "sets: read_only (no input), no_clipboard, no_file_transfer, allowed_hosts for open_url "
        "(docs/policies.md)",
    )


class Acquire(AcquireRequest):
    """What the Gate's `acquire` takes (target: the pool)."""

    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="retrying with the same key returns the same PC, never a second one",
    )


class AcquirePc(Acquire):
    """The gateway's `acquire_pc`: the pool is an argument there."""

    pool: str = Field(
        "default", min_length=1, max_length=63, description="pool name from list_pools"
    )


class ListSessions(_Args):
    active: bool = Field(True, description="only active sessions")


class PoolCreate(_Args):
    name: str = Field(min_length=1, max_length=63)
    image: str = Field(min_length=1, max_length=128)
    region: str = Field("local", min_length=1, max_length=63, description="a label")
    size: str = Field("small", min_length=1, max_length=32, description="small, medium or large")
    warm: int = Field(2, ge=0, le=1000)
    max: int = Field(10, ge=1, le=1000)
    idle_timeout_s: int = Field(1800, ge=1, le=_YEAR_S)
    max_lifetime_s: int = Field(8 * 3600, ge=1, le=_YEAR_S)
    allow_bearer: bool = Field(
        False,
        description="accept plain bearer tokens (no DPoP) for acquiring from this pool and "
        "on its sessions' URLs; for MCP clients that cannot do proof of possession",
    )
    max_sessions_per_agent: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="active sessions one agent may hold in this pool at once (at most max); "
        "omitted: half the pool's max, at least one",
    )


class AddPolicy(_Args):
    name: str = Field(description="the policy's name (its id in decisions)")
    text: str = Field(description="Cedar policy text")
    replace: bool = Field(False, description="replace the text of an existing policy")


class PolicyEnabled(_Args):
    enabled: bool


class PolicyChanges(_Args):
    since: int = Field(0, ge=0, description="changes after this policy version")


_MAX_INDEX = 2**62  # a log index or size (the tiles format allows up to 10^18 entries)


class AuditEntries(_Args):
    start: int = Field(0, ge=0, le=_MAX_INDEX, description="the first index (0-based)")
    limit: int = Field(100, ge=1, le=1000, description="how many records at most")
    session: str | None = Field(None, max_length=64, description="only this session's records")


class AuditInclusion(_Args):
    index: int = Field(ge=0, le=_MAX_INDEX, description="the entry's index (0-based)")
    size: int | None = Field(
        None, ge=1, le=_MAX_INDEX, description="the tree size (default: the latest checkpoint)"
    )


class AuditConsistency(_Args):
    first: int = Field(ge=1, le=_MAX_INDEX, description="the older tree size")
    second: int | None = Field(
        None, ge=1, le=_MAX_INDEX, description="the newer size (default: the latest checkpoint)"
    )


class TestPolicy(_Args):
    principal: str = Field(description='e.g. Agent::"bot"')
    action: str = Field(description="e.g. run_command")
    resource: str = Field(description='e.g. PC::"pc-1"')
    context: dict[str, Any] = Field(default_factory=dict)


class AssignPool(_Args):
    agent: str | None = None
    group: str | None = None
    present: bool = Field(True, description="assign (true) or unassign (false)")


class ListApprovals(_Args):
    state: Literal["pending", "approved", "denied", "expired"] | None = Field(
        None, description="only approvals in this state (omit: all)"
    )


class DecideApproval(_Args):
    approve: bool = Field(description="true approves, false denies")


class CreateUser(_Args):
    """Names, roles and e-mail are checked by the directory, with its own messages."""

    name: str = Field(description="checked by the directory")
    roles: list[str] = Field(default_factory=list)
    email: str | None = None
    password: str | None = Field(None, repr=False)


class CreateUserKey(_Args):
    token_endpoint: str


class UserRoles(_Args):
    roles: list[str] = Field(default_factory=list)


class CreateAgent(_Args):
    name: str = Field(description="checked by the directory")
    sponsors: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    token_endpoint: str | None = Field(None, description="written into the credential")
    key_lifetime_s: int | None = Field(None, ge=1, description="the key expires after this")


class DisableAgent(_Args):
    reason: str | None = None


class AgentRisk(_Args):
    level: Literal["none", "low", "medium", "high"]


class Sponsor(_Args):
    user: str = Field(description="checked by the directory")


class RotateKey(_Args):
    grace_s: int = Field(3600, ge=0)
    token_endpoint: str | None = Field(None, description="written into the credential")


class RevokeKey(_Args):
    kid: str = Field(description="checked by the directory")


class CreateGroup(_Args):
    name: str = Field(description="checked by the directory")
    description: str = ""


class GroupMember(_Args):
    kind: Literal["user", "agent"]
    member: str = Field(description="id or name")
    present: bool = Field(True, description="add (true) or remove (false); idempotent")


class LinkSubject(_Args):
    subject: str = Field(description="checked by the directory")
    kind: Literal["agent", "user"]
    principal: str = Field(description="checked by the directory")


class UnlinkSubject(_Args):
    subject: str = Field(description="checked by the directory")


class AddProvider(_Args):
    """A trusted OpenID provider (the CLI reads secrets and key files before it asks)."""

    provider: Any = Field(description="the provider record (an OidcProvider)")


class AddReceiver(_Args):
    endpoint: str
    audience: str
    events: list[str] = Field(default_factory=list)
    auth_header: str | None = Field(None, repr=False)


# -- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One operation: `action` is the Cedar action it needs (on the resource `target` names);
    `rest`, `mcp` and `cli` say where adapters expose it (documentation, and the coverage test)."""

    name: str
    kind: Kind
    action: str
    target: str  # what the Gate's `target` names ("" for none)
    args: type[BaseModel]
    summary: str
    rest: str = ""
    mcp: str = ""
    cli: str = ""


def _op(
    name: str,
    kind: Kind,
    action: str,
    target: str,
    args: type[BaseModel],
    summary: str,
    *,
    rest: str = "",
    mcp: str = "",
    cli: str = "",
) -> tuple[str, Operation]:
    return name, Operation(name, kind, action, target, args, summary, rest, mcp, cli)


S, P, D, A, L = Kind.SESSION, Kind.POOL, Kind.DIRECTORY, Kind.POLICY, Kind.AUDIT

OPERATIONS: dict[str, Operation] = dict(
    [
        # pools
        _op("list_pools", P, "read_pool", "", NoArgs,
            "the pools the caller may read (each one asked)",
            rest="GET /v1/pools", mcp="list_pools", cli="corral pool list"),
        _op("show_pool", P, "read_pool", "pool", NoArgs, "one pool and its PC counts",
            rest="GET /v1/pools/{name}", cli="corral pool show"),
        _op("list_pool_pcs", P, "inspect_pool", "pool", NoArgs,
            "a pool's PCs and their states (quarantined ones included)",
            rest="GET /v1/pools/{name}/pcs"),
        _op("create_pool", P, "create_pool", "", PoolCreate, "create a pool",
            rest="POST /v1/pools", cli="corral pool create"),
        _op("delete_pool", P, "delete_pool", "pool", NoArgs,
            "drain a pool: sessions end first, then its PCs are destroyed",
            rest="DELETE /v1/pools/{name}", cli="corral pool delete"),
        # sessions
        _op("acquire", S, "acquire", "pool", Acquire,
            "bind a ready PC to a new session; answers its grant (session token, MCP URL)",
            rest="POST /v1/pools/{pool}/sessions", mcp="acquire_pc", cli="corral session acquire"),
        _op("release", S, "release", "session", NoArgs,
            "end a session now; its PC is reset in the background",
            rest="DELETE /v1/sessions/{session_id}", mcp="release_pc",
            cli="corral session release"),
        _op("list_sessions", S, "read_session", "", ListSessions,
            "the sessions the caller may read (each one asked)",
            rest="GET /v1/sessions", cli="corral session list"),
        _op("show_session", S, "read_session", "session", NoArgs,
            "one active session (with its controls)",
            rest="GET /v1/sessions/{session_id}; GET /sessions/{session_id}/viewer; "
            "the per-session MCP URL's door"),
        _op("session_grant", S, "read_session", "session", NoArgs,
            "a new session token for a session the caller holds (the gateway's acquire_pc "
            "while its MCP session already holds a PC)", mcp="acquire_pc"),
        _op("observe", S, "observe", "session", NoArgs,
            "a screenshot for a human observer (not the agent's coordinate space)",
            rest="GET /v1/sessions/{session_id}/screenshot", cli="the console's live view"),
        # policy administration (docs/policies.md)
        _op("list_policies", A, "read_policies", "", NoArgs,
            "the stored policies, the system ones and the version",
            rest="GET /v1/policies", cli="corral policy list"),
        _op("show_policy", A, "read_policies", "policy", NoArgs, "one stored policy",
            rest="GET /v1/policies/{name}", cli="corral policy show"),
        _op("add_policy", A, "manage_policies", "", AddPolicy,
            "add (or replace) a policy; names in it are stored as ids",
            rest="POST /v1/policies", cli="corral policy add"),
        _op("set_policy_enabled", A, "manage_policies", "policy", PolicyEnabled,
            "enable or disable a policy", rest="PATCH /v1/policies/{name}",
            cli="corral policy enable|disable"),
        _op("remove_policy", A, "manage_policies", "policy", NoArgs, "remove a policy",
            rest="DELETE /v1/policies/{name}", cli="corral policy remove"),
        _op("policy_changes", A, "read_policies", "", PolicyChanges, "the policies' history",
            rest="GET /v1/policies/changes", cli="corral policy history"),
        _op("policy_schema", A, "read_policies", "", NoArgs, "the Cedar schema",
            rest="GET /v1/policies/schema", cli="corral policy schema"),
        _op("test_policy", A, "read_policies", "", TestPolicy,
            "what the policies decide for a principal, action and resource",
            rest="POST /v1/policies/test", cli="corral policy test"),
        _op("pool_assignments", P, "inspect_pool", "pool", NoArgs,
            "the agents and groups assigned to a pool",
            rest="GET /v1/pools/{pool}/assignments"),
        _op("assign_pool", P, "assign_pool", "pool", AssignPool,
            "assign (or unassign) an agent or group to a pool",
            rest="POST|DELETE /v1/pools/{pool}/assignments", cli="corral pool assign"),
        # the audit log (docs/audit.md): records and proofs need `read_audit`; its checkpoint,
        # key and hash tiles are public (hashes only) and served without the Gate
        _op("audit_entries", L, "read_audit", "", AuditEntries,
            "the audit log's records, by index (or one session's)",
            rest="GET /v1/audit/entries", cli="corral audit export"),
        _op("audit_record", L, "read_audit", "record", NoArgs,
            "one record by its id, with its index and an inclusion proof",
            rest="GET /v1/audit/records/{record_id}", cli="corral audit prove RECORD_ID"),
        _op("audit_inclusion", L, "read_audit", "", AuditInclusion,
            "an inclusion proof (RFC 9162) of one entry in a tree size",
            rest="GET /v1/audit/proof/inclusion"),
        _op("audit_consistency", L, "read_audit", "", AuditConsistency,
            "a consistency proof (RFC 9162) between two tree sizes",
            rest="GET /v1/audit/proof/consistency"),
        _op("audit_trace", L, "read_audit", "trace", NoArgs,
            "every record of one W3C trace, as a tree (request, agent, session, actions)",
            rest="GET /v1/audit/traces/{trace_id}", cli="corral audit trace"),
        _op("audit_entry_bundle", L, "read_audit", "tile", NoArgs,
            "a C2SP tlog-tiles entry bundle (the records themselves)",
            rest="GET /audit/tile/entries/{N}"),
        # approvals
        _op("list_approvals", A, "approve", "", ListApprovals,
            "the approvals the caller may answer (each agent's asked)",
            rest="GET /v1/approvals", cli="corral approvals list; the console"),
        _op("decide_approval", A, "approve", "approval", DecideApproval,
            "approve or deny a held request of an agent the caller answers for",
            rest="POST /v1/approvals/{id}/approve|deny",
            cli="corral approvals approve|deny; the console"),
        # the directory, as the host operator changes it (REST serves the same through
        # DirectoryService, docs/identity.md)
        _op("list_users", D, "read_directory", "", NoArgs, "every user",
            rest="GET /v1/users", cli="corral user list"),
        _op("show_user", D, "read_directory", "user", NoArgs, "one user",
            rest="GET /v1/users/{ref}", cli="corral user show"),
        _op("create_user", D, "manage_directory", "", CreateUser, "create a user",
            rest="POST /v1/users", cli="corral user create"),
        _op("create_user_key", D, "manage_directory", "user", CreateUserKey,
            "make a key credential for a user (CLI/API use)", cli="corral user create --key"),
        _op("set_user_roles", D, "manage_directory", "user", UserRoles, "replace a user's roles",
            rest="PUT /v1/users/{ref}/roles", cli="corral user roles"),
        _op("disable_user", D, "revoke_tokens", "user", NoArgs, "disable a user",
            rest="POST /v1/users/{ref}/disable", cli="corral user disable"),
        _op("enable_user", D, "manage_directory", "user", NoArgs, "enable a user",
            rest="POST /v1/users/{ref}/enable", cli="corral user enable"),
        _op("revoke_user_tokens", D, "revoke_tokens", "user", NoArgs,
            "refuse every token issued so far to a user",
            rest="POST /v1/users/{ref}/revoke", cli="corral user revoke"),
        _op("list_agents", D, "read_directory", "", NoArgs, "every agent, with sponsors",
            rest="GET /v1/agents", cli="corral agent list"),
        _op("show_agent", D, "read_directory", "agent", NoArgs,
            "one agent with sponsors, groups, risk, state and keys",
            rest="GET /v1/agents/{ref}", cli="corral agent show"),
        _op("list_keys", D, "read_directory", "agent", NoArgs, "an agent's public keys",
            rest="GET /v1/agents/{ref}/keys", cli="corral agent key list"),
        _op("create_agent", D, "manage_directory", "", CreateAgent,
            "create an agent with a new key pair",
            rest="POST /v1/agents", cli="corral agent create"),
        _op("disable_agent", D, "revoke_tokens", "agent", DisableAgent, "disable an agent",
            rest="POST /v1/agents/{ref}/disable", cli="corral agent disable"),
        _op("enable_agent", D, "manage_directory", "agent", NoArgs, "enable an agent",
            rest="POST /v1/agents/{ref}/enable", cli="corral agent enable"),
        _op("set_risk", D, "revoke_tokens", "agent", AgentRisk,
            "set an agent's risk (lowering it also needs manage_directory)",
            rest="PUT /v1/agents/{ref}/risk", cli="corral agent risk"),
        _op("add_sponsor", D, "manage_directory", "agent", Sponsor, "add a sponsor",
            rest="POST /v1/agents/{ref}/sponsors", cli="corral agent sponsor add"),
        _op("remove_sponsor", D, "manage_directory", "agent", Sponsor, "remove a sponsor",
            rest="DELETE /v1/agents/{ref}/sponsors/{user}", cli="corral agent sponsor remove"),
        _op("rotate_key", D, "manage_directory", "agent", RotateKey,
            "give an agent a new key pair",
            rest="POST /v1/agents/{ref}/keys/rotate", cli="corral agent key rotate"),
        _op("revoke_key", D, "revoke_tokens", "agent", RevokeKey, "revoke one agent key",
            rest="POST /v1/agents/{ref}/keys/{kid}/revoke", cli="corral agent key revoke"),
        _op("revoke_agent_tokens", D, "revoke_tokens", "agent", NoArgs,
            "refuse every token issued so far to an agent",
            rest="POST /v1/agents/{ref}/revoke", cli="corral agent revoke"),
        _op("list_groups", D, "read_directory", "", NoArgs, "every group",
            rest="GET /v1/groups"),
        _op("show_group", D, "read_directory", "group", NoArgs, "one group and its members",
            rest="GET /v1/groups/{ref}; GET /v1/groups/{ref}/members"),
        _op("create_group", D, "manage_directory", "", CreateGroup, "create a group",
            rest="POST /v1/groups"),
        _op("delete_group", D, "manage_directory", "group", NoArgs,
            "delete a group (its members stay)", rest="DELETE /v1/groups/{ref}"),
        _op("set_member", D, "manage_directory", "group", GroupMember,
            "add or remove a user or agent",
            rest="POST /v1/groups/{ref}/members; DELETE /v1/groups/{ref}/members/{kind}/{member}"),
        _op("add_oidc_provider", D, "manage_federation", "", AddProvider,
            "trust an OpenID provider", cli="corral federation add"),
        _op("remove_oidc_provider", D, "manage_federation", "provider", NoArgs,
            "stop trusting a provider", cli="corral federation remove"),
        _op("link_subject", D, "manage_federation", "provider", LinkSubject,
            "link a provider's subject to an agent or user", cli="corral federation link"),
        _op("unlink_subject", D, "manage_federation", "provider", UnlinkSubject,
            "remove a subject's link", cli="corral federation unlink"),
        _op("add_ssf_receiver", D, "manage_federation", "", AddReceiver,
            "push Corral's CAEP events to a receiver", cli="corral events receivers add"),
        _op("remove_ssf_receiver", D, "manage_federation", "receiver", NoArgs,
            "remove an event receiver", cli="corral events receivers remove"),
    ]
)  # fmt: skip


def operation(name: str) -> Operation:
    """A catalogue entry by name; an unknown one is a programming error (KeyError)."""
    return OPERATIONS[name]


class _UnknownTool(_Args):
    pass


@cache
def _tool_ops() -> dict[str, Operation]:
    return {
        name: Operation(
            name,
            Kind.TOOL,
            name,
            "session",
            spec.args,
            spec.description.split(".")[0],
            rest=f"POST /v1/sessions/{{session_id}}/actions/{name}",
            mcp=name,
        )
        for name, spec in TOOLS.items()
    }


def tool_operation(name: str) -> Operation:
    """The computer tool `name` as an operation. An unknown name still gets one (not cached),
    so the call walks the Gate and the act stage answers with the catalogue's own error."""
    found = _tool_ops().get(name)
    if found is None:
        return Operation(name, Kind.TOOL, name, "session", _UnknownTool, "unknown tool")
    return found


def render_markdown() -> str:
    """The catalogue as a Markdown table (docs/operations.md)."""
    lines = [
        "# Operations",
        "",
        "Generated from `corral.gate.operations` (`python -m corral.gate`); do not "
        "edit by hand. Every row walks the Gate: authorize, inspect in, act, inspect out, "
        "record (docs/architecture.md).",
        "",
        "| operation | Cedar action | target | arguments | REST | MCP | CLI | what |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [*OPERATIONS.values(), *_tool_ops().values()]
    for op in rows:
        fields = ", ".join(op.args.model_fields) or "-"
        lines.append(
            f"| `{op.name}` | `{op.action}` | {op.target or '-'} | {fields} | "
            f"{op.rest or '-'} | {op.mcp or '-'} | {op.cli or '-'} | {op.summary} |"
        )
    return "\n".join(lines) + "\n"


M = TypeVar("M", bound=BaseModel)


def parse_model(tool: str, model: type[M], raw: dict[str, Any] | None) -> M:
    """Validate the arguments of a tool that is not in the computer catalogue, with the same
    kind of message `corral.lifecycle.tools.parse_args` gives."""
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInputError(f"bad arguments for {tool}: {problems}") from None
