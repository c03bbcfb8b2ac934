"""The tables as SQLAlchemy Core metadata: the shape the migrations build and the queries use.

Constraints carry the invariants that must hold even if code is wrong: a PC belongs to an existing
pool, at most one active session per PC, one session per idempotency key and pool.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.types import TypeDecorator

from corral.domain.identity import Risk
from corral.domain.models import PCState, SessionState
from corral.domain.policy import ApprovalState, ChangeKind

__all__ = [
    "UTCDateTime",
    "agent_groups",
    "agent_keys",
    "agent_sponsors",
    "agents",
    "approvals",
    "audit_checkpoints",
    "audit_entries",
    "audit_state",
    "audit_tiles",
    "console_logouts",
    "directory_state",
    "federated_subjects",
    "groups",
    "metadata",
    "oidc_providers",
    "pcs",
    "policies",
    "policy_changes",
    "policy_state",
    "pool_assignments",
    "pools",
    "session_controls",
    "sessions",
    "ssf_inbound",
    "ssf_outbox",
    "ssf_receivers",
    "user_groups",
    "user_keys",
    "users",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; stored naive UTC on SQLite, timestamptz on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
        value = value.astimezone(UTC)
        # SQLite compares datetimes as text: keep one format, without an offset.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _one_of(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


_ACTIVE = text(f"state = '{SessionState.ACTIVE.value}'")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

pools = Table(
    "pools",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("image", String(255), nullable=False),
    Column("region", String(64), nullable=False),
    Column("size", String(32), nullable=False),
    Column("warm", Integer, nullable=False),
    Column("max", Integer, nullable=False),
    Column("idle_timeout_s", Integer, nullable=False),
    Column("max_lifetime_s", Integer, nullable=False),
    Column("deleting", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    # plain bearer tokens (no DPoP) accepted for this pool's sessions (migration 0004)
    Column("allow_bearer", Boolean, nullable=False, default=False, server_default=false()),
    # active sessions one agent may hold in this pool (migration 0008); None: the default
    Column("max_sessions_per_agent", Integer, nullable=True),
)

pcs = Table(
    "pcs",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("pool", String(63), ForeignKey("pools.name", ondelete="RESTRICT"), nullable=False),
    Column("state", String(16), nullable=False),
    Column("session_id", String(64), nullable=True, unique=True),
    Column("detail", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(_one_of("state", [s.value for s in PCState]), name="state"),
    Index(None, "pool", "state"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    # Released sessions go with their pool: the audit log keeps the history.
    Column("pool", String(63), ForeignKey("pools.name", ondelete="CASCADE"), nullable=False),
    Column("pc_id", String(128), nullable=False),  # no FK: released sessions outlive their PC
    Column("state", String(16), nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("request_hash", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("last_activity", UTCDateTime, nullable=False),
    Column("released_at", UTCDateTime, nullable=True),
    Column("release_reason", String(64), nullable=True),
    # the agent or user that acquired it (migration 0003); None for sessions made before
    Column("owner", String(32), nullable=True),
    # who ended it: a user, an agent (its own release, or its MCP connection closing) or
    # "system" (eviction, recovery, shutdown); None while active and for sessions before 0008
    Column("released_by", String(32), nullable=True),
    CheckConstraint(_one_of("state", [s.value for s in SessionState]), name="state"),
    UniqueConstraint("pool", "idempotency_key"),
    Index(
        "uq_sessions_active_pc",
        "pc_id",
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    ),
    Index(None, "state"),
    Index(None, "owner"),
    Index(None, "owner", "state"),  # the per-agent session limit (migration 0008)
)

# The directory (migration 0002). An agent is kept apart from users; it answers to sponsors.

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("email", String(254), nullable=True),
    Column("roles", String(128), nullable=False),  # sorted, comma-separated Role values
    Column("enabled", Boolean, nullable=False),
    Column("password_hash", Text, nullable=True),  # argon2id, never the password
    Column("totp_secret", String(64), nullable=True),  # plaintext before 0009: sealed at start
    Column("totp_enabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # tokens issued before this are refused (admin revoke, migration 0003)
    Column("tokens_revoked_before", UTCDateTime, nullable=True),
    # the TOTP seed sealed with the store key (migration 0009, corral.store._secrets)
    Column("totp_secret_sealed", Text, nullable=True),
)

groups = Table(
    "groups",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

user_groups = Table(
    "user_groups",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", String(32), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Index(None, "group_id"),
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("enabled", Boolean, nullable=False),
    Column("risk", String(16), nullable=False),
    Column("disabled_reason", String(255), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("tokens_revoked_before", UTCDateTime, nullable=True),
    CheckConstraint(_one_of("risk", [r.value for r in Risk]), name="risk"),
)

agent_sponsors = Table(
    "agent_sponsors",
    metadata,
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    # A user who sponsors an agent cannot vanish under it: remove the sponsorship first.
    Column("user_id", String(32), ForeignKey("users.id", ondelete="RESTRICT"), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "user_id"),
)

agent_groups = Table(
    "agent_groups",
    metadata,
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", String(32), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Index(None, "group_id"),
)

agent_keys = Table(
    "agent_keys",
    metadata,
    Column("kid", String(64), primary_key=True),  # RFC 7638 thumbprint: one key, one agent
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("public_jwk", Text, nullable=False),  # JSON; the private half never reaches us
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index(None, "agent_id"),
)

# Users' public keys for CLI/API clients (migration 0003): the same shape as agent keys.
user_keys = Table(
    "user_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index(None, "user_id"),
)

# One row (id 1): a counter bumped in the same transaction as every change that affects access
# (disable, enable, risk, sponsors, groups, keys), so a request check sees it on the next request.
directory_state = Table(
    "directory_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

# Federation (migration 0004): external OpenID Connect providers trusted for client assertions,
# console logins and inbound security events, and which of their subjects are which Corral identity.
oidc_providers = Table(
    "oidc_providers",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("issuer", String(512), nullable=False, unique=True),
    Column("audience", String(512), nullable=False),  # what its tokens must name as `aud`
    Column("jwks_uri", Text, nullable=True),  # fetched and cached; or
    Column("jwks", Text, nullable=True),  # a pinned JWKS (JSON)
    Column("client_id", String(255), nullable=True),  # for console logins (code flow + PKCE)
    Column("client_secret", Text, nullable=True),  # sealed (corral.store._secrets)
    Column("allow_console", Boolean, nullable=False),
    Column("allow_assertions", Boolean, nullable=False),
    Column("allow_events", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

federated_subjects = Table(
    "federated_subjects",
    metadata,
    Column(
        "provider",
        String(63),
        ForeignKey("oidc_providers.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("subject", String(255), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("(user_id IS NULL) <> (agent_id IS NULL)", name="one_principal"),
    Index(None, "user_id"),
    Index(None, "agent_id"),
)

# Shared Signals (migration 0004): receivers Corral pushes Security Event Tokens to, the outbox
# that makes delivery survive restarts, and the inbound jti log that refuses replayed events.
ssf_receivers = Table(
    "ssf_receivers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("endpoint", Text, nullable=False),
    Column("audience", String(512), nullable=False),
    Column("events", Text, nullable=False),  # comma-separated event type URIs
    # sent as Authorization on push, if set; sealed (corral.store._secrets)
    Column("auth_header", Text, nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

ssf_outbox = Table(
    "ssf_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "receiver_id",
        String(32),
        ForeignKey("ssf_receivers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("jti", String(64), nullable=False),
    Column("token", Text, nullable=False),  # the signed SET
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Index(None, "delivered_at"),
)

ssf_inbound = Table(
    "ssf_inbound",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("jti", String(128), primary_key=True),
    Column("received_at", UTCDateTime, nullable=False),
)

# Policies (migration 0005): Cedar policies by name; every change in a log with who and when; one
# counter (the policy-set version) bumped in the same transaction as every change, so each server
# worker re-reads the set on its next request; pool assignments; sponsor approvals; the session
# controls fixed at acquire.
policies = Table(
    "policies",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("text", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

policy_changes = Table(
    "policy_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version", BigInteger, nullable=False),  # the policy-set version this change made
    Column("kind", String(16), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("text", Text, nullable=True),
    Column("actor", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    CheckConstraint(_one_of("kind", [k.value for k in ChangeKind]), name="kind"),
    Index(None, "version"),
)

policy_state = Table(
    "policy_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    Column("seeded", Boolean, nullable=False),  # the shipped defaults were installed (once)
    CheckConstraint("id = 1", name="single_row"),
)

pool_assignments = Table(
    "pool_assignments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pool", String(63), ForeignKey("pools.name", ondelete="CASCADE"), nullable=False),
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=True),
    Column("group_id", String(32), ForeignKey("groups.id", ondelete="CASCADE"), nullable=True),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("(agent_id IS NULL) <> (group_id IS NULL)", name="one_assignee"),
    UniqueConstraint("pool", "agent_id"),
    UniqueConstraint("pool", "group_id"),
    Index(None, "agent_id"),
    Index(None, "group_id"),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("agent_id", String(32), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("session_id", String(64), nullable=True),
    Column("action", String(64), nullable=False),
    Column("resource", String(320), nullable=False),
    Column("digest", String(64), nullable=False),  # agent, action, resource, tool arguments
    Column("detail", Text, nullable=False),  # JSON: the tool arguments the sponsor decides on
    Column("policies", Text, nullable=False),  # comma-separated: the forbids asking for it
    Column("state", String(16), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("decided_by", String(64), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
    # single use by default; a policy may allow N uses (max_uses) or any number (NULL) within
    # the window an answer stands (window_s)
    Column("uses", Integer, nullable=False, server_default="0"),
    Column("max_uses", Integer, nullable=True, server_default="1"),
    Column("window_s", Integer, nullable=False, server_default="900"),
    CheckConstraint(_one_of("state", [s.value for s in ApprovalState]), name="state"),
    Index(None, "agent_id", "digest"),
    Index(None, "state"),
)

session_controls = Table(
    "session_controls",
    metadata,
    Column(
        "session_id",
        String(64),
        ForeignKey("sessions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("controls", Text, nullable=False),  # JSON (corral.access.Controls)
    Column("created_at", UTCDateTime, nullable=False),
)

# Console sessions ended by logout before they expire (migration 0006): kept so a restart
# does not bring them back; rows past `expires_at` are useless and pruned on the next logout.
console_logouts = Table(
    "console_logouts",
    metadata,
    Column("token_id", String(64), primary_key=True),
    Column("user_id", String(32), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "expires_at"),
)

# The audit log (migration 0010): a Merkle transparency log in C2SP tlog-tiles form. `audit_state`
# is its size and right edge (one hash per set bit of the size), updated in the transaction of
# every append, which also writes the entries and the tiles the entries change. Rows are only
# ever added or (a partial tile) widened: nothing here is updated in place otherwise or deleted.
audit_state = Table(
    "audit_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("edge", LargeBinary, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
    # the record's id (its `metadata.uid`), to find its proof by, and its trace and session
    # to find a trace's or a session's records by (migration 0011)
    Column("record_id", String(128), nullable=True),
    Column("trace_id", String(32), nullable=True),
    Column("session_id", String(128), nullable=True),
    Index(None, "record_id"),
    Index(None, "trace_id"),
    Index(None, "session_id"),
)

audit_tiles = Table(
    "audit_tiles",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hashes", LargeBinary, nullable=False),
)

# Signed checkpoints (migration 0011): the log's tree head at a size, as the signed note
# (C2SP tlog-checkpoint, signed by the log key and cosigned by any witness keys) that was
# handed out. One per size; only ever added.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("note", Text, nullable=False),
    Column("signed_at", UTCDateTime, nullable=False),
)
