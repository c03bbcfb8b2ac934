"""Per-pillar repositories: the statements of each pillar module, bound to one unit of work.

A repository holds the connection of the unit of work that made it (`Store.transaction()`), so
every call on every repository of one unit of work runs in that one transaction. The SQL itself
stays in the pillar modules (`_pools.py`, `_sessions.py`, ...) as functions of a connection;
the repositories are the only way the rest of the store (and, through the unit of work, the
services) reach them. Method names drop the pillar's prefix: `uow.pools.create(spec)` is
`store.create_pool(spec)` inside a transaction the caller controls.

Expected conflicts (a name or key taken by a concurrent writer) are answered inside a savepoint:
the conflicting statement alone is undone and the unit of work stays usable on both databases
(a failed statement would otherwise abort the whole transaction on PostgreSQL, but not on
SQLite). Any other error ends the unit of work: let it leave the `with` block.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from corral.domain.events import OutboxEntry, SsfReceiver
from corral.domain.federation import FederatedSubject, OidcProvider, PrincipalKind
from corral.domain.identity import Agent, AgentKey, Group, Risk, Role, User, UserSecrets
from corral.domain.models import PC, PCState, Pool, PoolSpec, Session
from corral.domain.policy import Approval, ApprovalState, PolicyChange, PoolAssignment, StoredPolicy
from corral.errors import ConflictError
from corral.store import (
    _access,
    _audit,
    _console,
    _directory,
    _federation,
    _pcs,
    _policies,
    _pools,
    _secrets,
    _sessions,
    _ssf,
)
from corral.store._audit import CheckpointRow
from corral.store._secrets import StoreKeys

__all__ = [
    "AccessRepository",
    "AuditRepository",
    "ConsoleRepository",
    "DirectoryRepository",
    "EventsRepository",
    "FederationRepository",
    "PCRepository",
    "PolicyRepository",
    "PoolRepository",
    "Repository",
    "SecretsRepository",
    "SessionRepository",
    "UnitOfWorkError",
]

T = TypeVar("T")


class UnitOfWorkError(RuntimeError):
    """A unit of work used against its rules (a bug in the caller, never an expected failure):
    a second transaction opened inside one, or a write in a read-only one."""


def _now() -> datetime:
    return datetime.now(UTC)


class _Conflict:
    """An IntegrityError seen (and undone) inside a savepoint."""

    __slots__ = ()


_CONFLICT = _Conflict()


class Repository:
    """One pillar's statements on the connection of one unit of work."""

    __slots__ = ("_conn", "_writable")

    def __init__(self, conn: Connection, *, writable: bool) -> None:
        self._conn = conn
        self._writable = writable

    @property
    def _w(self) -> Connection:
        """The connection, for a statement that writes: refused in a read-only unit of work
        (on SQLite it would have to upgrade a read lock, which fails under contention)."""
        if not self._writable:
            raise UnitOfWorkError(
                "this unit of work is read-only: open it with store.transaction() "
                "(write=True, the default) to change rows"
            )
        return self._conn

    def _savepoint(self, fn: Callable[[Connection], T]) -> T | _Conflict:
        """Run a write whose unique key a concurrent writer may have taken in a savepoint:
        on that conflict only this write is undone, and the unit of work goes on."""
        conn = self._w
        try:
            with conn.begin_nested():
                return fn(conn)
        except IntegrityError:
            return _CONFLICT

    def _unique(self, fn: Callable[[Connection], T], conflict: ConflictError) -> T:
        """`_savepoint`, the conflict raised as `conflict`."""
        got = self._savepoint(fn)
        if isinstance(got, _Conflict):
            raise conflict
        return got


class _Sealed(Repository):
    """A repository whose rows hold sealed secrets: it needs the store's keys."""

    __slots__ = ("_keys",)

    def __init__(self, conn: Connection, *, writable: bool, keys: StoreKeys) -> None:
        super().__init__(conn, writable=writable)
        self._keys = keys


class AuditRepository(Repository):
    """The audit log's rows: its state, entries, tiles and signed checkpoints (a `TileStore` for
    corral.audit.tlog.tiled). Appends take turns: `state(lock=True)` holds the state row."""

    __slots__ = ()

    def state(self, *, lock: bool = False) -> tuple[int, tuple[bytes, ...]]:
        return _audit.state(self._w if lock else self._conn, lock=lock)

    def set_state(self, size: int, edge: tuple[bytes, ...]) -> None:
        _audit.set_state(self._w, size, edge)

    def read_tile(self, level: int, index: int) -> bytes:
        return _audit.read_tile(self._conn, level, index)

    def write_tile(self, level: int, index: int, hashes: bytes) -> None:
        _audit.write_tile(self._w, level, index, hashes)

    def add_entries(
        self,
        first: int,
        entries: builtins.list[bytes],
        keys: Sequence[_audit.EntryKeys] | None = None,
    ) -> None:
        _audit.add_entries(self._w, first, entries, keys)

    def trace_entries(self, trace_id: str, limit: int = 10_000) -> builtins.list[tuple[int, bytes]]:
        """(index, entry) of every entry of a trace, in order (at most `limit`)."""
        return _audit.keyed_entries(self._conn, trace_id=trace_id, limit=limit)

    def session_entries(
        self, session_id: str, start: int = 0, limit: int = 1000
    ) -> builtins.list[tuple[int, bytes]]:
        """(index, entry) of a session's entries from index `start`, in order."""
        return _audit.keyed_entries(self._conn, session_id=session_id, start=start, limit=limit)

    def index_of_record(self, record_id: str) -> int | None:
        """The index of the (first) entry with this record id."""
        return _audit.index_of_record(self._conn, record_id)

    def add_checkpoint(self, checkpoint: CheckpointRow) -> None:
        _audit.add_checkpoint(self._w, checkpoint)

    def latest_checkpoint(self) -> CheckpointRow | None:
        return _audit.latest_checkpoint(self._conn)

    def checkpoint_at_or_after(self, size: int) -> CheckpointRow | None:
        return _audit.checkpoint_at_or_after(self._conn, size)

    def checkpoints(self, start: int = 0, limit: int | None = None) -> builtins.list[CheckpointRow]:
        """Stored checkpoints of at least `start` entries, smallest first."""
        return _audit.checkpoints(self._conn, start, limit)

    def entries(self, start: int, end: int) -> builtins.list[bytes]:
        return _audit.entries(self._conn, start, end)

    def entry_rows(self, start: int, limit: int) -> builtins.list[tuple[int, bytes]]:
        return _audit.entry_rows(self._conn, start, limit)

    def tile_keys(self) -> builtins.list[tuple[int, int]]:
        return _audit.tile_keys(self._conn)

    def snapshot(self) -> None:
        """One snapshot for every read of this unit of work (call it first)."""
        _audit.snapshot(self._conn)


class PoolRepository(Repository):
    __slots__ = ()

    def create(self, spec: PoolSpec) -> Pool:
        return self._unique(
            lambda c: _pools.create_pool(c, spec, _now()), _pools.pool_exists_error(spec.name)
        )

    def get(self, name: str) -> Pool:
        return _pools.get_pool(self._conn, name)

    def list(self) -> list[Pool]:
        return _pools.list_pools(self._conn)

    def lock(self, name: str, *, exclusive: bool) -> Pool:
        """Read the pool and lock its row until the unit of work ends (PostgreSQL; SQLite's
        writers hold the database lock anyway): shared keeps it from being marked deleting."""
        return _pools.lock_pool(self._w, name, exclusive=exclusive)

    def set_deleting(self, name: str) -> Pool:
        return _pools.set_pool_deleting(self._w, name)

    def delete(self, name: str) -> None:
        _pools.delete_pool(self._w, name)


class PCRepository(Repository):
    __slots__ = ()

    def add(self, pool: str, pc_id: str, state: PCState = PCState.BOOTING) -> PC:
        got = self._savepoint(lambda c: _pcs.add_pc(c, pool, pc_id, state, _now()))
        if isinstance(got, _Conflict):  # same id added concurrently, or the pool just went
            _pools.get_pool(self._conn, pool)
            raise _pcs.pc_exists_error(pc_id)
        return got

    def get(self, pc_id: str) -> PC:
        return _pcs.get_pc(self._conn, pc_id)

    def list(self, pool: str | None = None, state: PCState | None = None) -> list[PC]:
        return _pcs.list_pcs(self._conn, pool, state)

    def set_state(
        self, pc_id: str, state: PCState, *, expect: PCState | None = None, detail: str = ""
    ) -> bool:
        return _pcs.set_pc_state(self._w, pc_id, state, expect=expect, detail=detail, now=_now())

    def delete(self, pc_id: str) -> None:
        _pcs.delete_pc(self._w, pc_id)

    def counts(self, pool: str) -> dict[PCState, int]:
        return _pcs.pc_counts(self._conn, pool)


class SessionRepository(Repository):
    __slots__ = ()

    def acquire(
        self,
        pool: str,
        *,
        session_id: str,
        expires_at: datetime,
        idempotency_key: str | None,
        request_hash: str,
        now: datetime,
        owner: str | None = None,
        controls: dict[str, object] | None = None,
        limit_owner: bool = False,
    ) -> tuple[Session, bool] | None:
        """Bind a READY PC to a new session (and record its `controls`), replay an idempotent
        retry, or None if no PC is READY; see `_sessions.acquire` for the locking.

        An IntegrityError here is the unique constraints backing up the locks (a reused
        session id, or two requests of one key racing past the advisory lock): it ends the
        unit of work; `Store.acquire` retries it in a new one."""
        conn = self._w
        got = _sessions.acquire(
            conn,
            pool,
            session_id=session_id,
            expires_at=expires_at,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            now=now,
            owner=owner,
            limit_owner=limit_owner,
        )
        if got is not None and got[1] and controls is not None:
            _policies.set_session_controls(conn, got[0].id, controls, now)
        return got

    def get(self, session_id: str) -> Session:
        return _sessions.get_session(self._conn, session_id)

    def list(
        self, *, active_only: bool = False, pool: str | None = None, owner: str | None = None
    ) -> builtins.list[Session]:
        return _sessions.list_sessions(self._conn, active_only=active_only, pool=pool, owner=owner)

    def touch(self, session_id: str, now: datetime) -> None:
        _sessions.touch_session(self._w, session_id, now)

    def release(
        self, session_id: str, *, reason: str, now: datetime, by: str | None = None
    ) -> Session | None:
        return _sessions.release_session(self._w, session_id, reason=reason, now=now, by=by)

    def to_evict(self, now: datetime) -> builtins.list[tuple[Session, str]]:
        return _sessions.sessions_to_evict(self._conn, now)


class DirectoryRepository(_Sealed):
    """Users, agents, sponsors, groups and agent keys."""

    __slots__ = ()

    def version(self) -> int:
        return _directory.version(self._conn)

    def create_user(
        self,
        name: str,
        *,
        roles: Iterable[Role] = (),
        email: str | None = None,
        password_hash: str | None = None,
    ) -> User:
        return self._unique(
            lambda c: _directory.create_user(
                c, name, roles=roles, email=email, password_hash=password_hash, now=_now()
            ),
            _directory.user_exists_error(name),
        )

    def get_user(self, ref: str) -> User:
        return _directory.get_user(self._conn, ref)

    def list_users(self) -> list[User]:
        return _directory.list_users(self._conn)

    def get_user_secrets(self, ref: str) -> UserSecrets:
        return _directory.get_user_secrets(self._conn, ref, self._keys)

    def set_user_password(self, ref: str, password_hash: str) -> None:
        _directory.set_user_password(self._w, ref, password_hash, _now())

    def set_user_totp(self, ref: str, secret: str | None, *, enabled: bool) -> None:
        _directory.set_user_totp(self._w, ref, secret, enabled=enabled, now=_now(), keys=self._keys)

    def set_user_enabled(self, ref: str, enabled: bool) -> tuple[User, list[Agent]]:
        return _directory.set_user_enabled(self._w, ref, enabled=enabled, now=_now())

    def set_user_roles(self, ref: str, roles: Iterable[Role]) -> tuple[User, list[Agent]]:
        return _directory.set_user_roles(self._w, ref, frozenset(roles), _now())

    def create_agent(
        self,
        name: str,
        *,
        sponsors: Sequence[str],
        groups: Sequence[str] = (),
        key: AgentKey | None = None,
    ) -> Agent:
        return self._unique(
            lambda c: _directory.create_agent(
                c, name, sponsors=sponsors, group_refs=groups, key=key, now=_now()
            ),
            _directory.agent_exists_error(name),
        )

    def get_agent(self, ref: str) -> Agent:
        return _directory.get_agent(self._conn, ref)

    def list_agents(self) -> list[Agent]:
        return _directory.list_agents(self._conn)

    def set_agent_enabled(self, ref: str, enabled: bool, *, reason: str | None = None) -> Agent:
        return _directory.set_agent_enabled(
            self._w, ref, enabled=enabled, reason=reason, now=_now()
        )

    def set_agent_risk(self, ref: str, risk: Risk, *, may_lower: bool = True) -> Agent:
        return _directory.set_agent_risk(self._w, ref, risk, _now(), may_lower=may_lower)

    def add_sponsor(self, agent: str, user: str) -> Agent:
        return self._unique(
            lambda c: _directory.add_sponsor(c, agent, user, _now()),
            ConflictError(f"user {user!r} already sponsors agent {agent!r}"),
        )

    def remove_sponsor(self, agent: str, user: str) -> Agent:
        return _directory.remove_sponsor(self._w, agent, user, _now())

    def add_agent_key(self, agent: str, key: AgentKey) -> AgentKey:
        return self._unique(
            lambda c: _directory.add_agent_key(c, agent, key, _now()), _key_taken(key)
        )

    def list_agent_keys(self, agent: str) -> list[AgentKey]:
        return _directory.list_agent_keys(self._conn, agent)

    def revoke_agent_key(self, agent: str, kid: str) -> AgentKey:
        return _directory.revoke_agent_key(self._w, agent, kid, _now())

    def rotate_agent_key(self, agent: str, key: AgentKey, *, old_expires_at: datetime) -> AgentKey:
        return self._unique(
            lambda c: _directory.rotate_agent_key(
                c, agent, key, old_expires_at=old_expires_at, now=_now()
            ),
            _key_taken(key),
        )

    def create_group(self, name: str, description: str = "") -> Group:
        return self._unique(
            lambda c: _directory.create_group(c, name, description, _now()),
            _directory.group_exists_error(name),
        )

    def get_group(self, ref: str) -> Group:
        return _directory.get_group(self._conn, ref)

    def list_groups(self) -> list[Group]:
        return _directory.list_groups(self._conn)

    def delete_group(self, ref: str) -> None:
        _directory.delete_group(self._w, ref)

    def group_members(self, ref: str) -> tuple[list[str], list[str]]:
        return _directory.group_members(self._conn, ref)

    def set_group_member(
        self, group: str, kind: Literal["user", "agent"], member: str, *, present: bool
    ) -> None:
        """Add (`present`) or remove a user or agent; idempotent (added concurrently: it is a
        member, as asked)."""

        def change(c: Connection) -> None:
            _directory.set_group_member(
                c, group, kind=kind, member_ref=member, member=present, now=_now()
            )

        if present:
            self._savepoint(change)
        else:
            change(self._w)


def _key_taken(key: AgentKey) -> ConflictError:
    return ConflictError(f"key {key.kid!r} is already registered")


class AccessRepository(Repository):
    """Token revocation and users' own DPoP keys."""

    __slots__ = ()

    def revoke_tokens(self, ref: str) -> str:
        return _access.revoke_tokens(self._w, ref, _now())

    def admin_exists(self) -> bool:
        return _access.admin_exists(self._conn)

    def add_user_key(self, user: str, key: AgentKey) -> None:
        self._unique(lambda c: _access.add_user_key(c, user, key, _now()), _key_taken(key))

    def list_user_keys(self, user: str) -> list[AgentKey]:
        return _access.list_user_keys(self._conn, user)


class FederationRepository(_Sealed):
    """OIDC providers and the external subjects linked to users and agents."""

    __slots__ = ()

    def create_provider(self, provider: OidcProvider) -> OidcProvider:
        return self._unique(
            lambda c: _federation.create_provider(c, provider, _now(), self._keys),
            _federation.provider_exists_error(provider.name, provider.issuer),
        )

    def get_provider(self, name: str) -> OidcProvider:
        return _federation.get_provider(self._conn, name, self._keys)

    def get_provider_by_issuer(self, issuer: str) -> OidcProvider:
        return _federation.get_provider_by_issuer(self._conn, issuer, self._keys)

    def list_providers(self) -> list[OidcProvider]:
        return _federation.list_providers(self._conn, self._keys)

    def delete_provider(self, name: str) -> None:
        _federation.delete_provider(self._w, name)

    def link_subject(
        self, provider: str, subject: str, kind: PrincipalKind, principal: str
    ) -> FederatedSubject:
        return _federation.link_subject(self._w, provider, subject, kind, principal, _now())

    def unlink_subject(self, provider: str, subject: str) -> None:
        _federation.unlink_subject(self._w, provider, subject)

    def resolve_subject(self, provider: str, subject: str) -> FederatedSubject | None:
        return _federation.resolve_subject(self._conn, provider, subject)

    def list_subjects(self, provider: str | None = None) -> list[FederatedSubject]:
        return _federation.list_subjects(self._conn, provider)


class EventsRepository(_Sealed):
    """Shared signals: push receivers, the outbox of signed SETs, received SETs' jtis."""

    __slots__ = ()

    def create_receiver(
        self,
        name: str,
        *,
        endpoint: str,
        audience: str,
        events: Sequence[str] = (),
        auth_header: str | None = None,
    ) -> SsfReceiver:
        return self._unique(
            lambda c: _ssf.create_receiver(
                c,
                name=name,
                endpoint=endpoint,
                audience=audience,
                events=tuple(events),
                auth_header=auth_header,
                now=_now(),
                keys=self._keys,
            ),
            _ssf.receiver_exists_error(name),
        )

    def get_receiver(self, ref: str) -> SsfReceiver:
        return _ssf.get_receiver(self._conn, ref, self._keys)

    def list_receivers(self) -> list[SsfReceiver]:
        return _ssf.list_receivers(self._conn, self._keys)

    def delete_receiver(self, ref: str) -> SsfReceiver:
        return _ssf.delete_receiver(self._w, ref)

    def enqueue(self, items: Sequence[tuple[str, str, str]]) -> None:
        _ssf.enqueue(self._w, list(items), _now())

    def due(self, now: datetime, *, limit: int = 50) -> list[OutboxEntry]:
        return _ssf.due(self._conn, now, limit)

    def claim(
        self, entries: Sequence[OutboxEntry], now: datetime, *, lease: timedelta
    ) -> list[OutboxEntry]:
        return _ssf.claim(self._w, list(entries), now, lease)

    def mark_delivered(self, entry_id: int, now: datetime) -> None:
        _ssf.mark_delivered(self._w, entry_id, now)

    def mark_failed(self, entry_id: int, error: str, next_attempt_at: datetime) -> None:
        _ssf.mark_failed(self._w, entry_id, error, next_attempt_at)

    def list_outbox(self, *, pending_only: bool = False, limit: int = 100) -> list[OutboxEntry]:
        return _ssf.list_outbox(self._conn, pending_only=pending_only, limit=limit)

    def remember_inbound(self, issuer: str, jti: str) -> bool:
        """False if this issuer sent this jti before (in any process)."""
        got = self._savepoint(lambda c: _ssf.remember_inbound(c, issuer, jti, _now()))
        return not isinstance(got, _Conflict)

    def forget_inbound(self, issuer: str, jti: str) -> None:
        _ssf.forget_inbound(self._w, issuer, jti)

    def prune(self, *, outbox_before: datetime, inbound_before: datetime) -> tuple[int, int]:
        return _ssf.prune(self._w, outbox_before=outbox_before, inbound_before=inbound_before)


class PolicyRepository(Repository):
    """Policies and their change log, pool assignments, approvals, session controls."""

    __slots__ = ()

    def version(self) -> int:
        return _policies.version(self._conn)

    def list(self) -> list[StoredPolicy]:
        return _policies.list_policies(self._conn)

    def get(self, name: str) -> StoredPolicy:
        return _policies.get_policy(self._conn, name)

    def add(self, name: str, text: str, *, actor: str, replace: bool = False) -> StoredPolicy:
        return self._unique(
            lambda c: _policies.add_policy(
                c, name, text, actor=actor, now=_now(), replace_=replace
            ),
            _policies.policy_exists_error(name),
        )

    def remove(self, name: str, *, actor: str) -> StoredPolicy:
        return _policies.remove_policy(self._w, name, actor=actor, now=_now())

    def set_enabled(self, name: str, enabled: bool, *, actor: str) -> StoredPolicy:
        return _policies.set_policy_enabled(self._w, name, enabled, actor=actor, now=_now())

    def seed(self, defaults: Sequence[tuple[str, str]], *, actor: str) -> bool:
        return _policies.seed_policies(self._w, defaults, actor=actor, now=_now())

    def changes(self, *, since: int = 0, limit: int = 200) -> builtins.list[PolicyChange]:
        return _policies.list_changes(self._conn, since=since, limit=limit)

    def assign_pool(
        self, pool: str, kind: Literal["agent", "group"], ref: str, *, actor: str
    ) -> bool:
        got = self._savepoint(
            lambda c: _policies.assign_pool(c, pool, kind, ref, actor=actor, now=_now())
        )
        return False if isinstance(got, _Conflict) else got  # assigned concurrently: as asked

    def unassign_pool(
        self, pool: str, kind: Literal["agent", "group"], ref: str, *, actor: str
    ) -> bool:
        return _policies.unassign_pool(self._w, pool, kind, ref, actor=actor, now=_now())

    def assignments(self, pool: str | None = None) -> builtins.list[PoolAssignment]:
        return _policies.list_assignments(self._conn, pool)

    def bearer_pools_of_agent(self, agent_id: str) -> builtins.list[str]:
        return _policies.bearer_pools_of_agent(self._conn, agent_id)

    def create_approval(self, approval: Approval) -> Approval:
        return _policies.create_approval(self._w, approval)

    def get_approval(self, approval_id: str) -> Approval:
        return _policies.get_approval(self._conn, approval_id)

    def approval_for(self, agent_id: str, digest: str, now: datetime) -> Approval | None:
        return _policies.approval_for(self._conn, agent_id, digest, now)

    def list_approvals(
        self, *, state: ApprovalState | None = None, agent_ids: Sequence[str] | None = None
    ) -> builtins.list[Approval]:
        return _policies.list_approvals(self._conn, state=state, agent_ids=agent_ids)

    def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, now: datetime
    ) -> Approval:
        return _policies.decide_approval(self._w, approval_id, approve=approve, by=by, now=now)

    def use_approval(self, approval_id: str, now: datetime) -> bool:
        return _policies.use_approval(self._w, approval_id, now)

    def expire_approvals(self, now: datetime) -> int:
        return _policies.expire_approvals(self._w, now)

    def set_session_controls(
        self, session_id: str, controls: dict[str, object]
    ) -> dict[str, object]:
        """Fix a session's controls; returns those in force (the first ones recorded: one
        recorded concurrently wins)."""
        got = self._savepoint(
            lambda c: _policies.set_session_controls(c, session_id, controls, _now())
        )
        if isinstance(got, _Conflict):
            found = _policies.get_session_controls(self._conn, session_id)
            if found is None:  # the conflict was not a controls row: say what it was
                return _policies.set_session_controls(self._w, session_id, controls, _now())
            return found
        return got

    def session_controls(self, session_id: str) -> dict[str, object] | None:
        return _policies.get_session_controls(self._conn, session_id)


class ConsoleRepository(Repository):
    """Console logouts: sessions ended before their token expires."""

    __slots__ = ()

    def end_session(self, token_id: str, user_id: str, expires_at: datetime) -> None:
        _console.end_console_session(self._w, token_id, user_id, expires_at, _now())

    def live_logouts(self) -> list[tuple[str, datetime]]:
        return _console.live_console_logouts(self._conn, _now())


class SecretsRepository(_Sealed):
    """The sealed columns as a whole: sealing left-over plaintext, resealing, keys in use."""

    __slots__ = ()

    def seal_on_start(self) -> int:
        return _secrets.seal_on_start(self._w, self._keys)

    def reseal_all(self) -> int:
        return _secrets.reseal_all(self._w, self._keys)

    def key_ids_in_use(self) -> dict[str, int]:
        return _secrets.key_ids_in_use(self._conn)
