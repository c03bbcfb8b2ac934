"""What the audit log keeps of one interaction, before it is written as an OCSF record.

An `AuditEvent` is plain, bounded data: the Gate's record stage (and the doors that run before
a caller exists: authentication, the token endpoint) build one from what happened, and
`corral.audit.ocsf.to_ocsf` turns it into the OCSF 1.x record the log appends. Nothing in it is
a live object: content an agent typed or wrote is already reduced to a keyed hash, its size and
a short preview (`corral.audit.ocsf.reduce_content`), so a record never carries a secret whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Actor", "AuditEvent", "Category", "DecisionNote", "Outcome", "TraceIds"]


class Category(StrEnum):
    """What kind of interaction: chooses the OCSF class (docs/audit.md, "Records")."""

    #: a token request, a request's authentication (OCSF Authentication)
    AUTHENTICATION = "authentication"
    #: acquire and release of a PC (OCSF Authorize Session: a session granted or ended)
    SESSION = "session"
    #: pool and session reads and admin, approvals, policies (OCSF API Activity)
    API = "api"
    #: users, agents, federation, tokens revoked (OCSF Account Change)
    ACCOUNT = "account"
    #: a computer tool on a PC (OCSF API Activity; `run_command` as Process Activity)
    TOOL = "tool"
    #: a PC's life outside any request: boot, reset, quarantine (OCSF API Activity, system actor)
    LIFECYCLE = "lifecycle"
    #: security events in and out (CAEP/SSF), detections (OCSF Detection Finding)
    SECURITY = "security"


class Outcome(StrEnum):
    SUCCESS = "success"
    #: a policy (or authentication) refused it: nothing happened
    DENIED = "denied"
    #: it was allowed but failed (bad input, a PC that did not answer...)
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who: the caller (agent, user, operator or the server itself), and for an agent its
    sponsor and the user it acts for when the request names one."""

    kind: str
    id: str | None
    sponsor: str | None = None
    on_behalf_of: str | None = None
    #: the client's address as the server saw it
    address: str | None = None
    #: the thumbprint of the DPoP key the request was proven with
    key_thumbprint: str | None = None
    #: the session a session token was bound to
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionNote:
    """One policy decision the interaction caused."""

    action: str
    resource: str
    allowed: bool
    #: the ids of the policies that determined it (permits for an allow, forbids for a deny)
    policies: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TraceIds:
    """W3C trace context: the trace, this interaction's own span and the caller's span."""

    trace_id: str
    span_id: str
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One interaction. `args` and `result` hold only bounded summaries (sizes, digests,
    previews, ids, counts), never content whole."""

    #: when it ended, epoch milliseconds
    time_ms: int
    category: Category
    #: the catalogue's operation or tool name (`acquire`, `click`...), or `authenticate`,
    #: `token`, `reset`, `quarantine` for what is not a Gate operation
    operation: str
    #: the Cedar action it was decided as
    action: str
    actor: Actor
    outcome: Outcome
    duration_ms: float = 0.0
    #: Corral's error code (docs/errors.md) and its message, when it failed or was refused
    error_code: str | None = None
    error_message: str | None = None
    #: the HTTP status the error table gives it (200 for a success)
    status: int | None = None
    session_id: str | None = None
    pc_id: str | None = None
    pool: str | None = None
    #: what else it was about (a user, an agent, a policy, an approval) by id
    target: str | None = None
    trace: TraceIds | None = None
    decisions: tuple[DecisionNote, ...] = ()
    args: Mapping[str, Any] = field(default_factory=dict)
    result: Mapping[str, Any] = field(default_factory=dict)
    #: which adapter it came through: rest, mcp, cli, console, server
    via: str | None = None
